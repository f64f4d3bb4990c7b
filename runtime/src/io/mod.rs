//! I/O: the reactor (`reactor`, `scheduled_io`, `poller`) and `Async<T>`, which makes any
//! non-blocking file descriptor awaitable.

mod async_io;
pub(crate) mod poller;
pub(crate) mod reactor;
pub(crate) mod scheduled_io;

pub use async_io::Async;
pub(crate) use async_io::Leaf;
pub(crate) use scheduled_io::Direction;

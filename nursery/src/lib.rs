//! trellis: a work-stealing async runtime with Trio-style structured concurrency.
//!
//! This is the crate users depend on. It re-exports the runtime core (`trellis-runtime`);
//! nurseries, cancel scopes and timeouts are added on top of it.
//!
//! ```
//! let out = trellis::run(async {
//!     let task = trellis::spawn(async { 21 * 2 });
//!     task.await.unwrap()
//! });
//! assert_eq!(out, 42);
//! ```
#![forbid(unsafe_code)]

pub use trellis_runtime::{
    checkpoint, is_cancelled, run, spawn, spawn_blocking, yield_now, Builder, CancelSource,
    Cancelled, Checkpoint, EnterGuard, Handle, JoinError, JoinHandle, Runtime, RuntimeMetrics,
    TaskId, YieldNow,
};
pub use trellis_runtime::{io, net, time};

#[cfg(feature = "hyper")]
pub mod hyper;

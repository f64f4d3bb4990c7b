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
    checkpoint, current_effective_deadline, fail_after, fail_at, is_cancelled, move_on_after,
    move_on_at, run, shield, spawn, spawn_blocking, yield_now, Builder, CancelScope, CancelSource,
    Cancelled, Checkpoint, EnterGuard, FailAfter, Handle, JoinError, JoinHandle, Run, Runtime,
    RuntimeMetrics, Shield, TaskId, TimedOut, YieldNow,
};
pub use trellis_runtime::{io, net, time};

#[cfg(feature = "hyper")]
pub mod hyper;

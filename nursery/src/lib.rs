//! trellis: a work-stealing async runtime with Trio-style structured concurrency.
//!
//! This is the crate users depend on. It re-exports the runtime (`trellis-runtime`) with its
//! structured-concurrency layer: nurseries, cancel scopes, shields, deadlines, timeouts and
//! error groups. (That layer lives in the runtime crate because its protocols share the
//! runtime's status tree and `sync` facade, and are model-checked with loom there.)
//!
//! ```
//! let out = trellis::run(async {
//!     let task = trellis::spawn(async { 21 * 2 });
//!     task.await.unwrap()
//! });
//! assert_eq!(out, 42);
//! ```
//!
//! Structured concurrency: children that cannot outlive their nursery, errors that are never
//! lost, timeouts that end on time.
//!
//! ```
//! use std::time::Duration;
//! use trellis::{move_on_after, nursery, time::sleep, Nursery};
//!
//! trellis::run(async {
//!     let group = nursery(|n: Nursery<std::io::Error>| async move {
//!         n.spawn(async { sleep(Duration::from_millis(10)).await?; Ok(()) });
//!         n.spawn(async { Err::<(), _>(std::io::Error::other("boom")) }); // cancels its sibling
//!         Ok(())
//!     })
//!     .await;
//!     assert_eq!(group.unwrap_err().len(), 1);
//!     assert!(move_on_after(Duration::from_millis(5), sleep(Duration::from_secs(60))).await.is_none());
//! });
//! ```
#![forbid(unsafe_code)]

pub use trellis_runtime::{
    checkpoint, current_effective_deadline, fail_after, fail_at, is_cancelled, move_on_after,
    move_on_at, nursery, run, shield, spawn, spawn_blocking, yield_now, Builder, CancelScope,
    CancelSource, Cancelled, Checkpoint, Closed, EnterGuard, ErrorGroup, FailAfter, Handle,
    JoinError, JoinHandle, Nursery, NurseryRun, Run, Runtime, RuntimeMetrics, Shield, StartError,
    TaskHandle, TaskId, TaskStatus, TimedOut, YieldNow,
};
pub use trellis_runtime::{io, net, time};

#[cfg(feature = "hyper")]
pub mod hyper;

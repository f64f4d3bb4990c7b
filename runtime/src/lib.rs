//! The trellis runtime core: tasks, the work-stealing scheduler, the blocking pool, and the
//! task-root level of cancellation.
//!
//! Users depend on the `trellis` crate, which re-exports everything public here and adds the
//! structured-concurrency layer; this crate is its foundation. See DESIGN.md for the contract.
//!
//! ```
//! let sum = trellis_runtime::run(async {
//!     let tasks: Vec<_> = (0..10u64).map(|i| trellis_runtime::spawn(async move { i * i })).collect();
//!     let mut sum = 0;
//!     for t in tasks {
//!         sum += t.await.unwrap();
//!     }
//!     sum
//! });
//! assert_eq!(sum, 285);
//! ```
//!
//! # Map
//!
//! - `task/`: the task cell, its state word, wakers, `JoinHandle`, the owned-task registry.
//! - `scheduler/`: workers, run queues, the sleep/wake protocol, shutdown.
//! - `rt/`: `Runtime`, `Builder`, `block_on`.
//! - `blocking`: the `spawn_blocking` pool. `budget`: cooperative scheduling.
//! - `cancel`: `Cancelled`, `checkpoint`, `yield_now`. `context`: the thread-local runtime context.
//! - `sync`: the only place that names std/parking_lot/loom primitives. `tuning`: constants.

mod blocking;
mod budget;
mod cancel;
mod context;
mod driver;
pub mod io;
pub mod net;
mod nursery;
mod rt;
mod scheduler;
mod sync;
mod task;
pub mod time;
mod tuning;

pub use cancel::scope::{
    current_effective_deadline, fail_after, fail_at, move_on_after, move_on_at, shield,
    CancelScope, FailAfter, Run, Shield, TimedOut,
};
pub use cancel::{
    checkpoint, is_cancelled, yield_now, CancelSource, Cancelled, Checkpoint, YieldNow,
};
pub use nursery::{
    nursery, Closed, ErrorGroup, Nursery, NurseryRun, StartError, TaskHandle, TaskStatus,
};
pub use rt::{Builder, Runtime};
pub use scheduler::{EnterGuard, Handle, RuntimeMetrics};
pub use task::{JoinError, JoinHandle, TaskId};

use std::future::Future;

/// Runs `future` on a new runtime with the default settings (one worker per CPU) and returns
/// its output; the runtime is then shut down (remaining tasks are cancelled, see [`Runtime`]).
///
/// # Panics
/// If the runtime cannot start its threads, or if called inside a runtime (use `.await`).
#[track_caller]
pub fn run<F: Future>(future: F) -> F::Output {
    let runtime =
        Runtime::new().unwrap_or_else(|e| panic!("trellis::run could not start the runtime: {e}"));
    runtime.block_on(future)
}

/// Spawns a task onto the current runtime; see [`Handle::spawn`].
///
/// The future must be `Send + 'static`: it may run on any worker thread. A future holding an
/// `Rc` across an `.await` does not compile:
///
/// ```compile_fail,E0277
/// trellis_runtime::run(async {
///     trellis_runtime::spawn(async {
///         let shared = std::rc::Rc::new(1);
///         trellis_runtime::yield_now().await;
///         *shared
///     });
/// });
/// ```
///
/// # Panics
/// Outside a runtime (no worker, `block_on` or blocking-pool thread of a runtime), with a
/// message saying what to do instead.
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with_handle(|h| match h {
        Some(handle) => handle.spawn(future),
        None => panic!("trellis::spawn: {}", context::NO_RUNTIME),
    })
}

/// Runs a blocking function (file I/O, a CPU-heavy computation, a blocking library call) on the
/// current runtime's blocking pool, so it does not stall the workers; await the handle for its
/// result. A panic in `f` is reported as [`JoinError::is_panic`].
///
/// # Panics
/// Outside a runtime, as [`spawn`].
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    context::with_handle(|h| match h {
        Some(handle) => handle.spawn_blocking(f),
        None => panic!("trellis::spawn_blocking: {}", context::NO_RUNTIME),
    })
}

/// Compile-time checks of the auto traits the contract promises.
#[allow(dead_code)]
fn assert_auto_traits() {
    fn send_sync<T: Send + Sync>() {}
    fn send_unpin<T: Send + Unpin>() {}
    send_sync::<Handle>();
    send_sync::<JoinError>();
    send_sync::<Cancelled>();
    send_sync::<CancelScope>();
    send_unpin::<JoinHandle<u32>>();
    send_sync::<Runtime>();
}

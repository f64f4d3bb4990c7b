//! `Runtime`: owns the worker threads; `block_on`, `spawn`, and shutdown on drop.

mod builder;

pub use builder::Builder;

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use crate::budget::BudgetGuard;
use crate::context;
use crate::scheduler::{Handle, Parker};
use crate::sync::thread::{self, JoinHandle as ThreadHandle};
use crate::sync::{arc_waker, Arc};
use crate::task::{CurrentTaskGuard, JoinHandle};
use crate::tuning::DEFAULT_SHUTDOWN_GRACE;

/// A trellis runtime: worker threads running tasks, plus a blocking pool.
///
/// Dropping the runtime shuts it down: every task is cancelled, given a grace period (default
/// 5 s, real time) to finish its cleanup, and whatever is left is dropped; then the threads are
/// joined. [`shutdown_timeout`](Self::shutdown_timeout) chooses the grace period.
///
/// ```
/// use trellis_runtime::Runtime;
///
/// let rt = Runtime::builder().worker_threads(2).build().unwrap();
/// let task = rt.spawn(async { 40 + 2 });
/// assert_eq!(rt.block_on(task).unwrap(), 42);
/// ```
pub struct Runtime {
    handle: Handle,
    threads: Vec<ThreadHandle<()>>,
    shut_down: bool,
}

impl Runtime {
    /// A builder to configure a runtime.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A runtime with the default settings (one worker per CPU).
    ///
    /// # Errors
    /// If the operating system refuses to start a thread.
    pub fn new() -> std::io::Result<Runtime> {
        Builder::new().build()
    }

    /// Runs `future` to completion on the calling thread, while the workers run spawned tasks;
    /// returns its output.
    ///
    /// # Panics
    /// If called on a thread that is already running a runtime (a worker thread, or inside
    /// another `block_on`): use `.await` there instead.
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _context = context::enter_block_on(&self.handle);
        block_on_thread(&self.handle, future)
    }

    /// Spawns a task; see [`Handle::spawn`].
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs a blocking function on the blocking pool; see [`crate::spawn_blocking`].
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.handle.spawn_blocking(f)
    }

    /// The runtime's handle (spawn from other threads, or keep one in a task).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Shuts the runtime down, giving cancelled tasks (and running blocking jobs) up to `grace`
    /// to finish before what is left is dropped or detached.
    ///
    /// # Panics
    /// If called from one of this runtime's worker threads.
    #[track_caller]
    pub fn shutdown_timeout(mut self, grace: Duration) {
        self.shutdown(grace);
    }

    #[track_caller]
    fn shutdown(&mut self, grace: Duration) {
        if std::mem::replace(&mut self.shut_down, true) {
            return;
        }
        let threads = std::mem::take(&mut self.threads);
        let on_own_worker =
            context::with_worker(|core| core.is_some_and(|c| c.belongs_to(&self.handle.shared)));
        if !on_own_worker {
            self.handle.shutdown(threads, grace);
            return;
        }
        // Waiting here for the workers would wait for this very thread. Run the shutdown on a
        // thread of its own (so nothing leaks), then report the misuse.
        let handle = self.handle.clone();
        let name = format!("{}-shutdown", self.handle.shared.config.thread_name);
        let _ = thread::Builder::new().name(name).spawn(move || handle.shutdown(threads, grace));
        if !std::thread::panicking() {
            panic!(
                "a trellis runtime was dropped (or shut down) from one of its own worker \
                 threads, which would deadlock waiting for itself (it is being shut down in the \
                 background instead): drop it from outside the runtime, e.g. from the thread that \
                 built it or from a `spawn_blocking` job"
            );
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(DEFAULT_SHUTDOWN_GRACE);
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("handle", &self.handle).finish()
    }
}

/// Unparks the `block_on` thread when its future is woken.
struct UnparkOnWake(Arc<Parker>);

// `Wake` is defined on `std::sync::Arc`; see `sync::arc_waker` for why that is fine.
#[allow(clippy::disallowed_types)]
impl Wake for UnparkOnWake {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark(None);
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark(None);
    }
}

/// Polls `future` on this thread, parking between polls.
fn block_on_thread<F: Future>(handle: &Handle, future: F) -> F::Output {
    /// Unregisters the thread's parker when `block_on` returns or unwinds.
    struct Registered<'a>(&'a Handle, Arc<Parker>);
    impl Drop for Registered<'_> {
        fn drop(&mut self) {
            self.0.shared.exit_block_on(&self.1);
        }
    }

    // A blocking job may call `block_on`: what it polls here is not part of that job's task.
    let _no_task = CurrentTaskGuard::enter_none();
    let _budget = BudgetGuard::unconstrained();
    let parker = Arc::new(Parker::new());
    handle.shared.enter_block_on(&parker);
    let _registered = Registered(handle, parker.clone());
    let waker = arc_waker(UnparkOnWake(parker.clone()));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let driver = &handle.shared.driver;
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // Idle now (virtual time counts this thread as a worker: driver.rs rules 6 and 7).
        driver.before_idle();
        parker.park(|| driver.wake_if_virtual());
    }
}

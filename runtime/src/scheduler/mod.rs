//! The multi-threaded work-stealing scheduler.
//!
//! - `queue`: the run queues (crossbeam-deque, or a loom stand-in).
//! - `worker`: a worker's local state and its run/steal/park loop.
//! - `idle`: who is searching, who sleeps: the sleep/wake protocol (prose spec inside).
//! - `park`: the `Parker` each worker sleeps on.
//! - `shutdown`: the shutdown sequence (prose spec inside).
//!
//! [`Handle`] is the public, cloneable reference to one scheduler; every task holds one (it is
//! the task's `Schedule` implementation), so the scheduler's shared state lives as long as any
//! task, waker or handle does.

mod idle;
mod park;
mod queue;
mod returned;
mod shutdown;
mod worker;

#[cfg(all(test, loom))]
mod loom_driver;
#[cfg(all(test, loom))]
mod loom_models;

pub(crate) use park::Parker;
pub(crate) use worker::WorkerCore;

use std::fmt;
use std::future::Future;

use self::idle::Idle;
use self::queue::{Injector, Stealer, Worker};
use self::returned::Returned;
use crate::blocking::BlockingPool;
use crate::context;
use crate::driver::Driver;
use crate::sync::atomic::{AtomicBool, Ordering::*};
use crate::sync::{Arc, Mutex, RwLock};
use crate::task::{self, JoinHandle, Notified, OwnedTasks, Released, Schedule, Task, TaskId};

/// A handle to a runtime: spawn tasks onto it from anywhere, including from outside it.
///
/// Cheap to clone (a reference count). A handle outliving its runtime is fine: spawning through
/// it then yields tasks that are cancelled at once (their join reports
/// [`JoinError::is_cancelled`](crate::JoinError::is_cancelled)).
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

/// Settings fixed when the runtime is built.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) thread_name: String,
    #[allow(dead_code)] // read once the timer driver lands (issue 3)
    pub(crate) virtual_time: bool,
}

/// State shared by the workers and every handle.
pub(crate) struct Shared {
    injector: Injector<Notified<Handle>>,
    /// `true` once shutdown closed the injector: pushes are refused from then on, so nothing is
    /// left in it after its final drain (a queued task would keep the scheduler alive forever).
    injector_closed: RwLock<bool>,
    remotes: Box<[Remote]>,
    idle: Idle,
    pub(crate) owned: OwnedTasks<Handle>,
    /// Set at step 1 of shutdown (tasks are being cancelled because the runtime shuts down).
    closing: AtomicBool,
    shutdown: AtomicBool,
    pub(crate) worker_latch: shutdown::WorkerLatch,
    pub(crate) blocking: BlockingPool,
    pub(crate) driver: Driver,
    /// Parkers of the threads inside `block_on` on this runtime (virtual time counts them as
    /// workers: `driver.rs` rule 6).
    block_on_threads: Mutex<Vec<Arc<Parker>>>,
    pub(crate) config: Config,
}

/// What other threads may touch of one worker.
struct Remote {
    stealer: Stealer<Notified<Handle>>,
    parker: Parker,
    /// This worker's home tasks that other workers completed and released from the registry
    /// (`worker.rs`, "Releasing completed tasks"): their last references, dropped by this
    /// worker.
    returned: Returned<ReleasedTask>,
}

/// A completed task's last references: the completing worker's and the registry's (`None` if
/// it was never registered).
type ReleasedTask = (Task<Handle>, Option<Task<Handle>>);

impl Handle {
    /// Builds the shared state and the per-worker cores (not yet running).
    pub(crate) fn new(
        workers: usize,
        config: Config,
        blocking: BlockingPool,
    ) -> std::io::Result<(Handle, Vec<WorkerCore>)> {
        let driver = Driver::new(config.virtual_time)?;
        let locals: Vec<Worker<Notified<Handle>>> =
            (0..workers).map(|_| Worker::new_fifo()).collect();
        let remotes = locals
            .iter()
            .map(|local| Remote {
                stealer: local.stealer(),
                parker: Parker::new(),
                returned: Returned::new(),
            })
            .collect();
        let shared = Shared {
            injector: Injector::new(),
            injector_closed: RwLock::new(false),
            remotes,
            idle: Idle::new(workers),
            owned: OwnedTasks::new(workers, crate::tuning::REMOTE_OWNED_SHARDS),
            closing: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            worker_latch: shutdown::WorkerLatch::new(workers),
            blocking,
            driver,
            block_on_threads: Mutex::new(Vec::new()),
            config,
        };
        let handle = Handle { shared: Arc::new(shared) };
        let cores = locals
            .into_iter()
            .enumerate()
            .map(|(index, local)| WorkerCore::new(index, handle.clone(), local))
            .collect();
        Ok((handle, cores))
    }

    /// The handle of the runtime the calling thread is running in.
    ///
    /// # Panics
    /// Outside a runtime (not on a worker, blocking-pool thread, or inside `block_on`), with a
    /// message saying how to get one. [`try_current`](Self::try_current) does not panic.
    #[track_caller]
    pub fn current() -> Handle {
        match Handle::try_current() {
            Some(handle) => handle,
            None => panic!("{}", context::NO_RUNTIME),
        }
    }

    /// The handle of the runtime the calling thread is running in, if any.
    pub fn try_current() -> Option<Handle> {
        context::with_handle(|h| h.cloned())
    }

    /// Spawns a task onto this runtime. It starts running right away, on some worker; the
    /// returned [`JoinHandle`] awaits its output (or drop it to let the task run detached).
    ///
    /// Tasks spawned this way are children of the runtime's root scope: they end at the
    /// latest when the runtime shuts down (they are cancelled, then dropped).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, notified, join) = task::new_task(future, self.clone(), TaskId::next());
        self.submit_new(task, notified);
        join
    }

    /// Spawns a task whose root status node is a child of `parent` (a nursery's node);
    /// `before_submit` sees the root before the task can run anywhere.
    pub(crate) fn spawn_under<F>(
        &self,
        future: F,
        parent: &Arc<crate::cancel::node::Node>,
        before_submit: impl FnOnce(&Arc<crate::cancel::node::Node>),
    ) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, notified, join, root) =
            task::new_task_under(future, self.clone(), TaskId::next(), parent);
        before_submit(&root);
        self.submit_new(task, notified);
        join
    }

    /// Spawns a nursery child whose root status node is created under `parent` on first need
    /// (see `task::new_task_lazy_under`).
    pub(crate) fn spawn_lazy_under<F>(
        &self,
        future: F,
        parent: &Arc<crate::cancel::node::Node>,
    ) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, notified, join) =
            task::new_task_lazy_under(future, self.clone(), TaskId::next(), parent);
        self.submit_new(task, notified);
        join
    }

    fn submit_new(&self, task: task::Task<Handle>, notified: task::Notified<Handle>) {
        let home = context::with_worker(|core| core.and_then(|c| c.home_for(&self.shared)));
        match self.shared.owned.bind(task, home) {
            Ok(()) => {
                if let Some(refused) = self.shared.schedule(notified) {
                    refused.shutdown();
                }
            }
            Err(task) => {
                // The runtime is shutting down: complete the task as cancelled, never run it.
                drop(notified);
                task.shutdown();
            }
        }
    }

    /// Runs a blocking function on the runtime's blocking pool; see
    /// [`spawn_blocking`](crate::spawn_blocking).
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.blocking.spawn(self, f)
    }

    /// Makes this runtime current on the calling thread until the guard is dropped, so that
    /// [`spawn`](crate::spawn) and [`Handle::current`] work there (on a thread of your own).
    pub fn enter(&self) -> EnterGuard<'_> {
        EnterGuard { _guard: context::enter_handle(self), _handle: std::marker::PhantomData }
    }

    /// A snapshot of the runtime's counters (diagnostics, tests).
    pub fn metrics(&self) -> RuntimeMetrics {
        let shared = &self.shared;
        RuntimeMetrics {
            workers: shared.remotes.len(),
            live_tasks: shared.owned.len(),
            timers: shared.driver.time.live_entries(),
            io_sources: shared.driver.reactor.registrations(),
            virtual_time: shared.driver.time.is_virtual(),
        }
    }

    /// Whether `self` and `other` refer to the same runtime.
    pub fn ptr_eq(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Counters of a runtime at one moment ([`Handle::metrics`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// Worker threads.
    pub workers: usize,
    /// Tasks spawned and not yet finished (blocking jobs excluded).
    pub live_tasks: usize,
    /// Timer entries: sleeps that registered and are still alive.
    pub timers: usize,
    /// File descriptors registered with the reactor.
    pub io_sources: usize,
    /// Whether the clock is virtual.
    pub virtual_time: bool,
}

/// Returned by [`Handle::enter`]; restores the previous context when dropped.
#[must_use = "the runtime is current only until the guard is dropped"]
pub struct EnterGuard<'a> {
    _guard: context::ContextGuard,
    _handle: std::marker::PhantomData<&'a Handle>,
}

impl fmt::Debug for EnterGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnterGuard")
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.shared.remotes.len())
            .field("thread_name", &self.shared.config.thread_name)
            .finish_non_exhaustive()
    }
}

impl Schedule for Handle {
    fn schedule(&self, task: Notified<Self>) -> Option<Notified<Self>> {
        self.shared.schedule(task)
    }

    fn release(&self, runner: Task<Self>) -> Released<Self> {
        // A task from another worker's shard, completed on a worker: released later, in a
        // batch (one lock of that shard per batch). From its own shard (the lock is the
        // worker's own, uncontended) it is released now, so its memory is reused at once.
        let runner = context::with_worker(|core| match core {
            Some(core) if core.belongs_to(&self.shared) && !core.is_home_of(&runner) => {
                core.defer_release(runner);
                None
            }
            _ => Some(runner),
        });
        match runner {
            None => Released::Deferred,
            Some(runner) => {
                let registry = self.shared.owned.remove(runner.raw());
                Released::now(runner, registry)
            }
        }
    }
}

impl Shared {
    /// Whether shutdown has begun (its step 1).
    pub(crate) fn owned_closed(&self) -> bool {
        self.closing.load(Relaxed)
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Acquire)
    }

    /// Queues a runnable task: locally (LIFO slot or local queue) when called on one of this
    /// scheduler's workers, otherwise through the injector. Returns the task if the scheduler
    /// is shut down (see `Schedule::schedule`).
    #[must_use = "a refused task must be shut down by the caller"]
    fn schedule(&self, task: Notified<Handle>) -> Option<Notified<Handle>> {
        let task = context::with_worker(|core| match core {
            Some(core) if core.belongs_to(self) => {
                core.schedule_local(task, false);
                None
            }
            _ => Some(task),
        })?;
        self.schedule_remote(task)
    }

    #[must_use = "a refused task must be shut down by the caller"]
    fn schedule_remote(&self, task: Notified<Handle>) -> Option<Notified<Handle>> {
        let closed = self.injector_closed.read();
        if *closed {
            // Shutdown already drained the injector for the last time; the task is (or will
            // be) completed by the shutdown sequence.
            return Some(task);
        }
        self.injector.push(task);
        drop(closed);
        self.notify_parked();
        None
    }

    /// Rule 1 of `idle.rs`: wake a sleeper if nobody is searching.
    fn notify_parked(&self) {
        if let Some(index) = self.idle.worker_to_notify() {
            self.remotes[index].parker.unpark(Some(&self.driver));
        }
    }

    /// As `notify_parked`, for work a worker queued for itself (see
    /// `Idle::worker_to_notify_local`).
    fn notify_parked_local(&self) {
        if let Some(index) = self.idle.worker_to_notify_local() {
            self.remotes[index].parker.unpark(Some(&self.driver));
        }
    }

    /// Registers the parker of a thread entering `block_on` (see `block_on_threads`).
    pub(crate) fn enter_block_on(&self, parker: &Arc<Parker>) {
        self.block_on_threads.lock().push(parker.clone());
    }

    /// Unregisters the parker of a thread leaving `block_on`: with virtual time that thread may
    /// have been the last busy participant (`driver.rs` rules 6 and 7).
    pub(crate) fn exit_block_on(&self, parker: &Arc<Parker>) {
        self.driver.before_idle();
        {
            let mut threads = self.block_on_threads.lock();
            if let Some(i) = threads.iter().position(|p| Arc::ptr_eq(p, parker)) {
                threads.swap_remove(i);
            }
        }
        self.driver.wake_if_virtual();
    }

    /// Rule 6 of `driver.rs`: the whole runtime is idle, so virtual time may jump. Called by
    /// the driver's waiter, itself already registered asleep. The worker count must be read
    /// first: workers bump no epoch (rule 6).
    fn is_idle_for_virtual_time(&self) -> bool {
        self.idle.num_unparked() == 0
            && self.injector.is_empty()
            && self.remotes.iter().all(|r| r.stealer.is_empty())
            && self.blocking.is_idle()
            && self.block_on_threads.lock().iter().all(|p| p.is_idle())
    }

    /// Rule 4 of `idle.rs`: the last searcher found nothing; look once more everywhere.
    fn notify_if_work_pending(&self) {
        let pending =
            self.remotes.iter().any(|r| !r.stealer.is_empty()) || !self.injector.is_empty();
        if pending {
            self.notify_parked();
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("workers", &self.remotes.len()).finish_non_exhaustive()
    }
}

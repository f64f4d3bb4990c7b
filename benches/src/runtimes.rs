//! The three runtimes under comparison: their in-task [`Spawner`]s and the [`Runtimes`] set the
//! driver thread injects root tasks into.
//!
//! All three get the same worker count and are built outside the timed region. When no task is
//! running, every worker parks (trellis and tokio by design; async-executor's runners park in
//! `futures_lite::future::block_on`), so the runtimes not being measured do not steal the cores.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::thread;

use async_executor::Executor;
use futures::channel::oneshot;

use crate::job::{Root, Spawner};

/// trellis: `trellis::spawn` (detached) and `trellis::yield_now`.
#[derive(Clone, Copy, Debug)]
pub struct Trellis;

impl Spawner for Trellis {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(trellis::spawn(future));
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        trellis::yield_now()
    }
}

/// tokio (multi-thread scheduler): `tokio::spawn` (detached) and `tokio::task::yield_now`.
#[derive(Clone, Copy, Debug)]
pub struct Tokio;

impl Spawner for Tokio {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(tokio::spawn(future));
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        tokio::task::yield_now()
    }
}

/// async-executor (smol's executor): `Executor::spawn(..).detach()` on the shared executor and
/// `futures_lite::future::yield_now`.
///
/// It holds a `&'static` executor (smol's idiomatic `static EX: Executor`), not an `Arc`: tokio
/// and trellis find their scheduler in a thread-local, so an `Arc` clone per task that needs to
/// spawn (ping_pong's rounds) would be refcount traffic only async-executor pays.
#[derive(Clone, Copy)]
pub struct Smol(pub &'static Executor<'static>);

impl fmt::Debug for Smol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smol").finish_non_exhaustive()
    }
}

impl Spawner for Smol {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(future).detach();
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        futures_lite::future::yield_now()
    }
}

/// An `async_executor::Executor` run by `n` std threads, each in
/// `futures_lite::future::block_on(ex.run(<until shutdown>))`. Dropping it stops and joins them.
///
/// The executor is an `Arc` shared by the runner threads; one clone of it is leaked to give the
/// in-task [`Smol`] spawner a `&'static` (so one executor, with nothing in it, is leaked per
/// pool).
pub struct SmolPool {
    executor: Arc<Executor<'static>>,
    spawner: Smol,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl SmolPool {
    /// Starts `workers` runner threads named `smol-worker-N`.
    pub fn new(workers: usize) -> io::Result<SmolPool> {
        let executor = Arc::new(Executor::new());
        let leaked: &'static Arc<Executor<'static>> = Box::leak(Box::new(executor.clone()));
        let spawner = Smol(leaked);
        let mut pool = SmolPool { executor, spawner, stops: Vec::new(), threads: Vec::new() };
        for index in 0..workers {
            let (stop, stopped) = oneshot::channel::<()>();
            let executor = pool.executor.clone();
            let runner =
                thread::Builder::new().name(format!("smol-worker-{index}")).spawn(move || {
                    futures_lite::future::block_on(executor.run(async {
                        // Resolves (with `Canceled`) when the pool drops the sender.
                        let _ = stopped.await;
                    }));
                })?;
            pool.stops.push(stop);
            pool.threads.push(runner);
        }
        Ok(pool)
    }

    /// The in-task spawner.
    pub fn spawner(&self) -> Smol {
        self.spawner
    }

    /// Injects a root task from outside the pool.
    pub fn inject(&self, root: Root) {
        self.executor.spawn(root).detach();
    }
}

impl Drop for SmolPool {
    fn drop(&mut self) {
        self.stops.clear();
        for runner in self.threads.drain(..) {
            let _ = runner.join();
        }
    }
}

impl fmt::Debug for SmolPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolPool").field("workers", &self.threads.len()).finish_non_exhaustive()
    }
}

/// The three runtimes, each with the same number of worker threads.
#[derive(Debug)]
pub struct Runtimes {
    /// trellis, worker threads named `trellis-worker-N`.
    pub trellis: trellis::Runtime,
    /// tokio multi-thread with all drivers enabled, worker threads named `tokio-worker`.
    pub tokio: tokio::runtime::Runtime,
    /// async-executor, runner threads named `smol-worker-N`.
    pub smol: SmolPool,
}

impl Runtimes {
    /// Builds all three with `workers` worker threads each.
    pub fn build(workers: usize) -> io::Result<Runtimes> {
        let trellis = trellis::Runtime::builder().worker_threads(workers).build()?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("tokio-worker")
            .enable_all()
            .build()?;
        let smol = SmolPool::new(workers)?;
        Ok(Runtimes { trellis, tokio, smol })
    }

    /// Injects a root task into trellis from outside (`Runtime::spawn`, detached).
    pub fn inject_trellis(&self, root: Root) {
        drop(self.trellis.spawn(root));
    }

    /// Injects a root task into tokio from outside (`Runtime::spawn`, detached).
    pub fn inject_tokio(&self, root: Root) {
        drop(self.tokio.spawn(root));
    }

    /// Injects a root task into async-executor from outside (`Executor::spawn(..).detach()`).
    pub fn inject_smol(&self, root: Root) {
        self.smol.inject(root);
    }
}

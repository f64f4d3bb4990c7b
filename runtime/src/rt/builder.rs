//! `Builder`: the runtime's settings.

use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use super::Runtime;
use crate::blocking::BlockingPool;
use crate::context;
use crate::scheduler::{Config, Handle, WorkerCore};
use crate::sync::thread;
use crate::tuning::{BLOCKING_KEEP_ALIVE, DEFAULT_MAX_BLOCKING_THREADS};

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = trellis_runtime::Runtime::builder()
///     .worker_threads(2)
///     .thread_name("my-app")
///     .build()
///     .unwrap();
/// assert_eq!(rt.block_on(async { 1 + 1 }), 2);
/// ```
pub struct Builder {
    worker_threads: Option<usize>,
    thread_name: String,
    max_blocking_threads: usize,
    blocking_keep_alive: Duration,
    virtual_time: bool,
}

impl Builder {
    pub(crate) fn new() -> Builder {
        Builder {
            worker_threads: None,
            thread_name: "trellis".to_owned(),
            max_blocking_threads: DEFAULT_MAX_BLOCKING_THREADS,
            blocking_keep_alive: BLOCKING_KEEP_ALIVE,
            virtual_time: false,
        }
    }

    /// Number of worker threads that run tasks. Default: the number of CPUs available.
    ///
    /// # Panics
    /// If `n` is 0 (a runtime needs at least one worker).
    #[track_caller]
    pub fn worker_threads(&mut self, n: usize) -> &mut Builder {
        assert!(
            n > 0,
            "Builder::worker_threads: a runtime needs at least one worker thread (got 0)"
        );
        self.worker_threads = Some(n);
        self
    }

    /// Name prefix of the runtime's threads: workers are `NAME-worker-I`, blocking-pool threads
    /// `NAME-blocking`. Default: `trellis`.
    pub fn thread_name(&mut self, name: impl Into<String>) -> &mut Builder {
        self.thread_name = name.into();
        self
    }

    /// Upper bound on threads of the blocking pool (`spawn_blocking`); jobs beyond it wait in
    /// a queue. Default: 512.
    ///
    /// # Panics
    /// If `n` is 0.
    #[track_caller]
    pub fn max_blocking_threads(&mut self, n: usize) -> &mut Builder {
        assert!(
            n > 0,
            "Builder::max_blocking_threads: the blocking pool needs at least one thread (got 0)"
        );
        self.max_blocking_threads = n;
        self
    }

    /// How long an idle blocking-pool thread waits for a job before it exits. Default: 10 s.
    pub fn blocking_keep_alive(&mut self, keep_alive: Duration) -> &mut Builder {
        self.blocking_keep_alive = keep_alive;
        self
    }

    /// Runs the runtime's clock on virtual time: the clock jumps to the next timer deadline
    /// whenever the whole runtime is idle, so tests that sleep for an hour finish at once.
    /// Default: off. (The switch is recorded now; the timer driver that honours it lands with
    /// the timers.)
    pub fn virtual_time(&mut self, enabled: bool) -> &mut Builder {
        self.virtual_time = enabled;
        self
    }

    /// Starts the worker threads and returns the runtime.
    ///
    /// # Errors
    /// If the operating system refuses to start a thread.
    pub fn build(&mut self) -> io::Result<Runtime> {
        let workers = self
            .worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let blocking = BlockingPool::new(
            self.max_blocking_threads,
            self.blocking_keep_alive,
            format!("{}-blocking", self.thread_name),
        );
        let config =
            Config { thread_name: self.thread_name.clone(), virtual_time: self.virtual_time };
        let (handle, cores) = Handle::new(workers, config, blocking)?;
        let mut threads = Vec::with_capacity(workers);
        let mut runtime = Runtime { handle: handle.clone(), threads: Vec::new(), shut_down: false };
        for (index, core) in cores.into_iter().enumerate() {
            let worker_handle = handle.clone();
            let spawned = thread::Builder::new()
                .name(format!("{}-worker-{index}", self.thread_name))
                .spawn(move || worker_main(worker_handle, core));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // Workers that never started still count in the exit latch.
                    for _ in threads.len()..workers {
                        handle.shared.worker_latch.worker_exited();
                    }
                    runtime.threads = threads;
                    drop(runtime); // shuts down the workers that did start
                    return Err(e);
                }
            }
        }
        runtime.threads = threads;
        Ok(runtime)
    }
}

fn worker_main(handle: Handle, core: WorkerCore) {
    /// Counts the worker out even if the loop unwinds (a bug), so shutdown never waits for it.
    struct ExitGuard(Handle);
    impl Drop for ExitGuard {
        fn drop(&mut self) {
            self.0.shared.worker_latch.worker_exited();
        }
    }
    let _exit = ExitGuard(handle.clone());
    let core = Rc::new(core);
    let context = context::enter_worker(&handle, core.clone());
    core.run();
    drop(context);
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("worker_threads", &self.worker_threads)
            .field("thread_name", &self.thread_name)
            .field("max_blocking_threads", &self.max_blocking_threads)
            .field("virtual_time", &self.virtual_time)
            .finish()
    }
}

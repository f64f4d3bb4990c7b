//! The blocking pool: runs `spawn_blocking` jobs on a bounded, growing, idle-reaping set of
//! threads.
//!
//! A job is an ordinary task cell (so its `JoinHandle` is the same type and joins the same way)
//! whose future calls the closure on its first poll, scheduled onto this pool instead of the
//! workers. A job waits in a FIFO queue until a thread is free: an idle thread is woken if
//! there is one, otherwise a new thread is started while fewer than `max_threads` exist,
//! otherwise the job waits for the next thread to finish. A thread idle for
//! [`BLOCKING_KEEP_ALIVE`](crate::tuning::BLOCKING_KEEP_ALIVE) exits.
//!
//! Cancelling a job (its `JoinHandle::cancel`, or shutdown) before it starts means it never
//! starts: its closure is dropped and the join reports cancelled. A job already running cannot
//! be interrupted; shutdown waits for it for what is left of the grace period, then detaches
//! its thread.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::context;
use crate::scheduler::Handle;
use crate::sync::thread::{self, JoinHandle as ThreadHandle};
use crate::sync::{thread_local_const, Arc, Condvar, Mutex};
use crate::task::{self, JoinHandle, Notified, Released, Schedule, Task, TaskId};
use std::cell::Cell;

/// The pool, owned by the scheduler's shared state.
#[derive(Debug)]
pub(crate) struct BlockingPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Idle threads wait here for jobs.
    job_cv: Condvar,
    /// Shutdown waits here for the last thread to exit.
    exit_cv: Condvar,
    max_threads: usize,
    keep_alive: Duration,
    thread_name: String,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Notified<BlockingSchedule>>,
    num_threads: usize,
    num_idle: usize,
    /// Wake-ups handed to idle threads and not yet consumed.
    num_notify: usize,
    shutdown: bool,
    next_thread_id: usize,
    threads: HashMap<usize, ThreadHandle<()>>,
}

/// The `Schedule` of blocking jobs: "queue me on the pool".
#[derive(Clone, Debug)]
pub(crate) struct BlockingSchedule {
    inner: Arc<Inner>,
    handle: Handle,
}

impl BlockingPool {
    pub(crate) fn new(
        max_threads: usize,
        keep_alive: Duration,
        thread_name: String,
    ) -> BlockingPool {
        BlockingPool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    num_threads: 0,
                    num_idle: 0,
                    num_notify: 0,
                    shutdown: false,
                    next_thread_id: 0,
                    threads: HashMap::new(),
                }),
                job_cv: Condvar::new(),
                exit_cv: Condvar::new(),
                max_threads,
                keep_alive,
                thread_name,
            }),
        }
    }

    pub(crate) fn spawn<F, R>(&self, handle: &Handle, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let schedule = BlockingSchedule { inner: self.inner.clone(), handle: handle.clone() };
        let job = BlockingJob { f: Some(f) };
        let (task, notified, join) = task::new_task(job, schedule.clone(), TaskId::next());
        match schedule.push(notified) {
            // The queue entry keeps the task alive until it runs; no registry is needed.
            None => drop(task),
            Some(refused) => {
                drop(refused);
                task.shutdown();
            }
        }
        join
    }

    /// Step 7 of the shutdown sequence (see `scheduler::shutdown`). If called from one of this
    /// pool's own threads (a blocking job dropping the runtime), that thread is not waited for.
    pub(crate) fn shutdown(&self, deadline: Instant) {
        let inner = &*self.inner;
        let own_thread = POOL_THREAD
            .with(|t| t.get())
            .0
            .eq(&inner.address())
            .then(|| POOL_THREAD.with(|t| t.get().1));
        let others = usize::from(own_thread.is_some());
        let queued = {
            let mut state = inner.state.lock();
            state.shutdown = true;
            inner.job_cv.notify_all();
            std::mem::take(&mut state.queue)
        };
        for job in queued {
            job.shutdown();
        }
        let mut state = inner.state.lock();
        while state.num_threads > others {
            let now = Instant::now();
            if now >= deadline {
                return; // running jobs overstayed the grace period: detach their threads
            }
            inner.exit_cv.wait_for(&mut state, deadline - now);
        }
        let threads: Vec<_> = state
            .threads
            .drain()
            .filter(|(id, _)| Some(*id) != own_thread)
            .map(|(_, t)| t)
            .collect();
        drop(state);
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// No job queued or running (virtual time: `driver.rs` rule 6).
    pub(crate) fn is_idle(&self) -> bool {
        let state = self.inner.state.lock();
        state.queue.is_empty() && state.num_idle == state.num_threads
    }

    /// Number of pool threads alive (for tests).
    #[allow(dead_code)]
    pub(crate) fn num_threads(&self) -> usize {
        self.inner.state.lock().num_threads
    }
}

impl Inner {
    /// Identifies the pool (for the thread-local "this is one of my threads" marker).
    fn address(&self) -> usize {
        self as *const Inner as usize
    }
}

thread_local_const! {
    /// On a pool thread: (address of its pool, its id in `State::threads`).
    static POOL_THREAD: Cell<(usize, usize)> = Cell::new((0, usize::MAX));
}

impl BlockingSchedule {
    /// Queues a job, waking or starting a thread for it. Returns the job if the pool is shut
    /// down.
    fn push(&self, job: Notified<BlockingSchedule>) -> Option<Notified<BlockingSchedule>> {
        let inner = &self.inner;
        let mut state = inner.state.lock();
        if state.shutdown {
            return Some(job);
        }
        state.queue.push_back(job);
        if state.num_idle > 0 {
            state.num_idle -= 1;
            state.num_notify += 1;
            inner.job_cv.notify_one();
        } else if state.num_threads < inner.max_threads {
            let id = state.next_thread_id;
            state.next_thread_id += 1;
            let pool = self.clone();
            let spawned = thread::Builder::new()
                .name(inner.thread_name.clone())
                .spawn(move || pool.thread_main(id));
            match spawned {
                Ok(thread) => {
                    state.num_threads += 1;
                    state.threads.insert(id, thread);
                }
                // Out of threads: the job waits for a running thread to come back for it.
                Err(e) if state.num_threads > 0 => {
                    eprintln!("trellis: could not start a blocking-pool thread ({e}); the job waits for a busy one");
                }
                Err(e) => {
                    // No thread will ever run it: take the job back, complete it as cancelled,
                    // and report the failure.
                    let job = state.queue.pop_back().expect("the job just queued");
                    drop(state);
                    job.shutdown();
                    panic!("trellis: could not start any blocking-pool thread: {e}");
                }
            }
        }
        None
    }

    fn thread_main(&self, id: usize) {
        let _context = context::enter_blocking_thread(&self.handle);
        let inner = &*self.inner;
        POOL_THREAD.with(|t| t.set((inner.address(), id)));
        let mut state = inner.state.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                let again = job.run();
                state = inner.state.lock();
                if let Some(job) = again {
                    // Asked to be polled again (it was cancelled mid-poll: see `BlockingJob`).
                    if state.shutdown {
                        drop(state);
                        job.shutdown();
                        state = inner.state.lock();
                    } else {
                        state.queue.push_back(job);
                    }
                }
                continue;
            }
            if state.shutdown {
                break;
            }
            // With virtual time, this thread going idle may be what lets the clock move
            // (`driver.rs` rules 6 and 7).
            self.handle.shared.driver.before_idle();
            state.num_idle += 1;
            self.handle.shared.driver.wake_if_virtual();
            let timed_out = inner.job_cv.wait_for(&mut state, inner.keep_alive).timed_out();
            if state.num_notify > 0 {
                state.num_notify -= 1; // a pusher claimed us (and already counted us busy)
                continue;
            }
            state.num_idle -= 1;
            if timed_out && state.queue.is_empty() && !state.shutdown {
                // Reaped: nobody needed this thread for a whole keep-alive period.
                state.threads.remove(&id);
                break;
            }
        }
        state.num_threads -= 1;
        if state.num_threads == 0 {
            inner.exit_cv.notify_all();
        }
    }
}

impl Schedule for BlockingSchedule {
    fn schedule(&self, task: Notified<Self>) -> Option<Notified<Self>> {
        self.push(task)
    }

    fn release(&self, runner: Task<Self>) -> Released<Self> {
        // Jobs are not registered: their queue entry or their runner keeps them alive.
        Released::now(runner, None)
    }
}

/// The future of a blocking job: calls the closure on its first poll.
struct BlockingJob<F> {
    f: Option<F>,
}

impl<F> Unpin for BlockingJob<F> {}

impl<F: FnOnce() -> R, R> Future for BlockingJob<F> {
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<R> {
        if task::is_cancelled() {
            // Cancelled before it started: the task root drops the job without running it.
            return Poll::Pending;
        }
        let f = self.f.take().expect("a blocking job ran twice");
        Poll::Ready(f())
    }
}

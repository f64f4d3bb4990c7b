//! The shutdown sequence.
//!
//! Dropping a [`Runtime`](crate::Runtime) or calling
//! [`shutdown_timeout`](crate::Runtime::shutdown_timeout) runs these steps on the calling
//! thread (never a worker of the runtime: that is refused with a panic before step 1):
//!
//! 1. **Close the registry.** From now on a spawn gets its task back from `OwnedTasks::bind`
//!    and completes it as cancelled without running it (a spawn racing shutdown neither leaks
//!    nor runs).
//! 2. **Cancel every task through its root** (`JoinHandle::cancel` semantics: the cancel bit is
//!    set and the task is queued). The workers are still running, so each task gets its poll in
//!    which its cancel points fail, and is dropped at its next suspension; tasks that finish
//!    their cleanup leave the registry.
//! 3. **Grace period.** Wait (real time) until the registry is empty or the grace period ends.
//! 4. **Stop the workers.** Set the shutdown flag (`Release`) and unpark every worker. A worker
//!    sees the flag at the top of its loop or on waking, completes the tasks still queued on it
//!    as cancelled (`Notified::shutdown`) and exits. The workers are joined, within what is
//!    left of the grace period (at least [`MIN_WORKER_JOIN`], so idle workers are always
//!    joined): a worker stuck in a task that never returns is left behind (detached) rather
//!    than hanging the caller.
//! 5. **Close and drain the injector.** Under the write lock, mark it closed and complete what
//!    it holds as cancelled. A wake that comes later finds it closed and gets its entry back
//!    (`Schedule`), and the waker completes the task as cancelled itself.
//! 6. **Drop what is left.** Take every task out of the registry and shut it down: its future
//!    is dropped here (exactly once: whoever sets `RUNNING` owns the future). A task a
//!    detached worker is still polling is skipped here; when that poll ends, the worker sees
//!    the shutdown flag and completes it as cancelled instead of queueing it again.
//! 7. **Blocking pool.** Queued blocking jobs are cancelled; running ones get what is left of
//!    the grace period, then their threads are detached.
//!
//! Every task future is therefore dropped exactly once, no task reference outlives the
//! sequence (except those held by user `JoinHandle`s and wakers, which keep only the cell),
//! and nothing waits longer than the grace period plus the time to drop the futures.

use std::time::{Duration, Instant};

use super::queue::Steal;
use super::Handle;
use crate::sync::atomic::Ordering::{Relaxed, Release};
use crate::sync::thread::JoinHandle as ThreadHandle;
use crate::sync::{Condvar, Mutex};
use crate::tuning::MIN_WORKER_JOIN;

/// Counts worker threads still running, so shutdown can wait for them with a deadline.
#[derive(Debug)]
pub(crate) struct WorkerLatch {
    running: Mutex<usize>,
    cv: Condvar,
}

impl WorkerLatch {
    pub(crate) fn new(workers: usize) -> WorkerLatch {
        WorkerLatch { running: Mutex::new(workers), cv: Condvar::new() }
    }

    /// Called by a worker thread as the last thing it does.
    pub(crate) fn worker_exited(&self) {
        let mut running = self.running.lock();
        *running -= 1;
        if *running == 0 {
            self.cv.notify_all();
        }
    }

    /// Waits until every worker exited or `deadline` passed; true if they all exited.
    fn wait(&self, deadline: Instant) -> bool {
        let mut running = self.running.lock();
        while *running > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.cv.wait_for(&mut running, deadline - now);
        }
        true
    }
}

impl Handle {
    /// Runs the shutdown sequence (module doc); `threads` are the worker threads.
    pub(crate) fn shutdown(&self, threads: Vec<ThreadHandle<()>>, grace: Duration) {
        let shared = &*self.shared;
        let deadline = Instant::now() + grace;

        // Steps 1-3.
        shared.closing.store(true, Relaxed);
        shared.owned.close();
        for task in shared.owned.snapshot() {
            task.cancel();
        }
        shared.owned.wait_empty(deadline);

        // Step 4.
        shared.shutdown.store(true, Release);
        for remote in shared.remotes.iter() {
            remote.parker.unpark(Some(&shared.driver));
        }
        // Idle workers exit at once; allow them a moment even if the grace period is spent.
        let join_deadline = deadline.max(Instant::now() + MIN_WORKER_JOIN);
        if shared.worker_latch.wait(join_deadline) {
            for thread in threads {
                // A worker never unwinds (task panics are caught), so this cannot fail; if it
                // somehow did, the panic was already printed by the thread.
                let _ = thread.join();
            }
        }

        // Step 5.
        {
            let mut closed = shared.injector_closed.write();
            *closed = true;
        }
        loop {
            match shared.injector.steal() {
                Steal::Success(task) => task.shutdown(),
                Steal::Empty => break,
                Steal::Retry => crate::sync::spin_loop(),
            }
        }

        // Step 6.
        for task in shared.owned.drain() {
            task.shutdown();
        }

        // Step 7.
        shared.blocking.shutdown(deadline);
    }
}

//! A worker thread: its local queue, LIFO slot, and the loop that runs, steals and parks.
//!
//! # The loop
//!
//! Each tick a worker takes its next task from, in order: the global injector every
//! [`GLOBAL_QUEUE_INTERVAL`] ticks (fairness for remote spawns and wakes), its local FIFO
//! queue, then a batch from the injector. With nothing there it tries to become a searcher and
//! steal a batch from a random victim (then the injector again); failing that it parks (the
//! protocol of `idle.rs`).
//!
//! # The LIFO slot
//!
//! A task woken or spawned by the task running on this worker goes into the LIFO slot and
//! runs right after the current one, while its data is still in cache (message passing,
//! request/response). The task it displaces goes to the back of the local queue. At most
//! [`MAX_LIFO_POLLS_IN_A_ROW`] slot tasks run in a row, and only while the cooperative budget
//! lasts; after that the slot is flushed to the local queue so that two tasks waking each
//! other cannot starve the rest. The slot is not stealable; the first wake into an empty slot
//! does not wake another worker, every push into the local queue does (rule 1 of `idle.rs`).
//!
//! # Releasing completed tasks
//!
//! A task completed on its home worker (the one that spawned it) leaves the registry at once.
//! One completed here but homed elsewhere is kept and released in a batch
//! ([`RELEASE_BATCH`], and before the worker sleeps): one lock of the home shard per batch;
//! then its last references go back to the home worker, which frees the cells it allocated
//! (`returned.rs`).

use std::cell::{Cell, RefCell};

use super::queue::{Steal, Worker};
use super::{Handle, Shared};
use crate::budget::{self, BudgetGuard};
use crate::task::Notified;
use crate::tuning::{
    EVENT_INTERVAL, GLOBAL_QUEUE_INTERVAL, MAX_LIFO_POLLS_IN_A_ROW, RELEASE_BATCH,
};
use std::time::Duration;

pub(crate) type Task = Notified<Handle>;
type OwnedTask = crate::task::Task<Handle>;
type ReleasedTask = (OwnedTask, Option<OwnedTask>);

/// Drops completed tasks' last references (deallocating them).
fn drop_released(tasks: Vec<ReleasedTask>) {
    for (task, registry) in tasks {
        task.drop_with(registry);
    }
}

/// The state only the worker's own thread touches (through the thread-local context).
pub(crate) struct WorkerCore {
    index: usize,
    handle: Handle,
    local: Worker<Task>,
    lifo: Cell<Option<Task>>,
    lifo_enabled: Cell<bool>,
    tick: Cell<u32>,
    searching: Cell<bool>,
    /// Inside `run_task` (a task is being polled): only then do wakes use the LIFO slot.
    in_poll: Cell<bool>,
    /// Inside a driver turn: woken tasks are queued without notifying peers one by one (the
    /// worker decides once the turn is over).
    in_driver: Cell<bool>,
    /// Tasks this worker completed, with its reference to each, waiting to be released from
    /// the registry in a batch (`task/owned.rs`).
    completed: RefCell<Vec<OwnedTask>>,
    rng: Cell<u64>,
}

impl WorkerCore {
    pub(super) fn new(index: usize, handle: Handle, local: Worker<Task>) -> WorkerCore {
        WorkerCore {
            index,
            handle,
            local,
            lifo: Cell::new(None),
            lifo_enabled: Cell::new(true),
            tick: Cell::new(0),
            searching: Cell::new(false),
            in_poll: Cell::new(false),
            in_driver: Cell::new(false),
            completed: RefCell::new(Vec::with_capacity(RELEASE_BATCH)),
            rng: Cell::new(0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) << 17)),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    pub(crate) fn belongs_to(&self, shared: &Shared) -> bool {
        std::ptr::eq(self.shared(), shared)
    }

    /// The registry shard for tasks this worker spawns onto `shared` (its home shard).
    pub(crate) fn home_for(&self, shared: &Shared) -> Option<usize> {
        self.belongs_to(shared).then_some(self.index)
    }

    /// Whether `task` is registered in this worker's home shard.
    pub(super) fn is_home_of(&self, task: &OwnedTask) -> bool {
        task.header().owned_location().0 == self.index
    }

    /// Keeps a completed task (with the completing poll's reference) for the next batch
    /// release. The batch is released by the worker loop, never here: this runs inside the
    /// task's completion, where the cell must stay alive.
    pub(super) fn defer_release(&self, task: OwnedTask) {
        self.completed.borrow_mut().push(task);
    }

    /// Releases the completed tasks from the registry in one batch and hands their last
    /// references to their home workers (`returned.rs`); first drops what peers handed to
    /// this worker.
    fn release_completed(&self) {
        self.drop_returned();
        let tasks = std::mem::take(&mut *self.completed.borrow_mut());
        if tasks.is_empty() {
            return;
        }
        let registry = self.shared().owned.remove_batch(&tasks);
        let mut released: Vec<ReleasedTask> = tasks.into_iter().zip(registry).collect();
        let home = |(task, _): &ReleasedTask| task.header().owned_location().0;
        released.sort_unstable_by_key(home);
        while let Some(last) = released.last() {
            let to = home(last);
            let run = released.iter().rev().take_while(|task| home(task) == to).count();
            let batch = released.split_off(released.len() - run);
            let refused = match self.shared().remotes.get(to) {
                Some(remote) if to != self.index => remote.returned.hand_back(batch),
                _ => batch, // no home worker (spawned from outside the workers)
            };
            drop_released(refused);
        }
    }

    /// Drops what peers handed back to this worker.
    fn drop_returned(&self) {
        drop_released(self.shared().remotes[self.index].returned.take());
    }

    /// The worker stops: drops what was handed back to it and refuses more.
    fn close_returned(&self) {
        drop_released(self.shared().remotes[self.index].returned.close());
    }

    /// Queues a task woken or spawned on this worker (see "The LIFO slot").
    pub(super) fn schedule_local(&self, task: Task, is_yield: bool) {
        if !self.in_poll.get() {
            // Woken outside a task poll (by the driver, or a drop): no LIFO slot.
            self.local.push(task);
            if !self.in_driver.get() {
                self.shared().notify_parked_local();
            }
            return;
        }
        let notify = if is_yield || !self.lifo_enabled.get() {
            self.local.push(task);
            true
        } else if let Some(prev) = self.lifo.replace(Some(task)) {
            self.local.push(prev);
            true
        } else {
            false
        };
        if notify {
            self.shared().notify_parked_local();
        }
    }

    /// The worker's main loop; returns at shutdown after dropping its queued entries.
    pub(crate) fn run(&self) {
        while !self.shared().is_shutdown() {
            let tick = self.tick.get().wrapping_add(1);
            self.tick.set(tick);
            if tick.is_multiple_of(EVENT_INTERVAL) {
                self.poll_driver();
            }
            if let Some(task) = self.next_task(tick) {
                self.run_task(task);
            } else if let Some(task) = self.steal_work() {
                self.run_task(task);
            } else {
                self.release_completed();
                self.park();
            }
            if self.completed.borrow().len() >= RELEASE_BATCH {
                self.release_completed();
            }
        }
        self.drain_local();
        self.release_completed();
        self.close_returned();
    }

    fn next_task(&self, tick: u32) -> Option<Task> {
        if tick.is_multiple_of(GLOBAL_QUEUE_INTERVAL) {
            if let Some(task) = steal_retrying(|| self.shared().injector.steal()) {
                return Some(task);
            }
        }
        if let Some(task) = self.lifo.take() {
            return Some(task);
        }
        self.local.pop().or_else(|| {
            self.steal_batch(|| self.shared().injector.steal_batch_and_pop(&self.local))
        })
    }

    fn steal_work(&self) -> Option<Task> {
        let shared = self.shared();
        if !self.searching.get() {
            if !shared.idle.transition_worker_to_searching() {
                return None;
            }
            self.searching.set(true);
        }
        let n = shared.remotes.len();
        let start = self.next_random() as usize % n;
        for i in 0..n {
            let victim = (start + i) % n;
            if victim == self.index {
                continue;
            }
            let stealer = &shared.remotes[victim].stealer;
            if let Some(task) = self.steal_batch(|| stealer.steal_batch_and_pop(&self.local)) {
                return Some(task);
            }
        }
        self.steal_batch(|| shared.injector.steal_batch_and_pop(&self.local))
    }

    /// Takes a batch into the (empty) local queue and returns one task of it. The rest of the
    /// batch was announced where it came from, but while it moved it was in no queue, so a
    /// worker re-checking the queues before it slept (rule 4 of `idle.rs`) may have missed it:
    /// announce it again (rule 1, fenced) if there is any.
    fn steal_batch(&self, steal: impl FnMut() -> Steal<Task>) -> Option<Task> {
        let task = steal_retrying(steal)?;
        if !self.local.is_empty() {
            self.shared().notify_parked();
        }
        Some(task)
    }

    fn run_task(&self, task: Task) {
        if self.searching.replace(false) && self.shared().idle.transition_worker_from_searching() {
            // Rule 3 of idle.rs: the last searcher found work; get another one looking.
            self.shared().notify_parked_local();
        }
        self.lifo_enabled.set(true);
        self.in_poll.set(true);
        let _budget = BudgetGuard::for_chain();
        self.poll(task);
        let mut lifo_polls = 0;
        while let Some(next) = self.lifo.take() {
            if lifo_polls >= MAX_LIFO_POLLS_IN_A_ROW || !budget::has_budget_remaining() {
                // Flush: the slot's task waits its turn, and later wakes skip the slot until
                // the next task from the queue runs.
                self.lifo_enabled.set(false);
                self.local.push(next);
                self.shared().notify_parked_local();
                break;
            }
            lifo_polls += 1;
            self.poll(next);
        }
        self.in_poll.set(false);
    }

    /// Polls one task; a task that yielded goes to the back of the local queue (or, once the
    /// runtime is shutting down, is completed as cancelled instead of being queued for a loop
    /// that is about to exit).
    fn poll(&self, task: Task) {
        // The harness catches every panic of user code; an unwind reaching this point is a
        // bug in trellis itself, in the middle of a task transition: stop the process rather
        // than carry on with a half-done state change (STYLE.md habit 8).
        let abort = AbortOnUnwind;
        let yielded = task.run();
        std::mem::forget(abort);
        if let Some(task) = yielded {
            if self.shared().is_shutdown() {
                task.shutdown();
            } else {
                self.schedule_local(task, true);
            }
        }
    }

    /// Rule 5 of `driver.rs`: a busy worker's non-blocking look at I/O and timers (and a
    /// chance to release completed tasks, so a worker that never sleeps still does).
    fn poll_driver(&self) {
        self.release_completed();
        let driver = &self.shared().driver;
        if !driver.has_pending_work() {
            return;
        }
        if let Some(mut waiter) = driver.try_lock_waiter() {
            self.in_driver.set(true);
            driver.turn(&mut waiter, Some(Duration::ZERO), || false, || false);
            self.in_driver.set(false);
            drop(waiter);
            if self.local.len() > 1 {
                self.shared().notify_parked_local();
            }
        }
    }

    fn park(&self) {
        let shared = self.shared();
        let was_searching = self.searching.replace(false);
        if shared.idle.transition_worker_to_parked(self.index, was_searching) {
            // Rule 4: with nobody searching any more, re-check every queue before sleeping.
            shared.notify_if_work_pending();
        }
        let driver = &shared.driver;
        let parker = &shared.remotes[self.index].parker;
        loop {
            parker.park_worker(
                driver,
                |waiter| {
                    self.in_driver.set(true);
                    driver.turn(
                        waiter,
                        None,
                        || shared.is_idle_for_virtual_time(),
                        || parker.is_notified(),
                    );
                    self.in_driver.set(false);
                },
                || driver.wake_if_virtual(),
            );
            if shared.is_shutdown() {
                return;
            }
            if shared.idle.transition_worker_from_parked(self.index) {
                // Rule 5 of idle.rs: woken by a notifier, which counted us as searching.
                self.searching.set(true);
                return;
            }
            if !self.local.is_empty() {
                // Rule 4 of driver.rs: the driver turn woke tasks into our queue.
                if !shared.idle.unpark_worker_by_id(self.index) {
                    // A notifier took us out meanwhile and counted us as searching.
                    self.searching.set(true);
                }
                if self.local.len() > 1 {
                    // More than this worker will run right away: let a peer help.
                    shared.notify_parked_local();
                }
                return;
            }
        }
    }

    /// At shutdown: completes the tasks still queued on this worker as cancelled (dropping
    /// their futures here, unless another thread is polling one).
    fn drain_local(&self) {
        if let Some(task) = self.lifo.take() {
            task.shutdown();
        }
        while let Some(task) = self.local.pop() {
            task.shutdown();
        }
    }

    /// xorshift64*: victim selection only needs to be cheap and differ between workers.
    fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Aborts the process if dropped while unwinding (see `WorkerCore::poll`).
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("trellis: internal error: a panic escaped a task poll on a worker; aborting");
        std::process::abort();
    }
}

/// Runs a steal until it is definite (crossbeam returns `Retry` when it lost a race).
fn steal_retrying(mut steal: impl FnMut() -> Steal<Task>) -> Option<Task> {
    loop {
        match steal() {
            Steal::Success(task) => return Some(task),
            Steal::Empty => return None,
            Steal::Retry => crate::sync::spin_loop(),
        }
    }
}

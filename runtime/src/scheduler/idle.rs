//! Which workers are searching for work and which are asleep: the sleep/wake protocol.
//!
//! # Terms
//!
//! - A worker is **unparked** unless it has registered itself as asleep (in `sleepers`).
//! - An unparked worker is **searching** while it has no task of its own and is trying to steal
//!   one (from the injector or another worker). At most about half the workers search at once,
//!   so an idle machine does not burn every core stealing from each other.
//! - `state` packs `num_searching` (low 16 bits) and `num_unparked` (the rest); it is changed
//!   only with `SeqCst` read-modify-writes, and changes that also touch `sleepers` happen with
//!   the `sleepers` lock held.
//!
//! # Protocol
//!
//! 1. **Making work.** Whoever makes a task runnable somewhere a parked worker would have to
//!    find it (the injector, or a local queue rather than the LIFO slot) first publishes the
//!    task, then calls [`Idle::worker_to_notify`], which issues a `SeqCst` fence and reads
//!    `state`. If some worker is searching, nothing more is done: that searcher will find the
//!    task or, being the last searcher to give up, re-check (rule 4). If nobody is searching
//!    and some worker is parked, it takes the lock, re-checks, counts one more searching and
//!    unparked worker *on the sleeper's behalf*, pops a sleeper and unparks it after unlocking.
//!    If every worker is unparked and none is searching, they are all running tasks and each
//!    will look at the queues before it sleeps.
//!
//!    Work a worker queues for *itself* (its LIFO slot or local queue, from inside a task it
//!    is running) cannot be lost: that worker never parks while its own queue holds work. The
//!    notification is then only about parallelism, so it starts with a plain load of `state`
//!    and skips the fence when nobody could be woken ([`Idle::worker_to_notify_local`]).
//!
//!    A *batch* a worker takes into its local queue (from the injector or a victim) is
//!    announced again, fenced, when the worker keeps any of it: while it moved it was in no
//!    queue, so a worker whose rule-4 re-check ran meanwhile saw nothing and may be asleep,
//!    and the taker may then be stuck in a long poll (loom model
//!    `scheduler::loom_models::blocked_worker_does_not_hide_work`).
//! 2. **Searching.** A worker that ran out of local work becomes searching only if fewer than
//!    half the workers are searching ([`Idle::transition_worker_to_searching`]); otherwise it
//!    goes straight to rule 4 without stealing.
//! 3. **Found work.** A searching worker that found a task stops searching before running it;
//!    if it was the last searcher it notifies another sleeper (rule 1), because where there
//!    was one task there may be more, and now nobody is looking.
//! 4. **Going to sleep.** Under the lock, the worker decrements `num_unparked` (and
//!    `num_searching` if it was searching) and pushes itself onto `sleepers`. If nobody is
//!    searching after that (it was the last searcher, or it was refused searching and the
//!    searchers have all stopped since), it re-checks every queue and, if any holds work,
//!    notifies (rule 1), which may wake itself. It then parks on its `Parker` (see `park.rs`:
//!    an unpark that comes before the park is not lost).
//! 5. **Waking.** A worker returning from `park` checks under the lock whether it is still in
//!    `sleepers`. If not, a notifier took it out and already counted it as unparked and
//!    searching (rule 1): it starts searching. If it is, the wake-up was spurious (or a
//!    shutdown signal): it checks for shutdown and parks again.
//!
//! # Why no wake-up is lost
//!
//! A task published in step 1 and a worker going to sleep in step 4 order their accesses to
//! `state` (`SeqCst`). Either the publisher sees the sleeper's decrement, and then (if nobody
//! is searching) wakes a sleeper; or the sleeper's decrement comes later and, if nobody is
//! searching, its re-check sees the task. If someone *is* searching at either point, that
//! searcher finds the task, or stops: by finding other work (rule 3: as the last searcher it
//! notifies, and its read of `state` comes after its own decrement, so it sees every earlier
//! sleeper) or by sleeping (rule 4: it re-checks). A worker refused searching that sleeps
//! while a searcher exists is covered the same way: whoever stops searching last either sees
//! it asleep and wakes it, or it sees nobody searching and re-checks. The loom models in `scheduler::loom_models` and the black-box
//! models in `loom-tests/` check this with two workers and a foreign thread.

use crate::sync::atomic::{
    fence, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use crate::sync::Mutex;

const UNPARKED_SHIFT: usize = 16;
const SEARCHING_MASK: usize = (1 << UNPARKED_SHIFT) - 1;
const ONE_UNPARKED: usize = 1 << UNPARKED_SHIFT;
const ONE_SEARCHING: usize = 1;

pub(crate) struct Idle {
    state: AtomicUsize,
    sleepers: Mutex<Vec<usize>>,
    num_workers: usize,
}

fn num_searching(state: usize) -> usize {
    state & SEARCHING_MASK
}

fn num_unparked(state: usize) -> usize {
    state >> UNPARKED_SHIFT
}

impl Idle {
    pub(crate) fn new(num_workers: usize) -> Idle {
        assert!(num_workers < SEARCHING_MASK, "too many worker threads");
        Idle {
            state: AtomicUsize::new(num_workers << UNPARKED_SHIFT),
            sleepers: Mutex::new(Vec::with_capacity(num_workers)),
            num_workers,
        }
    }

    /// Rule 1: the worker to unpark after publishing work, if one must be woken. The caller
    /// unparks it (after this returns, so no lock is held while waking).
    pub(crate) fn worker_to_notify(&self) -> Option<usize> {
        if !self.notify_should_wake() {
            return None;
        }
        let mut sleepers = self.sleepers.lock();
        if !self.notify_should_wake() {
            return None;
        }
        self.state.fetch_add(ONE_SEARCHING | ONE_UNPARKED, SeqCst);
        let worker = sleepers.pop();
        debug_assert!(worker.is_some(), "fewer unparked workers than workers, yet no sleeper");
        worker
    }

    /// Rule 1 for work pushed to the calling worker's *own* queue or LIFO slot: the caller is
    /// awake and will run that work itself if nobody steals it, so no wake-up can be lost and
    /// the notification only serves parallelism. A plain load then suffices to skip it in the
    /// common case (everyone busy, or someone searching); only if it looks useful is the fenced
    /// check of rule 1 made.
    pub(crate) fn worker_to_notify_local(&self) -> Option<usize> {
        let state = self.state.load(Relaxed);
        if num_searching(state) != 0 || num_unparked(state) >= self.num_workers {
            return None;
        }
        self.worker_to_notify()
    }

    fn notify_should_wake(&self) -> bool {
        fence(SeqCst);
        let state = self.state.load(SeqCst);
        num_searching(state) == 0 && num_unparked(state) < self.num_workers
    }

    /// Rule 2: true if the worker may search (and is now counted as searching).
    pub(crate) fn transition_worker_to_searching(&self) -> bool {
        let mut state = self.state.load(SeqCst);
        loop {
            if 2 * num_searching(state) >= self.num_workers {
                return false;
            }
            match self.state.compare_exchange_weak(state, state + ONE_SEARCHING, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Rule 3: the worker found work; true if it was the last searcher (caller notifies).
    pub(crate) fn transition_worker_from_searching(&self) -> bool {
        let prev = self.state.fetch_sub(ONE_SEARCHING, SeqCst);
        debug_assert!(num_searching(prev) > 0);
        num_searching(prev) == 1
    }

    /// Rule 4: registers `worker` as asleep; true if nobody is searching any more (the caller
    /// re-checks the queues).
    pub(crate) fn transition_worker_to_parked(&self, worker: usize, is_searching: bool) -> bool {
        let mut sleepers = self.sleepers.lock();
        let dec = ONE_UNPARKED + if is_searching { ONE_SEARCHING } else { 0 };
        let prev = self.state.fetch_sub(dec, SeqCst);
        sleepers.push(worker);
        num_searching(prev - dec) == 0
    }

    /// A sleeper found work of its own (the driver woke tasks into its queue): takes it out of
    /// `sleepers` and counts it unparked (not searching). False if a notifier already did so
    /// (then it was counted as searching).
    pub(crate) fn unpark_worker_by_id(&self, worker: usize) -> bool {
        let mut sleepers = self.sleepers.lock();
        match sleepers.iter().position(|&w| w == worker) {
            Some(i) => {
                sleepers.swap_remove(i);
                self.state.fetch_add(ONE_UNPARKED, SeqCst);
                true
            }
            None => false,
        }
    }

    /// Number of unparked workers (virtual time: zero means every worker is asleep).
    pub(crate) fn num_unparked(&self) -> usize {
        num_unparked(self.state.load(SeqCst))
    }

    /// Rule 5: true if a notifier took `worker` out of `sleepers` (it is now searching).
    pub(crate) fn transition_worker_from_parked(&self, worker: usize) -> bool {
        !self.sleepers.lock().contains(&worker)
    }

    /// Whether some worker is asleep (used by tests and shutdown).
    #[allow(dead_code)]
    pub(crate) fn num_sleepers(&self) -> usize {
        self.sleepers.lock().len()
    }
}

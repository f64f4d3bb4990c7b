//! The task state word: lifecycle flags and the reference count in one `AtomicUsize`.
//!
//! # Bits
//!
//! | bit | name | meaning |
//! |---|---|---|
//! | 0 | `RUNNING` | a thread owns the future (polling, dropping or completing it) |
//! | 1 | `COMPLETE` | the future is gone; the stage holds the output (or nothing) |
//! | 2 | `NOTIFIED` | woken: if not `RUNNING`, exactly one `Notified` for the task is queued |
//! | 3 | `JOIN_INTEREST` | the `JoinHandle` is alive and will read the output |
//! | 4 | `JOIN_WAKER` | the join-waker slot is filled and owned by the runtime side |
//! | 5 | `CANCELLED` | the task's root was cancelled (`JoinHandle::cancel`, runtime shutdown) |
//! | 6.. | refcount | number of [`Task`](super::Task)-like references |
//!
//! # Invariants
//!
//! 1. `NOTIFIED && !RUNNING && !COMPLETE` ⇔ exactly one `Notified` exists (in some run queue);
//!    it owns one reference. `NOTIFIED` set while `RUNNING` means "poll again": the runner
//!    requeues the task itself when the poll ends, reusing its own reference.
//! 2. Only the holder of `RUNNING` touches the stage (future or output) until `COMPLETE` is set.
//!    After `COMPLETE`, the stage belongs to the `JoinHandle` if `JOIN_INTEREST` was set at the
//!    moment `COMPLETE` was set, and to the runtime (which drops the output at once) otherwise.
//! 3. The join-waker slot is written only by the `JoinHandle` while `JOIN_WAKER` is clear, and
//!    read by the runtime only when it completes the task with `JOIN_WAKER` set.
//! 4. While the task is not `COMPLETE`, the owned-task registry holds a reference, so the
//!    refcount is never zero before completion.
//! 5. `CANCELLED` is never cleared.

use crate::sync::atomic::{AtomicUsize, Ordering::*};

const RUNNING: usize = 1 << 0;
const COMPLETE: usize = 1 << 1;
const NOTIFIED: usize = 1 << 2;
const JOIN_INTEREST: usize = 1 << 3;
const JOIN_WAKER: usize = 1 << 4;
const CANCELLED: usize = 1 << 5;
const LIFECYCLE_MASK: usize = RUNNING | COMPLETE;
const REF_SHIFT: u32 = 6;
const REF_ONE: usize = 1 << REF_SHIFT;
const REF_MASK: usize = !(REF_ONE - 1);

/// A fresh task: queued once (`NOTIFIED`), with a join handle, and three references: the
/// owned-task registry, the queued `Notified`, and the `JoinHandle`.
const INITIAL: usize = NOTIFIED | JOIN_INTEREST | (3 * REF_ONE);

/// The atomic state word of one task.
pub(super) struct State {
    word: AtomicUsize,
}

/// A copy of the state word at one moment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Snapshot(usize);

impl Snapshot {
    pub(super) fn is_running(self) -> bool {
        self.0 & RUNNING != 0
    }
    pub(super) fn is_complete(self) -> bool {
        self.0 & COMPLETE != 0
    }
    pub(super) fn is_notified(self) -> bool {
        self.0 & NOTIFIED != 0
    }
    pub(super) fn is_join_interested(self) -> bool {
        self.0 & JOIN_INTEREST != 0
    }
    pub(super) fn is_join_waker_set(self) -> bool {
        self.0 & JOIN_WAKER != 0
    }
    pub(super) fn is_cancelled(self) -> bool {
        self.0 & CANCELLED != 0
    }
    pub(super) fn ref_count(self) -> usize {
        (self.0 & REF_MASK) >> REF_SHIFT
    }
    fn is_idle(self) -> bool {
        self.0 & (LIFECYCLE_MASK | NOTIFIED) == 0
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("running", &self.is_running())
            .field("complete", &self.is_complete())
            .field("notified", &self.is_notified())
            .field("join_interest", &self.is_join_interested())
            .field("join_waker", &self.is_join_waker_set())
            .field("cancelled", &self.is_cancelled())
            .field("refs", &self.ref_count())
            .finish()
    }
}

/// Outcome of taking a queued task out of a run queue to poll it.
#[must_use]
pub(super) enum TransitionToRunning {
    /// The caller now holds `RUNNING`; `cancelled` is the root's cancel bit at that instant.
    Success { cancelled: bool },
    /// The task was completed (by shutdown) while queued: the queue's reference was dropped.
    Failed,
    /// As `Failed`, and that was the last reference: the caller deallocates.
    Dealloc,
}

/// Outcome of ending a poll that returned `Pending`.
#[must_use]
pub(super) enum TransitionToIdle {
    /// Idle; the runner's reference was dropped.
    Ok,
    /// Woken during the poll: still `NOTIFIED`, and the runner's reference now belongs to the
    /// `Notified` the caller must queue.
    OkNotified,
    /// Idle, and the runner's reference was the last one (only possible for a task that is not
    /// registered, i.e. a blocking job whose handle is gone): deallocate.
    OkDealloc,
}

/// Outcome of a wake.
#[must_use]
pub(super) enum TransitionToNotified {
    /// Nothing to queue (running, already queued, or complete).
    DoNothing,
    /// The caller owns a reference for a new `Notified` and must queue it.
    Submit,
    /// Nothing to queue and the waker's reference was the last: deallocate.
    Dealloc,
}

impl State {
    pub(super) fn new() -> State {
        State { word: AtomicUsize::new(INITIAL) }
    }

    pub(super) fn load(&self) -> Snapshot {
        Snapshot(self.word.load(Acquire))
    }

    /// One relaxed load of the cancel bit (the cancel-point check).
    pub(super) fn is_cancelled_relaxed(&self) -> bool {
        self.word.load(Relaxed) & CANCELLED != 0
    }

    fn fetch_update<T>(&self, mut f: impl FnMut(Snapshot) -> (Option<Snapshot>, T)) -> T {
        let mut cur = self.word.load(Acquire);
        loop {
            let (next, out) = f(Snapshot(cur));
            let Some(next) = next else { return out };
            match self.word.compare_exchange_weak(cur, next.0, AcqRel, Acquire) {
                Ok(_) => return out,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Called with the reference of a `Notified` just taken from a run queue.
    pub(super) fn transition_to_running(&self) -> TransitionToRunning {
        self.fetch_update(|s| {
            debug_assert!(s.is_notified() || s.is_complete() || s.is_running(), "{s:?}");
            if s.0 & LIFECYCLE_MASK != 0 {
                // Completed by shutdown (which also sets RUNNING while it owns the future).
                debug_assert!(s.ref_count() >= 1);
                let next = Snapshot(s.0 - REF_ONE);
                let out = if next.ref_count() == 0 {
                    TransitionToRunning::Dealloc
                } else {
                    TransitionToRunning::Failed
                };
                return (Some(next), out);
            }
            let next = Snapshot((s.0 | RUNNING) & !NOTIFIED);
            (Some(next), TransitionToRunning::Success { cancelled: s.is_cancelled() })
        })
    }

    /// Ends a poll that returned `Pending` (invariant 1 decides who queues next).
    pub(super) fn transition_to_idle(&self) -> TransitionToIdle {
        self.fetch_update(|s| {
            debug_assert!(s.is_running() && !s.is_complete(), "{s:?}");
            if s.is_notified() {
                (Some(Snapshot(s.0 & !RUNNING)), TransitionToIdle::OkNotified)
            } else {
                let next = Snapshot((s.0 & !RUNNING) - REF_ONE);
                let out = if next.ref_count() == 0 {
                    TransitionToIdle::OkDealloc
                } else {
                    TransitionToIdle::Ok
                };
                (Some(next), out)
            }
        })
    }

    /// Ends a poll that returned `Pending` after asking to be polled again (`yield_now`
    /// through the frame): as `transition_to_idle` with `NOTIFIED` set, in one step.
    /// The runner's reference becomes the new `Notified`'s (invariant 1).
    pub(super) fn transition_to_notified_from_running(&self) -> TransitionToIdle {
        self.fetch_update(|s| {
            debug_assert!(s.is_running() && !s.is_complete(), "{s:?}");
            (Some(Snapshot((s.0 | NOTIFIED) & !RUNNING)), TransitionToIdle::OkNotified)
        })
    }

    /// Sets `COMPLETE` and clears `RUNNING`; returns the state before.
    pub(super) fn transition_to_complete(&self) -> Snapshot {
        let prev = Snapshot(self.word.fetch_xor(RUNNING | COMPLETE, AcqRel));
        debug_assert!(prev.is_running() && !prev.is_complete(), "{prev:?}");
        prev
    }

    /// Drops `count` references at once; true if they were the last (deallocate).
    pub(super) fn transition_to_terminal(&self, count: usize) -> bool {
        let prev = Snapshot(self.word.fetch_sub(count * REF_ONE, AcqRel));
        debug_assert!(prev.ref_count() >= count, "refcount underflow: {prev:?} - {count}");
        prev.ref_count() == count
    }

    /// A waker consumed by `wake()`. `Submit`: a new reference was made for the queue entry and
    /// the caller drops the waker's own after queueing (so the cell outlives the `schedule`
    /// call); otherwise the waker's reference was dropped here.
    pub(super) fn transition_to_notified_by_val(&self) -> TransitionToNotified {
        self.fetch_update(|s| {
            debug_assert!(s.ref_count() >= 1);
            if s.is_running() {
                // The runner will requeue; the runner's reference keeps the count above zero.
                (Some(Snapshot((s.0 | NOTIFIED) - REF_ONE)), TransitionToNotified::DoNothing)
            } else if s.is_complete() || s.is_notified() {
                let next = Snapshot(s.0 - REF_ONE);
                let out = if next.ref_count() == 0 {
                    TransitionToNotified::Dealloc
                } else {
                    TransitionToNotified::DoNothing
                };
                (Some(next), out)
            } else {
                (Some(Snapshot((s.0 | NOTIFIED) + REF_ONE)), TransitionToNotified::Submit)
            }
        })
    }

    /// `wake_by_ref()`: the caller keeps its reference; a new one is made for the queue.
    pub(super) fn transition_to_notified_by_ref(&self) -> TransitionToNotified {
        self.fetch_update(|s| {
            if s.is_complete() || s.is_notified() {
                (None, TransitionToNotified::DoNothing)
            } else if s.is_running() {
                (Some(Snapshot(s.0 | NOTIFIED)), TransitionToNotified::DoNothing)
            } else {
                (Some(Snapshot((s.0 | NOTIFIED) + REF_ONE)), TransitionToNotified::Submit)
            }
        })
    }

    /// Cancels the task's root and makes sure it is polled again (so the root can drop the
    /// future at its next suspension). `Submit`: the caller queues a new `Notified`.
    pub(super) fn transition_to_cancelled(&self) -> TransitionToNotified {
        self.fetch_update(|s| {
            if s.is_cancelled() || s.is_complete() {
                (None, TransitionToNotified::DoNothing)
            } else if s.is_idle() {
                (Some(Snapshot(s.0 | CANCELLED | NOTIFIED) + REF_ONE), TransitionToNotified::Submit)
            } else {
                // Running (poll again afterwards) or already queued.
                (Some(Snapshot(s.0 | CANCELLED | NOTIFIED)), TransitionToNotified::DoNothing)
            }
        })
    }

    /// Shutdown: cancels the root and, if nobody owns the future, takes ownership of it
    /// (`true`: the caller drops the future and completes the task); if a poll owns it, that
    /// poll is made to requeue the task.
    pub(super) fn transition_to_shutdown(&self) -> bool {
        self.fetch_update(|s| {
            if s.is_complete() {
                (Some(Snapshot(s.0 | CANCELLED)), false)
            } else if s.is_running() {
                // Someone is polling it: `NOTIFIED` makes that poll requeue the task instead
                // of leaving it idle (the registry no longer holds it, nothing else would
                // complete it), and the next poll sees the cancel bit (loom model
                // `task::loom_models::shutdown_racing_poll`).
                (Some(Snapshot(s.0 | CANCELLED | NOTIFIED)), false)
            } else {
                (Some(Snapshot(s.0 | CANCELLED | RUNNING)), true)
            }
        })
    }

    pub(super) fn ref_inc(&self) {
        let prev = self.word.fetch_add(REF_ONE, Relaxed);
        // A reference count that large means references are being leaked in a loop; stop
        // before the count overflows into the flag bits.
        if prev > isize::MAX as usize {
            std::process::abort();
        }
    }

    /// Drops one reference; true if it was the last (deallocate).
    pub(super) fn ref_dec(&self) -> bool {
        self.transition_to_terminal(1)
    }

    /// The join handle is dropped before the task ever ran (the common detach case).
    pub(super) fn drop_join_handle_fast(&self) -> bool {
        self.word
            .compare_exchange(INITIAL, INITIAL - REF_ONE - JOIN_INTEREST, Release, Relaxed)
            .is_ok()
    }

    /// Clears `JOIN_INTEREST` (and, if not complete, `JOIN_WAKER`: the slot returns to the
    /// handle). Returns the state before.
    pub(super) fn transition_to_join_handle_dropped(&self) -> Snapshot {
        self.fetch_update(|s| {
            debug_assert!(s.is_join_interested());
            let mut next = s.0 & !JOIN_INTEREST;
            if !s.is_complete() {
                next &= !JOIN_WAKER;
            }
            (Some(Snapshot(next)), s)
        })
    }

    /// Publishes a freshly written join waker. `Err`: the task completed meanwhile (the slot
    /// stays the handle's; read the output instead).
    pub(super) fn set_join_waker(&self) -> Result<(), Snapshot> {
        self.fetch_update(|s| {
            debug_assert!(s.is_join_interested() && !s.is_join_waker_set());
            if s.is_complete() {
                (None, Err(s))
            } else {
                (Some(Snapshot(s.0 | JOIN_WAKER)), Ok(()))
            }
        })
    }

    /// Takes the join-waker slot back to replace its waker. `Err`: the task completed.
    pub(super) fn unset_join_waker(&self) -> Result<(), Snapshot> {
        self.fetch_update(|s| {
            debug_assert!(s.is_join_interested() && s.is_join_waker_set());
            if s.is_complete() {
                (None, Err(s))
            } else {
                (Some(Snapshot(s.0 & !JOIN_WAKER)), Ok(()))
            }
        })
    }
}

impl std::ops::Add<usize> for Snapshot {
    type Output = Snapshot;
    fn add(self, rhs: usize) -> Snapshot {
        Snapshot(self.0 + rhs)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.load().fmt(f)
    }
}

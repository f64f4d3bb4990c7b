//! Typed operations on a task cell: poll, complete, join, shutdown.
//!
//! Each function here is reached through the vtable of a `Cell<F, S>`, so the harness knows the
//! concrete types. The rule numbers cited are those of the module doc of `task` and the state
//! invariants of `task::state`.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll, Waker};

use super::raw::{Cell, Header, RawTask, Stage};
use super::state::{State, TransitionToIdle, TransitionToRunning};
use super::{current, waker, JoinError, Notified, Output, Released, Schedule, Task};
use crate::budget;
use crate::cancel::node::{GuardMark, Node};
use crate::tuning::MAX_SELF_WAKES_WHILE_CANCELLED;

pub(super) struct Harness<F: Future, S> {
    cell: NonNull<Cell<F, S>>,
}

impl<F: Future, S: Schedule> Harness<F, S> {
    /// # Safety
    /// `ptr` must be the header of a live `Cell<F, S>`.
    pub(super) unsafe fn from_raw(ptr: NonNull<Header>) -> Harness<F, S> {
        Harness { cell: ptr.cast() }
    }

    fn cell(&self) -> &Cell<F, S> {
        // SAFETY: `from_raw`'s contract; the caller of each vtable entry holds a reference.
        unsafe { self.cell.as_ref() }
    }

    fn header(&self) -> &Header {
        &self.cell().header
    }

    fn state(&self) -> &State {
        &self.header().state
    }

    fn raw(&self) -> RawTask {
        // SAFETY: the cell is live (see `cell`).
        unsafe { RawTask::from_raw(self.cell.cast()) }
    }

    // ---- polling -------------------------------------------------------------------------

    /// Runs the task for one poll; consumes the reference of the `Notified` that was queued.
    ///
    /// Returns `true` if the task asked to run again (it woke itself during the poll, e.g.
    /// `yield_now`): the reference then belongs to a new `Notified` that the *caller* queues
    /// (behind other work). The runner has a scheduler of its own at hand, so requeueing never
    /// borrows the scheduler stored in the cell, which another thread could free as soon as the
    /// task is queued.
    pub(super) fn poll(self) -> bool {
        match self.state().transition_to_running() {
            TransitionToRunning::Success { cancelled } => self.poll_running(cancelled),
            TransitionToRunning::Failed => false,
            TransitionToRunning::Dealloc => {
                self.raw().dealloc();
                false
            }
        }
    }

    fn poll_running(self, cancel_bit_at_start: bool) -> bool {
        // Rule 4 / DESIGN.md 3.10: with a root status node, the dropper needs the cancellation
        // settled (its leaves woken) before this poll began; without one, the bit suffices.
        let header = self.header();
        let mut root = header.root_node();
        if root.is_none() && header.lazy_root_parent_cancelled() == Some(true) {
            // A nursery child's lazy root under a nursery that is cancelled already: created
            // now, so this poll runs under it exactly as if it had been linked at spawn.
            root = Some(header.materialize_root(Some(&*waker::waker_ref(header))));
        }
        let had_root = root.is_some();
        let (cancelled_at_start, guards) = match root {
            Some(root) => {
                let word = root.settled_word();
                (Node::word_is_settled_cancel(word), root.guard_mark_if_settled(word))
            }
            None => (cancel_bit_at_start, GuardMark::Unchecked),
        };
        let (polled, repoll) = {
            let waker = waker::waker_ref(self.header());
            let mut cx = Context::from_waker(&waker);
            let frame = current::CurrentTaskGuard::enter(self.header(), &waker);
            let _budget = budget::BudgetGuard::for_poll();
            let polled = catch_unwind(AssertUnwindSafe(|| self.poll_future(&mut cx)));
            (polled, frame.take_repoll())
        };
        let id = self.header().id;
        match polled {
            Ok(Poll::Ready(output)) => {
                // The future is finished; drop it (in place: it is pinned) before publishing
                // its output. If that drop panics, the output is dropped too, also caught.
                let output = match self.drop_stage() {
                    Ok(()) if self.close_root(false) => {
                        // DESIGN.md 3.9: the root caught a cancellation that the output still
                        // carries (a live `Cancelled`): the task joins as cancelled.
                        drop_caught(output);
                        Err(JoinError::cancelled(id))
                    }
                    Ok(()) => Ok(output),
                    Err(payload) => {
                        drop_caught(output);
                        Err(JoinError::panic(id, payload))
                    }
                };
                self.complete(output);
                false
            }
            Ok(Poll::Pending) => {
                if cancelled_at_start && self.root_may_drop(repoll) && self.no_guard_below(guards) {
                    // Rule 4: cancelled, and the future had a full poll to notice.
                    let output = match self.drop_stage() {
                        Ok(()) => Err(JoinError::cancelled(id)),
                        Err(payload) => Err(JoinError::panic(id, payload)),
                    };
                    self.complete(output);
                    return false;
                }
                let idle = if repoll || (!had_root && self.link_lazy_root()) {
                    self.state().transition_to_notified_from_running()
                } else {
                    self.state().transition_to_idle()
                };
                match idle {
                    TransitionToIdle::Ok => false,
                    TransitionToIdle::OkDealloc => {
                        self.raw().dealloc();
                        false
                    }
                    // Woken during its own poll: the runner's reference is now the new queue
                    // entry's (state invariant 1), which the caller queues.
                    TransitionToIdle::OkNotified => true,
                }
            }
            Err(payload) => {
                // The future panicked; its drop may panic too: report the first panic.
                if let Err(second) = self.drop_stage() {
                    drop_caught(second);
                }
                self.close_root(false);
                self.complete(Err(JoinError::panic(id, payload)));
                false
            }
        }
    }

    fn poll_future(&self, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.cell().stage.with_mut(|stage| {
            // SAFETY: rule 2: this thread holds RUNNING, so it has exclusive access to the stage.
            let stage = unsafe { &mut *stage };
            match stage {
                // SAFETY: the future lives in a heap cell that never moves until it is
                // deallocated, and it is dropped in place (`drop_stage`), so it is pinned.
                Stage::Running(future) => unsafe { Pin::new_unchecked(future) }.poll(cx),
                _ => unreachable!("a task was polled after its future finished"),
            }
        })
    }

    /// After a `Pending` poll that began without a root status node: a nursery child's lazy
    /// root is created now, linked under its nursery, so that a cancel of the nursery reaches
    /// the waiting task from here on. Whether a root created during this poll is cancelled
    /// already (it inherited the cancellation when it was linked, which wakes nobody): then
    /// the task must be polled again, as one whose poll begins cancelled.
    fn link_lazy_root(&self) -> bool {
        let header = self.header();
        let root = match header.root_node() {
            Some(root) => root,
            None if header.lazy_root_parent_cancelled().is_some() => {
                header.materialize_root(Some(&*waker::waker_ref(header)))
            }
            None => return false,
        };
        root.is_effective()
    }

    /// Whether the root drops a cancelled future that just returned `Pending` (rule 4).
    /// `repoll`: the future asked to be polled again (it yielded to its own task).
    fn root_may_drop(&self, repoll: bool) -> bool {
        if budget::pending_was_forced() {
            return false;
        }
        self.header().self_wakes_while_cancelled.with_mut(|streak| {
            // SAFETY: rule 2: only the RUNNING holder touches this counter.
            let streak = unsafe { &mut *streak };
            let woken = repoll || self.state().load().is_notified();
            if woken && *streak < MAX_SELF_WAKES_WHILE_CANCELLED {
                *streak += 1;
                false
            } else {
                true
            }
        })
    }

    /// DESIGN.md 3.10: no guard (a shielded scope, a nursery, a pending `start`) is live in
    /// the task, so the root may drop its future. Only asked on the slow path.
    fn no_guard_below(&self, guards: GuardMark) -> bool {
        self.header().root_node().is_none_or(|root| root.dropper_may_drop(guards))
    }

    /// Closes the task's root status node, if it has one; whether it caught (DESIGN.md 3.9).
    /// `dropped`: the root dropped the future. Idempotent.
    fn close_root(&self, dropped: bool) -> bool {
        self.header().root_node().is_some_and(|root| Node::close(root, dropped))
    }

    /// Drops the future (or output) *in place* (the future is pinned: it must not move before
    /// its drop), catching a panic from its `Drop`. The stage is `Consumed` afterwards, also
    /// when the drop panics (the guard writes it on unwind), so nothing is dropped twice.
    fn drop_stage(&self) -> Result<(), Box<dyn Any + Send>> {
        self.cell().stage.with_mut(|stage| {
            /// Marks the stage consumed once its old value is dropped, normally or by unwind.
            struct MarkConsumed<F: Future>(*mut Stage<F>);
            impl<F: Future> Drop for MarkConsumed<F> {
                fn drop(&mut self) {
                    // SAFETY: the old value was just dropped in place, so the slot holds no
                    // live value; writing without dropping is what is needed.
                    unsafe { std::ptr::write(self.0, Stage::Consumed) }
                }
            }
            catch_unwind(AssertUnwindSafe(|| {
                let _mark = MarkConsumed(stage);
                // SAFETY: rule 2: the caller owns the stage (RUNNING, or the output after
                // COMPLETE), and the guard above re-initialises it right after.
                unsafe { std::ptr::drop_in_place(stage) }
            }))
        })
    }

    /// Moves the output out of the stage (outputs are not pinned).
    fn take_stage(&self) -> Stage<F> {
        self.cell().stage.with_mut(|stage| {
            // SAFETY: rule 2: the caller owns the stage (RUNNING, or the output after COMPLETE).
            unsafe { std::ptr::replace(stage, Stage::Consumed) }
        })
    }

    fn store_output(&self, output: Output<F::Output>) {
        self.cell().stage.with_mut(|stage| {
            // SAFETY: rule 2: RUNNING is held; the stage is `Consumed`, so nothing is dropped.
            unsafe { std::ptr::write(stage, Stage::Finished(output)) }
        });
    }

    /// Publishes the output, notifies the joiner and releases the task from its registry.
    /// Consumes the runner's reference.
    fn complete(self, output: Output<F::Output>) {
        // Every way to finish passes here: the root node (if any) closes, releasing the task
        // waker it holds as its owner (already closed on the paths that needed its verdict).
        self.close_root(true);
        self.store_output(output);
        let prev = self.state().transition_to_complete();
        if !prev.is_join_interested() {
            // Nobody will read the output (state invariant 2): drop it now.
            if let Err(payload) = self.drop_stage() {
                drop_caught(payload);
            }
        } else if prev.is_join_waker_set() {
            let _abort = AbortOnUnwind;
            self.cell().join_waker.with(|slot| {
                // SAFETY: state invariant 3: JOIN_WAKER was set at completion, so the slot is
                // filled and the handle no longer writes it.
                let slot = unsafe { &*slot };
                if let Some(waker) = slot {
                    waker.wake_by_ref();
                }
            });
        }
        // SAFETY: the runner's reference, which this function consumes, is handed over.
        let runner = unsafe { Task::from_raw(self.cell.cast()) };
        match self.cell().scheduler.release(runner) {
            Released::Deferred => {}
            // Dropped here, once nothing borrows the cell (the drop may free it).
            Released::Now { runner, registry } => runner.drop_with(registry),
        }
    }

    // ---- scheduling and shutdown ----------------------------------------------------------

    /// Queues the task; consumes one reference, which becomes the queue entry's. The caller
    /// must hold another reference until this returns (the cell's scheduler is borrowed).
    pub(super) fn schedule(self) {
        // SAFETY: callers come from a transition that returned `Submit`, which left the task
        // NOTIFIED and idle and made a new reference for the queue entry (state invariant 1).
        let task = unsafe { Notified::from_raw(self.cell.cast()) };
        if let Some(refused) = self.cell().scheduler.schedule(task) {
            // The scheduler shut down: nothing will run the task, so complete it now.
            refused.shutdown();
        }
    }

    /// Shutdown: drops the future unless a thread is polling it. Consumes one reference.
    pub(super) fn shutdown(self) {
        if !self.state().transition_to_shutdown() {
            self.raw().drop_reference();
            return;
        }
        let id = self.header().id;
        let output = match self.drop_stage() {
            Ok(()) => Err(JoinError::cancelled(id)),
            Err(payload) => Err(JoinError::panic(id, payload)),
        };
        self.close_root(true);
        self.complete(output);
    }

    // ---- joining ------------------------------------------------------------------------

    pub(super) fn try_read_output(self, dst: &mut Poll<Output<F::Output>>, waker: &Waker) {
        if !self.can_read_output(waker) {
            return;
        }
        match self.take_stage() {
            Stage::Finished(output) => *dst = Poll::Ready(output),
            _ => panic!("a JoinHandle was polled again after it returned its output"),
        }
    }

    /// The join-waker protocol (state invariant 3). True when the output is ready to take.
    fn can_read_output(&self, waker: &Waker) -> bool {
        let snapshot = self.state().load();
        if snapshot.is_complete() {
            return true;
        }
        if snapshot.is_join_waker_set() {
            let same = self.cell().join_waker.with(|slot| {
                // SAFETY: invariant 3: the runtime only reads the slot, so shared reads are fine.
                let slot = unsafe { &*slot };
                slot.as_ref().is_some_and(|w| w.will_wake(waker))
            });
            if same {
                return false;
            }
            if self.state().unset_join_waker().is_err() {
                return true;
            }
        }
        self.set_join_waker(waker.clone());
        match self.state().set_join_waker() {
            Ok(()) => false,
            Err(_) => {
                self.set_join_waker_none();
                true
            }
        }
    }

    fn set_join_waker(&self, waker: Waker) {
        self.cell().join_waker.with_mut(|slot| {
            // SAFETY: invariant 3: JOIN_WAKER is clear and the handle is the only writer.
            unsafe { *slot = Some(waker) };
        });
    }

    fn set_join_waker_none(&self) {
        let old = self.cell().join_waker.with_mut(|slot| {
            // SAFETY: invariant 3: JOIN_WAKER is clear (or the task completed without it being
            // set), so the runtime never reads the slot; the handle owns it.
            unsafe { (*slot).take() }
        });
        drop(old);
    }

    /// The `JoinHandle` was dropped; consumes its reference.
    pub(super) fn drop_join_handle_slow(self) {
        let prev = self.state().transition_to_join_handle_dropped();
        if prev.is_complete() {
            // The output is the handle's (invariant 2): drop it, ignoring a panic in its Drop.
            if let Err(payload) = self.drop_stage() {
                drop_caught(payload);
            }
        } else {
            // JOIN_WAKER was cleared with JOIN_INTEREST: the slot is the handle's again.
            self.set_join_waker_none();
        }
        self.raw().drop_reference();
    }
}

/// Drops `value`, catching a panic from its `Drop`; the payload of such a panic is dropped the
/// same way, and a payload whose `Drop` panics yet again is leaked (nothing sane is left to do).
fn drop_caught<T>(value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
    }
}

/// Aborts the process if dropped during unwinding: a panic inside a state transition (from a
/// user waker) would otherwise leave the task half-completed (STYLE.md habit 8).
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("trellis: a waker panicked while a task was completing; aborting");
            std::process::abort();
        }
    }
}

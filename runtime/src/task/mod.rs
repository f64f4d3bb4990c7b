//! Tasks: one heap cell per spawned future, driven through a type-erased vtable.
//!
//! # The cell
//!
//! A task is a single allocation ([`raw::Cell`]) holding a [`raw::Header`] (the atomic state
//! word of [`state`], the vtable, the task id), the handle of the scheduler that runs it, the
//! *stage* (the future until it finishes, then its output) and the join-waker slot. Everything
//! that refers to a task (a queued [`Notified`], the registry's [`Task`], a [`JoinHandle`],
//! every `Waker`) is a pointer to that header owning one reference.
//!
//! # Rules
//!
//! 1. **References.** A fresh task has three: the owned-task registry (released when the task
//!    completes), the `Notified` that queues it, and the `JoinHandle`. Wakers and queue entries
//!    add and drop theirs; the last one frees the cell (state invariant 4 keeps the registry's
//!    reference alive until completion, so a task is never freed with its future inside).
//! 2. **Who touches the stage.** Only the holder of `RUNNING` (a worker polling, or shutdown
//!    dropping the future), then whoever owns the output after `COMPLETE` (state invariant 2).
//! 3. **Panics are caught.** A panic while polling, or while dropping the future or output, is
//!    caught and becomes `JoinError::is_panic` (or is discarded if nobody can read it): a
//!    panicking task never unwinds into a worker.
//! 4. **Root cancellation.** The `CANCELLED` bit is the task's root cancel status (the place
//!    where the structured-concurrency layer hangs its status node). It is set by
//!    `JoinHandle::cancel` and by runtime shutdown. The root is a *dropper* (DESIGN.md 3.10):
//!    a poll that began with the bit set and ended `Pending` (not forced by the cooperative
//!    budget, not re-woken by the future itself more than a few times in a row) drops the
//!    future, and the task joins as `JoinError::is_cancelled`. So the future always gets one
//!    full poll in which its cancel points report `Cancelled`.
//!
//! # Safety
//!
//! The `unsafe` of the runtime's task model lives in this module's `raw`, `harness`, `waker`,
//! `join` and `current` files. Every block cites the rule above or the state invariant it
//! relies on.

mod current;
mod error;
mod harness;
mod id;
mod join;
mod owned;
mod raw;
mod state;
mod waker;

#[cfg(all(test, loom))]
mod loom_models;

pub(crate) use current::{
    current_id, current_node, current_node_addr, current_root, frame_waker_is, is_cancelled,
    wake_for_repoll, woken_during_poll, CurrentTaskGuard, LazyGuard, LazyScope, NodeGuard,
};
pub use error::JoinError;
pub use id::TaskId;
pub use join::JoinHandle;
pub(crate) use owned::OwnedTasks;
pub(crate) use raw::{Header, RawTask};

use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;

/// What a task's join yields.
pub(crate) type Output<T> = Result<T, JoinError>;

/// Where a task goes when it is woken, and who keeps it alive until it completes.
pub(crate) trait Schedule: Sized + Send + Sync + 'static {
    /// Queues a woken task (from a waker, a spawn or a cancel).
    ///
    /// Returns the task if the scheduler has shut down and refuses it; the caller then shuts
    /// it down. `self` is borrowed from the task's cell: the caller holds a reference to the
    /// task for the whole call, so the cell outlives it.
    #[must_use = "a refused task must be shut down by the caller"]
    fn schedule(&self, task: Notified<Self>) -> Option<Notified<Self>>;

    /// The task completed. `runner` is the reference of the thread that completed it. The
    /// scheduler either hands it back with the registry's reference (if the registry still had
    /// one) for the caller to drop once it no longer borrows the cell, or keeps it to release
    /// the task later, in a batch (`Released::Deferred`).
    fn release(&self, runner: Task<Self>) -> Released<Self>;
}

/// What [`Schedule::release`] leaves to its caller.
pub(crate) enum Released<S: 'static> {
    /// Drop these now: the runner's reference and the registry's (if it still held one).
    Now { runner: Task<S>, registry: Option<Task<S>> },
    /// The scheduler kept the runner's reference; it drops both later.
    Deferred,
}

impl<S: 'static> Released<S> {
    /// The common "not registered, or removed right away" outcome.
    pub(crate) fn now(runner: Task<S>, registry: Option<Task<S>>) -> Released<S> {
        Released::Now { runner, registry }
    }
}

/// A reference to a task held by the owned-task registry.
pub(crate) struct Task<S: 'static> {
    raw: RawTask,
    _scheduler: PhantomData<S>,
}

/// A reference to a task that is queued to run (state invariant 1).
pub(crate) struct Notified<S: 'static>(Task<S>);

/// Allocates a task. The caller registers `Task`, queues `Notified` and returns the handle.
pub(crate) fn new_task<F, S>(
    future: F,
    scheduler: S,
    id: TaskId,
) -> (Task<S>, Notified<S>, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: Schedule,
{
    let raw = RawTask::new(future, scheduler, id);
    let task = Task { raw, _scheduler: PhantomData };
    let notified = Notified(Task { raw, _scheduler: PhantomData });
    (task, notified, JoinHandle::new(raw))
}

/// Allocates a task whose root status node hangs under `parent` (a nursery child, DESIGN.md
/// 4.1), linked before the task is shared. Returns the root too.
pub(crate) fn new_task_under<F, S>(
    future: F,
    scheduler: S,
    id: TaskId,
    parent: &crate::sync::Arc<crate::cancel::node::Node>,
) -> (Task<S>, Notified<S>, JoinHandle<F::Output>, crate::sync::Arc<crate::cancel::node::Node>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: Schedule,
{
    use crate::cancel::node::Node;
    let (task, notified, join) = new_task(future, scheduler, id);
    // The owner is the task's waker (one reference, released when the root closes at
    // completion); linking under a cancelled parent does not wake it: it is not queued yet.
    let root = Node::enter_task_root(Some(parent), Some(&waker::waker_ref(task.header())));
    task.header().install_root(root.clone());
    (task, notified, join, root)
}

/// Allocates a nursery child whose root status node is lazy (DESIGN.md 4.1): it is linked
/// under `parent` only when the task first needs it (see `Header::root`), so a child that
/// finishes in its first poll costs its nursery no node.
pub(crate) fn new_task_lazy_under<F, S>(
    future: F,
    scheduler: S,
    id: TaskId,
    parent: &crate::sync::Arc<crate::cancel::node::Node>,
) -> (Task<S>, Notified<S>, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: Schedule,
{
    let (task, notified, join) = new_task(future, scheduler, id);
    task.header().set_lazy_root_parent(parent.clone());
    (task, notified, join)
}

impl<S: 'static> Task<S> {
    /// # Safety
    /// The caller hands over one reference to the task at `ptr`.
    pub(super) unsafe fn from_raw(ptr: std::ptr::NonNull<Header>) -> Task<S> {
        // SAFETY: forwarded from the caller's contract.
        Task { raw: unsafe { RawTask::from_raw(ptr) }, _scheduler: PhantomData }
    }

    pub(crate) fn raw(&self) -> RawTask {
        self.raw
    }

    pub(crate) fn header(&self) -> &Header {
        self.raw.header()
    }

    pub(crate) fn id(&self) -> TaskId {
        self.header().id()
    }

    fn into_raw(self) -> RawTask {
        ManuallyDrop::new(self).raw
    }

    /// Runtime shutdown: drops the future now unless a thread is polling it, completing the
    /// task as cancelled. Consumes this reference.
    pub(crate) fn shutdown(self) {
        self.into_raw().shutdown();
    }

    /// Cancels the task's root and makes sure it is polled again (rule 4).
    pub(crate) fn cancel(&self) {
        cancel_raw(self.raw, crate::CancelSource::Shutdown);
    }

    /// Drops this reference together with `other` (of the same task) in one atomic step.
    pub(crate) fn drop_with(self, other: Option<Task<S>>) {
        let raw = self.into_raw();
        let refs = match other {
            Some(other) => {
                debug_assert!(other.raw == raw);
                let _ = other.into_raw();
                2
            }
            None => 1,
        };
        if raw.state().transition_to_terminal(refs) {
            raw.dealloc();
        }
    }

    /// A second reference to the same task.
    pub(crate) fn clone_ref(&self) -> Task<S> {
        self.raw.state().ref_inc();
        Task { raw: self.raw, _scheduler: PhantomData }
    }
}

impl<S: 'static> Drop for Task<S> {
    fn drop(&mut self) {
        self.raw.drop_reference();
    }
}

impl<S: 'static> Notified<S> {
    /// # Safety
    /// The caller hands over one reference, and the task is `NOTIFIED` and not `RUNNING` with
    /// no other `Notified` in existence (state invariant 1).
    unsafe fn from_raw(ptr: std::ptr::NonNull<Header>) -> Notified<S> {
        // SAFETY: forwarded from the caller's contract.
        Notified(unsafe { Task::from_raw(ptr) })
    }

    /// Polls the task (or discards it if shutdown completed it while queued). Returns the task
    /// back if it asked to run again (it yielded): the caller queues it behind other work.
    #[must_use = "a task that yielded must be queued again"]
    pub(crate) fn run(self) -> Option<Notified<S>> {
        let raw = self.0.into_raw();
        if raw.poll() {
            // SAFETY: `poll` returned true: the task is NOTIFIED and idle, and the runner's
            // reference was handed over for a new queue entry (state invariant 1).
            Some(unsafe { Notified::from_raw(raw.as_ptr()) })
        } else {
            None
        }
    }

    /// Shutdown of a queue that will never run this entry: drops the future now (unless a
    /// thread is polling it) and completes the task as cancelled. Consumes the reference.
    pub(crate) fn shutdown(self) {
        self.0.shutdown();
    }
}

/// Sets the cancel bit and queues the task if it was idle (shared by `JoinHandle::cancel`).
/// Cancels a task's root (DESIGN.md 5): sets the root cancel bit and wakes the task; if the
/// task has a root status node, cancels it too (which recomputes the task's scopes and wakes
/// its leaves). The fence pairs with the one in `Header::materialize_root`.
fn cancel_raw(raw: RawTask, source: crate::CancelSource) {
    if let state::TransitionToNotified::Submit = raw.state().transition_to_cancelled() {
        raw.schedule();
    }
    crate::sync::atomic::fence(crate::sync::atomic::Ordering::SeqCst);
    if let Some(root) = raw.header().root_node() {
        crate::cancel::node::Node::cancel(
            root,
            crate::cancel::node::Cause { source, reason: None },
        );
    }
}

impl<S> std::fmt::Debug for Task<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("id", &self.id()).finish()
    }
}

impl<S> std::fmt::Debug for Notified<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notified").field("id", &self.0.id()).finish()
    }
}

//! `JoinHandle<T>`: await a spawned task's output, cancel it, or detach it by dropping.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::raw::RawTask;
use super::{JoinError, TaskId};
use crate::budget;
use crate::cancel::{Cancelled, LeafWaiter};

/// An owned permission to join a task: a future of `Result<T, JoinError>`.
///
/// Dropping the handle detaches the task: it runs on, and its output is dropped when it
/// finishes. Awaiting it is a cancel point: if the *joiner* is cancelled while waiting, the
/// await returns a [`JoinError`] with [`is_interrupted`](JoinError::is_interrupted) and the task
/// runs on; `(&mut handle).await` can join it later (an interrupted join took nothing). This
/// holds under a foreign multiplexer too (`FuturesUnordered` and the like): a waiting join then
/// registers its waker with its cancel scope, so cancelling the scope wakes it (DESIGN.md 3.5).
///
/// ```
/// let out = trellis_runtime::run(async {
///     let handle = trellis_runtime::spawn(async { 6 * 7 });
///     handle.await.unwrap()
/// });
/// assert_eq!(out, 42);
/// ```
pub struct JoinHandle<T> {
    raw: RawTask,
    /// The joiner's registration with its status node while it waits under a foreign
    /// multiplexer (DESIGN.md 3.5); released by every `Ready` and by the drop.
    leaf: LeafWaiter,
    _output: PhantomData<T>,
}

// SAFETY: the handle only moves the output `T` out of the cell (to whichever thread holds the
// handle), so it is `Send` when `T` is; the future itself is `Send` by construction.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only allows `cancel`, `is_finished` and `id`, which touch atomics
// (the `leaf` is only reached through `&mut`).
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    pub(super) fn new(raw: RawTask) -> JoinHandle<T> {
        JoinHandle { raw, leaf: LeafWaiter::default(), _output: PhantomData }
    }

    /// Cancels the task: marks its root cancelled and wakes it. The task's cancel points start
    /// failing with `Cancelled`; if it is suspended (returns `Pending`) in the poll after that,
    /// its future is dropped and the join yields [`JoinError::is_cancelled`]. If it finishes
    /// first, the join yields its output. Idempotent; does nothing once the task is finished.
    pub fn cancel(&self) {
        super::cancel_raw(self.raw, crate::CancelSource::Explicit);
    }

    /// Whether the task has finished (its output is ready, or it was cancelled or panicked).
    pub fn is_finished(&self) -> bool {
        self.raw.state().load().is_complete()
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.raw.header().id()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// A cancel point with no effect when it fails: an interrupted join takes no output (it
    /// stays in the task for a later join) and leaves the task running. The only trace it may
    /// leave is its waker in the task's join slot (a spurious wake-up at completion, replaced
    /// by the next join's).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(cancelled) = Cancelled::for_current_task() {
            this.leaf.clear();
            return Poll::Ready(Err(JoinError::interrupted(this.id(), cancelled)));
        }
        let progress = std::task::ready!(budget::poll_proceed(cx));
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: `out` has the type `try_read_output` writes for a task of output `T` (the
        // handle was created for this cell with this `T`), and `this` is the join handle.
        unsafe {
            this.raw
                .try_read_output((&mut out as *mut Poll<Result<T, JoinError>>).cast(), cx.waker())
        };
        if out.is_ready() {
            progress.made_progress();
            this.leaf.clear();
            return out;
        }
        // About to wait: register with the status node if a cancel would not reach this
        // waker, then re-check (register-then-re-check, the order of the loom model "waiter
        // registration racing cancel" in `cancel/loom_models.rs`). The join waker stored just
        // now is all this poll did; the output, if it arrived meanwhile, stays for a later join.
        match this.leaf.before_pending(cx.waker()) {
            Ok(()) => Poll::Pending,
            Err(cancelled) => Poll::Ready(Err(JoinError::interrupted(this.id(), cancelled))),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if self.raw.state().drop_join_handle_fast() {
            return;
        }
        self.raw.drop_join_handle_slow();
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("id", &self.id()).finish()
    }
}

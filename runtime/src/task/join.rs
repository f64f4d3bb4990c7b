//! `JoinHandle<T>`: await a spawned task's output, cancel it, or detach it by dropping.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::raw::RawTask;
use super::{JoinError, TaskId};
use crate::budget;

/// An owned permission to join a task: a future of `Result<T, JoinError>`.
///
/// Dropping the handle detaches the task: it runs on, and its output is dropped when it
/// finishes. Awaiting it is a cancel point: if the *joiner* is cancelled while waiting, the
/// await returns a [`JoinError`] with [`is_interrupted`](JoinError::is_interrupted) and the task
/// runs on; `(&mut handle).await` can join it later.
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
    _output: PhantomData<T>,
}

// SAFETY: the handle only moves the output `T` out of the cell (to whichever thread holds the
// handle), so it is `Send` when `T` is; the future itself is `Send` by construction.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only allows `cancel`, `is_finished` and `id`, which touch atomics.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    pub(super) fn new(raw: RawTask) -> JoinHandle<T> {
        JoinHandle { raw, _output: PhantomData }
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(cancelled) = crate::Cancelled::for_current_task() {
            return Poll::Ready(Err(JoinError::interrupted(self.id(), cancelled)));
        }
        let progress = std::task::ready!(budget::poll_proceed(cx));
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: `out` has the type `try_read_output` writes for a task of output `T` (the
        // handle was created for this cell with this `T`), and `self` is the join handle.
        unsafe {
            self.raw
                .try_read_output((&mut out as *mut Poll<Result<T, JoinError>>).cast(), cx.waker())
        };
        if out.is_ready() {
            progress.made_progress();
        }
        out
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

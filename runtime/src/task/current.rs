//! The current-task frame: which task the calling thread is polling right now.
//!
//! The harness sets it around every poll; cancel points read the task's root cancel bit
//! through it with one relaxed load (DESIGN.md 3.3). Outside a task poll (in `block_on`, on a
//! foreign thread) there is no frame and nothing is cancelled.
//!
//! The frame also carries the *re-poll request* of `yield_now`: a task that yields through its
//! own waker does not need to wake itself (an atomic read-modify-write on its state word); it
//! records the request here, and the harness requeues it when the poll returns `Pending`.

use std::cell::Cell;
use std::ptr::NonNull;
use std::task::Waker;

use super::raw::Header;
use super::waker::is_task_waker_for;
use crate::sync::thread_local_const;

struct Frame {
    task: Cell<Option<NonNull<Header>>>,
    repoll: Cell<bool>,
}

thread_local_const! {
    static FRAME: Frame = Frame { task: Cell::new(None), repoll: Cell::new(false) };
}

/// Marks the calling thread as polling a task (or, with `None`, as polling no task) until
/// dropped, also on unwind.
pub(crate) struct CurrentTaskGuard {
    prev: Option<NonNull<Header>>,
    prev_repoll: bool,
}

impl CurrentTaskGuard {
    /// The caller holds `RUNNING` and a reference to the task for the guard's whole life.
    pub(crate) fn enter(header: &Header) -> CurrentTaskGuard {
        Self::set(Some(NonNull::from(header)))
    }

    /// No task is being polled until the guard drops (`block_on` inside a blocking job).
    pub(crate) fn enter_none() -> CurrentTaskGuard {
        Self::set(None)
    }

    fn set(task: Option<NonNull<Header>>) -> CurrentTaskGuard {
        FRAME.with(|f| CurrentTaskGuard {
            prev: f.task.replace(task),
            prev_repoll: f.repoll.replace(false),
        })
    }

    /// Whether the poll asked to be polled again (see the module doc); clears the request.
    pub(crate) fn take_repoll(&self) -> bool {
        FRAME.with(|f| f.repoll.replace(false))
    }
}

impl Drop for CurrentTaskGuard {
    fn drop(&mut self) {
        FRAME.with(|f| {
            f.task.set(self.prev);
            f.repoll.set(self.prev_repoll);
        });
    }
}

fn with_current<R>(f: impl FnOnce(&Header) -> R) -> Option<R> {
    FRAME.with(|frame| {
        frame.task.get().map(|ptr| {
            // SAFETY: the pointer is only present between `CurrentTaskGuard::enter` and the
            // guard's drop, during which the poller holds a reference to the task (task rule 1),
            // so the header is live.
            f(unsafe { ptr.as_ref() })
        })
    })
}

/// Whether the task being polled on this thread has its root cancelled.
pub(crate) fn current_task_is_cancelled() -> bool {
    with_current(|h| h.state.is_cancelled_relaxed()).unwrap_or(false)
}

/// Asks for the current task to be polled again after this poll, if `waker` is that task's own
/// waker; otherwise (a foreign executor, a sub-executor like `FuturesUnordered`) wakes
/// `waker` as usual.
pub(crate) fn wake_for_repoll(waker: &Waker) {
    let handled = FRAME.with(|f| match f.task.get() {
        Some(task) if is_task_waker_for(waker, task) => {
            f.repoll.set(true);
            true
        }
        _ => false,
    });
    if !handled {
        waker.wake_by_ref();
    }
}

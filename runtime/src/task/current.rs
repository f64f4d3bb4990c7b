//! The current-task frame: which task the calling thread is polling right now.
//!
//! The harness sets it around every poll; cancel points read the task's root cancel bit
//! through it with one relaxed load (DESIGN.md 3.3). Outside a task poll (in `block_on`, on a
//! foreign thread) there is no frame and nothing is cancelled.

use std::cell::Cell;
use std::ptr::NonNull;

use super::raw::Header;
use crate::sync::thread_local_const;

thread_local_const! {
    static CURRENT: Cell<Option<NonNull<Header>>> = Cell::new(None);
}

/// Marks the calling thread as polling a task until dropped (also on unwind).
pub(crate) struct CurrentTaskGuard {
    prev: Option<NonNull<Header>>,
}

impl CurrentTaskGuard {
    /// The caller holds `RUNNING` and a reference to the task for the guard's whole life.
    pub(crate) fn enter(header: &Header) -> CurrentTaskGuard {
        let prev = CURRENT.with(|c| c.replace(Some(NonNull::from(header))));
        CurrentTaskGuard { prev }
    }
}

impl Drop for CurrentTaskGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

fn with_current<R>(f: impl FnOnce(&Header) -> R) -> Option<R> {
    CURRENT.with(|c| {
        c.get().map(|ptr| {
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

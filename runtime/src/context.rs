//! The thread-local runtime context: which runtime the calling thread belongs to, whether it
//! is one of that runtime's workers, and whether it is inside `block_on`.
//!
//! - Worker threads set the handle and their `WorkerCore` for their whole life, so wakes and
//!   spawns on a worker go to its local queue.
//! - `block_on` sets the handle for its duration (so `spawn` and `Handle::current` work).
//! - Blocking-pool threads set the handle for their whole life.
//!
//! Worker threads and `block_on` also mark the thread as *inside a runtime*: starting another
//! `block_on` there would block a thread the runtime needs (a deadlock, or a stalled worker),
//! so it panics with [`NESTED_BLOCK_ON`] instead.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::scheduler::{Handle, WorkerCore};
use crate::sync::thread_local_const;

pub(crate) const NO_RUNTIME: &str = "there is no trellis runtime on this thread: call this from \
    inside `trellis::run`, `Runtime::block_on` or a task, or spawn through a `Runtime` or \
    `Handle` explicitly (`runtime.spawn(..)`, `handle.spawn(..)`)";

pub(crate) const NESTED_BLOCK_ON: &str = "`block_on` was called on a thread that is already \
    running a trellis runtime (a worker thread, or inside another `block_on`): this would block \
    the thread the runtime needs. Use `.await` instead, or `spawn_blocking` to get a thread \
    where blocking is allowed";

struct Context {
    handle: RefCell<Option<Handle>>,
    worker: RefCell<Option<Rc<WorkerCore>>>,
    in_runtime: Cell<bool>,
}

thread_local_const! {
    static CONTEXT: Context = Context {
        handle: RefCell::new(None),
        worker: RefCell::new(None),
        in_runtime: Cell::new(false),
    };
}

/// Calls `f` with the current runtime's handle, if any.
pub(crate) fn with_handle<R>(f: impl FnOnce(Option<&Handle>) -> R) -> R {
    CONTEXT.with(|c| f(c.handle.borrow().as_ref()))
}

/// Calls `f` with this thread's worker core, if it is a worker.
pub(crate) fn with_worker<R>(f: impl FnOnce(Option<&WorkerCore>) -> R) -> R {
    CONTEXT.with(|c| f(c.worker.borrow().as_deref()))
}

/// Restores the previous context when dropped (also on unwind).
pub(crate) struct ContextGuard {
    prev_handle: Option<Handle>,
    prev_in_runtime: bool,
    set_worker: bool,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let prev_handle = self.prev_handle.take();
        let old = CONTEXT.with(|c| {
            c.in_runtime.set(self.prev_in_runtime);
            let worker = if self.set_worker { c.worker.borrow_mut().take() } else { None };
            (c.handle.replace(prev_handle), worker)
        });
        // Dropped outside the thread-local borrow: a handle's drop may run arbitrary drops.
        drop(old);
    }
}

fn enter(handle: &Handle, in_runtime: bool, worker: Option<Rc<WorkerCore>>) -> ContextGuard {
    CONTEXT.with(|c| {
        if in_runtime && c.in_runtime.get() {
            panic!("{}", NESTED_BLOCK_ON);
        }
        let set_worker = worker.is_some();
        if set_worker {
            *c.worker.borrow_mut() = worker;
        }
        let prev_in_runtime = c.in_runtime.replace(in_runtime || c.in_runtime.get());
        let prev_handle = c.handle.replace(Some(handle.clone()));
        ContextGuard { prev_handle, prev_in_runtime, set_worker }
    })
}

/// `block_on`: panics if the thread is already inside a runtime.
pub(crate) fn enter_block_on(handle: &Handle) -> ContextGuard {
    enter(handle, true, None)
}

/// A worker thread, for its whole life.
pub(crate) fn enter_worker(handle: &Handle, core: Rc<WorkerCore>) -> ContextGuard {
    enter(handle, true, Some(core))
}

/// A blocking-pool thread, for its whole life (blocking is allowed there, so `block_on` too).
pub(crate) fn enter_blocking_thread(handle: &Handle) -> ContextGuard {
    enter(handle, false, None)
}

/// Makes `handle` current on this thread until the guard drops (public `Handle::enter`).
pub(crate) fn enter_handle(handle: &Handle) -> ContextGuard {
    enter(handle, false, None)
}

//! The `Waker` of a task: a pointer to its header owning one reference.
//!
//! All tasks share one `RawWakerVTable`; the per-type work (queueing, freeing) goes through the
//! header's own vtable. `waker_ref` lends a waker for the duration of a poll without touching
//! the refcount: the poller's reference keeps the task alive meanwhile.

use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::task::{RawWaker, RawWakerVTable, Waker};

use super::raw::{Header, RawTask};
use super::state::TransitionToNotified;

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake_by_val, wake_by_ref, drop_waker);

/// A waker for `header` that borrows the caller's reference (never dropped: `ManuallyDrop`).
pub(super) fn waker_ref(header: &Header) -> ManuallyDrop<Waker> {
    let ptr = (header as *const Header).cast::<()>();
    // SAFETY: the vtable's functions expect a task header pointer, which `ptr` is; the
    // `ManuallyDrop` keeps `drop_waker` from consuming a reference this waker does not own, and
    // clones made from it take their own reference.
    ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(ptr, &WAKER_VTABLE)) })
}

/// Whether `waker` is the waker of the task at `task` (made by this module).
pub(super) fn is_task_waker_for(waker: &Waker, task: NonNull<Header>) -> bool {
    std::ptr::eq(waker.vtable(), &WAKER_VTABLE) && waker.data() == task.as_ptr().cast_const().cast()
}

/// # Safety
/// `ptr` is the header pointer of a waker created by this module, which keeps the task alive.
unsafe fn raw_task(ptr: *const ()) -> RawTask {
    // SAFETY: wakers of this vtable are only ever made from non-null task header pointers, and
    // the waker's reference keeps the cell live.
    unsafe { RawTask::from_raw(NonNull::new_unchecked(ptr.cast_mut().cast::<Header>())) }
}

unsafe fn clone_waker(ptr: *const ()) -> RawWaker {
    // SAFETY: called by `Waker::clone` on one of our wakers.
    let raw = unsafe { raw_task(ptr) };
    raw.header().state.ref_inc();
    RawWaker::new(ptr, &WAKER_VTABLE)
}

unsafe fn wake_by_val(ptr: *const ()) {
    // SAFETY: called by `Waker::wake` on one of our wakers, which hands over its reference.
    let raw = unsafe { raw_task(ptr) };
    match raw.header().state.transition_to_notified_by_val() {
        TransitionToNotified::Submit => {
            // A new reference was made for the queue entry; the waker's own keeps the cell
            // (and the scheduler borrowed from it) alive until `schedule` returns.
            raw.schedule();
            raw.drop_reference();
        }
        TransitionToNotified::Dealloc => raw.dealloc(),
        TransitionToNotified::DoNothing => {}
    }
}

unsafe fn wake_by_ref(ptr: *const ()) {
    // SAFETY: called by `Waker::wake_by_ref` on one of our wakers (which keeps its reference).
    let raw = unsafe { raw_task(ptr) };
    match raw.header().state.transition_to_notified_by_ref() {
        TransitionToNotified::Submit => raw.schedule(),
        TransitionToNotified::Dealloc | TransitionToNotified::DoNothing => {}
    }
}

unsafe fn drop_waker(ptr: *const ()) {
    // SAFETY: called by `Waker::drop` on one of our wakers, which hands over its reference.
    let raw = unsafe { raw_task(ptr) };
    raw.drop_reference();
}

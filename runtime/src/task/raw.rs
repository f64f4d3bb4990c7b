//! The task cell: one heap allocation holding the header, the scheduler handle, the stage
//! (future, then output) and the join-waker slot, plus the type-erased vtable that lets the
//! scheduler and the `JoinHandle` drive it without knowing the future's type.
//!
//! # Layout
//!
//! `Cell<F, S>` is `#[repr(C)]` with the [`Header`] first, so a pointer to the cell is a pointer
//! to its header: every untyped handle ([`RawTask`], wakers, queue entries) is a
//! `NonNull<Header>` and the vtable casts it back to the concrete cell.

use std::future::Future;
use std::ptr::NonNull;
use std::task::Waker;

use super::harness::Harness;
use super::id::TaskId;
use super::state::State;
use super::Schedule;
use crate::cancel::node::Node;
use crate::sync::atomic::{
    fence, AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use crate::sync::{Arc, UnsafeCell};

/// The untyped part of every task, at offset 0 of its cell.
#[repr(C)]
pub(crate) struct Header {
    pub(super) state: State,
    pub(super) vtable: &'static Vtable,
    pub(super) id: TaskId,
    /// Where the owned-task registry keeps the task: `shard << 32 | slot` (written when it is
    /// bound, before the task is shared; read under that shard's lock).
    owned_location: AtomicU64,
    /// Polls in a row that ended `Pending` with the task re-woken while it was cancelled; only
    /// touched by the thread holding `RUNNING` (state invariant 2).
    pub(super) self_wakes_while_cancelled: UnsafeCell<u8>,
    /// Set once `root` holds the task's root status node (see [`Header::root_node`]).
    root_ready: AtomicBool,
    /// The task's root status node (DESIGN.md 3.3), created on first need: by the spawner
    /// before the task is shared (a `start` child), or by the thread holding `RUNNING` (the
    /// first scope or `Cancelled` in a plain task; for a nursery child, also a first poll that
    /// begins under a cancelled nursery or ends `Pending`). Once `root_ready` is set it holds
    /// the root and is never written again; dropped with the cell.
    ///
    /// Before that it may hold the root's *parent* instead (a nursery child's nursery node,
    /// stored before the task is shared): a lazy root, linked there when it is created. Only
    /// the `RUNNING` holder reads or takes it then, and nobody else reads the cell while
    /// `root_ready` is clear, so a child that finishes in its first poll never allocates a
    /// node nor touches its nursery's.
    root: UnsafeCell<Option<Arc<Node>>>,
}

impl Header {
    pub(crate) fn id(&self) -> TaskId {
        self.id
    }

    /// `(shard, slot)` in the owned-task registry.
    pub(crate) fn owned_location(&self) -> (usize, usize) {
        let location = self.owned_location.load(Relaxed);
        ((location >> 32) as usize, (location & u32::MAX as u64) as usize)
    }

    pub(crate) fn set_owned_location(&self, shard: usize, slot: usize) {
        self.owned_location.store(((shard as u64) << 32) | slot as u64, Relaxed)
    }

    /// The task's root status node, if it has one yet.
    pub(crate) fn root_node(&self) -> Option<&Arc<Node>> {
        if !self.root_ready.load(Acquire) {
            return None;
        }
        self.root.with(|root| {
            // SAFETY: `root` was written before `root_ready` was set (Release, read above with
            // Acquire) and is never written again while the header lives, so shared reads of
            // it are fine for as long as the caller's reference to the header.
            unsafe { (*root).as_ref() }
        })
    }

    /// Installs `node` as the root. Only while the caller has exclusive use of the task: it
    /// holds `RUNNING`, or the task is not shared yet (task rule 2); and only once.
    pub(super) fn install_root(&self, node: Arc<Node>) -> &Arc<Node> {
        debug_assert!(!self.root_ready.load(Relaxed), "a task root is installed only once");
        self.root.with_mut(|root| {
            // SAFETY: the caller has exclusive use (see above) and `root_ready` is clear, so no
            // other thread reads the cell.
            unsafe { *root = Some(node) }
        });
        self.root_ready.store(true, Release);
        self.root_node().expect("just installed")
    }

    /// Makes the root lazy: it will be linked under `parent` when it is created. Only before
    /// the task is shared (task rule 2).
    pub(super) fn set_lazy_root_parent(&self, parent: Arc<Node>) {
        debug_assert!(!self.root_ready.load(Relaxed), "a lazy root is set before any root");
        self.root.with_mut(|root| {
            // SAFETY: the task is not shared yet, so the caller has exclusive use of the cell.
            unsafe { *root = Some(parent) }
        });
    }

    /// For a task whose lazy root is not created yet: whether the parent it will be linked
    /// under is effectively cancelled (so the root would be). `None` for any other task. Only
    /// for the thread holding `RUNNING`.
    #[inline]
    pub(crate) fn lazy_root_parent_cancelled(&self) -> Option<bool> {
        if self.root_ready.load(Relaxed) {
            return None;
        }
        self.root.with(|root| {
            // SAFETY: `root_ready` is clear and only the `RUNNING` holder (the caller) writes
            // the cell then (`materialize_root`); the reference does not outlive this call.
            unsafe { (*root).as_ref() }.map(|parent| parent.is_effective())
        })
    }

    /// The root status node, created now if the task has none (the caller holds `RUNNING`),
    /// linked under the lazy parent if the task has one. The root of a task cancelled before
    /// it existed is cancelled at once: with the fence in `task::cancel_raw`, either the
    /// canceller sees the root or this sees its cancel bit.
    pub(crate) fn materialize_root(&self, owner: Option<&Waker>) -> &Arc<Node> {
        if let Some(root) = self.root_node() {
            return root;
        }
        let parent = self.root.with_mut(|root| {
            // SAFETY: the caller holds `RUNNING` and `root_ready` is clear: nobody else reads
            // or writes the cell (see `root`).
            unsafe { (*root).take() }
        });
        let root = self.install_root(Node::enter_task_root(parent.as_ref(), owner));
        drop(parent);
        fence(SeqCst);
        if self.state.is_cancelled_relaxed() {
            Node::cancel(root, crate::cancel::task_cancel_cause());
        }
        root
    }
}

/// What the cell holds besides the header. The future lives here until it completes or is
/// dropped; then the output until the `JoinHandle` takes it.
pub(super) enum Stage<F: Future> {
    Running(F),
    Finished(super::Output<F::Output>),
    Consumed,
}

/// One task's allocation.
#[repr(C)]
pub(super) struct Cell<F: Future, S> {
    pub(super) header: Header,
    pub(super) scheduler: S,
    pub(super) stage: UnsafeCell<Stage<F>>,
    /// The waker of whoever awaits the `JoinHandle` (state invariant 3).
    pub(super) join_waker: UnsafeCell<Option<Waker>>,
}

/// Type-erased operations on a cell.
pub(super) struct Vtable {
    /// Polls the task (consumes the reference of a `Notified`); `true`: requeue (the reference
    /// now belongs to a new `Notified`).
    pub(super) poll: unsafe fn(NonNull<Header>) -> bool,
    /// Queues the task (consumes one reference, which becomes the `Notified`'s).
    pub(super) schedule: unsafe fn(NonNull<Header>),
    /// Frees the cell (refcount reached zero).
    pub(super) dealloc: unsafe fn(NonNull<Header>),
    /// Moves the output into `*dst` (a `Poll<Result<T, JoinError>>`) or registers the waker.
    pub(super) try_read_output: unsafe fn(NonNull<Header>, *mut (), &Waker),
    /// The `JoinHandle` was dropped (consumes its reference).
    pub(super) drop_join_handle_slow: unsafe fn(NonNull<Header>),
    /// Runtime shutdown: drops the future if nobody is polling it (consumes one reference).
    pub(super) shutdown: unsafe fn(NonNull<Header>),
}

fn vtable<F: Future, S: Schedule>() -> &'static Vtable {
    &Vtable {
        poll: poll::<F, S>,
        schedule: schedule::<F, S>,
        dealloc: dealloc::<F, S>,
        try_read_output: try_read_output::<F, S>,
        drop_join_handle_slow: drop_join_handle_slow::<F, S>,
        shutdown: shutdown::<F, S>,
    }
}

/// A non-owning pointer to a task's header (copying it does not touch the refcount).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawTask {
    ptr: NonNull<Header>,
}

// SAFETY: a `RawTask` is only a pointer; everything reachable through it is synchronised by the
// state word, and only `Send` futures are ever put into cells (`Task::new` requires it).
unsafe impl Send for RawTask {}
// SAFETY: as above; shared access goes through atomics or is guarded by `RUNNING`.
unsafe impl Sync for RawTask {}

impl RawTask {
    /// Allocates a cell holding `future` with the initial state (three references).
    pub(super) fn new<F, S>(future: F, scheduler: S, id: TaskId) -> RawTask
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
        S: Schedule,
    {
        let cell = Box::new(Cell {
            header: Header {
                state: State::new(),
                vtable: vtable::<F, S>(),
                id,
                owned_location: AtomicU64::new(u64::MAX),
                self_wakes_while_cancelled: UnsafeCell::new(0),
                root_ready: AtomicBool::new(false),
                root: UnsafeCell::new(None),
            },
            scheduler,
            stage: UnsafeCell::new(Stage::Running(future)),
            join_waker: UnsafeCell::new(None),
        });
        let ptr = NonNull::from(Box::leak(cell)).cast::<Header>();
        RawTask { ptr }
    }

    /// # Safety
    /// `ptr` must point to the header of a live task cell.
    pub(super) unsafe fn from_raw(ptr: NonNull<Header>) -> RawTask {
        RawTask { ptr }
    }

    pub(super) fn as_ptr(self) -> NonNull<Header> {
        self.ptr
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: every `RawTask` in circulation is backed by a reference (owned by the
        // `Task`/`Notified`/`JoinHandle`/waker that holds it), so the cell is live.
        unsafe { self.ptr.as_ref() }
    }

    pub(super) fn state(&self) -> &State {
        &self.header().state
    }

    pub(super) fn poll(self) -> bool {
        // SAFETY: the vtable belongs to this cell; the caller passes a `Notified`'s reference.
        unsafe { (self.header().vtable.poll)(self.ptr) }
    }

    pub(super) fn schedule(self) {
        // SAFETY: the vtable belongs to this cell; the caller passes a reference for the queue.
        unsafe { (self.header().vtable.schedule)(self.ptr) }
    }

    pub(super) fn dealloc(self) {
        // SAFETY: the vtable belongs to this cell; the caller observed the refcount reach zero.
        unsafe { (self.header().vtable.dealloc)(self.ptr) }
    }

    /// # Safety
    /// `dst` must point to a `Poll<Result<T, JoinError>>` with `T` the task's output type, and
    /// the caller must hold the join handle (state invariant 2 and 3).
    pub(super) unsafe fn try_read_output(self, dst: *mut (), waker: &Waker) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { (self.header().vtable.try_read_output)(self.ptr, dst, waker) }
    }

    pub(super) fn drop_join_handle_slow(self) {
        // SAFETY: the vtable belongs to this cell; the caller passes the join handle's reference.
        unsafe { (self.header().vtable.drop_join_handle_slow)(self.ptr) }
    }

    pub(super) fn shutdown(self) {
        // SAFETY: the vtable belongs to this cell; the caller passes one reference.
        unsafe { (self.header().vtable.shutdown)(self.ptr) }
    }

    /// Drops one reference, deallocating on the last.
    pub(super) fn drop_reference(self) {
        if self.state().ref_dec() {
            self.dealloc();
        }
    }
}

unsafe fn poll<F: Future, S: Schedule>(ptr: NonNull<Header>) -> bool {
    // SAFETY: the vtable is only reachable from a `Cell<F, S>` (see `RawTask::new`).
    let harness = unsafe { Harness::<F, S>::from_raw(ptr) };
    harness.poll()
}

unsafe fn schedule<F: Future, S: Schedule>(ptr: NonNull<Header>) {
    // SAFETY: see `poll`.
    let harness = unsafe { Harness::<F, S>::from_raw(ptr) };
    harness.schedule();
}

unsafe fn dealloc<F: Future, S: Schedule>(ptr: NonNull<Header>) {
    // SAFETY: refcount reached zero, so this is the only access; the cell came from `Box`.
    drop(unsafe { Box::from_raw(ptr.cast::<Cell<F, S>>().as_ptr()) });
}

unsafe fn try_read_output<F: Future, S: Schedule>(ptr: NonNull<Header>, dst: *mut (), w: &Waker) {
    // SAFETY: see `poll`.
    let harness = unsafe { Harness::<F, S>::from_raw(ptr) };
    // SAFETY: the caller's contract makes `dst` a `Poll<Result<F::Output, JoinError>>`.
    let dst = unsafe { &mut *dst.cast::<std::task::Poll<super::Output<F::Output>>>() };
    harness.try_read_output(dst, w);
}

unsafe fn drop_join_handle_slow<F: Future, S: Schedule>(ptr: NonNull<Header>) {
    // SAFETY: see `poll`.
    let harness = unsafe { Harness::<F, S>::from_raw(ptr) };
    harness.drop_join_handle_slow();
}

unsafe fn shutdown<F: Future, S: Schedule>(ptr: NonNull<Header>) {
    // SAFETY: see `poll`.
    let harness = unsafe { Harness::<F, S>::from_raw(ptr) };
    harness.shutdown();
}

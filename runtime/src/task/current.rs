//! The current-task frame: which task the calling thread is polling right now.
//!
//! The harness sets it around every poll, and every cancel scope (and nursery) sets its own
//! status node around its inner poll (DESIGN.md 3.4: status follows the poll). A cancel point
//! reads the current node's word with one relaxed load (3.3); a task whose root node was never
//! needed (no scope entered, no `Cancelled` delivered) has none, and its root cancel bit in
//! the state word stands for it. Outside a task poll and outside any scope (in `block_on`, on a
//! foreign thread) nothing is cancelled.
//!
//! The frame also holds the waker of whoever set it (the task's, or the waker a scope was
//! polled with), so a leaf can tell whether cancelling its node would reach it (3.5).
//!
//! The frame also carries the *re-poll request* of `yield_now`: a task that yields through its
//! own waker does not need to wake itself (an atomic read-modify-write on its state word); it
//! records the request here, and the harness requeues it when the poll returns `Pending`.

use std::cell::{Cell, OnceCell};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::task::Waker;

use super::raw::Header;
use super::waker::is_task_waker_for;
use crate::cancel::node::Node;
use crate::sync::{thread_local_const, Arc};
use crate::time::Instant;

struct Frame {
    task: Cell<Option<NonNull<Header>>>,
    repoll: Cell<bool>,
    /// The current status node (null: none), borrowed from whoever set it.
    node: Cell<*const Arc<Node>>,
    /// The waker that re-polls whoever set the frame (null: none).
    waker: Cell<*const Waker>,
    /// The innermost lazy scope entered below `node` and not materialized yet (null: none).
    lazy: Cell<*const LazyScope>,
}

thread_local_const! {
    static FRAME: Frame = Frame {
        task: Cell::new(None),
        repoll: Cell::new(false),
        node: Cell::new(ptr::null()),
        waker: Cell::new(ptr::null()),
        lazy: Cell::new(ptr::null()),
    };
}

/// Marks the calling thread as polling a task (or, with `None`, as polling no task) until
/// dropped, also on unwind.
pub(crate) struct CurrentTaskGuard<'a> {
    prev: Option<NonNull<Header>>,
    prev_repoll: bool,
    prev_node: *const Arc<Node>,
    prev_waker: *const Waker,
    prev_lazy: *const LazyScope,
    _borrows: PhantomData<&'a Waker>,
}

impl<'a> CurrentTaskGuard<'a> {
    /// The caller holds `RUNNING` and a reference to the task for the guard's whole life;
    /// `waker` is the task's own waker, for this poll.
    pub(crate) fn enter(header: &'a Header, waker: &'a Waker) -> CurrentTaskGuard<'a> {
        let node = header.root_node().map_or(ptr::null(), |n| n as *const Arc<Node>);
        Self::set(Some(NonNull::from(header)), node, waker)
    }

    /// No task is being polled until the guard drops (`block_on` inside a blocking job).
    pub(crate) fn enter_none() -> CurrentTaskGuard<'static> {
        FRAME.with(|f| CurrentTaskGuard {
            prev: f.task.replace(None),
            prev_repoll: f.repoll.replace(false),
            prev_node: f.node.replace(ptr::null()),
            prev_waker: f.waker.replace(ptr::null()),
            prev_lazy: f.lazy.replace(ptr::null()),
            _borrows: PhantomData,
        })
    }

    fn set(task: Option<NonNull<Header>>, node: *const Arc<Node>, waker: &'a Waker) -> Self {
        FRAME.with(|f| CurrentTaskGuard {
            prev: f.task.replace(task),
            prev_repoll: f.repoll.replace(false),
            prev_node: f.node.replace(node),
            prev_waker: f.waker.replace(waker),
            prev_lazy: f.lazy.replace(ptr::null()),
            _borrows: PhantomData,
        })
    }

    /// Whether the poll asked to be polled again (see the module doc); clears the request.
    pub(crate) fn take_repoll(&self) -> bool {
        FRAME.with(|f| f.repoll.replace(false))
    }
}

impl Drop for CurrentTaskGuard<'_> {
    fn drop(&mut self) {
        FRAME.with(|f| {
            f.task.set(self.prev);
            f.repoll.set(self.prev_repoll);
            f.node.set(self.prev_node);
            f.waker.set(self.prev_waker);
            f.lazy.set(self.prev_lazy);
        });
    }
}

/// Makes `node` the current status node, and `waker` the frame's waker, until dropped (also on
/// unwind): a scope or nursery around its inner poll (3.4).
pub(crate) struct NodeGuard<'a> {
    prev_node: *const Arc<Node>,
    prev_waker: *const Waker,
    prev_lazy: *const LazyScope,
    _borrows: PhantomData<(&'a Arc<Node>, &'a Waker)>,
}

impl<'a> NodeGuard<'a> {
    pub(crate) fn enter(node: &'a Arc<Node>, waker: &'a Waker) -> NodeGuard<'a> {
        FRAME.with(|f| NodeGuard {
            prev_node: f.node.replace(node),
            prev_waker: f.waker.replace(waker),
            prev_lazy: f.lazy.replace(ptr::null()),
            _borrows: PhantomData,
        })
    }
}

impl Drop for NodeGuard<'_> {
    fn drop(&mut self) {
        FRAME.with(|f| {
            f.node.set(self.prev_node);
            f.waker.set(self.prev_waker);
            f.lazy.set(self.prev_lazy);
        });
    }
}

/// A deadline scope (`move_on_*`, `fail_*`) in its first poll, before it has a status node
/// (DESIGN.md 3.3, 3.11). Most timeouts wrap an operation that completes at once; such a scope
/// never needs a node: until its deadline timer is registered (when its future is first
/// suspended) nothing can cancel it but its parent, so its cancel points read the parent's
/// word. It gets its node (is *materialized*) the moment anything inside asks for the current
/// node (a nested scope or nursery entering, a `Cancelled` being delivered, a leaf
/// registering, `current_effective_deadline`), or when its first poll returns `Pending`.
///
/// It lives on the stack of the scope's first poll; [`LazyGuard`] makes it the frame's
/// innermost lazy scope for the inner poll. Lazy scopes nest: materializing one materializes
/// the lazy scopes it sits in first, outermost first, so every node is linked under its parent.
pub(crate) struct LazyScope {
    deadline: Instant,
    /// The frame's node when the scope was entered: its parent, unless `outer_lazy` is set.
    outer_node: Cell<*const Arc<Node>>,
    /// The frame's waker when the scope was entered.
    outer_waker: Cell<*const Waker>,
    /// The lazy scope it was entered in (null: none, or one already materialized).
    outer_lazy: Cell<*const LazyScope>,
    /// The waker its first poll got: the node's owner.
    waker: Cell<*const Waker>,
    node: OnceCell<Arc<Node>>,
}

impl LazyScope {
    pub(crate) fn new(deadline: Instant) -> LazyScope {
        LazyScope {
            deadline,
            outer_node: Cell::new(ptr::null()),
            outer_waker: Cell::new(ptr::null()),
            outer_lazy: Cell::new(ptr::null()),
            waker: Cell::new(ptr::null()),
            node: OnceCell::new(),
        }
    }

    /// The node, if something materialized the scope during its first poll.
    pub(crate) fn take_node(&mut self) -> Option<Arc<Node>> {
        self.node.take()
    }

    /// Creates the node under its parent (materializing lazy parents first) and, if the scope
    /// is the frame's innermost, makes it the frame's node.
    fn materialize(&self) -> &Arc<Node> {
        if let Some(node) = self.node.get() {
            return node;
        }
        // SAFETY: `outer_lazy` is set by `LazyGuard::enter` to the frame's lazy scope, which
        // outlives this one (its guard was entered before ours and drops after it).
        let parent = match unsafe { self.outer_lazy.get().as_ref() } {
            Some(outer) => Some(outer.materialize()),
            None => {
                // SAFETY: the frame node pointer saved at entry is borrowed by a guard that
                // outlives ours (see `with_node`).
                match unsafe { self.outer_node.get().as_ref() } {
                    Some(node) => Some(node),
                    None => {
                        let root = with_current(|header| {
                            // SAFETY: the frame waker saved at entry is borrowed by the
                            // `CurrentTaskGuard` that set it, which outlives ours.
                            let waker = unsafe { self.outer_waker.get().as_ref() };
                            header.materialize_root(waker) as *const Arc<Node>
                        });
                        // The root now stands for the task: restore it as the frame's node
                        // when this (outermost) lazy scope's guard drops.
                        if let Some(root) = root {
                            self.outer_node.set(root);
                        }
                        // SAFETY: the root lives in the header of the polled task.
                        root.map(|root| unsafe { &*root })
                    }
                }
            }
        };
        // SAFETY: set by `LazyGuard::enter` from the waker its poll borrows for the guard's life.
        let owner = unsafe { &*self.waker.get() };
        let node =
            self.node.get_or_init(|| Node::enter_deadline_scope(self.deadline, parent, owner));
        FRAME.with(|f| {
            if ptr::eq(f.lazy.get(), self) {
                f.lazy.set(ptr::null());
                f.node.set(node);
            }
        });
        node
    }
}

impl Drop for LazyScope {
    /// Closes a node nobody took: the scope's first poll unwound.
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            Node::close(&node, false);
        }
    }
}

/// Makes a [`LazyScope`] the frame's innermost, and its waker the frame's, until dropped (also
/// on unwind); then restores the frame, with the node of an enclosing lazy scope that got
/// materialized meanwhile.
pub(crate) struct LazyGuard<'a> {
    lazy: &'a LazyScope,
}

impl<'a> LazyGuard<'a> {
    pub(crate) fn enter(lazy: &'a LazyScope, waker: &'a Waker) -> LazyGuard<'a> {
        FRAME.with(|f| {
            lazy.outer_node.set(f.node.get());
            lazy.outer_waker.set(f.waker.replace(waker));
            lazy.outer_lazy.set(f.lazy.replace(lazy));
            lazy.waker.set(waker);
        });
        LazyGuard { lazy }
    }
}

impl Drop for LazyGuard<'_> {
    fn drop(&mut self) {
        let lazy = self.lazy;
        FRAME.with(|f| {
            f.waker.set(lazy.outer_waker.get());
            let outer = lazy.outer_lazy.get();
            // SAFETY: as in `LazyScope::materialize`.
            match unsafe { outer.as_ref() }.and_then(|outer| outer.node.get()) {
                Some(outer_node) => {
                    f.node.set(outer_node);
                    f.lazy.set(ptr::null());
                }
                None => {
                    f.node.set(lazy.outer_node.get());
                    f.lazy.set(outer);
                }
            }
        });
    }
}

/// Materializes the frame's innermost lazy scope, if any (see [`LazyScope`]).
fn materialize_lazy() {
    let lazy = FRAME.with(|f| f.lazy.get());
    // SAFETY: a non-null lazy pointer is borrowed by its `LazyGuard` while it is in the frame.
    if let Some(lazy) = unsafe { lazy.as_ref() } {
        lazy.materialize();
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

/// Calls `f` with the current status node, if any (without creating a task's root).
fn with_node<R>(f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
    FRAME.with(|frame| {
        let node = frame.node.get();
        // SAFETY: a non-null node pointer is only present between a guard's `enter` and its
        // drop, and the guard borrows the `Arc<Node>` for that whole time (or, for a task root,
        // the header that owns it, live while the task is polled), so it points to a live Arc.
        f(unsafe { node.as_ref() })
    })
}

/// The cancel-point check (3.3): whether the calling thread's current status is effectively
/// cancelled. One thread-local read and one relaxed load.
#[inline]
pub(crate) fn is_cancelled() -> bool {
    FRAME.with(|frame| {
        let node = frame.node.get();
        if !node.is_null() {
            // SAFETY: as in `with_node`.
            return unsafe { &*node }.is_effective();
        }
        match frame.task.get() {
            Some(task) => {
                // SAFETY: as in `with_current`.
                let header = unsafe { task.as_ref() };
                // A nursery child whose lazy root does not exist yet is cancelled as that root
                // would be: by its own bit, or by the nursery it will hang under.
                header.state.is_cancelled_relaxed()
                    || header.lazy_root_parent_cancelled() == Some(true)
            }
            None => false,
        }
    })
}

/// The current status node, creating the polled task's root node if it has none yet (the
/// first scope entered in a task, the first `Cancelled` delivered in it). `None` outside tasks
/// and scopes.
pub(crate) fn current_node() -> Option<Arc<Node>> {
    materialize_lazy();
    if let Some(node) = with_node(|n| n.cloned()) {
        return Some(node);
    }
    let created = with_current(|header| {
        let waker = FRAME.with(|f| f.waker.get());
        // SAFETY: the frame's waker is set together with its task and borrowed by its guard.
        let waker = unsafe { waker.as_ref() };
        header.materialize_root(waker) as *const Arc<Node>
    })?;
    FRAME.with(|f| f.node.set(created));
    // SAFETY: the root lives in the header of the task being polled (see `with_node`).
    Some(unsafe { &*created }.clone())
}

/// The polled task's root status node, if it has one (never creates it). `None` outside
/// tasks.
pub(crate) fn current_root() -> Option<Arc<Node>> {
    with_current(|header| header.root_node().cloned()).flatten()
}

/// The address of the current node, to tell whether a scope moved (3.4); 0 for none. Does not
/// create a task root: a task with none has no scope linked below it either.
/// Inside a lazy scope not materialized yet it returns 1, no node's address, so a scope
/// entered earlier and polled there now relinks (through `current_node`, which materializes).
pub(crate) fn current_node_addr() -> usize {
    if FRAME.with(|f| !f.lazy.get().is_null()) {
        return 1;
    }
    with_node(|n| n.map_or(0, |n| &**n as *const Node as usize))
}

/// Whether waking `waker` reaches whoever set the frame (true without a frame): if not, a leaf
/// registers its own waker with its node (3.5).
pub(crate) fn frame_waker_is(waker: &Waker) -> bool {
    FRAME.with(|f| {
        let frame_waker = f.waker.get();
        // SAFETY: borrowed by the guard that set it (see `CurrentTaskGuard`, `NodeGuard`).
        unsafe { frame_waker.as_ref() }.is_none_or(|w| w.will_wake(waker))
    })
}

/// Whether the task being polled asked to be polled again during this poll (a dropper's
/// self-wake test, 3.10): a `yield_now`, or a wake while it runs.
pub(crate) fn woken_during_poll() -> bool {
    FRAME.with(|f| f.repoll.get())
        || with_current(|h| h.state.load().is_notified()).unwrap_or(false)
}

/// The id of the task being polled on this thread.
pub(crate) fn current_id() -> Option<super::TaskId> {
    with_current(|h| h.id())
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

//! Loom models of the cancellation status tree (`cancel/node.rs`, DESIGN.md 3.2-3.10).
//!
//! The models drive [`Node`]'s API directly (no runtime, no reactor: the nodes have no deadline,
//! so nothing registers a timer). Each builds a small tree on the main thread, races one or two
//! operations on at most one loom thread, joins, and then checks the tree. Wakers are
//! [`Probe`]s: they count their wakes and the drop of their last reference (so a waker that
//! stays registered in a node shows as "not dropped"). Their counters are loom atomics used
//! with `Relaxed` only, so any ordering a model relies on must come from `node.rs` itself. Every
//! model closes its nodes bottom-up at the end, so no parent/child `Arc` cycle is left (loom
//! would report it as a leaked `Arc`).
//!
//! - [`cancel_racing_close_not_dropped`], [`cancel_racing_close_dropped`]: a scope's own
//!   `cancel` races its exit (`close`). After both: `cancel_called` is true; the node is closed
//!   once (a second `close` returns the same answer, `cancelled_caught` agrees, the parent no
//!   longer holds it); no waker is left registered; the leaf and the owner were woken exactly
//!   when the cancel came first (the node ends effective), once; `caught` is true exactly when
//!   the node owned an effective cancellation at its exit and either a `Cancelled` delivered in
//!   it was alive or its inner future was dropped; an effective node ends settled.
//! - [`waiter_registration_racing_cancel_child`], [`waiter_registration_racing_cancel_self`]:
//!   a leaf registers its waker then re-checks the cancel bit (as `LeafWaiter::before_pending`)
//!   while another thread cancels its node's parent (or its node): it saw the bit, or its
//!   waker was woken. No lost wake-up.
//! - [`shield_off_racing_outer_cancel`], [`shield_off_on_racing_outer_cancel`]: a shielded
//!   child's shield is turned off (and on again) while a cancel of the parent propagates
//!   (parent -> shielded child -> grandchild). At the end each node's bit is the formula of
//!   DESIGN.md 3.3 for the final shield state (own cause, or parent effective and not
//!   shielded); an effective grandchild is settled and its leaf and owner were woken; the
//!   parent's dropper sees the shielded child as a guard exactly when the shield ends on.
//!
//!   `recompute` writes the word with a compare-exchange, not a plain store, because the
//!   settle (outside `TREE`) may race it; loom 0.7 also mis-models a plain store racing a
//!   read-modify-write (tokio-rs/loom#254, #389), which this model first ran into.
//! - [`settled_implies_leaves_woken`]: a thread that reads a settled cancel word (Acquire, as a
//!   dropper at poll start) on the cancelled node or on its child also sees every waiter that
//!   was registered in the subtree before the cancel began as woken (leaves are woken before
//!   the settle).
//! - [`live_forwarding_racing_drop`], [`live_forwarding_racing_clone_and_drop`]: a child
//!   holding one live `Cancelled` closes without catching (not the owner: nothing is
//!   cancelled), forwarding its count to the parent, while another thread drops that value
//!   (or clones it and drops the clone, the original being dropped last). At the end both
//!   counts are zero: no decrement is lost or applied to the wrong node.
//! - [`nursery_cancel_racing_child_link`]: a nursery's node is cancelled while a child's task
//!   root is linked under it (as `Handle::spawn_under` does: owner set, not woken by the link)
//!   and then runs its first poll. The child ends effective and settled, linked once under the
//!   nursery, which owns the cancellation (so the child's `Cancelled` is stripped, 4.4); its
//!   first cancel point saw the cancel or its task was woken once (and a poll that began
//!   settled saw it); once closed it is unlinked and its waker released.
//! - [`started_racing_old_parent_cancel`], [`started_racing_new_parent_cancel`]: a `start`
//!   child's root moves (`TaskStatus::started` -> `relink`) from the `Start` node below the
//!   caller's scope to the target nursery, a sibling of that scope, while the caller's scope
//!   (old place) or the nursery (new place) is cancelled. The child is linked in exactly one
//!   place and is effective iff the nursery is; a cancel of the nursery wakes it and is the
//!   nursery's; a cancel of the caller's scope after the move (also repeated once the `start`
//!   returned) does not reach it. The pending `Start` node is a guard for the caller's
//!   dropper until it closes; no link or waker is left.
//! - [`shield_off_racing_dropper_decision`]: one task: a cancelled, settled outer scope (the
//!   dropper) over a plain scope over a shielded scope over the inner future's node. Another
//!   thread lowers the shield while the dropper runs one poll as `scope.rs` does (poll-start
//!   word and guard mark, the inner cancel point, `Pending`, self-wake test,
//!   `dropper_may_drop`). It never drops while the shield is still on (the shield only goes
//!   off, so one still on after the decision was on at it); once off, the nodes below are
//!   effective and settled, the leaf below was woken, and the next poll's cancel point sees
//!   `Cancelled` and the dropper drops: it ends on time.
//! - [`shield_off_mid_poll_leaves_a_full_poll`]: the same race, checking the stronger promise
//!   of 3.10, that a dropper drops only after a poll in which the inner future's cancel points
//!   could report `Cancelled`: whenever it drops, the cancel point below the shield saw the
//!   cancellation in that poll. This model found the gap the guard marks close: poll begins
//!   (`O` settled) -> cancel point below the shield (not cancelled) -> `Pending` -> self-wake
//!   test (not woken yet) -> `set_shield(false)` runs -> `dropper_may_drop` (no guard left) ->
//!   drop. `O`'s word does not change when a shield below it goes down, so without the mark
//!   the poll counted as a full one although the code below the shield never saw the
//!   cancellation. `nursery::loom_models::shield_off_mid_poll_real_dropper` is the same on the
//!   real dropper.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo
//! test --profile loom -p trellis-runtime --lib cancel::loom_models`.

use std::task::{Wake, Waker};

use loom::thread;

use super::node::{Cause, Kind, Node};
use super::CancelSource;
use crate::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use crate::sync::{arc_waker, Arc};

// ---- instruments ------------------------------------------------------------------------------

/// Counts events. `Relaxed` on purpose (see the module doc): any ordering a model relies on
/// must come from the code under test. Shared with `nursery::loom_models`.
#[derive(Clone)]
pub(crate) struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub(crate) fn new() -> Counter {
        Counter(Arc::new(AtomicUsize::new(0)))
    }
    pub(crate) fn incr(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub(crate) fn get(&self) -> usize {
        self.0.load(Relaxed)
    }
}

/// The counters of one waker: its wakes, and the drop of its last reference.
#[derive(Clone)]
struct Probe {
    wakes: Counter,
    dropped: Counter,
}

impl Probe {
    fn new() -> Probe {
        Probe { wakes: Counter::new(), dropped: Counter::new() }
    }

    /// A new waker reporting to this probe; make one per probe and hand out clones.
    fn waker(&self) -> Waker {
        arc_waker(CountingWaker(self.clone()))
    }
}

struct CountingWaker(Probe);

// `Wake` is implemented on `std::sync::Arc`; see `sync::arc_waker`.
#[allow(clippy::disallowed_types)]
impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.wakes.incr();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.wakes.incr();
    }
}

impl Drop for CountingWaker {
    fn drop(&mut self) {
        self.0.dropped.incr();
    }
}

// ---- helpers ----------------------------------------------------------------------------------

fn explicit() -> Cause {
    Cause { source: CancelSource::Explicit, reason: None }
}

/// A scope node, entered under `parent` (a root without one), with `owner` as its owner waker.
fn entered(parent: Option<&Arc<Node>>, owner: Option<&Waker>) -> Arc<Node> {
    entered_as(Kind::Scope, parent, owner)
}

/// A node of `kind`, entered under `parent`, with `owner` as its owner waker.
fn entered_as(kind: Kind, parent: Option<&Arc<Node>>, owner: Option<&Waker>) -> Arc<Node> {
    let node = Node::new(kind);
    Node::enter(&node, parent, owner);
    node
}

/// A task root linked under `parent` as `Handle::spawn_under` links a nursery child: the
/// task's waker is its owner from the start, not woken by the link itself (the task is not
/// queued yet; its first poll reads the bit).
fn spawned_under(parent: &Arc<Node>, task: &Probe) -> Arc<Node> {
    Node::enter_task_root(Some(parent), Some(&task.waker()))
}

/// Whether `node` owns the cancellation seen at `at` (3.7).
fn owns_cancellation_of(node: &Arc<Node>, at: &Arc<Node>) -> bool {
    Node::owner(at).is_some_and(|owner| Arc::ptr_eq(&owner, node))
}

/// Whether the node's word is a settled cancellation, as a dropper reads it.
fn settled(node: &Node) -> bool {
    Node::word_is_settled_cancel(node.settled_word())
}

/// A dropper's decision for a poll that begins now (its guard mark read now), as after a
/// `Pending` poll with nothing racing it.
fn may_drop_now(node: &Node) -> bool {
    node.dropper_may_drop(node.guard_mark())
}

/// Closes `nodes` in order (children first), so no parent/child `Arc` cycle is left.
fn close_all(nodes: &[&Arc<Node>]) {
    for node in nodes {
        Node::close(node, false);
    }
}

// ---- 1. cancel racing scope exit ----------------------------------------------------------------

/// A scope (child of an uncancelled root, with an owner waker and one registered leaf) is
/// cancelled on another thread while it exits. When `dropped`, the exit is a dropper's
/// (`close(true)`); otherwise the inner future finishes, carrying a `Cancelled` delivered at
/// the node if it saw the cancel bit first (`close(false)` with live > 0).
fn cancel_racing_close(dropped: bool) {
    loom::model(move || {
        let parent = entered(None, None);
        let owner = Probe::new();
        let leaf = Probe::new();
        let child = {
            let owner_waker = owner.waker();
            entered(Some(&parent), Some(&owner_waker))
        };
        let leaf_waker = leaf.waker();
        let _slot = child.add_waiter(leaf_waker.clone());
        drop(leaf_waker);

        let canceller = {
            let child = child.clone();
            thread::spawn(move || Node::cancel(&child, explicit()))
        };
        let delivered = !dropped && child.is_effective();
        if delivered {
            let _cause = Node::deliver(&child);
        }
        let caught = Node::close(&child, dropped);
        canceller.join().unwrap();

        // Cancel is permanent and a closed node is never recomputed: the bit says which of
        // `cancel` and `close` took the tree lock first.
        let cancel_first = child.is_effective();
        assert!(child.cancel_called(), "cancel_called is set even after the exit");
        assert_eq!(child.cancelled_caught(), caught);
        assert_eq!(Node::close(&child, dropped), caught, "a second close changes nothing");
        assert_eq!(Arc::strong_count(&child), 1, "the closed node is detached from its parent");
        // The node is its own outermost cancelled scope, so it owns iff it is effective.
        if dropped {
            assert_eq!(caught, cancel_first, "a dropper's exit catches iff it owned");
        } else {
            assert_eq!(caught, delivered, "catches iff it owned and a Cancelled was alive");
        }
        assert_eq!(leaf.wakes.get(), usize::from(cancel_first), "leaf woken iff cancel first");
        assert_eq!(owner.wakes.get(), usize::from(cancel_first), "owner woken iff cancel first");
        assert_eq!(leaf.dropped.get(), 1, "no waiter is left registered");
        assert_eq!(owner.dropped.get(), 1, "the owner waker is released at the exit");
        assert_eq!(settled(&child), cancel_first, "an effective node ends settled");
        assert_eq!(child.live(), 0);
        assert_eq!(parent.live(), 0, "a caught Cancelled is not forwarded");
        assert!(!parent.is_effective());
        close_all(&[&parent]);
    });
}

#[test]
fn cancel_racing_close_not_dropped() {
    cancel_racing_close(false);
}

#[test]
fn cancel_racing_close_dropped() {
    cancel_racing_close(true);
}

// ---- 2. waiter registration racing cancel -----------------------------------------------------

/// A leaf at `leaf_node` registers, then re-checks (as `LeafWaiter::before_pending`), while
/// another thread cancels `target` (the leaf's node or its parent).
fn waiter_registration_racing_cancel(cancel_the_parent: bool) {
    loom::model(move || {
        let parent = entered(None, None);
        let leaf_node = entered(Some(&parent), None);
        let leaf = Probe::new();

        let canceller = {
            let target = if cancel_the_parent { parent.clone() } else { leaf_node.clone() };
            thread::spawn(move || Node::cancel(&target, explicit()))
        };
        let waker = leaf.waker();
        let slot = leaf_node.add_waiter(waker.clone());
        let saw_cancelled = leaf_node.is_effective();
        if saw_cancelled {
            leaf_node.remove_waiter(slot);
        }
        canceller.join().unwrap();

        assert!(saw_cancelled || leaf.wakes.get() == 1, "lost wake-up: the leaf sleeps forever");
        assert!(leaf_node.is_effective());
        assert!(settled(&leaf_node));
        if !saw_cancelled {
            leaf_node.remove_waiter(slot); // the leaf completes after its wake
        }
        drop(waker);
        assert_eq!(leaf.dropped.get(), 1, "no waiter is left registered");
        close_all(&[&leaf_node, &parent]);
    });
}

#[test]
fn waiter_registration_racing_cancel_child() {
    waiter_registration_racing_cancel(true);
}

#[test]
fn waiter_registration_racing_cancel_self() {
    waiter_registration_racing_cancel(false);
}

// ---- 3. shield toggled while an outer cancel propagates -----------------------------------------

/// parent -> shielded child -> grandchild (with an owner waker and a leaf). Another thread
/// cancels the parent while the main thread sets the child's shield to each of `toggles`.
fn shield_toggled_racing_outer_cancel(toggles: &'static [bool]) {
    loom::model(move || {
        let parent = entered(None, None);
        let child = Node::new(Kind::Scope);
        Node::set_shield(&child, true);
        Node::enter(&child, Some(&parent), None);
        let owner = Probe::new();
        let leaf = Probe::new();
        let grandchild = {
            let owner_waker = owner.waker();
            entered(Some(&child), Some(&owner_waker))
        };
        let leaf_waker = leaf.waker();
        let slot = grandchild.add_waiter(leaf_waker.clone());
        drop(leaf_waker);

        let canceller = {
            let parent = parent.clone();
            thread::spawn(move || Node::cancel(&parent, explicit()))
        };
        for &shielded in toggles {
            Node::set_shield(&child, shielded);
        }
        canceller.join().unwrap();

        let final_shield = toggles.last().copied().unwrap_or(true);
        assert_eq!(child.is_shielded(), final_shield);
        assert!(parent.is_effective() && settled(&parent));
        let child_expected =
            child.cancel_called() || (parent.is_effective() && !child.is_shielded());
        assert_eq!(child.is_effective(), child_expected, "child bit follows 3.3");
        assert_eq!(child.is_effective(), !final_shield);
        let grandchild_expected =
            grandchild.cancel_called() || (child.is_effective() && !grandchild.is_shielded());
        assert_eq!(grandchild.is_effective(), grandchild_expected, "grandchild bit follows 3.3");
        for node in [&child, &grandchild] {
            assert_eq!(settled(node), node.is_effective(), "effective iff settled at the end");
        }
        if grandchild.is_effective() {
            assert!(leaf.wakes.get() >= 1, "the leaf of an effective node was woken");
            assert!(owner.wakes.get() >= 1, "the owner of an effective node was woken");
        }
        // The shielded, open child is a guard below the parent's dropper (3.10).
        assert_eq!(may_drop_now(&parent), !final_shield);

        grandchild.remove_waiter(slot);
        close_all(&[&grandchild, &child, &parent]);
        assert_eq!(leaf.dropped.get(), 1);
        assert_eq!(owner.dropped.get(), 1);
    });
}

#[test]
fn shield_off_racing_outer_cancel() {
    shield_toggled_racing_outer_cancel(&[false]);
}

#[test]
fn shield_off_on_racing_outer_cancel() {
    shield_toggled_racing_outer_cancel(&[false, true]);
}

// ---- 4. settle ordering -----------------------------------------------------------------------

/// Leaves registered on a parent and on its child before the parent is cancelled on the main
/// thread; an observer thread reads the child's then the parent's word as a dropper does at
/// poll start. Whenever it reads a settled cancellation, both leaves' wakes are visible to it.
/// (The observer is a spawned thread: with the loads on the main thread, right after the
/// spawn, loom explored a single execution.)
#[test]
fn settled_implies_leaves_woken() {
    loom::model(|| {
        let parent = entered(None, None);
        let child = entered(Some(&parent), None);
        let parent_leaf = Probe::new();
        let child_leaf = Probe::new();
        let parent_waker = parent_leaf.waker();
        let child_waker = child_leaf.waker();
        let parent_slot = parent.add_waiter(parent_waker.clone());
        let child_slot = child.add_waiter(child_waker.clone());

        let observer = {
            let (parent, child) = (parent.clone(), child.clone());
            let leaves = [parent_leaf.clone(), child_leaf.clone()];
            thread::spawn(move || {
                for node in [&child, &parent] {
                    if settled(node) {
                        for leaf in &leaves {
                            assert_eq!(leaf.wakes.get(), 1, "settled before a leaf was woken");
                        }
                    }
                }
            })
        };
        Node::cancel(&parent, explicit());
        observer.join().unwrap();

        assert!(settled(&parent) && settled(&child));
        assert_eq!(parent_leaf.wakes.get(), 1);
        assert_eq!(child_leaf.wakes.get(), 1);
        child.remove_waiter(child_slot);
        parent.remove_waiter(parent_slot);
        drop((parent_waker, child_waker));
        close_all(&[&child, &parent]);
        assert_eq!(parent_leaf.dropped.get(), 1);
        assert_eq!(child_leaf.dropped.get(), 1);
    });
}

// ---- 5. live-Cancelled forwarding racing a drop -----------------------------------------------

/// A child holding one live `Cancelled` (delivered at it) closes without catching while
/// another thread drops that value; with `clone_first` the other thread clones it and drops
/// the clone instead, and the main thread drops the original after the join.
fn live_forwarding_racing(clone_first: bool) {
    loom::model(move || {
        let parent = entered(None, None);
        let child = entered(Some(&parent), None);
        let _cause = Node::deliver(&child);
        assert_eq!(child.live(), 1);

        let other = {
            let child = child.clone();
            thread::spawn(move || {
                if clone_first {
                    Node::adjust_live(&child, true);
                }
                Node::adjust_live(&child, false);
            })
        };
        let caught = Node::close(&child, false);
        other.join().unwrap();
        if clone_first {
            Node::adjust_live(&child, false);
        }

        assert!(!caught, "nothing is cancelled: the child does not own, so it does not catch");
        assert_eq!(child.live(), 0, "the child's count was forwarded or dropped");
        assert_eq!(parent.live(), 0, "the forwarded count was decremented through the link");
        close_all(&[&parent]);
    });
}

#[test]
fn live_forwarding_racing_drop() {
    live_forwarding_racing(false);
}

#[test]
fn live_forwarding_racing_clone_and_drop() {
    live_forwarding_racing(true);
}

// ---- 6. a child linked into a nursery racing the nursery's cancel -----------------------------

/// A nursery's node (under an uncancelled root, the opener as its owner) is cancelled on another
/// thread while the main thread spawns a child into it as `Handle::spawn_under` does, then runs
/// the child's first poll: the task-root dropper's poll-start read, then a cancel point.
#[test]
fn nursery_cancel_racing_child_link() {
    loom::model(|| {
        let root = entered(None, None);
        let opener = Probe::new();
        let nursery = entered_as(Kind::Nursery, Some(&root), Some(&opener.waker()));
        let task = Probe::new();

        let canceller = {
            let nursery = nursery.clone();
            thread::spawn(move || Node::cancel(&nursery, explicit()))
        };
        let child = spawned_under(&nursery, &task);
        let first_poll_start = child.settled_word();
        let saw_cancelled = child.is_effective();
        canceller.join().unwrap();

        assert!(nursery.is_effective() && settled(&nursery));
        assert_eq!(opener.wakes.get(), 1, "the cancel wakes the opener once");
        assert!(child.is_effective(), "a child of a cancelled nursery is cancelled (4.7)");
        assert!(settled(&child), "and its cancellation settles");
        // Reached: at its first cancel point, or by a wake-up that gets it polled again.
        assert!(saw_cancelled || task.wakes.get() == 1, "the child missed the cancel");
        assert!(task.wakes.get() <= 1);
        if Node::word_is_settled_cancel(first_poll_start) {
            assert!(saw_cancelled, "a poll that starts settled sees the cancel");
        }
        assert!(owns_cancellation_of(&nursery, &child), "the nursery owns it: stripped (4.4)");
        assert_eq!(Arc::strong_count(&child), 2, "linked once, under the nursery");
        close_all(&[&child]);
        assert_eq!(Arc::strong_count(&child), 1, "the closed root is unlinked");
        assert_eq!(task.dropped.get(), 1, "no waker is left registered");
        close_all(&[&nursery, &root]);
        assert_eq!(opener.dropped.get(), 1);
    });
}

// ---- 7. `started()` moving a child racing a cancel --------------------------------------------

/// `Nursery::start` in the tree: the caller's scope `C` (under an uncancelled root) holds the
/// pending start's node `S`, and the child's task root `R` hangs under `S`; the target nursery
/// `N` is a sibling of `C`. Another thread moves `R` under `N` (`TaskStatus::started`, which
/// relinks) while the main thread cancels `C` (the old place) or `N` (the new one). Then the
/// `start` returns (`S` closes) and `C` is cancelled (again): after the move, it must not
/// reach `R`.
fn started_racing_cancel(cancel_new_parent: bool) {
    loom::model(move || {
        let root = entered(None, None);
        let caller = Probe::new();
        let task = Probe::new();
        let (scope, start) = {
            let caller_waker = caller.waker();
            let scope = entered(Some(&root), Some(&caller_waker));
            (scope.clone(), entered_as(Kind::Start, Some(&scope), Some(&caller_waker)))
        };
        let nursery = entered_as(Kind::Nursery, Some(&root), None);
        let child = spawned_under(&start, &task);

        let mover = {
            let (child, nursery) = (child.clone(), nursery.clone());
            thread::spawn(move || Node::relink(&child, Some(&nursery)))
        };
        Node::cancel(if cancel_new_parent { &nursery } else { &scope }, explicit());
        assert!(!may_drop_now(&scope), "a pending start is a guard in the caller (3.10)");
        mover.join().unwrap();

        assert_eq!(Arc::strong_count(&child), 2, "the child is linked in exactly one place");
        assert_eq!(nursery.is_effective(), cancel_new_parent);
        assert_eq!(child.is_effective(), cancel_new_parent, "cancelled iff its new place is");
        if cancel_new_parent {
            assert!(settled(&child));
            assert_eq!(task.wakes.get(), 1, "a cancel of the new parent wakes the child");
            assert!(owns_cancellation_of(&nursery, &child), "and is the nursery's (4.4)");
        } else {
            // It reached the child only if it came first; the move undid it.
            assert!(task.wakes.get() <= 1);
            assert!(Node::owner(&child).is_none());
        }

        close_all(&[&start]);
        assert_eq!(may_drop_now(&scope), !cancel_new_parent, "no guard left in the caller");
        Node::cancel(&scope, explicit());
        assert_eq!(child.is_effective(), cancel_new_parent, "the old place no longer reaches it");
        close_all(&[&child]);
        assert_eq!(Arc::strong_count(&child), 1, "no link to the child is left");
        assert_eq!(task.dropped.get(), 1, "no waker is left registered");
        close_all(&[&nursery, &scope, &root]);
        assert_eq!(caller.dropped.get(), 1);
    });
}

#[test]
fn started_racing_old_parent_cancel() {
    started_racing_cancel(false);
}

#[test]
fn started_racing_new_parent_cancel() {
    started_racing_cancel(true);
}

// ---- 8. a shield turned off racing a dropper's decision ---------------------------------------

/// One task: root `T` -> outer scope `O` (the dropper; cancelled and settled before this poll)
/// -> plain scope `X` -> shielded scope `I` -> scope `L`, where the inner future's cancel point
/// and a leaf under a foreign multiplexer sit. Every owner is the task's waker. Another thread
/// turns `I`'s shield off while the main thread runs one poll of `O` as `scope.rs` does: read
/// `O`'s word and guard mark (poll start), the inner future's cancel point at `L`, `Pending`,
/// then the slow path: settled at start, not woken during the poll (the self-wake test gets
/// one deferral under loom), `dropper_may_drop` with the mark. Returns whether that poll dropped and whether the cancel
/// point saw `Cancelled`; checks the rest.
fn shield_off_racing_dropper() -> (bool, bool) {
    let task_root = entered_as(Kind::TaskRoot, None, None);
    let task = Probe::new();
    let leaf = Probe::new();
    let task_waker = task.waker();
    let outer = entered(Some(&task_root), Some(&task_waker));
    let plain = entered(Some(&outer), Some(&task_waker));
    let shielded = Node::new(Kind::Scope);
    Node::set_shield(&shielded, true);
    Node::enter(&shielded, Some(&plain), Some(&task_waker));
    let inner = entered(Some(&shielded), Some(&task_waker));
    let slot = inner.add_waiter(leaf.waker());
    Node::cancel(&outer, explicit());
    assert!(settled(&outer) && !inner.is_effective());

    let toggler = {
        let shielded = shielded.clone();
        thread::spawn(move || Node::set_shield(&shielded, false))
    };
    let start = outer.settled_word();
    let guards = outer.guard_mark();
    let wakes_at_start = task.wakes.get();
    let saw_cancelled = inner.is_effective();
    // `Pending` (a foreign future would not return on `Cancelled` either).
    let woken = task.wakes.get() != wakes_at_start;
    let dropped = Node::word_is_settled_cancel(start) && !woken && outer.dropper_may_drop(guards);
    if dropped {
        // The shield only goes off: still on now means it was on at the decision.
        assert!(!shielded.is_shielded(), "dropped below a live shield (3.10 guard)");
    }
    toggler.join().unwrap();

    // 3.6: turning the shield off makes the outer cancellation visible below it, at once.
    for node in [&shielded, &inner] {
        assert!(node.is_effective() && settled(node));
    }
    assert_eq!(leaf.wakes.get(), 1, "the leaf below the lowered shield is woken");
    if !dropped {
        // The next poll starts settled, the cancel point sees `Cancelled`, and (its future
        // still `Pending`, not woken during the poll) the dropper drops: it ends on time.
        assert!(settled(&outer));
        assert!(inner.is_effective(), "the next poll's cancel point sees the cancellation");
        assert!(may_drop_now(&outer), "no guard is left: the dropper ends on time");
    }

    inner.remove_waiter(slot);
    drop(task_waker);
    close_all(&[&inner, &shielded, &plain, &outer, &task_root]);
    assert_eq!(leaf.dropped.get(), 1);
    assert_eq!(task.dropped.get(), 1, "no waker is left registered");
    (dropped, saw_cancelled)
}

/// What the protocol guarantees when a shield goes off mid-poll: never a drop while the shield
/// is on, and an end on time once it is off and the cancellation settled.
#[test]
fn shield_off_racing_dropper_decision() {
    loom::model(|| {
        shield_off_racing_dropper();
    });
}

/// The stronger reading of 3.10: a dropper drops only after a poll in which the inner future's
/// cancel points could report `Cancelled`, even when the shield goes off after the cancel
/// point passed (still shielded: not cancelled) and before `dropper_may_drop` (see the module
/// doc: the guard mark read at poll start tells the dropper a shield went down meanwhile).
#[test]
fn shield_off_mid_poll_leaves_a_full_poll() {
    loom::model(|| {
        let (dropped, saw_cancelled) = shield_off_racing_dropper();
        assert!(!dropped || saw_cancelled, "dropped although its cancel point never saw it");
    });
}

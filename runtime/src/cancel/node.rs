//! The status tree (DESIGN.md 3.3): one node per cancel scope, task root, nursery and pending
//! `start`, linked child to parent, and the effective-cancellation bit every cancel point reads.
//!
//! # The word
//!
//! Each node has one atomic word, read without a lock: `EFFECTIVE` (the node is effectively
//! cancelled: its own scope was cancelled, or its parent is effectively cancelled and it is not
//! shielded), `SETTLED` (the change that set `EFFECTIVE` has finished waking what it must wake,
//! see below), `INHERITED` (effective, and its parent is effective and it is not shielded: the
//! cancellation it sees is owned further up, 3.7) and a generation that changes with every
//! change of `EFFECTIVE`. A cancel point does one relaxed load of its current node's word
//! (`task::current`); a nursery classifying a child's `Err` reads two words (4.4).
//!
//! # Protocol (the `TREE` lock)
//!
//! Every change of the tree's shape (link, relink, close), of a node's own cancel, shield or
//! deadline, and of the live-`Cancelled` counts happens under one process-wide lock, `TREE`, so
//! a cancel never races a scope exit or a spawn half-way. Each node's fields sit in its own
//! mutex, taken only inside `TREE` except for two fields a leaf or a poll may touch alone: the
//! waiter list (leaves under foreign multiplexers, 3.5) and the owner waker (whoever re-polls
//! the node). Locks are never held while a waker runs.
//!
//! A change of `EFFECTIVE` (from `cancel`, a deadline, `set_shield`, a relink) goes:
//! 1. under `TREE`: recompute the subtree top-down, iteratively, descending only below nodes
//!    whose bit changed; for each node that became effective, store a new word (new
//!    generation, `EFFECTIVE`) and collect its waiters and owner;
//! 2. after unlocking: wake the collected waiters (leaves inside `FuturesUnordered` and the
//!    like, so their next poll reports `Cancelled`);
//! 3. settle: set `SETTLED` on each changed node whose word still has the generation stored in
//!    step 1 (a compare-exchange, so a later change is never settled by an earlier one); a
//!    node with no waiter and no child (most task roots) has nothing below it to wake, so
//!    step 1 stores it settled already;
//! 4. wake the collected owners (the tasks with a frame in the subtree, the caller's included).
//!
//! A dropper (3.10) drops its inner future only if the word it read when its poll began had
//! both bits: then every node of the subtree was marked and every leaf woken before that poll,
//! so the inner future had one full poll in which its cancel points could see `Cancelled`.
//!
//! # Live `Cancelled` values (3.8)
//!
//! A `Cancelled` records the node current when it was delivered, and that node counts it
//! (`live`). A node that closes without catching forwards: its count moves to its parent and
//! later clones and drops follow the `forward` link. A node that caught keeps no forward link:
//! values left alive are inert.
//!
//! Counting takes node locks only, not `TREE` (a cancelled child delivers, drops and
//! classifies its `Cancelled` without touching the global lock): a clone, drop or delivery
//! walks the `forward` chain hand over hand (one node lock at a time) and changes the count
//! of the first node without a `forward` link, under that node's lock. A closing node, under
//! its own lock (and `TREE`), adds its count to the end of its parent's chain *before* it
//! sets its own `forward` and releases its lock (child before ancestor: the lock order of the
//! whole tree). So a walker either changes the count while it is still here (and it moves
//! with the rest), or finds the link and moves on to where the count went: nothing is lost or
//! counted twice.

use std::borrow::Cow;
use std::task::Waker;

use super::CancelSource;
use crate::scheduler::Handle;
use crate::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use crate::sync::{arc_waker, Arc, Mutex, MutexGuard};
use crate::time::wheel::TimerKey;
use crate::time::Instant;

const EFFECTIVE: u64 = 1;
const SETTLED: u64 = 2;
const INHERITED: u64 = 4;
const GENERATION: u64 = 8;
/// The bits below the generation.
const FLAGS: u64 = EFFECTIVE | SETTLED | INHERITED;

/// Values of `Node::end`.
const OPEN: u32 = 0;
const CLOSED: u32 = 1;
const CAUGHT: u32 = 2;

/// What a node stands for; decides whether it is a guard (3.10) and where a task ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A cancel scope (also `shield`, `move_on_*`, `fail_*`): a guard while shielded and open.
    Scope,
    /// A task's root: its children in the tree belong to the task, its parent does not.
    TaskRoot,
    /// A nursery: always a guard while open.
    Nursery,
    /// A pending `start`: always a guard while open.
    #[allow(dead_code)] // nurseries arrive next (issue 4)
    Start,
}

/// A dropper's view, when its poll began, of the shields lowered below it (3.10): the count
/// of those begun, or one under way (then this poll is not a full one). `Unchecked`: the
/// node did not exist when the poll began (a task root created during it).
#[derive(Clone, Copy, Debug)]
pub(crate) enum GuardMark {
    At(u64),
    InFlight,
    Unchecked,
}

/// See [`Node::classify_child_end`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildEndClass {
    /// No live `Cancelled` counted at the root, or nothing effectively cancelled.
    NoCancellation,
    /// The child's own root or its nursery owns the cancellation.
    OwnedByTaskOrNursery,
    /// A scope enclosing the nursery owns it.
    OwnedAbove,
}

/// Why a node was cancelled: the first cause sticks (3.7).
#[derive(Clone, Debug)]
pub(crate) struct Cause {
    pub(crate) source: CancelSource,
    pub(crate) reason: Option<Cow<'static, str>>,
}

pub(crate) struct Node {
    word: AtomicU64,
    /// What it stands for (fixed at creation).
    kind: Kind,
    /// Entered with a deadline whose timer is not registered yet (read without a lock on
    /// every `Pending` of the scope; written under `TREE`).
    timer_wanted: AtomicBool,
    /// `OPEN`, or the verdict of `close` (`CLOSED`, `CAUGHT`): a second `close` (a task's
    /// root is closed by its nursery child, then by the harness) answers without a lock.
    end: AtomicU32,
    /// Shields lowered below this node (within its task): begun (under `TREE`, with the
    /// recompute) and done (after the wake-ups and the settle). A dropper's poll counts as a
    /// full poll only if none began during it and none was under way when it began (3.10).
    unshield_begun: AtomicU64,
    unshield_done: AtomicU64,
    state: Mutex<NodeState>,
}

/// What every node needs, kept small so that a task root (most nodes) is one small
/// allocation; the rest is in [`Cold`], allocated on first need.
struct NodeState {
    parent: Option<Arc<Node>>,
    forward: Option<Arc<Node>>,
    /// While effective without a cause of its own: the cause of the nearest cancelled scope
    /// above it (set by `recompute`), so delivering a `Cancelled` does not walk up.
    seen: Option<Arc<Cause>>,
    /// The waker that gets whoever polls this node polled again.
    owner: Option<Waker>,
    cold: Option<Box<Cold>>,
    live: u32,
    /// Index in the parent's `children` while linked.
    slot_in_parent: u32,
    /// Linked at least once (entered); a scope is entered only once (3.12).
    entered: bool,
    closed: bool,
    caught: bool,
    shielded: bool,
}

/// The fields a node has only if it is a scope's own (a cause, a deadline), has children or
/// leaves registered: a task root with neither never allocates them.
struct Cold {
    children: Slots<Arc<Node>>,
    waiters: Slots<Waker>,
    cause: Option<Cause>,
    /// A relative deadline, turned absolute on entry.
    timeout: Option<std::time::Duration>,
    deadline: Option<Instant>,
    timer: Option<(Handle, TimerKey)>,
}

impl Cold {
    const EMPTY: Cold = Cold {
        children: Slots::new(),
        waiters: Slots::new(),
        cause: None,
        timeout: None,
        deadline: None,
        timer: None,
    };
}

/// What a node without cold fields reads.
static NO_COLD: Cold = Cold::EMPTY;

/// A node still to recompute: with its parent's bit and the cause its parent passes down.
type Pending = (Arc<Node>, bool, Option<Arc<Cause>>);

impl NodeState {
    /// The cold fields, to read (empty ones if the node has none).
    fn c(&self) -> &Cold {
        self.cold.as_deref().unwrap_or(&NO_COLD)
    }

    /// The cold fields, to write (allocated now if the node has none).
    fn cm(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(|| Box::new(Cold::EMPTY))
    }

    /// The cause of the cancellation this node sees if it is effective: its own, or the one
    /// recorded from above.
    fn cause_seen(&self) -> Option<Cause> {
        match (&self.c().cause, &self.seen) {
            (Some(cause), _) => Some(cause.clone()),
            (None, Some(seen)) => Some(Cause::clone(seen)),
            (None, None) => None,
        }
    }

    /// Removes the node from its parent's children (the caller holds this node's lock, so
    /// this locks child before parent). Returns the parent link and the parent's reference to
    /// this node, to be dropped after the locks: never the last reference while the caller
    /// holds the node.
    fn unlink(&mut self) -> (Option<Arc<Node>>, Option<Arc<Node>>) {
        let Some(parent) = self.parent.take() else { return (None, None) };
        let me = parent.state.lock().cm().children.remove(self.slot_in_parent as usize);
        (Some(parent), me)
    }

    /// The cause an effective node's children see: its own, or the one it sees.
    fn cause_for_children(&self) -> Option<Arc<Cause>> {
        match &self.c().cause {
            Some(cause) => Some(Arc::new(cause.clone())),
            None => self.seen.clone(),
        }
    }
}

/// A small slab: stable indices, O(1) insert and remove.
struct Slots<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Slots<T> {
    const fn new() -> Slots<T> {
        Slots { entries: Vec::new(), free: Vec::new(), len: 0 }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(value);
                i
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<T> {
        let value = self.entries.get_mut(i)?.take();
        if value.is_some() {
            self.len -= 1;
            self.free.push(i);
        }
        value
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.entries.get_mut(i)?.as_mut()
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }

    fn take_all(&mut self) -> Vec<T> {
        self.free.clear();
        self.len = 0;
        std::mem::take(&mut self.entries).into_iter().flatten().collect()
    }
}

/// A child's index in its parent's `children`, stored in 32 bits.
fn slot_index(slot: usize) -> u32 {
    u32::try_from(slot).expect("more than 4 billion status nodes linked under one node")
}

/// A live count moved by `delta` (saturating: counts never go below zero).
fn add_signed(live: u32, delta: isize) -> u32 {
    let moved = i64::from(live).saturating_add(delta as i64);
    moved.clamp(0, i64::from(u32::MAX)) as u32
}

/// The process-wide tree lock (see the module doc).
fn tree() -> MutexGuard<'static, ()> {
    crate::sync::tree_lock()
}

/// Work to do after `TREE` is released: wake leaves, settle, wake owners, drop what must not
/// be dropped under a lock (wakers, timer registrations).
#[derive(Default)]
#[must_use = "wake-ups must be performed after the lock is released"]
pub(crate) struct Wakeups {
    leaves: Vec<Waker>,
    settle: Vec<(Arc<Node>, u64)>,
    owners: Vec<Waker>,
    timers: Vec<(Handle, TimerKey)>,
    drops: Vec<Arc<Node>>,
    /// Ancestors of a lowered shield, whose `unshield_done` is counted once the change has
    /// settled (before the owners are woken, so their next poll sees it done).
    unshielded: Vec<Arc<Node>>,
}

impl Wakeups {
    /// Steps 2-4 of the protocol; call with no lock held.
    pub(crate) fn run(self) {
        for leaf in self.leaves {
            leaf.wake();
        }
        for (node, word) in &self.settle {
            node.settle(*word);
        }
        for node in &self.unshielded {
            node.unshield_done.fetch_add(1, Release);
        }
        for owner in self.owners {
            owner.wake();
        }
        for (handle, key) in self.timers {
            handle.shared.driver.time.remove(key);
        }
        drop(self.drops);
    }
}

impl Node {
    pub(crate) fn new(kind: Kind) -> Arc<Node> {
        Arc::new(Node {
            word: AtomicU64::new(0),
            kind,
            timer_wanted: AtomicBool::new(false),
            end: AtomicU32::new(OPEN),
            unshield_begun: AtomicU64::new(0),
            unshield_done: AtomicU64::new(0),
            state: Mutex::new(NodeState {
                parent: None,
                forward: None,
                seen: None,
                owner: None,
                cold: None,
                live: 0,
                slot_in_parent: 0,
                entered: false,
                closed: false,
                caught: false,
                shielded: false,
            }),
        })
    }

    /// Step 3: sets `SETTLED` if the word still has the generation (and `EFFECTIVE`) stored
    /// in step 1 as `marked`; `INHERITED` may have changed meanwhile, it does not matter here.
    fn settle(&self, marked: u64) {
        let same = |word: u64| word & !(SETTLED | INHERITED) == marked & !(SETTLED | INHERITED);
        let mut word = self.word.load(Relaxed);
        while same(word) && word & SETTLED == 0 {
            match self.word.compare_exchange(word, word | SETTLED, AcqRel, Relaxed) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }

    /// [`guard_mark`](Self::guard_mark) when the word a dropper read at poll start is a
    /// settled cancellation (the only case in which it may drop); `Unchecked` otherwise, so a
    /// poll that cannot drop pays no extra loads.
    #[inline]
    pub(crate) fn guard_mark_if_settled(&self, start_word: u64) -> GuardMark {
        if Node::word_is_settled_cancel(start_word) {
            self.guard_mark()
        } else {
            GuardMark::Unchecked
        }
    }

    /// The cancel-point check (3.3): one relaxed load.
    #[inline]
    pub(crate) fn is_effective(&self) -> bool {
        self.word.load(Relaxed) & EFFECTIVE != 0
    }

    /// The word a dropper reads when its poll begins (see the module doc).
    #[inline]
    pub(crate) fn settled_word(&self) -> u64 {
        self.word.load(Acquire)
    }

    /// Whether a word read at poll start covers a finished cancellation.
    #[inline]
    pub(crate) fn word_is_settled_cancel(word: u64) -> bool {
        word & (EFFECTIVE | SETTLED) == EFFECTIVE | SETTLED
    }

    /// Gives a scope not yet entered a relative deadline (3.11).
    pub(crate) fn set_timeout(&self, timeout: std::time::Duration) {
        let _tree = tree();
        let mut s = self.state.lock();
        let cold = s.cm();
        cold.deadline = None;
        cold.timeout = Some(timeout);
    }

    // ---- linking ----------------------------------------------------------------------------

    /// Links a node under `parent` the first time it is polled (an entry: a scope's `run`, a
    /// task root at spawn). Turns a relative deadline absolute, registers the deadline timer,
    /// and cancels at once if the deadline has passed (3.11).
    ///
    /// # Panics
    /// If the node was entered before (3.12).
    pub(crate) fn enter(this: &Arc<Node>, parent: Option<&Arc<Node>>, owner: Option<&Waker>) {
        let mut wakeups = Wakeups::default();
        {
            let _tree = tree();
            let mut s = this.state.lock();
            assert!(
                !s.entered,
                "a CancelScope can be entered only once: create a new scope (or clone the \
                 future you wanted to run twice) instead of calling `run` again"
            );
            s.entered = true;
            s.owner = owner.cloned();
            // 3.11: a passed deadline cancels on entry; otherwise its timer is registered only
            // once the scope's future is suspended (`arm_deadline_if_wanted`): a scope around
            // an operation that completes at once never touches the timers.
            if let Some(cold) = s.cold.as_deref_mut() {
                if let Some(timeout) = cold.timeout.take() {
                    cold.deadline = Some(super::scope::clock_now() + timeout);
                    if timeout.is_zero() && cold.cause.is_none() {
                        cold.cause = Some(Cause { source: CancelSource::Deadline, reason: None });
                    }
                } else if let Some(deadline) = cold.deadline {
                    if cold.cause.is_none() && deadline <= super::scope::clock_now() {
                        cold.cause = Some(Cause { source: CancelSource::Deadline, reason: None });
                    }
                }
                if cold.deadline.is_some() && cold.cause.is_none() {
                    this.timer_wanted.store(true, Relaxed);
                }
            }
            drop(s);
            Node::attach(this, parent);
            Node::recompute(this, &mut wakeups);
        }
        wakeups.run();
    }

    /// Creates the node of a lazy deadline scope (`task::LazyScope`) entered under `parent`:
    /// like `new` + a deadline + `enter`, with the node's fields written before anyone else can
    /// see it. Its deadline timer is registered when its future is first suspended; a deadline
    /// already passed cancels it at once.
    pub(crate) fn enter_deadline_scope(
        deadline: Instant,
        parent: Option<&Arc<Node>>,
        owner: &Waker,
    ) -> Arc<Node> {
        let node = Node::new(Kind::Scope);
        {
            let mut s = node.state.lock();
            s.entered = true;
            s.owner = Some(owner.clone());
            let cold = s.cm();
            cold.deadline = Some(deadline);
            if deadline <= super::scope::clock_now() {
                cold.cause = Some(Cause { source: CancelSource::Deadline, reason: None });
            } else {
                node.timer_wanted.store(true, Relaxed);
            }
        }
        let mut wakeups = Wakeups::default();
        {
            let _tree = tree();
            Node::attach(&node, parent);
            Node::recompute(&node, &mut wakeups);
        }
        wakeups.run();
        node
    }

    /// Creates a task's root node, entered under `parent` (a nursery's node; `None` for a
    /// task spawned on its own), with `owner` (the task's waker) set before anyone can see it.
    ///
    /// Without `TREE` (the spawn path of every nursery child): the root is fresh, so it is
    /// linked under the parent's lock alone, and its bit is taken from the parent's word read
    /// under that lock. A recompute of the parent (under `TREE`) writes the parent's word and
    /// reads its children under the same lock, so either it sees the new child and recomputes
    /// it, or the child was linked after it and read the new word. A root linked under a
    /// cancelled parent is settled at once: nothing is registered with it yet, and its task's
    /// first poll (not queued yet) sees the bit. Locking the child while holding the parent
    /// (against the usual child-before-parent order) cannot deadlock: until the parent's lock
    /// is released nobody else can reach the child.
    pub(crate) fn enter_task_root(parent: Option<&Arc<Node>>, owner: Option<&Waker>) -> Arc<Node> {
        let node = Node::new(Kind::TaskRoot);
        {
            let mut s = node.state.lock();
            s.entered = true;
            s.owner = owner.cloned();
        }
        let Some(parent) = parent else { return node };
        let mut p = parent.state.lock();
        let slot = p.cm().children.insert(node.clone());
        let seen = if parent.is_effective() {
            node.word.store(GENERATION | EFFECTIVE | INHERITED | SETTLED, Release);
            p.cause_for_children()
        } else {
            None
        };
        {
            let mut s = node.state.lock();
            s.parent = Some(parent.clone());
            s.slot_in_parent = slot_index(slot);
            s.seen = seen;
        }
        drop(p);
        node
    }

    /// Status follows the poll (3.4): the node is being polled under a different parent than
    /// the one it is linked to.
    pub(crate) fn relink(this: &Arc<Node>, parent: Option<&Arc<Node>>) {
        let mut wakeups = Wakeups::default();
        {
            let _tree = tree();
            if this.state.lock().closed {
                return;
            }
            if let Some(old) = this.detach() {
                wakeups.drops.push(old);
            }
            Node::attach(this, parent);
            Node::recompute(this, &mut wakeups);
        }
        wakeups.run();
    }

    /// Under `TREE`: adds `self` to `parent`'s children.
    fn attach(this: &Arc<Node>, parent: Option<&Arc<Node>>) {
        let mut s = this.state.lock();
        if let Some(parent) = parent {
            let slot = parent.state.lock().cm().children.insert(this.clone());
            s.parent = Some(parent.clone());
            s.slot_in_parent = slot_index(slot);
        }
    }

    /// Under `TREE`: removes `self` from its parent's children; returns the parent.
    fn detach(&self) -> Option<Arc<Node>> {
        let (parent, me) = self.state.lock().unlink();
        drop(me);
        parent
    }

    /// Records the waker that re-polls this node (3.2: cancel wakes every task with a frame in
    /// the subtree). Cheap when unchanged.
    pub(crate) fn set_owner(&self, waker: &Waker) {
        let mut s = self.state.lock();
        match &s.owner {
            Some(w) if w.will_wake(waker) => {}
            _ => {
                let old = s.owner.replace(waker.clone());
                drop(s);
                drop(old);
            }
        }
    }

    // ---- cancel, shield, deadline -------------------------------------------------------------

    /// Cancels the node's own scope (3.2): idempotent, the first cause sticks. On a closed node
    /// it only records `cancel_called` (3.12).
    pub(crate) fn cancel(this: &Arc<Node>, cause: Cause) {
        let mut wakeups = Wakeups::default();
        {
            let _tree = tree();
            let mut s = this.state.lock();
            if s.c().cause.is_some() {
                return;
            }
            s.cm().cause = Some(cause);
            let closed = s.closed;
            drop(s);
            if !closed {
                Node::recompute(this, &mut wakeups);
            }
        }
        wakeups.run();
    }

    pub(crate) fn set_shield(this: &Arc<Node>, shielded: bool) {
        let mut wakeups = Wakeups::default();
        {
            let _tree = tree();
            let mut s = this.state.lock();
            if s.shielded == shielded {
                return;
            }
            s.shielded = shielded;
            let live = s.entered && !s.closed;
            let parent = s.parent.clone();
            drop(s);
            if live {
                Node::recompute(this, &mut wakeups);
                if !shielded {
                    Node::begin_unshield(parent, &mut wakeups);
                }
            }
        }
        wakeups.run();
    }

    /// Under `TREE`: a shield below `from` (inclusive) is being lowered: a guard may vanish in
    /// the middle of a dropper's poll, and the code it protected may not have seen the
    /// cancellation yet. Marks it on every ancestor up to the task's root (droppers outside
    /// the task stop at a nursery, a guard, anyway), and wakes their owners once it settled,
    /// so a dropper that let one poll go by for it is polled again.
    fn begin_unshield(from: Option<Arc<Node>>, wakeups: &mut Wakeups) {
        let mut next = from;
        while let Some(node) = next {
            node.unshield_begun.fetch_add(1, Release);
            let s = node.state.lock();
            wakeups.owners.extend(s.owner.iter().cloned());
            next = if node.kind == Kind::TaskRoot { None } else { s.parent.clone() };
            drop(s);
            wakeups.unshielded.push(node);
        }
    }

    /// What a dropper sees of the shields below it as its poll begins (see `unshield_begun`).
    pub(crate) fn guard_mark(&self) -> GuardMark {
        let done = self.unshield_done.load(Acquire);
        let begun = self.unshield_begun.load(Acquire);
        if begun == done {
            GuardMark::At(begun)
        } else {
            GuardMark::InFlight
        }
    }

    /// Moves the deadline (3.11): takes effect at once on an entered scope; a deadline that has
    /// passed cancels. Before entry it replaces a relative deadline too.
    pub(crate) fn set_deadline(this: &Arc<Node>, deadline: Option<Instant>) {
        let mut wakeups = Wakeups::default();
        {
            let _tree = tree();
            let mut s = this.state.lock();
            let cold = s.cm();
            cold.timeout = None;
            cold.deadline = deadline;
            let live = s.entered && !s.closed;
            drop(s);
            if live {
                this.timer_wanted.store(false, Relaxed);
                Node::arm_deadline(this, &mut wakeups);
                Node::recompute(this, &mut wakeups);
            }
        }
        wakeups.run();
    }

    /// Under `TREE`, on an entered node: (re)registers the deadline timer, or records the
    /// cancel if the deadline has passed. The caller recomputes.
    fn arm_deadline(this: &Arc<Node>, wakeups: &mut Wakeups) {
        let mut s = this.state.lock();
        let Some(cold) = s.cold.as_deref_mut() else { return };
        wakeups.timers.extend(cold.timer.take());
        let Some(deadline) = cold.deadline else { return };
        if cold.cause.is_some() {
            return;
        }
        if deadline <= super::scope::clock_now() {
            cold.cause = Some(Cause { source: CancelSource::Deadline, reason: None });
            return;
        }
        if deadline.as_nanos() == u64::MAX {
            return; // a saturated deadline never fires
        }
        drop(s);
        let timer =
            super::scope::register_deadline(deadline, arc_waker(DeadlineWake(this.clone())));
        this.state.lock().cm().timer = timer;
    }

    /// The scope's future is about to return `Pending`: registers its deadline timer if entry
    /// left that for now (cheap when there is nothing to do).
    #[inline]
    pub(crate) fn arm_deadline_if_wanted(this: &Arc<Node>) {
        if this.timer_wanted.load(Relaxed) {
            Node::arm_wanted_deadline(this);
        }
    }

    #[cold]
    fn arm_wanted_deadline(this: &Arc<Node>) {
        let mut wakeups = Wakeups::default();
        {
            let _tree = tree();
            if !this.timer_wanted.swap(false, Relaxed) {
                return;
            }
            let s = this.state.lock();
            let live = s.entered && !s.closed && s.c().timer.is_none();
            drop(s);
            if live {
                Node::arm_deadline(this, &mut wakeups);
                Node::recompute(this, &mut wakeups);
            }
        }
        wakeups.run();
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        let _tree = tree();
        self.state.lock().c().deadline
    }

    pub(crate) fn is_shielded(&self) -> bool {
        let _tree = tree();
        self.state.lock().shielded
    }

    pub(crate) fn cancel_called(&self) -> bool {
        let _tree = tree();
        self.state.lock().c().cause.is_some()
    }

    pub(crate) fn cancelled_caught(&self) -> bool {
        let _tree = tree();
        self.state.lock().caught
    }

    /// Under `TREE`: step 1 of the protocol for the subtree of `self`. Iterative; the stack is
    /// allocated only if some node has children to visit.
    fn recompute(this: &Arc<Node>, wakeups: &mut Wakeups) {
        let (parent_effective, parent_cause) = {
            let s = this.state.lock();
            match &s.parent {
                Some(parent) if parent.is_effective() => {
                    (true, parent.state.lock().cause_for_children())
                }
                _ => (false, None),
            }
        };
        let mut stack = Vec::new();
        Node::recompute_one(this, parent_effective, parent_cause, true, &mut stack, wakeups);
        while let Some((node, parent_effective, parent_cause)) = stack.pop() {
            Node::recompute_one(&node, parent_effective, parent_cause, false, &mut stack, wakeups);
        }
    }

    /// Under `TREE`: recomputes one node's bit (and the cause it sees); pushes its children if
    /// either changed (or if `force_descend`: the node the change started at).
    fn recompute_one(
        node: &Arc<Node>,
        parent_effective: bool,
        parent_cause: Option<Arc<Cause>>,
        force_descend: bool,
        stack: &mut Vec<Pending>,
        wakeups: &mut Wakeups,
    ) {
        let mut s = node.state.lock();
        let own_cause = s.c().cause.is_some();
        let effective = own_cause || (parent_effective && !s.shielded);
        let inherited = if effective && parent_effective && !s.shielded { INHERITED } else { 0 };
        let seen = if effective && !own_cause { parent_cause } else { None };
        let seen_changed = match (&s.seen, &seen) {
            (Some(old), Some(new)) => !Arc::ptr_eq(old, new),
            (None, None) => false,
            _ => true,
        };
        if seen_changed {
            s.seen = seen;
        }
        let mut old = node.word.load(Relaxed);
        let changed = (old & EFFECTIVE != 0) != effective;
        // A node with no waiter and no child has nothing to wake before it is settled (step
        // 3): it is stored settled at once (a leaf registering later takes this lock first,
        // then re-checks the bit). Its owner is still woken in step 4.
        let settled_now =
            if s.c().waiters.is_empty() && s.c().children.is_empty() { SETTLED } else { 0 };
        // Read-modify-writes, not plain stores: a settle (step 3, outside `TREE`) may race
        // them; only `SETTLED` can change under us.
        if changed {
            let new = loop {
                let generation = (old & !FLAGS) + GENERATION;
                let new =
                    generation | inherited | if effective { EFFECTIVE | settled_now } else { 0 };
                match node.word.compare_exchange(old, new, Release, Relaxed) {
                    Ok(_) => break new,
                    Err(current) => old = current,
                }
            };
            if effective {
                wakeups.leaves.extend(s.c().waiters.iter().cloned());
                wakeups.owners.extend(s.owner.iter().cloned());
                if settled_now == 0 {
                    wakeups.settle.push((node.clone(), new));
                }
            }
        } else if old & INHERITED != inherited {
            // Same bit, another owner (a shield toggled, the parent cancelled too): no wake-up.
            while let Err(current) =
                node.word.compare_exchange(old, (old & !INHERITED) | inherited, Release, Relaxed)
            {
                old = current;
            }
        }
        if (changed || force_descend || seen_changed) && !s.c().children.is_empty() {
            let cause = if effective { s.cause_for_children() } else { None };
            let children = s.c().children.iter();
            stack.extend(children.map(|child| (child.clone(), effective, cause.clone())));
        }
    }

    // ---- closing ------------------------------------------------------------------------------

    /// Whether this node owns its cancellation (3.7): effectively cancelled, and shielded or
    /// its parent is not effectively cancelled. Under `TREE`.
    fn owns(&self, s: &NodeState) -> bool {
        self.is_effective() && (s.shielded || !s.parent.as_ref().is_some_and(|p| p.is_effective()))
    }

    /// A dropper's slow-path decision (3.10), after a `Pending` poll that began with a settled
    /// cancellation: it drops iff it owns the cancellation (a task root: always, it is the
    /// outermost dropper of its task) and no guard is live below it within the task.
    pub(crate) fn dropper_may_drop(&self, mark: GuardMark) -> bool {
        let _tree = tree();
        match mark {
            GuardMark::InFlight => return false,
            GuardMark::At(begun) if self.unshield_begun.load(Relaxed) != begun => return false,
            _ => {}
        }
        let s = self.state.lock();
        // A task root and a nursery drop whenever they are effectively cancelled (3.10); a
        // scope only when it owns the cancellation (an outer dropper will catch otherwise).
        // Still cancelled *now*: the settled word read when the poll began may be stale (a
        // `start` child that called `started` in this poll moved under a nursery that is not
        // cancelled; a shield went up).
        let owns = (matches!(self.kind, Kind::TaskRoot | Kind::Nursery) && self.is_effective())
            || self.owns(&s);
        if !owns {
            return false;
        }
        let mut stack: Vec<Arc<Node>> = s.c().children.iter().cloned().collect();
        drop(s);
        while let Some(node) = stack.pop() {
            let s = node.state.lock();
            let guard = match node.kind {
                Kind::TaskRoot => continue, // another task: not part of this one's subtree
                Kind::Scope => s.shielded,
                Kind::Nursery | Kind::Start => true,
            };
            if guard {
                return false;
            }
            stack.extend(s.c().children.iter().cloned());
        }
        true
    }

    /// Closes the node (scope exit, task end, drop). `dropped`: its inner future was dropped
    /// by its dropper. Returns whether it caught (3.9): it owns the cancellation and it dropped
    /// the inner future or a `Cancelled` delivered inside it is still alive. A node that does
    /// not catch forwards its live count to its parent (3.8).
    pub(crate) fn close(this: &Arc<Node>, dropped: bool) -> bool {
        match this.end.load(Acquire) {
            OPEN => {}
            end => return end == CAUGHT,
        }
        // Released after the locks: a waker's or a node's drop may run arbitrary code, and
        // removing the timer takes the timer lock.
        let (caught, timer, owner, waiters, parent);
        {
            // A task root closes without `TREE`: it is only ever closed and relinked by its own
            // task (in turn), and its links change under its and its parent's locks; a
            // recompute that reaches it while it closes finds nothing left to wake.
            let _tree = (this.kind != Kind::TaskRoot).then(tree);
            let mut s = this.state.lock();
            if s.closed {
                return s.caught;
            }
            caught = this.owns(&s) && (dropped || s.live > 0);
            s.closed = true;
            s.caught = caught;
            this.end.store(if caught { CAUGHT } else { CLOSED }, Release);
            timer = s.cold.as_deref_mut().and_then(|cold| cold.timer.take());
            owner = s.owner.take();
            // Leftover leaf wakers are dropped, not woken.
            waiters = s.cold.as_deref_mut().map(|cold| cold.waiters.take_all());
            let live = std::mem::take(&mut s.live);
            // Unlink from the parent under this node's lock (child before parent).
            let (link, me) = s.unlink();
            parent = match link {
                Some(link) if !caught => {
                    // Count first, link second (see the module doc).
                    if live > 0 {
                        Node::add_live(&link, live as isize);
                    }
                    // Later clones and drops of values counted here follow the link (3.8).
                    s.forward = Some(link);
                    None
                }
                link => link,
            };
            drop(s);
            drop(me);
            // Children still linked (a scope dropped around a running nursery cannot happen:
            // nurseries are guards; a task root's in-task nodes close before it) are left to
            // close themselves; they keep their parent link until then.
        }
        if let Some((handle, key)) = timer {
            handle.shared.driver.time.remove(key);
        }
        drop((owner, waiters, parent));
        caught
    }

    // ---- leaves under foreign multiplexers (3.5) ----------------------------------------------

    /// Registers a leaf's waker; then the caller re-checks [`Node::is_effective`].
    pub(crate) fn add_waiter(&self, waker: Waker) -> usize {
        let mut s = self.state.lock();
        let slot = s.cm().waiters.insert(waker);
        drop(s);
        // Pairs with the store in `recompute`, which happens under this node's lock too.
        slot
    }

    /// Replaces a registered leaf waker if it changed.
    pub(crate) fn update_waiter(&self, slot: usize, waker: &Waker) {
        let mut s = self.state.lock();
        if let Some(w) = s.cm().waiters.get_mut(slot) {
            if !w.will_wake(waker) {
                let old = std::mem::replace(w, waker.clone());
                drop(s);
                drop(old);
            }
        }
    }

    pub(crate) fn remove_waiter(&self, slot: usize) {
        let old = self.state.lock().cm().waiters.remove(slot);
        drop(old);
    }

    // ---- live `Cancelled` values (3.8) --------------------------------------------------------

    /// A `Cancelled` is being delivered at this node: counts it and returns the cause of the
    /// cancellation it sees (from the nearest cancelled scope up to the nearest shield).
    pub(crate) fn deliver(this: &Arc<Node>) -> Cause {
        {
            // The common case, under one lock: the node counts its own values (no `forward`
            // link: open) and is effective.
            let mut s = this.state.lock();
            if s.forward.is_none() {
                if let Some(cause) = s.cause_seen() {
                    s.live += 1;
                    return cause;
                }
            }
        }
        Node::add_live(this, 1);
        if let Some(cause) = this.state.lock().cause_seen() {
            return cause;
        }
        // Not effective (a `Cancelled` delivered by hand): the nearest cancelled scope above.
        let mut node = this.clone();
        loop {
            let s = node.state.lock();
            if let Some(cause) = &s.c().cause {
                return cause.clone();
            }
            if s.shielded {
                break;
            }
            let Some(parent) = s.parent.clone() else { break };
            drop(s);
            node = parent;
        }
        Cause { source: CancelSource::Explicit, reason: None }
    }

    /// Adds `delta` to the live count of the node that counts values recorded at `this`: the
    /// end of its `forward` chain, walked hand over hand (see the module doc). No `TREE`; may
    /// be called with the lock of a descendant of `this` held (child before ancestor).
    fn add_live(this: &Arc<Node>, delta: isize) {
        let mut next = {
            let mut s = this.state.lock();
            match s.forward.clone() {
                None => {
                    s.live = add_signed(s.live, delta);
                    return;
                }
                Some(next) => next,
            }
        };
        loop {
            let mut s = next.state.lock();
            match s.forward.clone() {
                None => {
                    s.live = add_signed(s.live, delta);
                    return;
                }
                Some(further) => {
                    drop(s);
                    next = further;
                }
            }
        }
    }

    /// The node that owns the cancellation seen at `this` (3.7): the outermost effectively
    /// cancelled node up to the nearest shield. `None` if `this` is not effectively cancelled.
    #[cfg(all(test, loom))]
    pub(crate) fn owner(this: &Arc<Node>) -> Option<Arc<Node>> {
        let _tree = tree();
        Node::owner_locked(this)
    }

    /// How a child task's `Err` is classified (4.4), from its root `root`, linked under its
    /// nursery's node `nursery`: whether a `Cancelled` is counted live at the root (an open
    /// node: nothing is forwarded from it), and if so who owns the cancellation. Reads the
    /// root's lock and two words; no walk, no `TREE`. A change racing the classification
    /// gives either answer, as it would a moment earlier or later.
    pub(crate) fn classify_child_end(root: &Arc<Node>, nursery: &Arc<Node>) -> ChildEndClass {
        if root.state.lock().live == 0 {
            return ChildEndClass::NoCancellation;
        }
        let root_word = root.word.load(Acquire);
        if root_word & EFFECTIVE == 0 {
            return ChildEndClass::NoCancellation;
        }
        if root_word & INHERITED == 0 || nursery.word.load(Acquire) & INHERITED == 0 {
            ChildEndClass::OwnedByTaskOrNursery
        } else {
            ChildEndClass::OwnedAbove
        }
    }

    /// See [`Node::owner`]; one node lock at a time.
    #[cfg(all(test, loom))]
    fn owner_locked(this: &Arc<Node>) -> Option<Arc<Node>> {
        if !this.is_effective() {
            return None;
        }
        let mut node = this.clone();
        loop {
            let s = node.state.lock();
            if s.shielded {
                drop(s);
                return Some(node);
            }
            match s.parent.clone() {
                Some(parent) if parent.is_effective() => {
                    drop(s);
                    node = parent;
                }
                _ => {
                    drop(s);
                    return Some(node);
                }
            }
        }
    }

    /// A live `Cancelled` recorded at `self` was cloned (`+1`) or dropped (`-1`).
    pub(crate) fn adjust_live(this: &Arc<Node>, up: bool) {
        Node::add_live(this, if up { 1 } else { -1 });
    }

    /// Live `Cancelled` values counted at this node (the loom models check the counts).
    #[cfg(all(test, loom))]
    pub(crate) fn live(&self) -> usize {
        let _tree = tree();
        self.state.lock().live as usize
    }

    /// The earliest deadline from this node up to the nearest shield, or a past instant if the
    /// node is effectively cancelled (3.11).
    pub(crate) fn effective_deadline(this: &Arc<Node>) -> Option<Instant> {
        if this.is_effective() {
            return Some(Instant::from_nanos(0));
        }
        let _tree = tree();
        let mut best: Option<Instant> = None;
        let mut node = this.clone();
        loop {
            let s = node.state.lock();
            if let Some(d) = s.c().deadline {
                best = Some(best.map_or(d, |b| b.min(d)));
            }
            if s.shielded {
                break;
            }
            let Some(parent) = s.parent.clone() else { break };
            drop(s);
            node = parent;
        }
        best
    }
}

/// The waker a deadline timer holds: firing cancels the node.
struct DeadlineWake(Arc<Node>);

// `Wake` is defined on `std::sync::Arc`; see `sync::arc_waker` for why that is fine.
#[allow(clippy::disallowed_types)]
impl std::task::Wake for DeadlineWake {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        Node::cancel(&self.0, Cause { source: CancelSource::Deadline, reason: None });
    }
}

#[cfg(all(test, not(loom)))]
mod size_budget {
    use super::Node;

    /// Every task that waits gets a root node: keep it in the allocator's small classes (with
    /// glibc, chunks up to 128 bytes: the node, the `Arc`'s two counts and the chunk header),
    /// which are freed without taking an arena lock when another worker frees them.
    #[test]
    fn a_status_node_fits_a_small_allocation() {
        let size = std::mem::size_of::<Node>();
        assert!(size <= 104, "a status node grew to {size} bytes (budget: 104)");
    }
}

//! `CancelScope` and the timeouts built on it: `shield`, `move_on_after`/`move_on_at`,
//! `fail_after`/`fail_at`, `current_effective_deadline` (DESIGN.md 3 and 5).
//!
//! A scope is a status node ([`super::node`]) plus the future that runs inside it. On its first
//! poll the future links the node under the current node (the task's root, or the scope or
//! nursery being polled around it) and turns a relative deadline absolute; on every poll it
//! makes its node current around the inner poll, and relinks if it is polled under a different
//! parent than before (3.4). It is a *dropper* (3.10): when it owns a settled cancellation and
//! its inner future returns `Pending` after a full poll, with no guard live below it, it drops
//! the inner future at once, so a timeout ends on time around any future.
//!
//! `move_on_*` and `fail_*` scopes are *lazy*: nobody holds a handle to them, so until their
//! future first suspends only their parent can cancel them. Their first poll runs under a
//! `task::LazyScope` instead of a node, and a node is created only if something inside needs
//! one (a nested scope or nursery, a delivered `Cancelled`, a leaf registering, a deadline
//! query) or when the first poll returns `Pending`. A timeout around an operation that completes
//! at once costs a clock read and a few thread-local writes: no allocation, no lock, no timer.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;

use super::node::{Cause, Kind, Node};
use super::CancelSource;
use crate::budget;
use crate::context;
use crate::scheduler::Handle;
use crate::sync::Arc;
use crate::task;
use crate::time::wheel::TimerKey;
use crate::time::Instant;
use crate::tuning::MAX_SELF_WAKES_WHILE_CANCELLED;

/// A region of code that can be cancelled as a unit, explicitly or by a deadline (Trio's
/// `CancelScope`).
///
/// Run a future inside it with [`run`](Self::run); cancelling the scope makes every cancel
/// point inside it (sleeps, I/O, joins, [`checkpoint`](crate::checkpoint)) return
/// `Err(Cancelled)`, again and again, until the future finishes. When the cancellation reaches
/// the scope's exit, the scope *catches* it: `run` returns `None`. A scope whose inner future
/// is suspended and cancelled does not wait for it: it drops it at its next `Pending` (unless
/// something inside is shielded, or a nursery is running there), so a timeout always ends on
/// time.
///
/// Handles are cheap clones of one scope: cancel it from anywhere (another task, another
/// thread). A scope is entered once; a second `run` panics.
///
/// ```
/// use std::time::Duration;
/// use trellis_runtime::{time::sleep, CancelScope};
///
/// trellis_runtime::run(async {
///     let scope = CancelScope::with_timeout(Duration::from_millis(10));
///     let out = scope.run(async { sleep(Duration::from_secs(3600)).await }).await;
///     assert!(out.is_none() && scope.cancelled_caught());
/// });
/// ```
#[derive(Clone)]
pub struct CancelScope {
    node: Arc<Node>,
}

impl Default for CancelScope {
    fn default() -> CancelScope {
        CancelScope::new()
    }
}

impl CancelScope {
    /// A scope with no deadline, not shielded.
    pub fn new() -> CancelScope {
        CancelScope { node: Node::new(Kind::Scope) }
    }

    /// A handle on an existing node (a nursery's scope).
    pub(crate) fn from_node(node: Arc<Node>) -> CancelScope {
        CancelScope { node }
    }

    /// A scope cancelled when the runtime's clock reaches `deadline`.
    pub fn with_deadline(deadline: Instant) -> CancelScope {
        let scope = CancelScope::new();
        Node::set_deadline(&scope.node, Some(deadline));
        scope
    }

    /// A scope cancelled `timeout` after it is entered (its first poll).
    pub fn with_timeout(timeout: Duration) -> CancelScope {
        let scope = CancelScope::new();
        scope.node.set_timeout(timeout);
        scope
    }

    /// Makes the scope shielded: cancellation from outside does not reach inside (its own
    /// `cancel` and deadline still do). See [`set_shield`](Self::set_shield).
    pub fn shielded(self) -> CancelScope {
        Node::set_shield(&self.node, true);
        self
    }

    /// Runs `future` inside the scope: `Some(output)`, or `None` if the scope caught a
    /// cancellation (its inner future was dropped, or it finished carrying the `Cancelled`
    /// the scope's cancellation raised). The returned future owns a handle to the scope and
    /// borrows nothing from `self`.
    ///
    /// # Panics
    /// When first polled, if the scope was entered before (a scope is single use), or if the
    /// scope has a deadline and is polled outside a trellis runtime.
    pub fn run<F: Future>(&self, future: F) -> Run<F> {
        Run { inner: Some(future), entry: Entry::new(Some(self.clone()), None) }
    }

    /// Cancels the scope: from now on every cancel point inside it fails. Idempotent; callable
    /// from any thread; not a cancel point. On a scope that already exited it only sets
    /// [`cancel_called`](Self::cancel_called).
    pub fn cancel(&self) {
        Node::cancel(&self.node, Cause { source: CancelSource::Explicit, reason: None });
    }

    /// [`cancel`](Self::cancel), with a reason that the `Cancelled` errors show.
    pub fn cancel_with_reason(&self, reason: impl Into<Cow<'static, str>>) {
        Node::cancel(
            &self.node,
            Cause { source: CancelSource::Explicit, reason: Some(reason.into()) },
        );
    }

    /// Whether the scope itself was cancelled (explicitly or by its deadline).
    pub fn cancel_called(&self) -> bool {
        self.node.cancel_called()
    }

    /// Whether the scope caught a cancellation at its exit (its `run` returned `None`).
    pub fn cancelled_caught(&self) -> bool {
        self.node.cancelled_caught()
    }

    /// The absolute deadline, if any (`None` for a relative one not yet entered).
    pub fn deadline(&self) -> Option<Instant> {
        self.node.deadline()
    }

    /// Moves the deadline (or removes it); takes effect at once on a running scope. A
    /// deadline that has passed cancels; moving it later after it fired does not un-cancel.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        Node::set_deadline(&self.node, deadline);
    }

    /// Turns the shield on or off; turning it off makes a pending outer cancellation visible
    /// at once (and wakes what it reaches).
    pub fn set_shield(&self, shielded: bool) {
        Node::set_shield(&self.node, shielded);
    }

    /// Whether the scope is shielded.
    pub fn is_shielded(&self) -> bool {
        self.node.is_shielded()
    }
}

impl fmt::Debug for CancelScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelScope")
            .field("cancel_called", &self.cancel_called())
            .field("cancelled_caught", &self.cancelled_caught())
            .field("deadline", &self.deadline())
            .field("shielded", &self.is_shielded())
            .finish()
    }
}

pin_project! {
    /// The future of [`CancelScope::run`] (and of `move_on_*`).
    #[must_use = "futures do nothing unless awaited"]
    pub struct Run<F> {
        // Declared first: dropped before `entry` closes the node.
        #[pin]
        inner: Option<F>,
        entry: Entry,
    }
}

/// The scope's side of a `Run`: closes the node if the future is dropped before it finished.
struct Entry {
    /// The scope; `None` for a lazy deadline scope (a `move_on_*` / `fail_*`) until it needs a
    /// node (see `task::LazyScope`).
    scope: Option<CancelScope>,
    /// A lazy scope's deadline, until its first poll.
    lazy: Option<LazyDeadline>,
    /// Address of the node it is linked under (0: none), to notice a move (3.4).
    parent_addr: usize,
    entered: bool,
    closed: bool,
    /// `Pending` polls in a row, while cancelled, in which the inner future woke its own task.
    self_wakes: u8,
}

/// The deadline of a `move_on_*` / `fail_*` scope, before its first poll. (A timeout is kept
/// in nanoseconds, saturating at 584 years: a plain word, so the future moves cheaply.)
#[derive(Clone, Copy, Debug)]
enum LazyDeadline {
    AfterNanos(u64),
    At(Instant),
}

impl Entry {
    fn new(scope: Option<CancelScope>, lazy: Option<LazyDeadline>) -> Entry {
        Entry { scope, lazy, parent_addr: 0, entered: false, closed: false, self_wakes: 0 }
    }

    /// Takes over the node of a lazy scope once it has one, linked under the frame's node.
    fn adopt(&mut self, node: Arc<Node>) -> &Arc<Node> {
        self.entered = true;
        self.parent_addr = task::current_node_addr();
        &self.scope.insert(CancelScope::from_node(node)).node
    }

    /// Closes the node after the inner future returned: `Some(out)` unless the scope caught.
    fn finish<T>(&mut self, node: &Arc<Node>, out: T) -> Poll<Option<T>> {
        self.closed = true;
        if Node::close(node, false) {
            drop(out);
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(out))
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let (Some(scope), true, false) = (&self.scope, self.entered, self.closed) {
            Node::close(&scope.node, false);
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.scope, &self.lazy) {
            (Some(scope), _) => scope.fmt(f),
            (None, Some(lazy)) => f.debug_struct("CancelScope").field("deadline", lazy).finish(),
            (None, None) => f.write_str("CancelScope { finished without a node }"),
        }
    }
}

fn node_addr(node: &Arc<Node>) -> usize {
    &**node as *const Node as usize
}

impl<F: Future> Future for Run<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.project();
        let mut inner = this.inner;
        let entry = this.entry;
        assert!(!entry.closed, "a `CancelScope::run` future was polled after it completed");
        if let Some(lazy) = entry.lazy.take() {
            let now = clock_now();
            let deadline = match lazy {
                LazyDeadline::AfterNanos(timeout) => now + Duration::from_nanos(timeout),
                LazyDeadline::At(deadline) => deadline,
            };
            if deadline > now {
                return poll_lazy(inner, entry, deadline, cx);
            }
            // Passed already: a node that is cancelled on entry.
            entry.scope = Some(CancelScope::with_deadline(deadline));
        }
        let node = &entry.scope.as_ref().expect("a scope that is not lazy has a node").node;
        if !entry.entered {
            let parent = task::current_node();
            entry.parent_addr = parent.as_ref().map_or(0, node_addr);
            entry.entered = true;
            Node::enter(node, parent.as_ref(), Some(cx.waker()));
        } else {
            if task::current_node_addr() != entry.parent_addr {
                let parent = task::current_node();
                entry.parent_addr = parent.as_ref().map_or(0, node_addr);
                Node::relink(node, parent.as_ref());
            }
            node.set_owner(cx.waker());
        }
        let start = node.settled_word();
        let guards = node.guard_mark_if_settled(start);
        let polled = {
            let _current = task::NodeGuard::enter(node, cx.waker());
            inner
                .as_mut()
                .as_pin_mut()
                .expect("the inner future is present until completion")
                .poll(cx)
        };
        match polled {
            Poll::Ready(out) => {
                let node = node.clone();
                entry.finish(&node, out)
            }
            Poll::Pending => {
                Node::arm_deadline_if_wanted(node);
                if !Node::word_is_settled_cancel(start) || budget::pending_was_forced() {
                    return Poll::Pending;
                }
                if task::woken_during_poll() && entry.self_wakes < MAX_SELF_WAKES_WHILE_CANCELLED {
                    entry.self_wakes += 1;
                    return Poll::Pending;
                }
                if !node.dropper_may_drop(guards) {
                    return Poll::Pending;
                }
                let node = node.clone();
                inner.set(None);
                entry.closed = true;
                Node::close(&node, true);
                Poll::Ready(None)
            }
        }
    }
}

/// The first poll of a lazy deadline scope whose deadline has not passed: the inner future runs
/// under a `task::LazyScope`, which gets a node only if something inside needs one. An
/// operation that completes at once never touches the status tree or the timers. On `Pending`
/// the scope gets its node (if it has none yet) and its deadline timer. A first poll is never
/// a dropper's: the scope could not own a cancellation when it began.
#[inline]
fn poll_lazy<F: Future>(
    mut inner: Pin<&mut Option<F>>,
    entry: &mut Entry,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<Option<F::Output>> {
    let mut lazy = task::LazyScope::new(deadline);
    let polled = {
        let _current = task::LazyGuard::enter(&lazy, cx.waker());
        inner.as_mut().as_pin_mut().expect("the inner future is present until completion").poll(cx)
    };
    let materialized = lazy.take_node();
    match (polled, materialized) {
        (Poll::Ready(out), None) => {
            entry.closed = true;
            Poll::Ready(Some(out))
        }
        (Poll::Ready(out), Some(node)) => {
            let node = entry.adopt(node).clone();
            entry.finish(&node, out)
        }
        (Poll::Pending, materialized) => {
            let node = materialized.unwrap_or_else(|| {
                let parent = task::current_node();
                Node::enter_deadline_scope(deadline, parent.as_ref(), cx.waker())
            });
            Node::arm_deadline_if_wanted(entry.adopt(node));
            Poll::Pending
        }
    }
}

impl<F> fmt::Debug for Run<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run").field("scope", &self.entry).finish()
    }
}

/// Runs `future` shielded from cancellation coming from outside (Trio's shielded scope): for
/// cleanup that must finish, such as closing a connection after a `Cancelled`. Bound it with
/// its own timeout (`move_on_after` inside the shield) so it cannot hang. A shield stops
/// trellis cancellation only: dropping the future still drops what is inside.
pub fn shield<F: Future>(future: F) -> Shield<F> {
    Shield { run: CancelScope::new().shielded().run(future) }
}

pin_project! {
    /// The future of [`shield`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Shield<F> {
        #[pin]
        run: Run<F>,
    }
}

impl<F: Future> Future for Shield<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().run.poll(cx).map(|out| {
            // Nobody holds the scope, so it is never cancelled itself, and the shield keeps
            // outer cancellation away: it never catches.
            out.expect("a shield's anonymous scope cannot catch a cancellation")
        })
    }
}

impl<F> fmt::Debug for Shield<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Shield")
    }
}

/// Runs `future` for at most `timeout`: `Some(output)`, or `None` if the timeout cancelled
/// it (Trio's `move_on_after`). A scope with a relative deadline that starts counting when
/// first polled.
pub fn move_on_after<F: Future>(timeout: Duration, future: F) -> Run<F> {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    Run { inner: Some(future), entry: Entry::new(None, Some(LazyDeadline::AfterNanos(nanos))) }
}

/// Runs `future` until `deadline` at most: `Some(output)` or `None` (see [`move_on_after`]).
pub fn move_on_at<F: Future>(deadline: Instant, future: F) -> Run<F> {
    Run { inner: Some(future), entry: Entry::new(None, Some(LazyDeadline::At(deadline))) }
}

/// Runs `future` for at most `timeout`: `Ok(output)`, or `Err(TimedOut)` exactly when the
/// timeout's scope caught the cancellation (Trio's `fail_after`).
pub fn fail_after<F: Future>(timeout: Duration, future: F) -> FailAfter<F> {
    FailAfter { run: move_on_after(timeout, future) }
}

/// Runs `future` until `deadline` at most: `Ok(output)` or `Err(TimedOut)` (see [`fail_after`]).
pub fn fail_at<F: Future>(deadline: Instant, future: F) -> FailAfter<F> {
    FailAfter { run: move_on_at(deadline, future) }
}

pin_project! {
    /// The future of [`fail_after`] and [`fail_at`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct FailAfter<F> {
        #[pin]
        run: Run<F>,
    }
}

impl<F: Future> Future for FailAfter<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().run.poll(cx).map(|out| out.ok_or(TimedOut { _private: () }))
    }
}

impl<F> fmt::Debug for FailAfter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailAfter").field("scope", &self.run.entry).finish()
    }
}

/// The error of [`fail_after`] / [`fail_at`]: the deadline passed and the operation was
/// cancelled. Converts into `io::Error` of kind `TimedOut`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut {
    _private: (),
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out: the deadline passed before the operation finished")
    }
}

impl std::error::Error for TimedOut {}

impl From<TimedOut> for io::Error {
    fn from(t: TimedOut) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, t)
    }
}

/// The earliest deadline that applies to the calling code: the nearest one among its
/// enclosing scopes, up to the nearest shield. `None` if there is none; an instant in the past
/// if the calling code is already cancelled.
pub fn current_effective_deadline() -> Option<Instant> {
    if task::is_cancelled() {
        return Some(Instant::from_nanos(0));
    }
    task::current_node().and_then(|node| Node::effective_deadline(&node))
}

/// The clock deadlines are measured on: the current runtime's (real time outside one).
pub(super) fn clock_now() -> Instant {
    crate::time::now()
}

/// Registers the timer of a scope's deadline on the current runtime; `waker` cancels the scope.
///
/// # Panics
/// Outside a runtime: a deadline that nothing would fire must not pass silently.
pub(super) fn register_deadline(deadline: Instant, waker: Waker) -> Option<(Handle, TimerKey)> {
    let handle = context::with_handle(|h| h.cloned()).unwrap_or_else(|| {
        panic!(
            "a trellis cancel scope with a deadline was entered outside a trellis runtime: {}",
            context::NO_RUNTIME
        )
    });
    let registered = handle.shared.driver.time.insert(deadline, waker);
    if registered.wake_driver {
        handle.shared.driver.wake();
    }
    Some((handle, registered.key))
}

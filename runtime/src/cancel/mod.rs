//! Cancellation (DESIGN.md section 3): the `Cancelled` error and the cancel points' side of
//! it (`checkpoint()`, the `io::Error` bridge, leaves under foreign multiplexers), the status
//! tree (`node`), and cancel scopes with the timeouts built on them (`scope`).
//!
//! A cancel point asks [`Cancelled::for_current_task`]: one relaxed load of the current status
//! node's word (or of the task's root cancel bit when the task has no node yet). Only when it
//! is cancelled does it take the slow path, which counts the delivered `Cancelled` at the
//! current node (3.8).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::budget;
use crate::context;
use crate::sync::Arc;
use crate::task;

pub(crate) mod node;
pub(crate) mod scope;

#[cfg(all(test, loom))]
pub(crate) mod loom_models;

use node::{Cause, Node};

/// Why a cancellation happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelSource {
    /// Someone called `cancel()` (a scope's, or a task's `JoinHandle::cancel`).
    Explicit,
    /// A deadline passed.
    Deadline,
    /// A task in the same nursery failed; names it.
    Nursery {
        /// The failing task, as the nursery names it.
        failed_task: String,
    },
    /// The runtime is shutting down.
    Shutdown,
}

/// The error a cancel point returns when the calling code is cancelled.
///
/// It has no public constructor: only trellis creates it, at a cancel point. Propagate it
/// (with `?`) so the scope that was cancelled can catch it. While a `Cancelled` is alive it is
/// a propagating cancellation, even embedded in another error (`io::Error`, `anyhow::Error`,
/// your own enum): the scope that owns the cancellation catches when it sees one still alive
/// at its exit (DESIGN.md 3.8). So to report a *genuine* error raised during cleanup, drop the
/// `Cancelled` rather than embedding it; and do not stash it or send it to another task.
/// Converts into `io::Error` (kind `Other`, recognised by [`is_cancelled`]).
pub struct Cancelled {
    source: CancelSource,
    reason: Option<Cow<'static, str>>,
    /// The status node that counts this value (3.8); `None` for values outside the tree.
    node: Option<Arc<Node>>,
}

impl Clone for Cancelled {
    fn clone(&self) -> Cancelled {
        if let Some(node) = &self.node {
            Node::adjust_live(node, true);
        }
        Cancelled {
            source: self.source.clone(),
            reason: self.reason.clone(),
            node: self.node.clone(),
        }
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            Node::adjust_live(node, false);
        }
    }
}

impl Cancelled {
    pub(crate) fn new(source: CancelSource, reason: Option<Cow<'static, str>>) -> Cancelled {
        Cancelled { source, reason, node: None }
    }

    /// What caused the cancellation.
    pub fn source(&self) -> &CancelSource {
        &self.source
    }

    /// The reason string given to `cancel_with_reason`, if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The cancel-point check: `Some(Cancelled)` if the calling code is effectively cancelled.
    #[inline]
    pub(crate) fn for_current_task() -> Option<Cancelled> {
        if !task::is_cancelled() {
            return None;
        }
        Some(Cancelled::deliver())
    }

    /// Delivers a `Cancelled` at `node`, which counts it (3.8).
    pub(crate) fn deliver_at(node: &Arc<Node>) -> Cancelled {
        let cause = Node::deliver(node);
        Cancelled { source: cause.source, reason: cause.reason, node: Some(node.clone()) }
    }

    /// Delivers a `Cancelled` at the current node, which counts it (3.8).
    #[cold]
    pub(crate) fn deliver() -> Cancelled {
        match task::current_node() {
            Some(node) => {
                let cause = Node::deliver(&node);
                Cancelled { source: cause.source, reason: cause.reason, node: Some(node) }
            }
            None => {
                let cause = task_cancel_cause();
                Cancelled::new(cause.source, cause.reason)
            }
        }
    }
}

/// Why a task's root was cancelled when only its cancel bit says so: runtime shutdown, or an
/// explicit `JoinHandle::cancel`.
pub(crate) fn task_cancel_cause() -> Cause {
    let shutting_down = context::with_handle(|h| h.is_some_and(|h| h.shared.owned_closed()));
    let source = if shutting_down { CancelSource::Shutdown } else { CancelSource::Explicit };
    Cause { source, reason: None }
}

/// A blocking leaf's registration with its status node (DESIGN.md 3.5): when the leaf is
/// polled with a waker that does not reach the code that set the current node (it sits inside
/// `FuturesUnordered`, `join_all` and the like), cancelling the node must wake the leaf itself.
#[derive(Default)]
pub(crate) struct LeafWaiter {
    registered: Option<(Arc<Node>, usize)>,
}

impl LeafWaiter {
    /// Called by a leaf about to return `Pending`: registers (or refreshes) its waker when
    /// needed, then re-checks. `Err` if the leaf is cancelled after all: it must then undo what
    /// it did in this poll and return the error.
    ///
    /// Order (the one `cancel/loom_models.rs` checks, "waiter registration racing cancel"):
    /// register or refresh the waker under the node's lock, *then* re-read the cancel bit. A
    /// cancel that marked the node before that lock sees the bit set by then; one after it
    /// collects the waker just stored.
    pub(crate) fn before_pending(&mut self, waker: &Waker) -> Result<(), Cancelled> {
        if let Some((node, slot)) = &self.registered {
            if &**node as *const Node as usize == task::current_node_addr() {
                node.update_waiter(*slot, waker);
                // Re-check: a cancel between this poll's first check and the update woke the
                // waker that was stored before, which may not reach this poll.
                if node.is_effective() {
                    self.clear();
                    return Err(Cancelled::deliver());
                }
                return Ok(());
            }
            // The leaf is polled under another node now (3.4: a stored `Sleep`, a
            // `JoinHandle` joined again later): the old registration would not reach it.
            self.clear();
        }
        if task::frame_waker_is(waker) {
            return Ok(());
        }
        let Some(node) = task::current_node() else { return Ok(()) };
        let slot = node.add_waiter(waker.clone());
        if node.is_effective() {
            node.remove_waiter(slot);
            return Err(Cancelled::deliver());
        }
        self.registered = Some((node, slot));
        Ok(())
    }

    /// Whether a waker is registered (a leaf that keeps its `LeafWaiter` behind a lock reads
    /// this to skip the lock on its next completion).
    pub(crate) fn is_registered(&self) -> bool {
        self.registered.is_some()
    }

    /// Deregisters (the leaf completed). Free when nothing is registered.
    #[inline]
    pub(crate) fn clear(&mut self) {
        if let Some((node, slot)) = self.registered.take() {
            node.remove_waiter(slot);
        }
    }
}

impl Drop for LeafWaiter {
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for LeafWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafWaiter").field("registered", &self.registered.is_some()).finish()
    }
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled: ")?;
        match &self.source {
            CancelSource::Explicit => f.write_str("explicit")?,
            CancelSource::Deadline => f.write_str("deadline")?,
            CancelSource::Nursery { failed_task } => write!(f, "nursery ({failed_task} failed)")?,
            CancelSource::Shutdown => f.write_str("shutdown")?,
        }
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled")
            .field("source", &self.source)
            .field("reason", &self.reason)
            .finish()
    }
}

impl std::error::Error for Cancelled {}

impl From<Cancelled> for io::Error {
    fn from(c: Cancelled) -> io::Error {
        io::Error::other(c)
    }
}

/// Whether an `io::Error` is a trellis cancellation (an I/O cancel point was cancelled).
pub fn is_cancelled(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.get_ref().is_some_and(|inner| inner.is::<Cancelled>())
}

/// A cancel point that does nothing else: `Err(Cancelled)` if the calling task is cancelled.
///
/// It also spends one unit of the cooperative budget, and yields when the budget is spent, so
/// a loop that only computes can call it to stay responsive to cancellation and to its
/// neighbours. (It checks cancellation first: a cancelled task gets `Err` without yielding.)
///
/// ```
/// trellis_runtime::run(async {
///     assert!(trellis_runtime::checkpoint().await.is_ok());
/// });
/// ```
pub fn checkpoint() -> Checkpoint {
    Checkpoint { _private: () }
}

/// The future of [`checkpoint`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Checkpoint {
    _private: (),
}

impl Future for Checkpoint {
    type Output = Result<(), Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(cancelled) = Cancelled::for_current_task() {
            return Poll::Ready(Err(cancelled));
        }
        let progress = std::task::ready!(budget::poll_proceed(cx));
        progress.made_progress();
        Poll::Ready(Ok(()))
    }
}

/// Yields to the scheduler once: the task goes to the back of its worker's queue and other
/// tasks run. Always yields (whatever the budget) and is *not* a cancel point.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        crate::task::wake_for_repoll(cx.waker());
        Poll::Pending
    }
}

//! Cancellation as seen by a cancel point: the `Cancelled` error, `checkpoint()`, and the
//! `io::Error` bridge.
//!
//! The runtime core implements the task-root level of DESIGN.md section 3: a task whose root is
//! cancelled (`JoinHandle::cancel`, runtime shutdown) sees `Err(Cancelled)` from every cancel
//! point, again and again (level-triggered), and is dropped at its next suspension. The status
//! tree of cancel scopes and nurseries builds on this.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::budget;
use crate::context;
use crate::task;

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

/// The error a cancel point returns when the calling task is cancelled.
///
/// It has no public constructor: only trellis creates it, at a cancel point. Propagate it
/// (with `?`) so the scope that was cancelled can catch it; do not stash it or send it to
/// another task. Converts into `io::Error` (kind `Other`, recognised by [`is_cancelled`]).
#[derive(Clone)]
pub struct Cancelled {
    source: CancelSource,
    reason: Option<Cow<'static, str>>,
}

impl Cancelled {
    pub(crate) fn new(source: CancelSource, reason: Option<Cow<'static, str>>) -> Cancelled {
        Cancelled { source, reason }
    }

    /// What caused the cancellation.
    pub fn source(&self) -> &CancelSource {
        &self.source
    }

    /// The reason string given to `cancel_with_reason`, if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The `Cancelled` for the task being polled on this thread, if its root is cancelled.
    pub(crate) fn for_current_task() -> Option<Cancelled> {
        if !task::current_task_is_cancelled() {
            return None;
        }
        let shutting_down = context::with_handle(|h| h.is_some_and(|h| h.shared.owned_closed()));
        let source = if shutting_down { CancelSource::Shutdown } else { CancelSource::Explicit };
        Some(Cancelled::new(source, None))
    }
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled: ")?;
        match &self.source {
            CancelSource::Explicit => f.write_str("explicit")?,
            CancelSource::Deadline => f.write_str("deadline")?,
            CancelSource::Nursery { failed_task } => {
                write!(f, "nursery (task {failed_task} failed)")?
            }
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

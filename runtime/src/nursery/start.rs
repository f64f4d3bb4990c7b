//! `Nursery::start` and `TaskStatus` (DESIGN.md 4.8): a child that runs under the *caller's*
//! scopes until it reports that it has started, then moves into the nursery.
//!
//! The child's root node hangs first under a `Start` node linked below the caller's current
//! node (a guard in the caller's task, so no dropper there drops the pending `start`). The
//! `StartCore` mutex decides the one race there is: `started()` (from wherever the status was
//! sent) against the child ending first. Whichever takes the lock first wins; the loser does
//! nothing.
//!
//! `started()` when the caller is already cancelled still moves the child and delivers the
//! value (unlike trio#2895's no-op): the child is running, and dropping its value (a bound
//! port, a connection) would lose it; the caller sees `Cancelled` at its next cancel point.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::resume_unwind;
use std::task::{Poll, Waker};

use super::{Child, Inner, Nursery};
use crate::cancel::node::{Cause, Kind, Node};
use crate::sync::{Arc, Mutex};
use crate::{task, CancelSource, Cancelled};

/// Error of [`Nursery::start`] (as `E::from(StartError)`): the nursery was closed, or the
/// started task returned without calling [`TaskStatus::started`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartError {
    not_started: bool,
}

impl StartError {
    /// Whether the task returned without calling `started` (otherwise the nursery was closed).
    pub fn is_not_started(&self) -> bool {
        self.not_started
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.not_started {
            f.write_str("the started task returned without calling `TaskStatus::started`")
        } else {
            f.write_str("cannot start a task: the nursery is closed")
        }
    }
}

impl std::error::Error for StartError {}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        io::Error::other(e)
    }
}

/// How a `start` child ended before `started`.
pub(super) enum Early<E> {
    Returned,
    Failed(E),
    Panicked(Box<dyn Any + Send>),
    /// Dropped (cancelled) before it produced an outcome.
    Dropped,
}

pub(super) struct StartCore<E> {
    state: Mutex<StartState<E>>,
}

struct StartState<E> {
    started: bool,
    ended: bool,
    early: Option<Early<E>>,
    caller: Option<Waker>,
    /// The child's root, to move under the nursery on `started`.
    root: Option<Arc<Node>>,
}

impl<E> StartCore<E> {
    /// The child is ending: true if it had started (its outcome then goes to the nursery);
    /// otherwise marks it ended, so a later `started` does nothing.
    pub(super) fn is_started_or_end(&self) -> bool {
        let mut state = self.state.lock();
        if state.started {
            return true;
        }
        state.ended = true;
        false
    }

    /// Hands the outcome of a child that ended before `started` to the `start` caller.
    pub(super) fn deliver_early(&self, early: Early<E>) {
        let waker = {
            let mut state = self.state.lock();
            state.early = Some(early);
            state.caller.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Given to a task started with [`Nursery::start`]: call [`started`](Self::started) once it
/// is ready (listening, connected...) to hand `value` to the caller of `start` and move the
/// task into the nursery.
pub struct TaskStatus<V> {
    value: Arc<Mutex<Option<V>>>,
    promote: Box<dyn Promote>,
}

impl<V> fmt::Debug for TaskStatus<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskStatus")
    }
}

/// The `E`-typed half of `started`, behind a trait object so `TaskStatus` needs only `V`.
trait Promote: Send + Sync {
    /// Returns false if the child had already ended (then nothing happens).
    fn promote(&self) -> bool;
}

struct Promoter<E> {
    core: Arc<StartCore<E>>,
    inner: Arc<Inner<E>>,
}

impl<E: Send + 'static> Promote for Promoter<E> {
    fn promote(&self) -> bool {
        let (root, waker) = {
            let mut state = self.core.state.lock();
            if state.ended || state.started {
                return false;
            }
            state.started = true;
            (state.root.take(), state.caller.take())
        };
        // One count covers pending starts and children: nothing to move in `Inner::pending`.
        if let Some(root) = root {
            Node::relink(&root, Some(&self.inner.node));
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

impl<V> TaskStatus<V> {
    /// Reports that the task has started: `value` goes to the caller of `start`, and the task
    /// moves under the nursery (from now on its errors go to the nursery's group).
    pub fn started(self, value: V) {
        *self.value.lock() = Some(value);
        if !self.promote.promote() {
            self.value.lock().take();
        }
    }
}

/// Closes the `start` node when the `start` future ends or is dropped; cancels the child if
/// the caller gave up waiting (dropped the future).
struct StartNodeGuard {
    node: Arc<Node>,
    finished: bool,
}

impl Drop for StartNodeGuard {
    fn drop(&mut self) {
        if !self.finished {
            Node::cancel(
                &self.node,
                Cause {
                    source: CancelSource::Explicit,
                    reason: Some("`start` was dropped".into()),
                },
            );
        }
        Node::close(&self.node, false);
    }
}

impl<E: From<Cancelled> + fmt::Debug + Send + 'static> Nursery<E> {
    /// Starts a task and waits until it calls [`TaskStatus::started`]: returns the value it
    /// passed. Until then the task runs under the caller's scopes (a cancel of the caller
    /// reaches it), and an error it returns comes out of `start` as is, neither entering the
    /// nursery's group nor cancelling it; returning without `started` is
    /// `Err(E::from(StartError))`. After `started` it is a child of the nursery like any other.
    /// A pending `start` keeps the nursery open. A cancel point on entry.
    ///
    /// A panic in the task before `started` is resumed here.
    pub async fn start<F, Fut, V>(&self, f: F) -> Result<V, E>
    where
        F: FnOnce(TaskStatus<V>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        V: Send + 'static,
        E: From<StartError>,
    {
        if let Some(cancelled) = Cancelled::for_current_task() {
            return Err(E::from(cancelled));
        }
        if self.inner.admit().is_err() {
            return Err(E::from(StartError { not_started: false }));
        }
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let start_node = Node::new(Kind::Start);
        Node::enter(&start_node, task::current_node().as_ref(), Some(&waker));
        let mut guard = StartNodeGuard { node: start_node, finished: false };
        let core = Arc::new(StartCore {
            state: Mutex::new(StartState {
                started: false,
                ended: false,
                early: None,
                caller: None,
                root: None,
            }),
        });
        let value = Arc::new(Mutex::new(None));
        let status = TaskStatus {
            value: value.clone(),
            promote: Box::new(Promoter { core: core.clone(), inner: self.inner.clone() }),
        };
        let child = Child {
            future: Some(f(status)),
            inner: Some(self.inner.clone()),
            start: Some(core.clone()),
        };
        // The child's root goes to the core before the task can run: `started` moves it under
        // the nursery itself, whenever it is called (the loom model
        // `nursery::loom_models::started_racing_caller_cancel` found the window when the
        // hand-over came after the spawn).
        let join = self.inner.handle.spawn_under(child, &guard.node, |root| {
            core.state.lock().root = Some(root.clone());
        });
        drop(join);
        // Not a cancel point: a cancel of the caller reaches the child, which then ends.
        let outcome = std::future::poll_fn(|cx| {
            let mut state = core.state.lock();
            if state.started {
                return Poll::Ready(None);
            }
            if let Some(early) = state.early.take() {
                return Poll::Ready(Some(early));
            }
            if !state.caller.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.caller = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        guard.finished = true;
        match outcome {
            None => Ok(value.lock().take().expect("`started` stores the value before promoting")),
            Some(Early::Returned) => Err(E::from(StartError { not_started: true })),
            Some(Early::Failed(error)) => Err(error),
            Some(Early::Panicked(payload)) => {
                drop(guard);
                resume_unwind(payload)
            }
            Some(Early::Dropped) => {
                Err(E::from(Cancelled::for_current_task().unwrap_or_else(|| {
                    Cancelled::new(
                        CancelSource::Explicit,
                        Some("the started task was cancelled".into()),
                    )
                })))
            }
        }
    }
}

//! Nurseries (DESIGN.md 4): a body that runs inline in the opening task, children that run as
//! tasks on the pool, and a wait for all of them, under one cancel scope.
//!
//! # Structure
//!
//! A nursery owns two status nodes: its scope's (kind `Nursery`: a guard, and the dropper of
//! its body) and its body's (a plain scope node below it, whose live-`Cancelled` count
//! classifies the body's `Err`). Each child task's root node hangs under the nursery's node,
//! linked lazily (`task::new_task_lazy_under`): a child that finishes in its first poll without
//! needing a node never gets one, and the rest link when their first poll ends `Pending`.
//!
//! # Protocol (`State`, under its mutex)
//!
//! - `open` is true from creation until the nursery completes: it closes, under the lock, at
//!   the first moment the body is done and no child and no `start` is pending. A spawn or a
//!   `start` takes the lock, fails if closed, and otherwise counts itself before it spawns, so
//!   a late spawn either is counted before the close or sees the close.
//! - A child counts down (and wakes the opener on zero) when its wrapper future ends, by
//!   finishing, panicking or being dropped (cancelled), after it filed its error.
//! - The first genuine failure or panic cancels the nursery's scope (4.3); errors are filed in
//!   arrival order; a child's `Err` is classified by its root's live-`Cancelled` count and by
//!   which node owns the cancellation (4.4, [`classify`]).

mod group;
mod start;

#[cfg(all(test, loom))]
mod loom_models;

pub use group::ErrorGroup;
pub use start::{StartError, TaskStatus};

use start::{Early, StartCore};

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use crate::cancel::node::{Cause, ChildEndClass, GuardMark, Kind, Node};
use crate::cancel::scope::CancelScope;
use crate::sync::atomic::{
    AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use crate::sync::{Arc, Mutex};
use crate::task::{self, JoinError, JoinHandle};
use crate::tuning::MAX_SELF_WAKES_WHILE_CANCELLED;
use crate::{budget, context, CancelSource, Cancelled, Handle};

/// Opens a nursery: runs `body` with a [`Nursery`] handle, and returns once the body and every
/// child spawned into the nursery have finished.
///
/// `Ok(r)` if the body returned `Ok(r)` and nothing failed. Otherwise an [`ErrorGroup`] with
/// every genuine failure in arrival order; the first failure cancels the body and every other
/// child. A panicking child cancels the rest like an error, and the panic is resumed here once
/// all have finished. Waiting for the children is not a cancel point, and a running nursery is
/// never dropped by a cancellation: if the code around it is cancelled, the children are
/// cancelled and the nursery waits for them.
///
/// ```
/// use std::time::Duration;
/// use trellis_runtime::{nursery, time::sleep, Cancelled, Nursery};
///
/// let total = trellis_runtime::run(async {
///     nursery(|n: Nursery<Cancelled>| async move {
///         let a = n.spawn(async { sleep(Duration::from_millis(1)).await?; Ok(20) });
///         let b = n.spawn(async { Ok(22) });
///         Ok(a.await.unwrap() + b.await.unwrap())
///     })
///     .await
/// });
/// assert_eq!(total.unwrap(), 42);
/// ```
///
/// # Panics
/// When first polled outside a trellis runtime.
pub fn nursery<F, Fut, R, E>(body: F) -> NurseryRun<F, Fut, R, E>
where
    F: FnOnce(Nursery<E>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    E: From<Cancelled> + Send + 'static,
{
    NurseryRun {
        body: None,
        make_body: Some(body),
        run: RunState {
            inner: None,
            body_node: None,
            parent_addr: 0,
            body_end: None,
            output: None,
            self_wakes: 0,
            done: false,
        },
    }
}

/// A handle to an open nursery: spawns children into it. Cheap to clone and `Send + Sync`;
/// clones do not keep the nursery open.
pub struct Nursery<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Nursery<E> {
    fn clone(&self) -> Nursery<E> {
        Nursery { inner: self.inner.clone() }
    }
}

impl<E> fmt::Debug for Nursery<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = self.inner.pending.load(Relaxed) & OPEN != 0;
        f.debug_struct("Nursery").field("open", &open).finish()
    }
}

struct Inner<E> {
    node: Arc<Node>,
    handle: Handle,
    /// `OPEN`, plus the children and pending `start`s still running, in units of `ONE`. A
    /// child is counted in only while `OPEN` (a compare-exchange), and the nursery closes
    /// (clears `OPEN`) only when the count is zero (a compare-exchange from exactly `OPEN`),
    /// so a late spawn is either counted before the close or refused. The child that counts
    /// the last one out takes the opener's waker from `state`; the opener stores its waker
    /// under that lock before it reads the count, so the wake-up is never lost.
    pending: AtomicUsize,
    state: Mutex<State<E>>,
}

/// Bits of `Inner::pending`.
const OPEN: usize = 1;
const ONE: usize = 2;

struct State<E> {
    failures: Vec<(String, E)>,
    pass_through: Vec<(String, E)>,
    panic: Option<Box<dyn Any + Send>>,
    opener: Option<Waker>,
    /// The nursery future was dropped before it finished (4.10): errors are logged.
    abandoned: bool,
}

/// Error of [`Nursery::try_spawn`]: the nursery has closed (its body and every child have
/// finished), so it accepts no new children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    _private: (),
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the nursery is closed: its body and all its children have finished")
    }
}

impl std::error::Error for Closed {}

const SPAWN_CLOSED: &str = "spawned into a closed nursery (its body and all its children had \
    finished): keep the nursery open while you spawn (spawn from its body or a child), or use \
    `try_spawn` to handle this case";

/// How a failed task's `Err` is counted (4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Genuine,
    /// A cancellation owned by the nursery's scope or the task's own root: dropped.
    Stripped,
    /// A cancellation owned by a scope around the nursery: reported only if nothing failed.
    PassThrough,
}

/// 4.4: an `Err` is a cancellation iff its node counts a live `Cancelled`; stripped if the
/// nursery or the task itself owns it, passed through otherwise.
fn classify(node: &Arc<Node>, nursery: &Arc<Node>) -> Class {
    match Node::classify_child_end(node, nursery) {
        ChildEndClass::NoCancellation => Class::Genuine,
        ChildEndClass::OwnedByTaskOrNursery => Class::Stripped,
        ChildEndClass::OwnedAbove => Class::PassThrough,
    }
}

impl<E> Inner<E> {
    /// Files a failed task's error (4.3-4.5); the first genuine failure cancels the nursery.
    fn file(&self, name: String, error: E, class: Class)
    where
        E: fmt::Debug,
    {
        let mut state = self.state.lock();
        match class {
            Class::Stripped => {
                drop(state);
                drop(error);
            }
            Class::PassThrough => state.pass_through.push((name, error)),
            Class::Genuine => {
                if state.abandoned {
                    drop(state);
                    eprintln!("trellis: {name} of an abandoned nursery failed: {error:?}");
                    return;
                }
                let first = state.failures.is_empty() && state.panic.is_none();
                state.failures.push((name.clone(), error));
                drop(state);
                if first {
                    self.cancel_for(name);
                }
            }
        }
    }

    fn file_panic(&self, name: String, payload: Box<dyn Any + Send>) {
        let mut state = self.state.lock();
        if state.abandoned {
            drop(state);
            eprintln!("trellis: {name} of an abandoned nursery panicked");
            return;
        }
        let first = state.failures.is_empty() && state.panic.is_none();
        if state.panic.is_none() {
            state.panic = Some(payload);
        }
        drop(state);
        if first {
            self.cancel_for(name);
        }
    }

    fn cancel_for(&self, failed_task: String) {
        Node::cancel(
            &self.node,
            Cause { source: CancelSource::Nursery { failed_task }, reason: None },
        );
    }

    /// A child ended, or a pending `start` ended without `started` (one count covers both):
    /// counts down and wakes the opener when nothing is left.
    fn ended(&self) {
        let before = self.pending.fetch_sub(ONE, AcqRel);
        debug_assert!(before >= ONE, "a nursery counted out more children than it admitted");
        if before & !OPEN == ONE {
            let waker = self.state.lock().opener.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Counts a new child (or pending `start`) in, if the nursery is still open.
    fn admit(&self) -> Result<(), Closed> {
        let mut current = self.pending.load(Relaxed);
        loop {
            if current & OPEN == 0 {
                return Err(Closed { _private: () });
            }
            match self.pending.compare_exchange_weak(current, current + ONE, AcqRel, Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }
}

impl<E: From<Cancelled> + fmt::Debug + Send + 'static> Nursery<E> {
    /// Spawns a child task into the nursery. Its `Err` goes to the nursery's group (and
    /// cancels the nursery) unless it is a cancellation; the returned handle awaits its `Ok`
    /// output or cancels just this child. A child spawned into a cancelled nursery still
    /// starts, and sees `Cancelled` at its first cancel point.
    ///
    /// # Panics
    /// If the nursery has closed (see [`try_spawn`](Self::try_spawn)).
    #[track_caller]
    pub fn spawn<F, T>(&self, future: F) -> TaskHandle<T>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.try_spawn(future).unwrap_or_else(|_| panic!("{}", SPAWN_CLOSED))
    }

    /// [`spawn`](Self::spawn), or `Err(Closed)` if the nursery has closed.
    pub fn try_spawn<F, T>(&self, future: F) -> Result<TaskHandle<T>, Closed>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.admit()?;
        let child = Child { future: Some(future), inner: Some(self.inner.clone()), start: None };
        let join = self.inner.handle.spawn_lazy_under(child, &self.inner.node);
        Ok(TaskHandle { join })
    }

    /// The nursery's cancel scope: cancelling it cancels the body and every child.
    pub fn cancel_scope(&self) -> CancelScope {
        CancelScope::from_node(self.inner.node.clone())
    }
}

pin_project! {
    /// A child task's future: runs the user's future and files its outcome with the nursery.
    /// The child is counted out only after the user's future is dropped, so nothing a child
    /// holds outlives its nursery.
    struct Child<F, E> {
        // `None` once finished or dropped: dropped before the child is counted out.
        #[pin]
        future: Option<F>,
        // `None` once the outcome is filed.
        inner: Option<Arc<Inner<E>>>,
        // A `start` child: until `started`, its outcome goes to the `start` caller instead.
        start: Option<Arc<StartCore<E>>>,
    }

    impl<F, E> PinnedDrop for Child<F, E> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before it finished (its root dropped it: cancelled): nothing to file.
            let mut this = this.project();
            if let Some(inner) = this.inner.take() {
                // Drop the user's future first (a panic in its drop still counts the child
                // out: `inner` is a local now, and `OnDrop` runs during the unwind).
                let ended = OnDrop(Some((inner, this.start.take())));
                this.future.set(None);
                drop(ended);
            }
        }
    }
}

/// What counts a child out: its nursery, and its `start` core if it has one.
type ChildSlot<E> = (Arc<Inner<E>>, Option<Arc<StartCore<E>>>);

/// Counts a dropped child out of its nursery when dropped, also during an unwind.
struct OnDrop<E>(Option<ChildSlot<E>>);

impl<E> Drop for OnDrop<E> {
    fn drop(&mut self) {
        if let Some((inner, start)) = self.0.take() {
            if let Some(core) = start.filter(|core| !core.is_started_or_end()) {
                core.deliver_early(Early::Dropped);
            }
            inner.ended();
        }
    }
}

/// How a child ended when it produced no `Ok` output (its `TaskHandle` reports it).
#[derive(Debug)]
pub(crate) enum ChildEnd {
    /// A genuine failure: the error went to the group.
    Failed,
    /// Its `Err` was a cancellation (stripped, or passed through the nursery).
    Cancelled,
    Panicked,
}

impl<F, T, E> Future for Child<F, E>
where
    F: Future<Output = Result<T, E>>,
    E: fmt::Debug,
{
    type Output = Result<T, ChildEnd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut future = this.future;
        let polled = catch_unwind(AssertUnwindSafe(|| {
            future.as_mut().as_pin_mut().expect("a child is not polled after it finished").poll(cx)
        }));
        let polled = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => Ok(result),
            Err(payload) => Err(payload),
        };
        // Done: drop the future now, before the nursery can see the child end.
        let inner = this.inner.take().expect("a child is not polled after it finished");
        let start = this.start.take();
        let dropped = catch_unwind(AssertUnwindSafe(|| future.set(None)));
        let polled = match (polled, dropped) {
            (Ok(result), Err(payload)) => {
                drop(result);
                Err(payload)
            }
            (polled, _) => polled,
        };
        // The task's root: the harness closes it after this returns, but the outcome is seen
        // by others (the nursery, the `start` caller) before that; so it is closed here first,
        // after classifying, and the live `Cancelled` values it counts move up to where they
        // are caught before anyone can return them (3.8). Closing is idempotent: the harness
        // gets the same answer. A child that never needed its (lazy) root has none: nothing
        // was delivered in it, so its `Err` is no cancellation.
        let root = task::current_root();
        // A `start` child that ends before `started`: its outcome is the `start` caller's
        // (4.8), and it never counted as a child of the nursery.
        if let Some(core) = start {
            if !core.is_started_or_end() {
                let (early, out) = match polled {
                    Ok(Ok(value)) => (Early::Returned, Ok(value)),
                    Ok(Err(error)) => (Early::Failed(error), Err(ChildEnd::Failed)),
                    Err(payload) => (Early::Panicked(payload), Err(ChildEnd::Panicked)),
                };
                close_root(root.as_ref());
                core.deliver_early(early);
                inner.ended();
                return Poll::Ready(out);
            }
        }
        Poll::Ready(file_outcome(&inner, root.as_ref(), polled))
    }
}

/// Closes a finished child's root, if it has one (see `Child::poll`).
fn close_root(root: Option<&Arc<Node>>) {
    if let Some(root) = root {
        Node::close(root, false);
    }
}

/// Files a finished child's outcome with its nursery and counts it out.
fn file_outcome<T, E: fmt::Debug>(
    inner: &Inner<E>,
    root: Option<&Arc<Node>>,
    polled: Result<Result<T, E>, Box<dyn Any + Send>>,
) -> Result<T, ChildEnd> {
    let class = match (&polled, root) {
        (Ok(Err(_)), Some(root)) => Some(classify(root, &inner.node)),
        (Ok(Err(_)), None) => Some(Class::Genuine),
        _ => None,
    };
    let out = match polled {
        Ok(Ok(value)) => {
            close_root(root);
            Ok(value)
        }
        Ok(Err(error)) => match class.expect("classified above") {
            // The common end of a cancelled child: nothing to file, no name to format. The
            // error goes before the root closes, so its `Cancelled` is uncounted at the root
            // and nothing is forwarded to the (shared) nursery node.
            Class::Stripped => {
                drop(error);
                close_root(root);
                Err(ChildEnd::Cancelled)
            }
            class => {
                close_root(root);
                inner.file(task_name(), error, class);
                match class {
                    Class::Genuine => Err(ChildEnd::Failed),
                    Class::Stripped | Class::PassThrough => Err(ChildEnd::Cancelled),
                }
            }
        },
        Err(payload) => {
            close_root(root);
            inner.file_panic(task_name(), payload);
            Err(ChildEnd::Panicked)
        }
    };
    inner.ended();
    out
}

fn task_name() -> String {
    match crate::task::current_id() {
        Some(id) => format!("task {id}"),
        None => "task".to_string(),
    }
}

/// A handle to one nursery child: await its `Ok` output, or cancel just this child.
///
/// Awaiting yields `Ok(output)`, or a [`JoinError`]: [`is_failed`](JoinError::is_failed) if
/// the child returned a genuine `Err` (the error went to the nursery's group),
/// `is_cancelled` if it was cancelled (dropped, or it returned the `Cancelled` it got), or
/// `is_panic` (the payload is resumed in the nursery's opener). Dropping the handle does not
/// detach the child from its nursery.
pub struct TaskHandle<T> {
    join: JoinHandle<Result<T, ChildEnd>>,
}

impl<T> TaskHandle<T> {
    /// Cancels this child only: its cancellation is stripped, never reported as a failure.
    pub fn cancel(&self) {
        self.join.cancel();
    }

    /// Whether the child has finished.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// The child's task id.
    pub fn id(&self) -> task::TaskId {
        self.join.id()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.join.id();
        Pin::new(&mut self.join).poll(cx).map(|joined| match joined {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(ChildEnd::Failed)) => Err(JoinError::failed(id)),
            Ok(Err(ChildEnd::Cancelled)) => Err(JoinError::cancelled(id)),
            Ok(Err(ChildEnd::Panicked)) => Err(JoinError::panic(
                id,
                Box::new("this task panicked; its panic was resumed in its nursery's opener"),
            )),
            Err(e) => Err(e),
        })
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.id()).finish()
    }
}

// ---- the nursery future -------------------------------------------------------------------

pin_project! {
    /// The future of [`nursery`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct NurseryRun<F, Fut, R, E> {
        // Declared first: dropped before `run` (which files the abandonment).
        #[pin]
        body: Option<Fut>,
        make_body: Option<F>,
        run: RunState<R, E>,
    }
}

struct RunState<R, E> {
    inner: Option<Arc<Inner<E>>>,
    body_node: Option<Arc<Node>>,
    parent_addr: usize,
    /// How the body ended (`None`: still running).
    body_end: Option<BodyEnd>,
    /// The body's `Ok` output, kept until the children are done.
    output: Option<R>,
    self_wakes: u8,
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyEnd {
    Ok,
    /// Filed as a failure, a pass-through, or a panic.
    Filed,
    /// Its `Err` was stripped, or it was dropped by the nursery (3.10).
    Cancelled {
        dropped: bool,
    },
}

impl<R, E> Drop for RunState<R, E> {
    fn drop(&mut self) {
        let Some(inner) = &self.inner else { return };
        if self.done {
            return;
        }
        // 4.10: dropped before it finished: cancel the children; they finish in the
        // background, and their errors are logged.
        let report = {
            let mut state = inner.state.lock();
            state.abandoned = true;
            let failures = std::mem::take(&mut state.failures);
            let panicked = state.panic.take().is_some();
            (failures.len(), panicked)
        };
        if report.0 > 0 || report.1 {
            eprintln!(
                "trellis: a nursery was dropped before it finished, with {} error(s){}",
                report.0,
                if report.1 { " and a panic" } else { "" }
            );
        }
        Node::cancel(
            &inner.node,
            Cause {
                source: CancelSource::Explicit,
                reason: Some("the nursery was dropped".into()),
            },
        );
        if let Some(body) = &self.body_node {
            Node::close(body, true);
        }
        Node::close(&inner.node, true);
    }
}

impl<F, Fut, R, E> Future for NurseryRun<F, Fut, R, E>
where
    F: FnOnce(Nursery<E>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    E: From<Cancelled> + fmt::Debug + Send + 'static,
{
    type Output = Result<R, ErrorGroup<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let run = this.run;
        assert!(!run.done, "a nursery future was polled after it completed");
        if run.inner.is_none() {
            open(run, this.make_body, this.body.as_mut(), cx.waker());
        } else {
            follow_poll(run, cx.waker());
        }
        let inner = run.inner.clone().expect("opened above");
        let body_node = run.body_node.clone().expect("opened above");

        // The body phase.
        if run.body_end.is_none() {
            let start_word = inner.node.settled_word();
            let guards = inner.node.guard_mark_if_settled(start_word);
            let polled = {
                let _current = task::NodeGuard::enter(&body_node, cx.waker());
                let body =
                    this.body.as_mut().as_pin_mut().expect("the body is present until it ends");
                catch_unwind(AssertUnwindSafe(|| body.poll(cx)))
            };
            match polled {
                Ok(Poll::Ready(Ok(r))) => {
                    this.body.set(None);
                    Node::close(&body_node, false);
                    run.body_end = Some(BodyEnd::Ok);
                    run.output = Some(r);
                }
                Ok(Poll::Ready(Err(error))) => {
                    this.body.set(None);
                    let class = classify(&body_node, &inner.node);
                    run.body_end = Some(if class == Class::Stripped {
                        BodyEnd::Cancelled { dropped: false }
                    } else {
                        BodyEnd::Filed
                    });
                    inner.file("body".to_string(), error, class);
                    Node::close(&body_node, false);
                }
                Err(payload) => {
                    this.body.set(None);
                    Node::close(&body_node, false);
                    run.body_end = Some(BodyEnd::Filed);
                    inner.file_panic("body".to_string(), payload);
                }
                Ok(Poll::Pending) => {
                    if body_may_drop(run, &inner, start_word, guards) {
                        this.body.set(None);
                        Node::close(&body_node, true);
                        run.body_end = Some(BodyEnd::Cancelled { dropped: true });
                    } else {
                        return Poll::Pending;
                    }
                }
            }
        }
        finish_or_wait(run, &inner, cx)
    }
}

/// First poll: links the nursery's node under the current node, the body's below it, and
/// creates the body.
fn open<F, Fut, R, E>(
    run: &mut RunState<R, E>,
    make_body: &mut Option<F>,
    mut body: Pin<&mut Option<Fut>>,
    waker: &Waker,
) where
    F: FnOnce(Nursery<E>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let handle = context::with_handle(|h| h.cloned()).unwrap_or_else(|| {
        panic!("a trellis nursery was opened outside a trellis runtime: {}", context::NO_RUNTIME)
    });
    let node = Node::new(Kind::Nursery);
    let parent = task::current_node();
    run.parent_addr = parent.as_ref().map_or(0, |p| &**p as *const Node as usize);
    Node::enter(&node, parent.as_ref(), Some(waker));
    let body_node = Node::new(Kind::Scope);
    Node::enter(&body_node, Some(&node), Some(waker));
    let inner = Arc::new(Inner {
        node,
        handle,
        pending: AtomicUsize::new(OPEN),
        state: Mutex::new(State {
            failures: Vec::new(),
            pass_through: Vec::new(),
            panic: None,
            opener: None,
            abandoned: false,
        }),
    });
    run.inner = Some(inner.clone());
    run.body_node = Some(body_node);
    let make_body = make_body.take().expect("a nursery is opened once");
    body.set(Some(make_body(Nursery { inner })));
}

/// Status follows the poll (3.4).
fn follow_poll<R, E>(run: &mut RunState<R, E>, waker: &Waker) {
    let inner = run.inner.as_ref().expect("opened");
    let current = task::current_node_addr();
    if current != run.parent_addr {
        let parent = task::current_node();
        run.parent_addr = parent.as_ref().map_or(0, |p| &**p as *const Node as usize);
        Node::relink(&inner.node, parent.as_ref());
    }
    inner.node.set_owner(waker);
    if let Some(body) = &run.body_node {
        body.set_owner(waker);
    }
}

/// 3.10 for a nursery's body: its scope is effectively cancelled and settled since the poll
/// began, the `Pending` was not forced, not a self-wake, and no guard is live below.
fn body_may_drop<R, E>(
    run: &mut RunState<R, E>,
    inner: &Inner<E>,
    start_word: u64,
    guards: GuardMark,
) -> bool {
    if !Node::word_is_settled_cancel(start_word) || budget::pending_was_forced() {
        return false;
    }
    if task::woken_during_poll() && run.self_wakes < MAX_SELF_WAKES_WHILE_CANCELLED {
        run.self_wakes += 1;
        return false;
    }
    inner.node.dropper_may_drop(guards)
}

/// The wait phase (never a cancel point), then the result (4.5).
fn finish_or_wait<R, E>(
    run: &mut RunState<R, E>,
    inner: &Arc<Inner<E>>,
    cx: &mut Context<'_>,
) -> Poll<Result<R, ErrorGroup<E>>>
where
    E: From<Cancelled> + fmt::Debug,
{
    let (failures, pass_through, panic) = {
        let mut state = inner.state.lock();
        // Waker first, count second (see `Inner::pending`).
        if !state.opener.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.opener = Some(cx.waker().clone());
        }
        if inner.pending.compare_exchange(OPEN, 0, AcqRel, Acquire).is_err() {
            return Poll::Pending;
        }
        state.opener = None;
        (
            std::mem::take(&mut state.failures),
            std::mem::take(&mut state.pass_through),
            state.panic.take(),
        )
    };
    run.done = true;
    let dropped = run.body_end == Some(BodyEnd::Cancelled { dropped: true });
    Node::close(&inner.node, dropped);
    if let Some(payload) = panic {
        // 4.6: the errors go to the log first, so that nothing is lost silently.
        for (name, error) in &failures {
            eprintln!("trellis: {name} failed in a nursery whose task panicked: {error:?}");
        }
        resume_unwind(payload);
    }
    if !failures.is_empty() {
        return Poll::Ready(Err(ErrorGroup::new(failures, false)));
    }
    if !pass_through.is_empty() {
        return Poll::Ready(Err(ErrorGroup::new(pass_through, true)));
    }
    match run.body_end {
        Some(BodyEnd::Ok) => Poll::Ready(Ok(run.output.take().expect("kept since the body ended"))),
        _ => {
            // The body's cancellation was stripped (or the body dropped) and nothing else is
            // left: one cancellation stands for the body, inert once the nursery caught.
            let cancelled = Cancelled::deliver_at(&inner.node);
            Poll::Ready(Err(ErrorGroup::new(vec![("body".to_string(), E::from(cancelled))], true)))
        }
    }
}

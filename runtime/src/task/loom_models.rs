//! Loom models of the task state machine: the state word, the reference count, the join-waker
//! protocol, wakes, root cancellation and shutdown (the rules of `task/mod.rs` and the
//! invariants of `task/state.rs`).
//!
//! Each model spawns one task onto [`MockRt`], a mock [`Schedule`] whose run queue is a loom
//! mutex, races two or three operations on loom threads, then drains the run queue on the main
//! thread and checks:
//!
//! - **no lost wake**: the task completed (a wake that was dropped would leave it idle);
//! - **exactly once**: its future and its output were each dropped exactly once;
//! - **no leak**: its cell was freed (the scheduler value inside the cell counts its own drop;
//!   a leaked cell also shows up as a loom "Arc leaked" failure, since it holds a loom `Arc`).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --profile loom -p trellis-runtime --lib loom`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use loom::thread;

use super::{is_cancelled, new_task, JoinHandle, Notified, Released, Schedule, Task};
use super::{Output, TaskId};
use crate::scheduler::Parker;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use crate::sync::{arc_waker, Arc, Mutex};

// ---- instruments ------------------------------------------------------------------------------

/// Counts events (polls, drops, wakes).
#[derive(Clone)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn new() -> Counter {
        Counter(Arc::new(AtomicUsize::new(0)))
    }
    fn incr(&self) {
        self.0.fetch_add(1, SeqCst);
    }
    fn get(&self) -> usize {
        self.0.load(SeqCst)
    }
}

/// Bumps its counter when dropped.
struct DropCount(Counter);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.incr();
    }
}

/// A waker for polling a `JoinHandle` by hand; counts its wakes.
struct CountingWaker(Counter);

// `Wake` is implemented on `std::sync::Arc`; see `sync::arc_waker`.
#[allow(clippy::disallowed_types)]
impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.incr();
    }
}

// ---- the mock scheduler -----------------------------------------------------------------------

/// Shared by the model and every task cell.
struct Queue {
    runnable: Mutex<VecDeque<Notified<Mock>>>,
    /// The owned-task registry (rule 1: one reference per live task).
    owned: Mutex<Vec<Task<Mock>>>,
}

/// The `Schedule` of the model's tasks. One lives inside each cell, so its drop is the cell's
/// deallocation.
struct Mock {
    queue: Arc<Queue>,
    _freed: DropCount,
}

impl Schedule for Mock {
    fn schedule(&self, task: Notified<Self>) -> Option<Notified<Self>> {
        self.queue.runnable.lock().push_back(task);
        None
    }

    fn release(&self, runner: Task<Self>) -> Released<Self> {
        let mut owned = self.queue.owned.lock();
        let registry =
            owned.iter().position(|t| t.raw() == runner.raw()).map(|i| owned.swap_remove(i));
        Released::now(runner, registry)
    }
}

/// The model's "runtime": spawn onto the mock queue, run it, shut tasks down.
#[derive(Clone)]
struct MockRt {
    queue: Arc<Queue>,
    freed: Counter,
}

impl MockRt {
    fn new() -> MockRt {
        let queue = Queue { runnable: Mutex::new(VecDeque::new()), owned: Mutex::new(Vec::new()) };
        MockRt { queue: Arc::new(queue), freed: Counter::new() }
    }

    /// Spawns `future` as the runtime does: register the task, queue its `Notified`.
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mock = Mock { queue: self.queue.clone(), _freed: DropCount(self.freed.clone()) };
        let (task, notified, join) = new_task(future, mock, TaskId::next());
        self.queue.owned.lock().push(task);
        self.queue.runnable.lock().push_back(notified);
        join
    }

    /// Runs queued tasks until the queue is empty; a task that yielded goes to the back.
    fn run_queued(&self) {
        loop {
            let next = self.queue.runnable.lock().pop_front();
            let Some(task) = next else { return };
            if let Some(yielded) = task.run() {
                self.queue.runnable.lock().push_back(yielded);
            }
        }
    }

    /// Runtime shutdown's last step: take every task out of the registry and shut it down.
    fn shutdown_owned(&self) {
        let owned = std::mem::take(&mut *self.queue.owned.lock());
        for task in owned {
            task.shutdown();
        }
    }

    /// End of a model, after every thread joined: drain the queue, then nothing may be left.
    fn finish(&self) {
        self.run_queued();
        assert!(
            self.queue.owned.lock().is_empty(),
            "a task is still registered: it never completed"
        );
    }
}

// ---- the model future -------------------------------------------------------------------------

/// A loom-visible one-shot readiness flag with a waker slot (a tiny oneshot channel).
struct Signal {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

#[derive(Clone, Copy, Debug)]
enum WakeKind {
    ByVal,
    ByRef,
}

impl Signal {
    fn new() -> Arc<Signal> {
        Arc::new(Signal { fired: AtomicBool::new(false), waker: Mutex::new(None) })
    }

    fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired.load(SeqCst) {
            return Poll::Ready(());
        }
        *self.waker.lock() = Some(cx.waker().clone());
        if self.fired.load(SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Sets the flag, then wakes the registered waker (outside the lock).
    fn fire(&self, kind: WakeKind) {
        self.fired.store(true, SeqCst);
        let waker = self.waker.lock().take();
        if let Some(waker) = waker {
            match kind {
                WakeKind::ByVal => waker.wake(),
                WakeKind::ByRef => {
                    waker.wake_by_ref();
                    drop(waker);
                }
            }
        }
    }
}

/// What the model future does, in order: wake itself through its waker and return `Pending`
/// `self_wakes` times; yield `frame_yields` times through `yield_now` (the re-poll request in
/// the task frame, no atomic wake); wait for `signal` if there is one; then complete.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    self_wakes: usize,
    frame_yields: usize,
}

/// The counters of one model future.
#[derive(Clone)]
struct Probe {
    polls: Counter,
    /// Polls that saw the task's root cancelled (the cancel-point check).
    saw_cancelled: Counter,
    future_drops: Counter,
    output_drops: Counter,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            polls: Counter::new(),
            saw_cancelled: Counter::new(),
            future_drops: Counter::new(),
            output_drops: Counter::new(),
        }
    }

    fn future(&self, behaviour: Behaviour, signal: Option<Arc<Signal>>) -> ProbeFuture {
        ProbeFuture {
            behaviour,
            yielding: None,
            signal,
            done: false,
            probe: self.clone(),
            _dropped: DropCount(self.future_drops.clone()),
        }
    }
}

struct ProbeFuture {
    behaviour: Behaviour,
    yielding: Option<crate::YieldNow>,
    signal: Option<Arc<Signal>>,
    done: bool,
    probe: Probe,
    _dropped: DropCount,
}

impl Future for ProbeFuture {
    type Output = DropCount;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DropCount> {
        let this = self.get_mut();
        this.probe.polls.incr();
        if is_cancelled() {
            this.probe.saw_cancelled.incr();
        }
        if this.behaviour.self_wakes > 0 {
            this.behaviour.self_wakes -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while this.behaviour.frame_yields > 0 {
            let yielding = this.yielding.get_or_insert_with(crate::yield_now);
            if Pin::new(yielding).poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.yielding = None;
            this.behaviour.frame_yields -= 1;
        }
        if let Some(signal) = &this.signal {
            if signal.poll_fired(cx).is_pending() {
                return Poll::Pending;
            }
        }
        assert!(!std::mem::replace(&mut this.done, true), "polled after it completed");
        Poll::Ready(DropCount(this.probe.output_drops.clone()))
    }
}

/// Unparks a [`Parker`] when woken.
struct Unpark(Arc<Parker>);

#[allow(clippy::disallowed_types)]
impl Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark(None);
    }
}

/// Drives `future` to completion on the calling loom thread, parking between polls (a lost
/// wake leaves every thread blocked, which loom reports as a deadlock).
fn block_on<F: Future>(future: F) -> F::Output {
    let parker = Arc::new(Parker::new());
    let waker = arc_waker(Unpark(parker.clone()));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        parker.park(|| {});
    }
}

/// Polls `join` once with a counting waker (unlike `block_on`, it never blocks).
fn poll_once<T>(join: &mut JoinHandle<T>, wakes: &Counter) -> Poll<Output<T>> {
    let waker = arc_waker(CountingWaker(wakes.clone()));
    Pin::new(join).poll(&mut Context::from_waker(&waker))
}

/// Checks a finished model: one task, its future dropped once, its output dropped once if it
/// completed with it (after the caller dropped what it received), its cell freed.
fn assert_dropped_once(rt: &MockRt, probe: &Probe, completed: bool) {
    assert_eq!(probe.future_drops.get(), 1, "the future must be dropped exactly once");
    assert_eq!(probe.output_drops.get(), usize::from(completed), "output dropped exactly once");
    assert_eq!(rt.freed.get(), 1, "the task cell must be freed");
}

// ---- models -----------------------------------------------------------------------------------

/// The `JoinHandle` waits (`block_on`) on the main thread while the task completes on
/// another: the join waker is not lost (else loom reports a deadlock) and the output is
/// delivered exactly once.
#[test]
fn join_racing_completion() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let join = rt.spawn(probe.future(Behaviour::default(), None));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        let out = block_on(join).expect("the task completed");
        assert_eq!(probe.output_drops.get(), 0);
        drop(out);
        runner.join().unwrap();
        rt.finish();
        assert_eq!(probe.polls.get(), 1);
        assert_dropped_once(&rt, &probe, true);
    });
}

/// The join handle registers one waker, then replaces it by another (`block_on`) while
/// the task completes: the unset/replace path of the join-waker protocol (state invariant 3)
/// never loses the wake, never reads the slot while it is written.
#[test]
fn join_waker_replaced_racing_completion() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let mut join = rt.spawn(probe.future(Behaviour::default(), None));
        let first_wakes = Counter::new();
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        let out = match poll_once(&mut join, &first_wakes) {
            Poll::Ready(out) => {
                drop(join);
                out
            }
            Poll::Pending => block_on(join),
        };
        drop(out.expect("the task completed"));
        runner.join().unwrap();
        rt.finish();
        assert!(first_wakes.get() <= 1);
        assert_dropped_once(&rt, &probe, true);
    });
}

/// Dropping the `JoinHandle` (before it was ever polled: the fast path may win or lose)
/// while the task completes: the output is dropped exactly once, by whichever side owns it
/// (state invariant 2), and the cell is freed.
#[test]
fn join_handle_drop_racing_completion() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let join = rt.spawn(probe.future(Behaviour::default(), None));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        drop(join);
        runner.join().unwrap();
        rt.finish();
        assert_dropped_once(&rt, &probe, true);
    });
}

/// As above, after the handle registered a join waker (so `JOIN_WAKER` may be set when the
/// handle is dropped and the runtime may be reading the slot).
#[test]
fn join_handle_drop_after_poll_racing_completion() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let mut join = rt.spawn(probe.future(Behaviour::default(), None));
        let wakes = Counter::new();
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        let polled = poll_once(&mut join, &wakes);
        drop(join);
        drop(polled);
        runner.join().unwrap();
        rt.finish();
        assert!(wakes.get() <= 1);
        assert_dropped_once(&rt, &probe, true);
    });
}

/// A wake (by value or by reference) races the task's poll and completion: before the poll,
/// during it (`NOTIFIED` while `RUNNING`: the runner requeues), after it, or after completion.
/// The task is always polled again after a wake that came during its poll, so it completes;
/// with `detached` the handle is dropped first, so the waker's reference may be the last.
fn wake_racing_poll_and_completion(kind: WakeKind, detached: bool) {
    loom::model(move || {
        let rt = MockRt::new();
        let probe = Probe::new();
        let signal = Signal::new();
        let join = rt.spawn(probe.future(Behaviour::default(), Some(signal.clone())));
        let join = if detached {
            drop(join);
            None
        } else {
            Some(join)
        };
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        let waker = {
            let signal = signal.clone();
            thread::spawn(move || signal.fire(kind))
        };
        runner.join().unwrap();
        waker.join().unwrap();
        rt.finish();
        if let Some(join) = join {
            assert!(join.is_finished(), "lost wake: the task never ran again");
            drop(block_on(join).expect("the task completed"));
        }
        drop(signal);
        assert!((1..=2).contains(&probe.polls.get()), "polls: {}", probe.polls.get());
        assert_dropped_once(&rt, &probe, true);
    });
}

#[test]
fn wake_by_val_racing_poll_and_completion() {
    wake_racing_poll_and_completion(WakeKind::ByVal, false);
}

#[test]
fn wake_by_ref_racing_poll_and_completion() {
    wake_racing_poll_and_completion(WakeKind::ByRef, false);
}

#[test]
fn wake_by_val_racing_completion_detached() {
    wake_racing_poll_and_completion(WakeKind::ByVal, true);
}

#[test]
fn wake_by_ref_racing_completion_detached() {
    wake_racing_poll_and_completion(WakeKind::ByRef, true);
}

/// Checks the end of a cancel model: the task completed with its output or as cancelled; a
/// cancelled task had a full poll in which it saw the cancel bit (task rule 4).
fn assert_cancel_outcome(rt: &MockRt, probe: &Probe, join: JoinHandle<DropCount>) {
    rt.finish();
    assert!(join.is_finished(), "the cancelled task never completed");
    let completed = match block_on(join) {
        Ok(out) => {
            drop(out);
            true
        }
        Err(e) => {
            assert!(e.is_cancelled(), "{e}");
            assert!(probe.saw_cancelled.get() >= 1, "dropped without a poll that saw the cancel");
            false
        }
    };
    assert_dropped_once(rt, probe, completed);
}

/// `JoinHandle::cancel` races the poll of a future that never completes: whether the cancel
/// comes while it is queued, running or idle, the root drops the future after a poll that
/// saw the cancel, and the join reports cancelled.
#[test]
fn cancel_racing_poll() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let signal = Signal::new();
        let join = rt.spawn(probe.future(Behaviour::default(), Some(signal.clone())));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        join.cancel();
        runner.join().unwrap();
        rt.finish();
        drop(signal);
        match block_on(join) {
            Err(e) => assert!(e.is_cancelled(), "{e}"),
            Ok(_) => panic!("a future that never completes produced an output"),
        }
        assert!(probe.saw_cancelled.get() >= 1);
        assert_dropped_once(&rt, &probe, false);
    });
}

/// `cancel` races the poll and the completion of a future woken from a third thread: the task
/// ends with its output or as cancelled, never both, and its future is dropped exactly once.
#[test]
fn cancel_racing_wake_and_completion() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let signal = Signal::new();
        let join = rt.spawn(probe.future(Behaviour::default(), Some(signal.clone())));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        let waker = {
            let signal = signal.clone();
            thread::spawn(move || signal.fire(WakeKind::ByVal))
        };
        join.cancel();
        runner.join().unwrap();
        waker.join().unwrap();
        drop(signal);
        assert_cancel_outcome(&rt, &probe, join);
    });
}

/// `cancel` races a future that keeps waking itself (yielding): the root gives it a bounded
/// number of extra polls (`MAX_SELF_WAKES_WHILE_CANCELLED`), then drops it, or it completes.
#[test]
fn cancel_racing_self_wakes() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let join =
            rt.spawn(probe.future(Behaviour { self_wakes: 2, ..Behaviour::default() }, None));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        join.cancel();
        runner.join().unwrap();
        assert_cancel_outcome(&rt, &probe, join);
    });
}

/// As above with `yield_now`, which asks for a re-poll through the task frame instead of an
/// atomic wake (`transition_to_notified_from_running`): the cancel lands before, during or
/// after the yielding poll; the root still gives a bounded number of extra polls.
#[test]
fn cancel_racing_yield_now() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let join =
            rt.spawn(probe.future(Behaviour { frame_yields: 2, ..Behaviour::default() }, None));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        join.cancel();
        runner.join().unwrap();
        assert_cancel_outcome(&rt, &probe, join);
    });
}

/// A task yields (`yield_now`, a re-poll request in the frame) and then waits for a signal,
/// while another thread fires the signal and wakes it: the frame's re-poll and the atomic
/// wake may both land on the same poll; the task is requeued once per request, never lost,
/// never queued twice (state invariant 1), and completes.
#[test]
fn wake_racing_yield_now() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let signal = Signal::new();
        let behaviour = Behaviour { frame_yields: 1, ..Behaviour::default() };
        let join = rt.spawn(probe.future(behaviour, Some(signal.clone())));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        let waker = {
            let signal = signal.clone();
            thread::spawn(move || signal.fire(WakeKind::ByVal))
        };
        runner.join().unwrap();
        waker.join().unwrap();
        rt.finish();
        assert!(join.is_finished(), "lost wake: the task never ran again");
        drop(block_on(join).expect("the task completed"));
        drop(signal);
        assert!((2..=3).contains(&probe.polls.get()), "polls: {}", probe.polls.get());
        assert_dropped_once(&rt, &probe, true);
    });
}

/// Runtime shutdown (`Task::shutdown` on the registry's reference) races a wake (from another
/// thread) and the poll it causes (on a third): the future is dropped exactly once, by the
/// shutdown or after the poll that completes it, and the join yields the output or cancelled.
#[test]
fn shutdown_racing_wake() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let signal = Signal::new();
        let join = rt.spawn(probe.future(Behaviour::default(), Some(signal.clone())));
        // First poll: the future registers its waker and suspends.
        rt.run_queued();
        let waker = {
            let signal = signal.clone();
            thread::spawn(move || signal.fire(WakeKind::ByVal))
        };
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        rt.shutdown_owned();
        waker.join().unwrap();
        runner.join().unwrap();
        drop(signal);
        rt.finish();
        assert!(join.is_finished(), "the shut-down task never completed");
        let completed = match block_on(join) {
            Ok(out) => {
                drop(out);
                true
            }
            Err(e) => {
                assert!(e.is_cancelled(), "{e}");
                false
            }
        };
        assert_dropped_once(&rt, &probe, completed);
    });
}

/// Shutdown races a poll that suspends: if the shutdown comes while the task is being polled,
/// it leaves the future to the poller (task rule 2), which must still end the task (the root
/// is cancelled and the registry no longer holds it): the task completes as cancelled and its
/// future is dropped exactly once.
#[test]
fn shutdown_racing_poll() {
    loom::model(|| {
        let rt = MockRt::new();
        let probe = Probe::new();
        let signal = Signal::new();
        let join = rt.spawn(probe.future(Behaviour::default(), Some(signal.clone())));
        let runner = {
            let rt = rt.clone();
            thread::spawn(move || rt.run_queued())
        };
        rt.shutdown_owned();
        runner.join().unwrap();
        rt.finish();
        drop(signal);
        assert!(join.is_finished(), "the shut-down task never completed");
        match block_on(join) {
            Err(e) => assert!(e.is_cancelled(), "{e}"),
            Ok(_) => panic!("a future that never completes produced an output"),
        }
        assert_dropped_once(&rt, &probe, false);
    });
}

//! Loom models of the scheduler's protocols: the `Parker` (`park.rs`), the sleep/wake protocol
//! (`idle.rs`) and the shutdown sequence (`shutdown.rs`), on the real scheduler.
//!
//! The scheduler models build a real runtime with one or two workers (loom threads), make work
//! from a foreign thread or from a worker, and wait for it with `block_on` *before* shutting the
//! runtime down (shutdown cancels and wakes everything, which would hide a lost wake-up). A
//! wake-up that is lost leaves every thread blocked, which loom reports as a deadlock; so does a
//! shutdown that hangs. A task or scheduler leaked by a reference cycle shows up as a loom
//! "Arc leaked" failure.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --profile loom -p trellis-runtime --lib loom`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use loom::thread;

use super::Parker;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use crate::sync::{Arc, Condvar, Mutex};
use crate::Runtime;

// ---- Parker ------------------------------------------------------------------------------

/// One unpark from another thread wakes one park, whichever comes first (rules 1-3 of
/// `park.rs`): the unpark may land before the park, between its fast path and its lock, or
/// while it waits.
#[test]
fn park_unpark_racing() {
    loom::model(|| {
        let parker = Arc::new(Parker::new());
        let unparker = {
            let parker = parker.clone();
            thread::spawn(move || parker.unpark(None))
        };
        parker.park(|| {});
        unparker.join().unwrap();
    });
}

/// An unpark that completed before the park started is not lost (the park returns at once).
#[test]
fn unpark_before_park() {
    loom::model(|| {
        let parker = Arc::new(Parker::new());
        let unparker = {
            let parker = parker.clone();
            thread::spawn(move || parker.unpark(None))
        };
        unparker.join().unwrap();
        parker.park(|| {});
    });
}

/// Two threads hand a token back and forth twice through two parkers, so each parker goes
/// `EMPTY -> PARKED -> NOTIFIED -> EMPTY` and is reused; a park may return spuriously (a stale
/// unpark), so each side re-checks its condition, as the workers do.
#[test]
fn park_unpark_ping_pong() {
    loom::model(|| {
        let turn = Arc::new(AtomicUsize::new(0));
        let main_parker = Arc::new(Parker::new());
        let peer_parker = Arc::new(Parker::new());
        let peer = {
            let (turn, main_parker, peer_parker) =
                (turn.clone(), main_parker.clone(), peer_parker.clone());
            thread::spawn(move || {
                for round in 0..2 {
                    while turn.load(SeqCst) != 2 * round + 1 {
                        peer_parker.park(|| {});
                    }
                    turn.store(2 * round + 2, SeqCst);
                    main_parker.unpark(None);
                }
            })
        };
        for round in 0..2 {
            turn.store(2 * round + 1, SeqCst);
            peer_parker.unpark(None);
            while turn.load(SeqCst) != 2 * round + 2 {
                main_parker.park(|| {});
            }
        }
        peer.join().unwrap();
    });
}

// ---- helpers for the scheduler models ----------------------------------------------------

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().worker_threads(workers).build().expect("loom threads start")
}

/// A loom-visible one-shot event: a flag and a waker slot (also used by `loom_driver`).
#[derive(Clone)]
pub(super) struct Event(Arc<EventInner>);

struct EventInner {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Event {
    pub(super) fn new() -> Event {
        Event(Arc::new(EventInner { set: AtomicBool::new(false), waker: Mutex::new(None) }))
    }

    /// Sets the event and wakes its waiter (from any thread, outside the lock).
    pub(super) fn set(&self) {
        self.0.set.store(true, SeqCst);
        let waker = self.0.waker.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits until the event is set.
    pub(super) fn wait(&self) -> EventWait {
        EventWait(self.clone())
    }
}

pub(super) struct EventWait(Event);

impl Future for EventWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &self.0 .0;
        if inner.set.load(SeqCst) {
            return Poll::Ready(());
        }
        *inner.waker.lock() = Some(cx.waker().clone());
        if inner.set.load(SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

// ---- sleep/wake --------------------------------------------------------------------------

/// One worker races to sleep while a foreign thread (the main thread) spawns a task: the push
/// to the injector and the worker's decision to park order through `Idle::state` (rule 1 and
/// rule 4 of `idle.rs`), so the worker runs the task; then shutdown completes.
#[test]
fn foreign_spawn_wakes_the_only_worker() {
    loom::model(|| {
        let rt = runtime(1);
        let join = rt.spawn(async { 7 });
        assert_eq!(rt.block_on(join).unwrap(), 7);
        drop(rt);
    });
}

/// Two workers, a task pushed from a foreign thread (the main thread) while both workers race
/// to search and sleep: with two workers only one may search at a time (rule 2), so the other
/// sleeps without stealing and relies on the searcher's re-check (rule 4); the task runs, then
/// shutdown completes.
#[test]
fn foreign_spawn_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let join = rt.spawn(async { 7 });
        assert_eq!(rt.block_on(join).unwrap(), 7);
        drop(rt);
    });
}

/// One worker; a third thread spawns through a `Handle` while the main thread waits in
/// `block_on` for what the task does: the injector push from a thread that is neither a
/// worker nor the `block_on` thread wakes the worker.
#[test]
fn spawn_from_other_thread_one_worker() {
    loom::model(|| {
        let rt = runtime(1);
        let event = Event::new();
        let spawner = {
            let (handle, event) = (rt.handle().clone(), event.clone());
            thread::spawn(move || drop(handle.spawn(async move { event.set() })))
        };
        rt.block_on(event.wait());
        spawner.join().unwrap();
        drop(rt);
    });
}

/// Two workers; a task spawns two children from its worker and awaits them. The first goes
/// to the LIFO slot (no notification), the second displaces it into the local queue, which
/// notifies (rule 1), so the other worker may wake and steal it while the parent is suspended
/// on its join: every task runs, then shutdown completes.
#[test]
fn spawn_from_worker_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let parent = rt.spawn(async {
            let a = crate::spawn(async { 1 });
            let b = crate::spawn(async { 2 });
            a.await.unwrap() + b.await.unwrap()
        });
        assert_eq!(rt.block_on(parent).unwrap(), 3);
        drop(rt);
    });
}

/// One worker; a task waits for an event set from a foreign thread. The wake goes through the
/// injector while the worker may be finishing the task's poll, searching, or parking: the
/// task runs again and completes.
#[test]
fn foreign_wake_one_worker() {
    loom::model(|| {
        let rt = runtime(1);
        let event = Event::new();
        let join = {
            let event = event.clone();
            rt.spawn(async move {
                event.wait().await;
                5
            })
        };
        let setter = {
            let event = event.clone();
            thread::spawn(move || event.set())
        };
        assert_eq!(rt.block_on(join).unwrap(), 5);
        setter.join().unwrap();
        drop(rt);
    });
}

/// Two workers; a task waits for an event that the main thread (foreign to the runtime) sets
/// before it waits in `block_on`: the wake goes through the injector while the task's worker
/// may still be finishing the poll and the other is searching or asleep.
#[test]
fn foreign_wake_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let event = Event::new();
        let join = {
            let event = event.clone();
            rt.spawn(async move {
                event.wait().await;
                5
            })
        };
        event.set();
        assert_eq!(rt.block_on(join).unwrap(), 5);
        drop(rt);
    });
}

/// Two workers; the first task blocks its worker's thread until the second task has run (a
/// blocking call inside a task), and both are pushed from the main thread. The second task
/// can only run on the other worker, so that worker must not sleep while it waits in the
/// injector or in the blocked worker's queue: whichever of them stops searching last, or
/// parks while nobody searches, re-checks the queues (rules 3 and 4). A worker that parks
/// without looking leaves the blocked task waiting forever: loom reports a deadlock.
#[test]
fn blocked_worker_does_not_hide_work() {
    loom::model(|| {
        let rt = runtime(2);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let blocked = {
            let gate = gate.clone();
            rt.spawn(async move {
                let (open, cv) = &*gate;
                let mut open = open.lock();
                while !*open {
                    cv.wait(&mut open);
                }
            })
        };
        let opener = rt.spawn(async move {
            let (open, cv) = &*gate;
            *open.lock() = true;
            cv.notify_all();
        });
        rt.block_on(async {
            blocked.await.unwrap();
            opener.await.unwrap();
        });
        drop(rt);
    });
}

// ---- shutdown ------------------------------------------------------------------------------

/// Shutdown of a runtime whose task is suspended forever: step 2 cancels it and wakes it, the
/// root drops its future, the registry empties, the workers exit (steps 3-4), nothing is left.
#[test]
fn shutdown_cancels_suspended_task() {
    loom::model(|| {
        let rt = runtime(1);
        let dropped = Arc::new(AtomicUsize::new(0));
        let join = {
            let guard = DropGuard(dropped.clone());
            rt.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            })
        };
        drop(rt);
        assert_eq!(dropped.load(SeqCst), 1);
        assert!(join.is_finished());
    });
}

/// Bumps a counter when dropped.
struct DropGuard(Arc<AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

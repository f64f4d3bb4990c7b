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
use crate::sync::{Arc, Mutex};
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
            thread::spawn(move || parker.unpark())
        };
        parker.park();
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
            thread::spawn(move || parker.unpark())
        };
        unparker.join().unwrap();
        parker.park();
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
                        peer_parker.park();
                    }
                    turn.store(2 * round + 2, SeqCst);
                    main_parker.unpark();
                }
            })
        };
        for round in 0..2 {
            turn.store(2 * round + 1, SeqCst);
            peer_parker.unpark();
            while turn.load(SeqCst) != 2 * round + 2 {
                main_parker.park();
            }
        }
        peer.join().unwrap();
    });
}

// ---- helpers for the scheduler models ----------------------------------------------------

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().worker_threads(workers).build().expect("loom threads start")
}

/// A loom-visible one-shot event: a flag and a waker slot.
#[derive(Clone)]
struct Event(Arc<EventInner>);

struct EventInner {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Event {
    fn new() -> Event {
        Event(Arc::new(EventInner { set: AtomicBool::new(false), waker: Mutex::new(None) }))
    }

    /// Sets the event and wakes its waiter (from any thread, outside the lock).
    fn set(&self) {
        self.0.set.store(true, SeqCst);
        let waker = self.0.waker.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits until the event is set.
    fn wait(&self) -> EventWait {
        EventWait(self.clone())
    }
}

struct EventWait(Event);

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

/// Two workers, two tasks pushed from a foreign thread (one from the main thread, one from a
/// third thread through a `Handle`): both run, whichever workers are asleep, searching or
/// busy when they arrive; then shutdown completes.
#[test]
fn foreign_spawns_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let remote = {
            let (handle, ran) = (rt.handle().clone(), ran.clone());
            thread::spawn(move || {
                handle.spawn(async move {
                    ran.fetch_add(1, SeqCst);
                })
            })
        };
        let local = {
            let ran = ran.clone();
            rt.spawn(async move {
                ran.fetch_add(1, SeqCst);
            })
        };
        let remote = remote.join().unwrap();
        rt.block_on(async {
            local.await.unwrap();
            remote.await.unwrap();
        });
        assert_eq!(ran.load(SeqCst), 2);
        drop(rt);
    });
}

/// Two workers; a task spawns two children from its worker. The first goes to the LIFO slot
/// (no notification), the second displaces it into the local queue, which must wake the other
/// worker or be run locally (rule 1: every push into a local queue notifies); the other
/// worker may steal it. Everything runs, then shutdown completes.
#[test]
fn spawn_from_worker_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let parent = rt.spawn(async {
            let a = crate::spawn(async { 1 });
            let b = crate::spawn(async { 2 });
            (a, b)
        });
        let sum = rt.block_on(async {
            let (a, b) = parent.await.unwrap();
            a.await.unwrap() + b.await.unwrap()
        });
        assert_eq!(sum, 3);
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

/// Two workers; a task waits for an event set from a foreign thread while the other worker
/// is searching or asleep: the task is woken and runs on either worker.
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
        let setter = {
            let event = event.clone();
            thread::spawn(move || event.set())
        };
        assert_eq!(rt.block_on(join).unwrap(), 5);
        setter.join().unwrap();
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

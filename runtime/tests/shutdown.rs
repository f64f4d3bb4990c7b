//! Runtime shutdown: every task future dropped exactly once, cleanup gets its chance, spawns
//! racing shutdown neither leak nor crash, misuse gets a clear panic.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{oneshot, Tracker};
use trellis_runtime::{checkpoint, spawn, yield_now, JoinError, JoinHandle, Runtime};

fn join_outside<T>(h: JoinHandle<T>) -> Result<T, JoinError> {
    futures::executor::block_on(h)
}

on_workers!(
    /// Tasks in every state at shutdown: never polled, blocked in a cycle nobody will break,
    /// yielding forever, finished with an unread output, detached. Each future is dropped once.
    every_future_dropped_exactly_once, |rt| {
    let tracker = Tracker::new();
    let mut handles = Vec::new();
    // Blocked forever: each waits on a oneshot whose sender the other task holds.
    let (tx_a, rx_a) = oneshot::<()>();
    let (tx_b, rx_b) = oneshot::<()>();
    handles.push(rt.spawn(tracker.track(async move {
        let _keep = tx_b;
        rx_a.await;
    })));
    handles.push(rt.spawn(tracker.track(async move {
        let _keep = tx_a;
        rx_b.await;
    })));
    // Yielding forever.
    for _ in 0..4 {
        handles.push(rt.spawn(tracker.track(async {
            loop {
                yield_now().await;
            }
        })));
    }
    // Finished, output unread (the output is itself tracked).
    let finished = rt.spawn(tracker.track({
        let t = tracker.clone();
        // A tuple, so the output is a value (not something to await).
        async move { (t.track(async {}),) }
    }));
    while !finished.is_finished() {
        thread::yield_now();
    }
    // Detached and blocked.
    for _ in 0..10 {
        let (tx, rx) = oneshot::<()>();
        std::mem::forget(tx); // never sent, never closed
        drop(rt.spawn(tracker.track(async move {
            rx.await;
        })));
    }
    // Many tasks, some of which will still be queued, never polled.
    for i in 0..1000 {
        handles.push(rt.spawn(tracker.track(async move {
            if i % 2 == 0 {
                futures::future::pending::<()>().await;
            }
        })));
    }
    drop(rt);
    // The unread output of `finished` is still owned by its handle.
    assert_eq!(tracker.drops() + 1, tracker.created());
    drop(finished);
    tracker.assert_all_dropped();
    for h in handles {
        match join_outside(h) {
            Ok(()) => {}
            Err(e) => assert!(e.is_cancelled(), "{e}"),
        }
    }
});

on_workers!(
    /// Shutdown cancels through the task root: a task at a cancel point sees `Cancelled` and
    /// runs its (synchronous here) cleanup before returning.
    tasks_get_their_cleanup_at_shutdown, |rt| {
    let cleaned = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let cleaned = cleaned.clone();
        rt.spawn(async move {
            loop {
                if let Err(c) = checkpoint().await {
                    assert_eq!(c.to_string(), "cancelled: shutdown");
                    cleaned.fetch_add(1, SeqCst);
                    return;
                }
                yield_now().await;
            }
        });
    }
    rt.block_on(async {
        for _ in 0..10 {
            yield_now().await;
        }
    });
    drop(rt);
    assert_eq!(cleaned.load(SeqCst), 20);
});

on_workers!(spawn_through_handle_after_shutdown_is_cancelled, |rt| {
    let handle = rt.handle().clone();
    drop(rt);
    let tracker = Tracker::new();
    let h = handle.spawn(tracker.track(async { 1 }));
    tracker.assert_all_dropped();
    assert_eq!(tracker.polls(), 0, "never polled");
    assert!(join_outside(h).unwrap_err().is_cancelled());
    let b = handle.spawn_blocking(|| 1);
    assert!(join_outside(b).unwrap_err().is_cancelled());
});

#[test]
fn spawns_racing_shutdown_neither_leak_nor_crash() {
    for round in 0..40 {
        let rt = common::runtime(1 + round % 3);
        let handle = rt.handle().clone();
        let tracker = Tracker::new();
        let stop = Arc::new(AtomicBool::new(false));
        let spawner = {
            let tracker = tracker.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut handles = Vec::new();
                while !stop.load(SeqCst) {
                    handles.push(handle.spawn(tracker.track(async {
                        yield_now().await;
                        5
                    })));
                    // A task that itself spawns, racing the same shutdown from a worker.
                    handles.push(handle.spawn(tracker.track({
                        let tracker = tracker.clone();
                        async move { spawn(tracker.track(async { 5 })).await.unwrap_or(5) }
                    })));
                }
                handles
            })
        };
        thread::sleep(Duration::from_micros(200 * (round as u64 % 5)));
        drop(rt);
        stop.store(true, SeqCst);
        let handles = spawner.join().unwrap();
        tracker.assert_all_dropped();
        for h in handles {
            match join_outside(h) {
                Ok(v) => assert_eq!(v, 5),
                Err(e) => assert!(e.is_cancelled(), "{e}"),
            }
        }
    }
}

#[test]
fn dropping_the_runtime_on_its_own_worker_panics_clearly() {
    let rt = common::runtime(2);
    let handle = rt.handle().clone();
    let slot = Arc::new(Mutex::new(Some(rt)));
    let h = handle.spawn({
        let slot = slot.clone();
        async move {
            let rt = slot.lock().unwrap().take();
            drop(rt);
        }
    });
    let err = join_outside(h).unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("from one of its own worker threads"), "{err}");
}

#[test]
fn shutdown_timeout_bounds_the_wait_for_a_task_that_never_yields() {
    let rt = common::runtime(1);
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let h = rt.spawn({
        let release = release.clone();
        let started = started.clone();
        async move {
            started.store(true, SeqCst);
            // Blocks its worker without ever reaching a cancel point (misbehaving code).
            while !release.load(SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            7
        }
    });
    while !started.load(SeqCst) {
        thread::yield_now();
    }
    let t0 = Instant::now();
    rt.shutdown_timeout(Duration::from_millis(100));
    let waited = t0.elapsed();
    assert!(waited < Duration::from_secs(3), "shutdown waited {waited:?}");
    // The detached worker finishes the task once it stops blocking.
    release.store(true, SeqCst);
    assert_eq!(join_outside(h).unwrap(), 7);
}

#[test]
fn shutdown_of_an_idle_runtime_is_prompt() {
    let rt = common::runtime(4);
    rt.block_on(async {});
    let t0 = Instant::now();
    drop(rt);
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn builder_rejects_zero_workers_with_a_message() {
    let err = std::panic::catch_unwind(|| {
        Runtime::builder().worker_threads(0);
    })
    .unwrap_err();
    let msg = err
        .downcast_ref::<&str>()
        .copied()
        .map(str::to_owned)
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(msg.contains("at least one worker"), "{msg}");
}

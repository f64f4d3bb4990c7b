//! Task-root cancellation (`JoinHandle::cancel`): level-triggered cancel points, the root
//! dropping a suspended future, interrupted joins, and the `io::Error` bridge.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;

use common::{oneshot, Tracker};
use trellis_runtime::{checkpoint, is_cancelled, spawn, yield_now, CancelSource, Cancelled};

on_workers!(
    /// A task suspended on something that is not a trellis cancel point is dropped at its next
    /// suspension and joins as cancelled.
    cancel_drops_a_suspended_task, |rt| {
    let tracker = Tracker::new();
    let (_tx, rx) = oneshot::<()>();
    let h = rt.spawn(tracker.track(rx));
    rt.block_on(async { yield_now().await });
    h.cancel();
    h.cancel(); // idempotent
    let err = rt.block_on(async { (&mut { h }).await }).unwrap_err();
    assert!(err.is_cancelled() && !err.is_panic(), "{err}");
    assert!(err.to_string().contains("was cancelled"));
    tracker.assert_all_dropped();
});

on_workers!(
    /// Level-triggered: once cancelled, every cancel point fails, again and again; a task may
    /// still finish normally after seeing `Cancelled`, and then joins with its output.
    cancel_points_fail_repeatedly, |rt| {
    let started = Arc::new(AtomicBool::new(false));
    let cancel_sent = Arc::new(AtomicBool::new(false));
    let h = rt.spawn({
        let started = started.clone();
        let cancel_sent = cancel_sent.clone();
        async move {
            started.store(true, SeqCst);
            // Stay inside this poll until the cancel has landed (so it lands mid-poll).
            while !cancel_sent.load(SeqCst) {
                thread::yield_now();
            }
            let mut failures = 0;
            for _ in 0..5 {
                if checkpoint().await.is_err() {
                    failures += 1;
                }
            }
            failures
        }
    });
    while !started.load(SeqCst) {
        thread::yield_now();
    }
    h.cancel();
    cancel_sent.store(true, SeqCst);
    assert_eq!(rt.block_on(h).unwrap(), 5);
});

on_workers!(
    /// A task cancelled before its first poll still starts, and sees `Cancelled` at once.
    cancel_before_first_poll_still_runs_once, |rt| {
    let polls = Arc::new(AtomicUsize::new(0));
    // Spawned from a task: the child sits in this worker's (unstealable) LIFO slot until the
    // parent suspends, so the cancel deterministically comes before the child's first poll.
    let result = rt.block_on(rt.spawn({
        let polls = polls.clone();
        async move {
            let h = spawn(async move {
                polls.fetch_add(1, SeqCst);
                checkpoint().await
            });
            h.cancel();
            h.await
        }
    }));
    let result = result.unwrap();
    assert_eq!(polls.load(SeqCst), 1);
    // It finished in its one poll, returning the `Cancelled` it got: a propagated
    // cancellation is caught by the task's root (DESIGN.md 3.9), so it joins as cancelled.
    assert!(result.unwrap_err().is_cancelled());
});

on_workers!(
    /// A cancelled task that handles its `Cancelled` (drops it) and returns normally keeps
    /// its output.
    handled_cancellation_keeps_the_output, |rt| {
    let result = rt.block_on(rt.spawn(async {
        let h = spawn(async {
            let e = checkpoint().await.unwrap_err();
            (e.source().clone(), e.to_string())
        });
        h.cancel();
        h.await
    }));
    let (source, text) = result.unwrap().unwrap();
    assert_eq!(source, CancelSource::Explicit);
    assert_eq!(text, "cancelled: explicit");
});

on_workers!(cancel_after_completion_keeps_the_output, |rt| {
    let h = rt.spawn(async { 11 });
    while !h.is_finished() {
        thread::yield_now();
    }
    h.cancel();
    assert_eq!(rt.block_on(h).unwrap(), 11);
});

on_workers!(
    /// A future that keeps waking itself while cancelled is still dropped, after a bounded
    /// number of extra polls.
    self_waking_cancelled_task_is_dropped, |rt| {
    let tracker = Tracker::new();
    let h = rt.spawn(tracker.track(async {
        loop {
            yield_now().await;
        }
    }));
    h.cancel();
    assert!(rt.block_on(h).unwrap_err().is_cancelled());
    tracker.assert_all_dropped();
});

on_workers!(
    /// The joiner cancelled while waiting gets `is_interrupted`; the task runs on and can be
    /// joined later.
    interrupted_join_keeps_the_output, |rt| {
    let (tx, rx) = oneshot::<u32>();
    let target = rt.spawn(async move { rx.await.unwrap() });
    let (joiner_started_tx, joiner_started_rx) = oneshot::<()>();
    let joiner = rt.spawn(async move {
        let mut target = target;
        joiner_started_tx.send(());
        let first = (&mut target).await;
        (first.map_err(|e| e.is_interrupted()), target)
    });
    rt.block_on(joiner_started_rx);
    joiner.cancel();
    let (first, target) = rt.block_on(joiner).expect("the joiner finishes in its last poll");
    assert!(first.unwrap_err(), "the interrupted join reports is_interrupted");
    tx.send(3);
    assert_eq!(rt.block_on(target).unwrap(), 3);
});

on_workers!(cancel_from_a_foreign_thread, |rt| {
    let tracker = Tracker::new();
    let hs: Vec<_> =
        (0..100).map(|_| rt.spawn(tracker.track(futures::future::pending::<()>()))).collect();
    let hs = thread::spawn(move || {
        for h in &hs {
            h.cancel();
        }
        hs
    })
    .join()
    .unwrap();
    for h in hs {
        assert!(rt.block_on(h).unwrap_err().is_cancelled());
    }
    tracker.assert_all_dropped();
});

#[test]
fn cancelled_converts_to_io_error_recognised_by_is_cancelled() {
    let rt = common::runtime(1);
    // Spawned from a task, so the cancel lands before the child's first poll (LIFO slot).
    // The `Cancelled` is inspected inside the task and not returned (a returned one would
    // make the task join as cancelled, DESIGN.md 3.9).
    let (text, recognised, kind) = rt
        .block_on(rt.spawn(async {
            let h = spawn(async {
                let c: Cancelled = checkpoint().await.unwrap_err();
                let text = c.to_string();
                let e: std::io::Error = c.into();
                (text, is_cancelled(&e), e.kind())
            });
            h.cancel();
            h.await.unwrap()
        }))
        .unwrap();
    assert_eq!(text, "cancelled: explicit");
    assert!(recognised);
    assert_ne!(kind, std::io::ErrorKind::Interrupted);
    assert!(!is_cancelled(&std::io::Error::other("something else")));
    assert!(!is_cancelled(&std::io::Error::from(std::io::ErrorKind::Interrupted)));
}

#[test]
fn checkpoint_outside_a_task_never_fails() {
    let rt = common::runtime(1);
    assert!(rt.block_on(checkpoint()).is_ok());
}

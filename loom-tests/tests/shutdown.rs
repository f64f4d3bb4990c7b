//! Loom models of runtime shutdown racing other threads, through the public API: a spawn from
//! another thread, a wake from another thread. No leak (loom checks its `Arc`s; the futures
//! count their drops), no crash, no hang, and every `JoinHandle` yields the output or
//! `is_cancelled`.
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use trellis_loom_tests::{block_on, oneshot, runtime, DropCounter};

/// Checks what a join yields after shutdown: the output (dropped here) or cancelled.
fn finished<T>(result: Result<T, trellis_runtime::JoinError>) -> bool {
    match result {
        Ok(output) => {
            drop(output);
            true
        }
        Err(e) => {
            assert!(e.is_cancelled(), "{e}");
            false
        }
    }
}

/// A thread spawns through a `Handle` while the main thread drops the runtime: the spawn lands
/// before shutdown (the task runs or is cancelled with the rest), during it (the registry is
/// closed: the task is completed as cancelled at once), or after it.
#[test]
fn shutdown_racing_spawn() {
    loom::model(|| {
        let rt = runtime(1);
        let futures = DropCounter::new();
        let outputs = DropCounter::new();
        let spawner = {
            let handle = rt.handle().clone();
            let (future, outputs) = (futures.track(), outputs.clone());
            thread::spawn(move || {
                handle.spawn(async move {
                    drop(future);
                    outputs.track()
                })
            })
        };
        drop(rt);
        let join = spawner.join().unwrap();
        assert!(join.is_finished(), "a task outlived its runtime's shutdown");
        let completed = finished(block_on(join));
        assert_eq!(futures.dropped(), 1);
        assert_eq!(outputs.dropped(), usize::from(completed));
    });
}

/// A task waits for a value a foreign thread sends while the main thread shuts the runtime
/// down: the wake lands before shutdown, while the task is cancelled and dropped, or after
/// the injector closed (the waker then completes the task itself).
#[test]
fn shutdown_racing_wake() {
    loom::model(|| {
        let rt = runtime(1);
        let futures = DropCounter::new();
        let (tx, rx) = oneshot::<u32>();
        let join = {
            let future = futures.track();
            rt.spawn(async move {
                let _future = future;
                rx.await
            })
        };
        let sender = thread::spawn(move || tx.send(1));
        drop(rt);
        sender.join().unwrap();
        assert!(join.is_finished(), "a task outlived its runtime's shutdown");
        finished(block_on(join));
        assert_eq!(futures.dropped(), 1);
    });
}

/// `shutdown_timeout` with no grace period at all, while a task may be anywhere between
/// queued and suspended: it is cancelled without waiting, and completed as cancelled by
/// whoever holds it last (a worker's drain, the injector drain, or the registry drain).
#[test]
fn shutdown_timeout_zero() {
    loom::model(|| {
        let rt = runtime(1);
        let futures = DropCounter::new();
        let (tx, rx) = oneshot::<u32>();
        let join = {
            let future = futures.track();
            rt.spawn(async move {
                let _future = future;
                rx.await
            })
        };
        rt.shutdown_timeout(Duration::ZERO);
        assert!(join.is_finished(), "a task outlived its runtime's shutdown");
        finished(block_on(join));
        drop(tx);
        assert_eq!(futures.dropped(), 1);
    });
}

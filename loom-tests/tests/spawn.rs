//! Loom models of spawning and joining through the public API: tasks spawned from outside the
//! runtime and from inside a task, joined with `block_on`, on one and two workers. A lost
//! wake-up (of a worker or of a joiner) leaves every thread blocked: loom reports a deadlock.
#![cfg(loom)]

use trellis_loom_tests::{runtime, DropCounter};

/// Two tasks spawned from the main thread onto two workers; the second joins the first (so
/// the join waker may be registered on one worker while the task completes on the other) and
/// `block_on` joins the second. The output crosses both joins and is dropped exactly once, as
/// is each future; then shutdown completes.
#[test]
fn spawn_join_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let futures = DropCounter::new();
        let outputs = DropCounter::new();
        let first = {
            let (future, outputs) = (futures.track(), outputs.clone());
            rt.spawn(async move {
                drop(future);
                outputs.track()
            })
        };
        let second = {
            let future = futures.track();
            rt.spawn(async move {
                drop(future);
                first.await.expect("the first task completed")
            })
        };
        let output = rt.block_on(second).expect("the second task completed");
        assert_eq!(outputs.dropped(), 0);
        drop(output);
        drop(rt);
        assert_eq!(futures.dropped(), 2);
        assert_eq!(outputs.dropped(), 1);
    });
}

/// A task spawns another with `trellis_runtime::spawn` (from inside the runtime: the child
/// goes to the worker's own queue) and awaits it, on two workers (the other one may steal the
/// child); main joins the parent with `block_on`.
#[test]
fn spawn_from_task() {
    loom::model(|| {
        let rt = runtime(2);
        let futures = DropCounter::new();
        let child_future = futures.track();
        let parent = rt.spawn(async move {
            let child = trellis_runtime::spawn(async move {
                drop(child_future);
                21
            });
            child.await.unwrap() * 2
        });
        assert_eq!(rt.block_on(parent).unwrap(), 42);
        drop(rt);
        assert_eq!(futures.dropped(), 1);
    });
}

/// As above, detached: the parent drops the child's handle, and nobody waits for the child
/// before shutdown, which must still run or cancel it and drop its future exactly once.
#[test]
fn spawn_detached_from_task_then_shutdown() {
    loom::model(|| {
        let rt = runtime(1);
        let futures = DropCounter::new();
        let child_future = futures.track();
        let parent = rt.spawn(async move {
            drop(trellis_runtime::spawn(async move {
                drop(child_future);
            }));
        });
        rt.block_on(parent).unwrap();
        drop(rt);
        assert_eq!(futures.dropped(), 1);
    });
}

//! Loom models of `JoinHandle::cancel` racing the task's completion, through the public API.
//! Whatever the order, the join yields the output or `is_cancelled`, the future is dropped
//! exactly once, and so is the output if there is one.
#![cfg(loom)]

use loom::thread;
use trellis_loom_tests::{oneshot, runtime, DropCounter};

/// The task waits for a value a foreign thread sends, while the main thread cancels it: the
/// send, the cancel and the task's polls race; the outcome is consistent either way.
#[test]
fn cancel_racing_completion() {
    loom::model(|| {
        let rt = runtime(1);
        let futures = DropCounter::new();
        let outputs = DropCounter::new();
        let (tx, rx) = oneshot::<()>();
        let join = {
            let (future, outputs) = (futures.track(), outputs.clone());
            rt.spawn(async move {
                let _future = future;
                rx.await.expect("sent");
                outputs.track()
            })
        };
        let sender = thread::spawn(move || tx.send(()));
        join.cancel();
        let completed = match rt.block_on(join) {
            Ok(output) => {
                drop(output);
                true
            }
            Err(e) => {
                assert!(e.is_cancelled(), "{e}");
                false
            }
        };
        sender.join().unwrap();
        drop(rt);
        assert_eq!(futures.dropped(), 1);
        assert_eq!(outputs.dropped(), usize::from(completed));
    });
}

/// Two workers; the task waits for a value that never comes, and the main thread cancels it
/// while its first poll may be queued, running or done: the cancel must wake it (through the
/// injector) so that the root drops it after a poll that saw the cancel; the join yields
/// `is_cancelled` and the future is dropped exactly once.
#[test]
fn cancel_suspended_task_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let futures = DropCounter::new();
        let (tx, rx) = oneshot::<()>();
        let join = {
            let future = futures.track();
            rt.spawn(async move {
                let _future = future;
                rx.await
            })
        };
        join.cancel();
        let err = rt.block_on(join).expect_err("the task cannot complete on its own");
        assert!(err.is_cancelled(), "{err}");
        assert_eq!(futures.dropped(), 1);
        drop(tx);
        drop(rt);
    });
}

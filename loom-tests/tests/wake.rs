//! Loom models of wake-ups that come from outside the runtime: a foreign thread completes a
//! loom-visible oneshot that a task awaits. The wake goes through the injector and must reach
//! a worker that may be finishing the task's poll, searching, or asleep.
#![cfg(loom)]

use loom::thread;
use trellis_loom_tests::{oneshot, runtime, DropCounter};

/// One worker; a foreign thread sends the value the task waits for; `block_on` joins it.
#[test]
fn foreign_thread_wakes_task() {
    loom::model(|| {
        let rt = runtime(1);
        let (tx, rx) = oneshot::<u32>();
        let join = rt.spawn(async move { rx.await.expect("sent") + 1 });
        let sender = thread::spawn(move || tx.send(41));
        assert_eq!(rt.block_on(join).unwrap(), 42);
        sender.join().unwrap();
        drop(rt);
    });
}

/// Two workers; the main thread sends before joining: the wake may come while the task's first
/// poll is running (it is polled again) or after it suspended (it is queued and a sleeper is
/// woken). The task's future is dropped exactly once.
#[test]
fn foreign_wake_two_workers() {
    loom::model(|| {
        let rt = runtime(2);
        let futures = DropCounter::new();
        let future = futures.track();
        let (tx, rx) = oneshot::<u32>();
        let join = rt.spawn(async move {
            let _future = future;
            rx.await.expect("sent")
        });
        tx.send(7);
        assert_eq!(rt.block_on(join).unwrap(), 7);
        drop(rt);
        assert_eq!(futures.dropped(), 1);
    });
}

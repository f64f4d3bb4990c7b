//! Nurseries (DESIGN.md 4), on virtual time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis_runtime::time::{sleep, Instant};
use trellis_runtime::{
    checkpoint, move_on_after, nursery, shield, spawn, CancelScope, CancelSource, Cancelled,
    Nursery, StartError, TaskStatus,
};

const HOUR: Duration = Duration::from_secs(3600);
const SEC: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum TestError {
    Cancelled(#[allow(dead_code)] Cancelled),
    Start(StartError),
    Boom(u32),
}

impl From<Cancelled> for TestError {
    fn from(c: Cancelled) -> Self {
        TestError::Cancelled(c)
    }
}

impl From<StartError> for TestError {
    fn from(e: StartError) -> Self {
        TestError::Start(e)
    }
}

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

type N = Nursery<TestError>;

#[test]
fn children_run_and_the_nursery_waits_for_them() {
    common::on_virtual(|| async {
        let done = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let out = nursery(|n: N| {
            let done = done.clone();
            async move {
                for i in 1..=3u32 {
                    let done = done.clone();
                    n.spawn(async move {
                        sleep(SEC * i).await?;
                        done.fetch_add(1, SeqCst);
                        Ok(())
                    });
                }
                Ok(7)
            }
        })
        .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(done.load(SeqCst), 3);
        assert_eq!(Instant::now() - t0, 3 * SEC);
    });
}

#[test]
fn a_failing_child_cancels_its_siblings_and_the_body() {
    common::on_virtual(|| async {
        let sibling_cancelled = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let out = nursery(|n: N| {
            let seen = sibling_cancelled.clone();
            async move {
                n.spawn(async move {
                    let r = sleep(HOUR).await;
                    if r.is_err() {
                        seen.fetch_add(1, SeqCst);
                    }
                    r?;
                    Ok(())
                });
                n.spawn(async {
                    sleep(SEC).await?;
                    Err::<(), _>(TestError::Boom(1))
                });
                sleep(HOUR).await?;
                Ok(())
            }
        })
        .await;
        let group = out.unwrap_err();
        assert_eq!(group.len(), 1, "the cancellations were stripped: {group}");
        assert!(matches!(group.iter().next(), Some(TestError::Boom(1))));
        assert!(!group.is_cancellation());
        assert_eq!(sibling_cancelled.load(SeqCst), 1);
        assert_eq!(Instant::now() - t0, SEC);
    });
}

#[test]
fn two_failures_appear_in_arrival_order_and_body_fails_too() {
    common::on_virtual(|| async {
        let out = nursery(|n: N| async move {
            n.spawn(async {
                // Cleanup that fails for real while cancelled: reported.
                if let Err(c) = sleep(HOUR).await {
                    drop(c);
                    shield(sleep(SEC)).await.unwrap();
                    return Err(TestError::Boom(2));
                }
                Ok(())
            });
            n.spawn(async {
                sleep(SEC).await?;
                Err::<(), _>(TestError::Boom(1))
            });
            // The body fails as well, during the cancellation, genuinely.
            if sleep(HOUR).await.is_err() {
                return Err(TestError::Boom(3));
            }
            Ok(())
        })
        .await;
        let group = out.unwrap_err();
        let codes: Vec<u32> = group
            .iter()
            .map(|e| match e {
                TestError::Boom(i) => *i,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        // Child 1 failed at 1 s, then the body at once, then child 2 after its cleanup.
        assert_eq!(codes, vec![1, 3, 2]);
        let text = group.to_string();
        assert!(text.starts_with("3 errors in nursery"), "{text}");
        assert!(text.contains("body: Boom(3)"), "{text}");
    });
}

#[test]
fn a_child_spawned_into_a_cancelled_nursery_starts_and_sees_cancelled() {
    common::on_virtual(|| async {
        let started = Arc::new(AtomicUsize::new(0));
        let out = nursery(|n: N| {
            let started = started.clone();
            async move {
                n.cancel_scope().cancel();
                n.spawn(async move {
                    started.fetch_add(1, SeqCst);
                    checkpoint().await?;
                    Ok(())
                });
                Ok(())
            }
        })
        .await;
        assert_eq!(started.load(SeqCst), 1);
        // The nursery's own scope owned the cancellation: nothing is reported.
        assert_eq!(out.unwrap(), ());
    });
}

#[test]
fn late_spawns_from_a_child_are_accepted_and_spawning_after_close_is_an_error() {
    common::on_virtual(|| async {
        let grandchild_ran = Arc::new(AtomicUsize::new(0));
        let kept: Arc<Mutex<Option<N>>> = Arc::new(Mutex::new(None));
        let out = nursery(|n: N| {
            let ran = grandchild_ran.clone();
            let kept = kept.clone();
            async move {
                *kept.lock().unwrap() = Some(n.clone());
                let n2 = n.clone();
                n.spawn(async move {
                    sleep(SEC).await?;
                    // The body has returned by now; the nursery is still open.
                    n2.spawn(async move {
                        sleep(SEC).await?;
                        ran.fetch_add(1, SeqCst);
                        Ok(())
                    });
                    Ok(())
                });
                Ok(())
            }
        })
        .await;
        assert!(out.is_ok());
        assert_eq!(grandchild_ran.load(SeqCst), 1);
        let n = kept.lock().unwrap().take().unwrap();
        assert!(n.try_spawn(async { Ok(()) }).is_err());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            n.spawn(async { Ok(()) });
        }));
        let message = panicked.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("closed nursery"), "{message}");
    });
}

#[test]
fn an_outer_deadline_reaches_grandchildren_through_nested_nurseries() {
    common::on_virtual(|| async {
        let reached = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let out = move_on_after(SEC, {
            let reached = reached.clone();
            async move {
                nursery(|n: N| async move {
                    n.spawn(async move {
                        nursery(|inner: N| async move {
                            inner.spawn(async move {
                                if let Err(c) = sleep(HOUR).await {
                                    reached.fetch_add(1, SeqCst);
                                    return Err(c.into());
                                }
                                Ok(())
                            });
                            Ok(())
                        })
                        .await
                        // The inner group holds the pass-through cancellation: propagate it.
                        .map_err(|g| {
                            assert!(g.is_cancellation());
                            g.into_vec().pop().unwrap()
                        })
                    });
                    Ok(())
                })
                .await
            }
        })
        .await;
        assert_eq!(reached.load(SeqCst), 1);
        assert_eq!(Instant::now() - t0, SEC);
        // The timeout's scope owned the cancellation: it caught.
        assert!(out.is_none(), "{out:?}");
    });
}

#[test]
fn a_child_panic_cancels_siblings_and_is_resumed_in_the_opener() {
    common::on_virtual(|| async {
        let sibling_cancelled = Arc::new(AtomicUsize::new(0));
        let seen = sibling_cancelled.clone();
        let opener = spawn(async move {
            let _ = nursery(|n: N| async move {
                n.spawn(async move {
                    if sleep(HOUR).await.is_err() {
                        seen.fetch_add(1, SeqCst);
                    }
                    Ok(())
                });
                n.spawn(async {
                    sleep(SEC).await?;
                    panic!("child boom");
                    #[allow(unreachable_code)]
                    Ok(())
                });
                Ok(())
            })
            .await;
        });
        let err = opener.await.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "child boom");
        assert_eq!(sibling_cancelled.load(SeqCst), 1);
    });
}

#[test]
fn task_handle_yields_output_or_cancels_one_child() {
    common::on_virtual(|| async {
        let out = nursery(|n: N| async move {
            let a = n.spawn(async { Ok(5u32) });
            let b = n.spawn(async {
                sleep(HOUR).await?;
                Ok(6u32)
            });
            b.cancel();
            assert!(b.await.unwrap_err().is_cancelled());
            Ok(a.await.unwrap())
        })
        .await;
        // Cancelling one child is not a failure of the nursery.
        assert_eq!(out.unwrap(), 5);
    });
}

#[test]
fn every_child_future_is_dropped_exactly_once() {
    common::on_virtual(|| async {
        let tracker = common::Tracker::new();
        let out = nursery(|n: N| {
            let tracker = tracker.clone();
            async move {
                for i in 0..50u32 {
                    n.spawn(tracker.track(async move {
                        sleep(SEC * (i % 5)).await?;
                        if i == 42 {
                            return Err(TestError::Boom(i));
                        }
                        sleep(HOUR).await?;
                        Ok(())
                    }));
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(out.unwrap_err().len(), 1);
        assert_eq!(tracker.created(), 50);
        tracker.assert_all_dropped();
    });
}

#[test]
fn hundred_thousand_children() {
    let rt = common::virtual_runtime(2);
    let count = rt.block_on(async {
        let count = Arc::new(AtomicUsize::new(0));
        nursery(|n: N| {
            let count = count.clone();
            async move {
                for _ in 0..100_000 {
                    let count = count.clone();
                    n.spawn(async move {
                        count.fetch_add(1, SeqCst);
                        Ok(())
                    });
                }
                Ok(())
            }
        })
        .await
        .unwrap();
        count.load(SeqCst)
    });
    assert_eq!(count, 100_000);
}

#[test]
fn start_returns_the_started_value_and_keeps_the_nursery_open() {
    common::on_virtual(|| async {
        let t0 = Instant::now();
        let out = nursery(|n: N| async move {
            let port = n
                .start(|status: TaskStatus<u16>| async move {
                    sleep(SEC).await?;
                    status.started(8080);
                    sleep(SEC).await?;
                    Ok(())
                })
                .await?;
            assert_eq!(Instant::now() - t0, SEC);
            Ok(port)
        })
        .await;
        assert_eq!(out.unwrap(), 8080);
        assert_eq!(Instant::now() - t0, 2 * SEC, "the started task ran on in the nursery");
    });
}

#[test]
fn start_errors_come_out_unwrapped_and_not_starting_is_an_error() {
    common::on_virtual(|| async {
        let out = nursery(|n: N| async move {
            let r = n.start(|_status: TaskStatus<u16>| async { Err(TestError::Boom(9)) }).await;
            assert!(matches!(r, Err(TestError::Boom(9))));
            let r = n.start(|_status: TaskStatus<u16>| async { Ok(()) }).await;
            assert!(matches!(r, Err(TestError::Start(e)) if e.is_not_started()));
            Ok(())
        })
        .await;
        // Neither entered the group nor cancelled the nursery.
        assert!(out.is_ok());
    });
}

#[test]
fn cancelling_the_nursery_before_started_does_not_affect_the_starting_child() {
    common::on_virtual(|| async {
        let out = nursery(|outer: N| async move {
            // The target nursery lives in a child of `outer`, held open until told to close.
            let (target_tx, target_rx) = common::oneshot::<N>();
            let (close_tx, close_rx) = common::oneshot::<()>();
            outer.spawn(async move {
                let r = nursery(|target: N| async move {
                    target_tx.send(target.clone());
                    close_rx.await;
                    Ok(())
                })
                .await;
                // Its body was dropped by the cancellation its own scope owns (4.5): a group
                // holding one inert cancellation for the body.
                let group = r.unwrap_err();
                assert!(group.is_cancellation() && group.len() == 1, "{group:?}");
                Ok(())
            });
            let target = target_rx.await.expect("the target nursery opened");
            let target2 = target.clone();
            let value = target
                .start(|status: TaskStatus<u32>| async move {
                    target2.cancel_scope().cancel();
                    // Still under the caller's scopes: not cancelled.
                    sleep(SEC).await?;
                    status.started(1);
                    // Now in the cancelled target nursery.
                    assert!(checkpoint().await.is_err());
                    Ok(())
                })
                .await;
            assert_eq!(value.unwrap(), 1);
            close_tx.send(());
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
    });
}

#[test]
fn dropping_an_unfinished_nursery_cancels_its_children_without_blocking() {
    common::on_virtual(|| async {
        let cancelled = Arc::new(AtomicUsize::new(0));
        let seen = cancelled.clone();
        let fut = nursery(|n: N| async move {
            n.spawn(async move {
                if let Err(c) = sleep(HOUR).await {
                    seen.fetch_add(1, SeqCst);
                    return Err(c.into());
                }
                Ok(())
            });
            sleep(HOUR).await?;
            Ok(())
        });
        // Lost a race against a shorter future: the nursery future is dropped.
        let r = futures::future::select(Box::pin(fut), Box::pin(sleep(SEC))).await;
        assert!(matches!(r, futures::future::Either::Right(_)));
        drop(r); // drops the unfinished nursery future (select hands it back)
        sleep(SEC).await.unwrap();
        assert_eq!(cancelled.load(SeqCst), 1);
    });
}

#[test]
fn the_nursery_scope_can_be_cancelled_and_the_body_is_dropped_at_once() {
    common::on_virtual(|| async {
        let t0 = Instant::now();
        let scope = CancelScope::new();
        let out = scope
            .run({
                let scope = scope.clone();
                async move {
                    spawn(async move {
                        sleep(SEC).await.unwrap();
                        scope.cancel();
                    });
                    nursery(|_n: N| async {
                        futures::future::pending::<()>().await;
                        Ok(())
                    })
                    .await
                }
            })
            .await;
        assert_eq!(Instant::now() - t0, SEC);
        // The outer scope owns the cancellation; the body's group is a pass-through, which
        // the outer scope catches.
        assert!(out.is_none(), "the outer scope catches the pass-through: {out:?}");
        assert!(scope.cancelled_caught());
    });
}

#[test]
fn a_start_child_that_started_as_its_callers_timeout_fired_is_not_dropped() {
    // The caller's timeout fires while the child sits in a shield; in the same poll the child
    // calls `started` and moves under the nursery, which nobody cancelled: its next `Pending`
    // must not drop it (the settled word read when that poll began is stale), and its error
    // reaches the group.
    common::on_virtual(|| async {
        let out = nursery(|n: N| async move {
            let _ = move_on_after(SEC, async {
                n.start(|status: TaskStatus<()>| async move {
                    shield(sleep(2 * SEC)).await.unwrap();
                    status.started(());
                    sleep(SEC).await?;
                    Err(TestError::Boom(1))
                })
                .await
            })
            .await;
            Ok(())
        })
        .await;
        let group = out.expect_err("the started child's failure is reported");
        assert_eq!(group.len(), 1);
        assert!(matches!(group.iter().next(), Some(TestError::Boom(1))), "{group}");
    });
}

#[test]
fn failure_cancellation_names_the_failing_task() {
    common::on_virtual(|| async {
        let source = Arc::new(Mutex::new(None));
        let out = nursery(|n: N| {
            let source = source.clone();
            async move {
                n.spawn(async { Err::<(), _>(TestError::Boom(1)) });
                if let Err(c) = sleep(HOUR).await {
                    *source.lock().unwrap() = Some((c.source().clone(), c.to_string()));
                    return Err(c.into());
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(out.unwrap_err().len(), 1);
        let (source, shown) = source.lock().unwrap().take().unwrap();
        assert!(
            matches!(&source, CancelSource::Nursery { failed_task } if failed_task.starts_with("task ")),
            "{source:?}"
        );
        assert!(
            shown.starts_with("cancelled: nursery (task ") && !shown.contains("task task"),
            "{shown}"
        );
    });
}

/// Sets its flag when dropped, after a pause that gives a nursery returning too early time to
/// be seen doing it (the pause widens a race window; nothing asserts on its length).
struct SlowDropGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SlowDropGuard {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(20));
        self.0.store(true, SeqCst);
    }
}

/// A hand-written child future that completes at once and holds a guard in its fields (dropped
/// with the future, after it returned `Ready`).
struct ReadyHolding(#[allow(dead_code)] SlowDropGuard);

impl std::future::Future for ReadyHolding {
    type Output = Result<(), TestError>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn a_child_future_is_dropped_before_its_nursery_returns() {
    // The nursery runs in `block_on`, on its own thread, so a child counted out too early lets
    // it return while a worker is still dropping the child's future.
    let rt = common::virtual_runtime(2);
    rt.block_on(async {
        use std::sync::atomic::AtomicBool;
        // Completed: the future (and what its fields hold) is dropped before the child counts
        // out.
        let done = Arc::new(AtomicBool::new(false));
        let out = nursery(|n: N| {
            let done = done.clone();
            async move {
                n.spawn(ReadyHolding(SlowDropGuard(done)));
                Ok(())
            }
        })
        .await;
        assert!(out.is_ok());
        assert!(done.load(SeqCst), "a finished child's future outlived its nursery");
        // Dropped while suspended in a foreign future (the cancelled root drops it).
        let dropped = Arc::new(AtomicBool::new(false));
        let out = nursery(|n: N| {
            let dropped = dropped.clone();
            async move {
                n.spawn(async move {
                    let _guard = SlowDropGuard(dropped);
                    futures::future::pending::<()>().await;
                    Ok(())
                });
                sleep(SEC).await?;
                n.cancel_scope().cancel();
                Ok(())
            }
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert!(dropped.load(SeqCst), "a dropped child's future outlived its nursery");
    });
}

// ---- children whose root status node is created lazily (4.1) ------------------------------
//
// A nursery child gets its root node only when it first needs one (a cancel point that sees
// a cancellation, a scope, a first poll that ends `Pending` or begins under a cancelled
// nursery); these pin down that it behaves exactly as if the root had existed from spawn.

#[test]
fn a_child_that_cancels_its_own_nursery_fails_its_next_cancel_point_in_the_same_poll() {
    common::on_virtual(|| async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = nursery(|n: N| {
            let seen = seen.clone();
            async move {
                let inner = n.clone();
                n.spawn(async move {
                    inner.cancel_scope().cancel();
                    for _ in 0..2 {
                        // Level-triggered: every cancel point fails, without a poll between.
                        let point = checkpoint().await;
                        seen.lock().unwrap().push(point.is_err());
                    }
                    checkpoint().await?;
                    Ok(())
                });
                Ok(())
            }
        })
        .await;
        assert_eq!(*seen.lock().unwrap(), [true, true]);
        assert_eq!(out.unwrap(), (), "the nursery's own cancellation is stripped");
    });
}

#[test]
fn a_child_waiting_on_a_foreign_future_is_dropped_when_its_nursery_is_cancelled() {
    common::on_virtual(|| async {
        let tracker = common::Tracker::new();
        let t0 = Instant::now();
        let out = nursery(|n: N| {
            let tracker = tracker.clone();
            async move {
                // No cancel point: only the child's root (linked when its first poll ended
                // `Pending`) lets the cancel below reach it.
                n.spawn(tracker.track(async {
                    futures::future::pending::<()>().await;
                    Ok(())
                }));
                let canceller = n.clone();
                spawn(async move {
                    sleep(SEC).await.unwrap();
                    canceller.cancel_scope().cancel();
                });
                Ok(())
            }
        })
        .await;
        assert_eq!(out.unwrap(), ());
        assert_eq!(Instant::now() - t0, SEC, "the cancel ends the wait at once");
        // Woken by the cancel, polled once more as a cancelled task (3.10), then dropped.
        assert_eq!(tracker.polls(), 2);
        tracker.assert_all_dropped();
    });
}

#[test]
fn a_child_waiting_on_a_foreign_future_in_a_cancelled_nursery_is_dropped_after_one_poll() {
    common::on_virtual(|| async {
        let tracker = common::Tracker::new();
        let out = nursery(|n: N| {
            let tracker = tracker.clone();
            async move {
                n.cancel_scope().cancel();
                n.spawn(tracker.track(async {
                    futures::future::pending::<()>().await;
                    Ok(())
                }));
                Ok(())
            }
        })
        .await;
        assert_eq!(out.unwrap(), ());
        assert_eq!(tracker.polls(), 1, "it starts (4.7) and its root drops it after that poll");
        tracker.assert_all_dropped();
    });
}

#[test]
fn a_child_whose_nursery_is_cancelled_during_its_first_poll_is_polled_again_and_dropped() {
    common::on_virtual(|| async {
        let tracker = common::Tracker::new();
        let out = nursery(|n: N| {
            let tracker = tracker.clone();
            async move {
                let inner = n.clone();
                // The cancel lands before the child's root exists and the child ignores it
                // (no cancel point): its root, linked at the end of the poll, inherits the
                // cancellation, and the task is polled again as a cancelled one and dropped.
                n.spawn(tracker.track(async move {
                    inner.cancel_scope().cancel();
                    futures::future::pending::<()>().await;
                    Ok(())
                }));
                Ok(())
            }
        })
        .await;
        assert_eq!(out.unwrap(), ());
        assert_eq!(tracker.polls(), 2);
        tracker.assert_all_dropped();
    });
}

#[test]
fn cancelling_a_child_before_its_first_poll_strips_its_cancellation() {
    let rt = common::virtual_runtime(1);
    rt.block_on(async {
        let tracker = common::Tracker::new();
        let out = nursery(|n: N| {
            let tracker = tracker.clone();
            async move {
                // One worker, busy with this body: the child cannot have run yet.
                let child = n.spawn(tracker.track(async {
                    checkpoint().await?;
                    Ok(1u32)
                }));
                child.cancel();
                let joined = child.await;
                assert!(joined.unwrap_err().is_cancelled());
                Ok(())
            }
        })
        .await;
        assert_eq!(out.unwrap(), (), "a cancelled child is not a failure of its nursery");
        tracker.assert_all_dropped();
    });
}

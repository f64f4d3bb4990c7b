//! Cancel scopes, shields, deadlines and timeouts (DESIGN.md 3), on virtual time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use trellis_runtime::time::{sleep, Instant};
use trellis_runtime::{
    checkpoint, current_effective_deadline, fail_after, move_on_after, move_on_at, shield, spawn,
    CancelScope, CancelSource, Cancelled,
};

const HOUR: Duration = Duration::from_secs(3600);
const SEC: Duration = Duration::from_secs(1);

#[test]
fn cancel_is_level_triggered() {
    common::on_virtual(|| async {
        let scope = CancelScope::new();
        let failures = scope
            .run({
                let scope = scope.clone();
                async move {
                    scope.cancel();
                    let mut failures = 0;
                    for _ in 0..3 {
                        if sleep(SEC).await.is_err() {
                            failures += 1;
                        }
                        if checkpoint().await.is_err() {
                            failures += 1;
                        }
                    }
                    failures
                }
            })
            .await;
        // Every cancel point failed, and the output carried no live `Cancelled`: not caught.
        assert_eq!(failures, Some(6));
        assert!(scope.cancel_called());
        assert!(!scope.cancelled_caught());
    });
}

#[test]
fn cancelled_scope_without_cancel_point_is_not_caught() {
    common::on_virtual(|| async {
        let scope = CancelScope::new();
        let out = scope
            .run({
                let scope = scope.clone();
                async move {
                    scope.cancel();
                    7
                }
            })
            .await;
        assert_eq!(out, Some(7));
        assert!(scope.cancel_called() && !scope.cancelled_caught());
        // Nothing leaks outside the scope.
        assert!(checkpoint().await.is_ok());
    });
}

#[test]
fn propagated_cancelled_is_caught_by_its_scope() {
    common::on_virtual(|| async {
        let scope = CancelScope::new();
        let out = scope
            .run({
                let scope = scope.clone();
                async move {
                    scope.cancel_with_reason("enough");
                    let e = checkpoint().await.unwrap_err();
                    assert_eq!(e.source(), &CancelSource::Explicit);
                    assert_eq!(e.to_string(), "cancelled: explicit (enough)");
                    Err::<(), Cancelled>(e)
                }
            })
            .await;
        assert!(out.is_none());
        assert!(scope.cancelled_caught());
        assert!(checkpoint().await.is_ok());
    });
}

#[test]
fn embedded_cancelled_is_still_a_cancellation() {
    common::on_virtual(|| async {
        // A `Cancelled` inside an `io::Error` still propagates: the scope catches.
        let scope = CancelScope::new();
        let out = scope
            .run({
                let scope = scope.clone();
                async move {
                    scope.cancel();
                    let e: std::io::Error = checkpoint().await.unwrap_err().into();
                    Err::<(), std::io::Error>(e)
                }
            })
            .await;
        assert!(out.is_none() && scope.cancelled_caught());
    });
}

#[test]
fn suspended_future_is_dropped_at_once() {
    common::on_virtual(|| async {
        let t0 = Instant::now();
        let out = move_on_after(SEC, futures::future::pending::<()>()).await;
        assert!(out.is_none());
        assert_eq!(Instant::now() - t0, SEC, "move_on_after ended exactly at its deadline");
    });
}

#[test]
fn nested_both_cancelled_outer_catches() {
    common::on_virtual(|| async {
        let outer = CancelScope::new();
        let inner = CancelScope::new();
        let out = outer
            .run({
                let (outer, inner) = (outer.clone(), inner.clone());
                async move {
                    inner
                        .run({
                            let inner = inner.clone();
                            async move {
                                outer.cancel();
                                inner.cancel();
                                sleep(HOUR).await
                            }
                        })
                        .await
                }
            })
            .await;
        assert!(out.is_none());
        assert!(outer.cancelled_caught(), "the outermost cancelled scope owns it");
        assert!(!inner.cancelled_caught());
    });
}

#[test]
fn shielded_scope_blocks_outer_but_obeys_its_own_deadline() {
    common::on_virtual(|| async {
        let outer = CancelScope::new();
        let t0 = Instant::now();
        let out = outer
            .run({
                let outer = outer.clone();
                async move {
                    outer.cancel();
                    let inner = CancelScope::with_timeout(SEC).shielded();
                    let r = inner
                        .run(async {
                            // The outer cancel does not reach here...
                            assert!(checkpoint().await.is_ok());
                            // ...but the shield's own deadline does.
                            sleep(HOUR).await
                        })
                        .await;
                    assert!(r.is_none() && inner.cancelled_caught());
                    assert_eq!(Instant::now() - t0, SEC);
                    checkpoint().await
                }
            })
            .await;
        assert!(out.is_none() && outer.cancelled_caught());
    });
}

#[test]
fn unshielding_wakes_a_blocked_task_at_once() {
    common::on_virtual(|| async {
        let outer = CancelScope::new();
        let inner = CancelScope::new().shielded();
        let t0 = Instant::now();
        let unshield = spawn({
            let inner = inner.clone();
            async move {
                sleep(SEC).await.unwrap();
                inner.set_shield(false);
            }
        });
        let out = outer
            .run({
                let (outer, inner) = (outer.clone(), inner.clone());
                async move {
                    outer.cancel();
                    inner.run(sleep(HOUR)).await
                }
            })
            .await;
        assert!(out.is_none() && outer.cancelled_caught());
        assert_eq!(Instant::now() - t0, SEC);
        unshield.await.unwrap();
    });
}

#[test]
fn moving_a_deadline_earlier_fires_it_and_later_does_not_uncancel() {
    common::on_virtual(|| async {
        let t0 = Instant::now();
        let scope = CancelScope::with_deadline(t0 + HOUR);
        let mover = spawn({
            let scope = scope.clone();
            async move {
                sleep(SEC).await.unwrap();
                scope.set_deadline(Some(t0 + 2 * SEC));
            }
        });
        let out = scope
            .run({
                let scope = scope.clone();
                async move {
                    let r = sleep(HOUR).await;
                    assert!(r.is_err());
                    // Moving it later after it fired does not un-cancel.
                    scope.set_deadline(Some(t0 + 10 * HOUR));
                    assert!(checkpoint().await.is_err());
                    r
                }
            })
            .await;
        assert!(out.is_none());
        assert_eq!(Instant::now() - t0, 2 * SEC);
        mover.await.unwrap();
    });
}

#[test]
fn relative_deadline_counts_from_entry() {
    common::on_virtual(|| async {
        let scope = CancelScope::with_timeout(2 * SEC);
        assert_eq!(scope.deadline(), None);
        sleep(5 * SEC).await.unwrap();
        let entered = Instant::now();
        let out = scope.run(sleep(HOUR)).await;
        assert!(out.is_none());
        assert_eq!(scope.deadline(), Some(entered + 2 * SEC));
        assert_eq!(Instant::now() - entered, 2 * SEC);
    });
}

#[test]
fn fail_after_times_out_exactly_when_its_scope_caught() {
    common::on_virtual(|| async {
        assert!(fail_after(SEC, sleep(HOUR)).await.is_err());
        assert_eq!(fail_after(HOUR, async { 3 }).await, Ok(3));
        // The deadline passes with no cancel point reached: not caught, so not timed out.
        let r = fail_after(Duration::ZERO, async { 4 }).await;
        assert_eq!(r, Ok(4));
        let e: std::io::Error = fail_after(SEC, sleep(HOUR)).await.unwrap_err().into();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    });
}

#[test]
fn timeout_around_futures_unordered_ends_on_time_and_every_sleep_sees_cancelled() {
    common::on_virtual(|| async {
        let saw_cancelled = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let out = move_on_after(SEC, {
            let saw = saw_cancelled.clone();
            async move {
                let mut sleeps: FuturesUnordered<_> = (1..=10u64)
                    .map(|i| {
                        let saw = saw.clone();
                        async move {
                            if sleep(HOUR * i as u32).await.is_err() {
                                saw.fetch_add(1, SeqCst);
                            }
                        }
                    })
                    .collect();
                while sleeps.next().await.is_some() {}
                futures::future::pending::<()>().await
            }
        })
        .await;
        assert!(out.is_none());
        assert_eq!(Instant::now() - t0, SEC);
        assert_eq!(saw_cancelled.load(SeqCst), 10, "every sleep saw Cancelled");
    });
}

#[test]
fn inner_timeout_inside_cancelled_outer_does_not_claim_it() {
    common::on_virtual(|| async {
        let outer = CancelScope::new();
        let inner_caught = Arc::new(AtomicUsize::new(0));
        let out = outer
            .run({
                let (outer, inner_caught) = (outer.clone(), inner_caught.clone());
                async move {
                    outer.cancel();
                    let inner = CancelScope::with_timeout(SEC);
                    let r = inner.run(sleep(HOUR)).await;
                    if inner.cancelled_caught() {
                        inner_caught.fetch_add(1, SeqCst);
                    }
                    r
                }
            })
            .await;
        assert!(out.is_none() && outer.cancelled_caught());
        assert_eq!(inner_caught.load(SeqCst), 0);
    });
}

#[test]
fn cleanup_can_await_inside_shield_and_not_outside() {
    common::on_virtual(|| async {
        let cleaned = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let out = move_on_after(SEC, {
            let cleaned = cleaned.clone();
            async move {
                if let Err(cancelled) = sleep(HOUR).await {
                    // An unshielded await in cleanup fails at once.
                    assert!(sleep(SEC).await.is_err());
                    // Inside a shield (bounded by its own timeout) it works.
                    shield(async {
                        sleep(SEC).await.unwrap();
                        cleaned.fetch_add(1, SeqCst);
                    })
                    .await;
                    return Err(cancelled);
                }
                Ok(())
            }
        })
        .await;
        assert!(out.is_none());
        assert_eq!(cleaned.load(SeqCst), 1);
        assert_eq!(Instant::now() - t0, 2 * SEC, "the shielded cleanup ran its second");
    });
}

#[test]
fn current_effective_deadline_is_the_nearest_up_to_a_shield() {
    common::on_virtual(|| async {
        assert_eq!(current_effective_deadline(), None);
        let t0 = Instant::now();
        move_on_at(t0 + HOUR, async move {
            assert_eq!(current_effective_deadline(), Some(t0 + HOUR));
            move_on_at(t0 + 2 * HOUR, async move {
                assert_eq!(current_effective_deadline(), Some(t0 + HOUR));
                shield(async {
                    assert_eq!(current_effective_deadline(), None);
                })
                .await;
            })
            .await;
            let scope = CancelScope::new();
            scope
                .run({
                    let scope = scope.clone();
                    async move {
                        scope.cancel();
                        assert!(current_effective_deadline().unwrap() < t0);
                    }
                })
                .await;
        })
        .await
        .unwrap();
    });
}

#[test]
fn join_handle_cancel_reaches_scopes_and_stops_at_shields() {
    common::on_virtual(|| async {
        let (tx, rx) = common::oneshot::<()>();
        let h = spawn(async move {
            let shielded = shield(async {
                // Blocked in a shield when the task is cancelled: not reached.
                sleep(SEC).await
            })
            .await;
            assert!(shielded.is_ok());
            tx.send(());
            // Inside a plain scope, the task's cancel reaches.
            CancelScope::new().run(sleep(HOUR)).await
        });
        sleep(Duration::from_millis(1)).await.unwrap();
        h.cancel();
        rx.await;
        assert!(h.await.unwrap_err().is_cancelled());
    });
}

#[test]
#[should_panic(expected = "entered only once")]
fn entering_a_scope_twice_panics() {
    let rt = common::virtual_runtime(1);
    rt.block_on(async {
        let scope = CancelScope::new();
        scope.run(async {}).await;
        scope.run(async {}).await;
    });
}

#[test]
fn cancel_from_another_thread_wakes_a_blocked_scope() {
    let rt = common::runtime(2);
    let scope = CancelScope::new();
    let canceller = std::thread::spawn({
        let scope = scope.clone();
        move || {
            std::thread::sleep(Duration::from_millis(20));
            scope.cancel();
        }
    });
    let out = rt.block_on(scope.run(sleep(HOUR)));
    assert!(out.is_none() && scope.cancelled_caught());
    canceller.join().unwrap();
    assert_eq!(rt.handle().metrics().timers, 0);
}

// ---- lazy timeouts: a `move_on_*` / `fail_*` gets a status node only when needed ----------

#[test]
fn nested_lazy_timeouts_link_a_nursery_under_both() {
    // The nursery inside two timeouts, on their first poll, needs a node: both timeouts get
    // theirs, outer first, and the outer deadline reaches the nursery's child.
    common::on_virtual(|| async {
        let start = Instant::now();
        let out = move_on_after(10 * SEC, async {
            move_on_after(HOUR, async {
                trellis_runtime::nursery(|n: trellis_runtime::Nursery<Cancelled>| async move {
                    n.spawn(async {
                        sleep(HOUR).await?;
                        Ok(())
                    });
                    Ok::<(), Cancelled>(())
                })
                .await
            })
            .await
        })
        .await;
        assert!(out.is_none(), "the outer timeout catches: {out:?}");
        assert_eq!(Instant::now() - start, 10 * SEC);
    });
}

#[test]
fn lazy_timeout_inside_cancelled_scope_does_not_catch() {
    common::on_virtual(|| async {
        let scope = CancelScope::new();
        let out = scope
            .run({
                let scope = scope.clone();
                async move {
                    scope.cancel();
                    // The timeout's cancel point sees the outer cancellation; the timeout does
                    // not own it, so it returns the error and the outer scope catches.
                    let inner = move_on_after(HOUR, checkpoint()).await;
                    assert!(matches!(inner, Some(Err(_))), "{inner:?}");
                    inner
                }
            })
            .await;
        assert!(out.is_none());
        assert!(scope.cancelled_caught());
    });
}

#[test]
fn lazy_timeout_reports_its_deadline_on_first_poll() {
    common::on_virtual(|| async {
        let start = Instant::now();
        let seen = move_on_after(5 * SEC, async {
            move_on_after(HOUR, async { current_effective_deadline() }).await
        })
        .await;
        assert_eq!(seen, Some(Some(Some(start + 5 * SEC))));
        let at = Instant::now() + 7 * SEC;
        let seen = move_on_at(at, async { current_effective_deadline() }).await;
        assert_eq!(seen, Some(Some(at)));
    });
}

#[test]
fn scope_entered_before_moves_under_a_lazy_timeout() {
    // Status follows the poll (3.4): a scope first polled directly in the task, then polled
    // inside a timeout's first poll, relinks under the timeout (which gets its node for it).
    common::on_virtual(|| async {
        let scope = CancelScope::new().shielded();
        let mut inner = Box::pin(scope.run(async {
            let _ = sleep(HOUR).await;
            // The shield kept the timeout out: the cleanup finishes, then the scope ends.
            "cleaned up"
        }));
        assert!(futures::poll!(inner.as_mut()).is_pending());
        let start = Instant::now();
        let out = move_on_after(SEC, inner.as_mut()).await;
        // The shielded scope, linked under the timeout now, is a guard: the timeout could not
        // drop it (it would have at 1 s otherwise), and it is not cancelled, so it sleeps its
        // hour; no `Cancelled` reached the timeout's exit, so it does not catch.
        assert_eq!(out, Some(Some("cleaned up")));
        assert_eq!(Instant::now() - start, HOUR);
    });
}

#[test]
fn lazy_timeout_around_a_ready_operation_leaves_no_timer_and_no_node() {
    common::on_virtual(|| async {
        for i in 0..1_000 {
            assert_eq!(move_on_after(SEC, std::future::ready(i)).await, Some(i));
            assert_eq!(fail_after(SEC, async { i }).await, Ok(i));
        }
        // Nothing was left under the task: a timeout created now still works.
        let start = Instant::now();
        assert!(move_on_after(SEC, sleep(HOUR)).await.is_none());
        assert_eq!(Instant::now() - start, SEC);
    });
}

#[test]
fn panic_in_a_lazy_timeout_first_poll_is_the_task_panic() {
    common::on_virtual(|| async {
        let outer = CancelScope::new();
        let joined = spawn({
            let outer = outer.clone();
            async move {
                outer
                    .run(move_on_after(HOUR, async {
                        // Materializes the timeout's node, then unwinds through its first poll.
                        let _ = current_effective_deadline();
                        panic!("boom");
                    }))
                    .await
            }
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
    });
}

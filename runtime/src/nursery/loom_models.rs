//! Loom models of nurseries racing other threads (DESIGN.md 4.7, 4.8), and of a scope's dropper
//! racing a shield (3.10), on a real runtime. (`cancel/loom_models.rs` drives the status tree
//! directly; these run the real nursery, `start` and scope code, so they also cover the nursery
//! state's lock, the hand-offs between the body, the children and `start`, and the task roots.)
//!
//! Each nursery model runs one nursery in `block_on` on a one-worker runtime (the children run
//! on the worker) and races it against one foreign loom thread that holds a clone of the
//! `Nursery` or a handle on one of its scopes (the last model runs a plain task instead). A
//! child is an instrumented future ([`Trace`]): it records its first poll, what its cancel
//! points returned, and the drop of its future (dropped once, whether it finished, was dropped
//! by its task root, or was refused before it ever ran). A child that nothing wakes or drops
//! leaves the nursery waiting forever, which loom reports as a deadlock; a node left linked or
//! a waker left registered keeps a task or a node alive, which loom reports as a leaked `Arc`
//! when the model ends. The counters are loom atomics used with `Relaxed` only: what a model
//! reads after the nursery returned must be ordered by the nursery itself.
//!
//! - [`cancel_racing_spawn_into_nursery`]: the body cancels the nursery's scope and returns
//!   while a foreign thread spawns a child through a clone. The spawn is refused (the nursery
//!   already closed: the child never runs) or accepted, and then the nursery waits for the
//!   child, which ends cancelled; spawned after the cancel, it starts and its first cancel
//!   point reports `Cancelled` (4.7). The child's cancellation is the nursery's: stripped.
//! - [`close_racing_late_spawn`]: the body spawns a child that returns at once and then
//!   returns itself, so the nursery closes as soon as that child is done, while a foreign
//!   thread spawns a second child through a clone: either the spawn is refused and that child
//!   never runs, or it is accepted and the nursery returns only after it ended. Never a child
//!   running after the nursery returned, never a lost child.
//! - [`lazy_root_link_racing_nursery_cancel`]: a child whose root node is lazy (4.1) runs its
//!   first poll (a cancel point, then a wait only cancellation ends) while a foreign thread
//!   cancels the nursery. The root is linked under the nursery when the poll ends `Pending`
//!   (or earlier, if the cancel point sees the nursery cancelled): the cancel must reach the
//!   waiting child whichever comes first, so its root drops it and the nursery returns.
//! - [`started_racing_nursery_cancel`]: the body calls `start` inside a shield while a foreign
//!   thread cancels the nursery. Before `started` the child sits under the shield, which the
//!   cancel does not cross; after it the child is the nursery's, so the cancel reaches it
//!   wherever the move falls: it is woken and ends (4.8).
//! - [`started_racing_caller_cancel`]: the body calls `start` inside a scope of its own while a
//!   foreign thread cancels that scope. Once `started` returned the child belongs to the
//!   nursery (it was moved before `started` returned), so that cancel does not reach it.
//! - [`shield_off_mid_poll_real_dropper`]: a task runs a blocking cancel point below a
//!   shielded scope inside a cancelled one while a foreign thread lowers the shield; the outer
//!   scope's dropper does not drop the inner future before a poll in which that cancel point
//!   could report `Cancelled`.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo
//! test --profile loom -p trellis-runtime --lib nursery::loom_models`.

use std::future::{pending, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use loom::thread;

use super::{nursery, Nursery, TaskStatus};
use crate::cancel::loom_models::Counter;
use crate::cancel::scope::shield;
use crate::{checkpoint, CancelScope, Cancelled, Runtime};

fn runtime() -> Runtime {
    Runtime::builder().worker_threads(1).build().expect("loom threads start")
}

// ---- instruments ------------------------------------------------------------------------------

/// What one child did.
#[derive(Clone)]
struct Trace {
    polled: Counter,
    /// Cancel points that returned `Ok` / `Err(Cancelled)`, in any order.
    passed: Counter,
    cancelled: Counter,
    /// Its future was dropped (after finishing, by its task root, or refused by the nursery).
    dropped: Counter,
}

impl Trace {
    fn new() -> Trace {
        Trace {
            polled: Counter::new(),
            passed: Counter::new(),
            cancelled: Counter::new(),
            dropped: Counter::new(),
        }
    }

    /// A cancel point; records what it returned.
    async fn cancel_point(&self) -> io::Result<()> {
        let result = checkpoint().await;
        match &result {
            Ok(()) => self.passed.incr(),
            Err(_) => self.cancelled.incr(),
        }
        Ok(result?)
    }

    /// Counts the drop of the future that holds it.
    fn drop_guard(&self) -> DropGuard {
        DropGuard(self.dropped.clone())
    }
}

struct DropGuard(Counter);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.incr();
    }
}

/// A child: one cancel point, then, if `wait`, a wait that only cancellation ends (its task
/// root drops it), else `Ok`.
fn child(trace: &Trace, wait: bool) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let (trace, guard) = (trace.clone(), trace.drop_guard());
    async move {
        let _guard = guard;
        trace.polled.incr();
        trace.cancel_point().await?;
        if wait {
            pending::<()>().await;
        }
        Ok(())
    }
}

// ---- 4.7: cancel racing a spawn ---------------------------------------------------------------

#[test]
fn cancel_racing_spawn_into_nursery() {
    loom::model(|| {
        let rt = runtime();
        let trace = Trace::new();
        let (spawner, dropped_at_return) = rt.block_on({
            let trace = trace.clone();
            async move {
                let late = trace.clone();
                let spawner = nursery(|n: Nursery<io::Error>| async move {
                    let spawner = {
                        let n = n.clone();
                        thread::spawn(move || {
                            let cancelled_before = n.cancel_scope().cancel_called();
                            (cancelled_before, n.try_spawn(child(&late, true)).is_ok())
                        })
                    };
                    n.cancel_scope().cancel();
                    Ok(spawner)
                })
                .await
                .expect("the child's cancellation is the nursery's own: stripped (4.4)");
                (spawner, trace.dropped.get())
            }
        });
        let (cancelled_before, accepted) = spawner.join().unwrap();
        drop(rt);

        assert_eq!(trace.dropped.get(), 1, "the child's future is dropped exactly once");
        if accepted {
            assert_eq!(dropped_at_return, 1, "the nursery returned before its child ended");
            assert_eq!(trace.polled.get(), 1, "a child spawned into a nursery starts (4.7)");
            if cancelled_before {
                assert_eq!(trace.cancelled.get(), 1, "its first cancel point sees the cancel");
                assert_eq!(trace.passed.get(), 0);
            }
        } else {
            assert_eq!(trace.polled.get(), 0, "a refused child never runs");
        }
    });
}

// ---- 4.1: a child's lazy root linked racing a nursery cancel ----------------------------------

#[test]
fn lazy_root_link_racing_nursery_cancel() {
    loom::model(|| {
        let rt = runtime();
        let trace = Trace::new();
        let canceller = rt.block_on({
            let trace = trace.clone();
            async move {
                let inside = trace.clone();
                let canceller = nursery(|n: Nursery<io::Error>| async move {
                    // The child has no root node until its first poll ends `Pending` (or its
                    // cancel point sees the nursery cancelled): the cancel below either finds
                    // the root linked and wakes the task, or the link finds the nursery
                    // cancelled and the task polls itself again; either way its root drops it.
                    drop(n.spawn(child(&inside, true)));
                    let n = n.clone();
                    Ok(thread::spawn(move || n.cancel_scope().cancel()))
                })
                .await
                .expect("the child's cancellation is the nursery's own: stripped (4.4)");
                assert_eq!(trace.dropped.get(), 1, "the nursery returned before its child ended");
                canceller
            }
        });
        canceller.join().unwrap();
        drop(rt);

        assert_eq!(trace.polled.get(), 1, "the child starts once");
        assert_eq!(trace.passed.get() + trace.cancelled.get(), 1, "one cancel point ran");
        assert_eq!(trace.dropped.get(), 1, "the child's future is dropped exactly once");
    });
}

// ---- 4.7: close racing a late spawn -----------------------------------------------------------

#[test]
fn close_racing_late_spawn() {
    loom::model(|| {
        let rt = runtime();
        let (first, late) = (Trace::new(), Trace::new());
        let (spawner, late_dropped_at_return) = rt.block_on({
            let (first, late) = (first.clone(), late.clone());
            async move {
                let late_child = late.clone();
                let spawner = nursery(|n: Nursery<io::Error>| async move {
                    drop(n.spawn(child(&first, false)));
                    let spawner = {
                        let n = n.clone();
                        thread::spawn(move || n.try_spawn(child(&late_child, false)).is_ok())
                    };
                    Ok(spawner)
                })
                .await
                .expect("nothing fails");
                (spawner, late.dropped.get())
            }
        });
        let accepted = spawner.join().unwrap();
        drop(rt);

        assert_eq!(first.dropped.get(), 1);
        assert_eq!(late.dropped.get(), 1, "the late child's future is dropped exactly once");
        if accepted {
            assert_eq!(late_dropped_at_return, 1, "the nursery returned before its child ended");
            assert_eq!(late.passed.get(), 1, "an accepted child runs to its end");
        } else {
            assert_eq!(late.polled.get(), 0, "a refused child never runs");
        }
    });
}

// ---- 4.8: `started()` racing cancels ----------------------------------------------------------

/// The start runs inside a shield, so the child's first cancel point (before `started`) sits
/// where the nursery's cancel does not reach; after `started` it waits for a cancellation that
/// only the move under the nursery lets reach it (its task root then drops it).
#[test]
fn started_racing_nursery_cancel() {
    loom::model(|| {
        let rt = runtime();
        let trace = Trace::new();
        let canceller = rt.block_on({
            let trace = trace.clone();
            async move {
                let (child_trace, guard) = (trace.clone(), trace.drop_guard());
                let canceller = nursery(|n: Nursery<io::Error>| async move {
                    let canceller = {
                        let scope = n.cancel_scope();
                        thread::spawn(move || scope.cancel())
                    };
                    shield(n.start(move |status: TaskStatus<()>| async move {
                        let _guard = guard;
                        child_trace.cancel_point().await?;
                        status.started(());
                        pending::<()>().await;
                        Ok(())
                    }))
                    .await
                    .expect("the shield keeps the cancel away from the start");
                    Ok(canceller)
                })
                .await
                .expect("the child's cancellation is the nursery's own: stripped (4.4)");
                assert_eq!(trace.dropped.get(), 1, "the nursery returned before its child ended");
                canceller
            }
        });
        canceller.join().unwrap();
        drop(rt);

        assert_eq!(trace.passed.get(), 1, "the cancel crossed the shield before `started`");
        assert_eq!(trace.dropped.get(), 1, "the child's future is dropped exactly once");
    });
}

/// The start runs inside a scope of the body's own, which a foreign thread cancels; the child
/// calls `started`, passes a cancel point (traced by `after`) and returns: that cancel point
/// must pass, and the nursery, which nobody cancelled, must return `Ok`.
///
/// This model found a window: `start` used to hand the child's root to its `StartCore` only
/// after the task was submitted, so a child that called `started()` first (on the worker) was
/// marked started but not moved, and ran on below the caller's scope until the caller relinked
/// it; the caller's cancel reached it there.
#[test]
fn started_racing_caller_cancel() {
    loom::model(|| {
        let rt = runtime();
        let after = Trace::new();
        let canceller = rt.block_on({
            let after = after.clone();
            async move {
                let guard = after.drop_guard();
                nursery(|n: Nursery<io::Error>| async move {
                    let caller = CancelScope::new();
                    let canceller = {
                        let caller = caller.clone();
                        thread::spawn(move || caller.cancel())
                    };
                    let started = caller.run(n.start(move |status: TaskStatus<()>| async move {
                        let _guard = guard;
                        status.started(());
                        after.cancel_point().await
                    }));
                    // Cancelled before `start` began, the `start` fails at its entry (a cancel
                    // point): the caller's business, not checked here.
                    drop(started.await);
                    Ok(canceller)
                })
                .await
                .expect("nobody cancelled the nursery: no pass-through cancellation")
            }
        });
        canceller.join().unwrap();
        drop(rt);

        assert_eq!(after.cancelled.get(), 0, "the caller's cancel reached a started child");
        assert_eq!(after.dropped.get(), 1, "the child's future is dropped exactly once");
    });
}

// ---- 3.10 on a runtime: a shield lowered mid-poll ---------------------------------------------

/// A blocking trellis leaf: a cancel point on every poll, `Pending` until cancelled (the task's
/// waker, which a cancel wakes, polls it again).
struct UntilCancelled;

impl Future for UntilCancelled {
    type Output = Cancelled;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Cancelled> {
        match Cancelled::for_current_task() {
            Some(cancelled) => Poll::Ready(cancelled),
            None => Poll::Pending,
        }
    }
}

/// `cancel::loom_models::shield_off_mid_poll_leaves_a_full_poll` on the real dropper (with its
/// self-wake test): a task runs `outer.run(inner.run(UntilCancelled))`, `outer` cancelled
/// before, `inner` shielded, while a foreign thread lowers `inner`'s shield. The leaf must get
/// a poll in which it reports `Cancelled`; it then ends the inner future itself (dropping the
/// `Cancelled`, so nothing is caught) and `outer.run` returns `Some`.
///
/// The hard case: the shield goes off after the leaf's poll (`Pending`, shielded) and before
/// `dropper_may_drop`. `outer`'s word, read settled when the poll began, does not change, and
/// the shield's wake of the task may come after the self-wake test; before the guard marks,
/// the dropper dropped the inner future there, its cancel point never having seen the
/// cancellation.
#[test]
fn shield_off_mid_poll_real_dropper() {
    loom::model(|| {
        let rt = runtime();
        let (outer, inner) = (CancelScope::new(), CancelScope::new().shielded());
        outer.cancel();
        let task = {
            let (outer, inner) = (outer.clone(), inner.clone());
            rt.spawn(
                async move { outer.run(inner.run(async { drop(UntilCancelled.await) })).await },
            )
        };
        let toggler = thread::spawn(move || inner.set_shield(false));
        let out = rt.block_on(task).unwrap();
        toggler.join().unwrap();
        drop(rt);

        assert!(out.is_some(), "dropped before a poll in which its cancel point saw the cancel");
    });
}

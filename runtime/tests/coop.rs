//! Cooperative scheduling: yielding and the budget keep one busy task from starving others.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use trellis_runtime::{checkpoint, spawn, yield_now};

on_workers!(
    /// Tasks that yield forever do not starve a task that needs a turn.
    yield_loops_do_not_starve_others, |rt| {
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..8 {
        let stop = stop.clone();
        rt.spawn(async move {
            while !stop.load(SeqCst) {
                yield_now().await;
            }
        });
    }
    let v = rt.block_on(rt.spawn(async { 42 })).unwrap();
    stop.store(true, SeqCst);
    assert_eq!(v, 42);
});

on_workers!(
    /// A task whose cancel points are always ready still yields when its budget is spent, so
    /// on a single worker the other task gets to run before the busy one finishes.
    budget_forces_a_yield, |rt| {
    let other_ran = Arc::new(AtomicBool::new(false));
    let saw_other = rt.block_on({
        let other_ran = other_ran.clone();
        async move {
            spawn(async move {
                let other = spawn({
                    let other_ran = other_ran.clone();
                    async move { other_ran.store(true, SeqCst) }
                });
                for _ in 0..100_000 {
                    checkpoint().await.unwrap();
                    if other_ran.load(SeqCst) {
                        break;
                    }
                }
                let saw = other_ran.load(SeqCst);
                other.await.unwrap();
                saw
            })
            .await
            .unwrap()
        }
    });
    assert!(saw_other, "the busy task never yielded to the other one");
});

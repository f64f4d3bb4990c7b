//! Timers and virtual time: sleeps, deadline order, interval ticks, no leftover entries.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis_runtime::time::{interval, sleep, sleep_until, Instant};
use trellis_runtime::{spawn, Runtime};

fn virtual_runtime(workers: usize) -> Runtime {
    Runtime::builder().worker_threads(workers).virtual_time(true).build().unwrap()
}

#[test]
fn real_time_sleep_waits_at_least_its_duration() {
    let rt = common::runtime(2);
    let waited = rt.block_on(async {
        let t0 = std::time::Instant::now();
        sleep(Duration::from_millis(20)).await.unwrap();
        t0.elapsed()
    });
    assert!(waited >= Duration::from_millis(20), "{waited:?}");
    assert_eq!(rt.handle().metrics().timers, 0);
}

#[test]
fn real_time_sleep_inside_tasks() {
    let rt = common::runtime(2);
    let hs: Vec<_> = (0..50u64)
        .map(|i| rt.spawn(async move { sleep(Duration::from_millis(i % 10)).await.map(|()| i) }))
        .collect();
    let sum = rt.block_on(async {
        let mut sum = 0;
        for h in hs {
            sum += h.await.unwrap().unwrap();
        }
        sum
    });
    assert_eq!(sum, 49 * 50 / 2);
}

macro_rules! on_virtual_workers {
    ($(#[$doc:meta])* $name:ident, |$rt:ident| $body:block) => {
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($rt: Runtime) $body
            #[test]
            fn w1() { body(virtual_runtime(1)); }
            #[test]
            fn w2() { body(virtual_runtime(2)); }
            #[test]
            fn w4() { body(virtual_runtime(4)); }
        }
    };
}

on_virtual_workers!(
    /// An hour of sleep completes at once, with the clock advanced exactly.
    an_hour_passes_in_an_instant, |rt| {
    let real = std::time::Instant::now();
    let elapsed = rt.block_on(async {
        let t0 = Instant::now();
        sleep(Duration::from_secs(3600)).await.unwrap();
        Instant::now() - t0
    });
    assert_eq!(elapsed, Duration::from_secs(3600));
    assert!(real.elapsed() < Duration::from_secs(1), "took {:?} of real time", real.elapsed());
});

on_virtual_workers!(
    /// Tasks sleeping random durations wake in deadline order, each exactly at its deadline.
    tasks_wake_in_deadline_order, |rt| {
    let order = Arc::new(Mutex::new(Vec::new()));
    // Spawned inside `block_on`, whose thread counts as a worker: the clock cannot move before
    // every task has registered its sleep. (Spawns from a foreign thread are not waited for:
    // the clock could pass a deadline before its task even starts.)
    let deadlines = rt.block_on(async {
        let start = Instant::now();
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut deadlines = Vec::new();
        let hs: Vec<_> = (0..1_000)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let deadline = start + Duration::from_micros(seed % 10_000_000_000);
                deadlines.push(deadline);
                let order = order.clone();
                spawn(async move {
                    sleep_until(deadline).await.unwrap();
                    let now = Instant::now();
                    assert!(now >= deadline, "woke before its deadline");
                    order.lock().unwrap().push((now, i));
                })
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
        deadlines
    });
    let order = order.lock().unwrap();
    for pair in order.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "woke out of deadline order");
    }
    for &(woke_at, i) in order.iter() {
        assert_eq!(woke_at, deadlines[i], "task {i} woke at a different instant than its deadline");
    }
    assert_eq!(rt.handle().metrics().timers, 0);
});

on_virtual_workers!(
    /// `interval` ticks at once, then at every period.
    interval_ticks_on_the_grid, |rt| {
    let ticks = rt.block_on(async {
        let start = Instant::now();
        let mut iv = interval(Duration::from_millis(250));
        let mut ticks = Vec::new();
        for _ in 0..5 {
            ticks.push(iv.tick().await.unwrap() - start);
        }
        // A late collection skips the missed ticks instead of bursting.
        sleep(Duration::from_millis(900)).await.unwrap();
        ticks.push(iv.tick().await.unwrap() - start);
        ticks.push(iv.tick().await.unwrap() - start);
        ticks
    });
    // Collected at 1900 ms: the late 1250 ms tick is delivered at once, the missed 1500 and
    // 1750 are skipped, and the schedule resumes on the grid at 2000 ms.
    let ms = |n| Duration::from_millis(n);
    assert_eq!(ticks, vec![ms(0), ms(250), ms(500), ms(750), ms(1000), ms(1250), ms(2000)]);
});

on_virtual_workers!(
    /// A sleep dropped before it fires leaves no timer entry behind.
    dropped_sleeps_leave_nothing_behind, |rt| {
    rt.block_on(async {
        let mut sleeps: Vec<_> = (0..1000).map(|i| sleep(Duration::from_secs(3600 + i))).collect();
        for s in sleeps.iter_mut() {
            assert!(futures::poll!(s).is_pending());
        }
        assert_eq!(trellis_runtime::Handle::current().metrics().timers, 1000);
        drop(sleeps);
        assert_eq!(trellis_runtime::Handle::current().metrics().timers, 0);
    });
});

#[test]
fn huge_durations_saturate() {
    let rt = virtual_runtime(1);
    rt.block_on(async {
        let far = Instant::now() + Duration::MAX;
        assert!(far > Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut s = sleep(Duration::MAX);
        assert!(futures::poll!(&mut s).is_pending());
        // Time still moves for other sleeps.
        sleep(Duration::from_secs(5)).await.unwrap();
        assert!(futures::poll!(&mut s).is_pending());
    });
}

#[test]
fn sleep_is_send_sync_unpin() {
    fn check<T: Send + Sync + Unpin>(_: &T) {}
    check(&sleep(Duration::from_secs(1)));
}

#[test]
fn sleep_is_a_cancel_point() {
    let rt = virtual_runtime(2);
    rt.block_on(async {
        let h = spawn(async { sleep(Duration::from_secs(3600)).await });
        // Once the runtime is idle, `h` sleeps and the clock jumps to this earlier deadline
        // (outside `block_on` the clock could jump to `h`'s own deadline before the cancel).
        sleep(Duration::from_secs(1)).await.unwrap();
        h.cancel();
        match h.await {
            Ok(r) => assert!(r.is_err(), "a cancelled sleep returns Err(Cancelled)"),
            Err(e) => assert!(e.is_cancelled()),
        }
    });
    assert_eq!(rt.handle().metrics().timers, 0);
}

/// 100,000 timers with random deadlines, spread over tasks and `FuturesUnordered`s: every one
/// fires at its deadline, and the completions come in deadline order.
#[test]
fn hundred_thousand_timers_fire_in_deadline_order() {
    use futures::stream::{FuturesUnordered, StreamExt};
    let rt = virtual_runtime(2);
    let start = rt.block_on(async { Instant::now() });
    let log = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
    let mut seed = 42u64;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let sleeps: FuturesUnordered<_> = (0..10_000)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // 10,000 distinct deadlines (whole milliseconds): about ten timers each,
                    // which fire together (equal deadlines complete in any order).
                    let deadline = start + Duration::from_millis(seed % 10_000);
                    async move {
                        sleep_until(deadline).await.unwrap();
                        deadline
                    }
                })
                .collect();
            let log = log.clone();
            async move {
                let mut sleeps = sleeps;
                while let Some(deadline) = sleeps.next().await {
                    let now = Instant::now();
                    assert_eq!(now, deadline, "fired at a different instant than its deadline");
                    log.lock().unwrap().push(now);
                }
            }
        })
        .collect();
    // Spawned inside `block_on`, whose thread counts as a worker: the clock cannot move before
    // every task has started (spawns from a foreign thread are not waited for).
    rt.block_on(async {
        let tasks: Vec<_> = tasks.into_iter().map(spawn).collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 100_000);
    assert!(log.windows(2).all(|w| w[0] <= w[1]), "timers completed out of deadline order");
    assert_eq!(rt.handle().metrics().timers, 0);
}

//! The blocking pool: more jobs than threads, panics, cancellation before start, reaping.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use trellis_runtime::{spawn_blocking, Runtime};

fn pool_runtime(workers: usize, max_blocking: usize, keep_alive: Duration) -> Runtime {
    Runtime::builder()
        .worker_threads(workers)
        .max_blocking_threads(max_blocking)
        .blocking_keep_alive(keep_alive)
        .thread_name("pooltest")
        .build()
        .unwrap()
}

#[test]
fn more_jobs_than_threads_all_complete_with_bounded_concurrency() {
    for workers in [1, 2, 4] {
        let rt = pool_runtime(workers, 3, Duration::from_secs(10));
        let running = Arc::new(AtomicUsize::new(0));
        let max_seen = Arc::new(AtomicUsize::new(0));
        let sum = rt.block_on({
            let running = running.clone();
            let max_seen = max_seen.clone();
            async move {
                let hs: Vec<_> = (0..30u64)
                    .map(|i| {
                        let running = running.clone();
                        let max_seen = max_seen.clone();
                        spawn_blocking(move || {
                            let now = running.fetch_add(1, SeqCst) + 1;
                            max_seen.fetch_max(now, SeqCst);
                            thread::sleep(Duration::from_millis(3));
                            running.fetch_sub(1, SeqCst);
                            i
                        })
                    })
                    .collect();
                let mut sum = 0;
                for h in hs {
                    sum += h.await.unwrap();
                }
                sum
            }
        });
        assert_eq!(sum, (0..30u64).sum::<u64>());
        let max = max_seen.load(SeqCst);
        assert!(
            (1..=3).contains(&max),
            "{workers} workers: {max} jobs ran at once with a limit of 3"
        );
    }
}

on_workers!(blocking_panic_is_reported, |rt| {
    let err = rt.block_on(async { spawn_blocking(|| panic!("blocking boom")).await }).unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("blocking boom"));
});

#[test]
fn cancelled_job_that_has_not_started_never_runs() {
    let rt = pool_runtime(2, 1, Duration::from_secs(10));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let ran = Arc::new(AtomicBool::new(false));
    let first = rt.spawn_blocking(move || release_rx.recv().unwrap());
    // The only pool thread is busy: this job waits in the queue.
    let second = rt.spawn_blocking({
        let ran = ran.clone();
        move || ran.store(true, SeqCst)
    });
    second.cancel();
    release_tx.send(()).unwrap();
    rt.block_on(first).unwrap();
    let err = rt.block_on(second).unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(!ran.load(SeqCst));
}

fn count_threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|n| n.trim().starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
#[cfg(target_os = "linux")]
fn idle_blocking_threads_are_reaped() {
    let rt = Runtime::builder()
        .worker_threads(1)
        .blocking_keep_alive(Duration::from_millis(30))
        .thread_name("reaptest")
        .build()
        .unwrap();
    rt.block_on(async {
        let hs: Vec<_> =
            (0..4).map(|_| spawn_blocking(|| thread::sleep(Duration::from_millis(20)))).collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    assert!(count_threads_named("reaptest-blocki") >= 1);
    let t0 = Instant::now();
    while count_threads_named("reaptest-blocki") > 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "idle blocking threads were not reaped");
        thread::sleep(Duration::from_millis(10));
    }
    // The pool grows again on demand.
    assert_eq!(rt.block_on(async { spawn_blocking(|| 8).await.unwrap() }), 8);
}

#[test]
fn shutdown_waits_for_running_blocking_jobs_within_the_grace_period() {
    let rt = pool_runtime(1, 2, Duration::from_secs(10));
    let finished = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel();
    rt.spawn_blocking({
        let finished = finished.clone();
        move || {
            started_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(50));
            finished.store(true, SeqCst);
        }
    });
    started_rx.recv().unwrap();
    rt.shutdown_timeout(Duration::from_secs(5));
    assert!(finished.load(SeqCst), "shutdown returned before the running job finished");
}

//! Regression tests for bugs found in review: each failed before its fix.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use trellis_runtime::checkpoint;

/// Runs `f` on a helper thread; `None` if it does not finish within `d` (instead of hanging).
fn within<R: Send + 'static>(d: Duration, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(d).ok()
}

/// `block_on` inside a blocking job used to inherit the job's task budget and spin forever
/// once it was spent.
#[test]
fn block_on_inside_spawn_blocking_is_unconstrained() {
    let out = within(Duration::from_secs(20), || {
        let outer = common::runtime(1);
        let job = outer.spawn_blocking(|| {
            common::runtime(1).block_on(async {
                for _ in 0..1_000 {
                    checkpoint().await.unwrap();
                }
                7
            })
        });
        outer.block_on(job).unwrap()
    });
    assert_eq!(out, Some(7), "block_on inside spawn_blocking never finished");
}

struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("PanicOnDrop");
    }
}

/// A future whose `Drop` panics, returning an output whose `Drop` panics too.
struct DoublyBad(#[allow(dead_code)] PanicOnDrop);
impl Future for DoublyBad {
    type Output = PanicOnDrop;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<PanicOnDrop> {
        Poll::Ready(PanicOnDrop)
    }
}

/// The output used to be dropped outside `catch_unwind`, killing the worker.
#[test]
fn panicking_drops_of_future_and_output_do_not_kill_the_worker() {
    let out = within(Duration::from_secs(20), || {
        let rt = common::runtime(1);
        let first = rt.block_on(rt.spawn(DoublyBad(PanicOnDrop))).map(|_| ()).unwrap_err();
        let second = rt.block_on(rt.spawn(async { 1 })).unwrap();
        (first.is_panic(), second)
    });
    assert_eq!(out, Some((true, 1)), "the worker died");
}

struct CountDrop(Arc<AtomicUsize>);
impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A task still inside a poll when the grace period ends used to be requeued into a worker
/// that was exiting and never completed: its join never resolved, its future never dropped.
#[test]
fn task_mid_poll_when_grace_ends_is_completed_as_cancelled() {
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let rt = common::runtime(1);
    let h = rt.spawn({
        let d = CountDrop(drops.clone());
        let started = started.clone();
        let release = release.clone();
        let own_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        std::future::poll_fn(move |cx| {
            let _keep = &d;
            if !started.swap(true, SeqCst) {
                while !release.load(SeqCst) {
                    thread::sleep(Duration::from_millis(1)); // stuck in a poll
                }
            }
            *own_waker.lock().unwrap() = Some(cx.waker().clone()); // keeps its own waker
            Poll::<()>::Pending
        })
    });
    while !started.load(SeqCst) {
        thread::yield_now();
    }
    rt.shutdown_timeout(Duration::from_millis(50));
    release.store(true, SeqCst);
    let t0 = Instant::now();
    while !h.is_finished() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the task was never completed");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(drops.load(SeqCst), 1);
    assert!(futures::executor::block_on(h).unwrap_err().is_cancelled());
}

/// Dropping the runtime from a blocking job used to wait for that very job's thread for the
/// whole grace period.
#[test]
fn shutdown_from_a_blocking_job_does_not_wait_for_itself() {
    let rt = common::runtime(1);
    let handle = rt.handle().clone();
    let (tx, rx) = mpsc::channel();
    let _job = handle.spawn_blocking(move || {
        let t = Instant::now();
        rt.shutdown_timeout(Duration::from_secs(10));
        tx.send(t.elapsed()).unwrap();
    });
    let took = rx.recv().unwrap();
    assert!(took < Duration::from_secs(5), "shutdown from a blocking job took {took:?}");
}

/// Records whether it was dropped at the address it was polled at.
struct PinCheck {
    addr: usize,
    polled: Arc<AtomicBool>,
    verdict: Arc<AtomicUsize>, // 1 = dropped in place, 2 = moved before its drop
    _pin: PhantomPinned,
}
impl PinCheck {
    fn new() -> (PinCheck, Arc<AtomicBool>, Arc<AtomicUsize>) {
        let polled = Arc::new(AtomicBool::new(false));
        let verdict = Arc::new(AtomicUsize::new(0));
        let check = PinCheck {
            addr: 0,
            polled: polled.clone(),
            verdict: verdict.clone(),
            _pin: PhantomPinned,
        };
        (check, polled, verdict)
    }
}
impl Future for PinCheck {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        // SAFETY: writes plain fields; nothing is moved out of the pinned value.
        let this = unsafe { self.get_unchecked_mut() };
        this.addr = this as *const PinCheck as usize;
        this.polled.store(true, SeqCst);
        Poll::Pending
    }
}
impl Drop for PinCheck {
    fn drop(&mut self) {
        let here = self as *const PinCheck as usize;
        self.verdict.store(if self.addr == here { 1 } else { 2 }, SeqCst);
    }
}

fn wait_until(flag: &AtomicBool) {
    while !flag.load(SeqCst) {
        thread::yield_now();
    }
}

on_workers!(
    /// The task cell used to move the (pinned) future out before dropping it.
    pinned_futures_are_dropped_in_place_on_cancel, |rt| {
    let (check, polled, verdict) = PinCheck::new();
    let h = rt.spawn(check);
    wait_until(&polled);
    h.cancel();
    assert!(rt.block_on(h).unwrap_err().is_cancelled());
    assert_eq!(verdict.load(SeqCst), 1, "the pinned future was moved before its drop");
});

on_workers!(pinned_futures_are_dropped_in_place_at_shutdown, |rt| {
    let (check, polled, verdict) = PinCheck::new();
    let _h = rt.spawn(check);
    wait_until(&polled);
    drop(rt);
    assert_eq!(verdict.load(SeqCst), 1, "the pinned future was moved before its drop");
});

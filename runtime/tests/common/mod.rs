//! Shared helpers for the runtime's integration tests: instrumented futures that count their
//! polls and drops, and a macro that runs one test body on 1, 2 and 4 workers.
#![allow(dead_code, unreachable_pub, clippy::disallowed_types)]

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use trellis_runtime::Runtime;

/// Builds a runtime with `workers` worker threads.
pub fn runtime(workers: usize) -> Runtime {
    Runtime::builder().worker_threads(workers).thread_name("test").build().expect("runtime builds")
}

/// Builds a runtime with `workers` worker threads and virtual time.
pub fn virtual_runtime(workers: usize) -> Runtime {
    Runtime::builder().worker_threads(workers).virtual_time(true).build().unwrap()
}

/// Runs `body` inside a task on 1- and 2-worker virtual-time runtimes, then checks that no
/// timer entry and no task is left.
pub fn on_virtual<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for workers in [1, 2] {
        let rt = virtual_runtime(workers);
        let body = body.clone();
        rt.block_on(async move { trellis_runtime::spawn(body()).await.unwrap() });
        assert_eq!(rt.handle().metrics().timers, 0, "a timer entry was left behind");
        // A finished task leaves the registry right after its join is signalled (a worker
        // may batch that release): give it a moment, then insist.
        for _ in 0..2_000 {
            if rt.handle().metrics().live_tasks == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(rt.handle().metrics().live_tasks, 0, "a task outlived the test");
    }
}

/// Counts created, polled and dropped instrumented futures.
#[derive(Clone, Default)]
pub struct Tracker {
    inner: Arc<Counts>,
}

#[derive(Default)]
pub struct Counts {
    created: AtomicUsize,
    polls: AtomicUsize,
    drops: AtomicUsize,
    dropped_ids: Mutex<HashSet<usize>>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Wraps `fut` so that its polls and its drop are counted.
    pub fn track<F: Future>(&self, fut: F) -> Tracked<F> {
        let id = self.inner.created.fetch_add(1, SeqCst);
        Tracked { fut: Box::pin(fut), counts: self.inner.clone(), id }
    }

    pub fn created(&self) -> usize {
        self.inner.created.load(SeqCst)
    }

    pub fn polls(&self) -> usize {
        self.inner.polls.load(SeqCst)
    }

    pub fn drops(&self) -> usize {
        self.inner.drops.load(SeqCst)
    }

    /// Every tracked future was dropped exactly once (a double drop panics in `Tracked`).
    pub fn assert_all_dropped(&self) {
        assert_eq!(
            self.drops(),
            self.created(),
            "every tracked future must be dropped exactly once"
        );
    }
}

/// A future that counts its polls and its drop, and records which instance was dropped so a
/// second drop of the same instance is caught.
pub struct Tracked<F> {
    fut: Pin<Box<F>>,
    counts: Arc<Counts>,
    id: usize,
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.counts.polls.fetch_add(1, SeqCst);
        self.fut.as_mut().poll(cx)
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        let first = self.counts.dropped_ids.lock().unwrap().insert(self.id);
        assert!(first, "tracked future {} was dropped twice", self.id);
        self.counts.drops.fetch_add(1, SeqCst);
    }
}

/// Runs one test body on runtimes with 1, 2 and 4 workers: `on_workers!(name, |rt| { ... });`
/// defines a module `name` with tests `w1`, `w2`, `w4`.
#[macro_export]
macro_rules! on_workers {
    ($(#[$doc:meta])* $name:ident, |$rt:ident| $body:block) => {
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($rt: trellis_runtime::Runtime) $body

            #[test]
            fn w1() {
                body($crate::common::runtime(1));
            }

            #[test]
            fn w2() {
                body($crate::common::runtime(2));
            }

            #[test]
            fn w4() {
                body($crate::common::runtime(4));
            }
        }
    };
}

/// A oneshot made of std primitives only (so tests do not depend on another runtime's types):
/// `send` from any thread wakes the receiving task.
pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let shared = Arc::new(Mutex::new(OneshotState { value: None, waker: None, closed: false }));
    (OneshotSender { shared: shared.clone() }, OneshotReceiver { shared })
}

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<std::task::Waker>,
    closed: bool,
}

pub struct OneshotSender<T> {
    shared: Arc<Mutex<OneshotState<T>>>,
}

pub struct OneshotReceiver<T> {
    shared: Arc<Mutex<OneshotState<T>>>,
}

impl<T> OneshotSender<T> {
    pub fn send(self, value: T) {
        let waker = {
            let mut s = self.shared.lock().unwrap();
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.shared.lock().unwrap();
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for OneshotReceiver<T> {
    /// `None` if the sender was dropped without sending.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.shared.lock().unwrap();
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

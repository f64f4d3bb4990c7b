//! Black-box loom models of trellis (see `tests/`), and the loom-visible helpers they share.
//!
//! Everything here exists only under `--cfg loom`; a normal build of this crate is empty, so
//! `cargo test --workspace` compiles the models to nothing. Run them with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test --profile loom -p trellis-loom-tests
//! ```
//!
//! The helpers are built from loom's own primitives, so loom sees every synchronisation they
//! perform (a `futures::channel::oneshot` would be invisible to it, and its races unexplored).
#![cfg(loom)]

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Condvar, Mutex};

/// Drives `future` to completion on the calling loom thread, sleeping on a loom condition
/// variable between polls. A wake-up that never comes leaves the thread blocked for good,
/// which loom reports as a deadlock.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let signal = Arc::new(WakeSignal { woken: Mutex::new(false), cv: Condvar::new() });
    let waker = Waker::from(std_arc(WakeSignalWaker(signal.clone())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        let mut woken = signal.woken.lock().unwrap();
        while !*woken {
            woken = signal.cv.wait(woken).unwrap();
        }
        *woken = false;
    }
}

struct WakeSignal {
    woken: Mutex<bool>,
    cv: Condvar,
}

struct WakeSignalWaker(Arc<WakeSignal>);

impl Wake for WakeSignalWaker {
    #[allow(clippy::disallowed_types)] // `Wake` is defined on `std::sync::Arc`
    fn wake(self: std::sync::Arc<Self>) {
        *self.0.woken.lock().unwrap() = true;
        self.0.cv.notify_one();
    }
}

/// `Wake` needs a `std::sync::Arc`; its count only keeps the waker alive (the synchronisation
/// loom must see is inside, on loom primitives).
#[allow(clippy::disallowed_types)]
fn std_arc<T>(value: T) -> std::sync::Arc<T> {
    std::sync::Arc::new(value)
}

/// A one-shot channel on loom primitives: `send` from any thread, await the receiver in a task.
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(Slot { value: None, closed: false, waker: None }));
    (Sender(shared.clone()), Receiver(shared))
}

struct Slot<T> {
    value: Option<T>,
    /// The sender is gone (after sending or without sending).
    closed: bool,
    waker: Option<Waker>,
}

/// The sending half of [`oneshot`].
pub struct Sender<T>(Arc<Mutex<Slot<T>>>);

/// The receiving half of [`oneshot`]: a future of `Some(value)`, or `None` if the sender was
/// dropped without sending.
pub struct Receiver<T>(Arc<Mutex<Slot<T>>>);

impl<T> Sender<T> {
    /// Sends `value` and wakes the receiver (after unlocking).
    pub fn send(self, value: T) {
        self.0.lock().unwrap().value = Some(value);
        // `Drop` closes the channel and wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.0.lock().unwrap();
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.0.lock().unwrap();
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Some(value));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Counts drops of the [`Tracked`] values it hands out.
#[derive(Clone, Default)]
pub struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    pub fn new() -> DropCounter {
        DropCounter(Arc::new(AtomicUsize::new(0)))
    }

    /// A value that bumps this counter when dropped; move it into a future to count the
    /// future's drop, or return it to count the output's.
    pub fn track(&self) -> Tracked {
        Tracked(self.0.clone())
    }

    pub fn dropped(&self) -> usize {
        self.0.load(SeqCst)
    }
}

/// Bumps its [`DropCounter`] when dropped.
pub struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

macro_rules! opaque_debug {
    ($($name:ident $(<$t:ident>)?),*) => {$(
        impl$(<$t>)? std::fmt::Debug for $name$(<$t>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    )*};
}

opaque_debug!(Tracked, DropCounter, Sender<T>, Receiver<T>);

/// A runtime with `workers` worker threads (loom threads).
pub fn runtime(workers: usize) -> trellis_runtime::Runtime {
    trellis_runtime::Runtime::builder().worker_threads(workers).build().expect("loom threads start")
}

//! `Sleep`, `sleep`, `sleep_until`: wait until an instant on the runtime's clock.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::wheel::{EntryStatus, TimerKey};
use super::Instant;
use crate::budget;
use crate::cancel::{Cancelled, LeafWaiter};
use crate::context;
use crate::scheduler::Handle;

/// Waits until `duration` has passed on the runtime's clock.
///
/// A cancel point: if the calling task is cancelled, the sleep returns `Err(Cancelled)` (at
/// once, and at every later poll). Durations too large to represent saturate: the sleep
/// then never ends on its own.
///
/// ```
/// use std::time::Duration;
/// trellis_runtime::run(async {
///     trellis_runtime::time::sleep(Duration::from_millis(1)).await.unwrap();
/// });
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Waits until `deadline` on the runtime's clock (at once if it has passed); see [`sleep`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, registration: None, leaf: LeafWaiter::default() }
}

/// The future of [`sleep`] and [`sleep_until`]: `Send + Sync + Unpin`, so it can be stored.
///
/// It registers a timer on its first `Pending` poll and removes it when it completes or is
/// dropped. It must be polled inside a trellis runtime (it panics otherwise, saying so).
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    registration: Option<(Handle, TimerKey)>,
    /// Reaches this sleep when its scope is cancelled while it waits inside a foreign
    /// multiplexer (DESIGN.md 3.5).
    leaf: LeafWaiter,
}

impl Sleep {
    /// The instant this sleep ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed on the runtime's clock.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline (the sleep may be pending; it then waits for the new one).
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
    }

    fn unregister(&mut self) {
        if let Some((handle, key)) = self.registration.take() {
            handle.shared.driver.time.remove(key);
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Cancelled>> {
        let progress = std::task::ready!(budget::poll_proceed(cx));
        progress.made_progress();
        self.unregister();
        self.leaf.clear();
        Poll::Ready(Ok(()))
    }

    /// Returns `Pending`, unless registering the leaf waker finds the sleep cancelled.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Cancelled>> {
        match self.leaf.before_pending(cx.waker()) {
            Ok(()) => Poll::Pending,
            Err(cancelled) => {
                self.unregister();
                Poll::Ready(Err(cancelled))
            }
        }
    }
}

impl Future for Sleep {
    type Output = Result<(), Cancelled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(cancelled) = Cancelled::for_current_task() {
            return Poll::Ready(Err(cancelled));
        }
        let this = &mut *self;
        match &this.registration {
            Some((handle, key)) => {
                let time = &handle.shared.driver.time;
                if time.now() >= this.deadline {
                    return this.finish(cx);
                }
                match time.poll_entry(*key, cx.waker()) {
                    EntryStatus::Fired => this.finish(cx),
                    EntryStatus::Pending => this.pending(cx),
                }
            }
            None => {
                let handle = context::with_handle(|h| h.cloned()).unwrap_or_else(|| {
                    panic!(
                        "a trellis `Sleep` was polled outside a trellis runtime: {}",
                        context::NO_RUNTIME
                    )
                });
                let time = &handle.shared.driver.time;
                if time.now() >= this.deadline {
                    return this.finish(cx);
                }
                let registered = time.insert(this.deadline, cx.waker().clone());
                if registered.wake_driver {
                    handle.shared.driver.wake();
                }
                this.registration = Some((handle, registered.key));
                this.pending(cx)
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("registered", &self.registration.is_some())
            .finish()
    }
}

//! The time half of the driver: the runtime's clock and its timer store.
//!
//! The wheel (`wheel.rs`) lives under one lock together with `parked_until`, the deadline the
//! thread waiting in the poller (if any) is going to wake up for. The two are kept together so
//! that registering a timer and deciding whether the poller must be woken early is one atomic
//! step with respect to the poller's own "compute my timeout, then wait" (see `driver.rs`,
//! rule 3).
//!
//! **Virtual time.** With `virtual_time(true)` the clock is a counter that only moves when the
//! driver decides the whole runtime is idle (`driver.rs`, rule 6): it then jumps exactly to the
//! earliest pending deadline. Instants are nanoseconds since the process origin; a virtual
//! clock starts at the real time at which its runtime was built.

use std::task::Waker;
use std::time::Duration;

use super::wheel::{EntryStatus, TimerKey, TimerWheel};
use super::Instant;
use crate::sync::atomic::{AtomicU64, Ordering::*};
use crate::sync::Mutex;

pub(crate) struct TimeDriver {
    clock: Clock,
    timers: Mutex<Timers>,
    /// A lower bound of the next expiration (nanos; `u64::MAX`: none), kept under the timer
    /// lock but readable without it, so busy workers can skip the timers when nothing is due.
    next_due: AtomicU64,
    /// Virtual time: bumped when a timer is registered and before a `block_on` or blocking-pool
    /// thread goes idle; a jump happens only if it did not change since the idle check began
    /// (`driver.rs`, rule 6).
    epoch: AtomicU64,
}

enum Clock {
    Real,
    /// Nanoseconds since the process origin.
    Virtual(AtomicU64),
}

struct Timers {
    wheel: TimerWheel,
    /// Deadline (nanos) the poller's waiter will wake up for; `None` if nobody waits with a
    /// deadline (no waiter, or one waiting without timeout).
    parked_until: Option<u64>,
    /// Whether a thread is waiting in the poller at all.
    parked: bool,
}

/// What registering a timer requires of the caller.
#[must_use]
pub(crate) struct Registered {
    pub(crate) key: TimerKey,
    /// The poller's waiter would sleep past this deadline: wake it so it recomputes.
    pub(crate) wake_driver: bool,
}

impl TimeDriver {
    pub(crate) fn new(virtual_time: bool) -> TimeDriver {
        let now = Instant::now_real().as_nanos();
        TimeDriver {
            clock: if virtual_time { Clock::Virtual(AtomicU64::new(now)) } else { Clock::Real },
            timers: Mutex::new(Timers {
                wheel: TimerWheel::new_at(now),
                parked_until: None,
                parked: false,
            }),
            next_due: AtomicU64::new(u64::MAX),
            epoch: AtomicU64::new(0),
        }
    }

    /// Rule 6 of `driver.rs`: read by the waiter before its idle check.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    /// Rule 6 of `driver.rs`: a participant checked after others is about to go idle.
    pub(crate) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, SeqCst);
    }

    /// Whether a timer may be due now (cheap; may say yes spuriously, never no wrongly).
    pub(crate) fn has_due_timer(&self) -> bool {
        self.now().as_nanos() >= self.next_due.load(Acquire)
    }

    pub(crate) fn is_virtual(&self) -> bool {
        matches!(self.clock, Clock::Virtual(_))
    }

    pub(crate) fn now(&self) -> Instant {
        match &self.clock {
            Clock::Real => Instant::now_real(),
            Clock::Virtual(nanos) => Instant::from_nanos(nanos.load(Acquire)),
        }
    }

    /// Registers a timer. The caller wakes the driver if told to (after this returns).
    pub(crate) fn insert(&self, deadline: Instant, waker: Waker) -> Registered {
        let deadline = deadline.as_nanos();
        let mut timers = self.timers.lock();
        let key = timers.wheel.insert(deadline, waker);
        if self.is_virtual() {
            // Rule 6 of `driver.rs`: a jump decided before this timer existed must not fire it.
            self.bump_epoch();
        }
        if deadline < self.next_due.load(Relaxed) {
            self.next_due.store(deadline, Release);
        }
        let wake_driver = timers.parked && timers.parked_until.is_none_or(|until| deadline < until);
        Registered { key, wake_driver }
    }

    pub(crate) fn poll_entry(&self, key: TimerKey, waker: &Waker) -> EntryStatus {
        self.timers.lock().wheel.poll_entry(key, waker)
    }

    /// Removes a timer entry (its `Sleep` completed or was dropped).
    pub(crate) fn remove(&self, key: TimerKey) {
        let waker = self.timers.lock().wheel.remove(key);
        drop(waker); // after unlocking: a waker's drop may run arbitrary code
    }

    /// Live timer entries (diagnostics and tests).
    pub(crate) fn live_entries(&self) -> usize {
        self.timers.lock().wheel.live_entries()
    }

    /// Fires every timer that is due on the clock; wakers go to `woken`.
    pub(crate) fn process(&self, woken: &mut Vec<Waker>) {
        let now = self.now().as_nanos();
        let mut timers = self.timers.lock();
        timers.wheel.advance(now, woken);
        self.next_due.store(timers.wheel.next_expiration_nanos().unwrap_or(u64::MAX), Release);
    }

    /// The poller's waiter is about to wait: records that (so new earlier timers wake it) and
    /// returns how long it may sleep: until the next timer (real time), or without limit
    /// (virtual time: the clock does not move while anyone waits). With `checked_at`, the epoch
    /// at the waiter's idle check (`driver.rs`, rule 6), not at all if it moved since: a timer
    /// registered in between, which found nobody parked to wake, is not slept through.
    pub(crate) fn begin_wait(
        &self,
        max: Option<Duration>,
        checked_at: Option<u64>,
    ) -> Option<Duration> {
        let mut timers = self.timers.lock();
        timers.parked = true;
        if checked_at.is_some_and(|epoch| epoch != self.epoch()) {
            return Some(Duration::ZERO);
        }
        let next = match self.clock {
            Clock::Real => timers.wheel.next_expiration_nanos(),
            Clock::Virtual(_) => None,
        };
        timers.parked_until = next;
        let now = self.now().as_nanos();
        let until_timer = next.map(|n| Duration::from_nanos(n.saturating_sub(now)));
        match (until_timer, max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The waiter returned from the poller.
    pub(crate) fn end_wait(&self) {
        let mut timers = self.timers.lock();
        timers.parked = false;
        timers.parked_until = None;
    }

    /// Virtual time, with the whole runtime idle since the epoch was `epoch`: moves the clock
    /// to the earliest pending deadline and fires what is due there. False if no timer is
    /// pending, or if the epoch moved (`driver.rs`, rule 6: the caller looks again).
    pub(crate) fn jump_to_next_deadline(&self, epoch: u64, woken: &mut Vec<Waker>) -> bool {
        let Clock::Virtual(clock) = &self.clock else { return false };
        let mut timers = self.timers.lock();
        if self.epoch() != epoch {
            return false;
        }
        let Some(next) = timers.wheel.next_deadline() else { return false };
        if next == u64::MAX {
            return false; // only "never" deadlines are left: time has nowhere to go
        }
        let now = clock.load(Acquire).max(next);
        clock.store(now, Release);
        timers.wheel.advance(now, woken);
        self.next_due.store(timers.wheel.next_expiration_nanos().unwrap_or(u64::MAX), Release);
        true
    }
}

impl std::fmt::Debug for TimeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeDriver")
            .field("virtual", &self.is_virtual())
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

//! `Interval`: ticks at a fixed period.

use std::time::Duration;

use super::{sleep_until, Instant, Sleep};
use crate::cancel::Cancelled;

/// Ticks every `period`, the first tick at once; see [`Interval`].
///
/// # Panics
/// If `period` is zero.
#[track_caller]
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks every `period`, the first tick at `start`; see [`Interval`].
///
/// # Panics
/// If `period` is zero.
#[track_caller]
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(period > Duration::ZERO, "interval: the period must be greater than zero");
    Interval { next: start, period, sleep: None }
}

/// A stream of ticks at `start`, `start + period`, `start + 2 * period`, ...
///
/// **Missed ticks are skipped**: a tick collected late is delivered at once (with its scheduled
/// instant), but the ticks missed meanwhile are not delivered in a burst: the next one is the
/// first tick of the schedule that is still in the future. So ticks always stay on the
/// `start + k * period` grid, and after a stall at most one tick comes early.
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
    sleep: Option<Sleep>,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled instant. A cancel point.
    pub async fn tick(&mut self) -> Result<Instant, Cancelled> {
        let sleep = self.sleep.get_or_insert_with(|| sleep_until(self.next));
        if sleep.deadline() != self.next {
            sleep.reset(self.next);
        }
        sleep.await?;
        let tick = self.next;
        let now = Instant::now();
        self.next = tick + self.period;
        if self.next <= now {
            // Late by more than a period: skip to the first tick still in the future.
            let behind = now.duration_since(tick).as_nanos();
            let period = self.period.as_nanos().max(1);
            let periods = behind / period + 1;
            let skip = Duration::from_nanos(u64::try_from(periods * period).unwrap_or(u64::MAX));
            self.next = tick + skip;
        }
        Ok(tick)
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        self.next = Instant::now() + self.period;
    }
}

//! `Instant`: a point in time on the runtime's clock (real, or virtual in tests).
//!
//! An `Instant` is a number of nanoseconds since a process-wide origin (the first time any
//! trellis clock was read), in a `u64`: 584 years of range, saturating at both ends, so
//! `Instant::now() + Duration::MAX` is a valid "never" rather than a panic. Inside a runtime
//! built with `virtual_time(true)`, [`Instant::now`] reads that runtime's virtual clock;
//! everywhere else it reads the system's monotonic clock.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::time::Duration;

/// A measurement of the runtime's monotonic clock. `Copy + Ord`; arithmetic with `Duration`
/// saturates instead of panicking.
///
/// ```
/// use std::time::Duration;
/// use trellis_runtime::time::Instant;
///
/// let now = Instant::now();
/// let later = now + Duration::from_secs(5);
/// assert_eq!(later - now, Duration::from_secs(5));
/// assert!(now + Duration::MAX > later); // saturates: a deadline of "never"
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    nanos: u64,
}

use crate::sync::monotonic_origin as origin;

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Instant {
    /// The current time of the calling thread's runtime clock (real time outside a runtime).
    pub fn now() -> Instant {
        crate::time::now()
    }

    /// The system's monotonic clock, whatever runtime the thread is in.
    pub(crate) fn now_real() -> Instant {
        Instant::from_std(std::time::Instant::now())
    }

    pub(crate) fn from_std(t: std::time::Instant) -> Instant {
        Instant { nanos: saturating_nanos(t.saturating_duration_since(origin())) }
    }

    pub(crate) fn from_nanos(nanos: u64) -> Instant {
        Instant { nanos }
    }

    pub(crate) fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// Time elapsed since `self`, on the runtime's clock.
    pub fn elapsed(&self) -> Duration {
        Instant::now().duration_since(*self)
    }

    /// `self + d`, or `None` if that is beyond the representable range.
    pub fn checked_add(&self, d: Duration) -> Option<Instant> {
        let d = u64::try_from(d.as_nanos()).ok()?;
        self.nanos.checked_add(d).map(|nanos| Instant { nanos })
    }

    /// `self - d`, or `None` if that is before the clock's origin.
    pub fn checked_sub(&self, d: Duration) -> Option<Instant> {
        let d = u64::try_from(d.as_nanos()).ok()?;
        self.nanos.checked_sub(d).map(|nanos| Instant { nanos })
    }

    /// The equivalent `std::time::Instant` on the system clock (meaningful for real time only;
    /// saturates far in the future).
    pub fn into_std(self) -> std::time::Instant {
        let origin = origin();
        origin
            .checked_add(Duration::from_nanos(self.nanos))
            .unwrap_or_else(|| origin + Duration::from_secs(100 * 365 * 24 * 3600))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant { nanos: self.nanos.saturating_add(saturating_nanos(d)) }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant { nanos: self.nanos.saturating_sub(saturating_nanos(d)) }
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

impl From<std::time::Instant> for Instant {
    fn from(t: std::time::Instant) -> Instant {
        Instant::from_std(t)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instant({:?} since origin)", Duration::from_nanos(self.nanos))
    }
}

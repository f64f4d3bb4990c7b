//! Time: `Instant`, `sleep`, `sleep_until`, `interval`, on the runtime's clock.
//!
//! - `instant`: the `Instant` type (nanoseconds since a process origin, saturating).
//! - `wheel`: the timer store (hierarchical timing wheel).
//! - `driver`: the clock (real or virtual) and the wheel behind its lock.
//! - `sleep`, `interval`: the futures users await.

pub(crate) mod driver;
mod instant;
mod interval;
mod sleep;
pub(crate) mod wheel;

pub use instant::Instant;
pub use interval::{interval, interval_at, Interval};
pub use sleep::{sleep, sleep_until, Sleep};

use crate::context;

/// The calling thread's runtime clock (the real clock outside a runtime).
pub(crate) fn now() -> Instant {
    context::with_handle(|h| match h {
        Some(h) => h.shared.driver.time.now(),
        None => Instant::now_real(),
    })
}

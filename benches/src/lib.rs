//! Side-by-side benchmarks of trellis against tokio and async-executor (see
//! `/BENCHMARKS.md` for the protocol). The `compare` binary is the entry point; this library
//! holds its pieces:
//!
//! - [`job`]: what every workload is written against: the [`Spawner`](job::Spawner) trait (one
//!   implementation per runtime) with its [`Timers`](job::Timers) and [`Net`](job::Net)
//!   operations, the work [`Size`](job::Size), and the completion helpers
//!   ([`Finish`](job::Finish), [`Countdown`](job::Countdown)) built on a std atomic + std channel.
//! - [`runtimes`]: building the three runtimes and injecting a root task from outside.
//! - [`workloads`]: the table of workloads; adding one is a body per runtime plus a table entry.
//! - [`harness`]: warm-up, rotated rounds, medians, the output line.
//! - [`idle`]: a check that runtimes not being measured are parked, not spinning.
// The benchmarks deliberately use std types (Arc, atomics, threads) for the anchors.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub mod harness;
pub mod idle;
pub mod job;
pub mod runtimes;
pub mod workloads;

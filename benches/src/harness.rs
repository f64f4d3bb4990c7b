//! Runs one workload on the three runtimes in rotated rounds and reduces the times to the
//! output line (BENCHMARKS.md, "The `compare` binary").
//!
//! - The three runtimes are built fresh for each workload, before anything is timed, and
//!   dropped after its last round. All three stay alive during every round; between iterations
//!   nothing runs in them, so their workers are parked (checked after warm-up, see [`idle`]).
//! - One iteration: the driver (this thread) builds the root future, reads the clock, injects
//!   the root task from outside, and blocks on a std channel until the workload's last task
//!   signals; the iteration's time ends when the message is received, minus any setup the
//!   workload measured and excluded itself ([`Finish::exclude`]). After each iteration
//!   the driver sleeps `settle` so the runtime just measured is parked again before the next
//!   one starts.
//! - Warm-up rounds first (discarded), then `rounds` rounds: one iteration of each runtime
//!   back to back, starting with a different runtime each round (rotation).
//! - `*_ns` = median over rounds of that runtime's time per repetition; `ratio_X` = median
//!   over rounds of trellis / X in the same round.
//!
//! [`idle`]: crate::idle

use std::fmt;
use std::io;
use std::mem;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::idle::IdleCpu;
use crate::job::{Body, Finish, Root, Size, Spawner};
use crate::runtimes::{Runtimes, Tokio, Trellis};
use crate::workloads::Workload;

/// How to run the workloads.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads of every runtime.
    pub workers: usize,
    /// Full or `--quick` work per iteration.
    pub size: Size,
    /// Measured rounds per workload (at least 11).
    pub rounds: usize,
    /// Discarded rounds before them.
    pub warmup: usize,
    /// How long to wait for one iteration before declaring a hang.
    pub timeout: Duration,
    /// Pause after each iteration, so the runtime just measured parks before the next starts.
    pub settle: Duration,
    /// Print every round's times to stderr.
    pub verbose: bool,
}

/// One of the runtimes under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// trellis.
    Trellis,
    /// tokio.
    Tokio,
    /// async-executor (`smol_*` columns).
    Smol,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Trellis => "trellis",
            Peer::Tokio => "tokio",
            Peer::Smol => "async-executor",
        })
    }
}

/// Why an iteration did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// No completion message within the timeout.
    Hang,
    /// Every completion sender was dropped without signalling: the workload's tasks were
    /// dropped (a task panicked, or the runtime dropped tasks it should have run).
    Dropped,
}

/// A workload that could not be measured.
#[derive(Debug)]
pub enum Failure {
    /// A runtime could not be built.
    Build(io::Error),
    /// A runtime did not complete an iteration.
    Stalled {
        /// Which runtime.
        peer: Peer,
        /// How.
        stall: Stall,
        /// Which round (counting warm-up rounds from 0).
        round: usize,
    },
}

/// The medians of one workload.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The workload's name.
    pub name: &'static str,
    /// Median ns per repetition: trellis, tokio, async-executor (`None`: no counterpart).
    pub ns: [Option<f64>; 3],
    /// Median per-round ratio trellis / tokio and trellis / async-executor.
    pub ratio: [Option<f64>; 2],
    /// Interquartile range of the per-round ratios, for the stderr summary.
    pub ratio_iqr: [Option<(f64, f64)>; 2],
    /// Measured rounds.
    pub rounds: usize,
    /// Repetitions of the work per iteration.
    pub reps: usize,
    /// Worker threads per runtime.
    pub workers: usize,
}

impl Outcome {
    /// The stdout line: the fixed columns of BENCHMARKS.md, then `rounds=`, `reps=`,
    /// `workers=`.
    pub fn line(&self) -> String {
        let ns = |v: Option<f64>| v.map_or_else(|| "NA".to_owned(), |v| format!("{v:.0}"));
        let ratio = |v: Option<f64>| v.map_or_else(|| "NA".to_owned(), |v| format!("{v:.2}"));
        format!(
            "workload={} trellis_ns={} tokio_ns={} smol_ns={} ratio_tokio={} ratio_smol={} \
             rounds={} reps={} workers={}",
            self.name,
            ns(self.ns[0]),
            ns(self.ns[1]),
            ns(self.ns[2]),
            ratio(self.ratio[0]),
            ratio(self.ratio[1]),
            self.rounds,
            self.reps,
            self.workers,
        )
    }
}

/// One runtime's way to run an iteration of the current workload.
struct Contestant<'a> {
    peer: Peer,
    run: Box<dyn Fn() -> Result<Duration, Stall> + 'a>,
}

/// Measures `workload` on fresh runtimes. Progress goes to stderr.
pub fn run_workload(config: &Config, workload: &Workload) -> Result<Outcome, Failure> {
    let runtimes = Runtimes::build(config.workers, workload.io).map_err(Failure::Build)?;
    let result = measure(config, workload, &runtimes);
    if result.is_ok() {
        drop(runtimes);
    } else {
        // Its tasks may still be stuck in there; dropping could hang too.
        mem::forget(runtimes);
    }
    result
}

fn measure(config: &Config, workload: &Workload, runtimes: &Runtimes) -> Result<Outcome, Failure> {
    let size = config.size;
    let reps = workload.reps(size);
    let timeout = config.timeout;
    let mut contestants = vec![Contestant {
        peer: Peer::Trellis,
        run: Box::new(move || {
            iteration(
                |root| runtimes.inject_trellis(root),
                Trellis,
                workload.trellis,
                size,
                reps,
                timeout,
            )
        }),
    }];
    if let Some(body) = workload.tokio {
        contestants.push(Contestant {
            peer: Peer::Tokio,
            run: Box::new(move || {
                iteration(|root| runtimes.inject_tokio(root), Tokio, body, size, reps, timeout)
            }),
        });
    }
    if let Some(body) = workload.smol {
        let spawner = runtimes.smol.spawner();
        contestants.push(Contestant {
            peer: Peer::Smol,
            run: Box::new(move || {
                iteration(|root| runtimes.inject_smol(root), spawner, body, size, reps, timeout)
            }),
        });
    }

    let started = Instant::now();
    let n = contestants.len();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(config.rounds); n];
    for round in 0..config.warmup + config.rounds {
        if round == config.warmup {
            if let Some(idle) = IdleCpu::measure(Duration::from_millis(50)) {
                let verdict = if idle.spinning() { "WARNING: not parked; " } else { "" };
                eprintln!("[{}] {verdict}{idle}", workload.name);
            }
        }
        let mut line = format!("[{}] round {round:>3}:", workload.name);
        for k in 0..n {
            let index = (round + k) % n;
            let contestant = &contestants[index];
            let time = (contestant.run)().map_err(|stall| Failure::Stalled {
                peer: contestant.peer,
                stall,
                round,
            })?;
            thread::sleep(config.settle);
            let per_rep = time.as_nanos() as f64 / reps as f64;
            line.push_str(&format!(" {}={per_rep:.0}", contestant.peer));
            if round >= config.warmup {
                times[index].push(per_rep);
            }
        }
        if config.verbose {
            let phase = if round < config.warmup { " (warm-up)" } else { "" };
            eprintln!("{line}{phase}");
        }
    }

    let mut outcome = Outcome {
        name: workload.name,
        ns: [None; 3],
        ratio: [None; 2],
        ratio_iqr: [None; 2],
        rounds: config.rounds,
        reps,
        workers: config.workers,
    };
    outcome.ns[0] = Some(median(&times[0]));
    for (index, contestant) in contestants.iter().enumerate().skip(1) {
        let slot = match contestant.peer {
            Peer::Tokio => 0,
            Peer::Smol => 1,
            Peer::Trellis => unreachable!("trellis is always the first contestant"),
        };
        let ratios: Vec<f64> = times[0].iter().zip(&times[index]).map(|(t, x)| t / x).collect();
        outcome.ns[slot + 1] = Some(median(&times[index]));
        outcome.ratio[slot] = Some(median(&ratios));
        outcome.ratio_iqr[slot] = Some(quartiles(&ratios));
    }
    let spread = |slot: usize| {
        outcome.ratio_iqr[slot]
            .map_or_else(|| "NA".to_owned(), |(q1, q3)| format!("{q1:.2}..{q3:.2}"))
    };
    eprintln!(
        "[{}] {:.1} s; interquartile range of the per-round ratios: tokio {}, async-executor {}",
        workload.name,
        started.elapsed().as_secs_f64(),
        spread(0),
        spread(1),
    );
    Ok(outcome)
}

/// One timed iteration: `reps` repetitions of `body`, chained inside the runtime.
fn iteration<S: Spawner>(
    inject: impl Fn(Root),
    spawner: S,
    body: Body<S>,
    size: Size,
    reps: usize,
    timeout: Duration,
) -> Result<Duration, Stall> {
    let (done_tx, done_rx) = mpsc::channel();
    let root = body(spawner.clone(), size, Finish::new(spawner, body, size, reps, done_tx));
    let start = Instant::now();
    inject(root);
    match done_rx.recv_timeout(timeout) {
        Ok(excluded) => Ok(start.elapsed().saturating_sub(excluded)),
        Err(RecvTimeoutError::Timeout) => Err(Stall::Hang),
        Err(RecvTimeoutError::Disconnected) => Err(Stall::Dropped),
    }
}

/// The median (mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// First and third quartiles (nearest rank).
fn quartiles(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.75))
}

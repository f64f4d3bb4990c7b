//! Side-by-side benchmark of trellis against tokio and async-executor (BENCHMARKS.md).
//!
//! `cargo run --release -p trellis-benches --bin compare -- [--quick] [--workers N] [WORKLOAD...]`
// The benchmarks deliberately use std types (Arc, atomics, threads) for the anchors.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use trellis_benches::harness::{self, Config, Failure, Stall};
use trellis_benches::job::Size;
use trellis_benches::workloads::{self, Workload, WORKLOADS};

const MIN_ROUNDS: usize = 11;

fn usage() -> String {
    let mut text = String::from(
        "usage: compare [--quick] [--workers N] [--rounds N] [--verbose] [WORKLOAD...]\n\n\
         Runs each workload on trellis, tokio and async-executor in rotated rounds and prints\n\
         one line per workload:\n  \
         workload=NAME trellis_ns=.. tokio_ns=.. smol_ns=.. ratio_tokio=.. ratio_smol=.. ...\n\
         (ratio < 1.0: trellis is faster; NA: no counterpart). Progress goes to stderr.\n\n\
         options:\n  \
         --quick        a tenth of the tasks/rounds per repetition (suite well under a minute)\n  \
         --workers N    worker threads of every runtime (default 2)\n  \
         --rounds N     measured rounds per workload (default 31 quick, 51 full; at least 11)\n  \
         --verbose      print every round's times (ns per repetition) to stderr
  \
         -h, --help     this text\n\n\
         workloads (default: all):\n",
    );
    for w in WORKLOADS {
        text.push_str(&format!("  {:<15}{}\n", w.name, w.about));
    }
    text
}

fn workload_names() -> String {
    WORKLOADS.iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
}

/// The parsed command line, or what to do instead.
enum Command {
    Run(Config, Vec<&'static Workload>),
    Help,
}

fn parse_count(option: &str, value: Option<String>, min: usize) -> Result<usize, String> {
    let value = value.ok_or_else(|| format!("{option} needs a number"))?;
    match value.parse::<usize>() {
        Ok(n) if (min..=4096).contains(&n) => Ok(n),
        _ => Err(format!("{option}: expected a whole number from {min} to 4096, got {value:?}")),
    }
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut quick = false;
    let mut workers = 2;
    let mut rounds = None;
    let mut verbose = false;
    let mut selected: Vec<&'static Workload> = Vec::new();
    while let Some(arg) = args.next() {
        let (option, inline) = match arg.split_once('=') {
            Some((option, value)) if option.starts_with("--") => {
                (option.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        match option.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quick" if inline.is_none() => quick = true,
            "--verbose" if inline.is_none() => verbose = true,
            "--workers" => workers = parse_count("--workers", inline.or_else(|| args.next()), 1)?,
            "--rounds" => {
                rounds = Some(parse_count("--rounds", inline.or_else(|| args.next()), MIN_ROUNDS)?)
            }
            _ if arg.starts_with('-') => {
                return Err(format!("unknown option {arg:?} (see --help)"));
            }
            name => {
                let workload = workloads::find(name).ok_or_else(|| {
                    format!("unknown workload {name:?}; valid workloads: {}", workload_names())
                })?;
                if !selected.iter().any(|w| w.name == workload.name) {
                    selected.push(workload);
                }
            }
        }
    }
    if selected.is_empty() {
        selected = WORKLOADS.iter().collect();
    }
    let config = Config {
        workers,
        size: if quick { Size::QUICK } else { Size::FULL },
        rounds: rounds.unwrap_or(if quick { 31 } else { 51 }),
        warmup: 3,
        timeout: Duration::from_secs(20),
        settle: Duration::from_millis(1),
        verbose,
    };
    Ok(Command::Run(config, selected))
}

fn main() -> ExitCode {
    let (config, selected) = match parse(std::env::args().skip(1)) {
        Ok(Command::Run(config, selected)) => (config, selected),
        Ok(Command::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("compare: {message}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    eprintln!(
        "compare: {} size, {} worker thread(s) per runtime, {} warm-up + {} rounds per workload",
        if config.size.is_quick() { "quick" } else { "full" },
        config.workers,
        config.warmup,
        config.rounds,
    );
    let mut failed = false;
    for workload in selected {
        match harness::run_workload(&config, workload) {
            Ok(outcome) => println!("{}", outcome.line()),
            Err(failure) => {
                failed = true;
                report(&config, workload, &failure);
            }
        }
    }
    eprintln!("compare: done in {:.1} s", started.elapsed().as_secs_f64());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn report(config: &Config, workload: &Workload, failure: &Failure) {
    let what = format!(
        "{} ({} size, {} repetition(s) per iteration, {} worker(s))",
        workload.name,
        if config.size.is_quick() { "quick" } else { "full" },
        workload.reps(config.size),
        config.workers,
    );
    match failure {
        Failure::Build(error) => eprintln!("compare: error: could not build the runtimes: {error}"),
        Failure::Stalled { peer, stall: Stall::Hang, round } => eprintln!(
            "compare: error: {peer} did not complete {what} within {:?} in round {round} \
             (rounds 0..{} are warm-up): it hangs. Its runtimes are leaked; going on.",
            config.timeout, config.warmup,
        ),
        Failure::Stalled { peer, stall: Stall::Dropped, round } => eprintln!(
            "compare: error: {peer} dropped every task of {what} in round {round} before the \
             last one signalled (a task panicked, or the runtime dropped tasks). Going on."
        ),
    }
}

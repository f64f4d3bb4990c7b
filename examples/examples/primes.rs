//! CPU-bound work split across tasks: count the primes below a limit, first in one task, then
//! in many tasks that the work-stealing workers run in parallel, and print the speed-up.
//!
//! A single-threaded event loop cannot do this: however many tasks it has, it runs one at a
//! time. trellis runs tasks on every worker thread, so the same async code uses every core.
//!
//! ```text
//! cargo run --release -p trellis-examples --example primes [LIMIT] [TASKS]
//! ```

use std::time::{Duration, Instant};

/// Numbers per cooperative step: a task checks in with the scheduler between steps, so a long
/// computation stays cancellable and lets other tasks on its worker run.
const STEP: u64 = 10_000;

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Counts the primes in `range`, one cooperative step at a time.
async fn count_primes(range: std::ops::Range<u64>) -> Result<u64, trellis::Cancelled> {
    let mut count = 0;
    let mut start = range.start;
    while start < range.end {
        let end = (start + STEP).min(range.end);
        count += (start..end).filter(|&n| is_prime(n)).count() as u64;
        start = end;
        trellis::checkpoint().await?;
    }
    Ok(count)
}

/// Splits `0..limit` into `tasks` chunks, spawns one task per chunk, and adds up the counts.
async fn count_in_parallel(limit: u64, tasks: u64) -> u64 {
    let chunk = limit.div_ceil(tasks);
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let range = (i * chunk).min(limit)..((i + 1) * chunk).min(limit);
            trellis::spawn(count_primes(range))
        })
        .collect();
    let mut total = 0;
    for handle in handles {
        total += handle.await.expect("task finished").expect("not cancelled");
    }
    total
}

fn parse_arg(index: usize, default: u64) -> u64 {
    match std::env::args().nth(index) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("usage: primes [LIMIT] [TASKS]  (positive integers; got {s:?})");
            std::process::exit(2)
        }),
    }
}

fn main() {
    let limit = parse_arg(1, 5_000_000);
    let tasks = parse_arg(2, 64).max(1);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());

    trellis::run(async move {
        let t0 = Instant::now();
        let single = trellis::spawn(count_primes(0..limit)).await.unwrap().unwrap();
        let one_task = t0.elapsed();

        let t1 = Instant::now();
        let parallel = count_in_parallel(limit, tasks).await;
        let many_tasks = t1.elapsed();

        assert_eq!(single, parallel, "both ways must count the same primes");
        println!("primes below {limit}: {single}");
        println!("  {:<10} {:>10}", "1 task:", ms(one_task));
        println!(
            "  {:<10} {:>10}  on {workers} worker threads",
            format!("{tasks} tasks:"),
            ms(many_tasks)
        );
        println!("  speed-up: {:.2}x", one_task.as_secs_f64() / many_tasks.as_secs_f64());
    });
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

//! Checks that runtimes not being measured are parked, not spinning: per-thread CPU time from
//! `/proc/self/task/*/schedstat` (Linux; elsewhere the check reports nothing) over an idle
//! window, grouped by thread name.

use std::fmt;
use std::fs;
use std::thread;
use std::time::Duration;

/// CPU time used by each runtime's threads during an idle window.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdleCpu {
    /// The window's length.
    pub window: Duration,
    /// CPU time of `trellis*` threads.
    pub trellis: Duration,
    /// CPU time of `tokio*` threads.
    pub tokio: Duration,
    /// CPU time of `smol*` threads (async-executor runners) and of the `async-io` reactor
    /// thread (smol's timers and sockets).
    pub smol: Duration,
}

impl IdleCpu {
    /// Sleeps for `window` while nothing is submitted and measures the runtimes' threads;
    /// `None` if per-thread CPU time is not available.
    pub fn measure(window: Duration) -> Option<IdleCpu> {
        let before = sample()?;
        thread::sleep(window);
        let after = sample()?;
        let mut idle = IdleCpu { window, ..IdleCpu::default() };
        for (tid, name, ns) in &after {
            let start = before.iter().find(|(t, _, _)| t == tid).map_or(0, |(_, _, ns)| *ns);
            let used = Duration::from_nanos(ns.saturating_sub(start));
            if name.starts_with("trellis") {
                idle.trellis += used;
            } else if name.starts_with("tokio") {
                idle.tokio += used;
            } else if name.starts_with("smol") || name == "async-io" {
                idle.smol += used;
            }
        }
        Some(idle)
    }

    /// Whether some runtime used more than 2 % of one core during the window.
    pub fn spinning(&self) -> bool {
        let limit = self.window / 50;
        self.trellis > limit || self.tokio > limit || self.smol > limit
    }
}

impl fmt::Display for IdleCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "CPU while idle for {:.0} ms: trellis {:.2} ms, tokio {:.2} ms, async-executor {:.2} ms",
            ms(self.window),
            ms(self.trellis),
            ms(self.tokio),
            ms(self.smol)
        )
    }
}

/// (thread id, thread name, nanoseconds on CPU) of every thread of this process.
fn sample() -> Option<Vec<(u64, String, u64)>> {
    let mut threads = Vec::new();
    for entry in fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path();
        let Some(tid) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok())
        else {
            continue;
        };
        // A thread may exit between listing and reading: skip it.
        let (Ok(name), Ok(stat)) =
            (fs::read_to_string(path.join("comm")), fs::read_to_string(path.join("schedstat")))
        else {
            continue;
        };
        let ns = stat.split_whitespace().next()?.parse().ok()?;
        threads.push((tid, name.trim().to_owned(), ns));
    }
    Some(threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_spinning_thread_is_noticed() {
        if sample().is_none() {
            return; // No per-thread CPU times on this platform.
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spinner = thread::Builder::new()
            .name("smol-spinner".to_owned())
            .spawn(move || {
                let start = Instant::now();
                while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(5) {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        let idle = IdleCpu::measure(Duration::from_millis(100)).unwrap();
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(idle.spinning(), "{idle}");
        assert!(idle.smol > Duration::from_millis(20), "{idle}");
        assert!(idle.trellis < Duration::from_millis(5), "{idle}");
    }
}

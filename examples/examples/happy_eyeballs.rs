//! Happy eyeballs (RFC 8305): staggered connection attempts, the first to connect wins.
//!
//! ```text
//! cargo run --release -p trellis-examples --example happy_eyeballs
//! ```
//!
//! A host name often resolves to several addresses, and some of them may be dead: the
//! connection is refused at once, or, worse, the packets vanish and `connect` hangs for a
//! minute. Trying the addresses one after another makes a dead one cost the full timeout;
//! trying them all at once hammers the server. Happy eyeballs starts attempt `i` as soon as
//! attempt `i - 1` has *failed*, or after a short stagger delay (RFC 8305 suggests 250 ms),
//! whichever comes first; the first attempt that connects wins and the others are cancelled.
//!
//! This is the classic Trio showcase (`trio.open_tcp_stream`), and a nursery makes it short:
//! the nursery's body starts the attempts one by one, each attempt is a child task, and the
//! winner cancels the nursery's scope, which stops the body and every other attempt. When the
//! nursery returns, no attempt is still running: the losers have seen `Cancelled` and closed
//! whatever they had opened.
//!
//! Everything runs over loopback, where a connect succeeds or is refused at once, so the slow
//! parts of the network are **simulated**: each candidate address has an artificial latency,
//! a `sleep` (a trellis cancel point, like the `connect` it stands in front of) before its
//! real `connect`. The candidates:
//!
//! 0. a port nothing listens on: refused at once (a real refusal);
//! 1. a "black hole": 10 s of simulated latency in front of a live listener, standing in for
//!    an address whose packets are silently dropped;
//! 2. a slow path: 600 ms of simulated latency in front of a live listener;
//! 3. a fast path: a live listener, no added latency.
//!
//! Expected timeline: 0 is refused at once, so 1 starts at once too; 1 hangs, so 2 starts after
//! the 250 ms stagger; 2 is still on its way at 500 ms when 3 starts, connects, and wins; 1 and
//! 2 are cancelled. Total: about 500 ms, instead of the black hole's 10 s.

// The workspace's clippy.toml steers trellis's own code to its loom-aware `sync` facade;
// a program using trellis uses `std::sync` as usual.
#![allow(clippy::disallowed_types)]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use trellis::net::{TcpListener, TcpStream};
use trellis::time::sleep;
use trellis::{is_cancelled, move_on_after, nursery, CancelScope, Nursery};

/// How long an attempt gets on its own before the next one starts (RFC 8305's recommendation).
const STAGGER: Duration = Duration::from_millis(250);

/// One address to try, with the simulated latency in front of its `connect`.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    addr: SocketAddr,
    latency: Duration,
    what: &'static str,
}

/// The result of a race: the winning attempt's connection, and what became of the others.
#[derive(Debug)]
struct Connected {
    winner: usize,
    stream: TcpStream,
    /// The attempts that failed on their own, with their errors.
    failed: Vec<(usize, io::Error)>,
    /// The attempts that the winner cancelled.
    cancelled: Vec<usize>,
}

/// What the attempts (child tasks) report to `happy_eyeballs`.
#[derive(Default)]
struct Race {
    winner: Mutex<Option<(usize, TcpStream)>>,
    failed: Mutex<Vec<(usize, io::Error)>>,
    cancelled: Mutex<Vec<usize>>,
}

/// Connects to one of `candidates`, trying them in order with happy eyeballs.
async fn happy_eyeballs(
    candidates: &[Candidate],
    stagger: Duration,
    t0: Instant,
) -> io::Result<Connected> {
    let race = Arc::new(Race::default());
    let outcome = nursery(|n: Nursery<io::Error>| {
        let race = race.clone();
        async move {
            for (i, &candidate) in candidates.iter().enumerate() {
                // The "attempt i failed" signal: a one-shot event. Awaiting the receiver ends
                // when the attempt sends (it failed) or drops the sender (it ended otherwise).
                let (failed_tx, failed_rx) = oneshot::channel();
                n.spawn(attempt(i, candidate, failed_tx, race.clone(), n.cancel_scope(), t0));
                // Give this attempt a head start: the stagger delay, or less if it fails
                // before that. If an attempt wins in the meantime, the nursery's scope is
                // cancelled and this wait ends with the body: the receiver is a foreign
                // future, not a trellis cancel point, but a cancelled nursery drops its
                // suspended body (as a timed-out scope drops what it waits on).
                let _ = move_on_after(stagger, failed_rx).await;
            }
            Ok(())
        }
    })
    .await;
    match outcome {
        Ok(()) => {}
        // The winner cancelled the nursery's scope while the body was still waiting out a
        // stagger delay, so the body never returned: the nursery reports that cancellation
        // (and nothing else). It is the expected way for the race to end, not an error.
        Err(group) if group.is_cancellation() => {}
        // An attempt returned a genuine error (ours do not) or the body did.
        Err(group) => return Err(io::Error::other(group)),
    }
    // The nursery has returned, so every attempt has finished: the race is decided.
    let failed = std::mem::take(&mut *race.failed.lock().expect("not poisoned"));
    let mut cancelled = std::mem::take(&mut *race.cancelled.lock().expect("not poisoned"));
    cancelled.sort_unstable();
    let winner = race.winner.lock().expect("not poisoned").take();
    match winner {
        Some((winner, stream)) => Ok(Connected { winner, stream, failed, cancelled }),
        None => {
            let errors: Vec<String> = failed.iter().map(|(i, e)| format!("#{i}: {e}")).collect();
            Err(io::Error::other(format!("every attempt failed ({})", errors.join("; "))))
        }
    }
}

/// Attempt `i`: connects to `candidate`; the winner cancels `nursery_scope` (and so the rest).
async fn attempt(
    i: usize,
    candidate: Candidate,
    failed: oneshot::Sender<()>,
    race: Arc<Race>,
    nursery_scope: CancelScope,
    t0: Instant,
) -> io::Result<()> {
    log(t0, format_args!("attempt {i} starts: {} ({})", candidate.addr, candidate.what));
    let connected = async {
        // The simulated latency (see the module docs), then the real connect. Both are cancel
        // points: a cancelled attempt stops in whichever it is waiting on.
        sleep(candidate.latency).await?;
        TcpStream::connect(candidate.addr).await
    }
    .await;
    match connected {
        Ok(stream) => {
            let mut winner = race.winner.lock().expect("not poisoned");
            if winner.is_none() {
                log(t0, format_args!("attempt {i} connected: it wins, the others are cancelled"));
                *winner = Some((i, stream));
            }
            // Otherwise another attempt connected in the same instant and won; our stream is
            // dropped here, which closes it.
            drop(winner);
            nursery_scope.cancel_with_reason(format!("attempt {i} connected"));
            Ok(())
        }
        Err(e) if is_cancelled(&e) => {
            log(t0, format_args!("attempt {i} stops: {e}"));
            race.cancelled.lock().expect("not poisoned").push(i);
            // Propagate the cancellation: the nursery recognises it as its own and drops it.
            Err(e)
        }
        Err(e) => {
            log(t0, format_args!("attempt {i} failed: {e}"));
            race.failed.lock().expect("not poisoned").push((i, e));
            // Let the next attempt start now rather than after the stagger delay. (The send
            // fails only if the body has stopped waiting, and then nobody needs to know.)
            let _ = failed.send(());
            Ok(())
        }
    }
}

fn log(t0: Instant, message: std::fmt::Arguments<'_>) {
    println!("{:>7.1} ms  {message}", t0.elapsed().as_secs_f64() * 1e3);
}

fn main() -> io::Result<()> {
    trellis::run(async {
        // Three live servers. Nobody calls `accept`: the kernel completes a handshake from the
        // listen backlog, so a `connect` that gets through succeeds anyway.
        let black_hole = TcpListener::bind("127.0.0.1:0").await?;
        let slow = TcpListener::bind("127.0.0.1:0").await?;
        let fast = TcpListener::bind("127.0.0.1:0").await?;
        // A port nothing listens on: bind one, note its address, close it. (Another program
        // could grab the port in between; on loopback, in a demo, that is a risk we take.)
        let refused = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;

        let candidates = [
            Candidate { addr: refused, latency: Duration::ZERO, what: "nothing listens: refused" },
            Candidate {
                addr: black_hole.local_addr()?,
                latency: Duration::from_secs(10),
                what: "black hole: 10 s of simulated latency",
            },
            Candidate {
                addr: slow.local_addr()?,
                latency: Duration::from_millis(600),
                what: "slow: 600 ms of simulated latency",
            },
            Candidate { addr: fast.local_addr()?, latency: Duration::ZERO, what: "fast" },
        ];

        let t0 = Instant::now();
        let connected = happy_eyeballs(&candidates, STAGGER, t0).await?;
        let took = t0.elapsed();
        println!(
            "connected to {} by attempt {} in {:.0} ms (failed: {:?}, cancelled: {:?})",
            connected.stream.peer_addr()?,
            connected.winner,
            took.as_secs_f64() * 1e3,
            connected.failed.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            connected.cancelled,
        );

        // The fast address won, over a real connection to it.
        assert_eq!(connected.winner, 3, "the fast candidate should win");
        assert_eq!(connected.stream.peer_addr()?, candidates[3].addr);
        // The refused address failed by itself, with a real refusal.
        assert_eq!(connected.failed.len(), 1, "only the refused candidate fails: {connected:?}");
        assert_eq!(connected.failed[0].0, 0);
        assert_eq!(connected.failed[0].1.kind(), io::ErrorKind::ConnectionRefused);
        // The two attempts still on their way were cancelled, and saw it.
        assert_eq!(connected.cancelled, [1, 2], "the losers should see Cancelled");
        // Attempt 3 started two stagger delays in (0 failed at once, 1 and 2 each got their
        // full head start), and nobody waited for the black hole. (A little slack below: timer
        // and clock granularity; plenty above: a loaded machine.)
        assert!(took >= 2 * STAGGER - Duration::from_millis(5), "too early: {took:?}");
        assert!(took < Duration::from_secs(2), "waited too long: {took:?}");
        Ok(())
    })
}

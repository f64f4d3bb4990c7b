//! The workloads (BENCHMARKS.md's table). Adding one = a body per runtime (or one generic body
//! over [`Spawner`]) plus an entry in [`WORKLOADS`]; a peer without a counterpart is `None` and
//! prints `NA`.
//!
//! Helper types are the same for every runtime: completion is a std atomic countdown + std
//! channel ([`Countdown`], [`Finish`]); messages between tasks go over
//! `futures::channel::oneshot`.

use futures::channel::oneshot;

use crate::job::{Body, Finish, Root, Size, Spawner};
use crate::runtimes::{Smol, Tokio, Trellis};

/// One workload: a name and one body per runtime.
#[derive(Debug)]
pub struct Workload {
    /// The name given on the command line and printed as `workload=`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Repetitions of the work per timed iteration: `[quick, full]`, chosen so that an
    /// iteration takes roughly 3-20 ms (quick) or 10-30 ms (full) on a 2-core machine: single
    /// runs of the short workloads are too short to time reliably (the driver's wake-up alone is
    /// tens of microseconds). Times are reported per repetition.
    pub reps: [usize; 2],
    /// The trellis body (trellis always has one: it is what is being measured).
    pub trellis: Body<Trellis>,
    /// The tokio counterpart, if any.
    pub tokio: Option<Body<Tokio>>,
    /// The async-executor counterpart, if any.
    pub smol: Option<Body<Smol>>,
}

impl Workload {
    /// Repetitions per iteration at this size.
    pub fn reps(&self, size: Size) -> usize {
        if size.is_quick() {
            self.reps[0]
        } else {
            self.reps[1]
        }
    }
}

/// Every workload, in the order they run by default.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "spawn_many",
        about: "a root task spawns 10,000 no-op tasks; each decrements an atomic, the last signals",
        reps: [40, 4],
        trellis: spawn_many::<Trellis>,
        tokio: Some(spawn_many::<Tokio>),
        smol: Some(spawn_many::<Smol>),
    },
    Workload {
        name: "yield_many",
        about: "1,000 tasks each yield 200 times; the last to finish signals",
        reps: [4, 1],
        trellis: yield_many::<Trellis>,
        tokio: Some(yield_many::<Tokio>),
        smol: Some(yield_many::<Smol>),
    },
    Workload {
        name: "ping_pong",
        about: "1,000 concurrent rounds; each spawns a partner and exchanges one message each \
                way over oneshots",
        reps: [48, 12],
        trellis: ping_pong::<Trellis>,
        tokio: Some(ping_pong::<Tokio>),
        smol: Some(ping_pong::<Smol>),
    },
    Workload {
        name: "ping_pong_seq",
        about: "one task pair, 1,000 sequential round trips (a fresh pair of oneshots each)",
        reps: [100, 24],
        trellis: ping_pong_seq::<Trellis>,
        tokio: Some(ping_pong_seq::<Tokio>),
        smol: Some(ping_pong_seq::<Smol>),
    },
    Workload {
        name: "chained_spawn",
        about: "each task spawns the next, 1,000 deep; the last signals",
        reps: [256, 50],
        trellis: chained_spawn::<Trellis>,
        tokio: Some(chained_spawn::<Tokio>),
        smol: Some(chained_spawn::<Smol>),
    },
];

/// Looks a workload up by name.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// spawn_many: the root spawns 10,000 no-op tasks; each ticks the countdown.
fn spawn_many<S: Spawner>(spawner: S, size: Size, finish: Finish<S>) -> Root {
    Box::pin(async move {
        let tasks = size.of(10_000);
        let countdown = finish.countdown(tasks);
        for _ in 0..tasks {
            let countdown = countdown.clone();
            spawner.spawn(async move { countdown.tick() });
        }
    })
}

/// yield_many: 1,000 tasks each `yield_now().await` 200 times, then tick the countdown.
fn yield_many<S: Spawner>(spawner: S, size: Size, finish: Finish<S>) -> Root {
    const YIELDS: usize = 200;
    Box::pin(async move {
        let tasks = size.of(1_000);
        let countdown = finish.countdown(tasks);
        for _ in 0..tasks {
            let countdown = countdown.clone();
            spawner.spawn(async move {
                for _ in 0..YIELDS {
                    S::yield_now().await;
                }
                countdown.tick();
            });
        }
    })
}

/// ping_pong: the root starts 1,000 round tasks at once; each spawns a partner, sends it a ping
/// over one oneshot, awaits the pong over another, then ticks the countdown.
fn ping_pong<S: Spawner>(spawner: S, size: Size, finish: Finish<S>) -> Root {
    Box::pin(async move {
        let rounds = size.of(1_000);
        let countdown = finish.countdown(rounds);
        for _ in 0..rounds {
            let countdown = countdown.clone();
            let partner = spawner.clone();
            spawner.spawn(async move {
                let (ping_tx, ping_rx) = oneshot::channel::<()>();
                let (pong_tx, pong_rx) = oneshot::channel::<()>();
                partner.spawn(async move {
                    ping_rx.await.expect("ping_pong: the round dropped its ping sender");
                    let _ = pong_tx.send(());
                });
                ping_tx.send(()).expect("ping_pong: the partner dropped its ping receiver");
                pong_rx.await.expect("ping_pong: the partner dropped its pong sender");
                countdown.tick();
            });
        }
    })
}

/// A ping of ping_pong_seq: where to send the pong, and where the next ping will arrive.
struct Ping {
    reply: oneshot::Sender<()>,
    next: oneshot::Receiver<Ping>,
}

/// ping_pong_seq: the root (ping) spawns its partner (pong) and does 1,000 sequential round
/// trips with it. Each round trip uses a fresh pair of `futures::channel::oneshot`s (the ping
/// carries the reply sender and the receiver of the next ping), so the only helper type is the
/// same oneshot as in ping_pong.
fn ping_pong_seq<S: Spawner>(spawner: S, size: Size, finish: Finish<S>) -> Root {
    Box::pin(async move {
        let rounds = size.of(1_000);
        let (mut to_pong, mut inbox) = oneshot::channel::<Ping>();
        spawner.spawn(async move {
            for _ in 0..rounds {
                let ping = inbox.await.expect("ping_pong_seq: ping went away");
                let _ = ping.reply.send(());
                inbox = ping.next;
            }
        });
        for _ in 0..rounds {
            let (reply, reply_rx) = oneshot::channel();
            let (next_tx, next) = oneshot::channel();
            if to_pong.send(Ping { reply, next }).is_err() {
                panic!("ping_pong_seq: pong went away");
            }
            to_pong = next_tx;
            reply_rx.await.expect("ping_pong_seq: pong dropped the reply sender");
        }
        finish.done();
    })
}

/// chained_spawn: each task spawns the next, 1,000 deep; the last one signals.
fn chained_spawn<S: Spawner>(spawner: S, size: Size, finish: Finish<S>) -> Root {
    Box::pin(async move { chain(spawner, size.of(1_000), finish) })
}

fn chain<S: Spawner>(spawner: S, left: usize, finish: Finish<S>) {
    if left == 0 {
        finish.done();
    } else {
        let next = spawner.clone();
        spawner.spawn(async move { chain(next, left - 1, finish) });
    }
}

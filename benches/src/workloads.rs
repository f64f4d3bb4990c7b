//! The workloads (BENCHMARKS.md's table). Adding one = a body per runtime (or one generic body
//! over [`Spawner`]) plus an entry in [`WORKLOADS`]; a peer without a counterpart is `None` and
//! prints `NA`.
//!
//! Helper types are the same for every runtime: completion is a std atomic countdown + std
//! channel ([`Countdown`](crate::job::Countdown), [`Finish`]); messages between tasks go over
//! `futures::channel::oneshot`. Timers and sockets are each runtime's own ([`Timers`], [`Net`]).

use std::future::Future;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use crate::job::{Body, Finish, Net, Root, Size, Spawner, Timers};
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
    /// Whether the workload uses timers or sockets: async-executor's runners then block in
    /// `async_io::block_on`, so that they drive the async-io reactor when idle (see
    /// [`runtimes`](crate::runtimes)).
    pub io: bool,
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
        io: false,
        trellis: spawn_many::<Trellis>,
        tokio: Some(spawn_many::<Tokio>),
        smol: Some(spawn_many::<Smol>),
    },
    Workload {
        name: "yield_many",
        about: "1,000 tasks each yield 200 times; the last to finish signals",
        reps: [4, 1],
        io: false,
        trellis: yield_many::<Trellis>,
        tokio: Some(yield_many::<Tokio>),
        smol: Some(yield_many::<Smol>),
    },
    Workload {
        name: "ping_pong",
        about: "1,000 concurrent rounds; each spawns a partner and exchanges one message each \
                way over oneshots",
        reps: [48, 12],
        io: false,
        trellis: ping_pong::<Trellis>,
        tokio: Some(ping_pong::<Tokio>),
        smol: Some(ping_pong::<Smol>),
    },
    Workload {
        name: "ping_pong_seq",
        about: "one task pair, 1,000 sequential round trips (a fresh pair of oneshots each)",
        reps: [100, 24],
        io: false,
        trellis: ping_pong_seq::<Trellis>,
        tokio: Some(ping_pong_seq::<Tokio>),
        smol: Some(ping_pong_seq::<Smol>),
    },
    Workload {
        name: "chained_spawn",
        about: "each task spawns the next, 1,000 deep; the last signals",
        reps: [256, 50],
        io: false,
        trellis: chained_spawn::<Trellis>,
        tokio: Some(chained_spawn::<Tokio>),
        smol: Some(chained_spawn::<Smol>),
    },
    Workload {
        name: "nursery_fanout",
        about: "a nursery spawns 10,000 no-op children and waits for all (tokio: a JoinSet \
                drained with join_next; async-executor: the Tasks collected and awaited)",
        reps: [16, 2],
        io: false,
        trellis: nursery_fanout_trellis,
        tokio: Some(nursery_fanout_tokio),
        smol: Some(nursery_fanout_smol),
    },
    Workload {
        name: "cancel_storm",
        about: "10,000 children parked in sleep(1 h) (started untimed) are all cancelled and \
                joined (tokio: JoinSet::abort_all; async-executor: Task::cancel, all at once)",
        reps: [16, 1],
        io: true,
        trellis: cancel_storm_trellis,
        tokio: Some(cancel_storm_tokio),
        smol: Some(cancel_storm_smol),
    },
    Workload {
        name: "timers",
        about: "in one task: 100,000 sleeps an hour ahead, each polled once then dropped; then \
                10,000 sleeps with a passed deadline, awaited",
        reps: [4, 1],
        io: true,
        trellis: timers::<Trellis>,
        tokio: Some(timers::<Tokio>),
        smol: Some(timers::<Smol>),
    },
    Workload {
        name: "timeout_hot",
        about: "in one task: 100,000 timeouts of 1 s (trellis move_on_after, tokio timeout, \
                async-io Timer raced with `or`) around an immediately ready operation",
        reps: [32, 6],
        io: true,
        trellis: timeout_hot::<Trellis>,
        tokio: Some(timeout_hot::<Tokio>),
        smol: Some(timeout_hot::<Smol>),
    },
    Workload {
        name: "tcp_echo",
        about: "64 loopback connections (set up untimed), 1,000 round trips of 64 bytes each \
                between 64 client tasks and 64 echo tasks",
        reps: [1, 1],
        io: true,
        trellis: tcp_echo::<Trellis>,
        tokio: Some(tcp_echo::<Tokio>),
        smol: Some(tcp_echo::<Smol>),
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

/// nursery_fanout, trellis: the root opens a `trellis::nursery` whose body spawns 10,000
/// children with `Nursery::spawn` (each `async { Ok(()) }`; the `TaskHandle`s are dropped,
/// which does not detach them) and returns `Ok(10,000)`; the nursery returns once every child
/// has finished, and its `Ok` and the count are checked (a failed child would make it `Err`).
fn nursery_fanout_trellis(_spawner: Trellis, size: Size, finish: Finish<Trellis>) -> Root {
    Box::pin(async move {
        let children = size.of(10_000);
        let joined = trellis::nursery(|nursery: trellis::Nursery<trellis::Cancelled>| async move {
            for _ in 0..children {
                drop(nursery.spawn(async { Ok(()) }));
            }
            Ok(children)
        })
        .await;
        let spawned = joined.expect("nursery_fanout: the trellis nursery failed");
        assert_eq!(black_box(spawned), children, "nursery_fanout: wrong child count");
        finish.done();
    })
}

/// nursery_fanout, tokio: the root spawns 10,000 no-op children into a `tokio::task::JoinSet`
/// (`JoinSet::spawn(async {})`), then drains it with `join_next` until it is empty; every
/// result must be `Ok` and there must be 10,000 of them.
fn nursery_fanout_tokio(_spawner: Tokio, size: Size, finish: Finish<Tokio>) -> Root {
    Box::pin(async move {
        let children = size.of(10_000);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..children {
            set.spawn(async {});
        }
        let mut joined = 0;
        while let Some(result) = set.join_next().await {
            result.expect("nursery_fanout: a tokio child failed");
            joined += 1;
        }
        assert_eq!(black_box(joined), children, "nursery_fanout: wrong child count");
        finish.done();
    })
}

/// nursery_fanout, async-executor (no nursery or task set of its own; the smol idiom): the root
/// spawns 10,000 no-op children with `Executor::spawn(async {})`, collects the `Task` handles
/// in a `Vec`, then awaits each in turn; there must be 10,000 outputs.
fn nursery_fanout_smol(spawner: Smol, size: Size, finish: Finish<Smol>) -> Root {
    Box::pin(async move {
        let children = size.of(10_000);
        let tasks: Vec<async_executor::Task<()>> =
            (0..children).map(|_| spawner.0.spawn(async {})).collect();
        let mut joined = 0;
        for task in tasks {
            task.await;
            joined += 1;
        }
        assert_eq!(black_box(joined), children, "nursery_fanout: wrong child count");
        finish.done();
    })
}

/// How long cancel_storm's children sleep: never, in practice.
const HOUR: Duration = Duration::from_secs(3600);

/// The children of one cancel_storm repetition: how many have parked in their sleep, and how
/// many have not been dropped yet (the same std atomics in every runtime).
#[derive(Debug)]
struct Sleepers {
    started: AtomicUsize,
    alive: AtomicUsize,
    total: usize,
}

impl Sleepers {
    fn new(total: usize) -> Arc<Sleepers> {
        Arc::new(Sleepers { started: AtomicUsize::new(0), alive: AtomicUsize::new(total), total })
    }

    /// Yields (the runtime's `yield_now`) until every child has parked in its sleep.
    async fn all_started<S: Spawner>(&self) {
        while self.started.load(Ordering::Acquire) < self.total {
            S::yield_now().await;
        }
    }

    /// Checks that every child's future has been dropped (the join waited for all of them).
    fn assert_all_dropped(&self) {
        assert_eq!(
            self.alive.load(Ordering::Acquire),
            0,
            "cancel_storm: the join returned before every child's future was dropped"
        );
    }
}

/// Counts a child out of [`Sleepers::alive`] when its future is dropped (made by the root, so
/// a child that never ran is counted out too).
#[derive(Debug)]
struct Alive(Arc<Sleepers>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::Release);
    }
}

/// A cancel_storm child: polls `sleep` once (it must be pending: registered with the timers),
/// counts itself started, then awaits it.
async fn sleeper<F: Future>(sleep: F, alive: Alive) -> F::Output {
    let mut sleep = pin!(sleep);
    assert!(
        futures::poll!(sleep.as_mut()).is_pending(),
        "cancel_storm: a sleep of an hour completed"
    );
    alive.0.started.fetch_add(1, Ordering::Release);
    let out = sleep.await;
    drop(alive);
    out
}

/// cancel_storm, trellis. Untimed setup ([`Finish::exclude`]): the root opens a
/// `trellis::nursery` whose body spawns 10,000 [`sleeper`]s around `trellis::time::sleep(1 h)`
/// (each returns the sleep's `Result`, `Err(Cancelled)` once cancelled, which the nursery
/// strips) and yields until all have parked. Timed: the body calls
/// `nursery.cancel_scope().cancel()` and returns `Ok`; the nursery returns once every child has
/// finished. Checked: the nursery's `Ok` (the cancellations were stripped) and every child's
/// future dropped.
fn cancel_storm_trellis(_spawner: Trellis, size: Size, finish: Finish<Trellis>) -> Root {
    Box::pin(async move {
        let setup = Instant::now();
        let sleepers = Sleepers::new(size.of(10_000));
        let finish = &finish;
        let inside = sleepers.clone();
        let joined = trellis::nursery(|nursery: trellis::Nursery<trellis::Cancelled>| async move {
            for _ in 0..inside.total {
                let alive = Alive(inside.clone());
                drop(nursery.spawn(sleeper(trellis::time::sleep(HOUR), alive)));
            }
            inside.all_started::<Trellis>().await;
            finish.exclude(setup.elapsed());
            nursery.cancel_scope().cancel();
            Ok(())
        })
        .await;
        joined.expect("cancel_storm: the trellis nursery reported a failure");
        sleepers.assert_all_dropped();
        finish.done();
    })
}

/// cancel_storm, tokio. Untimed setup: the root spawns 10,000 [`sleeper`]s around
/// `tokio::time::sleep(1 h)` into a `tokio::task::JoinSet` and yields until all have parked.
/// Timed: `JoinSet::abort_all`, then `join_next` until the set is empty; each result must be a
/// `JoinError` with `is_cancelled`, 10,000 of them, and every child's future dropped.
fn cancel_storm_tokio(_spawner: Tokio, size: Size, finish: Finish<Tokio>) -> Root {
    Box::pin(async move {
        let setup = Instant::now();
        let sleepers = Sleepers::new(size.of(10_000));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..sleepers.total {
            set.spawn(sleeper(tokio::time::sleep(HOUR), Alive(sleepers.clone())));
        }
        sleepers.all_started::<Tokio>().await;
        finish.exclude(setup.elapsed());
        set.abort_all();
        let mut cancelled = 0;
        while let Some(result) = set.join_next().await {
            let error = result.expect_err("cancel_storm: a tokio sleep of an hour completed");
            assert!(error.is_cancelled(), "cancel_storm: a tokio child failed: {error}");
            cancelled += 1;
        }
        assert_eq!(cancelled, sleepers.total, "cancel_storm: wrong child count");
        sleepers.assert_all_dropped();
        finish.done();
    })
}

/// cancel_storm, async-executor. Untimed setup: the root spawns 10,000 [`sleeper`]s around
/// `async_io::Timer::after(1 h)` with `Executor::spawn`, collects the `Task`s in a `Vec` and
/// yields until all have parked. Timed: `futures::future::join_all` over `Task::cancel` of every
/// task (so all are cancelled at its first poll, then awaited together; `cancel` resolves once
/// the task's future has been dropped); each must yield `None` (cancelled before completing),
/// 10,000 of them, and every child's future dropped.
fn cancel_storm_smol(spawner: Smol, size: Size, finish: Finish<Smol>) -> Root {
    Box::pin(async move {
        let setup = Instant::now();
        let sleepers = Sleepers::new(size.of(10_000));
        let tasks: Vec<_> = (0..sleepers.total)
            .map(|_| {
                spawner.0.spawn(sleeper(async_io::Timer::after(HOUR), Alive(sleepers.clone())))
            })
            .collect();
        sleepers.all_started::<Smol>().await;
        finish.exclude(setup.elapsed());
        let outputs = futures::future::join_all(tasks.into_iter().map(|t| t.cancel())).await;
        assert!(
            outputs.iter().all(Option::is_none),
            "cancel_storm: an async-io timer of an hour fired"
        );
        assert_eq!(outputs.len(), sleepers.total, "cancel_storm: wrong child count");
        sleepers.assert_all_dropped();
        finish.done();
    })
}

/// timers: all in the root task. 100,000 `sleep(1 h)`s, each pinned on the stack, polled once
/// (which registers it: it must be pending) and dropped (which cancels it); then 10,000
/// `sleep_until(a deadline a second ago)`s, each awaited (completes without waiting; a
/// runtime's cooperative budget may make the task yield in between).
fn timers<S: Timers>(_spawner: S, size: Size, finish: Finish<S>) -> Root {
    const HOUR: Duration = Duration::from_secs(3600);
    Box::pin(async move {
        for _ in 0..size.of(100_000) {
            let sleep = pin!(S::sleep(HOUR));
            assert!(futures::poll!(sleep).is_pending(), "timers: a sleep of an hour completed");
        }
        let passed = S::passed_deadline();
        for _ in 0..size.of(10_000) {
            S::sleep_until(passed).await;
        }
        finish.done();
    })
}

/// timeout_hot: all in the root task (the same single task in every runtime, so the cost of
/// the timeout itself is measured, not scheduling). 100,000 times: `S::timeout(1 s, op)` where
/// `op` is `std::future::ready(i)` (i hidden behind `black_box`), awaited; the timeout must
/// not fire, and the outputs are summed and checked, so none of them can be optimised away.
/// trellis: `move_on_after` (a cancel scope with a deadline); tokio: `tokio::time::timeout`;
/// async-executor: the op raced with `async_io::Timer::after` by `futures_lite::future::or`
/// (smol's idiom; `or` polls the op first, so the timer's async block is never polled and no
/// `Timer` is ever built: that column is the floor, a race with nothing to set up).
fn timeout_hot<S: Timers>(_spawner: S, size: Size, finish: Finish<S>) -> Root {
    const SECOND: Duration = Duration::from_secs(1);
    Box::pin(async move {
        let ops = size.of(100_000);
        let mut sum = 0_usize;
        for i in 0..ops {
            let out = S::timeout(SECOND, std::future::ready(black_box(i))).await;
            sum += out.expect("timeout_hot: a timeout of 1 s fired around a ready operation");
        }
        assert_eq!(black_box(sum), ops * (ops - 1) / 2, "timeout_hot: wrong outputs");
        finish.done();
    })
}

/// Connections of tcp_echo.
const ECHO_CONNECTIONS: usize = 64;
/// Bytes per message of tcp_echo.
const ECHO_MESSAGE: usize = 64;

/// tcp_echo. Untimed setup, in the root task: bind a listener on 127.0.0.1 (port 0, a fresh one
/// per repetition), then 64 times connect and accept, setting `TCP_NODELAY` on both ends; drop
/// the listener. Timed: the root spawns, per connection, an echo task (reads up to 64 bytes,
/// writes them back, until end of stream) and a client task (1,000 sequential round trips:
/// write 64 bytes, read 64 bytes back; then closes its end). Each task ticks the countdown
/// after closing its end, so the closes are timed too.
fn tcp_echo<S: Net>(spawner: S, size: Size, finish: Finish<S>) -> Root {
    Box::pin(async move {
        let setup = Instant::now();
        let listener = S::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("tcp_echo: bind a listener on 127.0.0.1");
        let addr = S::local_addr(&listener).expect("tcp_echo: listener address");
        let mut pairs = Vec::with_capacity(ECHO_CONNECTIONS);
        for _ in 0..ECHO_CONNECTIONS {
            let client = S::connect(addr).await.expect("tcp_echo: connect");
            let server = S::accept(&listener).await.expect("tcp_echo: accept");
            S::set_nodelay(&client).expect("tcp_echo: TCP_NODELAY");
            S::set_nodelay(&server).expect("tcp_echo: TCP_NODELAY");
            pairs.push((client, server));
        }
        drop(listener);
        finish.exclude(setup.elapsed());

        let round_trips = size.of(1_000);
        let countdown = finish.countdown(2 * ECHO_CONNECTIONS);
        for (mut client, mut server) in pairs {
            let done = countdown.clone();
            spawner.spawn(async move {
                let mut buf = [0; ECHO_MESSAGE];
                loop {
                    let n = S::read(&mut server, &mut buf).await.expect("tcp_echo: server read");
                    if n == 0 {
                        break;
                    }
                    S::write_all(&mut server, &buf[..n]).await.expect("tcp_echo: server write");
                }
                drop(server);
                done.tick();
            });
            let done = countdown.clone();
            spawner.spawn(async move {
                let message = [0x5a; ECHO_MESSAGE];
                let mut reply = [0; ECHO_MESSAGE];
                for _ in 0..round_trips {
                    S::write_all(&mut client, &message).await.expect("tcp_echo: client write");
                    S::read_exact(&mut client, &mut reply).await.expect("tcp_echo: client read");
                }
                assert!(round_trips == 0 || reply == message, "tcp_echo: wrong echo");
                drop(client);
                done.tick();
            });
        }
    })
}

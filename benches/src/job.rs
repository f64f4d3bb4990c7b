//! The vocabulary every workload is written in.
//!
//! A workload's body runs inside a *root task* that the driver thread injects into the runtime.
//! It spawns with the runtime's own in-task spawn ([`Spawner::spawn`]) and reports completion
//! through a [`Finish`] (directly, or through a [`Countdown`] when many tasks finish
//! concurrently). Completion is a std atomic + a std `mpsc` channel in every runtime, so the
//! schedulers are compared, not the channel implementations.
//!
//! **Repetitions**: an iteration may repeat the workload `reps` times back to back (for
//! workloads too short to time reliably). The repetitions chain *inside* the runtime: when a
//! repetition finishes, [`Finish::done`] spawns the next repetition's root task with the
//! runtime's own spawn, and only the last one signals the driver. That costs one extra spawn
//! per repetition (the same in every runtime) and keeps the driver's wake-up latency out of all
//! but one repetition.
//!
//! **Untimed setup**: a workload whose documented work needs setup first (tcp_echo connects
//! its sockets) may measure that setup inside the root task and report it with
//! [`Finish::exclude`]; the driver subtracts it from the iteration's time.
//!
//! **Per-runtime operations** beyond spawning: [`Timers`] (sleeps, timeouts) and [`Net`] (TCP),
//! so that the timers, timeout_hot and tcp_echo workloads are one generic body each, with the
//! same shape in every runtime; the implementations (in [`runtimes`](crate::runtimes)) are one
//! call each into the runtime's own API.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The root task of one repetition of a workload.
pub type Root = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A workload body for the runtime whose spawner is `S`: given the spawner, the size and the
/// completion token, it returns the root task's future. The body must call [`Finish::done`]
/// exactly once, when the repetition's work is complete (possibly from another task).
pub type Body<S> = fn(S, Size, Finish<S>) -> Root;

/// In-task operations of one runtime: what a workload body may use.
pub trait Spawner: Clone + Send + Sync + fmt::Debug + 'static {
    /// Spawns a detached task from inside a task of this runtime.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// This runtime's `yield_now`.
    fn yield_now() -> impl Future<Output = ()> + Send;
}

/// The runtime's timers, for the timers and timeout_hot workloads.
pub trait Timers: Spawner {
    /// The runtime's instant type.
    type Deadline: Copy + Send + 'static;

    /// A deadline that has already passed (about a second ago, or the clock's origin).
    fn passed_deadline() -> Deadline<Self>;

    /// The runtime's `sleep(duration)` (its output is not looked at: it is only polled once).
    fn sleep(duration: Duration) -> impl Future + Send;

    /// The runtime's `sleep_until(deadline)`, awaited to completion.
    fn sleep_until(deadline: Deadline<Self>) -> impl Future<Output = ()> + Send;

    /// The runtime's way to bound `future` by `duration`: `Some(output)`, or `None` if the
    /// time ran out first.
    fn timeout<F>(duration: Duration, future: F) -> impl Future<Output = Option<F::Output>> + Send
    where
        F: Future + Send,
        F::Output: Send;
}

/// The deadline type of a [`Timers`] runtime.
pub type Deadline<S> = <S as Timers>::Deadline;

/// The runtime's own TCP types, for the tcp_echo workload. Streams must be created inside a
/// task of the runtime (they register with its reactor).
pub trait Net: Spawner {
    /// The listener type.
    type Listener: Send + 'static;
    /// The stream type.
    type Stream: Send + 'static;

    /// Binds a listener.
    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The listener's address.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Connects to `addr`.
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Accepts a connection.
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Sets `TCP_NODELAY`.
    fn set_nodelay(stream: &Self::Stream) -> io::Result<()>;

    /// Reads what is available (at least one byte; 0 at the end of the stream).
    fn read<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Fills `buf`.
    fn read_exact<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// Writes all of `buf`.
    fn write_all<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
}

/// How much work an iteration does: the documented (full) size, or a tenth of it (`--quick`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    quick: bool,
}

impl Size {
    /// The full size of the documented work.
    pub const FULL: Size = Size { quick: false };
    /// A tenth of the tasks / rounds.
    pub const QUICK: Size = Size { quick: true };

    /// `full` at full size, a tenth of it (at least 1) in quick mode.
    pub fn of(self, full: usize) -> usize {
        if self.quick {
            (full / 10).max(1)
        } else {
            full
        }
    }

    /// Whether this is the `--quick` size.
    pub fn is_quick(self) -> bool {
        self.quick
    }
}

/// The completion token of one repetition: see the module docs.
#[derive(Debug)]
pub struct Finish<S: Spawner> {
    spawner: S,
    body: Body<S>,
    size: Size,
    reps_left: usize,
    /// Untimed setup of this and the earlier repetitions, in nanoseconds.
    excluded: AtomicU64,
    done: mpsc::Sender<Duration>,
}

impl<S: Spawner> Finish<S> {
    /// A token for the first of `reps` repetitions; the last one sends the total untimed
    /// setup (see [`Finish::exclude`]) on `done`.
    pub fn new(
        spawner: S,
        body: Body<S>,
        size: Size,
        reps: usize,
        done: mpsc::Sender<Duration>,
    ) -> Self {
        Finish { spawner, body, size, reps_left: reps.max(1), excluded: AtomicU64::new(0), done }
    }

    /// Takes `setup` (measured inside the task) out of the iteration's time. Must be called
    /// before this repetition's [`Finish::done`] (or its countdown's last tick).
    pub fn exclude(&self, setup: Duration) {
        let nanos = u64::try_from(setup.as_nanos()).unwrap_or(u64::MAX);
        self.excluded.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The repetition's work is complete: start the next repetition (with the runtime's own
    /// spawn) or, after the last one, signal the driver. Must be called from inside a task.
    pub fn done(&self) {
        if self.reps_left > 1 {
            let next = Finish {
                spawner: self.spawner.clone(),
                body: self.body,
                size: self.size,
                reps_left: self.reps_left - 1,
                excluded: AtomicU64::new(self.excluded.load(Ordering::Relaxed)),
                done: self.done.clone(),
            };
            self.spawner.spawn((self.body)(self.spawner.clone(), self.size, next));
        } else {
            // The driver only stops listening after reporting a timeout; nothing to do then.
            let _ = self.done.send(Duration::from_nanos(self.excluded.load(Ordering::Relaxed)));
        }
    }

    /// Turns the token into a countdown of `n` ticks; the last tick calls [`Finish::done`].
    pub fn countdown(self, n: usize) -> Arc<Countdown<S>> {
        Arc::new(Countdown { left: AtomicUsize::new(n), finish: self })
    }
}

/// A std atomic countdown shared by the tasks of a repetition.
#[derive(Debug)]
pub struct Countdown<S: Spawner> {
    left: AtomicUsize,
    finish: Finish<S>,
}

impl<S: Spawner> Countdown<S> {
    /// One task is finished; the last one completes the repetition.
    pub fn tick(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish.done();
        }
    }
}

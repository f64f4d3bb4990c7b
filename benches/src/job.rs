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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

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
    done: mpsc::Sender<()>,
}

impl<S: Spawner> Finish<S> {
    /// A token for the first of `reps` repetitions; the last one sends on `done`.
    pub fn new(spawner: S, body: Body<S>, size: Size, reps: usize, done: mpsc::Sender<()>) -> Self {
        Finish { spawner, body, size, reps_left: reps.max(1), done }
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
                done: self.done.clone(),
            };
            self.spawner.spawn((self.body)(self.spawner.clone(), self.size, next));
        } else {
            // The driver only stops listening after reporting a timeout; nothing to do then.
            let _ = self.done.send(());
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

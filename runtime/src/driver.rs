//! The driver: the reactor (I/O readiness) and the timers, driven by whichever worker is about
//! to sleep, with no dedicated thread.
//!
//! # Who waits in the poller (the parking protocol)
//!
//! 1. **One waiter.** A worker with nothing to do parks (rule 4 of `scheduler/idle.rs`). Its
//!    `Parker` tries to take the driver's *waiter lock* (`try_lock`). The worker that gets it
//!    blocks in `Poller::wait` with a timeout equal to the next timer expiration (state
//!    `PARKED_DRIVER`); every other parked worker waits on its own condition variable
//!    (`PARKED_CONDVAR`). So at most one thread waits in the poller, and if every worker is
//!    parked, one of them does: only a worker inside its park holds the lock, so the last
//!    worker to park finds it free or finds a parked worker holding it.
//! 2. **Waking the waiter.** `Parker::unpark` swaps the state to `NOTIFIED` and, if it was
//!    `PARKED_DRIVER`, calls `Poller::notify`. A notify that comes before the wait makes that
//!    wait return at once (the poller keeps a flag and an eventfd), so it is never lost; a stale
//!    one only causes a spurious return, which the worker loop treats as such.
//! 3. **Timers that come due earlier.** The waiter records the deadline it sleeps until under
//!    the timer lock ([`TimeDriver::begin_wait`]). Registering a timer takes the same lock and
//!    wakes the poller if the new deadline is earlier, so no timer can slip between the
//!    waiter's "compute my timeout" and its wait.
//! 4. **After the wait**, the waiter applies the I/O events and fires the due timers,
//!    collecting wakers under the locks and waking them after releasing them all. Tasks of
//!    this runtime woken there go to the waiter's local queue (not its LIFO slot); the worker
//!    then leaves the sleepers list itself and, if it has more than one task, wakes a peer.
//! 5. **Busy workers** poll the driver without blocking every `EVENT_INTERVAL` ticks if the
//!    waiter lock is free, and skip even that when nothing is registered and no timer is due,
//!    so a compute-only workload pays nothing for the reactor.
//!
//! # Virtual time
//!
//! 6. With virtual time the clock moves only here, in the waiter's turn, and only when the
//!    whole runtime is idle: every worker registered as asleep with nothing queued anywhere
//!    (injector, local queues), no blocking job running or queued, every `block_on` thread
//!    parked with no wake pending, and a zero-timeout poll of the reactor returning no events.
//!    Then the clock jumps to the earliest pending deadline and the timers due there fire.
//!    Idle sockets do not prevent the jump; a ready event is always processed first.
//!
//!    The check reads the participants one after another, so it is no snapshot: a `block_on`
//!    thread could queue work where the check already looked (a task, a blocking job) and park
//!    before the check looks at it, and a participant woken after the check could register a
//!    timer before the jump. Hence an *epoch* (in `TimeDriver`): a `block_on` thread bumps it
//!    before it parks or leaves, a blocking-pool thread before it counts itself idle, and
//!    every timer registration bumps it under the timer lock. The waiter reads it before the
//!    check and jumps only if it is unchanged at the jump, compared under the timer lock. Then
//!    every participant seen idle had made its hand-offs before the check began (they are
//!    seen), and the deadline jumped to was registered before it. Workers need no epoch: the
//!    check reads their count first, and a worker hands work on before it counts itself asleep.
//!    Nor does the waiter block in the poller if the epoch moved since its check (compared
//!    under the timer lock as it registers as parked, [`TimeDriver::begin_wait`]): a timer
//!    registered in between found nobody parked to wake, so the waiter looks again instead.
//! 7. A participant that becomes idle while the waiter is blocked (a worker parking on its
//!    condvar, a `block_on` thread parking or leaving `block_on`, a blocking job finishing)
//!    wakes the poller after its epoch bump, so the waiter re-evaluates rule 6 (also after a
//!    jump refused for a moved epoch). Wakes from foreign threads are not waited for.
//!
//! The loom models in `scheduler::loom_driver` check these rules.

use std::task::Waker;
use std::time::Duration;

use crate::io::poller::Events;
use crate::io::reactor::Reactor;
use crate::sync::{Mutex, MutexGuard};
use crate::time::driver::TimeDriver;

pub(crate) struct Driver {
    pub(crate) reactor: Reactor,
    pub(crate) time: TimeDriver,
    /// Held by the one thread that waits in the poller (rule 1), and by a busy worker's
    /// non-blocking poll (rule 5).
    waiter: Mutex<Waiter>,
}

/// Buffers owned by whoever holds the waiter lock.
pub(crate) struct Waiter {
    events: Events,
    woken: Vec<Waker>,
}

/// What one turn of the driver did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Turn {
    /// Wakers woken (I/O and timers together).
    pub(crate) woken: usize,
}

impl Driver {
    pub(crate) fn new(virtual_time: bool) -> std::io::Result<Driver> {
        Ok(Driver {
            reactor: Reactor::new()?,
            time: TimeDriver::new(virtual_time),
            waiter: Mutex::new(Waiter { events: Events::new(), woken: Vec::new() }),
        })
    }

    /// Rule 1: the waiter role, if no other thread has it.
    pub(crate) fn try_lock_waiter(&self) -> Option<MutexGuard<'_, Waiter>> {
        self.waiter.try_lock()
    }

    /// Rule 2: makes the waiter's current or next wait return at once.
    pub(crate) fn wake(&self) {
        self.reactor.notify();
    }

    /// Rule 6: a `block_on` thread or a blocking-pool thread is about to go idle (or leave),
    /// its hand-offs done; with virtual time a jump being decided must look again.
    pub(crate) fn before_idle(&self) {
        if self.time.is_virtual() {
            self.time.bump_epoch();
        }
    }

    /// Rule 7: a participant became idle; with virtual time the waiter re-evaluates.
    pub(crate) fn wake_if_virtual(&self) {
        if self.time.is_virtual() {
            self.wake();
        }
    }

    /// Rule 5: whether a non-blocking turn could find anything (registered I/O, or a timer
    /// that is due).
    pub(crate) fn has_pending_work(&self) -> bool {
        self.reactor.registrations() > 0 || self.time.has_due_timer()
    }

    /// One turn (rules 3, 4, 6): waits up to `timeout` (`None`: until woken, or until the next
    /// timer), then applies I/O events and fires due timers, and wakes what they woke. With
    /// virtual time and `runtime_idle()` true, jumps the clock instead of waiting.
    ///
    /// `interrupted()` tells whether the waiting thread was unparked meanwhile: with virtual
    /// time a turn may wait twice (a zero-timeout poll first), and the first wait can swallow
    /// the poller notification meant to end the turn, so it is checked before the second.
    pub(crate) fn turn(
        &self,
        waiter: &mut Waiter,
        timeout: Option<Duration>,
        runtime_idle: impl Fn() -> bool,
        interrupted: impl Fn() -> bool,
    ) -> Turn {
        let blocking = timeout != Some(Duration::ZERO);
        let mut checked_at = None;
        if self.time.is_virtual() && blocking {
            // Rule 6: never sleep through a moment in which time could move.
            let turn = self.run_once(waiter, Some(Duration::ZERO), None);
            if turn.woken > 0 {
                return turn;
            }
            // Rule 6: the epoch read before the idle check must still hold at the jump, and
            // at the wait (which otherwise returns at once: the check is stale).
            let epoch = self.time.epoch();
            checked_at = Some(epoch);
            if runtime_idle() {
                self.time.jump_to_next_deadline(epoch, &mut waiter.woken);
                let woken = self.wake_all(waiter);
                if woken > 0 {
                    return Turn { woken };
                }
            }
            if interrupted() {
                return Turn::default();
            }
        }
        self.run_once(waiter, timeout, checked_at)
    }

    /// One wait and what it woke; `checked_at`: the epoch of the idle check before it (rule 6).
    fn run_once(
        &self,
        waiter: &mut Waiter,
        timeout: Option<Duration>,
        checked_at: Option<u64>,
    ) -> Turn {
        let timeout = self.time.begin_wait(timeout, checked_at);
        let result = self.reactor.wait(&mut waiter.events, timeout);
        self.time.end_wait();
        if let Err(e) = result {
            // The poller itself failed (not a socket): nothing to apply; report once per turn.
            eprintln!("trellis: waiting for I/O events failed: {e}");
        }
        self.reactor.dispatch(waiter.events.iter(), &mut waiter.woken);
        self.time.process(&mut waiter.woken);
        Turn { woken: self.wake_all(waiter) }
    }

    /// Wakes the collected wakers (no lock of the driver is held here).
    fn wake_all(&self, waiter: &mut Waiter) -> usize {
        let n = waiter.woken.len();
        for waker in waiter.woken.drain(..) {
            waker.wake();
        }
        n
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("reactor", &self.reactor).field("time", &self.time).finish()
    }
}

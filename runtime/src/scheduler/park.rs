//! `Parker`: block a thread until another thread unparks it, without losing an unpark; a
//! parked worker may wait in the I/O driver instead of on its condition variable.
//!
//! # Protocol
//!
//! One atomic `state` (`EMPTY`, `PARKED_CONDVAR`, `PARKED_DRIVER`, `NOTIFIED`), a mutex and a
//! condition variable:
//!
//! 1. `unpark` swaps the state to `NOTIFIED`. If it was `PARKED_CONDVAR`, it takes the mutex
//!    (and releases it at once) and signals the condvar: taking the mutex orders the signal
//!    after the parker's own `EMPTY -> PARKED_CONDVAR` transition, which happens under the
//!    mutex, so the signal cannot fall between the parker's check and its wait. If it was
//!    `PARKED_DRIVER`, it wakes the poller instead (`Driver::wake`; an early wake-up is kept by
//!    the poller, see `driver.rs` rule 2).
//! 2. `park` first tries `NOTIFIED -> EMPTY` (an unpark came first: return at once). A worker
//!    then tries to become the driver's waiter (`driver.rs` rule 1): on success it moves
//!    `EMPTY -> PARKED_DRIVER` (or consumes a `NOTIFIED` that raced in), runs one blocking turn
//!    of the driver, and swaps back to `EMPTY`. Otherwise it takes the mutex, moves
//!    `EMPTY -> PARKED_CONDVAR` (or consumes a racing `NOTIFIED`), calls the "now idle" hook
//!    (virtual time, `driver.rs` rule 7) and waits until it can move `NOTIFIED -> EMPTY`;
//!    spurious wake-ups wait again.
//! 3. Every unpark is consumed by exactly one park (or stays pending for the next one). A
//!    return from the driver turn without an unpark is spurious: the worker loop checks
//!    whether it really has work (`worker.rs`).
//!
//! The loom models `park_unpark_*` in `scheduler::loom_models` check these rules.

use crate::driver::{Driver, Waiter};
use crate::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::sync::{Condvar, Mutex, MutexGuard};

const EMPTY: usize = 0;
const PARKED_CONDVAR: usize = 1;
const PARKED_DRIVER: usize = 2;
const NOTIFIED: usize = 3;

#[derive(Debug)]
pub(crate) struct Parker {
    state: AtomicUsize,
    lock: Mutex<()>,
    cvar: Condvar,
}

impl Parker {
    pub(crate) fn new() -> Parker {
        Parker { state: AtomicUsize::new(EMPTY), lock: Mutex::new(()), cvar: Condvar::new() }
    }

    /// Blocks until unparked (returns at once if an unpark is pending), on the condvar only.
    /// `on_idle` runs once the thread is committed to sleeping (rule 2).
    pub(crate) fn park(&self, on_idle: impl FnOnce()) {
        if self.consume_notification() {
            return;
        }
        self.park_condvar(on_idle);
    }

    /// A worker's park: waits in the driver if no other thread does (rule 2), else on the
    /// condvar. `turn` runs one blocking turn of the driver with the waiter lock held.
    pub(crate) fn park_worker(
        &self,
        driver: &Driver,
        turn: impl FnOnce(&mut MutexGuard<'_, Waiter>),
        on_idle: impl FnOnce(),
    ) {
        if self.consume_notification() {
            return;
        }
        match driver.try_lock_waiter() {
            Some(mut waiter) => {
                match self.state.compare_exchange(EMPTY, PARKED_DRIVER, SeqCst, SeqCst) {
                    Ok(_) => {}
                    Err(NOTIFIED) => {
                        self.state.swap(EMPTY, SeqCst);
                        return;
                    }
                    Err(actual) => {
                        unreachable!("parker state {actual}: two threads parked on one parker")
                    }
                }
                turn(&mut waiter);
                drop(waiter);
                // An unpark during the turn left NOTIFIED: consumed here (it woke the poller).
                match self.state.swap(EMPTY, SeqCst) {
                    NOTIFIED | PARKED_DRIVER => {}
                    actual => unreachable!("parker state {actual} after a driver turn"),
                }
            }
            None => self.park_condvar(on_idle),
        }
    }

    fn consume_notification(&self) -> bool {
        self.state.compare_exchange(NOTIFIED, EMPTY, SeqCst, SeqCst).is_ok()
    }

    fn park_condvar(&self, on_idle: impl FnOnce()) {
        let mut guard = self.lock.lock();
        match self.state.compare_exchange(EMPTY, PARKED_CONDVAR, SeqCst, SeqCst) {
            Ok(_) => {}
            Err(NOTIFIED) => {
                // Rule 2: an unpark raced in between the fast path and the lock.
                let old = self.state.swap(EMPTY, SeqCst);
                debug_assert_eq!(old, NOTIFIED);
                return;
            }
            Err(actual) => unreachable!("parker state {actual}: two threads parked on one parker"),
        }
        on_idle();
        loop {
            self.cvar.wait(&mut guard);
            if self.consume_notification() {
                return;
            }
        }
    }

    /// Wakes the parked thread, or makes its next `park` return at once (rule 1).
    pub(crate) fn unpark(&self, driver: Option<&Driver>) {
        match self.state.swap(NOTIFIED, SeqCst) {
            EMPTY | NOTIFIED => {}
            PARKED_CONDVAR => {
                drop(self.lock.lock());
                self.cvar.notify_one();
            }
            PARKED_DRIVER => {
                driver
                    .expect("only workers wait in the driver, and they are unparked with it")
                    .wake();
            }
            actual => unreachable!("parker state {actual}"),
        }
    }

    /// Whether an unpark is pending (the driver's waiter checks it between its two waits).
    pub(crate) fn is_notified(&self) -> bool {
        self.state.load(SeqCst) == NOTIFIED
    }

    /// Whether the thread is asleep with no wake-up pending (virtual time, `driver.rs` rule 6).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state.load(SeqCst), PARKED_CONDVAR | PARKED_DRIVER)
    }
}

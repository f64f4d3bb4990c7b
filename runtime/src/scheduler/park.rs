//! `Parker`: block a thread until another thread unparks it, without losing an unpark.
//!
//! # Protocol
//!
//! One atomic `state` with three values, plus a mutex and a condition variable:
//!
//! 1. `unpark` swaps the state to `NOTIFIED`. Only if it was `PARKED` does it take the mutex
//!    (and release it at once) and signal the condvar. Taking the mutex orders the signal after
//!    the parker's own `EMPTY -> PARKED` transition, which happens under the mutex, so the
//!    parker is already inside `wait` (or about to re-check the state under the mutex) when the
//!    signal comes: the signal cannot fall between its check and its wait.
//! 2. `park` first tries `NOTIFIED -> EMPTY` (an unpark came first: return at once). Otherwise
//!    it takes the mutex and tries `EMPTY -> PARKED`; if that fails the state was `NOTIFIED`
//!    (an unpark raced in), so it consumes it and returns. Otherwise it waits on the condvar
//!    until it can move `NOTIFIED -> EMPTY`; spurious wake-ups wait again.
//! 3. Every unpark is consumed by exactly one park (or remains pending for the next one), so
//!    a worker that decides to sleep after someone decided to wake it never sleeps through it.
//!
//! The loom model `park_unpark_*` in `scheduler::loom_models` checks these rules.

use std::time::Duration;

use crate::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::sync::{Condvar, Mutex};

const EMPTY: usize = 0;
const PARKED: usize = 1;
const NOTIFIED: usize = 2;

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

    /// Blocks until unparked (returns at once if an unpark is pending).
    pub(crate) fn park(&self) {
        self.park_inner(None);
    }

    fn park_inner(&self, timeout: Option<Duration>) {
        if self.state.compare_exchange(NOTIFIED, EMPTY, SeqCst, SeqCst).is_ok() {
            return;
        }
        let mut guard = self.lock.lock();
        match self.state.compare_exchange(EMPTY, PARKED, SeqCst, SeqCst) {
            Ok(_) => {}
            Err(NOTIFIED) => {
                // Rule 2: an unpark raced in between the fast path and the lock.
                let old = self.state.swap(EMPTY, SeqCst);
                debug_assert_eq!(old, NOTIFIED);
                return;
            }
            Err(actual) => unreachable!("parker state {actual}: two threads parked on one parker"),
        }
        loop {
            let timed_out = match timeout {
                Some(t) => self.cvar.wait_for(&mut guard, t).timed_out(),
                None => {
                    self.cvar.wait(&mut guard);
                    false
                }
            };
            if self.state.compare_exchange(NOTIFIED, EMPTY, SeqCst, SeqCst).is_ok() {
                return;
            }
            if timed_out {
                // Give up PARKED unless an unpark arrived just now (then consume it).
                match self.state.swap(EMPTY, SeqCst) {
                    NOTIFIED | PARKED => return,
                    actual => unreachable!("parker state {actual} after a timed-out wait"),
                }
            }
        }
    }

    /// Wakes the parked thread, or makes its next `park` return at once.
    pub(crate) fn unpark(&self) {
        match self.state.swap(NOTIFIED, SeqCst) {
            EMPTY | NOTIFIED => {}
            PARKED => {
                // Rule 1: synchronise with the parker's transition under the mutex.
                drop(self.lock.lock());
                self.cvar.notify_one();
            }
            actual => unreachable!("parker state {actual}"),
        }
    }
}

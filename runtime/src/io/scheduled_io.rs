//! Per-registration readiness: what the reactor last saw of one file descriptor, and who waits.
//!
//! # The readiness word
//!
//! One `AtomicUsize`: the low bits are readiness flags ([`READABLE`], [`WRITABLE`],
//! [`READ_CLOSED`], [`WRITE_CLOSED`]); the bits above [`TICK_SHIFT`] count the events the reactor
//! delivered for this registration (wrapping). Registrations are edge-triggered, so:
//!
//! 1. The reactor *sets* flags when an event arrives (and bumps the tick), then takes the
//!    waiting wakers for the directions that became ready, under the waiters' lock, and wakes
//!    them after releasing every lock.
//! 2. An operation that finds the fd ready tries the syscall; if that says `WouldBlock`, it
//!    *clears* the direction's flag, but only if the tick is still the one it saw when it found
//!    the fd ready. A newer tick means an event arrived in between, which the clear must not
//!    erase (that would lose the edge and hang the operation).
//! 3. A waiter stores its waker under the waiters' lock and re-reads the readiness word under
//!    the same lock before returning `Pending`, so an event that arrives between its first check
//!    and its registration is seen either by the re-read or by the reactor taking the waker.
//!
//! # Waiters
//!
//! Any number of tasks may wait on the same direction (a socket shared by several tasks, each
//! in `readable().await`): each direction keeps a small slab of waker slots. A waiting future
//! owns one slot from its first `Pending` until it is dropped; slot 0 of each direction is
//! reserved for the `poll_*` methods (`AsyncRead`/`AsyncWrite`), which have nowhere to keep a
//! slot of their own (so, as everywhere, one task at a time may drive a stream's `poll_read`).
//!
//! The `*_CLOSED` flags are sticky: once the peer hung up, reads return at once (EOF or error).

use std::task::{Context, Poll, Waker};

use crate::sync::atomic::{AtomicUsize, Ordering::*};
use crate::sync::Mutex;

pub(crate) const READABLE: usize = 1 << 0;
pub(crate) const WRITABLE: usize = 1 << 1;
pub(crate) const READ_CLOSED: usize = 1 << 2;
pub(crate) const WRITE_CLOSED: usize = 1 << 3;
const FLAGS: usize = READABLE | WRITABLE | READ_CLOSED | WRITE_CLOSED;
const TICK_SHIFT: u32 = 8;

/// A direction an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    /// The flags that make this direction ready (a closed side is "ready": the syscall returns
    /// at once with EOF or the error).
    fn mask(self) -> usize {
        match self {
            Direction::Read => READABLE | READ_CLOSED,
            Direction::Write => WRITABLE | WRITE_CLOSED,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }
}

/// Proof that a direction was ready at a given tick (for [`ScheduledIo::clear_readiness`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadyEvent {
    tick: usize,
    direction: Direction,
}

/// The poll-method waiter's slot (see "Waiters").
pub(crate) const POLL_SLOT: usize = 0;

#[derive(Debug, Default)]
struct WaiterList {
    slots: Vec<Option<Waker>>,
    /// Released slots (never `POLL_SLOT`).
    free: Vec<usize>,
}

impl WaiterList {
    fn new() -> WaiterList {
        WaiterList { slots: vec![None], free: Vec::new() }
    }

    fn take_all(&mut self, woken: &mut Vec<Waker>) {
        woken.extend(self.slots.iter_mut().filter_map(Option::take));
    }
}

#[derive(Debug)]
pub(crate) struct ScheduledIo {
    readiness: AtomicUsize,
    waiters: Mutex<[WaiterList; 2]>,
}

impl ScheduledIo {
    pub(crate) fn new() -> ScheduledIo {
        ScheduledIo {
            readiness: AtomicUsize::new(0),
            waiters: Mutex::new([WaiterList::new(), WaiterList::new()]),
        }
    }

    /// Rule 1: records an event and collects the wakers of directions that became ready.
    pub(crate) fn set_readiness(&self, flags: usize, woken: &mut Vec<Waker>) {
        debug_assert_eq!(flags & !FLAGS, 0);
        let mut current = self.readiness.load(Acquire);
        loop {
            let tick = (current >> TICK_SHIFT).wrapping_add(1);
            let next = (tick << TICK_SHIFT) | (current & FLAGS) | flags;
            match self.readiness.compare_exchange_weak(current, next, AcqRel, Acquire) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let mut waiters = self.waiters.lock();
        for direction in [Direction::Read, Direction::Write] {
            if flags & direction.mask() != 0 {
                waiters[direction.index()].take_all(woken);
            }
        }
    }

    /// Rule 3: `Ready` if `direction` is ready now; otherwise stores the waker in `slot`
    /// (allocated on first use; release it with [`forget_waiter`](Self::forget_waiter)).
    pub(crate) fn poll_readiness(
        &self,
        direction: Direction,
        slot: &mut Option<usize>,
        cx: &mut Context<'_>,
    ) -> Poll<ReadyEvent> {
        if let Some(ready) = self.ready_now(direction) {
            return Poll::Ready(ready);
        }
        let mut waiters = self.waiters.lock();
        let list = &mut waiters[direction.index()];
        let index = *slot.get_or_insert_with(|| match list.free.pop() {
            Some(i) => i,
            None => {
                list.slots.push(None);
                list.slots.len() - 1
            }
        });
        let entry = &mut list.slots[index];
        if !entry.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *entry = Some(cx.waker().clone());
        }
        match self.ready_now(direction) {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    /// Releases a waiter's slot (its future is dropped or done); returns the waker it held,
    /// for the caller to drop after unlocking.
    pub(crate) fn forget_waiter(&self, direction: Direction, slot: usize) -> Option<Waker> {
        let mut waiters = self.waiters.lock();
        let list = &mut waiters[direction.index()];
        let waker = list.slots.get_mut(slot).and_then(Option::take);
        if slot != POLL_SLOT {
            list.free.push(slot);
        }
        waker
    }

    fn ready_now(&self, direction: Direction) -> Option<ReadyEvent> {
        let current = self.readiness.load(Acquire);
        (current & direction.mask() != 0)
            .then_some(ReadyEvent { tick: current >> TICK_SHIFT, direction })
    }

    /// Rule 2: the operation got `WouldBlock`: clear the direction's flag unless an event came
    /// since `event` was observed. Closed flags are never cleared.
    pub(crate) fn clear_readiness(&self, event: ReadyEvent) {
        let clear = match event.direction {
            Direction::Read => READABLE,
            Direction::Write => WRITABLE,
        };
        let mut current = self.readiness.load(Acquire);
        loop {
            if current >> TICK_SHIFT != event.tick {
                return;
            }
            match self.readiness.compare_exchange_weak(current, current & !clear, AcqRel, Acquire) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes every stored waker (the registration is going away), for the caller to wake or
    /// drop after its locks.
    pub(crate) fn take_all_waiters(&self, woken: &mut Vec<Waker>) {
        let mut waiters = self.waiters.lock();
        for list in waiters.iter_mut() {
            list.take_all(woken);
        }
    }
}

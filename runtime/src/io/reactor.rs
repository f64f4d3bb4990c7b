//! The reactor: the OS poller plus the table of registrations it reports events for.
//!
//! This is the reactor's *state*; who waits in the poller, and when, is the driver's business
//! (`crate::driver`). Every registered file descriptor gets a [`ScheduledIo`] in a slab; its
//! poller key is its slab index plus the slot's *generation*, bumped whenever the slot is
//! freed. An event still in flight for a registration that was removed (the fd closed, maybe
//! reopened under the same number and registered again) carries the old generation and is
//! dropped, so a reused fd is never woken by a stale registration.
//!
//! `dispatch` marks readiness and collects wakers under the slab lock (and each registration's
//! waiters lock, always taken after it); the caller wakes them after every lock is released.

use std::io;
use std::os::fd::BorrowedFd;
use std::task::Waker;
use std::time::Duration;

use super::poller::{Events, PollEvent, Poller};
use super::scheduled_io::{ScheduledIo, READABLE, READ_CLOSED, WRITABLE, WRITE_CLOSED};
use crate::sync::{Arc, Mutex};

pub(crate) struct Reactor {
    poller: Poller,
    slab: Mutex<Slab>,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

struct Slot {
    generation: u32,
    io: Option<Arc<ScheduledIo>>,
}

/// A live registration: its readiness state and its poller key.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) io: Arc<ScheduledIo>,
    key: usize,
}

fn key_of(index: u32, generation: u32) -> usize {
    // The poller reserves `usize::MAX` for its own notifications; index < u32::MAX avoids it.
    ((generation as u64) << 32 | index as u64) as usize
}

fn split_key(key: usize) -> (u32, u32) {
    let key = key as u64;
    ((key & u32::MAX as u64) as u32, (key >> 32) as u32)
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        Ok(Reactor { poller: Poller::new()?, slab: Mutex::new(Slab::default()) })
    }

    /// Registers `fd` (both directions, edge-triggered).
    ///
    /// # Safety
    /// The caller must [`deregister`](Self::deregister) `fd` before closing it.
    pub(crate) unsafe fn register(&self, fd: BorrowedFd<'_>) -> io::Result<Registered> {
        let io = Arc::new(ScheduledIo::new());
        let key = {
            let mut slab = self.slab.lock();
            let index = match slab.free.pop() {
                Some(i) => i,
                None => {
                    let i = u32::try_from(slab.slots.len())
                        .ok()
                        .filter(|&i| i != u32::MAX)
                        .ok_or_else(|| io::Error::other("too many registered I/O sources"))?;
                    slab.slots.push(Slot { generation: 0, io: None });
                    i
                }
            };
            let slot = &mut slab.slots[index as usize];
            slot.io = Some(io.clone());
            let key = key_of(index, slot.generation);
            slab.live += 1;
            key
        };
        // SAFETY: forwarded from the caller's contract.
        if let Err(e) = unsafe { self.poller.add(fd, key) } {
            self.release(key);
            return Err(e);
        }
        Ok(Registered { io, key })
    }

    /// Removes a registration: the poller forgets `fd`, and the slot is freed with a new
    /// generation. Wakers still stored are woken (their operations retry and find the source
    /// gone, or are being dropped anyway).
    pub(crate) fn deregister(&self, registered: &Registered, fd: BorrowedFd<'_>) -> io::Result<()> {
        let result = self.poller.delete(fd);
        self.release(registered.key);
        let mut woken = Vec::new();
        registered.io.take_all_waiters(&mut woken);
        woken.into_iter().for_each(Waker::wake);
        result
    }

    fn release(&self, key: usize) {
        let (index, generation) = split_key(key);
        let mut slab = self.slab.lock();
        let slot = &mut slab.slots[index as usize];
        if slot.generation == generation && slot.io.take().is_some() {
            slot.generation = slot.generation.wrapping_add(1);
            slab.free.push(index);
            slab.live -= 1;
        }
    }

    /// Number of live registrations (diagnostics and tests).
    pub(crate) fn registrations(&self) -> usize {
        self.slab.lock().live
    }

    /// Waits in the poller; see `Poller::wait`.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        self.poller.wait(events, timeout)
    }

    /// Makes the current or next `wait` return at once.
    pub(crate) fn notify(&self) {
        self.poller.notify();
    }

    /// Applies `events` to their registrations; returns how many events belonged to a live
    /// registration. Wakers go to `woken`, to be woken after the caller's locks.
    pub(crate) fn dispatch(
        &self,
        events: impl Iterator<Item = PollEvent>,
        woken: &mut Vec<Waker>,
    ) -> usize {
        let slab = self.slab.lock();
        let mut applied = 0;
        for event in events {
            let (index, generation) = split_key(event.key);
            let Some(slot) = slab.slots.get(index as usize) else { continue };
            let (true, Some(io)) = (slot.generation == generation, &slot.io) else { continue };
            io.set_readiness(flags_of(event), woken);
            applied += 1;
        }
        applied
    }

    /// The poller itself, for loom models that inject events.
    #[cfg(loom)]
    #[allow(dead_code)]
    pub(crate) fn poller(&self) -> &Poller {
        &self.poller
    }
}

impl Registered {
    /// The poller key of this registration, for loom models that inject its events.
    #[cfg(loom)]
    #[allow(dead_code)]
    pub(crate) fn key(&self) -> usize {
        self.key
    }
}

fn flags_of(event: PollEvent) -> usize {
    let mut flags = 0;
    if event.readable {
        flags |= READABLE;
    }
    if event.writable {
        flags |= WRITABLE;
    }
    if event.closed {
        flags |= READ_CLOSED | WRITE_CLOSED;
    }
    flags
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor").field("registrations", &self.registrations()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    #![allow(clippy::disallowed_types)]

    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc as StdArc;
    use std::task::{Context, Wake};

    use crate::io::scheduled_io::Direction;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: StdArc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// An event still in flight for a removed registration (same slab slot, older generation)
    /// must not touch the registration that reuses the slot.
    #[test]
    fn stale_events_do_not_reach_a_reused_slot() {
        let reactor = Reactor::new().unwrap();
        let (a, _a_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (b, _b_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: both are deregistered below before they are dropped.
        let first = unsafe { reactor.register(a.as_fd()) }.unwrap();
        let stale_key = first.key;
        reactor.deregister(&first, a.as_fd()).unwrap();
        // SAFETY: as above.
        let second = unsafe { reactor.register(b.as_fd()) }.unwrap();
        assert_eq!(split_key(second.key).0, split_key(stale_key).0, "the slot is reused");
        assert_ne!(second.key, stale_key, "with a new generation");

        let counter = StdArc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut slot = None;
        assert!(second.io.poll_readiness(Direction::Read, &mut slot, &mut cx).is_pending());

        let stale = PollEvent { key: stale_key, readable: true, writable: true, closed: false };
        let mut woken = Vec::new();
        assert_eq!(reactor.dispatch([stale].into_iter(), &mut woken), 0);
        assert!(woken.is_empty());
        assert!(second.io.poll_readiness(Direction::Read, &mut slot, &mut cx).is_pending());

        let fresh = PollEvent { key: second.key, readable: true, writable: false, closed: false };
        assert_eq!(reactor.dispatch([fresh].into_iter(), &mut woken), 1);
        woken.drain(..).for_each(Waker::wake);
        assert_eq!(counter.0.load(SeqCst), 1);
        reactor.deregister(&second, b.as_fd()).unwrap();
        assert_eq!(reactor.registrations(), 0);
    }
}

//! The narrow interface the reactor needs from the OS poller: register, deregister, wait with a
//! timeout, and wake a waiting thread.
//!
//! Normal builds use the `polling` crate (epoll on Linux, kqueue on the BSDs and macOS) in
//! edge-triggered mode. `polling` is invisible to loom, so under `--cfg loom` a fake poller
//! with the same interface stands in: its events are injected by the model, and its `wait`
//! blocks on a loom condition variable until an event or a `notify` arrives.

/// One readiness event: which registration, and what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PollEvent {
    pub(crate) key: usize,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer hung up or the socket has an error: both directions should try their syscall.
    pub(crate) closed: bool,
}

#[cfg(not(loom))]
pub(crate) use os::{Events, Poller};

#[cfg(loom)]
pub(crate) use fake::{Events, Poller};

#[cfg(not(loom))]
mod os {
    use std::io;
    use std::os::fd::BorrowedFd;
    use std::time::Duration;

    use super::PollEvent;

    /// The OS poller (`polling::Poller`).
    #[derive(Debug)]
    pub(crate) struct Poller(polling::Poller);

    /// A buffer of events filled by [`Poller::wait`].
    #[derive(Debug)]
    pub(crate) struct Events(polling::Events);

    impl Events {
        pub(crate) fn new() -> Events {
            Events(polling::Events::new())
        }

        pub(crate) fn iter(&self) -> impl Iterator<Item = PollEvent> + '_ {
            self.0.iter().map(|e| PollEvent {
                key: e.key,
                readable: e.readable,
                writable: e.writable,
                closed: e.is_interrupt() || e.is_err() == Some(true),
            })
        }

        pub(crate) fn clear(&mut self) {
            self.0.clear();
        }
    }

    impl Poller {
        pub(crate) fn new() -> io::Result<Poller> {
            let poller = polling::Poller::new()?;
            if !poller.supports_edge() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the OS poller does not support edge-triggered events",
                ));
            }
            Ok(Poller(poller))
        }

        /// Registers `fd` for both directions under `key`, edge-triggered.
        ///
        /// # Safety
        /// `fd` must be deregistered ([`delete`](Self::delete)) before it is closed.
        pub(crate) unsafe fn add(&self, fd: BorrowedFd<'_>, key: usize) -> io::Result<()> {
            let mut interest = polling::Event::all(key);
            interest.set_interrupt(true);
            // SAFETY: forwarded from the caller's contract.
            unsafe { self.0.add_with_mode(&fd, interest, polling::PollMode::Edge) }
        }

        pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
            self.0.delete(fd)
        }

        /// Waits for events (or a `notify`) for at most `timeout` (`None`: no limit).
        pub(crate) fn wait(
            &self,
            events: &mut Events,
            timeout: Option<Duration>,
        ) -> io::Result<()> {
            events.clear();
            self.0.wait(&mut events.0, timeout).map(drop)
        }

        /// Makes the current or next `wait` return at once.
        pub(crate) fn notify(&self) {
            // Only fails if the OS refuses to write to an eventfd/pipe it already has open;
            // then the waiter returns at its timeout anyway.
            let _ = self.0.notify();
        }
    }
}

#[cfg(loom)]
mod fake {
    use std::io;
    use std::os::fd::BorrowedFd;
    use std::time::Duration;

    use super::PollEvent;
    use crate::sync::{Condvar, Mutex};

    /// A loom-visible stand-in for the OS poller: the model injects events.
    #[derive(Debug)]
    pub(crate) struct Poller {
        state: Mutex<FakeState>,
        cv: Condvar,
    }

    #[derive(Debug, Default)]
    struct FakeState {
        pending: Vec<PollEvent>,
        notified: bool,
    }

    #[derive(Debug, Default)]
    pub(crate) struct Events(Vec<PollEvent>);

    impl Events {
        pub(crate) fn new() -> Events {
            Events(Vec::new())
        }

        pub(crate) fn iter(&self) -> impl Iterator<Item = PollEvent> + '_ {
            self.0.iter().copied()
        }

        pub(crate) fn clear(&mut self) {
            self.0.clear();
        }
    }

    impl Poller {
        pub(crate) fn new() -> io::Result<Poller> {
            Ok(Poller { state: Mutex::new(FakeState::default()), cv: Condvar::new() })
        }

        /// # Safety
        /// None needed by the fake; kept for the same signature.
        pub(crate) unsafe fn add(&self, _fd: BorrowedFd<'_>, _key: usize) -> io::Result<()> {
            Ok(())
        }

        pub(crate) fn delete(&self, _fd: BorrowedFd<'_>) -> io::Result<()> {
            Ok(())
        }

        /// Returns at once with a zero timeout; otherwise waits for an event or a notify (loom
        /// has no time, so a non-zero timeout is treated as "until woken").
        pub(crate) fn wait(
            &self,
            events: &mut Events,
            timeout: Option<Duration>,
        ) -> io::Result<()> {
            events.clear();
            let mut state = self.state.lock();
            if timeout != Some(Duration::ZERO) {
                while state.pending.is_empty() && !state.notified {
                    self.cv.wait(&mut state);
                }
            }
            state.notified = false;
            events.0.append(&mut state.pending);
            Ok(())
        }

        pub(crate) fn notify(&self) {
            self.state.lock().notified = true;
            self.cv.notify_all();
        }

        /// Models an OS event for registration `key`.
        #[allow(dead_code)]
        pub(crate) fn inject(&self, event: PollEvent) {
            self.state.lock().pending.push(event);
            self.cv.notify_all();
        }
    }
}

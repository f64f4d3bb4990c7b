//! `Async<T>`: any non-blocking file descriptor, awaitable.

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::reactor::Registered;
use super::scheduled_io::{Direction, ReadyEvent, POLL_SLOT};
use crate::budget;
use crate::cancel::{Cancelled, LeafWaiter};
use crate::context;
use crate::scheduler::Handle;
use crate::sync::atomic::{AtomicBool, Ordering::Relaxed};
use crate::sync::Mutex;
use crate::task;

/// An I/O source registered with the runtime's reactor: wait for it to become readable or
/// writable, or run a non-blocking operation until it stops saying `WouldBlock`.
///
/// `Async::new` puts the file descriptor in non-blocking mode and registers it with the
/// current runtime; dropping the `Async` deregisters it before the source is closed. Every
/// operation is a cancel point: if the calling task is cancelled it fails with an `io::Error`
/// recognised by [`is_cancelled`](crate::is_cancelled), *before* doing anything (no bytes read
/// or written). That holds under a foreign multiplexer too (`FuturesUnordered`, `join_all`
/// polled with a waker of their own): a waiting operation then registers its waker with its
/// cancel scope, so cancelling the scope wakes it and it fails (DESIGN.md 3.5).
///
/// ```no_run
/// use trellis_runtime::io::Async;
///
/// trellis_runtime::run(async {
///     let listener = Async::new(std::net::TcpListener::bind("127.0.0.1:0")?)?;
///     let (stream, _peer) = listener.read_with(|l| l.accept()).await?;
///     std::io::Result::Ok(())
/// });
/// ```
#[derive(Debug)]
pub struct Async<T: AsFd> {
    registration: Registration,
    /// The leaf registrations of the `poll_*` methods (see [`Leaf::Poll`]).
    poll_leaves: PollLeaves,
    /// `None` only inside `into_inner`/`drop`, after deregistration.
    io: Option<T>,
}

/// Where a waiting operation keeps its registration with its status node, for when it waits
/// under a foreign multiplexer (DESIGN.md 3.5, `LeafWaiter`). The waker registered there is
/// released when the operation completes (any `Ready`) or is dropped.
pub(crate) enum Leaf<'a> {
    /// In the operation's own future (`read_with`, `readable`, an `incoming` stream).
    Own(&'a mut LeafWaiter),
    /// In the source, one per direction: the `poll_*` methods (`AsyncRead`/`AsyncWrite`), which
    /// have nowhere else to keep it (as with `POLL_SLOT`, one task at a time per direction). A
    /// `poll_*` call abandoned while pending keeps its registration (as `POLL_SLOT` keeps its
    /// waker) until the next poll in that direction, which refreshes it or moves it to the node
    /// current then, or until the source is dropped.
    Poll,
}

/// The `poll_*` methods' leaf registrations, one per direction ([`Direction::index`]).
#[derive(Debug)]
struct PollLeaves {
    /// Whether `waiters[i]` holds a registration, read without the lock so that a poll that
    /// completes (the common case) or waits under its task's own waker skips the lock. Written
    /// under the lock; relaxed: one task at a time drives a direction, and a task's polls are
    /// ordered by its state word.
    registered: [AtomicBool; 2],
    waiters: [Mutex<LeafWaiter>; 2],
}

impl PollLeaves {
    fn new() -> PollLeaves {
        PollLeaves {
            registered: [AtomicBool::new(false), AtomicBool::new(false)],
            waiters: [Mutex::new(LeafWaiter::default()), Mutex::new(LeafWaiter::default())],
        }
    }
}

#[derive(Debug)]
struct Registration {
    handle: Handle,
    registered: Registered,
}

impl<T: AsFd> Async<T> {
    /// Makes `io` non-blocking and registers it with the current runtime.
    ///
    /// # Errors
    /// If the descriptor cannot be made non-blocking or registered.
    ///
    /// # Panics
    /// Outside a trellis runtime (use it from a task or `block_on`).
    #[track_caller]
    pub fn new(io: T) -> io::Result<Async<T>> {
        rustix::io::ioctl_fionbio(io.as_fd(), true)?;
        Async::new_nonblocking(io)
    }

    /// Registers `io`, which the caller has already made non-blocking.
    ///
    /// # Errors
    /// If the descriptor cannot be registered.
    ///
    /// # Panics
    /// Outside a trellis runtime.
    #[track_caller]
    pub fn new_nonblocking(io: T) -> io::Result<Async<T>> {
        let handle = context::with_handle(|h| h.cloned()).unwrap_or_else(|| {
            panic!("`Async::new` was called outside a trellis runtime: {}", context::NO_RUNTIME)
        });
        // SAFETY: the registration is removed in `Drop`/`into_inner` (`deregister`) before `io`
        // (and so the descriptor) is dropped, and `io` is never replaced (no `get_mut`).
        let registered = unsafe { handle.shared.driver.reactor.register(io.as_fd())? };
        Ok(Async {
            registration: Registration { handle, registered },
            poll_leaves: PollLeaves::new(),
            io: Some(io),
        })
    }

    /// The inner I/O source.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("the I/O source is present until into_inner or drop")
    }

    /// Deregisters the source and returns it (still in non-blocking mode).
    ///
    /// # Errors
    /// If the reactor fails to deregister it (the source is dropped then).
    pub fn into_inner(mut self) -> io::Result<T> {
        let io = self.io.take().expect("present");
        self.deregister(&io)?;
        Ok(io)
    }

    fn deregister(&self, io: &T) -> io::Result<()> {
        let reactor = &self.registration.handle.shared.driver.reactor;
        reactor.deregister(&self.registration.registered, io.as_fd())
    }

    /// Waits until the source is readable (or its read side closed). A cancel point.
    pub async fn readable(&self) -> io::Result<()> {
        Readiness::new(self, Direction::Read).await
    }

    /// Waits until the source is writable (or its write side closed). A cancel point.
    pub async fn writable(&self) -> io::Result<()> {
        Readiness::new(self, Direction::Write).await
    }

    /// Polls for readability (for `poll_*` style code; one task at a time per direction).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.poll_ready(Direction::Read, &mut Some(POLL_SLOT), &mut Leaf::Poll, cx);
        self.finish(Direction::Read, &mut Leaf::Poll, polled.map_ok(drop))
    }

    /// Polls for writability (for `poll_*` style code; one task at a time per direction).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.poll_ready(Direction::Write, &mut Some(POLL_SLOT), &mut Leaf::Poll, cx);
        self.finish(Direction::Write, &mut Leaf::Poll, polled.map_ok(drop))
    }

    /// Runs `op` until it does not fail with `WouldBlock`, waiting for readability between
    /// attempts. A cancel point (checked before each attempt).
    pub async fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        IoOp::new(self, Direction::Read, op).await
    }

    /// As [`read_with`](Self::read_with), waiting for writability.
    pub async fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        IoOp::new(self, Direction::Write, op).await
    }

    /// Cancel check, budget, then readiness. The caller passes every `Ready` it returns
    /// through [`finish`](Self::finish).
    ///
    /// Before returning `Pending` it registers the leaf (when the waker would not be reached
    /// by a cancel otherwise) and re-checks the cancel bit, in that order (the order the loom
    /// model "waiter registration racing cancel" in `cancel/loom_models.rs` checks). Cancelled
    /// then, it forgets the reactor waker it just stored and fails: the only thing this poll
    /// did, so the operation had no effect (no bytes moved, nothing accepted).
    fn poll_ready(
        &self,
        direction: Direction,
        slot: &mut Option<usize>,
        leaf: &mut Leaf<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<ReadyEvent>> {
        if let Some(cancelled) = Cancelled::for_current_task() {
            return Poll::Ready(Err(cancelled.into()));
        }
        let progress = std::task::ready!(budget::poll_proceed(cx));
        match self.registration.registered.io.poll_readiness(direction, slot, cx) {
            Poll::Ready(event) => {
                progress.made_progress();
                Poll::Ready(Ok(event))
            }
            Poll::Pending => match self.leaf_before_pending(direction, leaf, cx) {
                Ok(()) => Poll::Pending,
                Err(cancelled) => {
                    self.forget_waiter(direction, slot.take());
                    Poll::Ready(Err(cancelled.into()))
                }
            },
        }
    }

    /// `LeafWaiter::before_pending` for `leaf`. For [`Leaf::Poll`] the lock is taken only if a
    /// registration exists or is needed (the waker is not the frame's).
    fn leaf_before_pending(
        &self,
        direction: Direction,
        leaf: &mut Leaf<'_>,
        cx: &Context<'_>,
    ) -> Result<(), Cancelled> {
        match leaf {
            Leaf::Own(waiter) => waiter.before_pending(cx.waker()),
            Leaf::Poll => {
                let i = direction.index();
                let registered = &self.poll_leaves.registered[i];
                if !registered.load(Relaxed) && task::frame_waker_is(cx.waker()) {
                    return Ok(());
                }
                let mut waiter = self.poll_leaves.waiters[i].lock();
                let result = waiter.before_pending(cx.waker());
                registered.store(waiter.is_registered(), Relaxed);
                result
            }
        }
    }

    /// Every operation's exit: a `Ready` completes the operation, which releases its leaf
    /// registration (no waker stays registered with a node once the operation is over).
    #[inline]
    fn finish<R>(&self, direction: Direction, leaf: &mut Leaf<'_>, polled: Poll<R>) -> Poll<R> {
        if polled.is_ready() {
            match leaf {
                Leaf::Own(waiter) => waiter.clear(),
                Leaf::Poll => {
                    let i = direction.index();
                    if self.poll_leaves.registered[i].load(Relaxed) {
                        let mut waiter = self.poll_leaves.waiters[i].lock();
                        waiter.clear();
                        self.poll_leaves.registered[i].store(false, Relaxed);
                    }
                }
            }
        }
        polled
    }

    /// The core of every operation: wait for readiness, try `op`, clear the readiness it
    /// disproved (`WouldBlock`), repeat. `op` runs only after the cancel check of the same
    /// poll, and a cancellation found later (registering the leaf) comes only after `op` said
    /// `WouldBlock`: a cancelled operation did nothing.
    pub(crate) fn poll_io<R>(
        &self,
        direction: Direction,
        slot: &mut Option<usize>,
        leaf: &mut Leaf<'_>,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let polled = loop {
            let event = match std::task::ready!(self.poll_ready(direction, slot, leaf, cx)) {
                Ok(event) => event,
                Err(e) => break Err(e),
            };
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.registration.registered.io.clear_readiness(event);
                }
                result => break result,
            }
        };
        self.finish(direction, leaf, Poll::Ready(polled))
    }

    /// `poll_io` for a stream read or write of `len` bytes through the `poll_*` methods. A
    /// *write* shorter than asked means the socket's send buffer is full, so the write
    /// readiness is cleared right away: the next write waits for the next edge instead of
    /// spending a system call to learn `WouldBlock`. (An edge that came meanwhile bumped the
    /// event tick, and then the clear does nothing: rule 2 of `scheduled_io.rs`.) Reads get no
    /// such shortcut: a short read may have drained the data but not a pending end of stream,
    /// whose edge already came (the poller does not report a peer's half-close separately),
    /// and clearing would wait for it forever.
    pub(crate) fn poll_transfer(
        &self,
        direction: Direction,
        cx: &mut Context<'_>,
        len: usize,
        mut op: impl FnMut(&T) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let mut slot = Some(POLL_SLOT);
        let leaf = &mut Leaf::Poll;
        let polled = loop {
            let event = match std::task::ready!(self.poll_ready(direction, &mut slot, leaf, cx)) {
                Ok(event) => event,
                Err(e) => break Err(e),
            };
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.registration.registered.io.clear_readiness(event);
                }
                Ok(n) if direction == Direction::Write && n > 0 && n < len => {
                    self.registration.registered.io.clear_readiness(event);
                    break Ok(n);
                }
                result => break result,
            }
        };
        self.finish(direction, leaf, Poll::Ready(polled))
    }

    pub(crate) fn forget_waiter(&self, direction: Direction, slot: Option<usize>) {
        if let Some(slot) = slot {
            drop(self.registration.registered.io.forget_waiter(direction, slot));
        }
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            // Deregister before `io` closes the descriptor (the `new` contract). An error here
            // means the poller already forgot it; nothing more to do.
            let _ = self.deregister(&io);
        }
    }
}

impl<T: AsFd> AsFd for Async<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsFd> AsRawFd for Async<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// The future of `readable`/`writable`: owns a waiter slot and a leaf registration until done
/// or dropped.
struct Readiness<'a, T: AsFd> {
    source: &'a Async<T>,
    direction: Direction,
    slot: Option<usize>,
    leaf: LeafWaiter,
}

impl<'a, T: AsFd> Readiness<'a, T> {
    fn new(source: &'a Async<T>, direction: Direction) -> Readiness<'a, T> {
        Readiness { source, direction, slot: None, leaf: LeafWaiter::default() }
    }
}

impl<T: AsFd> Future for Readiness<'_, T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let leaf = &mut Leaf::Own(&mut this.leaf);
        let polled = this.source.poll_ready(this.direction, &mut this.slot, leaf, cx);
        this.source.finish(this.direction, leaf, polled.map_ok(drop))
    }
}

impl<T: AsFd> Drop for Readiness<'_, T> {
    fn drop(&mut self) {
        self.source.forget_waiter(self.direction, self.slot.take());
        // `leaf` deregisters itself when dropped.
    }
}

/// The future of `read_with`/`write_with`.
struct IoOp<'a, T: AsFd, F> {
    source: &'a Async<T>,
    direction: Direction,
    slot: Option<usize>,
    leaf: LeafWaiter,
    op: F,
}

impl<'a, T: AsFd, F> IoOp<'a, T, F> {
    fn new(source: &'a Async<T>, direction: Direction, op: F) -> IoOp<'a, T, F> {
        IoOp { source, direction, slot: None, leaf: LeafWaiter::default(), op }
    }
}

impl<T: AsFd, F> Unpin for IoOp<'_, T, F> {}

impl<T: AsFd, R, F: FnMut(&T) -> io::Result<R>> Future for IoOp<'_, T, F> {
    type Output = io::Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let this = &mut *self;
        let leaf = &mut Leaf::Own(&mut this.leaf);
        this.source.poll_io(this.direction, &mut this.slot, leaf, cx, &mut this.op)
    }
}

impl<T: AsFd, F> Drop for IoOp<'_, T, F> {
    fn drop(&mut self) {
        self.source.forget_waiter(self.direction, self.slot.take());
        // `leaf` deregisters itself when dropped.
    }
}

impl<T: AsFd> futures_io::AsyncRead for Async<T>
where
    for<'a> &'a T: Read,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len();
        self.poll_transfer(Direction::Read, cx, len, |mut io| io.read(buf))
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.poll_transfer(Direction::Read, cx, len, |mut io| io.read_vectored(bufs))
    }
}

impl<T: AsFd> futures_io::AsyncWrite for Async<T>
where
    for<'a> &'a T: Write,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_transfer(Direction::Write, cx, buf.len(), |mut io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.poll_transfer(Direction::Write, cx, len, |mut io| io.write_vectored(bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sockets and pipes have nothing buffered: flush first, wait only if it must.
        match (&mut self.get_ref()).flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let slot = &mut Some(POLL_SLOT);
                self.poll_io(Direction::Write, slot, &mut Leaf::Poll, cx, |mut io| io.flush())
            }
            result => Poll::Ready(result),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

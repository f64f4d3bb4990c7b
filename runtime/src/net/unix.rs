//! Unix domain sockets: `UnixListener`, `UnixStream`.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::cancel::LeafWaiter;
use crate::io::{Async, Direction, Leaf};

/// A Unix socket listening for connections.
#[derive(Debug)]
pub struct UnixListener {
    inner: Async<std::os::unix::net::UnixListener>,
}

impl UnixListener {
    /// Binds to `path` (which must not exist) and listens.
    pub async fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        UnixListener::from_std(std::os::unix::net::UnixListener::bind(path)?)
    }

    /// Accepts a connection. A cancel point.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, peer) = self.inner.read_with(|l| l.accept()).await?;
        Ok((UnixStream::from_std(stream)?, peer))
    }

    /// The incoming connections, as a `Stream` (it never ends; an accept error is an item).
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self, slot: None, leaf: LeafWaiter::default() }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Wraps a std listener (made non-blocking) in the current runtime's reactor.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        Ok(UnixListener { inner: Async::new(listener)? })
    }
}

/// The stream of [`UnixListener::incoming`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
    slot: Option<usize>,
    /// Reaches a pending `next()` under a foreign multiplexer (DESIGN.md 3.5).
    leaf: LeafWaiter,
}

impl Stream for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let accepted = std::task::ready!(this.listener.inner.poll_io(
            Direction::Read,
            &mut this.slot,
            &mut Leaf::Own(&mut this.leaf),
            cx,
            |l| l.accept()
        ));
        Poll::Ready(Some(accepted.and_then(|(stream, _)| UnixStream::from_std(stream))))
    }
}

impl Drop for UnixIncoming<'_> {
    fn drop(&mut self) {
        self.listener.inner.forget_waiter(Direction::Read, self.slot.take());
        // `leaf` deregisters itself when dropped.
    }
}

/// A Unix stream connection; `futures_io::{AsyncRead, AsyncWrite}` as for `TcpStream`.
#[derive(Debug)]
pub struct UnixStream {
    inner: Async<std::os::unix::net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket at `path`. A cancel point.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
        match socket.connect(&SockAddr::unix(path)?) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
        let stream = UnixStream {
            inner: Async::new_nonblocking(std::os::unix::net::UnixStream::from(socket))?,
        };
        stream.inner.writable().await?;
        if let Some(e) = stream.inner.get_ref().take_error()? {
            return Err(e);
        }
        Ok(stream)
    }

    /// A connected pair of streams.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    }

    /// Wraps a connected std stream (made non-blocking) in the current runtime's reactor.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        Ok(UnixStream { inner: Async::new(stream)? })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Shuts down the read side, the write side, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

super::stream_io!(UnixStream);

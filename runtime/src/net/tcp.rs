//! TCP: `TcpListener`, `TcpStream`, and the `TcpSocket` builder for socket options.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::addr::{each_addr, ToSocketAddrs};
use crate::cancel::LeafWaiter;
use crate::io::{Async, Leaf};

/// A TCP socket listening for connections.
///
/// ```no_run
/// use futures::{AsyncReadExt, AsyncWriteExt};
/// use trellis_runtime::net::TcpListener;
///
/// trellis_runtime::run(async {
///     let listener = TcpListener::bind("127.0.0.1:8080").await?;
///     loop {
///         let (mut stream, _peer) = listener.accept().await?;
///         trellis_runtime::spawn(async move {
///             let mut buf = [0; 1024];
///             while let Ok(n @ 1..) = stream.read(&mut buf).await {
///                 if stream.write_all(&buf[..n]).await.is_err() {
///                     break;
///                 }
///             }
///         });
///     }
///     #[allow(unreachable_code)]
///     std::io::Result::Ok(())
/// });
/// ```
#[derive(Debug)]
pub struct TcpListener {
    inner: Async<std::net::TcpListener>,
}

impl TcpListener {
    /// Binds to `addr` (the first of its addresses that works) and listens.
    ///
    /// # Errors
    /// If no address can be bound (in use, not permitted, ...).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        each_addr(addr, |addr| async move {
            let socket = TcpSocket::for_addr(addr)?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        })
        .await
    }

    /// Accepts a connection. A cancel point.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.inner.read_with(|l| l.accept()).await?;
        Ok((TcpStream::from_std(stream)?, peer))
    }

    /// The incoming connections, as a `Stream` (it never ends; an accept error is an item).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self, slot: None, leaf: LeafWaiter::default() }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Sets the IP time-to-live of accepted sockets' packets.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get_ref().set_ttl(ttl)
    }

    /// The IP time-to-live.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get_ref().ttl()
    }

    /// Wraps a std listener (made non-blocking) in the current runtime's reactor.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener { inner: Async::new(listener)? })
    }

    /// The std listener (left in non-blocking mode).
    pub fn into_std(self) -> io::Result<std::net::TcpListener> {
        self.inner.into_inner()
    }
}

/// The stream of [`TcpListener::incoming`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    slot: Option<usize>,
    /// Reaches a pending `next()` under a foreign multiplexer (DESIGN.md 3.5).
    leaf: LeafWaiter,
}

impl Stream for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let accepted = std::task::ready!(this.listener.inner.poll_io(
            crate::io::Direction::Read,
            &mut this.slot,
            &mut Leaf::Own(&mut this.leaf),
            cx,
            |l| l.accept()
        ));
        Poll::Ready(Some(accepted.and_then(|(stream, _)| TcpStream::from_std(stream))))
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        self.listener.inner.forget_waiter(crate::io::Direction::Read, self.slot.take());
        // `leaf` deregisters itself when dropped.
    }
}

/// A TCP connection. Implements `futures_io::{AsyncRead, AsyncWrite}` (also through `&TcpStream`,
/// so one task can read while another writes); `poll_close` shuts the write side down.
#[derive(Debug)]
pub struct TcpStream {
    inner: Async<std::net::TcpStream>,
}

impl TcpStream {
    /// Connects to `addr` (each of its addresses in turn until one accepts). A cancel point:
    /// a cancelled connect abandons the attempt.
    ///
    /// # Errors
    /// The error of the last address tried (refused, unreachable, ...).
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |addr| async move { TcpSocket::for_addr(addr)?.connect(addr).await }).await
    }

    /// Wraps a connected std stream (made non-blocking) in the current runtime's reactor.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream { inner: Async::new(stream)? })
    }

    /// The std stream (left in non-blocking mode).
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        self.inner.into_inner()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm: small writes go out at once).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.get_ref().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.get_ref().nodelay()
    }

    /// Sets the IP time-to-live.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get_ref().set_ttl(ttl)
    }

    /// The IP time-to-live.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get_ref().ttl()
    }

    /// Shuts down the read side, the write side, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }

    /// Reads without consuming (the next read returns the same bytes). A cancel point.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_with(|s| s.peek(buf)).await
    }

    /// Waits until the stream is readable. A cancel point.
    pub async fn readable(&self) -> io::Result<()> {
        self.inner.readable().await
    }

    /// Waits until the stream is writable. A cancel point.
    pub async fn writable(&self) -> io::Result<()> {
        self.inner.writable().await
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

super::stream_io!(TcpStream);

/// A TCP socket not yet bound or connected: set options (`SO_REUSEADDR`, `SO_REUSEPORT`,
/// buffer sizes, `TCP_NODELAY`), then `bind` + `listen` or `connect`.
///
/// ```no_run
/// use trellis_runtime::net::TcpSocket;
///
/// trellis_runtime::run(async {
///     let addr = "127.0.0.1:9000".parse().unwrap();
///     let socket = TcpSocket::new_v4()?;
///     socket.set_reuseaddr(true)?;
///     socket.bind(addr)?;
///     let listener = socket.listen(128)?;
///     std::io::Result::Ok(())
/// });
/// ```
#[derive(Debug)]
pub struct TcpSocket {
    socket: Socket,
}

impl TcpSocket {
    /// A new IPv4 TCP socket.
    pub fn new_v4() -> io::Result<TcpSocket> {
        TcpSocket::new(Domain::IPV4)
    }

    /// A new IPv6 TCP socket.
    pub fn new_v6() -> io::Result<TcpSocket> {
        TcpSocket::new(Domain::IPV6)
    }

    fn for_addr(addr: SocketAddr) -> io::Result<TcpSocket> {
        TcpSocket::new(Domain::for_address(addr))
    }

    fn new(domain: Domain) -> io::Result<TcpSocket> {
        let socket =
            Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
        Ok(TcpSocket { socket })
    }

    /// `SO_REUSEADDR`.
    pub fn set_reuseaddr(&self, reuse: bool) -> io::Result<()> {
        self.socket.set_reuse_address(reuse)
    }

    /// `SO_REUSEPORT`.
    pub fn set_reuseport(&self, reuse: bool) -> io::Result<()> {
        self.socket.set_reuse_port(reuse)
    }

    /// `TCP_NODELAY` for the connection this socket makes.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.set_nodelay(nodelay)
    }

    /// `SO_SNDBUF`.
    pub fn set_send_buffer_size(&self, size: usize) -> io::Result<()> {
        self.socket.set_send_buffer_size(size)
    }

    /// `SO_RCVBUF`.
    pub fn set_recv_buffer_size(&self, size: usize) -> io::Result<()> {
        self.socket.set_recv_buffer_size(size)
    }

    /// Binds to a local address.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<()> {
        self.socket.bind(&SockAddr::from(addr))
    }

    /// Starts listening, with room for `backlog` pending connections.
    pub fn listen(self, backlog: u32) -> io::Result<TcpListener> {
        self.socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        TcpListener::from_std(self.socket.into())
    }

    /// Connects (a cancel point). The socket is non-blocking: the connection is established
    /// in the background and the reactor reports when it is done.
    pub async fn connect(self, addr: SocketAddr) -> io::Result<TcpStream> {
        match self.socket.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let stream =
            TcpStream { inner: Async::new_nonblocking(std::net::TcpStream::from(self.socket))? };
        // Writable means the handshake finished, one way or the other.
        stream.inner.writable().await?;
        if let Some(e) = stream.inner.get_ref().take_error()? {
            return Err(e);
        }
        // A refused connection can also show as "not connected" with no pending error.
        stream.peer_addr()?;
        Ok(stream)
    }
}

impl From<std::net::TcpStream> for TcpSocket {
    fn from(s: std::net::TcpStream) -> TcpSocket {
        TcpSocket { socket: s.into() }
    }
}

/// `connect` used inside `each_addr` needs a `Send` future: checked here.
#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>(_: T) {}
    send(TcpStream::connect("127.0.0.1:1"));
    send(TcpListener::bind("127.0.0.1:0"));
    let _: Option<Pin<Box<dyn Future<Output = ()>>>> = None;
}

//! UDP: `UdpSocket`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use super::addr::{each_addr, sealed::Sealed, ToSocketAddrs};
use crate::io::Async;

/// A UDP socket. Every send and receive is a cancel point (a cancelled send sent nothing, a
/// cancelled receive consumed nothing). `&self` methods: share it between tasks with an `Arc`.
///
/// ```no_run
/// use trellis_runtime::net::UdpSocket;
///
/// trellis_runtime::run(async {
///     let socket = UdpSocket::bind("127.0.0.1:0").await?;
///     socket.send_to(b"ping", socket.local_addr()?).await?;
///     let mut buf = [0; 16];
///     let (n, from) = socket.recv_from(&mut buf).await?;
///     std::io::Result::Ok(())
/// });
/// ```
#[derive(Debug)]
pub struct UdpSocket {
    inner: Async<std::net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to `addr` (the first of its addresses that works).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        each_addr(addr, |addr| async move { UdpSocket::from_std(std::net::UdpSocket::bind(addr)?) })
            .await
    }

    /// Wraps a std socket (made non-blocking) in the current runtime's reactor.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        Ok(UdpSocket { inner: Async::new(socket)? })
    }

    /// The std socket (left in non-blocking mode).
    pub fn into_std(self) -> io::Result<std::net::UdpSocket> {
        self.inner.into_inner()
    }

    /// Sets the default peer: `send` goes there and `recv` only accepts datagrams from it.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        each_addr(addr, |addr| async move { self.inner.get_ref().connect(addr) }).await
    }

    /// Sends a datagram to `target`; returns the bytes sent.
    pub async fn send_to(&self, buf: &[u8], target: impl ToSocketAddrs) -> io::Result<usize> {
        let addrs = Sealed::resolve(&target).await?;
        let addr = *addrs
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to send to"))?;
        self.inner.write_with(|s| s.send_to(buf, addr)).await
    }

    /// Receives a datagram; returns its length and sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.read_with(|s| s.recv_from(buf)).await
    }

    /// Like `recv_from`, without consuming the datagram.
    pub async fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.read_with(|s| s.peek_from(buf)).await
    }

    /// Sends a datagram to the connected peer.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_with(|s| s.send(buf)).await
    }

    /// Receives a datagram from the connected peer.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_with(|s| s.recv(buf)).await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.inner.get_ref().set_broadcast(on)
    }

    /// Sets the IP time-to-live.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.get_ref().set_ttl(ttl)
    }

    /// The IP time-to-live.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.get_ref().ttl()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

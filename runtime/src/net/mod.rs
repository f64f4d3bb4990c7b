//! Networking: TCP, UDP and Unix sockets on the runtime's reactor.
//!
//! Every async operation is a cancel point: if the calling task is cancelled it fails with an
//! `io::Error` recognised by [`is_cancelled`](crate::is_cancelled) before having any effect.
//! OS errors come back as `io::Error`, never a panic. All types are `Send + Sync + Unpin`.

mod addr;
mod tcp;
mod udp;
mod unix;

pub use addr::ToSocketAddrs;
pub use tcp::{Incoming, TcpListener, TcpSocket, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixIncoming, UnixListener, UnixStream};

/// `AsyncRead`/`AsyncWrite` for a stream type (and a shared reference to it) through its
/// `inner: Async<_>`; closing shuts the write side down.
macro_rules! stream_io {
    ($ty:ty) => {
        impl futures_io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                futures_io::AsyncRead::poll_read(std::pin::Pin::new(&mut &*self), cx, buf)
            }

            fn poll_read_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                futures_io::AsyncRead::poll_read_vectored(std::pin::Pin::new(&mut &*self), cx, bufs)
            }
        }

        impl futures_io::AsyncRead for &$ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                use std::io::Read as _;
                let len = buf.len();
                self.inner.poll_transfer(crate::io::Direction::Read, cx, len, |mut io| io.read(buf))
            }

            fn poll_read_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                use std::io::Read as _;
                let len = bufs.iter().map(|b| b.len()).sum();
                self.inner.poll_transfer(crate::io::Direction::Read, cx, len, |mut io| {
                    io.read_vectored(bufs)
                })
            }
        }

        impl futures_io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                futures_io::AsyncWrite::poll_write(std::pin::Pin::new(&mut &*self), cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                futures_io::AsyncWrite::poll_write_vectored(
                    std::pin::Pin::new(&mut &*self),
                    cx,
                    bufs,
                )
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                futures_io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut &*self), cx)
            }

            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                futures_io::AsyncWrite::poll_close(std::pin::Pin::new(&mut &*self), cx)
            }
        }

        impl futures_io::AsyncWrite for &$ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                use std::io::Write as _;
                self.inner.poll_transfer(crate::io::Direction::Write, cx, buf.len(), |mut io| {
                    io.write(buf)
                })
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                use std::io::Write as _;
                let len = bufs.iter().map(|b| b.len()).sum();
                self.inner.poll_transfer(crate::io::Direction::Write, cx, len, |mut io| {
                    io.write_vectored(bufs)
                })
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                // Sockets buffer nothing in user space.
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                // A connection the peer already tore down is as closed as it gets.
                std::task::Poll::Ready(match self.shutdown(std::net::Shutdown::Write) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
                    result => result,
                })
            }
        }
    };
}
use stream_io;

/// Compile-time checks of the auto traits the contract promises.
#[allow(dead_code)]
fn assert_auto_traits() {
    fn check<T: Send + Sync + Unpin>() {}
    check::<TcpListener>();
    check::<TcpStream>();
    check::<UdpSocket>();
    check::<UnixListener>();
    check::<UnixStream>();
}

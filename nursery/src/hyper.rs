//! Adapters that let [hyper](https://docs.rs/hyper) 1.x run on trellis (feature `hyper`).
//!
//! - [`HyperIo`]: wraps a trellis stream (anything `futures_io::AsyncRead + AsyncWrite`, such
//!   as `trellis::net::TcpStream`) as `hyper::rt::{Read, Write}`.
//! - [`HyperExecutor`]: spawns hyper's background tasks (HTTP/2 connection drivers) with
//!   `trellis::spawn`.
//! - [`HyperTimer`]: hyper's timeouts (header read timeout, keep-alive) on the runtime's
//!   timers. It measures real time: use it on a runtime without `virtual_time`, where the
//!   runtime's clock is the system clock.
//!
//! ```no_run
//! use http_body_util::Full;
//! use hyper::body::Bytes;
//! use hyper::service::service_fn;
//! use trellis::hyper::{HyperIo, HyperTimer};
//!
//! trellis::run(async {
//!     let listener = trellis::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     loop {
//!         let (stream, _) = listener.accept().await?;
//!         trellis::spawn(async move {
//!             let service = service_fn(|_req| async {
//!                 Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("hi"))))
//!             });
//!             let _ = hyper::server::conn::http1::Builder::new()
//!                 .timer(HyperTimer)
//!                 .serve_connection(HyperIo::new(stream), service)
//!                 .await;
//!         });
//!     }
//!     #[allow(unreachable_code)]
//!     std::io::Result::Ok(())
//! });
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use futures_io::{AsyncRead, AsyncWrite};

/// A trellis stream as `hyper::rt::Read + hyper::rt::Write`.
#[derive(Debug)]
pub struct HyperIo<T> {
    inner: T,
    /// Staging buffer for reads (see `poll_read`), allocated on first use.
    buf: Vec<u8>,
}

/// Size of the read staging buffer: what hyper asks for at most in one read.
const READ_CHUNK: usize = 16 * 1024;

impl<T> HyperIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> HyperIo<T> {
        HyperIo { inner, buf: Vec::new() }
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // hyper's cursor exposes uninitialised memory only through `unsafe`, which this crate
        // forbids: read into an initialised staging buffer (zeroed once per connection) and
        // copy what was read.
        let this = &mut *self;
        if this.buf.is_empty() {
            this.buf = vec![0; READ_CHUNK];
        }
        let want = buf.remaining().min(READ_CHUNK);
        match Pin::new(&mut this.inner).poll_read(cx, &mut this.buf[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&this.buf[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Spawns hyper's background futures with [`trellis::spawn`](crate::spawn) (detached).
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperExecutor;

impl<F> hyper::rt::Executor<F> for HyperExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        drop(crate::spawn(future));
    }
}

/// hyper's timers on the runtime's timer wheel (real time; see the module doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(crate::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: StdInstant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(crate::time::sleep_until(deadline.into())))
    }

    fn now(&self) -> StdInstant {
        StdInstant::now()
    }
}

/// A trellis `Sleep` as `hyper::rt::Sleep` (its `Cancelled` result is dropped: hyper only
/// wants to know that the time is up, and a cancelled connection task is being dropped).
struct HyperSleep(crate::time::Sleep);

impl hyper::rt::Sleep for HyperSleep {}

impl Future for HyperSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

//! The three runtimes under comparison: their in-task [`Spawner`]s (with their [`Timers`] and
//! [`Net`] operations) and the [`Runtimes`] set the driver thread injects root tasks into.
//!
//! Timers and TCP are each runtime's own: `trellis::time` / `trellis::net`; `tokio::time` /
//! `tokio::net`; for async-executor, which has neither, the smol ecosystem's `async-io`
//! (`Timer`, `Async<std::net::TcpStream>`). Its reactor is process-wide and driven by its own
//! `async-io` thread, and also by any thread idle in `async_io::block_on`. For the workloads
//! that use it ([`Workload::io`](crate::workloads::Workload::io)) the async-executor runners
//! block in `async_io::block_on`, as smol's own executor threads (`smol::spawn`) do, so that an
//! idle runner drives the reactor like an idle trellis or tokio worker drives theirs; for the
//! others they block in `futures_lite::future::block_on`, as before (the choice is made per
//! workload, when the runtimes are built).
//!
//! All three get the same worker count and are built outside the timed region. When no task is
//! running, every worker parks (trellis and tokio by design; async-executor's runners park in
//! `futures_lite::future::block_on`, or in `async_io::block_on`, whose idle threads wait in the
//! reactor or on a parker), so the runtimes not being measured do not steal the cores.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use async_executor::Executor;
use futures::channel::oneshot;

use crate::job::{Deadline, Net, Root, Spawner, Timers};

/// How long ago [`Timers::passed_deadline`] is.
const PASSED: Duration = Duration::from_secs(1);

/// trellis: `trellis::spawn` (detached) and `trellis::yield_now`.
#[derive(Clone, Copy, Debug)]
pub struct Trellis;

impl Spawner for Trellis {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(trellis::spawn(future));
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        trellis::yield_now()
    }
}

/// `trellis::time`: `Sleep` is `Unpin`; its output is `Result<(), Cancelled>`.
impl Timers for Trellis {
    type Deadline = trellis::time::Instant;

    fn passed_deadline() -> Deadline<Self> {
        // Saturates at the clock's origin, which has passed too.
        trellis::time::Instant::now() - PASSED
    }

    fn sleep(duration: Duration) -> impl Future + Send {
        trellis::time::sleep(duration)
    }

    async fn sleep_until(deadline: Deadline<Self>) {
        trellis::time::sleep_until(deadline).await.expect("timers: trellis sleep cancelled")
    }

    /// `trellis::move_on_after`: a cancel scope with a relative deadline around `future`.
    fn timeout<F>(duration: Duration, future: F) -> impl Future<Output = Option<F::Output>> + Send
    where
        F: Future + Send,
        F::Output: Send,
    {
        trellis::move_on_after(duration, future)
    }
}

/// `trellis::net`, read and written through `futures::{AsyncReadExt, AsyncWriteExt}`.
impl Net for Trellis {
    type Listener = trellis::net::TcpListener;
    type Stream = trellis::net::TcpStream;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        trellis::net::TcpListener::bind(addr)
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        trellis::net::TcpStream::connect(addr)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<Self::Stream> {
        Ok(listener.accept().await?.0)
    }

    fn set_nodelay(stream: &Self::Stream) -> io::Result<()> {
        stream.set_nodelay(true)
    }

    fn read<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        futures::AsyncReadExt::read(stream, buf)
    }

    fn read_exact<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        futures::AsyncReadExt::read_exact(stream, buf)
    }

    fn write_all<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        futures::AsyncWriteExt::write_all(stream, buf)
    }
}

/// tokio (multi-thread scheduler): `tokio::spawn` (detached) and `tokio::task::yield_now`.
#[derive(Clone, Copy, Debug)]
pub struct Tokio;

impl Spawner for Tokio {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(tokio::spawn(future));
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        tokio::task::yield_now()
    }
}

/// `tokio::time`: `Sleep` is `!Unpin` (the workload pins it on the stack).
impl Timers for Tokio {
    type Deadline = tokio::time::Instant;

    fn passed_deadline() -> Deadline<Self> {
        let now = tokio::time::Instant::now();
        now.checked_sub(PASSED).unwrap_or(now)
    }

    fn sleep(duration: Duration) -> impl Future + Send {
        tokio::time::sleep(duration)
    }

    async fn sleep_until(deadline: Deadline<Self>) {
        tokio::time::sleep_until(deadline).await
    }

    /// `tokio::time::timeout`; its `Err(Elapsed)` becomes `None`.
    async fn timeout<F>(duration: Duration, future: F) -> Option<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        tokio::time::timeout(duration, future).await.ok()
    }
}

/// `tokio::net`, read and written through `tokio::io::{AsyncReadExt, AsyncWriteExt}`.
impl Net for Tokio {
    type Listener = tokio::net::TcpListener;
    type Stream = tokio::net::TcpStream;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        tokio::net::TcpListener::bind(addr)
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        tokio::net::TcpStream::connect(addr)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<Self::Stream> {
        Ok(listener.accept().await?.0)
    }

    fn set_nodelay(stream: &Self::Stream) -> io::Result<()> {
        stream.set_nodelay(true)
    }

    fn read<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        tokio::io::AsyncReadExt::read(stream, buf)
    }

    async fn read_exact(stream: &mut Self::Stream, buf: &mut [u8]) -> io::Result<()> {
        tokio::io::AsyncReadExt::read_exact(stream, buf).await.map(drop)
    }

    fn write_all<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        tokio::io::AsyncWriteExt::write_all(stream, buf)
    }
}

/// async-executor (smol's executor): `Executor::spawn(..).detach()` on the shared executor and
/// `futures_lite::future::yield_now`.
///
/// It holds a `&'static` executor (smol's idiomatic `static EX: Executor`), not an `Arc`: tokio
/// and trellis find their scheduler in a thread-local, so an `Arc` clone per task that needs to
/// spawn (ping_pong's rounds) would be refcount traffic only async-executor pays.
#[derive(Clone, Copy)]
pub struct Smol(pub &'static Executor<'static>);

impl fmt::Debug for Smol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smol").finish_non_exhaustive()
    }
}

impl Spawner for Smol {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(future).detach();
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        futures_lite::future::yield_now()
    }
}

/// `async_io::Timer` (the smol ecosystem's timer, kept by the process-wide async-io reactor).
impl Timers for Smol {
    type Deadline = std::time::Instant;

    fn passed_deadline() -> Deadline<Self> {
        let now = std::time::Instant::now();
        now.checked_sub(PASSED).unwrap_or(now)
    }

    fn sleep(duration: Duration) -> impl Future + Send {
        async_io::Timer::after(duration)
    }

    async fn sleep_until(deadline: Deadline<Self>) {
        async_io::Timer::at(deadline).await;
    }

    /// The smol idiom: the operation raced against an `async_io::Timer` with
    /// `futures_lite::future::or` (which polls the operation first).
    fn timeout<F>(duration: Duration, future: F) -> impl Future<Output = Option<F::Output>> + Send
    where
        F: Future + Send,
        F::Output: Send,
    {
        futures_lite::future::or(async { Some(future.await) }, async move {
            async_io::Timer::after(duration).await;
            None
        })
    }
}

/// `async_io::Async<std::net::TcpStream>` (what `async-net` and smol wrap), read and written
/// through `futures_lite::io::{AsyncReadExt, AsyncWriteExt}`.
impl Net for Smol {
    type Listener = async_io::Async<std::net::TcpListener>;
    type Stream = async_io::Async<std::net::TcpStream>;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        std::future::ready(async_io::Async::<std::net::TcpListener>::bind(addr))
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.get_ref().local_addr()
    }

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        async_io::Async::<std::net::TcpStream>::connect(addr)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<Self::Stream> {
        Ok(listener.accept().await?.0)
    }

    fn set_nodelay(stream: &Self::Stream) -> io::Result<()> {
        stream.get_ref().set_nodelay(true)
    }

    fn read<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        futures_lite::io::AsyncReadExt::read(stream, buf)
    }

    fn read_exact<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        futures_lite::io::AsyncReadExt::read_exact(stream, buf)
    }

    fn write_all<'a>(
        stream: &'a mut Self::Stream,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        futures_lite::io::AsyncWriteExt::write_all(stream, buf)
    }
}

/// An `async_executor::Executor` run by `n` std threads, each in
/// `futures_lite::future::block_on(ex.run(<until shutdown>))`, or in `async_io::block_on` (the
/// same, but an idle runner waits in the async-io reactor: see the module docs). Dropping it
/// stops and joins them.
///
/// The executor is an `Arc` shared by the runner threads; one clone of it is leaked to give the
/// in-task [`Smol`] spawner a `&'static` (so one executor, with nothing in it, is leaked per
/// pool).
pub struct SmolPool {
    executor: Arc<Executor<'static>>,
    spawner: Smol,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl SmolPool {
    /// Starts `workers` runner threads named `smol-worker-N`; they block in
    /// `async_io::block_on` if `drive_reactor`, else in `futures_lite::future::block_on`.
    pub fn new(workers: usize, drive_reactor: bool) -> io::Result<SmolPool> {
        let executor = Arc::new(Executor::new());
        let leaked: &'static Arc<Executor<'static>> = Box::leak(Box::new(executor.clone()));
        let spawner = Smol(leaked);
        let mut pool = SmolPool { executor, spawner, stops: Vec::new(), threads: Vec::new() };
        for index in 0..workers {
            let (stop, stopped) = oneshot::channel::<()>();
            let executor = pool.executor.clone();
            let runner =
                thread::Builder::new().name(format!("smol-worker-{index}")).spawn(move || {
                    let run = executor.run(async {
                        // Resolves (with `Canceled`) when the pool drops the sender.
                        let _ = stopped.await;
                    });
                    if drive_reactor {
                        async_io::block_on(run);
                    } else {
                        futures_lite::future::block_on(run);
                    }
                })?;
            pool.stops.push(stop);
            pool.threads.push(runner);
        }
        Ok(pool)
    }

    /// The in-task spawner.
    pub fn spawner(&self) -> Smol {
        self.spawner
    }

    /// Injects a root task from outside the pool.
    pub fn inject(&self, root: Root) {
        self.executor.spawn(root).detach();
    }
}

impl Drop for SmolPool {
    fn drop(&mut self) {
        self.stops.clear();
        for runner in self.threads.drain(..) {
            let _ = runner.join();
        }
    }
}

impl fmt::Debug for SmolPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolPool").field("workers", &self.threads.len()).finish_non_exhaustive()
    }
}

/// The three runtimes, each with the same number of worker threads.
#[derive(Debug)]
pub struct Runtimes {
    /// trellis, worker threads named `trellis-worker-N`.
    pub trellis: trellis::Runtime,
    /// tokio multi-thread with all drivers enabled, worker threads named `tokio-worker`.
    pub tokio: tokio::runtime::Runtime,
    /// async-executor, runner threads named `smol-worker-N`.
    pub smol: SmolPool,
}

impl Runtimes {
    /// Builds all three with `workers` worker threads each; `io`: the workload uses timers or
    /// sockets (the async-executor runners then drive the async-io reactor when idle).
    pub fn build(workers: usize, io: bool) -> io::Result<Runtimes> {
        let trellis = trellis::Runtime::builder().worker_threads(workers).build()?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("tokio-worker")
            .enable_all()
            .build()?;
        let smol = SmolPool::new(workers, io)?;
        Ok(Runtimes { trellis, tokio, smol })
    }

    /// Injects a root task into trellis from outside (`Runtime::spawn`, detached).
    pub fn inject_trellis(&self, root: Root) {
        drop(self.trellis.spawn(root));
    }

    /// Injects a root task into tokio from outside (`Runtime::spawn`, detached).
    pub fn inject_tokio(&self, root: Root) {
        drop(self.tokio.spawn(root));
    }

    /// Injects a root task into async-executor from outside (`Executor::spawn(..).detach()`).
    pub fn inject_smol(&self, root: Root) {
        self.smol.inject(root);
    }
}

//! A TCP echo server started with `Nursery::start`, used by a few clients, then stopped by
//! cancelling the nursery.
//!
//! ```text
//! cargo run --release -p trellis-examples --example nursery_start
//! ```
//!
//! `n.spawn(server)` would return at once, before the server has bound its socket: a client
//! connecting right away could find nothing there, and the caller would not even know the
//! port (the server binds port 0 and lets the OS pick). `n.start(server)` (Trio's
//! `nursery.start`) instead waits until the server reports that it is ready, by calling
//! `status.started(port)`, and returns that value. Until then the server runs under the
//! caller's scopes and an error it hits (the bind failing, say) comes out of `start`; from
//! `started` on, it is a child of the nursery like any other.
//!
//! The server keeps its connection handlers in a nursery of its own, so cancelling the outer
//! nursery's scope stops everything: the accept loop and every handler see `Cancelled`, and
//! the outer nursery returns only once they have all finished and the socket is closed.

// The workspace's clippy.toml steers trellis's own code to its loom-aware `sync` facade;
// a program using trellis uses `std::sync` as usual.
#![allow(clippy::disallowed_types)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::{AsyncReadExt, AsyncWriteExt};
use trellis::net::{TcpListener, TcpStream};
use trellis::{is_cancelled, nursery, Nursery, TaskStatus};

const CLIENTS: usize = 3;

/// What the server did, for the checks at the end.
#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicUsize,
    /// Connection handlers running right now.
    live_handlers: AtomicUsize,
}

/// Counts a handler as live until it is dropped, however it ends.
struct LiveHandler(Arc<Stats>);

impl LiveHandler {
    fn new(stats: Arc<Stats>) -> LiveHandler {
        stats.live_handlers.fetch_add(1, Ordering::SeqCst);
        LiveHandler(stats)
    }
}

impl Drop for LiveHandler {
    fn drop(&mut self) {
        self.0.live_handlers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The server: binds a port chosen by the OS, reports it through `status`, then serves until
/// it is cancelled.
async fn echo_server(status: TaskStatus<u16>, stats: Arc<Stats>) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    // Listening: connections queue up from now on. Hand the port to the caller of `start`.
    status.started(port);

    nursery(|handlers: Nursery<io::Error>| async move {
        loop {
            // Cancelling the server makes `accept` fail with a cancellation, which `?` passes
            // up: the body ends, and the nursery waits for the handlers (cancelled too).
            let (stream, peer) = listener.accept().await?;
            stats.accepted.fetch_add(1, Ordering::SeqCst);
            handlers.spawn(handle(stream, peer, LiveHandler::new(stats.clone())));
        }
    })
    .await
    // The handlers' nursery reports an `ErrorGroup`; wrapped in an `io::Error` it keeps the
    // cancellation it carries alive, so the outer nursery still recognises it as its own.
    .map_err(io::Error::other)
}

/// Serves one connection. A client's I/O error ends that connection only, not the server; a
/// cancellation propagates.
async fn handle(stream: TcpStream, peer: SocketAddr, _live: LiveHandler) -> io::Result<()> {
    match echo(stream).await {
        Ok(_bytes) => Ok(()),
        Err(e) if is_cancelled(&e) => Err(e),
        Err(e) => {
            eprintln!("{peer}: {e}");
            Ok(())
        }
    }
}

/// Echoes one connection until the peer closes its side.
async fn echo(mut stream: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Sends a message and checks that it comes back intact; returns its length.
async fn client(port: u16, id: usize) -> io::Result<usize> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let message = format!("hello from client {id}! ").repeat(100 * (id + 1));
    stream.write_all(message.as_bytes()).await?;
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).await?;
    if back != message.as_bytes() {
        return Err(io::Error::other(format!("client {id}: the echo differs")));
    }
    // Shut our side down: the server's handler reads the end of the stream and finishes.
    stream.close().await?;
    Ok(message.len())
}

fn main() -> io::Result<()> {
    trellis::run(async {
        let stats = Arc::new(Stats::default());
        let t0 = Instant::now();
        let port = nursery(|n: Nursery<io::Error>| {
            let stats = stats.clone();
            async move {
                // Returns once the server has called `started`: it is listening, so the
                // clients below cannot race its bind.
                let port = n.start(|status| echo_server(status, stats)).await?;
                println!("echo server listening on 127.0.0.1:{port}");

                let clients: Vec<_> = (0..CLIENTS).map(|id| n.spawn(client(port, id))).collect();
                for (id, client) in clients.into_iter().enumerate() {
                    // A failed client's error is in the nursery's group already; this one
                    // only says that the body cannot go on.
                    let bytes = client.await.map_err(io::Error::other)?;
                    println!("client {id}: {bytes} bytes echoed back intact");
                }

                // Done: stop the server by cancelling the nursery's scope. The server and its
                // handlers end with `Cancelled`, which the nursery, owning that cancellation,
                // does not report as an error. (The body reaches no cancel point after this,
                // so it still returns its `Ok`.)
                n.cancel_scope().cancel();
                Ok(port)
            }
        })
        .await
        .map_err(io::Error::other)?;
        println!(
            "served {} connections; server stopped, nursery closed after {:.1} ms",
            stats.accepted.load(Ordering::SeqCst),
            t0.elapsed().as_secs_f64() * 1e3
        );

        assert_eq!(stats.accepted.load(Ordering::SeqCst), CLIENTS);
        // Structured concurrency: no handler outlives the nursery.
        assert_eq!(stats.live_handlers.load(Ordering::SeqCst), 0);
        // Nor does the listening socket: the port is closed now.
        let late = TcpStream::connect(("127.0.0.1", port)).await;
        assert_eq!(late.map(drop).unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
        println!("connecting to port {port} again is refused: nothing is left running");
        Ok(())
    })
}

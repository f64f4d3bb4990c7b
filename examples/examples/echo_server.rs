//! A TCP echo server, and clients that check the echo.
//!
//! ```text
//! cargo run --release -p trellis-examples --example echo_server              # server + 100 checking clients
//! cargo run --release -p trellis-examples --example echo_server -- --serve 127.0.0.1:7000   # serve until killed
//! ```
//! With `--serve`, try it with `nc 127.0.0.1 7000`.

use std::net::SocketAddr;
use std::time::Instant;

use futures::{AsyncReadExt, AsyncWriteExt};
use trellis::net::{TcpListener, TcpStream};

/// Echoes one connection until the peer closes its side.
async fn echo(mut stream: TcpStream) -> std::io::Result<u64> {
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

/// Accepts connections forever, one task each.
async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        trellis::spawn(async move {
            if let Err(e) = echo(stream).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

/// Sends `rounds` messages of different sizes and checks each comes back intact.
async fn client(addr: SocketAddr, id: usize, rounds: usize) -> std::io::Result<u64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut sent = 0;
    for round in 0..rounds {
        let len = 1 + (id * 31 + round * 97) % 8192;
        let message: Vec<u8> = (0..len).map(|i| (i + id + round) as u8).collect();
        stream.write_all(&message).await?;
        let mut back = vec![0u8; len];
        stream.read_exact(&mut back).await?;
        if back != message {
            return Err(std::io::Error::other(format!(
                "client {id}: echo differs in round {round}"
            )));
        }
        sent += len as u64;
    }
    stream.close().await?;
    Ok(sent)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, addr] = args.as_slice() {
        if flag == "--serve" {
            return trellis::run(async {
                let listener = TcpListener::bind(addr.as_str()).await?;
                println!("echo server on {}", listener.local_addr()?);
                serve(listener).await
            });
        }
    }
    if !args.is_empty() {
        eprintln!("usage: echo_server [--serve ADDR]");
        std::process::exit(2);
    }
    trellis::run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = trellis::spawn(serve(listener));
        let (clients, rounds) = (100, 200);
        let t0 = Instant::now();
        let handles: Vec<_> =
            (0..clients).map(|id| trellis::spawn(client(addr, id, rounds))).collect();
        let mut bytes = 0;
        for h in handles {
            bytes += h.await.expect("client task")?;
        }
        let elapsed = t0.elapsed();
        server.cancel();
        println!(
            "{clients} clients x {rounds} round trips: {bytes} bytes echoed and checked in {:.1} ms",
            elapsed.as_secs_f64() * 1e3
        );
        Ok(())
    })
}

//! Networking: TCP/Unix echo with partial reads and writes, many connections, UDP, EOF and
//! resets, and fd reuse never waking the wrong task.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use trellis_runtime::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use trellis_runtime::spawn;
use trellis_runtime::time::sleep;

/// Echoes everything back until EOF, in small reads (partial reads on purpose).
async fn echo<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(mut s: S) -> io::Result<usize> {
    let mut buf = [0u8; 1000];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            s.close().await?;
            return Ok(total);
        }
        s.write_all(&buf[..n]).await?;
        total += n;
    }
}

/// Writes `data` in uneven chunks while reading the echo back; returns what came back.
async fn round_trip<S>(stream: S, data: Vec<u8>) -> io::Result<Vec<u8>>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = stream.split();
    let writer_task = spawn(async move {
        for chunk in data.chunks(4099) {
            writer.write_all(chunk).await?;
        }
        writer.close().await
    });
    let mut back = Vec::new();
    reader.read_to_end(&mut back).await?;
    writer_task.await.unwrap()?;
    Ok(back)
}

fn test_data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

on_workers!(tcp_echo_round_trip, |rt| {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            assert_eq!(peer, stream.peer_addr().unwrap());
            echo(stream).await.unwrap()
        });
        let client = TcpStream::connect(addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        assert!(client.nodelay().unwrap());
        assert_eq!(client.peer_addr().unwrap(), addr);
        let data = test_data(2_000_000);
        let back = round_trip(client, data.clone()).await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "echo differs");
        assert_eq!(server.await.unwrap(), data.len());
    });
    assert_eq!(rt.handle().metrics().io_sources, 0);
});

on_workers!(unix_echo_round_trip, |rt| {
    let dir = std::env::temp_dir().join(format!(
        "trellis-unix-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    rt.block_on(async {
        let listener = UnixListener::bind(&path).await.unwrap();
        let server = spawn(async move {
            let mut incoming = listener.incoming();
            let stream = incoming.next().await.unwrap().unwrap();
            echo(stream).await.unwrap()
        });
        let client = UnixStream::connect(&path).await.unwrap();
        let data = test_data(500_000);
        let back = round_trip(client, data.clone()).await.unwrap();
        assert!(back == data);
        assert_eq!(server.await.unwrap(), data.len());
        // A connected pair works the same way.
        let (a, b) = UnixStream::pair().unwrap();
        let echo_task = spawn(echo(b));
        assert_eq!(round_trip(a, test_data(10_000)).await.unwrap(), test_data(10_000));
        echo_task.await.unwrap().unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
});

#[test]
fn thousand_concurrent_connections_on_two_workers() {
    let rt = common::runtime(2);
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let server = spawn({
            let served = served.clone();
            async move {
                let mut conns = Vec::new();
                for _ in 0..1000 {
                    let (stream, _) = listener.accept().await.unwrap();
                    let served = served.clone();
                    conns.push(spawn(async move {
                        echo(stream).await.unwrap();
                        served.fetch_add(1, SeqCst);
                    }));
                }
                for c in conns {
                    c.await.unwrap();
                }
            }
        });
        // All 1,000 connections open at once before any finishes.
        let mut streams = Vec::new();
        for _ in 0..1000 {
            streams.push(TcpStream::connect(addr).await.unwrap());
        }
        let clients: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                spawn(async move {
                    let msg = format!("hello from {i}");
                    s.write_all(msg.as_bytes()).await.unwrap();
                    s.shutdown(Shutdown::Write).unwrap();
                    let mut back = String::new();
                    s.read_to_string(&mut back).await.unwrap();
                    assert_eq!(back, msg);
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        server.await.unwrap();
        assert_eq!(served.load(SeqCst), 1000);
    });
}

on_workers!(udp_exchange, |rt| {
    rt.block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let b = Arc::new(b);
        let responder = spawn({
            let b = b.clone();
            async move {
                let mut buf = [0u8; 64];
                for _ in 0..100 {
                    let (n, from) = b.recv_from(&mut buf).await.unwrap();
                    b.send_to(&buf[..n], from).await.unwrap();
                }
            }
        });
        let mut buf = [0u8; 64];
        for i in 0..100u32 {
            a.send_to(&i.to_le_bytes(), b_addr).await.unwrap();
            let (n, from) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!((n, from), (4, b_addr));
            assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), i);
        }
        responder.await.unwrap();
        // Connected sockets.
        a.connect(b_addr).await.unwrap();
        b.connect(a_addr).await.unwrap();
        a.send(b"connected").await.unwrap();
        let n = b.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"connected");
        assert_eq!(a.peer_addr().unwrap(), b_addr);
    });
});

on_workers!(closed_peer_is_eof_and_reset_is_an_error, |rt| {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Orderly close: EOF.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        drop(server_side);
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed peer reads as EOF");
        // Reset: the peer closes with unread data (or SO_LINGER 0), writes then fail.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        let std_side = server_side.into_std().unwrap();
        socket2::SockRef::from(&std_side).set_linger(Some(Duration::ZERO)).unwrap();
        drop(std_side); // RST
        let err = loop {
            match client.write_all(&[0u8; 65536]).await {
                Ok(()) => sleep(Duration::from_millis(1)).await.unwrap(),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
            "a reset is an error: {err:?}"
        );
        // Connecting to a closed port is an error, not a panic.
        drop(listener);
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{refused:?}");
    });
});

on_workers!(
    /// A task registers interest in a socket, closes it, and goes on to wait for something
    /// else; the OS then hands the same descriptor number to a new socket, which becomes
    /// readable. That event must not reach the first task (the old registration is gone; a
    /// stale event carries the old generation), and every registration is removed at the end.
    fd_reuse_never_wakes_the_wrong_task, |rt| {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Other tests in this process open descriptors concurrently and can take the number
        // just freed, so go on until the OS has reused it a few times (usually 5 rounds).
        let mut reused = 0;
        for _ in 0..400 {
            if reused == 5 {
                break;
            }
            let a = TcpStream::connect(addr).await.unwrap();
            let (_a_server, _) = listener.accept().await.unwrap();
            let a_fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&a));
            let polls = Arc::new(AtomicUsize::new(0));
            let (ready_tx, ready_rx) = futures::channel::oneshot::channel();
            let waiter = spawn({
                let polls = polls.clone();
                async move {
                    let mut a = a;
                    let mut buf = [0u8; 1];
                    {
                        // Interest registered with this task's waker, then abandoned.
                        let mut read = a.read(&mut buf);
                        assert!(futures::poll!(&mut read).is_pending());
                    }
                    drop(a);
                    ready_tx.send(()).unwrap();
                    // From now on every wake-up of this task is counted.
                    futures::future::poll_fn(|_| {
                        polls.fetch_add(1, SeqCst);
                        std::task::Poll::<()>::Pending
                    })
                    .await;
                }
            });
            ready_rx.await.unwrap();
            sleep(Duration::from_millis(1)).await.unwrap();
            let baseline = polls.load(SeqCst);
            // A new socket, usually on the same descriptor number, becomes readable.
            let mut b = TcpStream::connect(addr).await.unwrap();
            if std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&b)) == a_fd {
                reused += 1;
            }
            let (mut b_server, _) = listener.accept().await.unwrap();
            b_server.write_all(b"x").await.unwrap();
            let mut buf = [0u8; 1];
            b.read_exact(&mut buf).await.unwrap();
            sleep(Duration::from_millis(2)).await.unwrap();
            assert_eq!(polls.load(SeqCst), baseline, "an event on fd {a_fd} woke the old task");
            waiter.cancel();
            assert!(waiter.await.unwrap_err().is_cancelled());
        }
        assert!(reused > 0, "the OS never reused a descriptor number; the test proved nothing");
    });
    assert_eq!(rt.handle().metrics().io_sources, 0);
});

#[test]
fn net_types_are_send_sync_unpin() {
    fn check<T: Send + Sync + Unpin>() {}
    check::<TcpListener>();
    check::<TcpStream>();
    check::<UdpSocket>();
    check::<UnixListener>();
    check::<UnixStream>();
}

#[test]
fn io_ops_are_cancel_points_without_effect() {
    let rt = common::runtime(2);
    rt.block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b_addr = b.local_addr().unwrap();
        // A receiver cancelled while waiting consumes nothing: the datagram is still there.
        let rx = spawn({
            let b = b.clone();
            async move {
                let mut buf = [0u8; 8];
                b.recv_from(&mut buf).await.map(|(n, _)| n)
            }
        });
        sleep(Duration::from_millis(2)).await.unwrap();
        rx.cancel();
        match rx.await {
            Err(e) => assert!(e.is_cancelled()),
            Ok(r) => assert!(trellis_runtime::is_cancelled(&r.unwrap_err())),
        }
        a.send_to(b"kept", b_addr).await.unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"kept");
    });
}

on_workers!(
    /// A short read that drains the data while the peer's end of stream is already pending:
    /// the next read must see EOF (its edge came before the short read, so a readiness
    /// "optimisation" that cleared readability after a short read would wait forever).
    short_read_then_pending_eof, |rt| {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for _ in 0..50 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(&[7u8; 100]).await.unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            sleep(Duration::from_millis(1)).await.unwrap(); // data and FIN both arrived
            let mut buf = vec![0u8; 65536];
            let mut total = 0;
            loop {
                let n = trellis_runtime::time::sleep(Duration::from_secs(5));
                let read = server.read(&mut buf);
                futures::pin_mut!(read);
                let n = match futures::future::select(read, n).await {
                    futures::future::Either::Left((r, _)) => r.unwrap(),
                    futures::future::Either::Right(_) => panic!("read hung with EOF pending"),
                };
                if n == 0 {
                    break;
                }
                total += n;
            }
            assert_eq!(total, 100);
        }
    });
});

//! Cancel points under foreign multiplexers (DESIGN.md 3.5) and "a cancel point has no effect
//! when it fails" (3.1): I/O readiness waits, task joins and blocking joins polled inside a
//! `FuturesUnordered` (which polls each future with a waker of its own, so waking the task does
//! not re-poll them) still see `Cancelled` when their scope is cancelled, and the operations
//! they stood for did nothing. Virtual time except for the blocking pool (a running blocking
//! job stops the virtual clock).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::{AsyncReadExt, AsyncWriteExt};
use trellis_runtime::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use trellis_runtime::time::{sleep, Instant};
use trellis_runtime::{
    is_cancelled, move_on_after, nursery, spawn, spawn_blocking, CancelScope, JoinError,
    JoinHandle, Nursery, TaskHandle,
};

const HOUR: Duration = Duration::from_secs(3600);
const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Whether an I/O result is a trellis cancellation (the `Cancelled` is dropped here: the
/// leaves below report a bool, so nothing alive reaches the scope's exit).
fn io_cancelled<T>(result: io::Result<T>) -> bool {
    matches!(result, Err(e) if is_cancelled(&e))
}

/// Whether a join was interrupted because the joiner was cancelled.
fn join_interrupted<T>(result: Result<T, JoinError>) -> bool {
    matches!(result, Err(e) if e.is_interrupted())
}

/// Runs `leaves` (each resolves to "I failed with `Cancelled`") in a `FuturesUnordered`, then
/// waits forever, under `move_on_after(SEC, ...)`: asserts that the timeout ended exactly on
/// time (virtual time) and returns how many leaves saw `Cancelled`.
async fn under_timeout(leaves: Vec<BoxFuture<'_, bool>>) -> usize {
    let saw = AtomicUsize::new(0);
    let t0 = Instant::now();
    let out = move_on_after(SEC, async {
        let mut leaves: FuturesUnordered<_> = leaves.into_iter().collect();
        while let Some(cancelled) = leaves.next().await {
            if cancelled {
                saw.fetch_add(1, SeqCst);
            }
        }
        futures::future::pending::<()>().await
    })
    .await;
    assert!(out.is_none(), "the timeout caught its cancellation");
    assert_eq!(Instant::now() - t0, SEC, "the timeout ended on time");
    saw.load(SeqCst)
}

/// A `CancelScope` cancelled by another task after `SEC`, around the same waiting: asserts the
/// timing and returns how many leaves saw `Cancelled`.
async fn under_scope_cancelled_by_another_task(leaves: Vec<BoxFuture<'_, bool>>) -> usize {
    let scope = CancelScope::new();
    let canceller = spawn({
        let scope = scope.clone();
        async move {
            sleep(SEC).await.unwrap();
            scope.cancel_with_reason("from another task");
        }
    });
    let t0 = Instant::now();
    let saw = AtomicUsize::new(0);
    let out = scope
        .run(async {
            let mut leaves: FuturesUnordered<_> = leaves.into_iter().collect();
            while let Some(cancelled) = leaves.next().await {
                if cancelled {
                    saw.fetch_add(1, SeqCst);
                }
            }
            futures::future::pending::<()>().await
        })
        .await;
    assert!(out.is_none() && scope.cancelled_caught());
    assert_eq!(Instant::now() - t0, SEC, "the scope ended when it was cancelled");
    canceller.await.unwrap();
    saw.load(SeqCst)
}

async fn tcp_pairs(n: usize) -> (TcpListener, Vec<(TcpStream, TcpStream)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut pairs = Vec::new();
    for _ in 0..n {
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        pairs.push((client, server));
    }
    (listener, pairs)
}

#[test]
fn tcp_reads_under_futures_unordered_see_cancelled_and_consume_nothing() {
    common::on_virtual(|| async {
        let (_listener, pairs) = tcp_pairs(4).await;
        let servers: Vec<&TcpStream> = pairs.iter().map(|(_, server)| server).collect();
        let leaves: Vec<BoxFuture<'_, bool>> = vec![
            // `AsyncRead::poll_read` (the poll-method path, its leaf kept in the stream).
            Box::pin(async {
                let mut reader = servers[0];
                let mut buf = [0; 64];
                io_cancelled(reader.read(&mut buf).await)
            }),
            Box::pin(async {
                let mut reader = servers[1];
                let mut buf = [0; 64];
                io_cancelled(reader.read(&mut buf).await)
            }),
            // `read_with` (its leaf kept in the operation's future).
            Box::pin(async {
                let mut buf = [0; 64];
                io_cancelled(servers[2].peek(&mut buf).await)
            }),
            // A readiness wait.
            Box::pin(async { io_cancelled(servers[3].readable().await) }),
        ];
        assert_eq!(under_timeout(leaves).await, 4, "every read saw Cancelled");

        // No effect: what is sent afterwards is read in full by a later read.
        for (client, server) in &pairs {
            let (mut writer, mut reader) = (client, server);
            writer.write_all(b"sent after the cancel").await.unwrap();
            let mut buf = [0; 21];
            reader.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"sent after the cancel");
        }
    });
}

#[test]
fn tcp_accepts_under_futures_unordered_see_cancelled_and_accept_nothing() {
    common::on_virtual(|| async {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let leaves: Vec<BoxFuture<'_, bool>> = vec![
            Box::pin(async { io_cancelled(listeners[0].accept().await) }),
            Box::pin(async { io_cancelled(listeners[1].accept().await) }),
            // The `incoming` stream.
            Box::pin(async {
                let mut incoming = listeners[2].incoming();
                io_cancelled(incoming.next().await.expect("incoming never ends"))
            }),
        ];
        assert_eq!(under_timeout(leaves).await, 3, "every accept saw Cancelled");

        // No effect: a connection made afterwards is the one a later accept gets.
        for listener in &listeners {
            let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        }
    });
}

#[test]
fn udp_receives_under_futures_unordered_see_cancelled_and_consume_nothing() {
    common::on_virtual(|| async {
        let mut sockets = Vec::new();
        for _ in 0..3 {
            sockets.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sockets[1].connect(sender.local_addr().unwrap()).await.unwrap();
        let leaves: Vec<BoxFuture<'_, bool>> = vec![
            Box::pin(async {
                let mut buf = [0; 64];
                io_cancelled(sockets[0].recv_from(&mut buf).await)
            }),
            Box::pin(async {
                let mut buf = [0; 64];
                io_cancelled(sockets[1].recv(&mut buf).await)
            }),
            Box::pin(async {
                let mut buf = [0; 64];
                io_cancelled(sockets[2].peek_from(&mut buf).await)
            }),
        ];
        assert_eq!(under_timeout(leaves).await, 3, "every receive saw Cancelled");

        // No effect: a datagram sent afterwards is received whole.
        for socket in &sockets {
            sender.send_to(b"a datagram", socket.local_addr().unwrap()).await.unwrap();
            let mut buf = [0; 64];
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"a datagram");
            assert_eq!(from, sender.local_addr().unwrap());
        }
    });
}

#[test]
fn unix_reads_under_futures_unordered_see_a_cancel_from_another_task() {
    common::on_virtual(|| async {
        let mut pairs = Vec::new();
        for _ in 0..4 {
            pairs.push(UnixStream::pair().unwrap());
        }
        let leaves: Vec<BoxFuture<'_, bool>> = pairs
            .iter_mut()
            .map(|(reader, _)| -> BoxFuture<'_, bool> {
                Box::pin(async move {
                    let mut buf = [0; 64];
                    io_cancelled(reader.read(&mut buf).await)
                })
            })
            .collect();
        assert_eq!(under_scope_cancelled_by_another_task(leaves).await, 4);

        for (reader, writer) in &mut pairs {
            writer.write_all(b"unix bytes").await.unwrap();
            let mut buf = [0; 10];
            reader.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"unix bytes");
        }
    });
}

#[test]
fn joins_under_futures_unordered_are_interrupted_and_the_tasks_join_later() {
    common::on_virtual(|| async {
        let t0 = Instant::now();
        let mut handles: Vec<JoinHandle<usize>> = (0..4)
            .map(|i| {
                spawn(async move {
                    sleep(2 * SEC).await.unwrap();
                    i
                })
            })
            .collect();
        let leaves: Vec<BoxFuture<'_, bool>> = handles
            .iter_mut()
            .map(|h| -> BoxFuture<'_, bool> { Box::pin(async move { join_interrupted(h.await) }) })
            .collect();
        assert_eq!(under_timeout(leaves).await, 4, "every join was interrupted");

        // No effect: the tasks run on, and a later join gets each output.
        assert!(handles.iter().all(|h| !h.is_finished()));
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.await.unwrap(), i);
        }
        assert_eq!(Instant::now() - t0, 2 * SEC);
    });
}

#[test]
fn nursery_task_handles_under_futures_unordered_are_interrupted_and_join_later() {
    common::on_virtual(|| async {
        let t0 = Instant::now();
        let out = nursery(|n: Nursery<io::Error>| async move {
            let mut children: Vec<TaskHandle<usize>> = (0..4)
                .map(|i| {
                    n.spawn(async move {
                        sleep(2 * SEC).await?;
                        Ok(i)
                    })
                })
                .collect();
            let leaves: Vec<BoxFuture<'_, bool>> = children
                .iter_mut()
                .map(|h| -> BoxFuture<'_, bool> {
                    Box::pin(async move { join_interrupted(h.await) })
                })
                .collect();
            assert_eq!(under_timeout(leaves).await, 4, "every join was interrupted");

            assert!(children.iter().all(|h| !h.is_finished()));
            for (i, child) in children.into_iter().enumerate() {
                assert_eq!(child.await.unwrap(), i);
            }
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(Instant::now() - t0, 2 * SEC);
    });
}

/// A gate blocking jobs wait at until it opens.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Real time: a running blocking job stops the virtual clock (DESIGN.md 2).
#[test]
fn blocking_joins_under_futures_unordered_are_interrupted_and_join_later() {
    let rt = common::runtime(2);
    rt.block_on(async {
        spawn(async {
            let gate = Arc::new(Gate::default());
            let mut jobs: Vec<JoinHandle<usize>> = (0..3)
                .map(|i| {
                    let gate = gate.clone();
                    spawn_blocking(move || {
                        gate.wait();
                        i
                    })
                })
                .collect();
            let saw = AtomicUsize::new(0);
            let timeout = Duration::from_millis(100);
            let t0 = std::time::Instant::now();
            let out = move_on_after(timeout, async {
                let mut leaves: FuturesUnordered<_> =
                    jobs.iter_mut().map(|job| async move { join_interrupted(job.await) }).collect();
                while let Some(interrupted) = leaves.next().await {
                    if interrupted {
                        saw.fetch_add(1, SeqCst);
                    }
                }
                futures::future::pending::<()>().await
            })
            .await;
            let elapsed = t0.elapsed();
            assert!(out.is_none());
            assert!(elapsed >= timeout && elapsed < Duration::from_secs(5), "{elapsed:?}");
            assert_eq!(saw.load(SeqCst), 3, "every blocking join was interrupted");

            // No effect: the jobs are still running, and a later join gets each output.
            assert!(jobs.iter().all(|job| !job.is_finished()));
            gate.open();
            for (i, job) in jobs.into_iter().enumerate() {
                assert_eq!(job.await.unwrap(), i);
            }
        })
        .await
        .unwrap();
    });
}

/// A join under a foreign multiplexer abandoned (not cancelled) in one scope, then joined
/// again under a foreign multiplexer in another scope that is cancelled: the second cancel
/// reaches it (its registration follows the scope it is polled in, not the first one).
#[test]
fn a_join_registered_in_one_scope_is_reached_by_the_cancel_of_the_next() {
    common::on_virtual(|| async {
        let mut handle = spawn(async { sleep(HOUR).await.map(|()| 5) });
        let first = CancelScope::new();
        first
            .run(async {
                let mut joins = FuturesUnordered::new();
                joins.push(&mut handle);
                futures::future::select(joins.next(), std::pin::pin!(sleep(SEC))).await;
            })
            .await
            .unwrap();
        assert!(!first.cancel_called());

        let leaves: Vec<BoxFuture<'_, bool>> =
            vec![Box::pin(async { join_interrupted((&mut handle).await) })];
        assert_eq!(under_timeout(leaves).await, 1, "the second scope's cancel reached the join");

        // The same for a read through `AsyncRead` (its registration kept in the stream).
        let (a, _b) = UnixStream::pair().unwrap();
        first_then_second_read(&a).await;

        handle.cancel();
        assert!(handle.await.unwrap_err().is_cancelled());
    });
}

/// A read through `AsyncRead` abandoned in one scope, then read again under a cancelled scope
/// in a `FuturesUnordered`: the second cancel reaches it.
async fn first_then_second_read(stream: &UnixStream) {
    CancelScope::new()
        .run(async {
            let mut reader = stream;
            let mut buf = [0; 8];
            let mut reads = FuturesUnordered::new();
            reads.push(reader.read(&mut buf));
            futures::future::select(reads.next(), std::pin::pin!(sleep(SEC))).await;
        })
        .await
        .unwrap();
    let leaves: Vec<BoxFuture<'_, bool>> = vec![Box::pin(async {
        let mut reader = stream;
        let mut buf = [0; 8];
        io_cancelled(reader.read(&mut buf).await)
    })];
    assert_eq!(under_timeout(leaves).await, 1);
}

/// The contract on the fast path (3.1): in a scope already cancelled, an accept with a
/// connection waiting, a read with bytes waiting, a receive with a datagram waiting and a join
/// of a finished task all fail, and none of them took anything.
#[test]
fn cancelled_operations_with_work_ready_have_no_effect() {
    common::on_virtual(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (unix_a, unix_b) = UnixStream::pair().unwrap();
        (&unix_b).write_all(b"unix bytes").await.unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sender.send_to(b"a datagram", receiver.local_addr().unwrap()).await.unwrap();
        let mut finished = spawn(async { 7 });
        while !finished.is_finished() {
            sleep(MS).await.unwrap();
        }
        let mut buf = [0; 64];
        receiver.peek_from(&mut buf).await.unwrap(); // the datagram arrived

        let scope = CancelScope::new();
        scope.cancel();
        let failed = scope
            .run(async {
                let mut buf = [0; 64];
                let accept = io_cancelled(listener.accept().await);
                let read = io_cancelled((&unix_a).read(&mut buf).await);
                let recv = io_cancelled(receiver.recv_from(&mut buf).await);
                let join = join_interrupted((&mut finished).await);
                [accept, read, recv, join]
            })
            .await;
        assert_eq!(failed, Some([true; 4]), "every operation failed with Cancelled");

        let (_server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap(), "the waiting connection is still there");
        let mut buf = [0; 10];
        (&unix_a).read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"unix bytes", "the waiting bytes are still there");
        let mut buf = [0; 64];
        let (n, _) = receiver.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"a datagram", "the waiting datagram is still there");
        assert_eq!(finished.await.unwrap(), 7, "the output is still there");
    });
}

/// A waker that counts its wake-ups; `Arc::strong_count` tells who holds clones of it.
#[derive(Default)]
struct Probe {
    wakes: AtomicUsize,
}

impl Wake for Probe {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
    }
}

/// Polls `fut` once with `waker` instead of the task's (as a foreign multiplexer would).
fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

async fn wait_for_wake(probe: &Probe) {
    for _ in 0..10_000 {
        if probe.wakes.load(SeqCst) > 0 {
            return;
        }
        sleep(MS).await.unwrap();
    }
    panic!("the probe was never woken");
}

/// A leaf polled with a foreign waker registers it with its scope's node while it waits and
/// releases it when it completes (before the future is dropped, and before the scope exits,
/// which would drop it anyway).
#[test]
fn a_completed_read_leaves_no_waker_registered() {
    common::on_virtual(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        let probe = Arc::new(Probe::default());
        let waker = Waker::from(probe.clone());
        CancelScope::new()
            .run(async {
                let mut reader = &a;
                let mut buf = [0; 4];
                let mut read = reader.read(&mut buf);
                assert!(poll_with(&mut read, &waker).is_pending());
                // Held by: `probe`, `waker`, the reactor's slot, the scope's node.
                assert_eq!(Arc::strong_count(&probe), 4, "the read registered its waker");
                (&b).write_all(b"ping").await.unwrap();
                wait_for_wake(&probe).await; // the reactor woke (and released) its clone
                assert!(matches!(poll_with(&mut read, &waker), Poll::Ready(Ok(4))));
                assert_eq!(Arc::strong_count(&probe), 2, "the completed read deregistered");
                drop(read);
            })
            .await
            .unwrap();
        assert_eq!(Arc::strong_count(&probe), 2);

        // The same through an operation's own future (`recv_from` is `read_with`).
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let probe = Arc::new(Probe::default());
        let waker = Waker::from(probe.clone());
        CancelScope::new()
            .run(async {
                let mut buf = [0; 16];
                let mut recv = Box::pin(receiver.recv_from(&mut buf));
                assert!(poll_with(&mut recv, &waker).is_pending());
                assert_eq!(Arc::strong_count(&probe), 4, "the receive registered its waker");
                sender.send_to(b"more", receiver.local_addr().unwrap()).await.unwrap();
                wait_for_wake(&probe).await;
                assert!(matches!(poll_with(&mut recv, &waker), Poll::Ready(Ok((4, _)))));
                assert_eq!(Arc::strong_count(&probe), 2, "the completed receive deregistered");
            })
            .await
            .unwrap();
        assert_eq!(Arc::strong_count(&probe), 2);
    });
}

#[test]
fn a_completed_join_leaves_no_waker_registered() {
    common::on_virtual(|| async {
        let mut handle = spawn(async {
            sleep(SEC).await.unwrap();
            3
        });
        let probe = Arc::new(Probe::default());
        let waker = Waker::from(probe.clone());
        CancelScope::new()
            .run(async {
                assert!(poll_with(&mut handle, &waker).is_pending());
                // Held by: `probe`, `waker`, the task's join slot, the scope's node.
                assert_eq!(Arc::strong_count(&probe), 4, "the join registered its waker");
                wait_for_wake(&probe).await;
                assert!(matches!(poll_with(&mut handle, &waker), Poll::Ready(Ok(3))));
                // The node's clone is gone; the task's join slot keeps its own until the task
                // is freed.
                assert_eq!(Arc::strong_count(&probe), 3, "the completed join deregistered");
            })
            .await
            .unwrap();
        drop(handle);
    });
}

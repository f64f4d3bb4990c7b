//! `Async<T>` over std sockets: readiness, partial reads and writes, EOF, wakes from the
//! reactor on 1, 2 and 4 workers.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use futures::{AsyncReadExt, AsyncWriteExt};
use trellis_runtime::io::Async;
use trellis_runtime::spawn;

on_workers!(tcp_echo_through_async, |rt| {
    rt.block_on(async {
        let listener = Async::new(TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let server = spawn(async move {
            let (stream, _) = listener.read_with(|l| l.accept()).await.unwrap();
            let mut stream = Async::new(stream).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).await.unwrap();
                total += n;
            }
            total
        });
        // A blocking std client on a plain thread: the server task is woken by the reactor.
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
            let mut writer = c.try_clone().unwrap();
            let sent = data.clone();
            let w = std::thread::spawn(move || {
                for chunk in sent.chunks(7_919) {
                    writer.write_all(chunk).unwrap();
                }
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut echoed = Vec::new();
            c.read_to_end(&mut echoed).unwrap();
            w.join().unwrap();
            assert_eq!(echoed, data);
        });
        assert_eq!(server.await.unwrap(), 1_000_000);
        client.join().unwrap();
    });
    assert_eq!(rt.handle().metrics().io_sources, 0, "every registration was removed");
});

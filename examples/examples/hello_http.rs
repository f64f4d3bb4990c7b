//! An HTTP/1.1 "Hello, world!" server: hyper on trellis's TCP types, executor and timers.
//!
//! ```text
//! cargo run --release -p trellis-examples --example hello_http -- 127.0.0.1:8080
//! curl http://127.0.0.1:8080/
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/        # load (Debian: apt-get install wrk)
//! ```

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use trellis::hyper::{HyperIo, HyperTimer};
use trellis::net::TcpListener;

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"Hello, world!\n"))))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    trellis::run(async move {
        let listener = TcpListener::bind(addr.as_str()).await?;
        println!("listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: report, back off a little, go on.
                    eprintln!("accept: {e}");
                    trellis::time::sleep(Duration::from_millis(10)).await.ok();
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            trellis::spawn(async move {
                let served = http1::Builder::new()
                    .timer(HyperTimer)
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(HyperIo::new(stream), service_fn(hello))
                    .await;
                if let Err(e) = served {
                    if !e.is_incomplete_message() {
                        eprintln!("{peer}: {e}");
                    }
                }
            });
        }
    })
}

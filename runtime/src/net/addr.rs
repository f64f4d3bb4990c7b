//! Address resolution that never blocks a worker: literal addresses are parsed at once, host
//! names are looked up on the blocking pool.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::pin::Pin;

/// Something that names one or more socket addresses: a `SocketAddr`, an `(ip, port)` pair,
/// `"host:port"`, `("host", port)`, or a slice of addresses. Host names are resolved on the
/// blocking pool (DNS lookups block), literal addresses without any lookup.
///
/// This trait is sealed: it is implemented for the standard address types only.
pub trait ToSocketAddrs: sealed::Sealed {}

// The sealed-trait pattern: the trait is `pub` so it can be a supertrait of a public trait,
// but its module is private, so nothing outside this crate can implement it.
#[allow(unreachable_pub)]
pub(crate) mod sealed {
    use super::*;

    /// The resolution, boxed (address parsing is not on any hot path).
    pub type Resolve = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>>;

    pub trait Sealed {
        #[doc(hidden)]
        fn resolve(&self) -> Resolve;
    }
}

use sealed::Resolve;

fn ready(addrs: Vec<SocketAddr>) -> Resolve {
    Box::pin(std::future::ready(Ok(addrs)))
}

/// Looks `host` up on the blocking pool, unless it is a literal address.
fn lookup(host: String, port: Option<u16>) -> Resolve {
    let literal = match port {
        Some(port) => host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)),
        None => host.parse::<SocketAddr>().ok(),
    };
    if let Some(addr) = literal {
        return ready(vec![addr]);
    }
    Box::pin(async move {
        let job = crate::spawn_blocking(move || -> io::Result<Vec<SocketAddr>> {
            use std::net::ToSocketAddrs as _;
            match port {
                Some(port) => Ok((host.as_str(), port).to_socket_addrs()?.collect()),
                None => Ok(host.to_socket_addrs()?.collect()),
            }
        });
        match job.await {
            Ok(result) => result,
            // The resolving task was cancelled while it waited (also under a foreign
            // multiplexer: the join is a leaf, DESIGN.md 3.5): report the joiner's own
            // `Cancelled`, as a cancel point does (the lookup finishes in the background and is
            // dropped).
            Err(e) => Err(match e.try_into_cancelled() {
                Ok(cancelled) => io::Error::from(cancelled),
                Err(e) => io::Error::other(e),
            }),
        }
    })
}

macro_rules! literal_addrs {
    ($($t:ty => |$s:ident| $e:expr;)*) => {$(
        impl ToSocketAddrs for $t {}
        impl sealed::Sealed for $t {
            fn resolve(&self) -> Resolve {
                let $s = self;
                ready(vec![$e])
            }
        }
    )*};
}

literal_addrs! {
    SocketAddr => |s| *s;
    SocketAddrV4 => |s| SocketAddr::V4(*s);
    SocketAddrV6 => |s| SocketAddr::V6(*s);
    (IpAddr, u16) => |s| SocketAddr::new(s.0, s.1);
    (Ipv4Addr, u16) => |s| SocketAddr::new(IpAddr::V4(s.0), s.1);
    (Ipv6Addr, u16) => |s| SocketAddr::new(IpAddr::V6(s.0), s.1);
    ([u8; 4], u16) => |s| SocketAddr::new(IpAddr::from(s.0), s.1);
}

impl ToSocketAddrs for str {}
impl sealed::Sealed for str {
    fn resolve(&self) -> Resolve {
        lookup(self.to_owned(), None)
    }
}

impl ToSocketAddrs for String {}
impl sealed::Sealed for String {
    fn resolve(&self) -> Resolve {
        lookup(self.clone(), None)
    }
}

impl ToSocketAddrs for (&str, u16) {}
impl sealed::Sealed for (&str, u16) {
    fn resolve(&self) -> Resolve {
        lookup(self.0.to_owned(), Some(self.1))
    }
}

impl ToSocketAddrs for (String, u16) {}
impl sealed::Sealed for (String, u16) {
    fn resolve(&self) -> Resolve {
        lookup(self.0.clone(), Some(self.1))
    }
}

impl ToSocketAddrs for [SocketAddr] {}
impl sealed::Sealed for [SocketAddr] {
    fn resolve(&self) -> Resolve {
        ready(self.to_vec())
    }
}

impl<const N: usize> ToSocketAddrs for [SocketAddr; N] {}
impl<const N: usize> sealed::Sealed for [SocketAddr; N] {
    fn resolve(&self) -> Resolve {
        ready(self.to_vec())
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}
impl<T: ToSocketAddrs + ?Sized> sealed::Sealed for &T {
    fn resolve(&self) -> Resolve {
        (**self).resolve()
    }
}

/// Resolves `addr` and runs `f` on each address until one succeeds; returns the last error.
pub(crate) async fn each_addr<A, R, F, Fut>(addr: A, mut f: F) -> io::Result<R>
where
    A: ToSocketAddrs,
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<R>>,
{
    let addrs = sealed::Sealed::resolve(&addr).await?;
    let mut last = None;
    for addr in addrs {
        match f(addr).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                if crate::is_cancelled(&e) {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to no socket address")
    }))
}

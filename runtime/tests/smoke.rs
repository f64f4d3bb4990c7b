#![allow(clippy::disallowed_types)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use trellis_runtime::*;

#[test]
fn smoke() {
    let rt = Runtime::builder().worker_threads(2).build().unwrap();
    let n = rt.block_on(async {
        let mut hs = Vec::new();
        for i in 0..1000u64 {
            hs.push(spawn(async move { yield_now().await; i }));
        }
        let mut s = 0;
        for h in hs { s += h.await.unwrap(); }
        s
    });
    assert_eq!(n, 999 * 1000 / 2);
    let c = Arc::new(AtomicUsize::new(0));
    let c2 = c.clone();
    let h = rt.spawn(async move { c2.fetch_add(1, Ordering::SeqCst); panic!("boom") });
    let e = rt.block_on(h).unwrap_err();
    assert!(e.is_panic(), "{e}");
    assert_eq!(c.load(Ordering::SeqCst), 1);
    let b = rt.block_on(async { spawn_blocking(|| 5).await.unwrap() });
    assert_eq!(b, 5);
}

//! Loom model of the hand-back of completed tasks (`returned.rs`): a peer hands a batch back
//! while the home worker drains and stops. Every item must be dropped exactly once, by the
//! home worker or (refused) by the peer: a stranded item is a leaked loom `Arc`, a double drop
//! is counted. Validated by planting a `close` that keeps the items (loom reports the leak).
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo
//! test --profile loom -p trellis-runtime --lib scheduler::returned`.

use loom::thread;

use super::Returned;
use crate::cancel::loom_models::Counter;
use crate::sync::Arc;

/// Counts its drop.
struct Item(Counter);

impl Drop for Item {
    fn drop(&mut self) {
        self.0.incr();
    }
}

#[test]
fn hand_back_racing_home_worker_stop() {
    loom::model(|| {
        let returned = Arc::new(Returned::new());
        let dropped = Counter::new();
        let peer = {
            let (returned, dropped) = (returned.clone(), dropped.clone());
            thread::spawn(move || {
                let batch = vec![Arc::new(Item(dropped.clone())), Arc::new(Item(dropped))];
                drop(returned.hand_back(batch));
            })
        };
        // The home worker: one ordinary drain, then it stops.
        drop(returned.take());
        drop(returned.close());
        peer.join().unwrap();
        assert_eq!(dropped.get(), 2, "each handed-back item is dropped exactly once");
        assert!(returned.take().is_empty(), "nothing is accepted after close");
    });
}

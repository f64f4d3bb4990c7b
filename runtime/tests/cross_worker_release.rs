//! Tasks completed on a worker other than the one that spawned them are handed back to their
//! home worker to be freed (`scheduler/returned.rs`). Stress: every task cell is freed by the
//! time the runtime is dropped, also when the runtime shuts down while completions and
//! hand-backs are under way. (A global allocator that counts the cells of one distinctive
//! size: this test binary only.)
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use trellis_runtime::{spawn, yield_now, Runtime};

/// The payload that gives these tasks' cells a size no other allocation here has.
const PAYLOAD: usize = 1237;

struct Counting;

/// Live allocations whose size is within a cell header of `PAYLOAD` (the task cells).
static LIVE_CELLS: AtomicUsize = AtomicUsize::new(0);

fn is_cell(layout: Layout) -> bool {
    (PAYLOAD..PAYLOAD + 512).contains(&layout.size())
}

// SAFETY: forwards to the system allocator; the bookkeeping is one atomic, no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_cell(layout) {
            LIVE_CELLS.fetch_add(1, SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_cell(layout) {
            LIVE_CELLS.fetch_sub(1, SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests count the same cells: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A task with a distinctive cell size that yields once and records whether it finished on a
/// thread other than `home`.
async fn cell_task(home: String, elsewhere: Arc<AtomicUsize>) {
    let payload = std::hint::black_box([7u8; PAYLOAD]);
    yield_now().await;
    if std::thread::current().name() != Some(home.as_str()) {
        elsewhere.fetch_add(1, SeqCst);
    }
    std::hint::black_box(payload);
}

fn current_name() -> String {
    std::thread::current().name().unwrap_or_default().to_string()
}

#[test]
fn cells_completed_on_another_worker_are_freed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let elsewhere = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let rt = Runtime::builder().worker_threads(2).build().unwrap();
        let counter = elsewhere.clone();
        rt.block_on(rt.spawn(async move {
            let home = current_name();
            let handles: Vec<_> =
                (0..5_000).map(|_| spawn(cell_task(home.clone(), counter.clone()))).collect();
            for handle in handles {
                handle.await.unwrap();
            }
        }))
        .unwrap();
        drop(rt);
        assert_eq!(LIVE_CELLS.load(SeqCst), 0, "a task cell outlived its runtime");
        if elsewhere.load(SeqCst) > 0 {
            return;
        }
    }
    panic!("no task ever completed on the worker that did not spawn it: nothing was tested");
}

#[test]
fn shutdown_racing_completions_frees_every_cell() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for round in 0..30 {
        let rt = Runtime::builder().worker_threads(2).build().unwrap();
        let elsewhere = Arc::new(AtomicUsize::new(0));
        rt.block_on(rt.spawn(async move {
            let home = current_name();
            for _ in 0..2_000 {
                // Detached: the runtime is dropped while they complete (or before they run).
                drop(spawn(cell_task(home.clone(), elsewhere.clone())));
            }
            // Let some of them run on both workers before the shutdown.
            for _ in 0..round {
                yield_now().await;
            }
        }))
        .unwrap();
        drop(rt);
        assert_eq!(LIVE_CELLS.load(SeqCst), 0, "round {round}: a task cell outlived its runtime");
    }
}

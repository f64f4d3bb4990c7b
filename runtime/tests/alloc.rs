//! Spawning costs exactly one allocation per task, of at most 128 bytes for a small future.
//! (A counting global allocator: this test binary only.)
#![allow(clippy::disallowed_types)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

use trellis_runtime::{spawn, JoinHandle, Runtime};

struct Counting;

static RECORDING: AtomicBool = AtomicBool::new(false);
static SIZES: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static IN_RECORD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; the bookkeeping allocates nothing while recording
// (the vector's capacity is reserved up front, and a re-entrant call is skipped).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if RECORDING.load(SeqCst) && IN_RECORD.fetch_add(1, SeqCst) == 0 {
            if let Ok(mut sizes) = SIZES.try_lock() {
                if sizes.len() < sizes.capacity() {
                    sizes.push(layout.size());
                }
            }
        }
        if RECORDING.load(SeqCst) {
            IN_RECORD.fetch_sub(1, SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 10_000;

async fn spawn_batch(record: bool) -> Vec<JoinHandle<u64>> {
    let mut handles = Vec::with_capacity(N);
    if record {
        RECORDING.store(true, SeqCst);
    }
    for i in 0..N as u64 {
        handles.push(spawn(async move { std::hint::black_box(i) }));
    }
    RECORDING.store(false, SeqCst);
    IN_RECORD.store(0, SeqCst);
    handles
}

#[test]
fn one_small_allocation_per_spawn() {
    SIZES.lock().unwrap().reserve(4 * N);
    let rt = Runtime::builder().worker_threads(1).build().unwrap();
    let sizes = rt
        .block_on(rt.spawn(async {
            // Warm up: the registry and the run queue reach their size.
            for h in spawn_batch(false).await {
                h.await.unwrap();
            }
            let handles = spawn_batch(true).await;
            for h in handles {
                h.await.unwrap();
            }
            std::mem::take(&mut *SIZES.lock().unwrap())
        }))
        .unwrap();
    let mut histogram: HashMap<usize, usize> = HashMap::new();
    for s in &sizes {
        *histogram.entry(*s).or_default() += 1;
    }
    let (&task_size, &count) = histogram.iter().max_by_key(|(_, c)| **c).unwrap();
    eprintln!("task cell: {task_size} bytes; all allocations while spawning: {histogram:?}");
    assert_eq!(count, N, "exactly one allocation of the task cell per spawn");
    assert!(task_size <= 128, "a no-op task takes {task_size} bytes (target: <= 128)");
    // Anything else is amortised growth of queues (a handful of buffer resizes), not per task.
    assert!(sizes.len() - N <= 32, "{} allocations for {N} spawns", sizes.len());
}

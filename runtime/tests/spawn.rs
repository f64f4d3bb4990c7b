//! Spawning and joining tasks: volume, wakes from foreign threads, spawns from workers, panics.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{oneshot, Tracker};
use trellis_runtime::{spawn, yield_now, Handle, JoinHandle};

on_workers!(million_noop_tasks, |rt| {
    const N: usize = 1_000_000;
    let ran = Arc::new(AtomicUsize::new(0));
    let joined = rt.block_on({
        let ran = ran.clone();
        async move {
            // Spawned from a task (the local path) in batches, joined in order.
            spawn(async move {
                let mut joined = 0;
                for _ in 0..N / 10_000 {
                    let handles: Vec<JoinHandle<()>> = (0..10_000)
                        .map(|_| {
                            let ran = ran.clone();
                            spawn(async move {
                                ran.fetch_add(1, SeqCst);
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                        joined += 1;
                    }
                }
                joined
            })
            .await
            .unwrap()
        }
    });
    assert_eq!(joined, N);
    assert_eq!(ran.load(SeqCst), N);
});

on_workers!(spawn_from_block_on_and_join, |rt| {
    let out = rt.block_on(async {
        let hs: Vec<_> = (0..100u64).map(|i| spawn(async move { i * 2 })).collect();
        let mut sum = 0;
        for h in hs {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(out, 9900);
});

on_workers!(runtime_spawn_from_outside, |rt| {
    let h = rt.spawn(async { "hi" });
    let h2 = rt.handle().spawn(async { 7 });
    assert_eq!(rt.block_on(h).unwrap(), "hi");
    assert_eq!(rt.block_on(h2).unwrap(), 7);
});

on_workers!(woken_from_foreign_threads, |rt| {
    const N: usize = 200;
    let tracker = Tracker::new();
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for i in 0..N {
        let (tx, rx) = oneshot::<usize>();
        senders.push(tx);
        handles.push(rt.spawn(tracker.track(async move { rx.await.unwrap() + i })));
    }
    // Wake every task from a std thread of its own, some after a short delay.
    let threads: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, tx)| {
            thread::spawn(move || {
                if i % 7 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
                tx.send(i);
            })
        })
        .collect();
    let sum = rt.block_on(async {
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(sum, 2 * (N * (N - 1) / 2));
    drop(rt);
    tracker.assert_all_dropped();
});

on_workers!(spawn_inside_task_on_worker, |rt| {
    let block_on_thread = thread::current().id();
    let (parent_thread, child_thread, value) = rt.block_on(async move {
        spawn(async move {
            let parent_thread = thread::current().id();
            let child = spawn(async { (thread::current().id(), 41) });
            let (child_thread, v) = child.await.unwrap();
            (parent_thread, child_thread, v + 1)
        })
        .await
        .unwrap()
    });
    assert_eq!(value, 42);
    assert_ne!(parent_thread, block_on_thread, "tasks run on worker threads");
    assert_ne!(child_thread, block_on_thread, "tasks run on worker threads");
});

/// With several workers, tasks spawned by one task are stolen and run by the other workers.
#[test]
fn spawned_tasks_are_stolen_by_other_workers() {
    for workers in [2, 4] {
        let rt = common::runtime(workers);
        let threads = Arc::new(Mutex::new(HashSet::new()));
        rt.block_on({
            let threads = threads.clone();
            async move {
                spawn(async move {
                    let hs: Vec<_> = (0..2_000)
                        .map(|_| {
                            let threads = threads.clone();
                            spawn(async move {
                                // Enough work per task that a second worker has time to steal.
                                let mut x = 0u64;
                                for i in 0..20_000u64 {
                                    x = x.wrapping_add(std::hint::black_box(i));
                                }
                                std::hint::black_box(x);
                                threads.lock().unwrap().insert(thread::current().id());
                            })
                        })
                        .collect();
                    for h in hs {
                        h.await.unwrap();
                    }
                })
                .await
                .unwrap();
            }
        });
        let distinct = threads.lock().unwrap().len();
        assert!(distinct >= 2, "{workers} workers: children ran on {distinct} thread(s) only");
    }
}

on_workers!(panicking_task_is_reported_and_runtime_keeps_working, |rt| {
    let h = rt.spawn(async {
        yield_now().await;
        panic!("task exploded");
    });
    let err = rt.block_on(h).unwrap_err();
    assert!(err.is_panic() && !err.is_cancelled() && !err.is_failed() && !err.is_interrupted());
    assert!(err.to_string().contains("task exploded"), "{err}");
    let payload = err.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"task exploded"));
    // Many more panics than workers: no worker died.
    let hs: Vec<_> = (0..50)
        .map(|i| {
            rt.spawn(async move {
                if i % 2 == 0 {
                    panic!("p{i}")
                }
                i
            })
        })
        .collect();
    let (panics, oks) = rt.block_on(async {
        let mut panics = 0;
        let mut oks = 0;
        for h in hs {
            match h.await {
                Ok(_) => oks += 1,
                Err(e) if e.is_panic() => panics += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        (panics, oks)
    });
    assert_eq!((panics, oks), (25, 25));
    assert_eq!(rt.block_on(rt.spawn(async { 5 })).unwrap(), 5);
});

on_workers!(panic_in_drop_of_output_is_contained, |rt| {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("drop of output panicked");
        }
    }
    // Detached: the runtime drops the output, catching the panic.
    drop(rt.spawn(async { PanicOnDrop }));
    assert_eq!(rt.block_on(rt.spawn(async { 1 })).unwrap(), 1);
});

on_workers!(detached_tasks_run_to_completion, |rt| {
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let done = done.clone();
        drop(rt.spawn(async move {
            yield_now().await;
            done.fetch_add(1, SeqCst);
        }));
    }
    rt.block_on(async {
        while done.load(SeqCst) < 100 {
            yield_now().await;
            thread::sleep(Duration::from_micros(50));
        }
    });
});

on_workers!(is_finished_and_id, |rt| {
    let (tx, rx) = oneshot::<()>();
    let h = rt.spawn(rx);
    let h2 = rt.spawn(async {});
    assert_ne!(h.id(), h2.id());
    assert!(!h.is_finished());
    tx.send(());
    while !h.is_finished() {
        thread::yield_now();
    }
    assert_eq!(rt.block_on(h).unwrap(), Some(()));
});

on_workers!(handle_current_inside_tasks, |rt| {
    let outer = rt.handle().clone();
    let same = rt.block_on(async move {
        let in_block_on = Handle::current();
        let in_task = spawn(async { Handle::current() }).await.unwrap();
        in_block_on.ptr_eq(&outer) && in_task.ptr_eq(&outer)
    });
    assert!(same);
});

#[test]
fn spawn_outside_a_runtime_panics_with_a_clear_message() {
    let err = std::panic::catch_unwind(|| drop(spawn(async {}))).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no trellis runtime"), "{msg}");
    assert!(Handle::try_current().is_none());
    let err = std::panic::catch_unwind(Handle::current).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no trellis runtime"), "{msg}");
}

#[test]
fn handle_enter_makes_spawn_work_on_a_plain_thread() {
    let rt = common::runtime(2);
    let handle = rt.handle().clone();
    let h = thread::spawn(move || {
        let _guard = handle.enter();
        spawn(async { 3 })
    })
    .join()
    .unwrap();
    assert_eq!(rt.block_on(h).unwrap(), 3);
}

on_workers!(
    /// `(&mut handle).await` after a pending poll still gets the output later.
    join_handle_is_reusable_by_mut_ref, |rt| {
    let (tx, rx) = oneshot::<u8>();
    let mut h = rt.spawn(async move { rx.await.unwrap() });
    rt.block_on(async {
        // Poll once by reference (it is pending), then complete it.
        let polled = futures::poll!(&mut h);
        assert!(polled.is_pending());
        tx.send(9);
        assert_eq!((&mut h).await.unwrap(), 9);
    });
});

//! `block_on` and `run`: results, nesting refused with a clear message.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use trellis_runtime::{run, spawn, spawn_blocking, Runtime};

fn panic_message(err: Box<dyn std::any::Any + Send>) -> String {
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn run_returns_the_output_and_shuts_down() {
    assert_eq!(run(async { spawn(async { 3 }).await.unwrap() + 1 }), 4);
}

on_workers!(nested_block_on_panics_with_a_clear_message, |rt| {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async { rt.block_on(async {}) })
    }))
    .unwrap_err();
    let msg = panic_message(err);
    assert!(msg.contains("already running a trellis runtime"), "{msg}");
    // The runtime is still usable afterwards.
    assert_eq!(rt.block_on(async { 2 }), 2);
});

on_workers!(block_on_inside_a_task_panics_in_that_task, |rt| {
    let other = common::runtime(1);
    let other_handle_rt = std::sync::Arc::new(other);
    let h = rt.spawn({
        let other = other_handle_rt.clone();
        async move { other.block_on(async { 1 }) }
    });
    let err = rt.block_on(h).unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("already running a trellis runtime"), "{err}");
});

on_workers!(run_inside_a_runtime_panics, |rt| {
    let h = rt.spawn(async { run(async { 1 }) });
    let err = rt.block_on(h).unwrap_err();
    assert!(err.to_string().contains("already running a trellis runtime"), "{err}");
});

on_workers!(block_on_is_allowed_on_blocking_threads, |rt| {
    let other = std::sync::Arc::new(common::runtime(1));
    let out = rt.block_on(async move {
        spawn_blocking(move || other.block_on(async { spawn(async { 10 }).await.unwrap() }))
            .await
            .unwrap()
    });
    assert_eq!(out, 10);
});

#[test]
fn many_runtimes_side_by_side() {
    let a = Runtime::builder().worker_threads(1).build().unwrap();
    let b = Runtime::builder().worker_threads(2).build().unwrap();
    // A task of `a` spawning onto `b` through b's handle goes to b's injector.
    let hb = b.handle().clone();
    let v = a.block_on(async move {
        let inner = spawn(async move { hb.spawn(async { 5 }).await.unwrap() });
        inner.await.unwrap()
    });
    assert_eq!(v, 5);
}

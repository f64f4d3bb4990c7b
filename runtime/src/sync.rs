//! The one door to concurrency primitives.
//!
//! Every atomic, lock, condition variable, `Arc`, `UnsafeCell`, thread-local and thread spawn in
//! trellis comes from this module. In a normal build it hands out `std` atomics and `parking_lot`
//! locks; under `--cfg loom` it hands out loom's instrumented versions, so the model checker sees
//! every synchronisation the runtime performs. Nothing else in the workspace names `std::sync`,
//! `parking_lot` or `loom` directly (enforced by `disallowed-types` in `clippy.toml`).
//!
//! The API is the `parking_lot` one (locks do not poison, `Condvar::wait` takes `&mut guard`);
//! the loom side is adapted to it. `UnsafeCell` follows loom's closure API (`with`, `with_mut`)
//! in both builds so that loom can check every access to cell contents.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::{Condvar, Mutex, RwLock};
    pub(crate) use std::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};
    }

    pub(crate) mod thread {
        pub(crate) use std::thread::{Builder, JoinHandle};
    }

    /// `std::cell::UnsafeCell` behind loom's closure API.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(data: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(data))
        }

        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Declares a thread-local with a `const` initialiser (no lazy-init check on access).
    macro_rules! thread_local_const {
        ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr;) => {
            ::std::thread_local!($(#[$attr])* $vis static $name: $t = const { $init });
        };
    }
    pub(crate) use thread_local_const;

    /// Marks a spin-wait iteration (a hint to the CPU; a yield point for loom).
    #[inline]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};
    }

    pub(crate) mod thread {
        pub(crate) use loom::thread::{Builder, JoinHandle};
    }

    /// loom's mutex with the `parking_lot` API (no poisoning).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Guard of [`Mutex`]; the `Option` lets [`Condvar::wait`] move the inner guard out and back.
    #[derive(Debug)]
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(data: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(data))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap()))
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().unwrap()
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard present outside Condvar::wait")
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard present outside Condvar::wait")
        }
    }

    /// loom's condition variable with the `parking_lot` API. Loom does not model time, so
    /// `wait_for` waits for a notification only: models must not depend on a timeout firing.
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    /// Result of [`Condvar::wait_for`] (never times out under loom).
    #[derive(Debug)]
    pub(crate) struct WaitTimeoutResult;

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            false
        }
    }

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard present");
            guard.0 = Some(self.0.wait(inner).unwrap());
        }

        pub(crate) fn wait_for<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _timeout: std::time::Duration,
        ) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult
        }

        pub(crate) fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }

        pub(crate) fn notify_all(&self) -> usize {
            self.0.notify_all();
            0
        }
    }

    /// loom's reader-writer lock with the `parking_lot` API.
    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(data: T) -> RwLock<T> {
            RwLock(loom::sync::RwLock::new(data))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap()
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap()
        }
    }

    macro_rules! thread_local_const {
        ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr;) => {
            ::loom::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        };
    }
    pub(crate) use thread_local_const;

    /// Marks a spin-wait iteration: under loom this must yield, or the model never terminates.
    #[inline]
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;

/// A `Waker` that calls `W::wake`. The reference count is a plain `std::sync::Arc` in every
/// build: it only keeps `W` alive and synchronises nothing that a loom model needs to see (the
/// synchronisation happens inside `W`, built from this module's primitives).
pub(crate) fn arc_waker<W: std::task::Wake + Send + Sync + 'static>(w: W) -> std::task::Waker {
    std::task::Waker::from(std::sync::Arc::new(w))
}

/// Hands out process-unique numbers (task ids) in blocks, so that spawning does not touch a
/// shared counter on every call. Uniqueness is all that is needed, no ordering with anything
/// else, so the counter stays a plain `std` atomic even under loom (it is invisible to models).
pub(crate) fn next_unique_id() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    const BLOCK: u64 = 1024;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    std::thread_local! {
        static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    RANGE.with(|range| {
        let (mut next, mut end) = range.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            end = next + BLOCK;
        }
        range.set((next + 1, end));
        next
    })
}

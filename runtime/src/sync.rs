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
    //! Thin wrappers rather than re-exports: `clippy.toml` forbids naming the std/parking_lot
    //! types anywhere, and the lint sees through re-exports, so the facade owns its types.

    pub(crate) use parking_lot::{
        MutexGuard, RwLockReadGuard, RwLockWriteGuard, WaitTimeoutResult,
    };

    /// `std::sync::Arc` (only the methods trellis uses).
    #[derive(Debug, Default)]
    pub(crate) struct Arc<T>(std::sync::Arc<T>);

    impl<T> Arc<T> {
        #[inline]
        pub(crate) fn new(value: T) -> Arc<T> {
            Arc(std::sync::Arc::new(value))
        }

        #[inline]
        pub(crate) fn ptr_eq(this: &Arc<T>, other: &Arc<T>) -> bool {
            std::sync::Arc::ptr_eq(&this.0, &other.0)
        }
    }

    impl<T> Clone for Arc<T> {
        #[inline]
        fn clone(&self) -> Arc<T> {
            Arc(self.0.clone())
        }
    }

    impl<T> std::ops::Deref for Arc<T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            &self.0
        }
    }

    /// `parking_lot::Mutex`.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> Mutex<T> {
            Mutex(parking_lot::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }

        #[inline]
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }

        #[inline]
        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }

    /// `parking_lot::Condvar`.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        #[inline]
        pub(crate) const fn new() -> Condvar {
            Condvar(parking_lot::Condvar::new())
        }

        #[inline]
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            self.0.wait(guard);
        }

        #[inline]
        pub(crate) fn wait_for<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            timeout: std::time::Duration,
        ) -> WaitTimeoutResult {
            self.0.wait_for(guard, timeout)
        }

        #[inline]
        pub(crate) fn notify_one(&self) -> bool {
            self.0.notify_one()
        }

        #[inline]
        pub(crate) fn notify_all(&self) -> usize {
            self.0.notify_all()
        }
    }

    /// `parking_lot::RwLock`.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(parking_lot::RwLock<T>);

    impl<T> RwLock<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> RwLock<T> {
            RwLock(parking_lot::RwLock::new(value))
        }

        #[inline]
        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read()
        }

        #[inline]
        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write()
        }
    }

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{fence, Ordering};

        macro_rules! atomic_wrapper {
            ($(#[$doc:meta])* $name:ident, $std:ident, $int:ty) => {
                $(#[$doc])*
                #[derive(Debug, Default)]
                #[repr(transparent)]
                pub(crate) struct $name(std::sync::atomic::$std);

                #[allow(dead_code)]
                impl $name {
                    #[inline]
                    pub(crate) const fn new(v: $int) -> $name {
                        $name(std::sync::atomic::$std::new(v))
                    }
                    #[inline]
                    pub(crate) fn load(&self, order: Ordering) -> $int {
                        self.0.load(order)
                    }
                    #[inline]
                    pub(crate) fn store(&self, v: $int, order: Ordering) {
                        self.0.store(v, order)
                    }
                    #[inline]
                    pub(crate) fn swap(&self, v: $int, order: Ordering) -> $int {
                        self.0.swap(v, order)
                    }
                    #[inline]
                    pub(crate) fn compare_exchange(
                        &self,
                        current: $int,
                        new: $int,
                        success: Ordering,
                        failure: Ordering,
                    ) -> Result<$int, $int> {
                        self.0.compare_exchange(current, new, success, failure)
                    }
                    #[inline]
                    pub(crate) fn compare_exchange_weak(
                        &self,
                        current: $int,
                        new: $int,
                        success: Ordering,
                        failure: Ordering,
                    ) -> Result<$int, $int> {
                        self.0.compare_exchange_weak(current, new, success, failure)
                    }
                    #[inline]
                    pub(crate) fn fetch_or(&self, v: $int, order: Ordering) -> $int {
                        self.0.fetch_or(v, order)
                    }
                    #[inline]
                    pub(crate) fn fetch_and(&self, v: $int, order: Ordering) -> $int {
                        self.0.fetch_and(v, order)
                    }
                    #[inline]
                    pub(crate) fn fetch_xor(&self, v: $int, order: Ordering) -> $int {
                        self.0.fetch_xor(v, order)
                    }
                }
            };
        }

        macro_rules! atomic_int_ops {
            ($name:ident, $int:ty) => {
                #[allow(dead_code)]
                impl $name {
                    #[inline]
                    pub(crate) fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                        self.0.fetch_add(v, order)
                    }
                    #[inline]
                    pub(crate) fn fetch_sub(&self, v: $int, order: Ordering) -> $int {
                        self.0.fetch_sub(v, order)
                    }
                }
            };
        }

        atomic_wrapper!(
            /// `std::sync::atomic::AtomicUsize`.
            AtomicUsize, AtomicUsize, usize
        );
        atomic_int_ops!(AtomicUsize, usize);
        atomic_wrapper!(
            /// `std::sync::atomic::AtomicU32`.
            AtomicU32, AtomicU32, u32
        );
        atomic_int_ops!(AtomicU32, u32);
        atomic_wrapper!(
            /// `std::sync::atomic::AtomicU64`.
            AtomicU64, AtomicU64, u64
        );
        atomic_int_ops!(AtomicU64, u64);
        atomic_wrapper!(
            /// `std::sync::atomic::AtomicBool`.
            AtomicBool, AtomicBool, bool
        );
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
        pub(crate) use loom::sync::atomic::{
            fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
        };
    }

    pub(crate) mod thread {
        pub(crate) use loom::thread::{Builder, JoinHandle};
    }

    /// loom's mutex with the `parking_lot` API (no poisoning).
    ///
    /// `try_lock` does not use loom's own: that one can report a deadlock that is not there
    /// (tokio-rs/loom#376): a thread about to `try_lock` is marked blocked when another thread
    /// takes the mutex, and stays blocked until it is released, which may be never (the
    /// driver's waiter keeps its lock while it waits in the poller for that very thread). So
    /// `try_lock` is decided by a flag of its own, and then takes the mutex, free by then. A
    /// mutex is therefore taken either only with `try_lock` or only with `lock` (the driver's
    /// waiter lock is the one user of `try_lock`), and a `try_lock` guard is not used with a
    /// `Condvar`.
    #[derive(Debug)]
    pub(crate) struct Mutex<T> {
        inner: loom::sync::Mutex<T>,
        try_held: loom::sync::atomic::AtomicBool,
    }

    /// Guard of [`Mutex`]; the `Option` lets [`Condvar::wait`] move the inner guard out and back.
    #[derive(Debug)]
    pub(crate) struct MutexGuard<'a, T> {
        guard: Option<loom::sync::MutexGuard<'a, T>>,
        /// The `try_lock` flag, for a guard from `try_lock`: cleared after the mutex is released.
        try_held: Option<&'a loom::sync::atomic::AtomicBool>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(data: T) -> Mutex<T> {
            Mutex {
                inner: loom::sync::Mutex::new(data),
                try_held: loom::sync::atomic::AtomicBool::new(false),
            }
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard { guard: Some(self.inner.lock().unwrap()), try_held: None }
        }

        pub(crate) fn into_inner(self) -> T {
            self.inner.into_inner().unwrap()
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            use loom::sync::atomic::Ordering::SeqCst;
            if self.try_held.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
                return None;
            }
            // The previous holder released the mutex before it cleared the flag: never blocks.
            let guard = self.inner.lock().unwrap();
            Some(MutexGuard { guard: Some(guard), try_held: Some(&self.try_held) })
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        fn drop(&mut self) {
            drop(self.guard.take());
            if let Some(flag) = self.try_held {
                flag.store(false, loom::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.guard.as_ref().expect("guard present outside Condvar::wait")
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_mut().expect("guard present outside Condvar::wait")
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
            let inner = guard.guard.take().expect("guard present");
            guard.guard = Some(self.0.wait(inner).unwrap());
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

/// The lock of the cancellation status tree (`cancel::node`): one per process, so a cancel
/// never races a link or a close half-way. Under loom a lazy static, reset per execution.
#[cfg(not(loom))]
pub(crate) fn tree_lock() -> MutexGuard<'static, ()> {
    static TREE: Mutex<()> = Mutex::new(());
    TREE.lock()
}

/// See the non-loom version.
#[cfg(loom)]
pub(crate) fn tree_lock() -> MutexGuard<'static, ()> {
    loom::lazy_static! {
        static ref TREE: Mutex<()> = Mutex::new(());
    }
    TREE.lock()
}

/// A `Waker` that calls `W::wake`. The reference count is a plain `std::sync::Arc` in every
/// build: it only keeps `W` alive and synchronises nothing that a loom model needs to see (the
/// synchronisation happens inside `W`, built from this module's primitives).
pub(crate) fn arc_waker<W: std::task::Wake + Send + Sync + 'static>(w: W) -> std::task::Waker {
    std::task::Waker::from(std::sync::Arc::new(w))
}

/// The process-wide origin of `time::Instant` (the system's monotonic clock when first asked).
/// A plain `OnceLock` in every build: it is set once and synchronises nothing a model needs.
pub(crate) fn monotonic_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

/// Hands out process-unique numbers (task ids) in blocks, so that spawning does not touch a
/// shared counter on every call. Uniqueness is all that is needed, no ordering with anything
/// else, so the counter stays a plain `std` atomic even under loom (it is invisible to models).
#[cfg(not(loom))]
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

/// Under loom, ids must restart with every execution: loom replays executions and requires
/// each to be deterministic, and a task's id picks its owned-task registry shard (a different
/// mutex). So the counter is a loom lazy static (reset per execution) holding a plain atomic
/// (invisible to loom: it orders nothing, and loom runs one thread at a time).
#[cfg(loom)]
pub(crate) fn next_unique_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};

    loom::lazy_static! {
        static ref NEXT: AtomicU64 = AtomicU64::new(1);
    }
    NEXT.fetch_add(1, Ordering::Relaxed)
}

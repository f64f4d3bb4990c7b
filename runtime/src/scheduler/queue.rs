//! Run queues: `crossbeam-deque` in normal builds, a loom-visible stand-in under `--cfg loom`.
//!
//! crossbeam's deques (Chase-Lev work-stealing deques and a segmented injector) are invisible
//! to loom, so under the loom cfg this module swaps in small lock-based queues with the same
//! interface and FIFO behaviour. The scheduler only uses the subset of the API below.

#[cfg(not(loom))]
pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};

#[cfg(loom)]
pub(crate) use self::loom_queue::{Injector, Steal, Stealer, Worker};

#[cfg(loom)]
mod loom_queue {
    use std::collections::VecDeque;

    use crate::sync::{Arc, Mutex};

    /// Outcome of a steal (crossbeam also returns `Retry` under contention; the stand-in never
    /// does, since its lock makes every steal definite).
    #[allow(dead_code)]
    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        Retry,
    }

    /// The owner's end of a worker queue (FIFO: push back, pop front, stealers take from front).
    pub(crate) struct Worker<T> {
        inner: Arc<Mutex<VecDeque<T>>>,
    }

    pub(crate) struct Stealer<T> {
        inner: Arc<Mutex<VecDeque<T>>>,
    }

    pub(crate) struct Injector<T> {
        inner: Mutex<VecDeque<T>>,
    }

    impl<T> Worker<T> {
        pub(crate) fn new_fifo() -> Worker<T> {
            Worker { inner: Arc::new(Mutex::new(VecDeque::new())) }
        }
        pub(crate) fn push(&self, t: T) {
            self.inner.lock().push_back(t);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.inner.lock().pop_front()
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.inner.lock().is_empty()
        }
        pub(crate) fn len(&self) -> usize {
            self.inner.lock().len()
        }
        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer { inner: self.inner.clone() }
        }
    }

    impl<T> Stealer<T> {
        pub(crate) fn is_empty(&self) -> bool {
            self.inner.lock().is_empty()
        }
        /// Moves about half of the victim's tasks into `dest` and returns one more. As in
        /// crossbeam, the batch is in neither queue while it moves (the source is unlocked
        /// before the destination is locked): keep that window, the sleep protocol must cope
        /// with it (rule 1 of `idle.rs`).
        pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
            let mut src = self.inner.lock();
            let Some(first) = src.pop_front() else { return Steal::Empty };
            let n = src.len() / 2;
            let batch: Vec<T> = src.drain(..n).collect();
            drop(src);
            let mut dst = dest.inner.lock();
            dst.extend(batch);
            Steal::Success(first)
        }
    }

    impl<T> Injector<T> {
        pub(crate) fn new() -> Injector<T> {
            Injector { inner: Mutex::new(VecDeque::new()) }
        }
        pub(crate) fn push(&self, t: T) {
            self.inner.lock().push_back(t);
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.inner.lock().is_empty()
        }
        pub(crate) fn steal(&self) -> Steal<T> {
            match self.inner.lock().pop_front() {
                Some(t) => Steal::Success(t),
                None => Steal::Empty,
            }
        }
        pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
            let mut src = self.inner.lock();
            let Some(first) = src.pop_front() else { return Steal::Empty };
            let n = src.len().min(2);
            let batch: Vec<T> = src.drain(..n).collect();
            drop(src);
            dest.inner.lock().extend(batch);
            Steal::Success(first)
        }
    }
}

//! Completed tasks handed back to their home worker, so that their memory is freed by the
//! thread that allocated it.
//!
//! A task is allocated by the worker that spawns it (its *home*) and registered in that
//! worker's registry shard. A worker that completes a task of another home releases it from
//! the registry in a batch (`worker.rs`) and then, instead of dropping the last references
//! itself, hands them to the home worker's [`Returned`], which the home worker empties (drops)
//! whenever it releases its own batch, at the latest before it sleeps. With glibc, freeing a
//! chunk that another thread allocated takes that thread's arena lock, which the owner needs
//! for its own allocations and frees too: under a burst of cross-worker completions (a
//! nursery's children cancelled at once) the two workers would queue on each other's locks.
//!
//! # Protocol (one mutex)
//!
//! - A peer hands a batch back under the lock unless the home worker has closed it; a closed
//!   one refuses the batch and the peer drops it itself.
//! - The home worker takes what was handed back under the lock and drops it outside.
//! - When the home worker stops, it closes under the lock and takes what is left, in the
//!   same critical section, so a batch is either taken then or refused: never stranded.
//!
//! A worker asleep keeps what was handed to it until it wakes: finished tasks' cells (their
//! futures and outputs were dropped when they finished), not live work.

use crate::sync::Mutex;

#[cfg(all(test, loom))]
mod loom_models;

pub(super) struct Returned<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    closed: bool,
    items: Vec<T>,
}

impl<T> Returned<T> {
    pub(super) fn new() -> Returned<T> {
        Returned { state: Mutex::new(State { closed: false, items: Vec::new() }) }
    }

    /// Hands `batch` to the home worker; returns it (to be dropped by the caller) if the home
    /// worker has stopped.
    #[must_use = "a refused batch must be dropped by the caller"]
    pub(super) fn hand_back(&self, batch: Vec<T>) -> Vec<T> {
        let mut state = self.state.lock();
        if state.closed {
            return batch;
        }
        if state.items.is_empty() {
            state.items = batch;
        } else {
            state.items.extend(batch);
        }
        Vec::new()
    }

    /// What was handed back so far, for the home worker to drop.
    pub(super) fn take(&self) -> Vec<T> {
        std::mem::take(&mut self.state.lock().items)
    }

    /// The home worker stops: what was handed back so far; later batches are refused.
    pub(super) fn close(&self) -> Vec<T> {
        let mut state = self.state.lock();
        state.closed = true;
        std::mem::take(&mut state.items)
    }
}

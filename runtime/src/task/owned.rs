//! The owned-task registry: every live task of a scheduler, so shutdown can find them all.
//!
//! A task is *bound* when spawned and *removed* when it completes; the registry's entry holds
//! one reference (task rule 1), which is what keeps an idle task alive while nobody else refers
//! to it (a task waiting on a channel whose sender is another idle task, say) and what lets
//! shutdown cancel and drop it. The registry is sharded by task id, each shard a slab under its
//! own lock, so spawns and completions on different workers rarely meet on the same lock.
//!
//! # Closing
//!
//! [`close`](OwnedTasks::close) marks every shard closed under its lock: from then on `bind`
//! fails, so a spawn racing shutdown gets its task back and completes it as cancelled itself
//! instead of adding it to a registry that is being emptied. Removal is unaffected; when a
//! closed registry becomes empty, [`wait_empty`](OwnedTasks::wait_empty) is woken.

use std::time::Instant;

use super::{RawTask, Task};
use crate::sync::{Condvar, Mutex};

pub(crate) struct OwnedTasks<S: 'static> {
    shards: Box<[Mutex<Shard<S>>]>,
    /// Signalled when a closed shard becomes empty.
    drained: Mutex<()>,
    drained_cv: Condvar,
}

struct Shard<S: 'static> {
    closed: bool,
    slots: Vec<Option<Task<S>>>,
    free: Vec<u32>,
    len: usize,
}

impl<S: 'static> OwnedTasks<S> {
    /// A registry with `shards` shards (rounded up to a power of two).
    pub(crate) fn new(shards: usize) -> OwnedTasks<S> {
        let n = shards.max(1).next_power_of_two();
        OwnedTasks {
            shards: (0..n)
                .map(|_| {
                    Mutex::new(Shard { closed: false, slots: Vec::new(), free: Vec::new(), len: 0 })
                })
                .collect(),
            drained: Mutex::new(()),
            drained_cv: Condvar::new(),
        }
    }

    fn shard_of(&self, raw: RawTask) -> &Mutex<Shard<S>> {
        let index = raw.header().id().as_u64() as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Registers a new task; gives it back if the registry is closed.
    pub(crate) fn bind(&self, task: Task<S>) -> Result<(), Task<S>> {
        let mut shard = self.shard_of(task.raw()).lock();
        if shard.closed {
            return Err(task);
        }
        let slot = match shard.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(shard.slots.len())
                    .expect("more than 4 billion live tasks in one shard");
                shard.slots.push(None);
                slot
            }
        };
        task.header().set_owned_slot(slot);
        shard.slots[slot as usize] = Some(task);
        shard.len += 1;
        Ok(())
    }

    /// Removes a completed task, returning the registry's reference (`None` if shutdown
    /// already took it out).
    pub(crate) fn remove(&self, raw: RawTask) -> Option<Task<S>> {
        let mut shard = self.shard_of(raw).lock();
        let slot = raw.header().owned_slot() as usize;
        let entry = shard.slots.get_mut(slot)?;
        if entry.as_ref().is_none_or(|t| t.raw() != raw) {
            return None;
        }
        let task = entry.take();
        shard.free.push(slot as u32);
        shard.len -= 1;
        let now_drained = shard.closed && shard.len == 0;
        drop(shard);
        if now_drained {
            let _guard = self.drained.lock();
            self.drained_cv.notify_all();
        }
        task
    }

    /// Refuses further `bind`s (see the module doc).
    pub(crate) fn close(&self) {
        for shard in self.shards.iter() {
            shard.lock().closed = true;
        }
    }

    /// New references to every registered task (to cancel them outside the locks).
    pub(crate) fn snapshot(&self) -> Vec<Task<S>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(shard.slots.iter().flatten().map(Task::clone_ref));
        }
        out
    }

    /// Takes every registered task out (with the registry's references).
    pub(crate) fn drain(&self) -> Vec<Task<S>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            out.extend(shard.slots.drain(..).flatten());
            shard.free.clear();
            shard.len = 0;
        }
        out
    }

    /// Number of registered tasks.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a closed registry is empty or `deadline` passes; true if empty.
    pub(crate) fn wait_empty(&self, deadline: Instant) -> bool {
        let mut guard = self.drained.lock();
        loop {
            if self.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.drained_cv.wait_for(&mut guard, deadline - now);
        }
    }
}

//! The owned-task registry: every live task of a scheduler, so shutdown can find them all.
//!
//! A task is *bound* when spawned and *removed* when it completes; the registry's entry holds
//! one reference (task rule 1), which is what keeps an idle task alive while nobody else refers
//! to it (a task waiting on a channel whose sender is another idle task, say) and what lets
//! shutdown cancel and drop it.
//!
//! # Shards
//!
//! The registry is sharded, each shard a slab under its own lock. Each worker has a *home*
//! shard: tasks it spawns are bound there, so a worker spawning in a loop keeps one shard hot in
//! its own cache. Spawns from other threads go to the *remote* shards, chosen by task id. A
//! task records its shard and slot, so removal finds it directly. Workers remove the tasks
//! they complete in batches (`remove_batch`: one lock per shard per batch), so a task spawned
//! on one worker and completed on another rarely costs a contended lock of its own.
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
    home_shards: usize,
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

impl<S: 'static> Shard<S> {
    fn new() -> Shard<S> {
        Shard { closed: false, slots: Vec::new(), free: Vec::new(), len: 0 }
    }

    /// Takes `raw` out of this shard if it is still there.
    fn take(&mut self, raw: RawTask, slot: usize) -> Option<Task<S>> {
        let entry = self.slots.get_mut(slot)?;
        if entry.as_ref().is_none_or(|t| t.raw() != raw) {
            return None;
        }
        let task = entry.take();
        self.free.push(slot as u32);
        self.len -= 1;
        task
    }
}

impl<S: 'static> OwnedTasks<S> {
    /// A registry with one home shard per worker plus `remote_shards` (at least one).
    pub(crate) fn new(workers: usize, remote_shards: usize) -> OwnedTasks<S> {
        let n = workers + remote_shards.max(1);
        OwnedTasks {
            shards: (0..n).map(|_| Mutex::new(Shard::new())).collect(),
            home_shards: workers,
            drained: Mutex::new(()),
            drained_cv: Condvar::new(),
        }
    }

    /// Registers a new task, in worker `home`'s shard if given; gives the task back if the
    /// registry is closed.
    pub(crate) fn bind(&self, task: Task<S>, home: Option<usize>) -> Result<(), Task<S>> {
        let index = match home {
            Some(worker) => worker,
            None => {
                let remote = self.shards.len() - self.home_shards;
                self.home_shards + (task.id().as_u64() as usize % remote)
            }
        };
        let mut shard = self.shards[index].lock();
        if shard.closed {
            return Err(task);
        }
        let slot = match shard.free.pop() {
            Some(slot) => slot as usize,
            None => {
                assert!(shard.slots.len() < u32::MAX as usize, "more than 4 billion live tasks");
                shard.slots.push(None);
                shard.slots.len() - 1
            }
        };
        task.header().set_owned_location(index, slot);
        shard.slots[slot] = Some(task);
        shard.len += 1;
        Ok(())
    }

    /// Removes a completed task, returning the registry's reference (`None` if shutdown
    /// already took it out).
    pub(crate) fn remove(&self, raw: RawTask) -> Option<Task<S>> {
        let (index, slot) = raw.header().owned_location();
        // A task whose bind was refused (shutdown) has no location.
        let mut shard = self.shards.get(index)?.lock();
        let task = shard.take(raw, slot);
        let now_drained = shard.closed && shard.len == 0;
        drop(shard);
        if now_drained {
            self.notify_drained();
        }
        task
    }

    /// Removes a batch of completed tasks (each `tasks[i]` a reference the caller holds),
    /// locking each shard once; returns the registry's references, in the same order.
    pub(crate) fn remove_batch(&self, tasks: &[Task<S>]) -> Vec<Option<Task<S>>> {
        let mut order: Vec<usize> = (0..tasks.len()).collect();
        order.sort_unstable_by_key(|&i| tasks[i].header().owned_location().0);
        let mut out: Vec<Option<Task<S>>> = (0..tasks.len()).map(|_| None).collect();
        let mut drained = false;
        let mut i = 0;
        while i < order.len() {
            let index = tasks[order[i]].header().owned_location().0;
            let Some(shard) = self.shards.get(index) else {
                // Never bound (refused at shutdown): nothing to remove. Sorted last.
                break;
            };
            let mut shard = shard.lock();
            while let Some(&k) = order.get(i) {
                let (shard_of_k, slot) = tasks[k].header().owned_location();
                if shard_of_k != index {
                    break;
                }
                out[k] = shard.take(tasks[k].raw(), slot);
                i += 1;
            }
            drained |= shard.closed && shard.len == 0;
        }
        if drained {
            self.notify_drained();
        }
        out
    }

    fn notify_drained(&self) {
        let _guard = self.drained.lock();
        self.drained_cv.notify_all();
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

    /// Number of registered tasks (including completed ones a worker has not yet released).
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

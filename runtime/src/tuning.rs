//! Every tunable constant of the runtime, in one place, each with its normal value and the small
//! value the loom models use (a loom model explores every interleaving, so the constants that
//! bound loops and batch sizes must be tiny there).

use std::time::Duration;

macro_rules! tunable {
    ($(#[$doc:meta])* $name:ident: $t:ty = $normal:expr, loom: $loom:expr;) => {
        $(#[$doc])*
        #[cfg(not(loom))]
        pub(crate) const $name: $t = $normal;
        $(#[$doc])*
        #[cfg(loom)]
        pub(crate) const $name: $t = $loom;
    };
}

tunable! {
    /// Every this many scheduler ticks a worker takes its next task from the global injector
    /// before its local queue, so that remotely spawned or woken tasks are not starved by a busy
    /// local queue (tokio uses 61, a prime, so it does not beat with other periods).
    GLOBAL_QUEUE_INTERVAL: u32 = 61, loom: 3;
}

tunable! {
    /// Every this many scheduler ticks a busy worker polls the driver without blocking (if
    /// anything is registered or a timer is due), so I/O and timers progress while every
    /// worker is busy.
    EVENT_INTERVAL: u32 = 61, loom: 2;
}

tunable! {
    /// At most this many tasks run in a row from the LIFO slot before the slot's task goes to
    /// the back of the local queue: two tasks waking each other cannot starve the rest.
    MAX_LIFO_POLLS_IN_A_ROW: u32 = 3, loom: 1;
}

tunable! {
    /// Cooperative budget: trellis operations a task may complete in one poll before they start
    /// returning `Pending` (after waking the task) so that the task yields to its neighbours.
    TASK_BUDGET: u8 = 128, loom: 2;
}

tunable! {
    /// A cancelled task whose poll ended `Pending` but already woken again (by itself, e.g. a
    /// yield, or by anyone else) is given at most this many extra polls over its whole life
    /// before the root drops it anyway (DESIGN.md 3.10: a future that keeps yielding while
    /// cancelled must still end). Stricter than "in a row", and simpler.
    MAX_SELF_WAKES_WHILE_CANCELLED: u8 = 4, loom: 1;
}

tunable! {
    /// Default upper bound on blocking-pool threads.
    DEFAULT_MAX_BLOCKING_THREADS: usize = 512, loom: 1;
}

tunable! {
    /// A blocking-pool thread with no work for this long exits (it is "reaped").
    BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(10), loom: Duration::from_secs(10);
}

tunable! {
    /// How long dropping a runtime waits for cancelled tasks to finish their cleanup before it
    /// drops whatever is left (`Runtime::shutdown_timeout` chooses its own).
    DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5), loom: Duration::from_secs(5);
}

tunable! {
    /// Shutdown waits at least this long for idle workers to exit, even when the grace period
    /// is already spent.
    MIN_WORKER_JOIN: Duration = Duration::from_millis(100), loom: Duration::from_millis(100);
}

tunable! {
    /// Shards of the owned-task registry for tasks spawned from outside the workers (each
    /// worker has a home shard of its own besides).
    REMOTE_OWNED_SHARDS: usize = 4, loom: 1;
}

tunable! {
    /// A worker releases the tasks it completed from the registry in batches of this size (and
    /// whenever it is about to sleep), one lock per shard per batch.
    RELEASE_BATCH: usize = 64, loom: 2;
}

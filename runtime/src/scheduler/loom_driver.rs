//! Loom models of the driver's parking protocol (`driver.rs` rules 1-7) on the real scheduler:
//! who waits in the poller and how it is woken (a push from outside, an I/O event), and, with
//! virtual time, the decision to jump the clock (rule 6) and its re-evaluation whenever a
//! participant goes idle (rule 7).
//!
//! Under loom the OS poller is a fake (`io/poller.rs`): `inject` models an OS event, and a wait
//! with any timeout but zero lasts until an event or a notification (loom has no time). So
//! real-time timers never fire here; the timer models use virtual time, where the clock moves
//! only by the waiter's jump.
//!
//! As in `loom_models`, each model waits for its outcome before it shuts the runtime down
//! (shutdown wakes everything and would hide a lost wake-up). A lost wake-up of a worker, of the
//! waiter, or of the clock leaves every thread blocked, which loom reports as a deadlock. The
//! virtual-time models also check *when* the clock moved, against what the contract promises
//! (DESIGN.md 2, "Time"): never while a worker, a `block_on` thread or a blocking job has work
//! in hand, including a wake it has not acted on yet; a wake from a foreign thread only counts
//! once something orders it before a participant's own step (it is "not waited for").
//!
//! Two workers contend for the waiter lock with `try_lock`, which loom itself can report as a
//! deadlock that is not there (tokio-rs/loom#376); the `sync` facade works around it.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --profile loom -p trellis-runtime --lib loom_`.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use loom::thread;

use super::loom_models::Event;
use super::Parker;
use crate::io::poller::PollEvent;
use crate::io::scheduled_io::ScheduledIo;
use crate::io::Direction;
use crate::sync::atomic::{AtomicBool, Ordering::SeqCst};
use crate::sync::{arc_waker, Arc, Condvar, Mutex};
use crate::time::{sleep, Instant};
use crate::Runtime;

const SECOND: Duration = Duration::from_secs(1);

fn runtime(workers: usize, virtual_time: bool) -> Runtime {
    Runtime::builder()
        .worker_threads(workers)
        .virtual_time(virtual_time)
        .build()
        .expect("loom threads start")
}

/// Explores `model` once on the real clock and once on virtual time: with virtual time the
/// waiter's turn polls the poller twice (a zero-timeout poll, then the blocking wait), which is
/// where a notification can be swallowed (commit fc8dd2c).
fn on_both_clocks(model: fn(bool)) {
    for virtual_time in [false, true] {
        loom::model(move || model(virtual_time));
    }
}

/// Waits until its registration is readable (`ScheduledIo` rule 3), as an I/O future does.
struct Readable {
    io: Arc<ScheduledIo>,
    slot: Option<usize>,
}

impl Future for Readable {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.io.poll_readiness(Direction::Read, &mut this.slot, cx).map(drop)
    }
}

impl Drop for Readable {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            drop(self.io.forget_waiter(Direction::Read, slot));
        }
    }
}

fn readable_event(key: usize) -> PollEvent {
    PollEvent { key, readable: true, writable: false, closed: false }
}

/// Unparks a [`Parker`] when woken.
struct Unpark(Arc<Parker>);

// `Wake` is implemented on `std::sync::Arc`; see `sync::arc_waker`.
#[allow(clippy::disallowed_types)]
impl Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark(None);
    }
}

/// Drives `future` on the calling thread as a foreign thread would (its own executor, not the
/// runtime's `block_on`: the thread is no participant of the runtime).
fn poll_on_foreign_thread<F: Future>(future: F) -> F::Output {
    let parker = Arc::new(Parker::new());
    let waker = arc_waker(Unpark(parker.clone()));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        parker.park(|| {});
    }
}

// ---- the poller handoff (rules 1, 2, 4) ---------------------------------------------------

/// Rule 2, one worker: it always waits in the poller when it parks (nobody else takes the
/// waiter lock). A third thread spawns a task (an injector push) whose run ends the main
/// thread's `block_on`, so once the main thread's own rule-7 notification is spent, only the
/// push's `Driver::wake` can end the waiter's turn. It lands before the wait, during it, or
/// before the zero-timeout poll that precedes the wait, which swallowed it before fc8dd2c
/// (the turn must then see its parker `NOTIFIED` and return). Virtual time only: on the real
/// clock this is `loom_models::spawn_from_other_thread_one_worker`.
#[test]
fn waiter_woken_by_spawn_from_foreign_thread() {
    loom::model(|| {
        let rt = runtime(1, true);
        let ran = Event::new();
        let spawner = {
            let (handle, ran) = (rt.handle().clone(), ran.clone());
            thread::spawn(move || drop(handle.spawn(async move { ran.set() })))
        };
        rt.block_on(ran.wait());
        spawner.join().unwrap();
        drop(rt);
    });
}

/// Rules 1 and 2, two workers: one of them waits in the poller and the other on its condvar,
/// whichever got the waiter lock first. A task spawned from the main thread unparks one of the
/// sleepers (`Parker::unpark`: a condvar signal or `Driver::wake`) and is never lost; then the
/// main thread waits for it in `block_on`. Virtual time only (the waiter's turn waits twice):
/// on the real clock this is `loom_models::foreign_spawn_two_workers`.
#[test]
fn foreign_push_reaches_either_sleeper() {
    loom::model(|| {
        let rt = runtime(2, true);
        let join = rt.spawn(async { 7 });
        assert_eq!(rt.block_on(join).unwrap(), 7);
        drop(rt);
    });
}

/// Rule 4: a task waits for a registration to become readable; a third thread injects the OS
/// event while the worker runs the task, parks, or waits in the poller. The waiter applies the
/// event, the task is woken into the waiter's own queue, the worker leaves the sleepers and
/// runs it. An event that arrives while nobody waits stays in the poller for the next wait.
#[test]
fn io_event_wakes_task_while_worker_parked() {
    on_both_clocks(|virtual_time| {
        let rt = runtime(1, virtual_time);
        let reactor = &rt.handle().shared.driver.reactor;
        let stdin = std::io::stdin();
        // SAFETY: the registration is removed below, and stdin is never closed meanwhile.
        let registered = unsafe { reactor.register(stdin.as_fd()) }.expect("the fake registers");
        let task = {
            let io = registered.io.clone();
            rt.spawn(Readable { io, slot: None })
        };
        let injector = {
            let (handle, key) = (rt.handle().clone(), registered.key());
            thread::spawn(move || {
                handle.shared.driver.reactor.poller().inject(readable_event(key));
            })
        };
        rt.block_on(task).unwrap();
        injector.join().unwrap();
        reactor.deregister(&registered, stdin.as_fd()).unwrap();
        drop(rt);
    });
}

/// Rules 1 and 4, two workers: a task waits for readability while the main thread injects the
/// event and then waits in `block_on`. Whichever worker waits in the poller (the other one on
/// its condvar, or running the task) applies the event; the task may also find the fd ready at
/// its first poll. The event is never lost and the task runs.
#[test]
fn io_event_two_workers() {
    on_both_clocks(|virtual_time| {
        let rt = runtime(2, virtual_time);
        let reactor = &rt.handle().shared.driver.reactor;
        let stdin = std::io::stdin();
        // SAFETY: the registration is removed below, and stdin is never closed meanwhile.
        let registered = unsafe { reactor.register(stdin.as_fd()) }.expect("the fake registers");
        let task = {
            let io = registered.io.clone();
            rt.spawn(Readable { io, slot: None })
        };
        reactor.poller().inject(readable_event(registered.key()));
        rt.block_on(task).unwrap();
        reactor.deregister(&registered, stdin.as_fd()).unwrap();
        drop(rt);
    });
}

// ---- virtual time: the jump (rule 6) ------------------------------------------------------

/// The `block_on` thread sleeps: it registers the timer (waking the waiter if it is already
/// parked), then parks and, being the last participant to go idle, wakes the waiter (rule 7),
/// which finds the runtime idle and jumps the clock exactly to the deadline.
#[test]
fn virtual_sleep_in_block_on() {
    loom::model(|| {
        let rt = runtime(1, true);
        let elapsed = rt.block_on(async {
            let start = Instant::now();
            sleep(SECOND).await.unwrap();
            Instant::now() - start
        });
        assert_eq!(elapsed, SECOND);
        drop(rt);
    });
}

/// A task sleeps on one of two workers while the `block_on` thread waits for it. Whichever
/// worker runs it, the other may be the waiter: then the task's worker parks on its condvar,
/// and that is what makes the runtime idle; its "now idle" hook wakes the waiter (rule 7),
/// which jumps the clock exactly to the deadline.
#[test]
fn virtual_sleep_in_task_two_workers() {
    loom::model(|| {
        let rt = runtime(2, true);
        let task = rt.spawn(async {
            let start = Instant::now();
            sleep(SECOND).await.unwrap();
            Instant::now() - start
        });
        assert_eq!(rt.block_on(task).unwrap(), SECOND);
        drop(rt);
    });
}

/// An idle registration does not stop the jump (rule 6): a task waits for I/O that never
/// comes while the `block_on` thread sleeps; the zero-timeout poll finds no event and the
/// clock jumps.
#[test]
fn idle_socket_does_not_stop_the_jump() {
    loom::model(|| {
        let rt = runtime(1, true);
        let reactor = &rt.handle().shared.driver.reactor;
        let stdin = std::io::stdin();
        // SAFETY: the registration is removed below, and stdin is never closed meanwhile.
        let registered = unsafe { reactor.register(stdin.as_fd()) }.expect("the fake registers");
        let io = registered.io.clone();
        let task = rt.spawn(Readable { io, slot: None });
        let elapsed = rt.block_on(async {
            let start = Instant::now();
            sleep(SECOND).await.unwrap();
            Instant::now() - start
        });
        assert_eq!(elapsed, SECOND);
        assert!(!task.is_finished(), "no event was injected");
        reactor.deregister(&registered, stdin.as_fd()).unwrap();
        drop(rt);
    });
}

// ---- virtual time: no jump while a participant is busy (rule 6) -------------------------

/// The clock does not move while the `block_on` thread holds a wake it has not acted on: a
/// task wakes the `block_on` thread and then sleeps. Until the `block_on` thread has polled
/// its future (which records that it ran) and parked again, its parker is `NOTIFIED` or
/// `EMPTY`, not idle, so the sleep cannot end first. The task is spawned from inside
/// `block_on`, so the thread already counts as a participant when the task runs.
#[test]
fn clock_waits_for_block_on_thread_holding_a_wake() {
    loom::model(|| {
        let rt = runtime(1, true);
        rt.block_on(async {
            let wake_me = Event::new();
            let acted = Arc::new(AtomicBool::new(false));
            let sleeper = {
                let (wake_me, acted) = (wake_me.clone(), acted.clone());
                crate::spawn(async move {
                    let start = Instant::now();
                    wake_me.set();
                    sleep(SECOND).await.unwrap();
                    (acted.load(SeqCst), Instant::now() - start)
                })
            };
            wake_me.wait().await;
            acted.store(true, SeqCst);
            let (acted_before_jump, elapsed) = sleeper.await.unwrap();
            assert!(acted_before_jump, "the clock jumped while the block_on thread held a wake");
            assert_eq!(elapsed, SECOND);
        });
        drop(rt);
    });
}

/// A task the `block_on` thread spawns before it parks runs before the clock moves. A task
/// is sleeping (the `block_on` thread waits until it is); the thread then spawns a second
/// task (an injector push, then a wake-up) and parks, awaiting the sleeper. The waiter's check
/// may look at the worker count and the injector before the spawn and at the `block_on`
/// thread after it parked: the epoch the thread bumps before parking makes the jump look
/// again (rule 6). The sleeper, woken by the jump, records whether the second task ran.
#[test]
fn clock_waits_for_task_spawned_by_block_on() {
    loom::model(|| {
        let rt = runtime(1, true);
        rt.block_on(async {
            let sleeping = Event::new();
            let ran = Arc::new(AtomicBool::new(false));
            let sleeper = {
                let (sleeping, ran) = (sleeping.clone(), ran.clone());
                crate::spawn(async move {
                    let start = Instant::now();
                    sleeping.set();
                    sleep(SECOND).await.unwrap();
                    (ran.load(SeqCst), Instant::now() - start)
                })
            };
            sleeping.wait().await;
            let task = crate::spawn(async move { ran.store(true, SeqCst) });
            let (ran_before_jump, elapsed) = sleeper.await.unwrap();
            assert!(ran_before_jump, "the clock jumped while a spawned task was queued");
            assert_eq!(elapsed, SECOND);
            task.await.unwrap();
        });
        drop(rt);
    });
}

/// A task woken from a foreign thread before the jump decision runs before the clock moves.
/// "Before" needs an order the runtime can see: the foreign thread wakes the task (an
/// injector push) and only then wakes the `block_on` thread, which acts on that wake by
/// starting to sleep. So the task was queued before the sleep's timer existed, and the clock
/// may only jump once every worker is parked with the injector empty: after the task ran.
#[test]
fn clock_waits_for_task_woken_from_foreign_thread() {
    loom::model(|| {
        let rt = runtime(1, true);
        rt.block_on(async {
            let (wake_task, wake_me) = (Event::new(), Event::new());
            let ran = Arc::new(AtomicBool::new(false));
            let task = {
                let (wake_task, ran) = (wake_task.clone(), ran.clone());
                crate::spawn(async move {
                    wake_task.wait().await;
                    ran.store(true, SeqCst);
                })
            };
            let waker = {
                let wake_me = wake_me.clone();
                thread::spawn(move || {
                    wake_task.set();
                    wake_me.set();
                })
            };
            wake_me.wait().await;
            let start = Instant::now();
            sleep(SECOND).await.unwrap();
            assert!(ran.load(SeqCst), "the clock jumped while a woken task was queued");
            assert_eq!(Instant::now() - start, SECOND);
            task.await.unwrap();
            waker.join().unwrap();
        });
        drop(rt);
    });
}

/// The clock does not move while a blocking job runs, nor while a task it spawned is queued;
/// and the job finishing is what makes the runtime idle. The `block_on` thread starts a job
/// and sleeps without awaiting it (so the job's completion wakes nobody); the job reads the
/// clock, which must still be at the start, and spawns a task (an injector push the waiter's
/// check may already have passed) before its thread bumps the epoch and counts itself idle
/// (rule 6); that thread's wake-up of the poller lets the waiter look again (rule 7).
#[test]
fn clock_waits_for_blocking_job() {
    loom::model(|| {
        let rt = runtime(1, true);
        rt.block_on(async {
            let ran = Arc::new(AtomicBool::new(false));
            let start = Instant::now();
            let job = {
                let ran = ran.clone();
                crate::spawn_blocking(move || {
                    drop(crate::spawn(async move { ran.store(true, SeqCst) }));
                    Instant::now()
                })
            };
            sleep(SECOND).await.unwrap();
            assert!(ran.load(SeqCst), "the clock jumped while a task spawned by a job was queued");
            assert_eq!(Instant::now() - start, SECOND);
            assert_eq!(job.await.unwrap(), start, "the clock moved while a blocking job ran");
        });
        drop(rt);
    });
}

/// Rules 6 and 7 for a `block_on` thread that leaves. A task is about to sleep; the thread
/// spawns a second task and returns from `block_on`. While the thread was inside and busy the
/// clock could not move, so a waiter that looked then blocks: leaving must wake it (rule 7),
/// or the sleep never ends although nobody waits in `block_on` any more. And the spawn is a
/// hand-off made before leaving, which a check may have missed (it looked at the injector
/// before, at the `block_on` threads after): leaving bumps the epoch first (rule 6), so the
/// second task runs before the clock moves. The main thread then waits for the sleeper outside
/// the runtime (a foreign wait).
#[test]
fn clock_jumps_after_block_on_returns() {
    loom::model(|| {
        let rt = runtime(1, true);
        let done = Arc::new((Mutex::new(None), Condvar::new()));
        let ran = Arc::new(AtomicBool::new(false));
        rt.block_on(async {
            let sleeping = Event::new();
            {
                let (done, ran, sleeping) = (done.clone(), ran.clone(), sleeping.clone());
                drop(crate::spawn(async move {
                    let start = Instant::now();
                    sleeping.set();
                    sleep(SECOND).await.unwrap();
                    *done.0.lock() = Some((ran.load(SeqCst), Instant::now() - start));
                    done.1.notify_all();
                }));
            }
            sleeping.wait().await;
            let ran = ran.clone();
            drop(crate::spawn(async move { ran.store(true, SeqCst) }));
        });
        let (result, cv) = &*done;
        let mut result = result.lock();
        while result.is_none() {
            cv.wait(&mut result);
        }
        let (ran_before_jump, elapsed) = result.take().unwrap();
        drop(result);
        assert!(ran_before_jump, "the clock jumped while a task spawned by block_on was queued");
        assert_eq!(elapsed, SECOND);
        drop(rt);
    });
}

/// A timer registered from a foreign thread (inside `Handle::enter`, polled by an executor of
/// its own: no participant, so nothing wakes the waiter when it goes idle). The registration
/// may fall between the waiter's idle check and its wait, where nobody waits in the poller to
/// be woken by it; it bumps the epoch, and the wait does not block on a check the epoch has
/// moved past (`TimeDriver::begin_wait`): the waiter looks again and jumps.
#[test]
fn timer_registered_from_foreign_thread_fires() {
    loom::model(|| {
        let rt = runtime(1, true);
        let entered = rt.handle().enter();
        let elapsed = poll_on_foreign_thread(async {
            let start = Instant::now();
            sleep(SECOND).await.unwrap();
            Instant::now() - start
        });
        assert_eq!(elapsed, SECOND);
        drop(entered);
        drop(rt);
    });
}

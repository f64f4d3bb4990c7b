//! Timeouts and deadlines: `move_on_after`, `fail_after`, a `CancelScope` whose deadline moves,
//! `current_effective_deadline`, and asynchronous cleanup in a shield.
//!
//! ```text
//! cargo run --release -p trellis-examples --example timeouts
//! ```
//!
//! In trellis (as in Trio) a timeout is a cancel scope with a deadline. When the deadline
//! passes, every cancel point inside the scope (a sleep, a read, a lock, `checkpoint()`) fails
//! with `Cancelled`, the code unwinds with `?`, and the scope *catches* the cancellation at its
//! exit: `move_on_after` then returns `None`, `fail_after` returns `Err(TimedOut)`. Timeouts
//! nest, and the earliest deadline wins; a shield keeps outer cancellations out, for cleanup
//! that must run even after the code around it was cancelled.
//!
//! Each case below prints one line and asserts its outcome; the whole run takes a few hundred
//! milliseconds of real time.

use std::io;
use std::time::Duration;

use trellis::time::{sleep, Instant};
use trellis::{
    checkpoint, current_effective_deadline, fail_after, move_on_after, move_on_at, shield,
    CancelScope, Cancelled, TimedOut,
};

const MS: Duration = Duration::from_millis(1);
/// Longer than anything here should take: an operation that "never" finishes.
const FOREVER: Duration = Duration::from_secs(3600);

/// Timers fire at (or just after) their deadline; this much slack covers a loaded machine.
fn assert_took(what: &str, took: Duration, expected: Duration) {
    assert!(
        took >= expected - MS && took < expected + Duration::from_millis(500),
        "{what}: took {took:?}, expected about {expected:?}"
    );
}

/// A lookup that takes `delay`. Cancel points return `Result<_, Cancelled>`, and
/// `io::Error: From<Cancelled>`, so `?` works in any function returning `io::Result`.
async fn lookup(delay: Duration) -> io::Result<u32> {
    sleep(delay).await?;
    Ok(7)
}

/// A lookup given at most `limit`: a timeout comes out as an `io::Error` of kind `TimedOut`.
async fn lookup_within(delay: Duration, limit: Duration) -> io::Result<u32> {
    // The outer `?` turns a `TimedOut` into an `io::Error`; the lookup's own result follows.
    fail_after(limit, lookup(delay)).await?
}

/// A request handler that must say goodbye to its peer even when it is cancelled. It records
/// what its cleanup managed to do in `cleanup`.
async fn handle_request(cleanup: &mut Vec<&'static str>) -> Result<(), Cancelled> {
    // The "work": it takes longer than the caller is willing to wait.
    let Err(cancelled) = sleep(FOREVER).await else { return Ok(()) };

    // Cancellation is level-triggered: inside the cancelled scope every cancel point fails
    // again, so cleanup that awaits something would fail at once...
    assert!(checkpoint().await.is_err(), "an unshielded cancel point fails after a cancel");

    // ...unless it runs in a shield, which keeps the outer cancellation out. Cleanup must not
    // hang either (the peer may be gone), so each step gets its own short timeout *inside*
    // the shield. A quick step completes:
    let goodbye = shield(move_on_after(100 * MS, sleep(20 * MS))).await;
    if matches!(goodbye, Some(Ok(()))) {
        cleanup.push("goodbye sent");
    }
    // A step that would hang is cut short by its own timeout, not by the outer one:
    let flush = shield(move_on_after(50 * MS, sleep(FOREVER))).await;
    if flush.is_none() {
        cleanup.push("flush gave up after 50 ms");
    }

    // Cleanup done: propagate the cancellation so that the scope that owns it catches it.
    Err(cancelled)
}

fn main() {
    trellis::run(async {
        // 1. move_on_after: `None` when the timeout fires, `Some(output)` otherwise.
        let t = Instant::now();
        let slow = move_on_after(50 * MS, sleep(FOREVER)).await;
        let took = t.elapsed();
        assert!(slow.is_none());
        assert_took("move_on_after", took, 50 * MS);
        let quick = move_on_after(Duration::from_secs(1), lookup(10 * MS)).await;
        assert_eq!(quick.map(|r| r.unwrap()), Some(7));
        // It ends on time around any future, even one with no trellis cancel point in it.
        let foreign = move_on_after(20 * MS, futures::future::pending::<()>()).await;
        assert!(foreign.is_none());
        println!(
            "move_on_after: a 1 h sleep moved on after {:.0} ms (None); a 10 ms lookup gave \
             Some(7); a never-ready foreign future moved on too",
            took.as_secs_f64() * 1e3
        );

        // 2. fail_after: `Err(TimedOut)`, which converts into `io::Error` (kind `TimedOut`).
        assert_eq!(lookup_within(10 * MS, 200 * MS).await.unwrap(), 7);
        let t = Instant::now();
        let err = lookup_within(FOREVER, 30 * MS).await.unwrap_err();
        assert_took("fail_after", t.elapsed(), 30 * MS);
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.get_ref().is_some_and(|e| e.is::<TimedOut>()));
        println!("fail_after: a lookup within its limit gave Ok(7); a hung one gave Err({err})");

        // 3. A scope whose deadline is moved earlier while it runs. The handle is a cheap
        // clone: here a second future in the same task tightens the deadline after 20 ms
        // (another task or thread could do the same).
        let started = Instant::now();
        let scope = CancelScope::with_deadline(started + Duration::from_secs(10));
        let tightened_to = started + 20 * MS + 30 * MS;
        let work = scope.run(sleep(FOREVER));
        let tighten = async {
            sleep(20 * MS).await.expect("nothing cancels this future");
            // The caller wants the answer sooner. This takes effect at once, also while the
            // scope is suspended in its sleep.
            scope.set_deadline(Some(tightened_to));
        };
        let (out, ()) = futures::join!(work, tighten);
        let took = started.elapsed();
        assert!(out.is_none(), "the tightened deadline cancelled the scope");
        assert!(scope.cancel_called() && scope.cancelled_caught());
        assert_eq!(scope.deadline(), Some(tightened_to));
        assert_took("set_deadline", took, 50 * MS);
        println!(
            "set_deadline: a scope due in 10 s, pulled in to 50 ms after its start, ended after \
             {:.0} ms",
            took.as_secs_f64() * 1e3
        );

        // 4. current_effective_deadline: the earliest deadline around the calling code, up to
        // the nearest shield.
        assert_eq!(current_effective_deadline(), None, "no deadline around main");
        let outer = Instant::now() + Duration::from_secs(10);
        let (inner, shielded) = move_on_at(outer, async {
            assert_eq!(current_effective_deadline(), Some(outer));
            // A nested, shorter timeout is the one that counts.
            let inner = move_on_after(Duration::from_secs(1), async {
                current_effective_deadline().expect("a deadline applies")
            })
            .await
            .expect("no timeout fired");
            // A shield hides the deadlines outside it.
            let shielded = shield(async { current_effective_deadline() }).await;
            (inner, shielded)
        })
        .await
        .expect("no timeout fired");
        assert!(inner < outer && inner > Instant::now() + Duration::from_millis(900));
        assert_eq!(shielded, None);
        println!(
            "current_effective_deadline: none in main; 10 s under move_on_at; {:.2} s under a \
             nested 1 s move_on_after; none again inside a shield",
            (inner - Instant::now()).as_secs_f64()
        );

        // 5. Shielded cleanup: the handler is cancelled after 50 ms, catches `Cancelled`, runs
        // two bounded cleanup steps in shields (20 ms, then 50 ms until its own timeout gives
        // up), and propagates the cancellation, which `move_on_after` catches.
        let mut cleanup = Vec::new();
        let t = Instant::now();
        let out = move_on_after(50 * MS, handle_request(&mut cleanup)).await;
        let took = t.elapsed();
        assert!(out.is_none(), "the timeout caught the handler's cancellation");
        assert_eq!(cleanup, ["goodbye sent", "flush gave up after 50 ms"]);
        assert_took("shielded cleanup", took, (50 + 20 + 50) * MS);
        println!(
            "shielded cleanup: cancelled at 50 ms, then {} and {}; returned None after {:.0} ms",
            cleanup[0],
            cleanup[1],
            took.as_secs_f64() * 1e3
        );
    });
}

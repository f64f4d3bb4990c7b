//! The timer store: a hierarchical timing wheel over a slab of entries.
//!
//! # Shape
//!
//! Time is counted in *ticks* of [`TICK_NANOS`] (1 ms) since the store's origin. There are
//! [`LEVELS`] levels of 64 slots; a slot of level `l` spans `64^l` ticks, so level 0 covers the
//! next 64 ms one tick per slot, level 1 the next ~4 s, level 2 ~4.4 min, level 3 ~4.7 h,
//! level 4 ~12.4 days, level 5 ~2.2 years. Beyond that, entries wait in the top level and are
//! re-filed whenever it comes round (a "never" deadline costs nothing but that).
//!
//! An entry is filed at the level of the highest bit in which its tick differs from the wheel's
//! current tick (`elapsed`), in the slot given by its tick's digit at that level. So every
//! entry of a slot at level `l` expires within that slot's span, and the slot "comes round"
//! before any of them is due. Each slot is a doubly linked list threaded through the slab by
//! index, and each level keeps a 64-bit occupancy bitmap, so:
//!
//! - `insert` and `remove` are O(1) (unlink by index, no search);
//! - finding the next slot to process is a few bit scans;
//! - advancing processes one slot at a time: a level-0 slot's entries are due and are fired;
//!   a higher slot's entries are re-filed ("cascaded") at lower levels, relative to the slot's
//!   start. Each entry cascades at most once per level.
//!
//! Firing is batched: [`TimerWheel::advance`] moves every due entry's waker into a vector that
//! the caller wakes after releasing whatever lock guards the store (wake after unlocking).
//!
//! Entries are addressed by a [`TimerKey`] (slab index + generation), so a stale key (from an
//! entry that fired and whose slot was reused) is recognised and ignored.

use std::task::Waker;

/// Nanoseconds per tick.
pub(crate) const TICK_NANOS: u64 = 1_000_000;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
pub(crate) const LEVELS: usize = 6;
/// Ticks the wheel spans (about 2.2 years).
const MAX_TICKS: u64 = 1 << (LEVELS as u32 * SLOT_BITS);
const NIL: u32 = u32::MAX;

/// The address of one timer entry; stale keys are detected by the generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    /// Exact deadline, in nanoseconds since the origin.
    deadline: u64,
    state: EntryState,
    waker: Option<Waker>,
    prev: u32,
    next: u32,
    /// `level * SLOTS + slot` while filed.
    position: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    Vacant,
    Filed,
    Fired,
}

/// What `poll_entry` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EntryStatus {
    /// Still waiting (the waker was stored).
    Pending,
    /// The deadline passed and the entry fired.
    Fired,
}

#[derive(Debug)]
pub(crate) struct TimerWheel {
    entries: Vec<Entry>,
    free: Vec<u32>,
    heads: Vec<u32>,
    occupied: [u64; LEVELS],
    /// Ticks processed so far: every entry with a tick `<= elapsed` has fired.
    elapsed: u64,
    /// Entries filed or fired-but-not-yet-removed (each live `Sleep` owns one).
    live: usize,
}

fn tick_of(deadline_nanos: u64) -> u64 {
    deadline_nanos.div_ceil(TICK_NANOS)
}

fn level_for(elapsed: u64, tick: u64) -> usize {
    let masked = (elapsed ^ tick) | SLOT_MASK;
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

fn slot_for(tick: u64, level: usize) -> usize {
    ((tick >> (level as u32 * SLOT_BITS)) & SLOT_MASK) as usize
}

impl TimerWheel {
    #[cfg(test)]
    pub(crate) fn new() -> TimerWheel {
        TimerWheel::new_at(0)
    }

    /// An empty wheel whose time starts at `now` (nanoseconds since the origin).
    pub(crate) fn new_at(now: u64) -> TimerWheel {
        TimerWheel {
            entries: Vec::new(),
            free: Vec::new(),
            heads: vec![NIL; LEVELS * SLOTS],
            occupied: [0; LEVELS],
            elapsed: now / TICK_NANOS,
            live: 0,
        }
    }

    /// Entries that exist (registered sleeps, fired or not, whose `Sleep` is still alive).
    pub(crate) fn live_entries(&self) -> usize {
        self.live
    }

    /// Registers a timer for `deadline` (nanoseconds since the origin). A deadline that is
    /// already due is stored as fired at once.
    pub(crate) fn insert(&mut self, deadline: u64, waker: Waker) -> TimerKey {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.entries.len()).expect("more than 4 billion timers");
                assert!(i != NIL, "more than 4 billion timers");
                self.entries.push(Entry {
                    generation: 0,
                    deadline: 0,
                    state: EntryState::Vacant,
                    waker: None,
                    prev: NIL,
                    next: NIL,
                    position: 0,
                });
                i
            }
        };
        self.live += 1;
        let entry = &mut self.entries[index as usize];
        entry.deadline = deadline;
        entry.waker = Some(waker);
        let key = TimerKey { index, generation: entry.generation };
        if tick_of(deadline) <= self.elapsed {
            entry.state = EntryState::Fired;
        } else {
            self.file(index);
        }
        key
    }

    /// Checks an entry: `Fired` if its deadline passed, otherwise stores `waker` (if it would not
    /// wake the same task already) and returns `Pending`.
    pub(crate) fn poll_entry(&mut self, key: TimerKey, waker: &Waker) -> EntryStatus {
        let entry = self.entry_mut(key).expect("poll of a removed timer entry");
        match entry.state {
            EntryState::Fired => EntryStatus::Fired,
            EntryState::Filed => {
                if !entry.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    entry.waker = Some(waker.clone());
                }
                EntryStatus::Pending
            }
            EntryState::Vacant => unreachable!("stale key passed the generation check"),
        }
    }

    /// Removes an entry (its `Sleep` was dropped, or re-armed). Returns its waker, which the
    /// caller drops after unlocking. Stale keys are ignored.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<Waker> {
        let state = self.entry_mut(key)?.state;
        if state == EntryState::Filed {
            self.unfile(key.index);
        }
        let entry = &mut self.entries[key.index as usize];
        entry.state = EntryState::Vacant;
        entry.generation = entry.generation.wrapping_add(1);
        let waker = entry.waker.take();
        self.free.push(key.index);
        self.live -= 1;
        waker
    }

    fn entry_mut(&mut self, key: TimerKey) -> Option<&mut Entry> {
        self.entries
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation && e.state != EntryState::Vacant)
    }

    /// The earliest tick at which some entry is due, if any.
    pub(crate) fn next_expiration(&self) -> Option<u64> {
        self.next_slot().map(|(start, _)| start)
    }

    /// [`next_expiration`](Self::next_expiration) in nanoseconds (when to wake up to fire).
    pub(crate) fn next_expiration_nanos(&self) -> Option<u64> {
        self.next_expiration().map(|tick| tick.saturating_mul(TICK_NANOS))
    }

    /// The earliest exact deadline among filed entries (for virtual time: the instant to jump
    /// to). Within a level, every entry of a later slot is due after every entry of the next
    /// slot, so the earliest entry is in some level's next occupied slot: scan those.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        (0..LEVELS)
            .filter_map(|level| {
                let start = self.next_slot_start(level)?;
                Some(self.min_deadline_in(level, slot_for(start, level)))
            })
            .min()
    }

    fn min_deadline_in(&self, level: usize, slot: usize) -> u64 {
        let mut best = u64::MAX;
        let mut i = self.heads[level * SLOTS + slot];
        while i != NIL {
            let e = &self.entries[i as usize];
            best = best.min(e.deadline);
            i = e.next;
        }
        best
    }

    /// The tick at which level `level`'s next occupied slot starts, if any.
    fn next_slot_start(&self, level: usize) -> Option<u64> {
        let occupied = self.occupied[level];
        if occupied == 0 {
            return None;
        }
        let shift = level as u32 * SLOT_BITS;
        let slot_span = 1u64 << shift;
        let level_span = slot_span << SLOT_BITS;
        let now_slot = ((self.elapsed >> shift) & SLOT_MASK) as u32;
        // Slots at or after the current one within this level's window, wrapping round.
        let rotated = occupied.rotate_right(now_slot);
        let distance = rotated.trailing_zeros() as u64;
        let level_start = self.elapsed & !(level_span - 1);
        let mut start = level_start + ((now_slot as u64 + distance) << shift);
        if now_slot as u64 + distance >= SLOTS as u64 {
            // Wrapped: the slot is in the next rotation of this level. Unreachable for levels
            // below the top (entries are filed in the current rotation); at the top level it
            // holds deadlines beyond the wheel's range.
            start =
                level_start + level_span + ((now_slot as u64 + distance - SLOTS as u64) << shift);
        }
        Some(start.max(self.elapsed))
    }

    /// Advances the wheel to `now` (nanoseconds since the origin): fires every entry whose
    /// deadline is `<= now`, pushing its waker into `woken`.
    pub(crate) fn advance(&mut self, now: u64, woken: &mut Vec<Waker>) {
        let now_tick = now / TICK_NANOS;
        // Whole ticks: every slot that starts at or before `now_tick` comes round; its due
        // entries fire, the others are re-filed relative to the slot's start.
        while let Some((start, level)) = self.next_slot() {
            if start > now_tick {
                break;
            }
            self.elapsed = start;
            let slot = slot_for(start, level);
            let mut i = std::mem::replace(&mut self.heads[level * SLOTS + slot], NIL);
            self.occupied[level] &= !(1 << slot);
            while i != NIL {
                let next = self.entries[i as usize].next;
                if self.entries[i as usize].deadline <= now {
                    self.fire(i, woken);
                } else {
                    self.file(i);
                }
                i = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
        // The partial tick: entries due in (now_tick, now] sit in slots starting at
        // now_tick + 1. Fire those in place, so a deadline fires as soon as it passes (virtual
        // time jumps to exact deadlines, which are rarely whole ticks).
        if !now.is_multiple_of(TICK_NANOS) {
            for level in 0..LEVELS {
                if self.next_slot_start(level) == Some(now_tick + 1) {
                    let position = level * SLOTS + slot_for(now_tick + 1, level);
                    let mut i = self.heads[position];
                    while i != NIL {
                        let next = self.entries[i as usize].next;
                        if self.entries[i as usize].deadline <= now {
                            self.unfile(i);
                            self.fire(i, woken);
                        }
                        i = next;
                    }
                }
            }
        }
    }

    /// The next slot to come round: its start tick and level.
    fn next_slot(&self) -> Option<(u64, usize)> {
        (0..LEVELS).filter_map(|l| self.next_slot_start(l).map(|s| (s, l))).min()
    }

    fn fire(&mut self, index: u32, woken: &mut Vec<Waker>) {
        let entry = &mut self.entries[index as usize];
        entry.prev = NIL;
        entry.next = NIL;
        entry.state = EntryState::Fired;
        if let Some(w) = entry.waker.take() {
            woken.push(w);
        }
    }

    /// Files entry `index` by its deadline relative to `elapsed`.
    fn file(&mut self, index: u32) {
        // Deadlines beyond the wheel's range are filed at its far end and re-filed when they
        // come round (their exact deadline is kept, so they never fire early).
        //
        // The bound: strictly before the current top-level slot comes round again. A later
        // tick would land in that same top-level slot (same digit, next rotation) and look
        // due now: re-filing it there forever. Within the bound, a top-level slot whose digit
        // is below the current one is unambiguously in the next rotation.
        let top_slot_span = 1u64 << ((LEVELS as u32 - 1) * SLOT_BITS);
        let latest = (self.elapsed & !(top_slot_span - 1)) + MAX_TICKS - 1;
        let tick = tick_of(self.entries[index as usize].deadline).clamp(self.elapsed + 1, latest);
        let level = level_for(self.elapsed, tick).min(LEVELS - 1);
        let slot = slot_for(tick, level);
        let position = level * SLOTS + slot;
        let head = self.heads[position];
        {
            let entry = &mut self.entries[index as usize];
            entry.state = EntryState::Filed;
            entry.position = position as u16;
            entry.prev = NIL;
            entry.next = head;
        }
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[position] = index;
        self.occupied[level] |= 1 << slot;
    }

    fn unfile(&mut self, index: u32) {
        let (prev, next, position) = {
            let e = &self.entries[index as usize];
            (e.prev, e.next, e.position as usize)
        };
        if prev != NIL {
            self.entries[prev as usize].next = next;
        } else {
            self.heads[position] = next;
            if next == NIL {
                self.occupied[position / SLOTS] &= !(1 << (position % SLOTS));
            }
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_types)]

    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::task::Wake;

    struct Marker;
    impl Wake for Marker {
        fn wake(self: Arc<Self>) {}
    }

    /// Wakers that can be told apart by their data pointer.
    struct Wakers {
        ids: HashMap<*const (), usize>,
        keep: Vec<Waker>,
    }

    impl Wakers {
        fn new() -> Wakers {
            Wakers { ids: HashMap::new(), keep: Vec::new() }
        }
        fn make(&mut self, id: usize) -> Waker {
            let w = Waker::from(Arc::new(Marker));
            self.ids.insert(w.data(), id);
            self.keep.push(w.clone());
            w
        }
        fn id(&self, w: &Waker) -> usize {
            self.ids[&w.data()]
        }
    }

    /// xorshift, so the test is reproducible without a dependency.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    const MS: u64 = TICK_NANOS;

    #[test]
    fn many_random_timers_fire_in_deadline_order_and_never_early() {
        let mut wheel = TimerWheel::new();
        let mut wakers = Wakers::new();
        let mut seed = 0x2545_F491_4F6C_DD1D;
        let mut deadlines = Vec::new();
        for id in 0..100_000 {
            // Up to ~3 hours ahead, at nanosecond resolution.
            let d = rng(&mut seed) % (3 * 3600 * 1000 * MS) + 1;
            deadlines.push(d);
            wheel.insert(d, wakers.make(id));
        }
        assert_eq!(wheel.live_entries(), 100_000);
        let mut now = 0;
        let mut fired = vec![false; deadlines.len()];
        let mut last_fired_deadline = 0;
        let mut woken = Vec::new();
        while fired.iter().any(|f| !f) {
            now += rng(&mut seed) % (90 * 1000 * MS);
            wheel.advance(now, &mut woken);
            let mut batch: Vec<usize> = woken.drain(..).map(|w| wakers.id(&w)).collect();
            batch.sort_by_key(|&id| deadlines[id]);
            for id in batch {
                assert!(deadlines[id] <= now, "timer {id} fired early");
                assert!(!fired[id], "timer {id} fired twice");
                assert!(deadlines[id] >= last_fired_deadline, "fired out of order across batches");
                last_fired_deadline = deadlines[id];
                fired[id] = true;
            }
            // Everything due has fired.
            for (id, &d) in deadlines.iter().enumerate() {
                if d <= now - now % MS {
                    assert!(fired[id], "timer {id} due at {d} not fired at {now}");
                }
            }
        }
    }

    #[test]
    fn remove_leaves_nothing_behind_and_ignores_stale_keys() {
        let mut wheel = TimerWheel::new();
        let mut wakers = Wakers::new();
        let keys: Vec<_> =
            (0..1000).map(|i| wheel.insert((i as u64 + 1) * 37 * MS, wakers.make(i))).collect();
        for k in &keys[..500] {
            assert!(wheel.remove(*k).is_some());
        }
        assert_eq!(wheel.live_entries(), 500);
        // A stale key (already removed, slot reused) is ignored.
        let reused = wheel.insert(5 * MS, wakers.make(1000));
        assert!(wheel.remove(keys[0]).is_none());
        let mut woken = Vec::new();
        wheel.advance(u64::MAX / 2, &mut woken);
        assert_eq!(woken.len(), 501);
        for k in keys[500..].iter().chain([&reused]) {
            wheel.remove(*k);
        }
        assert_eq!(wheel.live_entries(), 0);
        assert_eq!(wheel.next_expiration(), None);
    }

    #[test]
    fn far_deadlines_and_never() {
        let mut wheel = TimerWheel::new();
        let mut wakers = Wakers::new();
        let year = 365 * 24 * 3600 * 1000 * MS;
        let far = wheel.insert(5 * year, wakers.make(0));
        let never = wheel.insert(u64::MAX, wakers.make(1));
        let mut woken = Vec::new();
        for step in 1..=9 {
            wheel.advance(step * year / 2, &mut woken);
            assert!(woken.is_empty(), "fired early at {step} half-years");
        }
        wheel.advance(5 * year, &mut woken);
        assert_eq!(woken.iter().map(|w| wakers.id(w)).collect::<Vec<_>>(), vec![0]);
        assert_eq!(wheel.poll_entry(far, &wakers.make(2)), EntryStatus::Fired);
        assert_eq!(wheel.poll_entry(never, &wakers.make(3)), EntryStatus::Pending);
        assert_eq!(wheel.next_deadline(), Some(u64::MAX));
    }

    /// Far deadlines with the wheel's clock far from zero (the process has been running):
    /// they must not be mistaken for due in the current top-level slot.
    #[test]
    fn far_deadlines_far_from_the_origin() {
        for start_ms in [0u64, 5_000, 1 << 30, (1 << 36) - 1, (1 << 36) + 12_345, 987_654_321_012] {
            let mut wheel = TimerWheel::new_at(start_ms * MS);
            let mut wakers = Wakers::new();
            wheel.insert(u64::MAX, wakers.make(0));
            let year = 365 * 24 * 3600 * 1000 * MS;
            wheel.insert(start_ms * MS + 3 * year, wakers.make(1));
            wheel.insert(start_ms * MS + 5 * 1000 * MS, wakers.make(2));
            let mut woken = Vec::new();
            // Jumping to each next deadline fires exactly that timer.
            for expected in [2, 1] {
                let next = wheel.next_deadline().unwrap();
                wheel.advance(next, &mut woken);
                let ids: Vec<_> = woken.drain(..).map(|w| wakers.id(&w)).collect();
                assert_eq!(ids, vec![expected], "start {start_ms} ms");
            }
            assert_eq!(wheel.next_deadline(), Some(u64::MAX));
            wheel.advance(start_ms * MS + 10 * year, &mut woken);
            assert!(woken.is_empty());
        }
    }

    #[test]
    fn already_due_entries_are_fired_at_insert() {
        let mut wheel = TimerWheel::new();
        let mut wakers = Wakers::new();
        let mut woken = Vec::new();
        wheel.advance(10 * MS, &mut woken);
        let k = wheel.insert(3 * MS, wakers.make(0));
        assert_eq!(wheel.poll_entry(k, &wakers.make(1)), EntryStatus::Fired);
        assert_eq!(wheel.next_expiration(), None);
    }

    /// Virtual time jumps to exact deadlines: each jump must fire something.
    #[test]
    fn jumping_to_each_next_deadline_fires_it() {
        let mut wheel = TimerWheel::new();
        let mut wakers = Wakers::new();
        let mut seed = 12345;
        let mut deadlines = Vec::new();
        for id in 0..5_000 {
            let d = rng(&mut seed) % (7200 * 1000 * MS) + 1;
            deadlines.push(d);
            wheel.insert(d, wakers.make(id));
        }
        let mut sorted = deadlines.clone();
        sorted.sort_unstable();
        let mut woken = Vec::new();
        let mut fired_total = 0;
        while let Some(next) = wheel.next_deadline() {
            assert_eq!(next, sorted[fired_total], "next_deadline is the earliest pending one");
            wheel.advance(next, &mut woken);
            assert!(!woken.is_empty(), "jumping to {next} fired nothing");
            for w in woken.drain(..) {
                assert_eq!(deadlines[wakers.id(&w)], next);
                fired_total += 1;
            }
        }
        assert_eq!(fired_total, deadlines.len());
    }

    #[test]
    fn next_deadline_is_exact() {
        let mut wheel = TimerWheel::new();
        let mut wakers = Wakers::new();
        // A later entry in a level-1 slot that starts earlier than the level-0 slot's entry.
        let mut woken = Vec::new();
        wheel.advance(100 * MS, &mut woken);
        wheel.insert(180 * MS + 7, wakers.make(0));
        wheel.insert(150 * MS - 3, wakers.make(1));
        assert_eq!(wheel.next_deadline(), Some(150 * MS - 3));
        wheel.advance(150 * MS - 3, &mut woken);
        assert_eq!(woken.len(), 1);
        assert_eq!(wheel.next_deadline(), Some(180 * MS + 7));
    }
}

//! Delivery accounting by sequence number: in order, gaps, late
//! (out-of-order) arrivals and duplicates.
//!
//! Every receiver keeps a bitmap of the sequence numbers it has seen since
//! its base (the `seq` of its welcome). The bitmap grows as numbers arrive,
//! up to a window chosen per run ([`window_bits`]) that normally covers
//! every message the run can publish in a room, so a duplicate is
//! recognised however late it comes. Only a run whose per-room message count
//! exceeds the window slides it; numbers that fall below it are reported as
//! [`Obs::TooOld`] (counted separately, so the summary says when the
//! accounting could not be exact).

use std::collections::VecDeque;

/// What one observed sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obs {
    /// The next expected number.
    InOrder,
    /// Ahead of the next expected by this many skipped numbers (they may
    /// still arrive late).
    Gap(u64),
    /// Below the highest seen and not seen before: out of order.
    Late,
    /// Seen before (or at/below the base: a message from before this
    /// receiver joined, which it should never get).
    Duplicate,
    /// Below the bitmap window: cannot tell whether it is a duplicate.
    /// Counted as a distinct, out-of-order delivery and in `too_old`.
    TooOld,
}

/// Smallest window (bits) a tracker gets, whatever the plan says.
pub const WINDOW_MIN_BITS: u64 = 4096;
/// Largest window (bits) per receiver: 16 Mbit = 2 MiB.
pub const WINDOW_MAX_BITS: u64 = 1 << 24;

/// The per-receiver window for a run: enough bits for every message a room
/// can carry (`msgs_per_room`, plus slack), bounded so that `receivers`
/// bitmaps together stay within `budget_bytes`.
pub fn window_bits(msgs_per_room: u64, receivers: u64, budget_bytes: u64) -> u64 {
    let want = msgs_per_room.saturating_add(msgs_per_room / 8).saturating_add(1024);
    let afford = budget_bytes.saturating_mul(8) / receivers.max(1);
    want.min(afford).clamp(WINDOW_MIN_BITS, WINDOW_MAX_BITS).div_ceil(64) * 64
}

/// Per-receiver tracker: a bitmap of seen numbers from `lo` on (words of
/// 64), the highest number seen, and the window cap.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// Numbers at or below this were before the receiver joined.
    base: u64,
    /// Sequence number of bit 0 of `words[0]`.
    lo: u64,
    words: VecDeque<u64>,
    /// Highest sequence observed (or `base`).
    hi: u64,
    /// Most words kept; beyond it the window slides.
    cap_words: usize,
}

impl SeqTracker {
    /// A tracker whose messages start after `base` (e.g. the room `seq` in
    /// the welcome frame; 0 for a fresh room), keeping up to `window` bits.
    pub fn new(base: u64, window: u64) -> Self {
        let cap_words = (window.max(64) / 64) as usize;
        SeqTracker { base, lo: base + 1, words: VecDeque::new(), hi: base, cap_words }
    }

    pub fn highest(&self) -> u64 {
        self.hi
    }

    pub fn observe(&mut self, seq: u64) -> Obs {
        if seq <= self.base {
            return Obs::Duplicate;
        }
        if seq < self.lo {
            return Obs::TooOld;
        }
        let mut idx = ((seq - self.lo) / 64) as usize;
        if idx >= self.cap_words {
            // Slide: drop the oldest words so `seq` fits in the last one.
            let drop = idx + 1 - self.cap_words;
            for _ in 0..drop.min(self.words.len()) {
                self.words.pop_front();
            }
            self.lo += drop as u64 * 64;
            idx = self.cap_words - 1;
        }
        while self.words.len() <= idx {
            self.words.push_back(0);
        }
        let bit = 1u64 << ((seq - self.lo) % 64);
        let w = &mut self.words[idx];
        if *w & bit != 0 {
            return Obs::Duplicate;
        }
        *w |= bit;
        if seq > self.hi {
            let skipped = seq - self.hi - 1;
            self.hi = seq;
            if skipped == 0 { Obs::InOrder } else { Obs::Gap(skipped) }
        } else {
            Obs::Late
        }
    }
}

/// Counters a receiver accumulates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Every delivery, duplicates included.
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Deliveries below the window (also in `delivered` and `out_of_order`).
    pub too_old: u64,
}

impl Tally {
    pub fn record(&mut self, obs: Obs) {
        self.delivered += 1;
        match obs {
            Obs::InOrder | Obs::Gap(_) => {}
            Obs::Late => self.out_of_order += 1,
            Obs::TooOld => {
                self.out_of_order += 1;
                self.too_old += 1;
            }
            Obs::Duplicate => self.duplicates += 1,
        }
    }

    pub fn add(&mut self, o: &Tally) {
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.too_old += o.too_old;
    }

    /// Distinct deliveries.
    pub fn distinct(&self) -> u64 {
        self.delivered - self.duplicates
    }
}

/// Lost = expected minus distinct deliveries (never negative).
pub fn lost(expected: u64, t: &Tally) -> u64 {
    expected.saturating_sub(t.distinct())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(base: u64, seqs: &[u64]) -> Tally {
        let mut tr = SeqTracker::new(base, WINDOW_MIN_BITS);
        let mut t = Tally::default();
        for &s in seqs {
            t.record(tr.observe(s));
        }
        t
    }

    #[test]
    fn in_order_stream() {
        let t = run(0, &[1, 2, 3, 4, 5]);
        assert_eq!(t, Tally { delivered: 5, duplicates: 0, out_of_order: 0, too_old: 0 });
        assert_eq!(lost(5, &t), 0);
    }

    #[test]
    fn starts_after_welcome_seq() {
        let mut tr = SeqTracker::new(41, 64);
        assert_eq!(tr.observe(42), Obs::InOrder);
        assert_eq!(tr.observe(41), Obs::Duplicate); // at/below the base counts as seen
        assert_eq!(tr.observe(7), Obs::Duplicate);
        assert_eq!(tr.highest(), 42);
    }

    #[test]
    fn gap_then_late_fill_is_out_of_order_not_lost() {
        let mut tr = SeqTracker::new(0, 64);
        assert_eq!(tr.observe(1), Obs::InOrder);
        assert_eq!(tr.observe(4), Obs::Gap(2));
        assert_eq!(tr.observe(3), Obs::Late);
        assert_eq!(tr.observe(2), Obs::Late);
        assert_eq!(tr.observe(3), Obs::Duplicate);
        assert_eq!(tr.observe(5), Obs::InOrder);
        let t = run(0, &[1, 4, 3, 2, 3, 5]);
        assert_eq!(t, Tally { delivered: 6, duplicates: 1, out_of_order: 2, too_old: 0 });
        assert_eq!(lost(5, &t), 0);
    }

    #[test]
    fn loss_is_expected_minus_distinct() {
        let t = run(0, &[1, 2, 5, 5, 6]);
        assert_eq!(t.duplicates, 1);
        assert_eq!(lost(6, &t), 2);
        assert_eq!(lost(1, &t), 0);
    }

    /// The audit's case: a duplicate far behind the highest number (the old
    /// 64-bit window called it out of order and a distinct delivery, which
    /// hid a loss).
    #[test]
    fn duplicate_far_behind_is_still_a_duplicate() {
        let mut seqs: Vec<u64> = (1..=3000).collect();
        seqs.push(5); // 2995 behind
        seqs.push(100);
        let t = run(0, &seqs);
        assert_eq!(t, Tally { delivered: 3002, duplicates: 2, out_of_order: 0, too_old: 0 });
        // 3001 were expected (one missing): the two duplicates must not hide it.
        assert_eq!(lost(3001, &t), 1);
    }

    #[test]
    fn late_arrival_far_behind_is_out_of_order_once() {
        let mut seqs: Vec<u64> = (2..=2000).collect();
        seqs.push(1);
        seqs.push(1);
        let t = run(0, &seqs);
        assert_eq!(t, Tally { delivered: 2001, duplicates: 1, out_of_order: 1, too_old: 0 });
        assert_eq!(lost(2000, &t), 0);
    }

    #[test]
    fn window_slides_only_past_its_cap() {
        // 128 bits: numbers 1..=128 fit; 200 slides the window by two words.
        let mut tr = SeqTracker::new(0, 128);
        for s in 1..=128 {
            assert_eq!(tr.observe(s), Obs::InOrder);
        }
        assert_eq!(tr.observe(1), Obs::Duplicate);
        assert_eq!(tr.observe(200), Obs::Gap(71));
        // The window is now [129, 257): 128 and below cannot be checked.
        assert_eq!(tr.observe(128), Obs::TooOld);
        assert_eq!(tr.observe(129), Obs::Late);
        assert_eq!(tr.observe(129), Obs::Duplicate);
        assert_eq!(tr.observe(200), Obs::Duplicate);
        let mut t = Tally::default();
        t.record(Obs::TooOld);
        assert_eq!(t, Tally { delivered: 1, duplicates: 0, out_of_order: 1, too_old: 1 });
    }

    #[test]
    fn a_big_jump_clears_the_window() {
        let mut tr = SeqTracker::new(10, 64);
        assert_eq!(tr.observe(11), Obs::InOrder);
        assert_eq!(tr.observe(1_000_000), Obs::Gap(999_988));
        assert_eq!(tr.observe(1_000_000), Obs::Duplicate);
        assert_eq!(tr.observe(999_999), Obs::Late);
        assert_eq!(tr.observe(11), Obs::TooOld);
        assert_eq!(tr.observe(1_000_001), Obs::InOrder);
    }

    #[test]
    fn duplicate_of_highest() {
        let t = run(0, &[1, 2, 2, 2]);
        assert_eq!(t, Tally { delivered: 4, duplicates: 2, out_of_order: 0, too_old: 0 });
    }

    #[test]
    fn window_sizes() {
        // A 20,000-message room: the whole range fits.
        assert!(window_bits(20_000, 1000, 256 << 20) >= 20_000);
        // Tiny runs get the minimum; huge ones the maximum or the budget.
        assert_eq!(window_bits(10, 10, 256 << 20), WINDOW_MIN_BITS);
        assert_eq!(window_bits(u64::MAX, 1, u64::MAX / 16), WINDOW_MAX_BITS);
        let w = window_bits(10_000_000, 100_000, 256 << 20);
        assert!(w * 100_000 / 8 <= (256 << 20) + 100_000 * 8, "{w}");
        assert_eq!(w % 64, 0);
    }
}

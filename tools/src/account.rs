//! Delivery accounting by sequence number: in order, gaps, late
//! (out-of-order) arrivals and duplicates, with a 64-message window.

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
    /// Seen before.
    Duplicate,
    /// So far below the highest seen that the window cannot tell; counted
    /// as out of order.
    TooOld,
}

/// Per-receiver tracker: the highest sequence seen plus a bitmap of the 64
/// numbers below it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTracker {
    /// Highest sequence observed (or the base given at `new`).
    hi: u64,
    /// Bit i set = `hi - 1 - i` was seen (or is at/below the base).
    seen: u64,
}

impl SeqTracker {
    /// A tracker whose messages start after `base` (e.g. the room `seq` in
    /// the welcome frame; 0 for a fresh room).
    pub fn new(base: u64) -> Self {
        SeqTracker { hi: base, seen: u64::MAX }
    }

    pub fn highest(&self) -> u64 {
        self.hi
    }

    pub fn observe(&mut self, seq: u64) -> Obs {
        if seq > self.hi {
            let d = seq - self.hi;
            // Shift the window: the old `hi` becomes bit d-1.
            self.seen = if d >= 64 { 0 } else { (self.seen << d) | (1u64 << (d - 1)) };
            self.hi = seq;
            if d == 1 { Obs::InOrder } else { Obs::Gap(d - 1) }
        } else if seq == self.hi {
            Obs::Duplicate
        } else {
            let back = self.hi - seq - 1;
            if back >= 64 {
                return Obs::TooOld;
            }
            let bit = 1u64 << back;
            if self.seen & bit != 0 {
                Obs::Duplicate
            } else {
                self.seen |= bit;
                Obs::Late
            }
        }
    }
}

/// Counters a receiver accumulates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Tally {
    pub fn record(&mut self, obs: Obs) {
        self.delivered += 1;
        match obs {
            Obs::InOrder | Obs::Gap(_) => {}
            Obs::Late | Obs::TooOld => self.out_of_order += 1,
            Obs::Duplicate => self.duplicates += 1,
        }
    }

    pub fn add(&mut self, o: &Tally) {
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
    }
}

/// Lost = expected minus distinct deliveries (never negative).
pub fn lost(expected: u64, t: &Tally) -> u64 {
    expected.saturating_sub(t.delivered - t.duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(base: u64, seqs: &[u64]) -> Tally {
        let mut tr = SeqTracker::new(base);
        let mut t = Tally::default();
        for &s in seqs {
            t.record(tr.observe(s));
        }
        t
    }

    #[test]
    fn in_order_stream() {
        let t = run(0, &[1, 2, 3, 4, 5]);
        assert_eq!(t, Tally { delivered: 5, duplicates: 0, out_of_order: 0 });
        assert_eq!(lost(5, &t), 0);
    }

    #[test]
    fn starts_after_welcome_seq() {
        let mut tr = SeqTracker::new(41);
        assert_eq!(tr.observe(42), Obs::InOrder);
        assert_eq!(tr.observe(41), Obs::Duplicate); // at/below the base counts as seen
    }

    #[test]
    fn gap_then_late_fill_is_out_of_order_not_lost() {
        let mut tr = SeqTracker::new(0);
        assert_eq!(tr.observe(1), Obs::InOrder);
        assert_eq!(tr.observe(4), Obs::Gap(2));
        assert_eq!(tr.observe(3), Obs::Late);
        assert_eq!(tr.observe(2), Obs::Late);
        assert_eq!(tr.observe(3), Obs::Duplicate);
        assert_eq!(tr.observe(5), Obs::InOrder);
        let t = run(0, &[1, 4, 3, 2, 3, 5]);
        assert_eq!(t, Tally { delivered: 6, duplicates: 1, out_of_order: 2 });
        assert_eq!(lost(5, &t), 0);
    }

    #[test]
    fn loss_is_expected_minus_distinct() {
        let t = run(0, &[1, 2, 5, 5, 6]);
        assert_eq!(t.duplicates, 1);
        assert_eq!(lost(6, &t), 2);
        assert_eq!(lost(1, &t), 0);
    }

    #[test]
    fn window_edges() {
        let mut tr = SeqTracker::new(0);
        assert_eq!(tr.observe(100), Obs::Gap(99));
        assert_eq!(tr.observe(36), Obs::Late); // 100-36-1 = 63: last bit in window
        assert_eq!(tr.observe(36), Obs::Duplicate);
        assert_eq!(tr.observe(35), Obs::TooOld);
        assert_eq!(tr.observe(200), Obs::Gap(99));
        assert_eq!(tr.observe(199), Obs::Late);
        assert_eq!(tr.observe(100), Obs::TooOld);
    }

    #[test]
    fn duplicate_of_highest() {
        let t = run(0, &[1, 2, 2, 2]);
        assert_eq!(t, Tally { delivered: 4, duplicates: 2, out_of_order: 0 });
    }
}

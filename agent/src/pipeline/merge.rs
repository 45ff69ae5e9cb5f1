//! Merging the two kernel rings into one time order. A process's records
//! travel in both (its exec in the critical ring, its fork and exit in the
//! other), each ring in the order its records were written. A record read
//! from one ring is released only once the other ring can no longer hold
//! an earlier one: it was read to the end after that record was written,
//! or it was read (up to its cap) past that record's time.

/// Index of the critical ring in [`RingMarks`].
pub const CRITICAL: usize = 0;
/// Index of the events ring in [`RingMarks`].
pub const EVENTS: usize = 1;

/// A record written this close before a ring was found empty may still
/// have been on its way into it (its time is taken a moment before it is
/// committed): such records wait for the next read.
pub const IN_FLIGHT_NS: u64 = 2_000_000;

/// How far one read of a ring got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Read to the end; the read began at this boot time (ns).
    Drained(u64),
    /// Stopped at its read cap, at a record of this boot time (ns): the
    /// ring holds more, later ones.
    Capped(u64),
}

/// How far each ring has been read, and so which read records may be
/// recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingMarks {
    marks: [Option<Mark>; 2],
}

impl RingMarks {
    pub fn set(&mut self, ring: usize, mark: Mark) {
        self.marks[ring] = Some(mark);
    }

    pub fn capped(&self, ring: usize) -> bool {
        matches!(self.marks[ring], Some(Mark::Capped(_)))
    }

    /// Up to when (boot ns) no record still in a ring can be earlier.
    fn horizon(&self, ring: usize) -> u64 {
        match self.marks[ring] {
            None => 0,
            Some(Mark::Drained(at)) => at.saturating_sub(IN_FLIGHT_NS),
            // Records reach a ring about in time order, not exactly (each
            // CPU stamps its own before committing): the ring may still
            // hold one a little older than the last read.
            Some(Mark::Capped(at)) => at.saturating_sub(IN_FLIGHT_NS),
        }
    }

    /// Read records up to this boot time (ns) may be recorded.
    pub fn release_up_to(&self) -> u64 {
        self.horizon(CRITICAL).min(self.horizon(EVENTS))
    }

    /// Which rings to read now, with `held` records read and waiting: both,
    /// unless `held` reached twice `read_cap` — then only the ring that is
    /// behind (the one whose records the waiting ones wait for), so that
    /// what waits stays bounded while the merge moves on.
    pub fn to_read(&self, held: usize, read_cap: usize) -> [bool; 2] {
        if held < read_cap.saturating_mul(2) {
            return [true, true];
        }
        if self.horizon(CRITICAL) <= self.horizon(EVENTS) {
            [true, false]
        } else {
            [false, true]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_released_before_both_rings_were_read() {
        let mut m = RingMarks::default();
        assert_eq!(m.release_up_to(), 0);
        m.set(CRITICAL, Mark::Drained(10_000_000));
        assert_eq!(m.release_up_to(), 0);
        m.set(EVENTS, Mark::Drained(20_000_000));
        assert_eq!(m.release_up_to(), 10_000_000 - IN_FLIGHT_NS);
    }

    #[test]
    fn a_capped_ring_holds_back_the_other_ones_later_records() {
        let mut m = RingMarks::default();
        // The events ring stopped at a fork of time 5 ms; an exec of 7 ms
        // read from the critical ring waits for what the events ring still
        // holds between the two.
        m.set(EVENTS, Mark::Capped(5_000_000));
        m.set(CRITICAL, Mark::Drained(50_000_000));
        assert_eq!(m.release_up_to(), 5_000_000 - IN_FLIGHT_NS);
        assert!(m.capped(EVENTS) && !m.capped(CRITICAL));
    }

    #[test]
    fn when_too_much_waits_only_the_ring_behind_is_read() {
        let mut m = RingMarks::default();
        m.set(EVENTS, Mark::Capped(5_000_000));
        m.set(CRITICAL, Mark::Drained(50_000_000));
        assert_eq!(m.to_read(10, 32), [true, true]);
        assert_eq!(m.to_read(64, 32), [false, true]);
        m.set(EVENTS, Mark::Drained(90_000_000));
        m.set(CRITICAL, Mark::Capped(60_000_000));
        assert_eq!(m.to_read(64, 32), [true, false]);
    }
}

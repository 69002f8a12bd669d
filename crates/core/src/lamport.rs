//! Lamport clocks: causal order across contexts.
//!
//! Each context keeps a clock. An append ticks it; an append that carries a clock value
//! received from elsewhere (another context, another engine) first moves the clock past that
//! value, so anything caused by what the sender saw sorts after it (Lamport 1978, the
//! "IR2" rule: on receipt, `max(local, received) + 1`).

use std::fmt;

/// A Lamport time. Within a context it strictly increases from entry to entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LamportTime(pub u64);

impl fmt::Display for LamportTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The clock has reached `u64::MAX` and cannot tick again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Lamport clock cannot move past {received}: it would pass 2^64 - 1")]
pub struct ClockOverflow {
    /// The time that could not be moved past: the larger of the context's clock and the
    /// received time.
    pub received: u64,
}

/// A Lamport clock: the latest time it has given out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LamportClock {
    latest: LamportTime,
}

impl LamportClock {
    /// A clock whose latest time is `latest` (zero for a new context).
    pub const fn starting_at(latest: LamportTime) -> Self {
        Self { latest }
    }

    /// The latest time given out.
    pub const fn latest(&self) -> LamportTime {
        self.latest
    }

    /// The next time for a local event: `latest + 1`.
    pub fn tick(&mut self) -> Result<LamportTime, ClockOverflow> {
        self.observe(None)
    }

    /// The next time for an event caused by a message stamped `received`:
    /// `max(latest, received) + 1`. With no received time, the same as [`tick`](Self::tick).
    pub fn observe(&mut self, received: Option<LamportTime>) -> Result<LamportTime, ClockOverflow> {
        let next = self.peek(received)?;
        self.latest = next;
        Ok(next)
    }

    /// What [`observe`](Self::observe) would return, without moving the clock.
    pub fn peek(&self, received: Option<LamportTime>) -> Result<LamportTime, ClockOverflow> {
        let base = received.map_or(self.latest, |r| r.max(self.latest));
        base.0.checked_add(1).map(LamportTime).ok_or(ClockOverflow { received: base.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_from_zero() {
        let mut clock = LamportClock::default();
        assert_eq!(clock.tick(), Ok(LamportTime(1)));
        assert_eq!(clock.tick(), Ok(LamportTime(2)));
        assert_eq!(clock.latest(), LamportTime(2));
    }

    #[test]
    fn observe_takes_max_plus_one() {
        let mut clock = LamportClock::starting_at(LamportTime(10));
        assert_eq!(clock.observe(Some(LamportTime(3))), Ok(LamportTime(11)));
        assert_eq!(clock.observe(Some(LamportTime(41))), Ok(LamportTime(42)));
        assert_eq!(clock.observe(Some(LamportTime(42))), Ok(LamportTime(43)));
    }

    #[test]
    fn overflow_is_an_error_and_leaves_the_clock_alone() {
        let mut clock = LamportClock::starting_at(LamportTime(5));
        let err = clock.observe(Some(LamportTime(u64::MAX))).unwrap_err();
        assert_eq!(err, ClockOverflow { received: u64::MAX });
        assert_eq!(clock.latest(), LamportTime(5));
        let mut full = LamportClock::starting_at(LamportTime(u64::MAX));
        assert!(full.tick().is_err());
    }
}

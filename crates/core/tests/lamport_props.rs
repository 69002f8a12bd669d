//! Properties of the Lamport clock: strictly increasing, past anything received, and
//! preserving happens-before across contexts.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

use converge_core::{LamportClock, LamportTime};
use proptest::prelude::*;

const BOUND: u64 = u64::MAX / 4;

proptest! {
    #[test]
    fn every_time_is_after_the_last_and_after_what_was_received(
        start in 0..BOUND,
        received in prop::collection::vec(prop::option::of(0..BOUND), 1..100),
    ) {
        let mut clock = LamportClock::starting_at(LamportTime(start));
        for r in received {
            let before = clock.latest();
            let t = clock.observe(r.map(LamportTime)).unwrap();
            prop_assert!(t > before);
            if let Some(r) = r {
                prop_assert!(t.0 > r);
                prop_assert_eq!(t.0, before.0.max(r) + 1, "exactly max + 1");
            } else {
                prop_assert_eq!(t.0, before.0 + 1);
            }
            prop_assert_eq!(clock.latest(), t);
        }
    }

    /// Two contexts exchange messages; whenever B observes a time sent by A, everything B
    /// appends afterwards sorts after the sending event (the clock condition).
    #[test]
    fn happens_before_is_preserved(steps in prop::collection::vec((any::<bool>(), any::<bool>()), 1..200)) {
        let mut clocks = [LamportClock::default(), LamportClock::default()];
        let mut sent: [Option<LamportTime>; 2] = [None, None];
        for (who, send) in steps {
            let me = usize::from(who);
            let inbox = sent[1 - me].take();
            let t = clocks[me].observe(inbox).unwrap();
            if let Some(cause) = inbox {
                prop_assert!(t > cause);
            }
            if send {
                sent[me] = Some(t);
            }
        }
    }

    #[test]
    fn peek_does_not_move_the_clock(start in 0..BOUND, r in prop::option::of(0..BOUND)) {
        let mut clock = LamportClock::starting_at(LamportTime(start));
        let peeked = clock.peek(r.map(LamportTime)).unwrap();
        prop_assert_eq!(clock.latest(), LamportTime(start));
        prop_assert_eq!(clock.observe(r.map(LamportTime)).unwrap(), peeked);
    }
}

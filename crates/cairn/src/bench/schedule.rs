//! The send schedule: when each request is *meant* to leave.
//!
//! This is the heart of an open-loop generator. A closed-loop client sends
//! its next request when the previous answer arrives, so a server that
//! stalls also stalls the client, and the requests that "would have been
//! sent" during the stall never exist — their waiting is silently omitted
//! (coordinated omission). Here every request has an intended send time
//! fixed in advance by the schedule, independent of how the server behaves;
//! latency is then measured from that time (see `recorder`).
//!
//! A [`Schedule`] is a plain iterator over [`Slot`]s (offsets from the run's
//! start), with no clock and no I/O, so it can be tested exactly. A plan is a
//! list of phases, each a request rate held for a duration; the schedule
//! walks them back to back. Two arrival processes:
//!
//! - constant: slot `i` of a phase is at `start + (i + offset) / rate`,
//!   computed from the index (not by adding gaps) so rounding never drifts.
//!   `offset` in `[0, 1)` staggers the workers that share a rate, so `W`
//!   workers at `R/W` each together send evenly at `R`, not in clumps of `W`.
//! - Poisson: exponentially distributed gaps drawn from a seeded RNG, so a
//!   run is repeatable. A superposition of independent Poisson processes is
//!   Poisson, so workers with different seeds together are Poisson at the
//!   total rate. At a phase boundary the process restarts at the boundary
//!   with the new rate (memorylessness makes that exact).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One phase of a plan: `rate` requests per second (for one schedule) for
/// `duration`. A rate of zero sends nothing during the phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseRate {
    pub rate: f64,
    pub duration: Duration,
}

/// An intended send time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// Offset from the start of the run.
    pub at: Duration,
    /// Index of the phase the slot belongs to.
    pub phase: usize,
}

#[derive(Debug)]
enum Arrivals {
    Constant { offset: f64, index: u64 },
    // Boxed: the RNG state is ~300 bytes, the other variant 16.
    Poisson { rng: Box<StdRng>, next: Option<f64> },
}

/// An iterator over the intended send times of one worker.
#[derive(Debug)]
pub struct Schedule {
    /// (start, end, rate) per phase, in seconds from the run's start.
    phases: Vec<(f64, f64, f64)>,
    phase: usize,
    arrivals: Arrivals,
}

impl Schedule {
    /// Evenly spaced slots; `offset` (taken modulo 1) shifts them by that
    /// fraction of a gap.
    pub fn constant(phases: &[PhaseRate], offset: f64) -> Schedule {
        Schedule::new(
            phases,
            Arrivals::Constant {
                offset: offset.rem_euclid(1.0),
                index: 0,
            },
        )
    }

    /// Poisson arrivals from a seeded RNG: the same seed gives the same slots.
    pub fn poisson(phases: &[PhaseRate], seed: u64) -> Schedule {
        Schedule::new(
            phases,
            Arrivals::Poisson {
                rng: Box::new(StdRng::seed_from_u64(seed)),
                next: None,
            },
        )
    }

    fn new(phases: &[PhaseRate], arrivals: Arrivals) -> Schedule {
        let mut start = 0.0;
        let phases = phases
            .iter()
            .map(|p| {
                let end = start + p.duration.as_secs_f64();
                let item = (start, end, p.rate);
                start = end;
                item
            })
            .collect();
        Schedule {
            phases,
            phase: 0,
            arrivals,
        }
    }

    /// Moves on to the next phase, resetting the per-phase state.
    fn next_phase(&mut self) {
        self.phase += 1;
        match &mut self.arrivals {
            Arrivals::Constant { index, .. } => *index = 0,
            Arrivals::Poisson { next, .. } => *next = None,
        }
    }
}

impl Iterator for Schedule {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        loop {
            let &(start, end, rate) = self.phases.get(self.phase)?;
            if rate.is_nan() || rate <= 0.0 || rate.is_infinite() {
                self.next_phase();
                continue;
            }
            let at = match &mut self.arrivals {
                Arrivals::Constant { offset, index } => {
                    let at = start + (*index as f64 + *offset) / rate;
                    *index += 1;
                    at
                }
                Arrivals::Poisson { rng, next } => {
                    let from = next.unwrap_or(start);
                    // Inverse-CDF sampling of Exp(rate); 1 - u is in (0, 1]
                    // so the logarithm is finite.
                    let u: f64 = rng.random();
                    let at = from - (1.0 - u).ln() / rate;
                    *next = Some(at);
                    at
                }
            };
            if at < end {
                return Some(Slot {
                    at: Duration::from_secs_f64(at),
                    phase: self.phase,
                });
            }
            self.next_phase();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(rate: f64, secs: f64) -> PhaseRate {
        PhaseRate {
            rate,
            duration: Duration::from_secs_f64(secs),
        }
    }

    #[test]
    fn constant_slots_are_exact_and_end_with_the_plan() {
        let slots: Vec<Slot> = Schedule::constant(&[phase(100.0, 1.0)], 0.0).collect();
        assert_eq!(slots.len(), 100);
        for (i, s) in slots.iter().enumerate() {
            let want = i as f64 / 100.0;
            assert!((s.at.as_secs_f64() - want).abs() < 1e-9, "slot {i}: {s:?}");
            assert_eq!(s.phase, 0);
        }
        // A long run does not drift: slot one million is where it should be.
        let last = Schedule::constant(&[phase(1e5, 10.0)], 0.0).last().unwrap();
        assert!((last.at.as_secs_f64() - 9.99999).abs() < 1e-9, "{last:?}");
    }

    #[test]
    fn phases_follow_each_other_with_their_own_rates() {
        let plan = [phase(10.0, 1.0), phase(0.0, 1.0), phase(100.0, 0.5)];
        let slots: Vec<Slot> = Schedule::constant(&plan, 0.0).collect();
        let count = |p| slots.iter().filter(|s| s.phase == p).count();
        assert_eq!((count(0), count(1), count(2)), (10, 0, 50));
        // The third phase starts at its boundary, 2 s in.
        let first = slots.iter().find(|s| s.phase == 2).unwrap();
        assert_eq!(first.at, Duration::from_secs(2));
        assert!(slots.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn staggered_workers_interleave_into_one_even_schedule() {
        // Four workers at 25/s with offsets k/4 = one schedule at 100/s.
        let plan = [phase(25.0, 1.0)];
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|k| Schedule::constant(&plan, k as f64 / 4.0).map(|s| s.at))
            .collect();
        all.sort();
        let single: Vec<Duration> = Schedule::constant(&[phase(100.0, 1.0)], 0.0)
            .map(|s| s.at)
            .collect();
        assert_eq!(all.len(), single.len());
        for (a, b) in all.iter().zip(&single) {
            assert!(a.abs_diff(*b) < Duration::from_nanos(10), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn poisson_is_repeatable_and_has_the_right_rate_and_spread() {
        let plan = [phase(1000.0, 20.0)];
        let a: Vec<Slot> = Schedule::poisson(&plan, 7).collect();
        let b: Vec<Slot> = Schedule::poisson(&plan, 7).collect();
        let c: Vec<Slot> = Schedule::poisson(&plan, 8).collect();
        assert_eq!(a, b, "same seed, same schedule");
        assert_ne!(a, c, "another seed, another schedule");
        // 20,000 expected; the standard deviation of a Poisson count is
        // sqrt(20,000) ≈ 141, so ±1,000 is a very safe bound.
        assert!((19_000..21_000).contains(&a.len()), "{}", a.len());
        // Exponential gaps: the coefficient of variation is 1 (a constant
        // schedule's is 0), and the mean gap is 1/rate.
        let gaps: Vec<f64> = a
            .windows(2)
            .map(|w| (w[1].at - w[0].at).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.001).abs() < 0.0001, "mean gap {mean}");
        let cv = var.sqrt() / mean;
        assert!((0.9..1.1).contains(&cv), "coefficient of variation {cv}");
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn poisson_restarts_at_phase_boundaries() {
        let plan = [phase(50.0, 2.0), phase(500.0, 2.0)];
        let slots: Vec<Slot> = Schedule::poisson(&plan, 1).collect();
        let first = slots.iter().filter(|s| s.phase == 0).count();
        let second = slots.iter().filter(|s| s.phase == 1).count();
        assert!((50..150).contains(&first), "{first}");
        assert!((850..1150).contains(&second), "{second}");
        assert!(
            slots
                .iter()
                .all(|s| (s.phase == 0) == (s.at < Duration::from_secs(2)))
        );
    }
}

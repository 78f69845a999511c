//! The search for the highest rate a server sustains: which rate to try
//! next, given what the rates tried so far showed. It runs nothing and
//! reads no clock; the benchmark runs each step and tells it the outcome.
//!
//! From the first rate it doubles while the rate is sustained, or halves
//! while it is not, until one of each is known; then it bisects between
//! them until they are close, or until its steps are spent.

/// The lowest rate it tries: below it, it gives up.
const FLOOR: u32 = 100;
/// The highest rate it tries.
const CEILING: u32 = 10_000_000;

/// A search under way.
#[derive(Debug)]
pub struct Search {
    /// The highest rate sustained so far.
    sustained: Option<u32>,
    /// The lowest rate not sustained so far.
    missed: Option<u32>,
    next: Option<u32>,
    steps_left: usize,
    /// It stops once the rate missed is at most this fraction above the
    /// one sustained.
    precision: f64,
}

impl Search {
    /// A search that tries `start` first and at most `steps` rates in all.
    pub fn new(start: u32, steps: usize, precision: f64) -> Search {
        Search {
            sustained: None,
            missed: None,
            next: (steps > 0).then_some(start.clamp(FLOOR, CEILING)),
            steps_left: steps,
            precision,
        }
    }

    /// The rate to try next, or `None` when the search is over.
    pub fn next(&self) -> Option<u32> {
        self.next
    }

    /// What the step at `rate` showed.
    pub fn record(&mut self, rate: u32, sustained: bool) {
        if sustained {
            self.sustained = self.sustained.max(Some(rate));
        } else {
            self.missed = Some(self.missed.map_or(rate, |missed| missed.min(rate)));
        }
        self.steps_left = self.steps_left.saturating_sub(1);
        self.next = if self.steps_left == 0 {
            None
        } else {
            match (self.sustained, self.missed) {
                (Some(low), None) => low.checked_mul(2).filter(|&rate| rate <= CEILING),
                (None, Some(high)) => Some(high / 2).filter(|&rate| rate >= FLOOR),
                (Some(low), Some(high)) if high > low => {
                    let gap = high - low;
                    (f64::from(gap) > f64::from(low) * self.precision).then(|| low + gap / 2)
                }
                _ => None,
            }
        };
    }

    /// The highest rate sustained, if any was.
    pub fn found(&self) -> Option<u32> {
        self.sustained
    }

    /// Whether a rate above the one found was tried and missed: if not,
    /// the server may sustain more than the search found.
    pub fn bounded(&self) -> bool {
        self.missed
            .is_some_and(|missed| self.sustained.is_none_or(|low| missed > low))
    }
}

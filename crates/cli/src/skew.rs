//! Which context each of the bench's appends goes to: round robin over N contexts (every
//! context equally often), or Zipf(s) over them, the shape of real traffic (a few hot
//! contexts, a long tail of idle ones). Deterministic per seed, with no dependency: a
//! `SplitMix64` stream and the Zipf CDF searched by bisection.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "ranks and draws are far below 2^52; a context number is below the context count, a usize"
)]

/// How appends spread over the contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// Round robin: every context in turn.
    Uniform,
    /// Zipf over the contexts by rank (`--zipf-s`, default 0.99): context 0 the hottest.
    Zipf,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Zipf => "zipf",
        }
    }
}

/// Draws context numbers in `0..n`.
#[derive(Debug, Clone)]
pub enum Spread {
    RoundRobin(usize),
    /// The cumulative weights of ranks 1..=n, normalised to 1.
    Zipf(std::sync::Arc<Vec<f64>>),
}

impl Spread {
    pub fn new(distribution: Distribution, n: usize, s: f64) -> Self {
        match distribution {
            Distribution::Uniform => Self::RoundRobin(n.max(1)),
            Distribution::Zipf => {
                let mut cdf = Vec::with_capacity(n.max(1));
                let mut total = 0.0;
                for rank in 1..=n.max(1) {
                    total += 1.0 / (rank as f64).powf(s);
                    cdf.push(total);
                }
                for c in &mut cdf {
                    *c /= total;
                }
                Self::Zipf(std::sync::Arc::new(cdf))
            }
        }
    }

    /// The context of append number `i`, drawn with `rng`.
    pub fn pick(&self, i: u64, rng: &mut SplitMix64) -> usize {
        match self {
            Self::RoundRobin(n) => (i % *n as u64) as usize,
            Self::Zipf(cdf) => {
                // 53 random bits as a uniform float in [0, 1).
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|c| *c <= u).min(cdf.len() - 1)
            }
        }
    }
}

/// `SplitMix64`: a small, fast, well-mixed generator (Steele, Lea and Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_context_in_turn() {
        let spread = Spread::new(Distribution::Uniform, 3, 0.99);
        let mut rng = SplitMix64::new(1);
        let picks: Vec<usize> = (0..7).map(|i| spread.pick(i, &mut rng)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn zipf_frequencies_follow_the_rank_law() {
        let (n, s, draws) = (1000, 0.99, 400_000);
        let spread = Spread::new(Distribution::Zipf, n, s);
        let mut rng = SplitMix64::new(7);
        let mut counts = vec![0u64; n];
        for i in 0..draws {
            counts[spread.pick(i, &mut rng)] += 1;
        }
        // P(rank k) ∝ k^-s: rank 1 over rank 2 is 2^s, over rank 10 is 10^s.
        let ratio = |a: usize, b: usize| counts[a] as f64 / counts[b] as f64;
        assert!((ratio(0, 1) - 2f64.powf(s)).abs() < 0.1, "{}", ratio(0, 1));
        assert!((ratio(0, 9) - 10f64.powf(s)).abs() < 1.0, "{}", ratio(0, 9));
        let harmonic: f64 = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).sum();
        let expected_first = draws as f64 / harmonic;
        assert!((counts[0] as f64 / expected_first - 1.0).abs() < 0.03);
        assert!(counts.iter().all(|c| *c < counts[0] + 1), "rank 1 is the hottest");
        assert!(counts[n - 1] > 0, "the tail is drawn too");
    }
}

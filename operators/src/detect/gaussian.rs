//! The windowed-Gaussian baseline, and the normal tail probabilities the
//! other detectors turn their statistics into.
//!
//! [`WindowedGaussian`] scores a value by how improbable it is under a normal
//! distribution with the mean and standard deviation of the last `window`
//! values: the classic baseline of window-scored anomaly benchmarks. In:
//! one value at a time (a `NaN` scores 0 and is not kept). Out: a score in
//! `[0, 1]`, [`from_tail`] of the two-sided tail probability. State: the
//! window (a ring of values) and its running sums, kept relative to the first
//! value so the variance stays precise for series far from zero; it is plain
//! data, checkpointed with the operator that owns it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Decades of improbability at which a score is one half: a tail
/// probability of 1e-6 scores 0.5, 1e-2 scores 0.25, 1e-18 scores 0.75.
/// The map `s / (s + HALF_SURPRISE)` keeps every difference of surprise a
/// difference of score, however far in the tail, so that a threshold can
/// always be placed between two of them.
pub const HALF_SURPRISE: f64 = 6.0;

/// `Q(z)`, the standard normal's upper tail probability, from the
/// complementary error function (Chebyshev fit, relative error below 1.2e-7).
pub fn normal_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// Decades of improbability of `|z|` under the standard normal, two-sided:
/// `−log10 P(|Z| ≥ |z|)`, exact in the far tail where the probability
/// itself underflows (the asymptotic series of Mills' ratio beyond |z| = 8,
/// relative error below 1e-5). 0 for a NaN.
pub fn normal_surprise(z: f64) -> f64 {
    let z = z.abs();
    if z.is_nan() {
        return 0.0;
    }
    if z < 8.0 {
        return -(2.0 * normal_tail(z)).max(f64::MIN_POSITIVE).log10();
    }
    // Q(z) = φ(z)/z · (1 − 1/z² + 3/z⁴ − 15/z⁶ + …).
    let w = 1.0 / (z * z);
    let series = 1.0 - w * (1.0 - w * (3.0 - 15.0 * w));
    let ln_q = -0.5 * z * z - (z * (2.0 * std::f64::consts::PI).sqrt()).ln() + series.ln();
    -(ln_q + std::f64::consts::LN_2) / std::f64::consts::LN_10
}

/// A score in `[0, 1)` from decades of improbability (see [`HALF_SURPRISE`]).
pub fn from_surprise(decades: f64) -> f64 {
    if decades.is_nan() || decades <= 0.0 {
        return 0.0;
    }
    if decades.is_infinite() {
        return 1.0;
    }
    decades / (decades + HALF_SURPRISE)
}

/// A score in `[0, 1]` from a tail probability.
pub fn from_tail(p: f64) -> f64 {
    from_surprise(-p.max(f64::MIN_POSITIVE).log10())
}

/// Mean and standard deviation of the last `window` values; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowedGaussian {
    window: usize,
    values: VecDeque<f64>,
    origin: Option<f64>,
    sum: f64,
    squares: f64,
}

/// Values needed before the baseline scores.
const MIN_VALUES: usize = 10;

impl WindowedGaussian {
    /// A baseline over the last `window` values (at least 10).
    pub fn new(window: usize) -> Self {
        WindowedGaussian {
            window: window.max(MIN_VALUES),
            values: VecDeque::new(),
            origin: None,
            sum: 0.0,
            squares: 0.0,
        }
    }

    /// The z-score of `x` against the window, if it holds enough values.
    pub fn z(&self, x: f64) -> Option<f64> {
        if self.values.len() < MIN_VALUES {
            return None;
        }
        let origin = self.origin?;
        let n = self.values.len() as f64;
        let mean = self.sum / n;
        let var = (self.squares / n - mean * mean).max(0.0);
        let sd = var
            .sqrt()
            .max(1e-9 * (mean + origin).abs())
            .max(f64::MIN_POSITIVE);
        Some((x - origin - mean) / sd)
    }

    /// Scores `x` against the values before it, then keeps it.
    pub fn update(&mut self, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let score = self.z(x).map_or(0.0, |z| from_surprise(normal_surprise(z)));
        let origin = *self.origin.get_or_insert(x);
        let d = x - origin;
        self.values.push_back(d);
        self.sum += d;
        self.squares += d * d;
        if self.values.len() > self.window {
            let old = self.values.pop_front().unwrap_or_default();
            self.sum -= old;
            self.squares -= old * old;
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    #[test]
    fn tails_are_the_normal_ones() {
        assert!((normal_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_tail(1.959_964) - 0.025).abs() < 1e-7);
        assert!((normal_surprise(1.959_964) - -0.05f64.log10()).abs() < 1e-5);
        // Continuous where the far-tail form takes over, and growing past it.
        let (a, b) = (normal_surprise(7.9999), normal_surprise(8.0001));
        assert!((a - b).abs() < 1e-3, "{a} {b}");
        assert!(normal_surprise(40.0) > normal_surprise(35.0));
        assert!((from_tail(1e-6) - 0.5).abs() < 1e-12);
        assert!(from_tail(1e-300) > from_tail(1e-200) && from_tail(0.0) < 1.0);
        assert_eq!(from_surprise(f64::NAN), 0.0);
    }

    #[test]
    fn scores_a_spike_in_noise_and_not_the_noise() {
        let mut noise = Noise::new(5);
        let mut g = WindowedGaussian::new(500);
        let scores: Vec<f64> = (0..3000)
            .map(|i| {
                g.update(if i == 2500 {
                    120.0
                } else {
                    100.0 + noise.normal()
                })
            })
            .collect();
        assert!(scores[2500] > 0.9, "{}", scores[2500]);
        let noisy = scores[..2500].iter().filter(|s| **s > 0.5).count();
        assert!(noisy <= 1, "{noisy}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    }
}

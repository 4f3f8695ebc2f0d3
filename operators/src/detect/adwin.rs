//! ADWIN: an adaptive window that shrinks when the mean of its stream changes.
//!
//! For degradation of a model's prequential error ("results varying largely
//! from past data"). The window holds the most recent values; every `clock`
//! values each split into an older and a newer part is tested, and when the
//! two means differ by more than the bound of Bifet & Gavaldà (2007),
//! `ε = sqrt(2·σ²·ln(2/δ')/m) + 2·ln(2/δ')/(3m)` with `m` the harmonic mean of
//! the parts and `δ' = δ / ln(n)`, the older part is dropped: a change is
//! reported. This keeps the window exactly (bounded by `max_window`) instead
//! of in exponential-histogram buckets; the test and its guarantees are the
//! same, the memory is larger but bounded.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{squash, Assessment};

/// The ADWIN change detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    delta: f64,
    clock: u64,
    max_window: usize,
    min_part: usize,
    window: VecDeque<f64>,
    ticks: u64,
    /// Mean before and after the last detected change.
    pub last_change: Option<(f64, f64)>,
}

impl Adwin {
    /// Confidence `delta` (0.002 is the usual choice), a test every `clock` values, at most `max_window` kept.
    pub fn new(delta: f64, clock: u64, max_window: usize) -> Self {
        Adwin {
            delta,
            clock: clock.max(1),
            max_window: max_window.max(64),
            min_part: 16,
            window: VecDeque::new(),
            ticks: 0,
            last_change: None,
        }
    }

    /// The current window's mean.
    pub fn mean(&self) -> f64 {
        if self.window.is_empty() {
            0.0
        } else {
            self.window.iter().sum::<f64>() / self.window.len() as f64
        }
    }

    /// Values in the window.
    pub fn width(&self) -> usize {
        self.window.len()
    }

    /// Adds `x`; reports whether the window was cut (a change in mean).
    pub fn update(&mut self, x: f64) -> Assessment {
        self.window.push_back(x);
        if self.window.len() > self.max_window {
            self.window.pop_front();
        }
        self.ticks += 1;
        if !self.ticks.is_multiple_of(self.clock) || self.window.len() < 2 * self.min_part {
            return Assessment::QUIET;
        }
        let n = self.window.len();
        let total: f64 = self.window.iter().sum();
        let mean = total / n as f64;
        let var = self.window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let delta_prime = self.delta / (n as f64).ln().max(1.0);
        let log_term = (2.0 / delta_prime).ln();
        let mut best: Option<(usize, f64, f64)> = None;
        let mut head = 0.0;
        for (i, v) in self.window.iter().enumerate().take(n - self.min_part) {
            head += v;
            let n0 = i + 1;
            if n0 < self.min_part || n0 % 8 != 0 {
                continue;
            }
            let n1 = n - n0;
            let (m0, m1) = (head / n0 as f64, (total - head) / n1 as f64);
            let m = 1.0 / (1.0 / n0 as f64 + 1.0 / n1 as f64);
            let eps = (2.0 * var * log_term / m).sqrt() + 2.0 * log_term / (3.0 * m);
            let gap = (m0 - m1).abs();
            if gap > eps && best.is_none_or(|b| gap / eps > b.1) {
                best = Some((n0, gap / eps, m0));
            }
        }
        match best {
            Some((cut, ratio, old_mean)) => {
                self.window.drain(..cut);
                self.last_change = Some((old_mean, self.mean()));
                Assessment {
                    score: squash(ratio, 1.0),
                    anomalous: true,
                }
            }
            None => Assessment::QUIET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    #[test]
    fn an_error_rate_that_jumps_is_detected_and_the_window_forgets_the_past() {
        let mut a = Adwin::new(0.002, 32, 20_000);
        let mut noise = Noise::new(11);
        let mut fired = Vec::new();
        // 0/1 errors whose rate jumps at 3000 (from about 1% to about 11%).
        let mut after = Vec::new();
        for i in 0..6000 {
            let threshold = if i < 3000 { -2.4 } else { -1.2 };
            let e = f64::from(noise.normal() < threshold);
            if i >= 3000 {
                after.push(e);
            }
            if a.update(e).anomalous {
                fired.push(i);
            }
        }
        let first = *fired.first().expect("the jump is detected");
        assert!((3000..3500).contains(&first), "{fired:?}");
        let new_rate = after.iter().sum::<f64>() / after.len() as f64;
        assert!(
            (a.mean() - new_rate).abs() < 0.02,
            "after the cut the window is the new regime: {} vs {new_rate}",
            a.mean()
        );
        assert!(a.width() < 3500);
    }

    #[test]
    fn a_stationary_stream_keeps_growing_its_window() {
        let mut a = Adwin::new(0.002, 32, 50_000);
        let mut noise = Noise::new(12);
        let alarms = (0..20_000)
            .filter(|_| a.update(noise.normal()).anomalous)
            .count();
        assert_eq!(alarms, 0);
        assert_eq!(a.width(), 20_000);
    }
}

//! ADWIN: an adaptive window that shrinks when the mean of its stream changes.
//!
//! For degradation of a model's prequential error ("results varying largely
//! from past data"). The window holds the most recent values in blocks of
//! `clock` values (count, sum, sum of squares); every `clock` values each
//! split of the window at a block boundary into an older and a newer part is
//! tested, and when the two means differ by more than the bound of Bifet &
//! Gavaldà (2007), `ε = sqrt(2·σ²·ln(2/δ')/m) + 2·ln(2/δ')/(3m)` with `m` the
//! harmonic mean of the parts and `δ' = δ / ln(n)`, the older part is
//! dropped: a change is reported. ADWIN2 keeps exponential-histogram buckets
//! and tests at their boundaries; equal blocks give the same test at a finer
//! grain, in memory linear in `max_window / clock` (a few kilobytes for the
//! 200,000-value windows a subtle concept drift needs) and a check that costs
//! one pass over the blocks, not over the values.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{squash, Assessment};

/// `clock` consecutive values, summarised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Block {
    n: u64,
    sum: f64,
    sum_sq: f64,
}

/// The ADWIN change detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    delta: f64,
    clock: u64,
    max_window: usize,
    min_part: u64,
    blocks: VecDeque<Block>,
    n: u64,
    /// Mean before and after the last detected change.
    pub last_change: Option<(f64, f64)>,
}

impl Adwin {
    /// Confidence `delta` (0.002 is the usual choice), a test every `clock` values, at most about `max_window` kept.
    pub fn new(delta: f64, clock: u64, max_window: usize) -> Self {
        Adwin {
            delta,
            clock: clock.max(1),
            max_window: max_window.max(64),
            min_part: 16,
            blocks: VecDeque::new(),
            n: 0,
            last_change: None,
        }
    }

    /// The current window's mean.
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.blocks.iter().map(|b| b.sum).sum::<f64>() / self.n as f64
        }
    }

    /// Values in the window.
    pub fn width(&self) -> usize {
        self.n as usize
    }

    /// Adds `x`; reports whether the window was cut (a change in mean).
    pub fn update(&mut self, x: f64) -> Assessment {
        match self.blocks.back_mut() {
            Some(b) if b.n < self.clock => {
                b.n += 1;
                b.sum += x;
                b.sum_sq += x * x;
            }
            _ => self.blocks.push_back(Block {
                n: 1,
                sum: x,
                sum_sq: x * x,
            }),
        }
        self.n += 1;
        // Forget the oldest whole block once the window is over its bound.
        while self.n as usize > self.max_window && self.blocks.len() > 1 {
            let old = self.blocks.pop_front().expect("more than one block");
            self.n -= old.n;
        }
        let last_full = self.blocks.back().is_some_and(|b| b.n == self.clock);
        if !last_full || self.n < 2 * self.min_part || self.blocks.len() < 2 {
            return Assessment::QUIET;
        }
        let n = self.n as f64;
        let (total, total_sq) = self
            .blocks
            .iter()
            .fold((0.0, 0.0), |(s, q), b| (s + b.sum, q + b.sum_sq));
        let mean = total / n;
        let var = (total_sq / n - mean * mean).max(0.0);
        let delta_prime = self.delta / n.ln().max(1.0);
        let log_term = (2.0 / delta_prime).ln();
        let mut best: Option<(usize, f64, f64)> = None;
        let (mut head, mut n0) = (0.0, 0u64);
        for (i, b) in self.blocks.iter().enumerate().take(self.blocks.len() - 1) {
            head += b.sum;
            n0 += b.n;
            let n1 = self.n - n0;
            if n0 < self.min_part || n1 < self.min_part {
                continue;
            }
            let (m0, m1) = (head / n0 as f64, (total - head) / n1 as f64);
            let m = 1.0 / (1.0 / n0 as f64 + 1.0 / n1 as f64);
            let gap = (m0 - m1).abs();
            // gap > sqrt(a) + b ⇔ gap − b > 0 and (gap − b)² > a: most
            // boundaries fail this without a square root (the slack keeps
            // every boundary the exact test below would accept).
            let (a, b) = (2.0 * var * log_term / m, 2.0 * log_term / (3.0 * m));
            let c = gap - b;
            if c <= 0.0 || c * c < a * (1.0 - 1e-9) {
                continue;
            }
            let eps = a.sqrt() + b;
            if gap > eps && best.is_none_or(|b| gap / eps > b.1) {
                best = Some((i + 1, gap / eps, m0));
            }
        }
        match best {
            Some((cut, ratio, old_mean)) => {
                for b in self.blocks.drain(..cut) {
                    self.n -= b.n;
                }
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
        assert!(a.width() < 3600);
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

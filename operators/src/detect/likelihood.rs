//! Anomaly likelihood: how unusual is this raw score, given the recent
//! distribution of raw scores of the same series?
//!
//! A raw anomaly score means different things on different series: on a
//! noisy one a raw 0.6 is an ordinary day, on a quiet one it is an incident.
//! This post-processor (the step Ahmad et al. describe for streaming
//! detectors, 2017) turns any raw score in `[0, 1]` into a calibrated one:
//! it keeps the mean and variance of the raw scores' short moving average
//! over a long history, and answers with the normal tail probability of the
//! current short average under that distribution, on the log scale of
//! [`from_tail`](super::gaussian::from_tail) so that scores far in the tail
//! stay distinct.
//!
//! In: raw scores, one per record, in order. Out: a score in `[0, 1]` per
//! record, 0 during the first `learning` records. State: the ring of the last
//! `short` raw scores and of the last `history` short averages, with their
//! running sums; plain data for checkpoints.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::gaussian::{from_tail, normal_tail};

/// The post-processor; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Likelihood {
    short: usize,
    history: usize,
    learning: usize,
    recent: VecDeque<f64>,
    recent_sum: f64,
    averages: VecDeque<f64>,
    sum: f64,
    squares: f64,
    n: u64,
}

/// The smallest standard deviation of the short averages: below it a
/// series whose raw scores never move would call any movement certain.
const MIN_SD: f64 = 0.01;

impl Default for Likelihood {
    fn default() -> Self {
        Likelihood::new(10, 8_640, 300)
    }
}

impl Likelihood {
    /// Short averages over `short` raw scores, their distribution over the
    /// last `history` of them, silent for the first `learning` records.
    pub fn new(short: usize, history: usize, learning: usize) -> Self {
        Likelihood {
            short: short.max(1),
            history: history.max(10),
            learning,
            recent: VecDeque::new(),
            recent_sum: 0.0,
            averages: VecDeque::new(),
            sum: 0.0,
            squares: 0.0,
            n: 0,
        }
    }

    /// The tail probability of the current short average (1 while learning).
    pub fn tail(&mut self, raw: f64) -> f64 {
        let raw = if raw.is_finite() { raw } else { 0.0 };
        self.recent.push_back(raw);
        self.recent_sum += raw;
        if self.recent.len() > self.short {
            self.recent_sum -= self.recent.pop_front().unwrap_or_default();
        }
        let average = self.recent_sum / self.recent.len() as f64;
        let tail = if (self.n as usize) < self.learning || self.averages.len() < 10 {
            1.0
        } else {
            let k = self.averages.len() as f64;
            let mean = self.sum / k;
            let sd = (self.squares / k - mean * mean).max(0.0).sqrt().max(MIN_SD);
            if average > mean {
                normal_tail((average - mean) / sd)
            } else {
                1.0
            }
        };
        self.averages.push_back(average);
        self.sum += average;
        self.squares += average * average;
        if self.averages.len() > self.history {
            let old = self.averages.pop_front().unwrap_or_default();
            self.sum -= old;
            self.squares -= old * old;
        }
        self.n += 1;
        tail
    }

    /// The calibrated score of `raw` (see the module docs).
    pub fn update(&mut self, raw: f64) -> f64 {
        let tail = self.tail(raw);
        if tail >= 1.0 {
            0.0
        } else {
            from_tail(tail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    #[test]
    fn a_burst_of_high_raw_scores_is_unlikely_and_the_usual_ones_are_not() {
        let mut noise = Noise::new(9);
        let mut l = Likelihood::default();
        let mut quiet = 0.0f64;
        for _ in 0..3000 {
            let raw = (0.2 + 0.05 * noise.normal()).clamp(0.0, 1.0);
            quiet = quiet.max(l.update(raw));
        }
        assert!(quiet < 0.45, "{quiet}");
        let burst = (0..5).map(|_| l.update(1.0)).fold(0.0, f64::max);
        assert!(burst > 0.8, "{burst}");
    }

    #[test]
    fn the_same_raw_score_means_less_on_a_noisy_series() {
        let mut noise = Noise::new(10);
        let (mut calm, mut noisy) = (Likelihood::default(), Likelihood::default());
        for _ in 0..2000 {
            calm.update((0.1 + 0.02 * noise.normal()).clamp(0.0, 1.0));
            noisy.update((0.3 + 0.2 * noise.normal()).clamp(0.0, 1.0));
        }
        let (a, b) = (calm.update(0.9), noisy.update(0.9));
        assert!(a > b, "{a} {b}");
    }
}

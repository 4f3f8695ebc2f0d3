//! Concept drift: has the model become worse at telling the labels apart?
//!
//! When the relation between the features and the label changes (the fraud
//! pattern of last month is not this month's), an online model keeps
//! scoring with what it learned until it has re-learned. Its 0/1 error rate
//! is a poor witness of that: on a stream where positives are rare the model
//! mostly answers "no" and the error rate barely moves while its ranking of
//! records collapses. This detector watches the ranking.
//!
//! In: `(score, label)` pairs in prequential order (the score the record got
//! before its label was learned; any score whose order matters, a probability
//! or not). Per **block** of `block` labelled records it computes the exact
//! ROC AUC of the block — how often a positive outranks a negative — and its
//! robust z-score against the previous `history` blocks (median and MAD, as
//! [`SpikeDip`] does; at least [`MIN_BLOCKS`] of them). The scale is never
//! below the AUC's own sampling error for the block's counts of positives
//! and negatives (Hanley and McNeil, 1982, at the median AUC): thirty blocks'
//! MAD can be well under it by chance, and a rare-positive stream's block
//! AUC is noisy. Out: per block, an
//! [`Assessment`]: a one-sided CUSUM of the z-scores below `−k` (`k` = 2)
//! fires past `h` (5 by default), so one block far below its history or two clearly
//! below it raise the alarm — a drift landing mid-block is caught by the
//! next block at the latest. Blocks with only one class are skipped.
//!
//! State: the pairs of the block being filled, the AUC history and the
//! CUSUM — plain data, checkpointed with the monitors.

use serde::{Deserialize, Serialize};

use super::spike::{Direction, SpikeDip};
use super::{squash, Assessment};
use crate::learn::eval::exact_auc;

/// Blocks of history before the detector judges (the model's early learning is not drift).
pub const MIN_BLOCKS: usize = 10;

/// CUSUM allowance per block, in robust standard deviations.
const K: f64 = 2.0;

/// CUSUM alarm threshold by default.
pub const DEFAULT_H: f64 = 5.0;

/// The detector; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityDrift {
    block: usize,
    pending: Vec<(f64, bool)>,
    history: SpikeDip,
    blocks: usize,
    cusum: f64,
    h: f64,
    /// The lowest block AUC since the CUSUM last stood at 0 (the last
    /// block's while it does), and the range its history expected.
    pub last: Option<(f64, Option<(f64, f64)>)>,
}

impl QualityDrift {
    /// Blocks of `block` labelled records, judged against the previous
    /// `history` blocks, firing when the CUSUM passes `h` ([`DEFAULT_H`]).
    pub fn new(block: usize, history: usize, h: f64) -> Self {
        QualityDrift {
            block: block.max(50),
            pending: Vec::new(),
            history: SpikeDip::new(history.max(MIN_BLOCKS), f64::INFINITY, Direction::Dips),
            blocks: 0,
            cusum: 0.0,
            h,
            last: None,
        }
    }

    /// Takes one labelled prediction; at the end of a block, its assessment.
    pub fn update(&mut self, score: f64, label: bool) -> Option<Assessment> {
        if !score.is_finite() {
            return None;
        }
        self.pending.push((score, label));
        if self.pending.len() < self.block {
            return None;
        }
        let positives = self.pending.iter().filter(|p| p.1).count() as f64;
        let negatives = self.pending.len() as f64 - positives;
        let auc = exact_auc(&mut self.pending);
        self.pending.clear();
        if !auc.is_finite() {
            return None; // One class only: nothing to rank.
        }
        let z = (self.blocks >= MIN_BLOCKS)
            .then(|| {
                let (lo, hi) = self.history.expected_range(1.0)?;
                let (median, scale) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
                let floor = auc_standard_error(median, positives, negatives);
                Some((auc - median) / scale.max(floor))
            })
            .flatten();
        let expected = z.and_then(|_| self.history.expected_range(3.0));
        self.history.update(auc);
        self.blocks += 1;
        let Some(z) = z else {
            self.last = Some((auc, expected));
            return Some(Assessment::QUIET);
        };
        let building = self.cusum > 0.0;
        self.cusum = (self.cusum - z - K).max(0.0);
        self.last = match self.last {
            Some((worst, e)) if building && worst <= auc => Some((worst, e)),
            _ => Some((auc, expected)),
        };
        Some(Assessment {
            score: squash(self.cusum, self.h),
            anomalous: self.cusum > self.h,
        })
    }

    /// Labelled records in all blocks so far.
    pub fn records(&self) -> usize {
        self.blocks * self.block + self.pending.len()
    }
}

/// The standard error of an AUC of `a` measured on `n1` positives and `n0`
/// negatives (Hanley and McNeil's formula).
pub fn auc_standard_error(a: f64, n1: f64, n0: f64) -> f64 {
    if n1 < 1.0 || n0 < 1.0 || !a.is_finite() {
        return f64::INFINITY;
    }
    let a = a.clamp(0.0, 1.0);
    let q1 = a / (2.0 - a);
    let q2 = 2.0 * a * a / (1.0 + a);
    let var = (a * (1.0 - a) + (n1 - 1.0) * (q1 - a * a) + (n0 - 1.0) * (q2 - a * a)) / (n1 * n0);
    var.max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream: positives score higher by `separation` (in noise units).
    fn stream(n: usize, separation: f64, seed: u64) -> Vec<(f64, bool)> {
        let mut noise = super::super::testing::Noise::new(seed);
        (0..n)
            .map(|i| {
                let positive = (i * 7919 + seed as usize).is_multiple_of(11);
                let s = noise.normal() + if positive { separation } else { 0.0 };
                (s, positive)
            })
            .collect()
    }

    #[test]
    fn a_model_that_stops_ranking_well_is_a_concept_drift_and_a_steady_one_is_not() {
        let mut d = QualityDrift::new(1000, 30, DEFAULT_H);
        let steady = stream(60_000, 2.0, 1);
        assert!(steady
            .iter()
            .filter_map(|(s, y)| d.update(*s, *y))
            .all(|a| !a.anomalous));
        // The concept changes: positives now look like negatives.
        let drifted = stream(3_000, 0.3, 2);
        let fired = drifted
            .iter()
            .filter_map(|(s, y)| d.update(*s, *y))
            .position(|a| a.anomalous);
        assert!(fired.is_some_and(|b| b <= 1), "{fired:?}");
        let (auc, expected) = d.last.unwrap();
        assert!(
            auc < 0.7 && expected.unwrap().0 > 0.85,
            "{auc} {expected:?}"
        );
    }

    #[test]
    fn the_standard_error_is_hanley_and_mcneils() {
        // AUC 0.75 on 80 positives and 920 negatives: √0.001047 ≈ 0.0324.
        let se = auc_standard_error(0.75, 80.0, 920.0);
        assert!((se - 0.0324).abs() < 0.001, "{se}");
        assert!(auc_standard_error(0.9, 0.0, 100.0).is_infinite());
    }

    #[test]
    fn the_early_blocks_of_a_model_still_learning_are_not_judged() {
        let mut d = QualityDrift::new(500, 30, DEFAULT_H);
        // AUC jumping around while the model learns.
        for b in 0..MIN_BLOCKS {
            let sep = if b % 2 == 0 { 0.2 } else { 2.5 };
            for (s, y) in stream(500, sep, b as u64) {
                if let Some(a) = d.update(s, y) {
                    assert!(!a.anomalous);
                }
            }
        }
    }
}

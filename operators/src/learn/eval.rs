//! Prequential evaluation of a binary classifier: accuracy, log loss and
//! exact ROC AUC.
//!
//! `score` emits one [`EvalPartial`] per epoch and worker; they merge by
//! addition (pairs are concatenated), so per-epoch and whole-run metrics are
//! the same computation over different merges.

use serde::{Deserialize, Serialize};

/// Evaluation counts over some set of labelled predictions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalPartial {
    /// Labelled predictions.
    pub n: u64,
    /// Predictions on the right side of the threshold.
    pub correct: u64,
    /// Sum of per-record log loss (probabilities clamped to [1e-15, 1 - 1e-15]).
    pub log_loss_sum: f64,
    /// Positive labels.
    pub positives: u64,
    /// `(score, label)` of every prediction, for exact AUC.
    pub pairs: Vec<(f64, bool)>,
    /// Smallest and largest event time (ms) of the records scored, labelled or not.
    pub event_range: Option<(i64, i64)>,
    /// The worker that scored them (partials merge in worker order, so pair order is deterministic).
    #[serde(default)]
    pub worker: usize,
    /// Regression: sum of absolute errors.
    #[serde(default)]
    pub abs_err_sum: f64,
    /// Regression: sum of squared errors.
    #[serde(default)]
    pub sq_err_sum: f64,
    /// Regression targets observed (the classification fields stay empty).
    #[serde(default)]
    pub regression: bool,
    /// The newest model version that scored these records.
    #[serde(default)]
    pub version: u64,
    /// Delayed labels: what became of predictions and labels (see [`crate::labels`]).
    #[serde(default)]
    pub labels: crate::labels::LabelCounts,
    /// The challenger's evaluation on the same records (see [`crate::arena`]).
    #[serde(default)]
    pub shadow: Option<Box<EvalPartial>>,
}

/// Metrics computed from an [`EvalPartial`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Labelled predictions.
    pub n: u64,
    /// Fraction correct at the threshold.
    pub accuracy: f64,
    /// Mean log loss.
    pub log_loss: f64,
    /// Exact ROC AUC (ties count half); NaN without both classes.
    pub auc: f64,
    /// Regression: mean absolute error (NaN for classifiers).
    #[serde(default)]
    pub mae: f64,
    /// Regression: root mean squared error (NaN for classifiers).
    #[serde(default)]
    pub rmse: f64,
}

impl EvalPartial {
    /// Records one prediction `p` of the positive class for label `y`.
    pub fn observe(&mut self, p: f64, y: bool, threshold: f64) {
        self.n += 1;
        if (p > threshold) == y {
            self.correct += 1;
        }
        let pc = p.clamp(1e-15, 1.0 - 1e-15);
        self.log_loss_sum -= if y { pc.ln() } else { (1.0 - pc).ln() };
        self.positives += u64::from(y);
        self.pairs.push((p, y));
    }

    /// Records one prediction `p` of a regression target `y`.
    pub fn observe_regression(&mut self, p: f64, y: f64) {
        self.n += 1;
        self.regression = true;
        self.abs_err_sum += (p - y).abs();
        self.sq_err_sum += (p - y) * (p - y);
    }

    /// Widens the event-time range to include `t`.
    pub fn saw_event_time(&mut self, t: i64) {
        self.event_range = Some(match self.event_range {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &EvalPartial) {
        if let Some((lo, hi)) = other.event_range {
            self.saw_event_time(lo);
            self.saw_event_time(hi);
        }
        self.n += other.n;
        self.correct += other.correct;
        self.log_loss_sum += other.log_loss_sum;
        self.positives += other.positives;
        self.pairs.extend_from_slice(&other.pairs);
        self.abs_err_sum += other.abs_err_sum;
        self.sq_err_sum += other.sq_err_sum;
        self.regression |= other.regression;
        self.version = self.version.max(other.version);
        self.labels.add(&other.labels);
        if let Some(o) = &other.shadow {
            self.shadow.get_or_insert_with(Default::default).merge(o);
        }
    }

    /// The metrics. Sorts `pairs` (hence `&mut`).
    pub fn metrics(&mut self) -> EvalMetrics {
        if self.n == 0 {
            return EvalMetrics {
                n: 0,
                accuracy: f64::NAN,
                log_loss: f64::NAN,
                auc: f64::NAN,
                mae: f64::NAN,
                rmse: f64::NAN,
            };
        }
        if self.regression {
            return EvalMetrics {
                n: self.n,
                accuracy: f64::NAN,
                log_loss: f64::NAN,
                auc: f64::NAN,
                mae: self.abs_err_sum / self.n as f64,
                rmse: (self.sq_err_sum / self.n as f64).sqrt(),
            };
        }
        EvalMetrics {
            n: self.n,
            accuracy: self.correct as f64 / self.n as f64,
            log_loss: self.log_loss_sum / self.n as f64,
            auc: exact_auc(&mut self.pairs),
            mae: f64::NAN,
            rmse: f64::NAN,
        }
    }
}

/// Exact ROC AUC by ranks (Mann–Whitney U), ties given their average rank.
pub fn exact_auc(pairs: &mut [(f64, bool)]) -> f64 {
    let pos = pairs.iter().filter(|p| p.1).count() as f64;
    let neg = pairs.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        // Ties by `total_cmp`, so a NaN (equal to itself there) cannot stall the loop.
        let mut j = i + 1;
        while j < pairs.len() && pairs[j].0.total_cmp(&pairs[i].0).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_textbook_cases() {
        let mut perfect = [(0.1, false), (0.2, false), (0.8, true), (0.9, true)];
        assert_eq!(exact_auc(&mut perfect), 1.0);
        let mut inverted = [(0.9, false), (0.1, true)];
        assert_eq!(exact_auc(&mut inverted), 0.0);
        let mut ties = [(0.5, false), (0.5, true)];
        assert_eq!(exact_auc(&mut ties), 0.5);
        // 3 positives, 2 negatives: pairs ordered right = 4 of 6.
        let mut mixed = [
            (0.1, false),
            (0.4, true),
            (0.75, false),
            (0.8, true),
            (0.7, true),
        ];
        assert!((exact_auc(&mut mixed) - 4.0 / 6.0).abs() < 1e-12);
        assert!(exact_auc(&mut [(0.3, true)]).is_nan());
        // A NaN score ends (it sorts above every number) instead of looping.
        let mut nan = [
            (f64::NAN, true),
            (0.2, false),
            (f64::NAN, false),
            (0.9, true),
        ];
        assert!((exact_auc(&mut nan) - 0.625).abs() < 1e-12);
    }

    #[test]
    fn merge_equals_whole() {
        let data = [
            (0.9, true),
            (0.2, false),
            (0.6, false),
            (0.4, true),
            (0.55, true),
        ];
        let mut whole = EvalPartial::default();
        let (mut a, mut b) = (EvalPartial::default(), EvalPartial::default());
        for (i, &(p, y)) in data.iter().enumerate() {
            whole.observe(p, y, 0.5);
            if i % 2 == 0 {
                a.observe(p, y, 0.5)
            } else {
                b.observe(p, y, 0.5)
            }
        }
        a.merge(&b);
        let (m1, m2) = (whole.metrics(), a.metrics());
        assert_eq!(m1.n, 5);
        assert_eq!(m1.accuracy, 3.0 / 5.0);
        assert!((m1.log_loss - m2.log_loss).abs() < 1e-12 && m1.auc == m2.auc);
    }
}

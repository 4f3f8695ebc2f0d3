//! Champion and challenger: a second model scores every record in shadow
//! beside the champion, both are evaluated on the same labelled records, and
//! the challenger is promoted by rule.
//!
//! `score` runs the challenger (`[challenger]`, any learner `[model]` can
//! be) on every example after the champion has scored it; the challenger's
//! score goes to the scored table as `shadow_score` and its prequential
//! metrics beside the champion's. Per epoch every worker sums, over the
//! labelled records it evaluated, the log loss and the hits of both models
//! ([`ArenaTally`]); all workers see all tallies (one epoch later, through a
//! feedback edge, like the model updates) and fold them in worker order into
//! the same [`Arena`], so every worker decides the same promotion at the
//! same epoch. The rule ([`PromoteRule`]): over the last `window_records`
//! labelled records, the challenger's mean log loss (or accuracy) is better
//! than the champion's by more than `margin`. On promotion the two swap: the
//! challenger becomes the champion, under the champion's next version (so
//! versions only go up), published to the registry and marked champion
//! there; the former champion stays on as the challenger. The window starts
//! again after a promotion.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::learn::EvalPartial;
use crate::Epoch;

/// Which metric decides a promotion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromoteMetric {
    /// Mean log loss (lower is better).
    #[default]
    LogLoss,
    /// Accuracy at the threshold (higher is better).
    Accuracy,
}

/// `[promotion]`: when the challenger takes over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRule {
    /// The metric compared.
    #[serde(default)]
    pub metric: PromoteMetric,
    /// How much better the challenger must be (in the metric's units).
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Labelled records the comparison is over (whole epochs, the latest ones).
    #[serde(default = "default_window")]
    pub window_records: u64,
}

fn default_margin() -> f64 {
    0.005
}

fn default_window() -> u64 {
    50_000
}

impl Default for PromoteRule {
    fn default() -> Self {
        PromoteRule {
            metric: PromoteMetric::LogLoss,
            margin: default_margin(),
            window_records: default_window(),
        }
    }
}

/// One worker's evaluation of both models over one epoch's labelled records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArenaTally {
    /// The worker.
    pub worker: usize,
    /// The epoch.
    pub epoch: Epoch,
    /// Labelled records evaluated by both.
    pub n: u64,
    /// Sum of log loss: champion, challenger.
    pub loss: [f64; 2],
    /// Hits at the threshold: champion, challenger.
    pub correct: [u64; 2],
    /// Promote now, whatever the rule says (a command, through worker 0).
    #[serde(default)]
    pub force: bool,
}

impl ArenaTally {
    /// The tally of an epoch's two evaluations.
    pub fn of(
        worker: usize,
        epoch: Epoch,
        champion: &EvalPartial,
        challenger: &EvalPartial,
    ) -> Self {
        ArenaTally {
            worker,
            epoch,
            n: champion.n.min(challenger.n),
            loss: [champion.log_loss_sum, challenger.log_loss_sum],
            correct: [champion.correct, challenger.correct],
            force: false,
        }
    }
}

/// The promotion state, the same on every worker (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Arena {
    rule: PromoteRule,
    window: VecDeque<ArenaTally>,
    /// Promotions so far.
    pub promotions: u64,
    /// The tally this worker sent last (sent again when resuming right after its epoch).
    pub outbox: Option<ArenaTally>,
}

impl Arena {
    /// A fresh arena deciding by `rule`.
    pub fn new(rule: PromoteRule) -> Self {
        Arena {
            rule,
            ..Arena::default()
        }
    }

    /// Folds in one epoch's tallies (every worker's, any order); true if the challenger is now promoted.
    pub fn observe(&mut self, tallies: &[ArenaTally]) -> bool {
        let mut sorted: Vec<&ArenaTally> = tallies.iter().collect();
        sorted.sort_by_key(|t| t.worker);
        if tallies.iter().any(|t| t.force) {
            self.promotions += 1;
            self.window.clear();
            return true;
        }
        let mut sum = ArenaTally::default();
        for t in sorted {
            sum.epoch = t.epoch;
            sum.n += t.n;
            sum.loss[0] += t.loss[0];
            sum.loss[1] += t.loss[1];
            sum.correct[0] += t.correct[0];
            sum.correct[1] += t.correct[1];
        }
        if sum.n == 0 {
            return false;
        }
        self.window.push_back(sum);
        // Keep the latest whole epochs that make up the window.
        while self.window.len() > 1
            && self.window.iter().skip(1).map(|t| t.n).sum::<u64>() >= self.rule.window_records
        {
            self.window.pop_front();
        }
        let n: u64 = self.window.iter().map(|t| t.n).sum();
        if n < self.rule.window_records {
            return false;
        }
        let nf = n as f64;
        let better = match self.rule.metric {
            PromoteMetric::LogLoss => {
                let l: [f64; 2] =
                    [0, 1].map(|i| self.window.iter().map(|t| t.loss[i]).sum::<f64>() / nf);
                l[0] - l[1] > self.rule.margin
            }
            PromoteMetric::Accuracy => {
                let a: [f64; 2] = [0, 1]
                    .map(|i| self.window.iter().map(|t| t.correct[i]).sum::<u64>() as f64 / nf);
                a[1] - a[0] > self.rule.margin
            }
        };
        if better {
            self.promotions += 1;
            self.window.clear();
        }
        better
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(worker: usize, n: u64, loss: [f64; 2]) -> ArenaTally {
        ArenaTally {
            worker,
            epoch: 0,
            n,
            loss,
            correct: [0, 0],
            force: false,
        }
    }

    #[test]
    fn promotes_once_the_window_is_full_and_the_margin_is_beaten() {
        let mut a = Arena::new(PromoteRule {
            metric: PromoteMetric::LogLoss,
            margin: 0.01,
            window_records: 200,
        });
        // Better by 0.05 per record, but only 100 records seen.
        assert!(!a.observe(&[tally(0, 50, [15.0, 12.5]), tally(1, 50, [15.0, 12.5])]));
        assert!(a.observe(&[tally(1, 100, [30.0, 25.0])]));
        assert_eq!((a.promotions, a.window.len()), (1, 0));
        // Not better by the margin: no promotion back.
        assert!(!a.observe(&[tally(0, 300, [90.0, 89.0])]));
    }
}

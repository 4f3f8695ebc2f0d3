//! An adaptive random forest classifier (ARF: Gomes et al. 2017, the
//! drift-adaptive ensemble of MOA and River) for binary labels.
//!
//! **Members.** `trees` Hoeffding trees ([`super::hoeffding`]) grown on the
//! same stream, each made different in two ways: **online bagging** — every
//! tree learns each record `k ~ Poisson(λ)` times over (λ = 6, as in the
//! paper: more than Oza's λ = 1, so each record is used more), and **random
//! subspaces** — every leaf, when it is made, draws the inputs it may split on
//! (`max_features`, default `⌊√m⌋ + 1` of the `m` inputs).
//! **Voting.** The forest's probability is the members' probabilities
//! weighted by each one's prequential accuracy since it was (re)started.
//! **Drift.** Every member has two ADWIN detectors on its own 0/1 error: a
//! *warning* (δ = 0.01) starts a background tree learning beside it, a
//! *drift* (δ = 0.001) replaces the member by its background tree (or a fresh
//! one), so after a change the forest is rebuilt member by member from trees
//! that have already seen the new concept. Only a rising error counts as a
//! change (as in MOA's ADWIN change detector): a tree that is getting better is
//! left alone.
//!
//! Each member draws from its own SplitMix64 sequence, seeded from the
//! forest's, so a forest is a pure function of its records and its state
//! (what a checkpoint holds) — restoring one continues exactly.

use serde::{Deserialize, Serialize};

use super::hoeffding::{splitmix, Settings, Tree};
use super::logistic::ModelSpec;
use crate::detect::adwin::Adwin;

/// The detectors' confidences (MOA's and River's defaults).
const WARNING_DELTA: f64 = 0.01;
const DRIFT_DELTA: f64 = 0.001;
/// Values between the detectors' checks, and the most they keep: a drift in
/// a 0/1 error shows within a few thousand records, so checking every 64
/// values (at ~310 block boundaries) delays a detection by at most 63 records
/// and costs ~5 boundary tests per value and detector.
const DETECTOR_CLOCK: u64 = 64;
const DETECTOR_WINDOW: usize = 20_000;

/// One member: its tree, its background tree and its detectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "ForestMember")] // (a name of its own for the state layout's trace; bincode has no names)
struct Member {
    tree: Tree,
    background: Option<Tree>,
    warning: Adwin,
    drift: Adwin,
    /// Prequential accuracy since the tree was (re)started: right, seen.
    right: f64,
    seen: f64,
    rng: u64,
}

impl Member {
    fn new(s: &Settings, rng: &mut u64) -> Member {
        let mut own = splitmix(rng);
        let tree = Tree::seeded(s, splitmix(&mut own));
        Member {
            tree,
            background: None,
            warning: Adwin::new(WARNING_DELTA, DETECTOR_CLOCK, DETECTOR_WINDOW),
            drift: Adwin::new(DRIFT_DELTA, DETECTOR_CLOCK, DETECTOR_WINDOW),
            right: 0.0,
            seen: 0.0,
            rng: own,
        }
    }

    /// The vote's weight: accuracy so far (a member that has seen nothing votes 1).
    fn weight(&self) -> f64 {
        if self.seen > 0.0 {
            self.right / self.seen
        } else {
            1.0
        }
    }

    /// A draw from Poisson(λ) (Knuth's product of uniforms; λ is small).
    fn poisson(&mut self, lambda: f64) -> u32 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= (splitmix(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
            if p <= limit || k >= 1_000 {
                return k;
            }
            k += 1;
        }
    }

    /// Whether `detector` reports a rise of the error after `error`.
    fn rises(detector: &mut Adwin, error: f64) -> bool {
        detector.update(error).anomalous
            && detector
                .last_change
                .is_some_and(|(before, after)| after > before)
    }

    /// Predict, learn, watch: one labelled example. True when the tree was replaced.
    fn learn(&mut self, x: &[f64], y: usize, s: &Settings, lambda: f64) -> bool {
        let k = self.poisson(lambda);
        // Predict-then-learn in one descent when there is something to learn.
        let predicted = if k > 0 {
            if let Some(b) = self.background.as_mut() {
                b.learn(x, y, k, s);
            }
            self.tree.learn(x, y, k, s)
        } else {
            self.tree.predict(x, s)
        };
        let wrong = (predicted > 0.5) != (y == 1);
        self.seen += 1.0;
        self.right += f64::from(!wrong);
        let error = f64::from(wrong);
        if Member::rises(&mut self.warning, error) {
            // (A later warning restarts the background tree: the change it saw may not be the last.)
            self.background = Some(Tree::seeded(s, splitmix(&mut self.rng)));
            self.warning = Adwin::new(WARNING_DELTA, DETECTOR_CLOCK, DETECTOR_WINDOW);
        }
        if Member::rises(&mut self.drift, error) {
            self.tree = match self.background.take() {
                Some(b) => b,
                None => Tree::seeded(s, splitmix(&mut self.rng)),
            };
            self.warning = Adwin::new(WARNING_DELTA, DETECTOR_CLOCK, DETECTOR_WINDOW);
            self.drift = Adwin::new(DRIFT_DELTA, DETECTOR_CLOCK, DETECTOR_WINDOW);
            self.right = 0.0;
            self.seen = 0.0;
            return true;
        }
        false
    }
}

/// The adaptive random forest. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveRandomForest {
    members: Vec<Member>,
    settings: Settings,
    lambda: f64,
    /// Labelled examples learned from.
    pub updates: u64,
    /// Members replaced after a drift.
    pub replaced: u64,
    /// Worker and workers, once [`share`](Self::share) has split the forest.
    #[serde(default)]
    shared: Option<(usize, usize)>,
    #[serde(skip)]
    x: Vec<f64>,
}

impl AdaptiveRandomForest {
    /// A forest over `dense_len` dense inputs and `sparse_len` sparse slots.
    ///
    /// `[model]`: `trees` (default 10), `max_features` (default ⌊√m⌋ + 1),
    /// `lambda` (default 6), and the trees' `grace_period` (default 50),
    /// `split_confidence` (default 0.01) and `max_depth` — the defaults of
    /// MOA's and River's ARF, whose trees grow faster than a lone tree's.
    pub fn new(spec: &ModelSpec, dense_len: usize, sparse_len: usize) -> Self {
        let mut settings = Settings::new(spec, dense_len, sparse_len);
        settings.grace_period = spec.grace_period.unwrap_or(50).max(1);
        settings.delta = spec.split_confidence.unwrap_or(0.01);
        let m = settings.inputs;
        settings.subspace = spec
            .max_features
            .unwrap_or(((m as f64).sqrt().floor() as usize) + 1)
            .clamp(1, m.max(1));
        let trees = spec.trees.unwrap_or(10).max(1);
        // Each member's share, counting its background tree.
        let settings = settings.sized(spec.max_size_mb.unwrap_or(100.0), 2 * trees);
        let mut rng = spec.seed.unwrap_or(1);
        let members = (0..trees)
            .map(|_| Member::new(&settings, &mut rng))
            .collect();
        AdaptiveRandomForest {
            members,
            settings,
            lambda: spec.lambda.unwrap_or(6.0),
            updates: 0,
            replaced: 0,
            shared: None,
            x: Vec::new(),
        }
    }

    /// Several workers: this worker grows its share of the forest, ⌈trees /
    /// workers⌉ members with draws of its own, and the workers' shares make the
    /// forest they all score with (see `score`). So the shared forest has about
    /// `trees` trees whatever the worker count: scoring costs what one worker's
    /// forest costs, and each tree learns from one worker's records. Only a
    /// fresh forest is split, once.
    pub fn share(&mut self, worker: usize, workers: usize) {
        if self.shared.is_some() || self.updates > 0 || workers <= 1 {
            return;
        }
        let n = self.members.len().div_ceil(workers).max(1);
        let mut rng = self.members[0].rng ^ (worker as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        self.members = (0..n)
            .map(|_| Member::new(&self.settings, &mut rng))
            .collect();
        self.shared = Some((worker, workers));
    }

    /// Probability of the positive class: the members' accuracy-weighted mean.
    pub fn predict(&self, dense: &[f64], sparse: &[u32]) -> f64 {
        let mut x = Vec::with_capacity(self.settings.inputs);
        self.settings.inputs(dense, sparse, &mut x);
        let (mut sum, mut weights) = (0.0, 0.0);
        for m in &self.members {
            let w = m.weight();
            sum += w * m.tree.predict(&x, &self.settings);
            weights += w;
        }
        if weights > 0.0 {
            sum / weights
        } else {
            // Every member wrong on everything so far: an unweighted vote.
            self.members
                .iter()
                .map(|m| m.tree.predict(&x, &self.settings))
                .sum::<f64>()
                / self.members.len() as f64
        }
    }

    /// Learns one labelled example (label 0 or 1).
    pub fn learn(&mut self, dense: &[f64], sparse: &[u32], y: f64) {
        let mut x = std::mem::take(&mut self.x);
        self.settings.inputs(dense, sparse, &mut x);
        let y = usize::from(y > 0.5);
        for m in &mut self.members {
            if m.learn(&x, y, &self.settings, self.lambda) {
                self.replaced += 1;
            }
        }
        self.updates += 1;
        self.x = x;
    }

    /// Members in the forest.
    pub fn trees(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A uniform [0, 1) sequence (an LCG), independent of the forest's own.
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Four inputs uniform in [0, 1): the label is an XOR of x0 > 0.5 and
    /// x1 > 0.5, or of x2 and x3 after `swap` (the concept moves to other inputs).
    fn xor(n: usize, seed: u64, swap: usize) -> Vec<([f64; 4], f64)> {
        let mut u = uniform(seed);
        (0..n)
            .map(|i| {
                let x = [u(), u(), u(), u()];
                let (a, b) = if i < swap { (0, 1) } else { (2, 3) };
                (x, f64::from((x[a] > 0.5) != (x[b] > 0.5)))
            })
            .collect()
    }

    fn accuracy(f: &AdaptiveRandomForest, test: &[([f64; 4], f64)]) -> f64 {
        test.iter()
            .filter(|(x, y)| (f.predict(x, &[]) > 0.5) == (*y > 0.5))
            .count() as f64
            / test.len() as f64
    }

    #[test]
    fn learns_xor_from_random_subspaces() {
        let mut f = AdaptiveRandomForest::new(&ModelSpec::default(), 4, 0);
        assert_eq!(f.settings.subspace, 3, "⌊√4⌋ + 1 inputs per leaf");
        for (x, y) in xor(20_000, 3, usize::MAX) {
            f.learn(&x, &[], y);
        }
        let acc = accuracy(&f, &xor(2_000, 4, usize::MAX));
        assert!(acc > 0.9, "accuracy {acc}");
    }

    #[test]
    fn a_moved_concept_is_relearned_member_by_member() {
        let spec = ModelSpec::default();
        let mut f = AdaptiveRandomForest::new(&spec, 4, 0);
        let data = xor(40_000, 5, 20_000);
        for (x, y) in &data[..20_000] {
            f.learn(x, &[], *y);
        }
        assert!(accuracy(&f, &xor(2_000, 6, usize::MAX)) > 0.9);
        let mut lone = crate::learn::HoeffdingTree::new(&spec, 4, 0);
        for (x, y) in &data[..20_000] {
            lone.learn(x, &[], *y);
        }
        // 5,000 records of the new concept.
        for (x, y) in &data[20_000..25_000] {
            f.learn(x, &[], *y);
            lone.learn(x, &[], *y);
        }
        let after = xor(2_000, 7, 0);
        let acc = accuracy(&f, &after);
        assert!(f.replaced >= 5, "most members replaced: {}", f.replaced);
        assert!(acc > 0.85, "the new concept 5,000 records on: {acc}");
        let lone_acc = after
            .iter()
            .filter(|(x, y)| (lone.predict(x, &[]) > 0.5) == (*y > 0.5))
            .count() as f64
            / after.len() as f64;
        assert!(
            acc > lone_acc,
            "the forest ({acc}) is back before a lone tree ({lone_acc})"
        );
    }

    #[test]
    fn a_restored_forest_continues_exactly() {
        for leaf in [None, Some(crate::learn::logistic::LeafPrediction::Logistic)] {
            let spec = ModelSpec {
                leaf_prediction: leaf,
                ..ModelSpec::default()
            };
            restored_continues(&spec);
        }
    }

    fn restored_continues(spec: &ModelSpec) {
        let data = xor(6_000, 8, 3_000);
        let mut a = AdaptiveRandomForest::new(spec, 4, 0);
        for (x, y) in &data[..4_000] {
            a.learn(x, &[], *y);
        }
        // As a checkpoint stores operator state.
        let bytes = bincode::serialize(&a).unwrap();
        let mut b: AdaptiveRandomForest = bincode::deserialize(&bytes).unwrap();
        for (x, y) in &data[4_000..] {
            a.learn(x, &[], *y);
            b.learn(x, &[], *y);
        }
        assert_eq!(a, b);
        if spec.leaf_prediction.is_none() {
            assert!(a.replaced > 0, "the restored part saw the drift");
        }
    }

    #[test]
    fn workers_grow_shares_of_one_forest() {
        let spec = ModelSpec::default();
        let share = |worker| {
            let mut f = AdaptiveRandomForest::new(&spec, 4, 0);
            f.share(worker, 4);
            f
        };
        let (a, b) = (share(0), share(1));
        assert_eq!((a.trees(), b.trees()), (3, 3), "⌈10 / 4⌉ each");
        assert_ne!(a.members[0].rng, b.members[0].rng, "draws of its own");
        let mut again = a.clone();
        again.share(0, 4);
        assert_eq!(again, a, "split once");
        let mut learned = AdaptiveRandomForest::new(&spec, 4, 0);
        learned.learn(&[0.0; 4], &[], 1.0);
        learned.share(0, 4);
        assert_eq!(
            learned.trees(),
            10,
            "a forest that has learned is kept whole"
        );
    }

    /// Four inputs uniform in [-1, 1); P(y = 1) = σ(w · x) with w = (3, -3,
    /// 2, -2), and the signs of w flipped from `flip` on (a linear concept
    /// reversed, like the reference stream's drift).
    fn reversed(n: usize, seed: u64, flip: usize) -> Vec<([f64; 4], f64)> {
        let mut u = uniform(seed);
        (0..n)
            .map(|i| {
                let x = [
                    u() * 2.0 - 1.0,
                    u() * 2.0 - 1.0,
                    u() * 2.0 - 1.0,
                    u() * 2.0 - 1.0,
                ];
                let sign = if i < flip { 1.0 } else { -1.0 };
                let z = sign * (3.0 * x[0] - 3.0 * x[1] + 2.0 * x[2] - 2.0 * x[3]);
                (x, f64::from(u() < crate::learn::logistic::sigmoid(z)))
            })
            .collect()
    }

    #[test]
    fn model_trees_recover_from_a_reversed_concept_before_logistic_regression() {
        let spec = ModelSpec {
            kind: crate::learn::logistic::ModelKind::AdaptiveRandomForest,
            leaf_prediction: Some(crate::learn::logistic::LeafPrediction::Logistic),
            ..ModelSpec::default()
        };
        let mut forest = AdaptiveRandomForest::new(&spec, 4, 0);
        let mut lr = crate::learn::LogisticRegression::new(&spec, 4, 0);
        let data = reversed(24_000, 12, 20_000);
        // Prequential log loss over the 2,000 records before and after the flip.
        let (mut before, mut after) = ([0.0; 2], [0.0; 2]);
        for (i, (x, y)) in data.iter().enumerate() {
            let loss = |p: f64| super::super::hoeffding::log_loss(p, usize::from(*y > 0.5));
            let sum = match i {
                18_000..20_000 => Some(&mut before),
                20_000..22_000 => Some(&mut after),
                _ => None,
            };
            if let Some(sum) = sum {
                sum[0] += loss(forest.predict(x, &[]));
                sum[1] += loss(lr.predict(x, &[]));
            }
            forest.learn(x, &[], *y);
            lr.learn(x, &[], *y);
        }
        let [f, l] = after.map(|s| s / 2_000.0);
        assert!(
            f < l - 0.05,
            "after the flip: forest {f}, logistic regression {l}"
        );
        let [f, l] = before.map(|s| s / 2_000.0);
        assert!(
            f < l + 0.02,
            "before it, as good: forest {f}, logistic regression {l}"
        );
    }

    #[test]
    fn poisson_draws_have_the_asked_mean() {
        let mut rng = 42;
        let mut m = Member::new(&Settings::new(&ModelSpec::default(), 4, 0), &mut rng);
        let n = 20_000;
        let sum: u32 = (0..n).map(|_| m.poisson(6.0)).sum();
        let mean = f64::from(sum) / n as f64;
        assert!((mean - 6.0).abs() < 0.1, "mean {mean}");
    }
}

//! Logistic regression trained online by SGD (River's `LogisticRegression`
//! with `optim.SGD`) or AdaGrad (`optim.AdaGrad`): predict first, then learn.
//!
//! Inputs are a dense vector (already standardised by the caller) and a set of
//! active sparse slots with value 1. The gradient of the log loss at the raw
//! margin `z` is `sigmoid(z) - y`; the intercept moves by its own learning
//! rate; L2 (`l2 * w` added to the gradient, as River does) applies to the
//! weights of the features present in the example, so an absent one-hot slot
//! keeps its weight — the same lazy regularisation as River's sparse weights.

use serde::{Deserialize, Serialize};

/// `[model]` in a topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The learner.
    #[serde(default)]
    pub kind: ModelKind,
    /// SGD step size for the weights.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// SGD step size for the intercept (defaults to `learning_rate`).
    #[serde(default)]
    pub intercept_learning_rate: Option<f64>,
    /// L2 penalty.
    #[serde(default)]
    pub l2: f64,
    /// Probability above which a prediction counts as positive.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// `kind = "feature"`: the dense feature whose value is the score (e.g. an `anomaly` feature).
    #[serde(default)]
    pub feature: Option<String>,
    /// `logistic_regression` and `linear_regression`: `sgd` or `adagrad`.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// `ftrl`: L1 penalty (sparsity).
    #[serde(default)]
    pub l1: f64,
    /// `ftrl`: the per-coordinate learning rate's α (default 0.1).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// `ftrl`: the per-coordinate learning rate's β (default 1).
    #[serde(default)]
    pub beta: Option<f64>,
    /// With several workers: a worker publishes its update to the shared model
    /// after learning this many labelled records (default 1,000; at most once per epoch)…
    #[serde(default)]
    pub refresh_records: Option<u64>,
    /// …or once its event time has moved this many seconds since it last did.
    #[serde(default)]
    pub refresh_event_seconds: Option<f64>,
    /// Every this many versions the shared model is published to the lake's registry (default 10).
    #[serde(default)]
    pub publish_every_versions: Option<u64>,
    /// Start from a version in the lake's registry instead of from zero (when
    /// there is no checkpoint): `champion`, `latest`, or `v<N>`.
    #[serde(default)]
    pub warm_start: Option<String>,
    /// The lake whose registry `warm_start` reads (default: this topology's lake).
    #[serde(default)]
    pub registry: Option<std::path::PathBuf>,
    /// Published versions whose exact state (`state.bin`, for warm starts)
    /// the registry keeps, newest first (default 10); the champion and the
    /// promotion history keep theirs too. Older versions keep their
    /// `model.json` and their line in `models list`.
    #[serde(default)]
    pub keep_versions: Option<usize>,
    /// `hoeffding_tree`: labelled records a leaf sees between split attempts (default 200).
    #[serde(default)]
    pub grace_period: Option<u64>,
    /// `hoeffding_tree`: the Hoeffding bound's confidence (default 1e-7).
    #[serde(default)]
    pub split_confidence: Option<f64>,
    /// `hoeffding_tree`, `adaptive_random_forest`: below this Hoeffding bound
    /// two inputs' gains count as tied and the leaf splits on either (default
    /// 0.05, River's `tie_threshold`).
    #[serde(default)]
    pub tie_threshold: Option<f64>,
    /// `hoeffding_tree`: deepest level (default 20).
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// `hoeffding_tree`, `adaptive_random_forest`: memory the learner's trees
    /// may grow to, in MiB (default 100, River's); a tree at its share stops
    /// splitting, and its leaves go on learning.
    #[serde(default)]
    pub max_size_mb: Option<f64>,
    /// `adaptive_random_forest`: trees in the forest (default 10).
    #[serde(default)]
    pub trees: Option<usize>,
    /// `adaptive_random_forest`: inputs each leaf may split on (default ⌊√m⌋ + 1 of m).
    #[serde(default)]
    pub max_features: Option<usize>,
    /// `adaptive_random_forest`: online bagging's Poisson rate (default 6).
    #[serde(default)]
    pub lambda: Option<f64>,
    /// `adaptive_random_forest`: the seed of its random draws (default 1).
    #[serde(default)]
    pub seed: Option<u64>,
    /// `hoeffding_tree`, `adaptive_random_forest`: what a leaf answers with
    /// (default `nba`).
    #[serde(default)]
    pub leaf_prediction: Option<LeafPrediction>,
}

/// What a tree's leaf predicts with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafPrediction {
    /// The leaf's class distribution (River's `mc`).
    #[serde(rename = "mc")]
    Majority,
    /// Naive Bayes over the leaf's per-class Gaussians (River's `nb`).
    #[serde(rename = "nb")]
    NaiveBayes,
    /// Naive Bayes or the class distribution, whichever has been right more
    /// often at the leaf (River's and MOA's default, `nba`).
    #[default]
    #[serde(rename = "nba")]
    NaiveBayesAdaptive,
    /// A model tree: a logistic regression at every node, learned by SGD at
    /// `learning_rate` from the records that pass it (a new leaf starts from
    /// its parent's weights, as in Bifet et al.'s Hoeffding perceptron tree,
    /// 2010, here with the log loss); each split answers with its own model
    /// or its subtree's, whichever has lately done better.
    Logistic,
}

/// How a linear model's weights move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Plain SGD with a constant step (River's `optim.SGD`).
    #[default]
    Sgd,
    /// Per-coordinate steps scaled by the root of the summed squared gradients (River's `optim.AdaGrad`).
    Adagrad,
}

fn default_lr() -> f64 {
    0.01
}

fn default_threshold() -> f64 {
    0.5
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            kind: ModelKind::default(),
            learning_rate: default_lr(),
            intercept_learning_rate: None,
            l2: 0.0,
            threshold: default_threshold(),
            feature: None,
            optimizer: Optimizer::Sgd,
            l1: 0.0,
            alpha: None,
            beta: None,
            refresh_records: None,
            refresh_event_seconds: None,
            publish_every_versions: None,
            warm_start: None,
            registry: None,
            keep_versions: None,
            grace_period: None,
            split_confidence: None,
            max_depth: None,
            max_size_mb: None,
            trees: None,
            max_features: None,
            lambda: None,
            seed: None,
            leaf_prediction: None,
            tie_threshold: None,
        }
    }
}

/// The online learners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Binary logistic regression (SGD or AdaGrad).
    #[default]
    LogisticRegression,
    /// Binary logistic regression by FTRL-Proximal (McMahan et al. 2013): sparse, L1 and L2.
    Ftrl,
    /// Least-squares linear regression (SGD or AdaGrad), for `regression` labels.
    LinearRegression,
    /// A Hoeffding tree classifier (VFDT with Gaussian split estimation for numeric features).
    HoeffdingTree,
    /// An adaptive random forest of Hoeffding trees (online bagging, random
    /// subspaces, per-tree drift detection and background trees).
    AdaptiveRandomForest,
    /// No learner: the score is the value of the dense feature named by
    /// `feature` (an `anomaly` feature, say), evaluated against the labels if
    /// there are any.
    Feature,
}

/// The largest weight magnitude: with features held within ±1e100 (see
/// `featurize`) and gradients within ±1e12, a margin stays finite however an
/// SGD run diverges, so no score is ever NaN. Real models are far inside it.
const MAX_WEIGHT: f64 = 1e100;

/// The logistic function, clamped like River's `utils.math.sigmoid`.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    if z < -30.0 {
        0.0
    } else if z > 30.0 {
        1.0
    } else {
        1.0 / (1.0 + (-z).exp())
    }
}

/// The gradient of the log loss with respect to the margin `z`, for a label in {0, 1}.
///
/// Mathematically `sigmoid(z) - y`; computed in River's numerically careful
/// form (label mapped to ±1, exponentials cut off beyond |z| = 18) so scores
/// match River's to the last bit.
#[inline]
pub fn log_loss_gradient(z: f64, y: f64) -> f64 {
    let y = if y > 0.5 { 1.0 } else { -1.0 };
    let zy = z * y;
    if zy > 18.0 {
        (-zy).exp() * -y
    } else if zy < -18.0 {
        -y
    } else {
        -y / (zy.exp() + 1.0)
    }
}

/// Weights of a logistic regression over `dense + sparse` features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegression {
    /// Weights: the dense features first, then the sparse slots.
    pub weights: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
    /// Labelled examples learned from.
    pub updates: u64,
    lr: f64,
    intercept_lr: f64,
    l2: f64,
    dense_len: usize,
    /// AdaGrad: summed squared gradients per weight, then the intercept's (empty for SGD).
    #[serde(default)]
    pub g2: Vec<f64>,
}

/// AdaGrad's guard against dividing by zero (River's default).
const ADAGRAD_EPS: f64 = 1e-8;

impl LogisticRegression {
    /// A zero model for `dense_len` dense features and `sparse_len` sparse slots.
    pub fn new(spec: &ModelSpec, dense_len: usize, sparse_len: usize) -> Self {
        LogisticRegression {
            weights: vec![0.0; dense_len + sparse_len],
            intercept: 0.0,
            updates: 0,
            lr: spec.learning_rate,
            intercept_lr: spec.intercept_learning_rate.unwrap_or(spec.learning_rate),
            l2: spec.l2,
            dense_len,
            g2: match spec.optimizer {
                Optimizer::Sgd => Vec::new(),
                Optimizer::Adagrad => vec![0.0; dense_len + sparse_len + 1],
            },
        }
    }

    /// The learnable state as one vector: weights, intercept, then AdaGrad's accumulators.
    pub fn params(&self) -> Vec<f64> {
        let mut p = self.weights.clone();
        p.push(self.intercept);
        p.extend_from_slice(&self.g2);
        p
    }

    /// Sets the state from [`params`](Self::params)' layout.
    pub fn set_params(&mut self, p: &[f64]) {
        let n = self.weights.len();
        self.weights.copy_from_slice(&p[..n]);
        self.intercept = p[n];
        self.g2.copy_from_slice(&p[n + 1..]);
    }

    /// The raw margin `w·x + b`.
    #[inline]
    pub fn margin(&self, dense: &[f64], sparse: &[u32]) -> f64 {
        // Sparse (one-hot) terms first, then dense: River's summation order.
        let mut z = 0.0;
        for &s in sparse {
            z += self.weights[self.dense_len + s as usize];
        }
        for (w, x) in self.weights[..self.dense_len].iter().zip(dense) {
            z += w * x;
        }
        z + self.intercept
    }

    /// Probability of the positive class.
    #[inline]
    pub fn predict(&self, dense: &[f64], sparse: &[u32]) -> f64 {
        sigmoid(self.margin(dense, sparse))
    }

    /// One step on the log loss for label `y` (0 or 1).
    pub fn learn(&mut self, dense: &[f64], sparse: &[u32], y: f64) {
        let g = log_loss_gradient(self.margin(dense, sparse), y).clamp(-1e12, 1e12);
        self.step(dense, sparse, g);
    }

    /// One step on the squared loss for target `y` (linear regression: the margin is the prediction).
    pub fn learn_squared(&mut self, dense: &[f64], sparse: &[u32], y: f64) {
        let g = (self.margin(dense, sparse) - y).clamp(-1e12, 1e12);
        self.step(dense, sparse, g);
    }

    /// Moves the weights for margin gradient `g`, by SGD or AdaGrad.
    fn step(&mut self, dense: &[f64], sparse: &[u32], g: f64) {
        if !self.g2.is_empty() {
            self.adagrad_step(dense, sparse, g);
            return;
        }
        self.intercept = (self.intercept - self.intercept_lr * g).clamp(-MAX_WEIGHT, MAX_WEIGHT);
        let (lr, l2) = (self.lr, self.l2);
        for (w, x) in self.weights[..self.dense_len].iter_mut().zip(dense) {
            *w = (*w - lr * (x * g + l2 * *w)).clamp(-MAX_WEIGHT, MAX_WEIGHT);
        }
        for &s in sparse {
            let w = &mut self.weights[self.dense_len + s as usize];
            *w = (*w - lr * (g + l2 * *w)).clamp(-MAX_WEIGHT, MAX_WEIGHT);
        }
        self.updates += 1;
    }

    /// An AdaGrad step for margin gradient `g`: each weight moves by
    /// `lr · gᵢ / sqrt(Gᵢ + ε)` after adding `gᵢ²` to its accumulator.
    fn adagrad_step(&mut self, dense: &[f64], sparse: &[u32], g: f64) {
        let (lr, l2, n) = (self.lr, self.l2, self.weights.len());
        self.g2[n] += g * g;
        self.intercept -= self.intercept_lr * g / (self.g2[n] + ADAGRAD_EPS).sqrt();
        for (i, x) in dense.iter().enumerate() {
            let gi = x * g + l2 * self.weights[i];
            self.g2[i] += gi * gi;
            self.weights[i] -= lr * gi / (self.g2[i] + ADAGRAD_EPS).sqrt();
        }
        for &s in sparse {
            let i = self.dense_len + s as usize;
            let gi = g + l2 * self.weights[i];
            self.g2[i] += gi * gi;
            self.weights[i] -= lr * gi / (self.g2[i] + ADAGRAD_EPS).sqrt();
        }
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_separable_rule() {
        let mut m = LogisticRegression::new(
            &ModelSpec {
                learning_rate: 0.5,
                ..Default::default()
            },
            1,
            2,
        );
        for i in 0..2_000 {
            let x = if i % 2 == 0 { 1.0 } else { -1.0 };
            m.learn(&[x], &[(i % 2) as u32], f64::from(x > 0.0));
        }
        assert!(m.predict(&[1.0], &[0]) > 0.95);
        assert!(m.predict(&[-1.0], &[1]) < 0.05);
        assert_eq!(m.updates, 2_000);
    }

    #[test]
    fn one_step_by_hand() {
        let mut m = LogisticRegression::new(&ModelSpec::default(), 2, 1);
        // z = 0, p = 0.5, g = 0.5 - 1 = -0.5
        m.learn(&[2.0, -1.0], &[0], 1.0);
        assert_eq!(m.weights, [0.01, -0.005, 0.005]);
        assert_eq!(m.intercept, 0.005);
        assert_eq!(sigmoid(31.0), 1.0);
    }

    #[test]
    fn gradient_is_sigmoid_minus_label() {
        for z in [-40.0, -18.5, -3.0, 0.0, 0.7, 17.9, 25.0] {
            for y in [0.0, 1.0] {
                let g = log_loss_gradient(z, y);
                // Exact inside |z| <= 18; beyond, River's cut-off is off by at most e^-18.
                let tol = if f64::abs(z) <= 18.0 { 1e-15 } else { 2e-8 };
                let exact = 1.0 / (1.0 + f64::exp(-z)) - y;
                assert!((g - exact).abs() < tol, "z={z} y={y} g={g}");
            }
        }
    }
}

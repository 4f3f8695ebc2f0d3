//! Online learning: the algorithms behind `score`.
//!
//! Everything here is plain data plus arithmetic, serializable so a
//! checkpoint can carry it, and free of timely so it can be tested alone.
//! [`Learner`] is the one type `score` holds, whichever learner the topology
//! chose; learners whose state is a vector of numbers expose it
//! ([`Learner::params`]) so workers' updates can be merged into one model.

pub mod eval;
pub mod forest;
pub mod ftrl;
pub mod hoeffding;
pub mod logistic;
pub mod scaler;

pub use eval::EvalPartial;
pub use forest::AdaptiveRandomForest;
pub use ftrl::Ftrl;
pub use hoeffding::HoeffdingTree;
pub use logistic::LogisticRegression;
pub use scaler::StandardScaler;

use serde::{Deserialize, Serialize};

use logistic::{ModelKind, ModelSpec};

/// The learner of a topology's `[model]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Learner {
    /// Logistic regression, SGD or AdaGrad.
    Logistic(LogisticRegression),
    /// Linear regression (the same weights, squared loss, no link).
    Linear(LogisticRegression),
    /// FTRL-Proximal logistic regression.
    Ftrl(Ftrl),
    /// A Hoeffding tree classifier (several workers: a forest of their trees, see `score`).
    Tree(Box<HoeffdingTree>),
    /// An adaptive random forest (several workers: their forests' mean, as for trees).
    Forest(Box<AdaptiveRandomForest>),
}

impl Learner {
    /// A fresh learner of `spec.kind` for `dense_len` dense features and `sparse_len` sparse slots.
    pub fn new(spec: &ModelSpec, dense_len: usize, sparse_len: usize) -> Learner {
        match spec.kind {
            ModelKind::Ftrl => Learner::Ftrl(Ftrl::new(spec, dense_len, sparse_len)),
            ModelKind::HoeffdingTree => {
                Learner::Tree(Box::new(HoeffdingTree::new(spec, dense_len, sparse_len)))
            }
            ModelKind::AdaptiveRandomForest => Learner::Forest(Box::new(
                AdaptiveRandomForest::new(spec, dense_len, sparse_len),
            )),
            ModelKind::LinearRegression => {
                Learner::Linear(LogisticRegression::new(spec, dense_len, sparse_len))
            }
            _ => Learner::Logistic(LogisticRegression::new(spec, dense_len, sparse_len)),
        }
    }

    /// The prediction: a probability for classifiers, a value for regression.
    #[inline]
    pub fn predict(&self, dense: &[f64], sparse: &[u32]) -> f64 {
        let p = match self {
            Learner::Logistic(m) => m.predict(dense, sparse),
            Learner::Linear(m) => m.margin(dense, sparse),
            Learner::Ftrl(m) => m.predict(dense, sparse),
            Learner::Tree(m) => m.predict(dense, sparse),
            Learner::Forest(m) => m.predict(dense, sparse),
        };
        // Features are finite and weights bounded, so this is a last guard: a
        // NaN score would poison every metric and ranking downstream.
        if p.is_nan() {
            if self.is_classifier() {
                0.5
            } else {
                0.0
            }
        } else {
            p
        }
    }

    /// Learns one labelled example.
    #[inline]
    pub fn learn(&mut self, dense: &[f64], sparse: &[u32], y: f64) {
        match self {
            Learner::Logistic(m) => m.learn(dense, sparse, y),
            Learner::Linear(m) => m.learn_squared(dense, sparse, y),
            Learner::Ftrl(m) => m.learn(dense, sparse, y),
            Learner::Tree(m) => m.learn(dense, sparse, y),
            Learner::Forest(m) => m.learn(dense, sparse, y),
        }
    }

    /// Whether predictions are probabilities of a binary label.
    pub fn is_classifier(&self) -> bool {
        !matches!(self, Learner::Linear(_))
    }

    /// Labelled examples learned from.
    pub fn updates(&self) -> u64 {
        match self {
            Learner::Logistic(m) | Learner::Linear(m) => m.updates,
            Learner::Ftrl(m) => m.updates,
            Learner::Tree(m) => m.updates,
            Learner::Forest(m) => m.updates,
        }
    }

    /// The learnable state as one vector, if it merges by adding updates.
    pub fn params(&self) -> Option<Vec<f64>> {
        Some(match self {
            Learner::Logistic(m) | Learner::Linear(m) => m.params(),
            Learner::Ftrl(m) => m.params(),
            Learner::Tree(_) | Learner::Forest(_) => return None,
        })
    }

    /// Parameter `i` of [`params`](Self::params)' layout.
    pub fn param(&self, i: usize) -> f64 {
        match self {
            Learner::Logistic(m) | Learner::Linear(m) => {
                let n = m.weights.len();
                match i.cmp(&n) {
                    std::cmp::Ordering::Less => m.weights[i],
                    std::cmp::Ordering::Equal => m.intercept,
                    std::cmp::Ordering::Greater => m.g2[i - n - 1],
                }
            }
            Learner::Ftrl(m) => {
                let k = m.z.len();
                if i < k {
                    m.z[i]
                } else {
                    m.n[i - k]
                }
            }
            Learner::Tree(_) | Learner::Forest(_) => 0.0,
        }
    }

    /// Sets parameter `i` of [`params`](Self::params)' layout.
    pub fn set_param(&mut self, i: usize, v: f64) {
        match self {
            Learner::Logistic(m) | Learner::Linear(m) => {
                let n = m.weights.len();
                match i.cmp(&n) {
                    std::cmp::Ordering::Less => m.weights[i] = v,
                    std::cmp::Ordering::Equal => m.intercept = v,
                    std::cmp::Ordering::Greater => m.g2[i - n - 1] = v,
                }
            }
            Learner::Ftrl(m) => {
                let k = m.z.len();
                if i < k {
                    m.z[i] = v
                } else {
                    m.n[i - k] = v
                }
            }
            Learner::Tree(_) | Learner::Forest(_) => {}
        }
    }

    /// Appends the indices (in [`params`](Self::params)' layout) that learning an
    /// example with `dense_len` dense values and these sparse slots changes.
    pub fn touched(&self, dense_len: usize, sparse: &[u32], out: &mut Vec<u32>) {
        let coords = (0..dense_len as u32).chain(sparse.iter().map(|s| dense_len as u32 + s));
        match self {
            Learner::Logistic(m) | Learner::Linear(m) => {
                let n = m.weights.len() as u32;
                let start = out.len();
                out.extend(coords);
                out.push(n);
                if !m.g2.is_empty() {
                    let end = out.len();
                    for j in start..end {
                        let i = out[j];
                        out.push(n + 1 + i);
                    }
                }
            }
            Learner::Ftrl(m) => {
                let k = m.z.len() as u32;
                let start = out.len();
                out.extend(coords);
                out.push(k - 1);
                let end = out.len();
                for j in start..end {
                    let i = out[j];
                    out.push(k + i);
                }
            }
            Learner::Tree(_) | Learner::Forest(_) => {}
        }
    }

    /// Several workers whose models make a forest (see `score`): an ensemble
    /// keeps this worker's share of its members (a lone tree is its own share).
    pub fn share(&mut self, worker: usize, workers: usize) {
        if let Learner::Forest(f) = self {
            f.share(worker, workers);
        }
    }

    /// Sets the count of examples learned.
    pub fn set_updates(&mut self, updates: u64) {
        match self {
            Learner::Logistic(m) | Learner::Linear(m) => m.updates = updates,
            Learner::Ftrl(m) => m.updates = updates,
            Learner::Tree(m) => m.updates = updates,
            Learner::Forest(m) => m.updates = updates,
        }
    }

    /// Sets the state from [`params`](Self::params)' layout and the merged update count.
    pub fn set_params(&mut self, p: &[f64], updates: u64) {
        match self {
            Learner::Logistic(m) | Learner::Linear(m) => {
                m.set_params(p);
                m.updates = updates;
            }
            Learner::Ftrl(m) => {
                m.set_params(p);
                m.updates = updates;
            }
            Learner::Tree(_) | Learner::Forest(_) => {}
        }
    }
}

//! A Hoeffding tree classifier (VFDT: Domingos & Hulten 2000) for binary
//! labels, with Gaussian split estimation for numeric inputs and adaptive
//! naive-Bayes leaves, and a drift guard at the root.
//!
//! **Growing.** Each leaf keeps, per class, the count and, per input and
//! class, a Gaussian (count, mean, M2, min, max). Every `grace_period`
//! labelled records a leaf that has seen both classes evaluates binary splits
//! `x ≤ t` at 10 thresholds per input between the smallest and largest value
//! seen, estimating each side's class counts from the Gaussians, by
//! information gain. It splits on the best input when its gain beats the
//! second best input's by more than the Hoeffding bound
//! `ε = sqrt(R²·ln(1/δ) / 2n)` (R = 1 bit for two classes), or when ε has
//! fallen below the tie threshold 0.05: with probability 1 − δ the same split
//! a batch learner would choose on infinite data. Children start from the
//! class counts the split estimated.
//! **Predicting.** A leaf answers with naive Bayes over its Gaussians or with
//! its (Laplace-smoothed) class distribution, whichever has been right more
//! often on the records it has seen (River's `nba`).
//! **Drift.** ADWIN watches the tree's 0/1 errors; when the error rate rises,
//! a fresh tree starts learning beside the current one, and replaces it once
//! it has been right more often over 1,000 records (the root-level form of a
//! Hoeffding adaptive tree). A concept drift then costs the time a new tree
//! needs to grow, instead of the time an old tree needs to unlearn.
//! **Inputs.** Dense features as given (a tree does not need them
//! standardised, and is not hurt by it), and sparse slots as 0/1 inputs when
//! there are at most 256 of them (one-hot categoricals); more (large hashed
//! spaces) are left to linear learners.

use serde::{Deserialize, Serialize};

use super::logistic::{sigmoid, LeafPrediction, ModelSpec};
use crate::detect::adwin::Adwin;

/// Inputs beyond which sparse slots are not used by the tree.
const MAX_SPARSE: usize = 256;
/// Candidate thresholds per input.
const CANDIDATES: usize = 10;
/// Records the alternate tree and the current one are compared over.
const TRIAL: u64 = 1_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Gauss {
    n: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Gauss {
    /// Adds `x` with weight `w` (West's weighted update; exact for `w` = 1).
    fn add(&mut self, x: f64, w: f64) {
        if self.n == 0.0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += w;
        let d = x - self.mean;
        self.mean += w * d / self.n;
        self.m2 += w * d * (x - self.mean);
    }

    fn sd(&self) -> f64 {
        if self.n > 1.0 {
            (self.m2 / (self.n - 1.0)).sqrt()
        } else {
            0.0
        }
    }

    /// P(X ≤ t) under this Gaussian (a step when it has no spread).
    fn cdf(&self, t: f64) -> f64 {
        let sd = self.sd();
        if sd <= 1e-12 {
            return if t >= self.mean { 1.0 } else { 0.0 };
        }
        0.5 * (1.0 + erf((t - self.mean) / (sd * std::f64::consts::SQRT_2)))
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let sd = self.sd().max(1e-3);
        let z = (x - self.mean) / sd;
        -0.5 * z * z - sd.ln() - 0.918_938_533_204_672_8
    }
}

/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

fn entropy(a: f64, b: f64) -> f64 {
    let n = a + b;
    if n <= 0.0 {
        return 0.0;
    }
    let h = |p: f64| if p > 0.0 { -p * p.log2() } else { 0.0 };
    h(a / n) + h(b / n)
}

/// A candidate split: information gain, input, threshold, and the left and
/// right children's estimated class counts.
type Candidate = (f64, usize, f64, [f64; 2], [f64; 2]);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Leaf {
    depth: u32,
    /// Class counts (from the split estimate, then observed).
    counts: [f64; 2],
    /// The inputs this leaf watches, when it watches a random subset (a
    /// forest's tree); empty: all of them.
    #[serde(default)]
    subset: Vec<u32>,
    /// Per watched input: a Gaussian per class.
    stats: Vec<[Gauss; 2]>,
    /// Weight learned since the last split attempt.
    since_attempt: u64,
    nb_right: f64,
    mc_right: f64,
    /// `leaf_prediction = "logistic"`: the leaf's model.
    #[serde(default)]
    model: Option<NodeModel>,
}

/// A model tree's logistic regression at one node (`leaf_prediction =
/// "logistic"`), learned by SGD from the records that pass the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeModel {
    /// One weight per input, then the intercept.
    w: Vec<f64>,
    /// Recent log loss (exponentially weighted) of this node's own model on
    /// the records through it…
    own: f64,
    /// …and of the answer of the subtree below it on the same records (a split's only).
    below: f64,
}

impl NodeModel {
    fn new(inputs: usize) -> NodeModel {
        NodeModel {
            w: vec![0.0; inputs + 1],
            own: std::f64::consts::LN_2,
            below: std::f64::consts::LN_2,
        }
    }

    fn predict(&self, x: &[f64]) -> f64 {
        let (w, b) = self.w.split_at(self.w.len() - 1);
        sigmoid(b[0] + dot(w, x))
    }

    /// One SGD step of the log loss at prediction `p`, `weight` times as long.
    fn step(&mut self, x: &[f64], y: usize, p: f64, rate: f64, weight: f64) {
        let g = rate * weight * (p - y as f64);
        let (w, b) = self.w.split_at_mut(x.len());
        for (wj, xj) in w.iter_mut().zip(x) {
            *wj -= g * xj;
        }
        b[0] -= g;
    }
}

/// `a · b` in four lanes (a sum the compiler may not reorder itself): the
/// dot products of a model tree's path are most of its time.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            lanes[k] += x[k] * y[k];
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

/// Log loss of probability `p` for label `y`, clipped.
pub(crate) fn log_loss(p: f64, y: usize) -> f64 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    -(if y == 1 { p } else { 1.0 - p }).ln()
}

/// Per unit of weight, the share of a new loss in a node's recent loss.
const LOSS_DECAY: f64 = 0.002;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Node {
    Split {
        input: usize,
        threshold: f64,
        left: usize,
        right: usize,
        /// A model tree's: the model the node had as a leaf, learning on.
        #[serde(default)]
        model: Option<NodeModel>,
    },
    Leaf(Leaf),
}

impl Node {
    /// The child `x` goes to; `None` at a leaf.
    fn child(&self, x: &[f64]) -> Option<usize> {
        match self {
            Node::Split {
                input,
                threshold,
                left,
                right,
                ..
            } => Some(if x[*input] <= *threshold {
                *left
            } else {
                *right
            }),
            Node::Leaf(_) => None,
        }
    }

    /// A model tree node's model.
    fn model(&self) -> &NodeModel {
        match self {
            Node::Split { model, .. } => model.as_ref(),
            Node::Leaf(l) => l.model.as_ref(),
        }
        .expect("a model tree's node has a model")
    }

    fn model_mut(&mut self) -> &mut NodeModel {
        match self {
            Node::Split { model, .. } => model.as_mut(),
            Node::Leaf(l) => l.model.as_mut(),
        }
        .expect("a model tree's node has a model")
    }
}

/// One tree (an arena of nodes; 0 is the root).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
    /// Draws the inputs of a new leaf when `subspace` > 0.
    #[serde(default)]
    rng: u64,
}

/// The tree's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) inputs: usize,
    pub(crate) dense_len: usize,
    pub(crate) grace_period: u64,
    pub(crate) delta: f64,
    pub(crate) tie: f64,
    pub(crate) max_depth: u32,
    /// Nodes a tree may have (from `max_size_mb`); at it, leaves stop splitting.
    #[serde(default = "unbounded")]
    pub(crate) max_nodes: usize,
    /// Inputs each leaf watches, drawn at random when it is made (a random
    /// forest's subspace); 0: all of them.
    #[serde(default)]
    pub(crate) subspace: usize,
    /// What a leaf answers with.
    #[serde(default)]
    pub(crate) leaf: LeafPrediction,
    /// `leaf = Logistic`: the leaves' SGD step.
    #[serde(default)]
    pub(crate) leaf_rate: f64,
}

impl Settings {
    /// A tree's settings from `[model]`: dense inputs as given, sparse slots as
    /// 0/1 inputs when there are at most [`MAX_SPARSE`] of them.
    pub(crate) fn new(spec: &ModelSpec, dense_len: usize, sparse_len: usize) -> Settings {
        let sparse = if sparse_len <= MAX_SPARSE {
            sparse_len
        } else {
            0
        };
        Settings {
            inputs: dense_len + sparse,
            dense_len,
            grace_period: spec.grace_period.unwrap_or(200).max(1),
            delta: spec.split_confidence.unwrap_or(1e-7),
            tie: spec.tie_threshold.unwrap_or(0.05),
            max_depth: spec.max_depth.unwrap_or(20),
            max_nodes: usize::MAX,
            subspace: 0,
            leaf: spec.leaf_prediction.unwrap_or_default(),
            leaf_rate: spec.learning_rate,
        }
        .sized(spec.max_size_mb.unwrap_or(100.0), 1)
    }

    /// Bounds each of `trees` trees to its share of `mb` MiB. A node is
    /// costed as a leaf (the nodes of a tree are about half leaves, and a
    /// leaf, with a Gaussian per class and watched input, is what weighs).
    pub(crate) fn sized(mut self, mb: f64, trees: usize) -> Settings {
        let watched = if self.subspace > 0 {
            self.subspace.min(self.inputs)
        } else {
            self.inputs
        };
        let linear = if self.leaf == LeafPrediction::Logistic {
            (self.inputs + 1) * std::mem::size_of::<f64>() + std::mem::size_of::<NodeModel>()
        } else {
            0
        };
        let node =
            std::mem::size_of::<Node>() + watched * std::mem::size_of::<[Gauss; 2]>() + linear;
        let budget = mb.max(0.0) * 1024.0 * 1024.0 / trees.max(1) as f64;
        self.max_nodes = ((budget / node as f64) as usize).max(1);
        self
    }

    /// The inputs vector of one example.
    pub(crate) fn inputs(&self, dense: &[f64], sparse: &[u32], x: &mut Vec<f64>) {
        x.clear();
        x.extend_from_slice(dense);
        x.resize(self.inputs, 0.0);
        for &s in sparse {
            let j = self.dense_len + s as usize;
            if j < self.inputs {
                x[j] = 1.0;
            }
        }
    }
}

fn unbounded() -> usize {
    usize::MAX
}

/// The next value of a SplitMix64 sequence (Steele, Lea & Flood 2014).
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Tree {
    pub(crate) fn new(s: &Settings) -> Tree {
        Tree::seeded(s, 0)
    }

    /// A tree whose leaves draw their inputs from the sequence `seed` starts.
    pub(crate) fn seeded(s: &Settings, seed: u64) -> Tree {
        let mut rng = seed;
        let model = (s.leaf == LeafPrediction::Logistic).then(|| NodeModel::new(s.inputs));
        let root = Leaf::new(0, [0.0, 0.0], s, &mut rng, model);
        Tree {
            nodes: vec![Node::Leaf(root)],
            rng,
        }
    }

    fn leaf_of(&self, x: &[f64]) -> usize {
        let mut at = 0;
        while let Some(next) = self.nodes[at].child(x) {
            at = next;
        }
        at
    }

    pub(crate) fn predict(&self, x: &[f64], s: &Settings) -> f64 {
        if s.leaf == LeafPrediction::Logistic {
            let path = self.answers(x);
            return path[path[0].answerer].p;
        }
        let Node::Leaf(l) = &self.nodes[self.leaf_of(x)] else {
            unreachable!()
        };
        l.predict(x, s)
    }

    /// Learns `x` with label `y`, `weight` times over (online bagging's
    /// Poisson weight; 1 for a lone tree). Returns what [`predict`](Self::predict)
    /// answered before: predict-then-learn in one descent.
    pub(crate) fn learn(&mut self, x: &[f64], y: usize, weight: u32, s: &Settings) -> f64 {
        let at = self.leaf_of(x);
        let room = self.nodes.len() + 2 <= s.max_nodes;
        let Node::Leaf(l) = &mut self.nodes[at] else {
            unreachable!()
        };
        let mut predicted = l.learn(x, y, weight, s);
        if s.leaf == LeafPrediction::Logistic {
            predicted = self.learn_models(x, y, weight, s);
        }
        let Node::Leaf(l) = &mut self.nodes[at] else {
            unreachable!()
        };
        if l.since_attempt >= s.grace_period
            && l.depth < s.max_depth
            && room
            && l.counts[0] > 0.0
            && l.counts[1] > 0.0
        {
            l.since_attempt = 0;
            if let Some((input, threshold, left, right)) = l.best_split(s) {
                let depth = l.depth + 1;
                // A model tree's children start from their parent's model,
                // which answers until they have done better (see `learn_models`).
                let mut model = l.model.take();
                if let Some(m) = model.as_mut() {
                    m.below = m.own;
                }
                let li = self.nodes.len();
                let left = Leaf::new(depth, left, s, &mut self.rng, model.clone());
                let right = Leaf::new(depth, right, s, &mut self.rng, model.clone());
                self.nodes.push(Node::Leaf(left));
                self.nodes.push(Node::Leaf(right));
                self.nodes[at] = Node::Split {
                    input,
                    threshold,
                    left: li,
                    right: li + 1,
                    model,
                };
            }
        }
        predicted
    }

    /// A model tree's answer for `x` (before learning), then its models on
    /// `x`'s path learn the example `weight` times over.
    ///
    /// Every node on `x`'s path has a model; a split answers with its own
    /// model when that has recently done better (lower exponentially-weighted
    /// log loss on the records through it) than the subtree below it, and
    /// with the subtree's answer otherwise. So a tree answers with the
    /// deepest models that have earned it (its best pruning, as of lately):
    /// after a change of concept the shallow models, which learn from more
    /// records, are back first and answer until the deep ones catch up.
    fn learn_models(&mut self, x: &[f64], y: usize, weight: u32, s: &Settings) -> f64 {
        let mut path = self.answers(x);
        let answer = path[path[0].answerer].p;
        let w = f64::from(weight);
        let share = 1.0 - (1.0 - LOSS_DECAY).powf(w);
        for step in path.iter_mut() {
            step.loss = log_loss(step.p, y);
        }
        for i in 0..path.len() {
            let below = path.get(i + 1).map(|b| path[b.answerer].loss);
            let m = self.nodes[path[i].node].model_mut();
            m.own += share * (path[i].loss - m.own);
            if let Some(below) = below {
                m.below += share * (below - m.below);
            }
            m.step(x, y, path[i].p, s.leaf_rate, w);
        }
        answer
    }

    /// A model tree's path for `x`, root first, with each node's own
    /// probability and who answers for it (see [`learn_models`](Self::learn_models)).
    fn answers(&self, x: &[f64]) -> Vec<PathStep> {
        let mut path = Vec::with_capacity(24);
        let mut at = Some(0);
        while let Some(node) = at {
            path.push(PathStep {
                node,
                p: self.nodes[node].model().predict(x),
                answerer: path.len(),
                loss: 0.0,
            });
            at = self.nodes[node].child(x);
        }
        for i in (0..path.len() - 1).rev() {
            let m = self.nodes[path[i].node].model();
            if m.below < m.own {
                path[i].answerer = path[i + 1].answerer;
            }
        }
        path
    }
}

/// One node of a model tree's path for a record.
struct PathStep {
    node: usize,
    /// The node's own model's probability.
    p: f64,
    /// The path index of the node whose model answers for this one.
    answerer: usize,
    /// `p`'s log loss, when learning.
    loss: f64,
}

impl Leaf {
    /// A leaf; `model`: a model tree's, for the leaf to start from.
    fn new(
        depth: u32,
        counts: [f64; 2],
        s: &Settings,
        rng: &mut u64,
        model: Option<NodeModel>,
    ) -> Leaf {
        let mut subset = Vec::new();
        if s.subspace > 0 && s.subspace < s.inputs {
            // A uniform k-subset (Floyd's algorithm), in input order.
            let n = s.inputs as u64;
            for j in n - s.subspace as u64..n {
                let t = (splitmix(rng) % (j + 1)) as u32;
                let pick = if subset.contains(&t) { j as u32 } else { t };
                subset.push(pick);
            }
            subset.sort_unstable();
        }
        let watched = if subset.is_empty() {
            s.inputs
        } else {
            subset.len()
        };
        Leaf {
            depth,
            counts,
            subset,
            stats: vec![[Gauss::default(); 2]; watched],
            since_attempt: 0,
            nb_right: 0.0,
            mc_right: 0.0,
            model,
        }
    }

    /// The input the `k`th watched one is.
    #[inline]
    fn input(&self, k: usize) -> usize {
        if self.subset.is_empty() {
            k
        } else {
            self.subset[k] as usize
        }
    }

    fn majority(&self) -> f64 {
        (self.counts[1] + 1.0) / (self.counts[0] + self.counts[1] + 2.0)
    }

    fn naive_bayes(&self, x: &[f64]) -> f64 {
        let n = self.counts[0] + self.counts[1];
        if self.counts[0] <= 0.0 || self.counts[1] <= 0.0 {
            return self.majority();
        }
        let mut lp = [(self.counts[0] / n).ln(), (self.counts[1] / n).ln()];
        for (k, g) in self.stats.iter().enumerate() {
            let v = x[self.input(k)];
            for c in 0..2 {
                if g[c].n > 1.0 {
                    lp[c] += g[c].log_pdf(v);
                }
            }
        }
        1.0 / (1.0 + (lp[0] - lp[1]).clamp(-50.0, 50.0).exp())
    }

    fn predict(&self, x: &[f64], s: &Settings) -> f64 {
        match s.leaf {
            LeafPrediction::Majority => self.majority(),
            LeafPrediction::NaiveBayes => self.naive_bayes(x),
            LeafPrediction::NaiveBayesAdaptive if self.nb_right > self.mc_right => {
                self.naive_bayes(x)
            }
            LeafPrediction::NaiveBayesAdaptive => self.majority(),
            // (The tree answers for a model tree: see `Tree::learn_models`.)
            LeafPrediction::Logistic => self.model.as_ref().map_or(0.5, |m| m.predict(x)),
        }
    }

    /// Learns the example; returns the leaf's prediction before it did.
    fn learn(&mut self, x: &[f64], y: usize, weight: u32, s: &Settings) -> f64 {
        let w = f64::from(weight);
        let predicted = if s.leaf == LeafPrediction::NaiveBayesAdaptive {
            // Which leaf predictor would have been right (before learning the record).
            let right = |p: f64| f64::from((p > 0.5) == (y == 1));
            let (mc, nb) = (self.majority(), self.naive_bayes(x));
            let predicted = if self.nb_right > self.mc_right {
                nb
            } else {
                mc
            };
            self.mc_right += w * right(mc);
            self.nb_right += w * right(nb);
            predicted
        } else if s.leaf == LeafPrediction::Logistic {
            0.5 // (the tree answers, and its models learn, in `Tree::learn_models`)
        } else {
            self.predict(x, s)
        };
        self.counts[y] += w;
        if self.subset.is_empty() {
            for (g, &v) in self.stats.iter_mut().zip(x) {
                g[y].add(v, w);
            }
        } else {
            for (g, &j) in self.stats.iter_mut().zip(&self.subset) {
                g[y].add(x[j as usize], w);
            }
        }
        self.since_attempt += u64::from(weight);
        predicted
    }

    /// The split to make, if the Hoeffding bound allows one: input, threshold and the children's class counts.
    // `!(hi > lo)` on purpose: it also skips inputs whose range is NaN.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn best_split(&self, s: &Settings) -> Option<(usize, f64, [f64; 2], [f64; 2])> {
        let n = self.counts[0] + self.counts[1];
        let parent = entropy(self.counts[0], self.counts[1]);
        // Best gain per input.
        let mut per_input: Vec<Candidate> = Vec::new();
        for (j, g) in self.stats.iter().enumerate() {
            let (lo, hi) = (
                g[0].min.min(if g[1].n > 0.0 { g[1].min } else { g[0].min }),
                g[0].max.max(if g[1].n > 0.0 { g[1].max } else { g[0].max }),
            );
            if !(hi > lo) {
                continue;
            }
            let mut best: Option<Candidate> = None;
            for k in 1..=CANDIDATES {
                let t = lo + (hi - lo) * k as f64 / (CANDIDATES + 1) as f64;
                let mut left = [0.0; 2];
                for c in 0..2 {
                    left[c] = if g[c].n > 0.0 {
                        self.counts[c] * g[c].cdf(t)
                    } else {
                        0.0
                    };
                }
                let right = [self.counts[0] - left[0], self.counts[1] - left[1]];
                let (nl, nr) = (left[0] + left[1], right[0] + right[1]);
                if nl < 1.0 || nr < 1.0 {
                    continue;
                }
                let gain = parent
                    - (nl / n) * entropy(left[0], left[1])
                    - (nr / n) * entropy(right[0], right[1]);
                if best.as_ref().is_none_or(|b| gain > b.0) {
                    best = Some((gain, self.input(j), t, left, right));
                }
            }
            per_input.extend(best);
        }
        per_input.sort_by(|a, b| b.0.total_cmp(&a.0));
        let first = per_input.first()?;
        let second = per_input.get(1).map_or(0.0, |x| x.0);
        let eps = ((1.0 / s.delta).ln() / (2.0 * n)).sqrt();
        (first.0 > 0.0 && (first.0 - second > eps || eps < s.tie))
            .then_some((first.1, first.2, first.3, first.4))
    }
}

/// The Hoeffding tree learner. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoeffdingTree {
    tree: Tree,
    alternate: Option<(Tree, u64, f64, f64)>,
    drift: Adwin,
    settings: Settings,
    /// Labelled examples learned from.
    pub updates: u64,
    /// Times a fresh tree replaced the current one after a drift.
    pub replaced: u64,
    #[serde(skip)]
    x: Vec<f64>,
}

impl HoeffdingTree {
    /// A tree over `dense_len` dense inputs and `sparse_len` sparse slots.
    pub fn new(spec: &ModelSpec, dense_len: usize, sparse_len: usize) -> Self {
        let settings = Settings::new(spec, dense_len, sparse_len);
        HoeffdingTree {
            tree: Tree::new(&settings),
            alternate: None,
            drift: Adwin::new(0.002, 256, 100_000),
            settings,
            updates: 0,
            replaced: 0,
            x: Vec::new(),
        }
    }

    /// Probability of the positive class.
    pub fn predict(&self, dense: &[f64], sparse: &[u32]) -> f64 {
        let mut x = Vec::with_capacity(self.settings.inputs);
        self.settings.inputs(dense, sparse, &mut x);
        self.tree.predict(&x, &self.settings)
    }

    /// Learns one labelled example (label 0 or 1).
    pub fn learn(&mut self, dense: &[f64], sparse: &[u32], y: f64) {
        let mut x = std::mem::take(&mut self.x);
        self.settings.inputs(dense, sparse, &mut x);
        let y = usize::from(y > 0.5);
        let right = |p: f64| f64::from((p > 0.5) == (y == 1));
        let s = self.settings;
        // (The current and alternate trees are independent: learning the current one first changes nothing.)
        let main_right = right(self.tree.learn(&x, y, 1, &s));
        let a = self.drift.update(1.0 - main_right);
        let rising = a.anomalous && self.drift.last_change.is_some_and(|(b, after)| after > b);
        if rising && self.alternate.is_none() {
            self.alternate = Some((Tree::new(&self.settings), 0, 0.0, 0.0));
        }
        if let Some((alt, seen, alt_right, cur_right)) = self.alternate.as_mut() {
            *alt_right += right(alt.learn(&x, y, 1, &s));
            *cur_right += main_right;
            *seen += 1;
        }
        if let Some((_, seen, alt_right, cur_right)) = self.alternate {
            if seen >= TRIAL {
                let (alt, ..) = self.alternate.take().expect("checked");
                if alt_right > cur_right {
                    self.tree = alt;
                    self.replaced += 1;
                }
            }
        }
        self.updates += 1;
        self.x = x;
    }

    /// Nodes in the current tree.
    pub fn size(&self) -> usize {
        self.tree.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x0, x1 uniform in [0, 1); the label is an XOR of x0 > 0.5 and x1 > 0.5 (not linearly separable).
    fn xor(n: usize, seed: u64) -> Vec<([f64; 2], f64)> {
        let mut s = seed;
        let mut u = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let x = [u(), u()];
                (x, f64::from((x[0] > 0.5) != (x[1] > 0.5)))
            })
            .collect()
    }

    /// A tree learned from 20,000 XOR examples, and how many of 2,000 others it gets right.
    fn learned_xor(spec: &ModelSpec) -> (HoeffdingTree, usize) {
        let mut t = HoeffdingTree::new(spec, 2, 0);
        for (x, y) in xor(20_000, 3) {
            t.learn(&x, &[], y);
        }
        let right = xor(2_000, 4)
            .iter()
            .filter(|(x, y)| (t.predict(x, &[]) > 0.5) == (*y > 0.5))
            .count();
        (t, right)
    }

    #[test]
    fn learns_xor_which_a_linear_model_cannot() {
        let (t, right) = learned_xor(&ModelSpec::default());
        assert!(right > 1_800, "{right} of 2000 right; {} nodes", t.size());
        assert!(t.size() >= 5, "it split: {} nodes", t.size());
    }

    #[test]
    fn a_reversed_concept_is_relearned_by_a_fresh_tree() {
        let mut t = HoeffdingTree::new(&ModelSpec::default(), 2, 0);
        let data = xor(40_000, 5);
        for (i, (x, y)) in data.iter().enumerate() {
            let y = if i >= 20_000 { 1.0 - y } else { *y };
            t.learn(x, &[], y);
        }
        assert!(t.replaced >= 1, "the drift replaced the tree");
        let right = xor(2_000, 6)
            .iter()
            .filter(|(x, y)| (t.predict(x, &[]) > 0.5) == (*y < 0.5))
            .count();
        assert!(right > 1_700, "the new concept: {right} of 2000");
    }

    #[test]
    fn a_size_budget_stops_the_splitting_not_the_learning() {
        let spec = ModelSpec {
            grace_period: Some(20),
            split_confidence: Some(0.5),
            max_size_mb: Some(0.002),
            ..ModelSpec::default()
        };
        let mut t = HoeffdingTree::new(&spec, 2, 0);
        let cap = t.settings.max_nodes;
        assert!((5..20).contains(&cap), "2 KiB holds a few nodes: {cap}");
        for (x, y) in xor(20_000, 9) {
            t.learn(&x, &[], y);
        }
        assert!(
            t.size() <= cap && t.size() + 2 > cap,
            "grew to the cap: {} of {cap}",
            t.size()
        );
        let mut free = HoeffdingTree::new(
            &ModelSpec {
                max_size_mb: None,
                ..spec
            },
            2,
            0,
        );
        for (x, y) in xor(20_000, 9) {
            free.learn(&x, &[], y);
        }
        assert!(
            free.size() > 4 * cap,
            "unbounded it grows on: {}",
            free.size()
        );
    }

    #[test]
    fn a_model_tree_learns_xor_and_its_nodes_choose_who_answers() {
        let spec = ModelSpec {
            leaf_prediction: Some(LeafPrediction::Logistic),
            ..ModelSpec::default()
        };
        let (t, right) = learned_xor(&spec);
        // A logistic regression alone is at chance on XOR; the splits are what learn it.
        assert!(right > 1_800, "{right} of 2000 right; {} nodes", t.size());
        let Node::Split {
            model: Some(root), ..
        } = &t.tree.nodes[0]
        else {
            panic!("the root split and kept its model")
        };
        assert!(
            root.below < root.own,
            "the subtree answers for the root: {} < {}",
            root.below,
            root.own
        );
    }

    #[test]
    fn a_model_tree_on_a_linear_concept_answers_like_a_logistic_regression() {
        // y = 1 when x0 - x1 > 0 (with 10% noise): a linear concept.
        let mut s = 11u64;
        let mut u = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let data: Vec<([f64; 2], f64)> = (0..20_000)
            .map(|_| {
                let x = [u() * 2.0 - 1.0, u() * 2.0 - 1.0];
                let noise = u() < 0.1;
                (x, f64::from((x[0] - x[1] > 0.0) != noise))
            })
            .collect();
        let spec = ModelSpec {
            leaf_prediction: Some(LeafPrediction::Logistic),
            learning_rate: 0.05,
            ..ModelSpec::default()
        };
        let mut t = HoeffdingTree::new(&spec, 2, 0);
        let mut right = 0;
        for (i, (x, y)) in data.iter().enumerate() {
            if i >= 10_000 && (t.predict(x, &[]) > 0.5) == (*y > 0.5) {
                right += 1;
            }
            t.learn(x, &[], *y);
        }
        // 90% is the best any learner can do.
        assert!(right > 8_700, "{right} of 10000 right");
    }

    #[test]
    fn a_restored_model_tree_continues_exactly() {
        let spec = ModelSpec {
            leaf_prediction: Some(LeafPrediction::Logistic),
            ..ModelSpec::default()
        };
        let data = xor(6_000, 8);
        let mut a = HoeffdingTree::new(&spec, 2, 0);
        for (x, y) in &data[..3_000] {
            a.learn(x, &[], *y);
        }
        let mut b: HoeffdingTree = bincode::deserialize(&bincode::serialize(&a).unwrap()).unwrap();
        for (x, y) in &data[3_000..] {
            a.learn(x, &[], *y);
            b.learn(x, &[], *y);
        }
        assert_eq!(a.tree, b.tree);
        assert!(a.size() > 1);
    }

    #[test]
    fn dot_is_a_dot_product() {
        let a: Vec<f64> = (0..11).map(f64::from).collect();
        let b: Vec<f64> = (0..11).map(|i| f64::from(i) * 0.5).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), want);
        assert_eq!(dot(&a[..3], &b), 0.5 * (1.0 + 4.0));
    }

    #[test]
    fn erf_is_accurate() {
        for (x, v) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265),
        ] {
            assert!((erf(x) - v).abs() < 2e-7, "{x}");
        }
    }
}

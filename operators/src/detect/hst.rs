//! Half-space trees: a streaming, multivariate outlier detector for feature
//! vectors (Tan, Ting and Liu, 2011).
//!
//! In: vectors of a fixed dimension, one at a time. Out: per vector its
//! *mass* — how many of the previous window's vectors fell in the same
//! region of space, summed over trees and scaled by the region's depth — and
//! an anomaly score in `[0, 1]` (1 − mass over its largest possible value):
//! a vector in a region where few have been is an outlier whatever each of
//! its coordinates looks like alone.
//!
//! How: `trees` random binary trees of depth `height` cut the space in half
//! at every node, along a random dimension, around a randomly perturbed work
//! range, so regions are fixed once built and need no data to place. Every
//! node counts the vectors of the current window that pass it (`latest`);
//! when `window` vectors have been seen those counts become the reference
//! (`reference`) and counting starts again, so the detector follows a
//! drifting stream window by window. A vector is scored against the
//! reference: it descends each tree until a node whose reference count is
//! below a tenth of the window (or the bottom) and takes that count × 2^depth.
//!
//! The coordinates are scaled to `[0, 1]` by the range of the first window
//! (which is buffered: the trees are built, and the first window counted,
//! when it is full), so nothing has to be declared about the inputs; a value
//! beyond that range falls in the outer regions, which is where outliers
//! belong. Before the first window is full every score is 0.
//!
//! State: the split of every node, both counts and the scaling — plain data,
//! checkpointed with the operator that owns it.

use serde::{Deserialize, Serialize};

/// The detector; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HalfSpaceTrees {
    dims: usize,
    trees: usize,
    height: usize,
    window: usize,
    seed: u64,
    /// Per tree and internal node (heap order): the dimension split and where.
    split_dim: Vec<u32>,
    split_at: Vec<f64>,
    /// Per tree and node (heap order).
    reference: Vec<u32>,
    latest: Vec<u32>,
    /// Vectors counted into `latest` so far.
    counted: usize,
    /// Whether a reference window exists.
    ready: bool,
    /// The first window's vectors, until the trees are built.
    first: Vec<Vec<f64>>,
    /// Per dimension: (low, 1 / width) of the first window.
    scaling: Vec<(f64, f64)>,
    /// Scratch space for a scaled vector (not state).
    #[serde(skip)]
    buf: Vec<f64>,
}

impl HalfSpaceTrees {
    /// `trees` trees of depth `height` over `dims`-dimensional vectors, the
    /// reference renewed every `window` vectors; `seed` fixes the splits.
    pub fn new(dims: usize, trees: usize, height: usize, window: usize, seed: u64) -> Self {
        HalfSpaceTrees {
            dims: dims.max(1),
            trees: trees.max(1),
            height: height.clamp(1, 20),
            window: window.max(2),
            seed,
            split_dim: Vec::new(),
            split_at: Vec::new(),
            reference: Vec::new(),
            latest: Vec::new(),
            counted: 0,
            ready: false,
            first: Vec::new(),
            scaling: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// The dimension of the vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    fn nodes(&self) -> usize {
        (1 << (self.height + 1)) - 1
    }

    fn internal(&self) -> usize {
        (1 << self.height) - 1
    }

    /// The largest possible mass: every tree's whole window at the bottom.
    pub fn max_mass(&self) -> f64 {
        (self.trees * self.window) as f64 * (1u64 << self.height) as f64
    }

    fn scaled(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.scaling.iter().zip(x).map(|((lo, inv), v)| {
            if v.is_finite() {
                (v - lo) * inv
            } else {
                0.5
            }
        }));
    }

    fn build(&mut self) {
        let mut lo = vec![f64::INFINITY; self.dims];
        let mut hi = vec![f64::NEG_INFINITY; self.dims];
        for v in &self.first {
            for d in 0..self.dims {
                if v[d].is_finite() {
                    lo[d] = lo[d].min(v[d]);
                    hi[d] = hi[d].max(v[d]);
                }
            }
        }
        self.scaling = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| {
                if !l.is_finite() {
                    return (0.0, 1.0);
                }
                let width = h - l;
                let width = if width > 0.0 {
                    width
                } else {
                    l.abs().max(1.0) * 0.1
                };
                (l, 1.0 / width)
            })
            .collect();
        let mut rng = SplitMix(self.seed);
        let internal = self.internal();
        self.split_dim = vec![0; self.trees * internal];
        self.split_at = vec![0.0; self.trees * internal];
        for t in 0..self.trees {
            // A randomly perturbed work range per dimension (Tan et al.):
            // [s − 2·max(s, 1 − s), s + 2·max(s, 1 − s)] for s uniform in [0, 1].
            let mut ranges: Vec<(f64, f64)> = (0..self.dims)
                .map(|_| {
                    let s = rng.uniform();
                    let r = 2.0 * s.max(1.0 - s);
                    (s - r, s + r)
                })
                .collect();
            self.grow(t, 0, &mut ranges, &mut rng);
        }
        let nodes = self.nodes();
        self.reference = vec![0; self.trees * nodes];
        self.latest = vec![0; self.trees * nodes];
        let first = std::mem::take(&mut self.first);
        let mut buf = Vec::new();
        for v in &first {
            self.scaled(v, &mut buf);
            let b = std::mem::take(&mut buf);
            self.count(&b);
            buf = b;
        }
        self.roll();
    }

    fn grow(&mut self, tree: usize, node: usize, ranges: &mut [(f64, f64)], rng: &mut SplitMix) {
        if node >= self.internal() {
            return;
        }
        let d = (rng.next() % self.dims as u64) as usize;
        let (lo, hi) = ranges[d];
        let mid = 0.5 * (lo + hi);
        let at = tree * self.internal() + node;
        self.split_dim[at] = d as u32;
        self.split_at[at] = mid;
        ranges[d] = (lo, mid);
        self.grow(tree, 2 * node + 1, ranges, rng);
        ranges[d] = (mid, hi);
        self.grow(tree, 2 * node + 2, ranges, rng);
        ranges[d] = (lo, hi);
    }

    fn child(&self, tree: usize, node: usize, x: &[f64]) -> usize {
        let at = tree * self.internal() + node;
        if x[self.split_dim[at] as usize] < self.split_at[at] {
            2 * node + 1
        } else {
            2 * node + 2
        }
    }

    fn count(&mut self, x: &[f64]) {
        let nodes = self.nodes();
        for t in 0..self.trees {
            let mut node = 0;
            loop {
                self.latest[t * nodes + node] += 1;
                if node >= self.internal() {
                    break;
                }
                node = self.child(t, node, x);
            }
        }
        self.counted += 1;
    }

    fn roll(&mut self) {
        std::mem::swap(&mut self.reference, &mut self.latest);
        self.latest.iter_mut().for_each(|c| *c = 0);
        self.counted = 0;
        self.ready = true;
    }

    fn mass_scaled(&self, x: &[f64]) -> f64 {
        let nodes = self.nodes();
        let limit = (self.window as f64 * 0.1).max(1.0);
        let mut mass = 0.0;
        for t in 0..self.trees {
            let (mut node, mut depth) = (0, 0);
            loop {
                let r = self.reference[t * nodes + node] as f64;
                if node >= self.internal() || r < limit {
                    mass += r * (1u64 << depth) as f64;
                    break;
                }
                node = self.child(t, node, x);
                depth += 1;
            }
        }
        mass
    }

    /// The mass of `x` against the reference window (`None` before there is one).
    pub fn mass(&self, x: &[f64]) -> Option<f64> {
        if !self.ready {
            return None;
        }
        let mut buf = Vec::with_capacity(self.dims);
        self.scaled(x, &mut buf);
        Some(self.mass_scaled(&buf))
    }

    /// Scores `x` (`1 − mass / max_mass`, 0 before the first window is full), then counts it.
    pub fn update(&mut self, x: &[f64]) -> f64 {
        assert_eq!(x.len(), self.dims, "a vector of the declared dimension");
        if !self.ready {
            self.first.push(x.to_vec());
            if self.first.len() >= self.window {
                self.build();
            }
            return 0.0;
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.scaled(x, &mut buf);
        let score = 1.0 - self.mass_scaled(&buf) / self.max_mass();
        self.count(&buf);
        self.buf = buf;
        if self.counted >= self.window {
            self.roll();
        }
        score.clamp(0.0, 1.0)
    }

    /// [`HalfSpaceTrees::update`], answering with the mass instead (`None` before the first window is full).
    pub fn update_mass(&mut self, x: &[f64]) -> Option<f64> {
        let mass = self.mass(x);
        self.update(x);
        mass
    }
}

/// A small deterministic generator (SplitMix64) for the splits.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    #[test]
    fn a_point_off_the_joint_distribution_scores_higher_than_any_normal_one() {
        // x and y move together; (1, -1) is ordinary in each coordinate alone.
        let mut noise = Noise::new(21);
        let mut h = HalfSpaceTrees::new(2, 25, 10, 250, 7);
        let mut normal = Vec::new();
        for i in 0..3000 {
            let a = noise.normal();
            let s = h.update(&[a, a + 0.1 * noise.normal()]);
            if i >= 500 {
                normal.push(s);
            }
        }
        let odd = h.mass(&[1.0, -1.0]).unwrap();
        let usual = h.mass(&[1.0, 1.0]).unwrap();
        assert!(odd * 5.0 < usual, "{odd} {usual}");
        normal.sort_by(f64::total_cmp);
        let p99 = normal[normal.len() * 99 / 100];
        let s = h.update(&[2.0, -2.0]);
        assert!(s > p99, "{s} {p99}");
    }

    #[test]
    fn the_same_seed_builds_the_same_trees_and_nothing_scores_before_the_first_window() {
        let mut noise = Noise::new(22);
        let data: Vec<[f64; 3]> = (0..400)
            .map(|_| [noise.normal(), noise.normal(), noise.normal()])
            .collect();
        let mut a = HalfSpaceTrees::new(3, 10, 8, 100, 1);
        let mut b = HalfSpaceTrees::new(3, 10, 8, 100, 1);
        let sa: Vec<f64> = data.iter().map(|v| a.update(v)).collect();
        let sb: Vec<f64> = data.iter().map(|v| b.update(v)).collect();
        assert_eq!(sa, sb);
        assert!(sa[..100].iter().all(|s| *s == 0.0));
        assert!(sa[100..].iter().any(|s| *s > 0.0));
        assert!(sa.iter().all(|s| (0.0..=1.0).contains(s)));
    }
}

//! FTRL-Proximal logistic regression (McMahan et al., "Ad click prediction:
//! a view from the trenches", KDD 2013, algorithm 1).
//!
//! Per coordinate it keeps `z` (the adjusted sum of gradients) and `n` (the
//! sum of squared gradients); the weight is computed from them when needed:
//! `w = 0` if `|z| ≤ λ₁`, else `-(z - sign(z)·λ₁) / ((β + √n)/α + λ₂)`. L1
//! makes weights exactly zero — sparse models over hashed features. The
//! intercept is the last coordinate, with L1 off. Dense inputs are used as
//! they come (standardised by `score`), sparse slots have value 1.

use serde::{Deserialize, Serialize};

use super::logistic::{sigmoid, ModelSpec};

/// The FTRL-Proximal learner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ftrl {
    /// Adjusted gradient sums: dense coordinates, sparse slots, then the intercept.
    pub z: Vec<f64>,
    /// Squared gradient sums, same layout.
    pub n: Vec<f64>,
    /// Labelled examples learned from.
    pub updates: u64,
    alpha: f64,
    beta: f64,
    l1: f64,
    l2: f64,
    dense_len: usize,
}

impl Ftrl {
    /// A zero model for `dense_len` dense features and `sparse_len` sparse slots.
    pub fn new(spec: &ModelSpec, dense_len: usize, sparse_len: usize) -> Self {
        let len = dense_len + sparse_len + 1;
        Ftrl {
            z: vec![0.0; len],
            n: vec![0.0; len],
            updates: 0,
            alpha: spec.alpha.unwrap_or(0.1),
            beta: spec.beta.unwrap_or(1.0),
            l1: spec.l1,
            l2: spec.l2,
            dense_len,
        }
    }

    #[inline]
    fn weight(&self, i: usize) -> f64 {
        let z = self.z[i];
        let l1 = if i + 1 == self.z.len() { 0.0 } else { self.l1 };
        if z.abs() <= l1 {
            0.0
        } else {
            -(z - z.signum() * l1) / ((self.beta + self.n[i].sqrt()) / self.alpha + self.l2)
        }
    }

    /// The weights (dense, sparse, intercept last), as the proximal step gives them.
    pub fn weights(&self) -> Vec<f64> {
        (0..self.z.len()).map(|i| self.weight(i)).collect()
    }

    /// Non-zero weights (the model's size under L1).
    pub fn nonzero(&self) -> usize {
        (0..self.z.len()).filter(|&i| self.weight(i) != 0.0).count()
    }

    fn margin(&self, dense: &[f64], sparse: &[u32]) -> f64 {
        let mut m = self.weight(self.z.len() - 1);
        for &s in sparse {
            m += self.weight(self.dense_len + s as usize);
        }
        for (i, x) in dense.iter().enumerate() {
            if *x != 0.0 {
                m += self.weight(i) * x;
            }
        }
        m
    }

    /// Probability of the positive class.
    pub fn predict(&self, dense: &[f64], sparse: &[u32]) -> f64 {
        sigmoid(self.margin(dense, sparse))
    }

    /// One FTRL-Proximal step for label `y` (0 or 1).
    pub fn learn(&mut self, dense: &[f64], sparse: &[u32], y: f64) {
        let g = self.predict(dense, sparse) - if y > 0.5 { 1.0 } else { 0.0 };
        let bias = self.z.len() - 1;
        let dense_len = self.dense_len;
        let mut step = |i: usize, x: f64| {
            let w = self.weight(i);
            let gi = g * x;
            let sigma = ((self.n[i] + gi * gi).sqrt() - self.n[i].sqrt()) / self.alpha;
            self.z[i] += gi - sigma * w;
            self.n[i] += gi * gi;
        };
        for (i, x) in dense.iter().enumerate() {
            if *x != 0.0 {
                step(i, *x);
            }
        }
        for &s in sparse {
            step(dense_len + s as usize, 1.0);
        }
        step(bias, 1.0);
        self.updates += 1;
    }

    /// The learnable state as one vector: `z` then `n`.
    pub fn params(&self) -> Vec<f64> {
        let mut p = self.z.clone();
        p.extend_from_slice(&self.n);
        p
    }

    /// Sets the state from [`params`](Self::params)' layout.
    pub fn set_params(&mut self, p: &[f64]) {
        let k = self.z.len();
        self.z.copy_from_slice(&p[..k]);
        self.n.copy_from_slice(&p[k..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_rule_and_l1_zeroes_the_noise() {
        let spec = ModelSpec {
            alpha: Some(0.5),
            l1: 1.0,
            ..Default::default()
        };
        let mut m = Ftrl::new(&spec, 0, 20);
        let mut s = 7u64;
        for _ in 0..20_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let signal = (s >> 33) % 2; // slot 0 or 1 decides the label
            let noise = 2 + (s >> 40) % 18; // slots 2..19: noise
            let y = signal as f64;
            m.learn(&[], &[signal as u32, noise as u32], y);
        }
        assert!(m.predict(&[], &[1, 5]) > 0.9);
        assert!(m.predict(&[], &[0, 5]) < 0.1);
        let w = m.weights();
        let noise_nonzero = w[2..20].iter().filter(|x| **x != 0.0).count();
        assert!(
            noise_nonzero < 9,
            "L1 keeps most noise weights at zero: {w:?}"
        );
        let mut c = m.clone();
        c.set_params(&m.params());
        assert_eq!(c, m);
    }
}

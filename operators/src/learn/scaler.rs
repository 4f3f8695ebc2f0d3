//! Running standardisation (River's `preprocessing.StandardScaler`).
//!
//! Per feature: count, mean and population variance, updated one value at a
//! time; a value is transformed to `(x - mean) / sqrt(var)`, or 0 while the
//! variance is 0.

use serde::{Deserialize, Serialize};

/// Running mean and variance per dense feature.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StandardScaler {
    /// Values seen per feature.
    pub count: Vec<u64>,
    /// Running mean per feature.
    pub mean: Vec<f64>,
    /// Running population variance per feature.
    pub var: Vec<f64>,
    /// Which features are standardised; the others pass through.
    pub enabled: Vec<bool>,
    /// `var ** 0.5`, kept up to date by `learn` (a `pow` per feature per update, not per transform).
    #[serde(skip)]
    sd: Vec<f64>,
}

impl StandardScaler {
    /// A scaler for `enabled.len()` features, standardising those marked `true`.
    pub fn new(enabled: Vec<bool>) -> Self {
        let n = enabled.len();
        StandardScaler {
            count: vec![0; n],
            mean: vec![0.0; n],
            var: vec![0.0; n],
            enabled,
            sd: vec![0.0; n],
        }
    }

    /// Updates the statistics with one vector.
    pub fn learn(&mut self, x: &[f64]) {
        for (i, &xi) in x.iter().enumerate() {
            if !self.enabled[i] {
                continue;
            }
            self.count[i] += 1;
            let old = self.mean[i];
            let n = self.count[i] as f64;
            self.mean[i] += (xi - old) / n;
            self.var[i] += ((xi - old) * (xi - self.mean[i]) - self.var[i]) / n;
            // `var ** 0.5` through libm's pow, as River computes it: it differs from
            // `sqrt` in the last bit for about 0.1% of inputs (black_box keeps LLVM
            // from rewriting it to sqrt).
            self.sd[i] = self.var[i].powf(std::hint::black_box(0.5));
        }
    }

    /// Recomputes derived values after the statistics were restored from a checkpoint.
    pub fn restored(mut self) -> Self {
        self.sd = self
            .var
            .iter()
            .map(|v| v.powf(std::hint::black_box(0.5)))
            .collect();
        self
    }

    /// Writes the standardised `x` into `out`.
    pub fn transform(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend(x.iter().enumerate().map(|(i, &xi)| {
            if !self.enabled[i] {
                return xi;
            }
            let sd = self.sd[i];
            if sd == 0.0 {
                0.0
            } else {
                (xi - self.mean[i]) / sd
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_batch_statistics() {
        let mut s = StandardScaler::new(vec![true, false]);
        let xs = [[1.0, 5.0], [2.0, 6.0], [4.0, 7.0], [8.0, 8.0]];
        let mut out = Vec::new();
        s.transform(&xs[0], &mut out);
        assert_eq!(out, [0.0, 5.0], "no variance yet: 0; disabled: as is");
        for x in &xs {
            s.learn(x);
        }
        let mean = 15.0 / 4.0;
        let var = xs.iter().map(|x| (x[0] - mean).powi(2)).sum::<f64>() / 4.0;
        assert!((s.mean[0] - mean).abs() < 1e-12 && (s.var[0] - var).abs() < 1e-12);
        s.transform(&[mean + var.sqrt(), 1.0], &mut out);
        assert!((out[0] - 1.0).abs() < 1e-12 && out[1] == 1.0);
    }
}

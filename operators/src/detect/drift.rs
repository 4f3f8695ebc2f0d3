//! Distribution drift: population stability index and the two-sample
//! Kolmogorov–Smirnov test, between a reference window and the current one.
//!
//! [`DriftMonitor`] keeps the first `reference` values as the reference (or
//! is given one) and a sliding window of the last `window` values; every
//! `every` values it compares them. PSI bins by the reference's deciles, so
//! it needs no knowledge of the scale; KS needs no bins at all. It fires when
//! PSI exceeds `psi_threshold` (0.2 is the usual "significant shift") or the
//! KS p-value falls below `alpha`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{squash, Assessment};

/// The population stability index of `current` against `reference`, over the reference's deciles.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    if reference.is_empty() || current.is_empty() {
        return 0.0;
    }
    let mut sorted = reference.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10)
        .map(|k| sorted[(k * sorted.len() / 10).min(sorted.len() - 1)])
        .collect();
    edges.dedup();
    let bin = |x: f64| edges.partition_point(|e| *e < x);
    let mut r = vec![0f64; edges.len() + 1];
    let mut c = vec![0f64; edges.len() + 1];
    for &x in reference {
        r[bin(x)] += 1.0;
    }
    for &x in current {
        c[bin(x)] += 1.0;
    }
    let (nr, nc) = (reference.len() as f64, current.len() as f64);
    r.iter()
        .zip(&c)
        .map(|(a, b)| {
            let (p, q) = ((a / nr).max(1e-4), (b / nc).max(1e-4));
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// The two-sample Kolmogorov–Smirnov statistic and its asymptotic p-value.
pub fn ks(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (0.0, 1.0);
    }
    let (mut x, mut y) = (a.to_vec(), b.to_vec());
    x.sort_unstable_by(f64::total_cmp);
    y.sort_unstable_by(f64::total_cmp);
    let (n, m) = (x.len(), y.len());
    let (mut i, mut j, mut d) = (0, 0, 0f64);
    while i < n && j < m {
        let v = x[i].min(y[j]);
        while i < n && x[i] <= v {
            i += 1;
        }
        while j < m && y[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    let ne = (n * m) as f64 / (n + m) as f64;
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    // Kolmogorov's distribution: Q(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²).
    let mut p = 0.0;
    for k in 1..=100 {
        let term = 2.0
            * (-2.0 * (k * k) as f64 * lambda * lambda).exp()
            * if k % 2 == 1 { 1.0 } else { -1.0 };
        p += term;
        if term.abs() < 1e-12 {
            break;
        }
    }
    (d, p.clamp(0.0, 1.0))
}

/// Drift measures of the current window against the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftMeasures {
    /// Population stability index.
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic.
    pub ks: f64,
    /// Its p-value.
    pub ks_p: f64,
}

/// Reference-versus-current drift monitor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftMonitor {
    reference_size: usize,
    window: usize,
    every: u64,
    psi_threshold: f64,
    alpha: f64,
    reference: Vec<f64>,
    current: VecDeque<f64>,
    seen: u64,
    /// The latest measures.
    pub last: Option<DriftMeasures>,
}

impl DriftMonitor {
    /// A monitor whose reference is the first `reference` values.
    pub fn new(
        reference: usize,
        window: usize,
        every: u64,
        psi_threshold: f64,
        alpha: f64,
    ) -> Self {
        DriftMonitor {
            reference_size: reference.max(10),
            window: window.max(10),
            every: every.max(1),
            psi_threshold,
            alpha,
            reference: Vec::new(),
            current: VecDeque::new(),
            seen: 0,
            last: None,
        }
    }

    /// Takes `x`; every `every` values, compares the windows.
    pub fn update(&mut self, x: f64) -> Assessment {
        self.seen += 1;
        if self.reference.len() < self.reference_size {
            self.reference.push(x);
            return Assessment::QUIET;
        }
        self.current.push_back(x);
        if self.current.len() > self.window {
            self.current.pop_front();
        }
        if self.current.len() < self.window || !self.seen.is_multiple_of(self.every) {
            return Assessment::QUIET;
        }
        let cur: Vec<f64> = self.current.iter().copied().collect();
        let p = psi(&self.reference, &cur);
        let (d, pv) = ks(&self.reference, &cur);
        self.last = Some(DriftMeasures {
            psi: p,
            ks: d,
            ks_p: pv,
        });
        let fired = p > self.psi_threshold || pv < self.alpha;
        Assessment {
            score: squash(p, self.psi_threshold).max(if pv < self.alpha { 1.0 - pv } else { 0.0 }),
            anomalous: fired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    #[test]
    fn psi_and_ks_textbook_values() {
        let mut noise = Noise::new(21);
        let a: Vec<f64> = (0..5000).map(|_| noise.normal()).collect();
        let b: Vec<f64> = (0..5000).map(|_| noise.normal()).collect();
        let shifted: Vec<f64> = (0..5000).map(|_| noise.normal() + 1.0).collect();
        assert!(psi(&a, &b) < 0.02, "same distribution: {}", psi(&a, &b));
        assert!(
            psi(&a, &shifted) > 0.5,
            "one-sigma shift: {}",
            psi(&a, &shifted)
        );
        let (d, p) = ks(&a, &b);
        assert!(d < 0.04 && p > 0.01, "{d} {p}");
        let (d, p) = ks(&a, &shifted);
        assert!(d > 0.3 && p < 1e-6, "{d} {p}");
        // The exact statistic on a tiny case: F1 jumps at 1,2; F2 at 3,4 → D = 1.
        assert_eq!(ks(&[1.0, 2.0], &[3.0, 4.0]).0, 1.0);
    }

    #[test]
    fn the_monitor_fires_after_a_shift_and_not_before() {
        let mut m = DriftMonitor::new(2000, 1000, 250, 0.2, 1e-4);
        let mut noise = Noise::new(22);
        let fired: Vec<usize> = (0..8000)
            .filter(|&i| {
                m.update(noise.normal() * if i >= 5000 { 2.5 } else { 1.0 })
                    .anomalous
            })
            .collect();
        assert!(
            fired.first().is_some_and(|f| (5000..6000).contains(f)),
            "{fired:?}"
        );
        assert!(fired.iter().all(|&f| f >= 5000));
        assert!(m.last.unwrap().psi > 0.2);
    }
}

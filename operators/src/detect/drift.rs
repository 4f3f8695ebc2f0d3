//! Distribution drift: population stability index and the two-sample
//! Kolmogorov–Smirnov statistic, between a reference and the current data.
//!
//! Two forms. [`HistDrift`] is what the `drift` monitors use: every record's
//! value goes into a per-window [`Histogram`] (bins fixed in advance by a
//! [`Binning`], so workers' histograms merge by adding counts and nothing
//! per record is kept); the reference is the `reference` windows before the
//! current `current` windows, sliding, so a drift fires and then resolves
//! once the new distribution has become the reference. With thousands of
//! records per window PSI and KS are precise: their noise is about
//! `bins / records`. [`DriftMonitor`] compares raw values (kept in memory):
//! for series of a few thousand values, such as one number per window. PSI
//! bins by the reference's deciles there, and KS needs no bins. Both fire
//! when PSI exceeds its threshold (0.2 is the usual "significant shift").

use std::collections::BTreeMap;
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
    (d, kolmogorov_q(lambda))
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

/// Counts per bin.
pub type Histogram = BTreeMap<i32, u64>;

/// How values are put in bins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binning {
    /// 20 equal bins over `[0, 1]` (probabilities, scores).
    Unit,
    /// `floor(8·asinh(x))`: linear near zero, logarithmic beyond, about 13%
    /// wide relative bins for large values — any scale, no parameters.
    Asinh,
}

impl Binning {
    /// The bin of `x` (NaN goes to its own bin).
    #[inline]
    pub fn bin(self, x: f64) -> i32 {
        if x.is_nan() {
            return i32::MIN;
        }
        match self {
            Binning::Unit => ((x * 20.0).floor() as i32).clamp(0, 19),
            Binning::Asinh => (8.0 * x.asinh()).floor() as i32,
        }
    }
}

/// PSI and KS of `current` against `reference`, both histograms over the same bins.
pub fn hist_measures(reference: &Histogram, current: &Histogram) -> DriftMeasures {
    let (nr, nc) = (
        reference.values().sum::<u64>() as f64,
        current.values().sum::<u64>() as f64,
    );
    if nr == 0.0 || nc == 0.0 {
        return DriftMeasures {
            psi: 0.0,
            ks: 0.0,
            ks_p: 1.0,
        };
    }
    let (ln_nr, ln_nc) = (nr.ln(), nc.ln());
    let (mut psi, mut ks, mut cr, mut cc) = (0.0, 0.0f64, 0.0, 0.0);
    // Every bin of either, in order: a merge of the two sorted maps.
    let (mut refs, mut curs) = (reference.iter().peekable(), current.iter().peekable());
    loop {
        let (a, c) = match (refs.peek(), curs.peek()) {
            (None, None) => break,
            (Some((br, _)), Some((bc, _))) if br == bc => (
                *refs.next().expect("peeked").1,
                *curs.next().expect("peeked").1,
            ),
            (Some((br, _)), Some((bc, _))) if br < bc => (*refs.next().expect("peeked").1, 0),
            (Some(_), None) => (*refs.next().expect("peeked").1, 0),
            _ => (0, *curs.next().expect("peeked").1),
        };
        // ln(q / p) as ln q − ln p, the logarithms of counts from a table:
        // one `ln` per histogram instead of one per bin (this runs for every
        // window of every drift rule).
        let (p, lp) = share(a, nr, ln_nr);
        let (q, lq) = share(c, nc, ln_nc);
        psi += (q - p) * (lq - lp);
        let (a, c) = (a as f64, c as f64);
        cr += a / nr;
        cc += c / nc;
        ks = ks.max((cr - cc).abs());
    }
    let ne = nr * nc / (nr + nc);
    DriftMeasures {
        psi,
        ks,
        ks_p: kolmogorov_q((ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * ks),
    }
}

/// A bin's share `n / total` floored at 1e-4 (PSI's guard against empty
/// bins), and its natural logarithm.
#[inline]
fn share(n: u64, total: f64, ln_total: f64) -> (f64, f64) {
    const FLOOR: f64 = 1e-4;
    let p = n as f64 / total;
    if p < FLOOR {
        (FLOOR, FLOOR.ln())
    } else {
        (p, ln_count(n) - ln_total)
    }
}

/// `ln(n)`, from a table for small counts.
#[inline]
fn ln_count(n: u64) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..4096u32).map(|k| f64::from(k).ln()).collect());
    table
        .get(n as usize)
        .copied()
        .unwrap_or_else(|| (n as f64).ln())
}

/// Windowed histogram drift: the last `current` windows against the `reference` windows before them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistDrift {
    reference: usize,
    current: usize,
    psi_threshold: f64,
    ks_threshold: f64,
    recent: VecDeque<Histogram>,
    /// The latest measures.
    pub last: Option<DriftMeasures>,
    /// The reference and current windows summed, kept up to date as windows
    /// move through (exact: counts); rebuilt after a restore.
    #[serde(skip)]
    sums: Sums,
}

/// [`HistDrift`]'s running sums: derived from its windows, not part of its identity.
#[derive(Clone, Debug, Default)]
struct Sums {
    valid: bool,
    reference: Histogram,
    current: Histogram,
}

impl PartialEq for Sums {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn add(to: &mut Histogram, h: &Histogram) {
    for (b, n) in h {
        *to.entry(*b).or_default() += n;
    }
}

fn subtract(from: &mut Histogram, h: &Histogram) {
    for (b, n) in h {
        if let Some(have) = from.get_mut(b) {
            *have -= n;
            if *have == 0 {
                from.remove(b);
            }
        }
    }
}

impl HistDrift {
    /// Compares the last `current` windows with the `reference` windows before
    /// them; fires when PSI exceeds `psi_threshold` or the KS distance exceeds
    /// `ks_threshold` (a distance, not a p-value: with tens of thousands of
    /// records every p-value is tiny, while a distance says how much moved).
    pub fn new(reference: usize, current: usize, psi_threshold: f64, ks_threshold: f64) -> Self {
        HistDrift {
            reference: reference.max(1),
            current: current.max(1),
            psi_threshold,
            ks_threshold,
            recent: VecDeque::new(),
            last: None,
            sums: Sums::default(),
        }
    }

    /// Takes the next window's histogram (windows without values are not passed).
    pub fn update(&mut self, window: Histogram) -> Assessment {
        let full = self.reference + self.current;
        let was_full = self.recent.len() == full;
        self.recent.push_back(window);
        if self.recent.len() > full {
            let oldest = self.recent.pop_front().expect("longer than full");
            if was_full && self.sums.valid {
                // The oldest reference window leaves, the oldest current one
                // becomes the newest reference one, the new window comes in.
                let moved = &self.recent[self.reference - 1];
                subtract(&mut self.sums.reference, &oldest);
                add(&mut self.sums.reference, moved);
                subtract(&mut self.sums.current, moved);
                add(&mut self.sums.current, &self.recent[full - 1]);
            }
        }
        if self.recent.len() < full {
            return Assessment::QUIET;
        }
        if !(was_full && self.sums.valid) {
            let mut sums = Sums {
                valid: true,
                ..Sums::default()
            };
            for h in self.recent.iter().take(self.reference) {
                add(&mut sums.reference, h);
            }
            for h in self.recent.iter().skip(self.reference) {
                add(&mut sums.current, h);
            }
            self.sums = sums;
        }
        let m = hist_measures(&self.sums.reference, &self.sums.current);
        self.last = Some(m);
        Assessment {
            score: squash(m.psi, self.psi_threshold).max(squash(m.ks, self.ks_threshold)),
            anomalous: m.psi > self.psi_threshold || m.ks > self.ks_threshold,
        }
    }
}

/// Kolmogorov's distribution: `Q(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²)`.
fn kolmogorov_q(lambda: f64) -> f64 {
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
    p.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    #[test]
    fn running_sums_equal_summing_the_windows() {
        let mut noise = crate::detect::testing::Noise::new(5);
        let mut d = HistDrift::new(7, 3, 0.2, 0.1);
        for i in 0..300 {
            let mut h = Histogram::new();
            for _ in 0..(i % 4) + 1 {
                *h.entry((noise.normal() * 3.0 + (i / 100) as f64) as i32)
                    .or_default() += 1;
            }
            if i == 150 {
                // A restored detector rebuilds its sums.
                d = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
            }
            d.update(h);
            if d.recent.len() == 10 {
                let (mut r, mut c) = (Histogram::new(), Histogram::new());
                d.recent.iter().take(7).for_each(|h| add(&mut r, h));
                d.recent.iter().skip(7).for_each(|h| add(&mut c, h));
                assert_eq!(d.last, Some(hist_measures(&r, &c)), "step {i}");
                assert_eq!((&d.sums.reference, &d.sums.current), (&r, &c), "step {i}");
            }
        }
    }

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

    #[test]
    fn histogram_drift_fires_on_a_shift_then_resolves_when_it_becomes_the_reference() {
        let mut noise = Noise::new(23);
        let mut d = HistDrift::new(10, 2, 0.2, 0.1);
        let mut fired = Vec::new();
        for w in 0..60 {
            let shift = if w >= 30 { 1.0 } else { 0.0 };
            let mut h = Histogram::new();
            for _ in 0..2000 {
                *h.entry(Binning::Asinh.bin(noise.normal() + 3.0 + shift))
                    .or_default() += 1;
            }
            if d.update(h).anomalous {
                fired.push(w);
            }
        }
        assert_eq!(fired.first(), Some(&30), "{fired:?}");
        assert!(fired.iter().all(|w| (30..44).contains(w)), "{fired:?}");
        // Same distribution: PSI near zero; unit bins clamp.
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        for _ in 0..20_000 {
            *a.entry(Binning::Asinh.bin(noise.normal())).or_default() += 1;
            *b.entry(Binning::Asinh.bin(noise.normal())).or_default() += 1;
        }
        let m = hist_measures(&a, &b);
        assert!(m.psi < 0.01 && m.ks < 0.02, "{m:?}");
        assert_eq!(Binning::Unit.bin(1.0), 19);
        assert_eq!(Binning::Unit.bin(0.0), 0);
    }
}

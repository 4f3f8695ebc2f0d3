//! Univariate series anomaly scoring: one score in `[0, 1]` per value, from
//! the values up to and including it (no look-ahead).
//!
//! [`SeriesDetector`] combines three of this module's detectors over a
//! sliding window of recent values, each answering a different question, and
//! reports the strongest answer:
//!
//! | component | question | detector |
//! |---|---|---|
//! | level | is this value far from the recent ones? | [`SpikeDip`]-style robust z of the value (median, MAD) |
//! | change | is this step far from the recent steps, onto an unusual value? | robust z of the first difference, combined with the level's |
//! | shift | has the level moved and stayed? | [`PageHinkley`] on the robust z of the values |
//!
//! Robust statistics keep earlier anomalies from masking later ones; the
//! scale falls back from the MAD to the mean absolute deviation and the
//! standard deviation when more than half the window is one value (flat
//! series with rare excursions are common in operational data), and has a
//! floor of a thousandth of the level so that a perfectly flat series does not
//! turn rounding noise into alarms. A slow ramp moves the window with it and
//! stays quiet; white noise stays low; a single spike scores near 1 at the
//! spike; a step scores high at the step and decays as the window fills with
//! the new level. The first `warmup` values score 0 (nothing to compare with).
//!
//! [`SpikeDip`]: super::spike::SpikeDip

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::change_point::PageHinkley;
use super::squash;

/// Robust z above which a component's score passes 0.5.
const Z_HALF: f64 = 5.0;

/// The per-series ensemble. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesDetector {
    window: usize,
    warmup: usize,
    values: VecDeque<f64>,
    steps: VecDeque<f64>,
    last: Option<f64>,
    shift: PageHinkley,
    #[serde(skip)]
    scratch: Vec<f64>,
}

impl Default for SeriesDetector {
    fn default() -> Self {
        SeriesDetector::new(256)
    }
}

impl SeriesDetector {
    /// A detector comparing each value with the last `window` values.
    pub fn new(window: usize) -> Self {
        let window = window.max(8);
        SeriesDetector {
            window,
            warmup: (window / 8).clamp(8, 32),
            values: VecDeque::with_capacity(window),
            steps: VecDeque::with_capacity(window),
            last: None,
            shift: PageHinkley::new(0.5, 40.0, 30),
            scratch: Vec::new(),
        }
    }

    /// Scores `x` against the values before it, then remembers it. A NaN scores 0 and is skipped.
    pub fn update(&mut self, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let step = self.last.map(|l| x - l);
        let mut score = 0.0;
        if self.values.len() >= self.warmup {
            let (median, scale) = robust(&self.values, &mut self.scratch);
            let z = (x - median) / scale;
            let level = squash(z.abs(), Z_HALF);
            score = level;
            if let Some(d) = step {
                if self.steps.len() >= self.warmup {
                    // An unusual step counts as much as the value it lands on is
                    // unusual too (geometric mean): the step back down from a
                    // spike lands on a normal value and is not a second anomaly.
                    let (m, s) = robust(&self.steps, &mut self.scratch);
                    let step = squash(((d - m) / s).abs(), Z_HALF);
                    score = score.max((step * level).sqrt());
                }
            }
            // A lasting shift: the Page–Hinkley statistic on the (clipped) robust z.
            let a = self.shift.update(z.clamp(-10.0, 10.0));
            score = score.max(a.score * 0.9);
        }
        push(&mut self.values, x, self.window);
        if let Some(d) = step {
            push(&mut self.steps, d, self.window);
        }
        self.last = Some(x);
        score
    }
}

fn push(q: &mut VecDeque<f64>, x: f64, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(x);
}

/// Median and a robust scale of `v` (see the module docs for the fallbacks).
fn robust(v: &VecDeque<f64>, scratch: &mut Vec<f64>) -> (f64, f64) {
    scratch.clear();
    scratch.extend(v.iter().copied());
    let n = scratch.len();
    let mid = n / 2;
    scratch.select_nth_unstable_by(mid, f64::total_cmp);
    let median = scratch[mid];
    for y in scratch.iter_mut() {
        *y = (*y - median).abs();
    }
    let mean_abs = scratch.iter().sum::<f64>() / n as f64;
    scratch.select_nth_unstable_by(mid, f64::total_cmp);
    let mad = scratch[mid] * 1.4826;
    let scale = if mad > 0.0 {
        mad
    } else if mean_abs > 0.0 {
        mean_abs * 1.2533
    } else {
        0.0
    };
    (median, scale.max(median.abs() * 1e-3).max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    fn scores(values: &[f64]) -> Vec<f64> {
        let mut d = SeriesDetector::default();
        values.iter().map(|x| d.update(*x)).collect()
    }

    #[test]
    fn white_noise_stays_low() {
        let mut noise = Noise::new(31);
        let v: Vec<f64> = (0..5000).map(|_| 10.0 + noise.normal()).collect();
        let s = scores(&v);
        let high = s.iter().filter(|x| **x > 0.5).count();
        assert!(high <= 2, "{high} values over 0.5 in white noise");
        assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn a_single_spike_scores_near_one_at_the_spike_only() {
        let mut noise = Noise::new(32);
        let mut v: Vec<f64> = (0..2000).map(|_| 10.0 + noise.normal()).collect();
        v[1500] = 25.0;
        let s = scores(&v);
        assert!(s[1500] > 0.85, "{}", s[1500]);
        let others = s[1502..].iter().cloned().fold(0.0, f64::max);
        assert!(others < 0.6, "{others}");
        // No look-ahead: the scores before the spike are those of the series without it.
        let mut clean = v.clone();
        clean[1500] = 10.0;
        assert_eq!(scores(&clean)[..1500], s[..1500]);
    }

    #[test]
    fn a_step_scores_high_at_the_step_and_settles() {
        let mut noise = Noise::new(33);
        let v: Vec<f64> = (0..3000)
            .map(|i| if i < 2000 { 10.0 } else { 16.0 } + noise.normal())
            .collect();
        let s = scores(&v);
        let at_step = s[2000..2010].iter().cloned().fold(0.0, f64::max);
        assert!(at_step > 0.6, "{at_step}");
        let before = s[100..2000].iter().filter(|x| **x > 0.5).count();
        assert!(before <= 2, "{before}");
        let late = s[2600..].iter().filter(|x| **x > 0.5).count();
        assert!(
            late <= 2,
            "the new level became normal: {late} {:?}",
            s[2600..]
                .iter()
                .enumerate()
                .filter(|x| *x.1 > 0.5)
                .take(10)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_slow_ramp_stays_quiet() {
        let mut noise = Noise::new(34);
        let v: Vec<f64> = (0..5000)
            .map(|i| 10.0 + i as f64 * 0.002 + noise.normal() * 0.5)
            .collect();
        let s = scores(&v);
        let high = s.iter().filter(|x| **x > 0.5).count();
        assert!(high <= 2, "{high}");
    }

    #[test]
    fn a_flat_series_with_an_excursion() {
        let mut v = vec![3.0; 1000];
        v[700] = 3.5;
        let s = scores(&v);
        assert!(s[700] > 0.9, "{}", s[700]);
        assert!(s[..700].iter().all(|x| *x == 0.0));
    }
}

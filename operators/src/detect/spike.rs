//! Spike and dip detection: a robust z-score against a sliding window.
//!
//! The value is compared with the median of the previous `window` values,
//! scaled by their median absolute deviation (×1.4826, so it estimates a
//! standard deviation under normal noise). Median and MAD are not moved by
//! the spikes they are looking for, unlike mean and standard deviation. A
//! value fires when `|z| > threshold` (in the direction asked for), the
//! spirit of Azure Stream Analytics' `AnomalyDetection_SpikeAndDip`.
//!
//! **Warm-up.** A detector scores from [`MIN_HISTORY`] (3) values on, so a
//! monitor with little history still sees a gross deviation (a ×20 mean
//! after six 10-second windows). With `n` values the median and MAD are
//! noisy — the MAD of three values is the smaller of two deviations and can
//! be near zero — so below [`FULL_HISTORY`] (10) values, or the whole window
//! if it is shorter, the *estimated* scale (1.4826 × MAD) is widened by
//! `m(n) / m(full)`, where `m(n)` is the factor by which the threshold must
//! grow for the robust z of `n` Gaussian values to exceed it as rarely as
//! that of 10 values exceeds it ([`SHORT_BASELINE`], Monte Carlo, checked by
//! `a_short_baseline_fires_on_noise_no_more_often_than_ten_values`). The
//! floors (1% of the level; √median for counts) are not estimated from the
//! values, so they are not widened: a count far beyond its Poisson spread
//! fires on a short baseline as it would on a long one. With `n` below the
//! full baseline [`SpikeDip::baseline`] says so, and the monitors put it in
//! the alert ("baseline: 6 windows").

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{squash, Assessment};

/// Which excursions count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Spikes and dips.
    #[default]
    Both,
    /// Only values far above.
    Spikes,
    /// Only values far below.
    Dips,
}

/// Values a detector needs before it scores.
pub const MIN_HISTORY: usize = 3;

/// Values from which the median and MAD are taken as they are.
pub const FULL_HISTORY: usize = 10;

/// `m(n)` for `n` = 3..=10 values: with `n` standard normal values, `x` a
/// new one and `z = |x − median| / (1.4826 · MAD)`, `P(z > 6·m(n))` equals
/// `P(z > 6)` at `n = 10` (0.0048; 10⁶ draws per `n`, rounded up). Odd `n`
/// are worse than the even `n + 1`: one deviation is the median itself, 0.
/// Derived at the default threshold 6; the same widening applies to any
/// threshold (stricter than needed below 6, a little looser above it).
pub const SHORT_BASELINE: [f64; 8] = [39.0, 3.9, 3.6, 1.8, 1.75, 1.25, 1.21, 1.0];

/// Robust z-score spike/dip detector over a sliding window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpikeDip {
    window: usize,
    threshold: f64,
    direction: Direction,
    history: VecDeque<f64>,
    /// The history in order (`f64::total_cmp`), kept beside it so a value
    /// costs O(window) rather than two sorts; rebuilt after a restore.
    #[serde(skip)]
    sorted: Sorted,
}

/// A cache derived from the history: not part of a detector's identity.
#[derive(Clone, Debug, Default)]
struct Sorted(Vec<f64>);

impl PartialEq for Sorted {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl SpikeDip {
    /// A detector over the last `window` values, firing beyond `threshold` robust standard deviations.
    pub fn new(window: usize, threshold: f64, direction: Direction) -> Self {
        SpikeDip {
            window: window.max(3),
            threshold,
            direction,
            history: VecDeque::new(),
            sorted: Sorted::default(),
        }
    }

    /// The robust z-score of `x` against the window, if it holds at least
    /// [`MIN_HISTORY`] values (see the module docs for a short baseline).
    pub fn z(&self, x: f64) -> Option<f64> {
        self.z_scaled(x, 1e-12)
    }

    /// Values the next one is compared with, while they are fewer than a
    /// full baseline (`FULL_HISTORY`, or the window if shorter) and enough
    /// to score: what an alert should say its baseline is.
    pub fn short_baseline(&self) -> Option<usize> {
        let n = self.history.len();
        (MIN_HISTORY..self.full()).contains(&n).then_some(n)
    }

    fn full(&self) -> usize {
        self.window.min(FULL_HISTORY)
    }

    /// How much the estimated scale is widened with `n` values (1 from a full baseline on).
    fn widening(&self, n: usize) -> f64 {
        let m = |k: usize| SHORT_BASELINE[k.clamp(MIN_HISTORY, FULL_HISTORY) - MIN_HISTORY];
        (m(n) / m(self.full())).max(1.0)
    }

    /// The history in order: the kept copy, or one sorted now after a restore.
    fn sorted_history(&self) -> std::borrow::Cow<'_, [f64]> {
        if self.sorted.0.len() == self.history.len() {
            std::borrow::Cow::Borrowed(&self.sorted.0)
        } else {
            std::borrow::Cow::Owned(sorted(&self.history))
        }
    }

    /// The median and the (widened, floored) scale of the window, if it holds
    /// at least [`MIN_HISTORY`] values.
    fn median_scale(&self, floor: f64) -> Option<(f64, f64)> {
        if self.history.len() < MIN_HISTORY.min(self.window) {
            return None;
        }
        let v = self.sorted_history();
        let median = median_sorted(&v);
        let mad = mad_sorted(&v, median) * 1.4826 * self.widening(v.len());
        // A nearly flat window (a steady record rate, say) would make any
        // wobble look infinite: the scale is at least 1% of the level.
        let scale = mad.max(median.abs() * 0.01).max(floor);
        Some((median, scale))
    }

    /// [`SpikeDip::z`] with the scale at least `floor`.
    fn z_scaled(&self, x: f64, floor: f64) -> Option<f64> {
        self.median_scale(floor)
            .map(|(median, scale)| (x - median) / scale)
    }

    /// The median ± `k` robust standard deviations of the window (what a
    /// value within `k` of it looks like), if it holds enough values.
    pub fn expected_range(&self, k: f64) -> Option<(f64, f64)> {
        self.median_scale(1e-12)
            .map(|(median, scale)| (median - k * scale, median + k * scale))
    }

    /// Scores `x`, then adds it to the window.
    pub fn update(&mut self, x: f64) -> Assessment {
        self.update_scaled(x, 1e-12)
    }

    /// Scores a count (records in a window), then adds it to the window. A
    /// count's scale is at least the square root of the median count (a
    /// Poisson count's standard deviation) and at least 1: one record after
    /// a run of empty windows is not a spike, nor one window of 990 among
    /// windows of exactly 1,000.
    pub fn update_count(&mut self, x: f64) -> Assessment {
        if self.sorted.0.len() != self.history.len() {
            self.sorted.0 = sorted(&self.history);
        }
        let floor = if self.history.is_empty() {
            1.0
        } else {
            median_sorted(&self.sorted.0)
        };
        self.update_scaled(x, floor.abs().sqrt().max(1.0))
    }

    /// Whether [`SpikeDip::update_count`] would find every one of any number
    /// of zeros in a row unremarkable: counts are never negative, so while
    /// zeros come in the median can only fall, and a 0's robust z is at most
    /// `median / max(1, sqrt(median))` (the count's scale floor).
    pub fn zeros_are_quiet(&self) -> bool {
        if self.direction == Direction::Spikes {
            return true;
        }
        let v = self.sorted_history();
        let (Some(lowest), Some(highest)) = (v.first(), v.last()) else {
            return true; // No history: nothing to stand out from.
        };
        // Sorted by `total_cmp`: a NaN (or a negative) would sit at an end.
        if !(*lowest >= 0.0 && *highest >= 0.0) {
            return false;
        }
        let median = median_sorted(&v);
        median / median.sqrt().max(1.0) <= self.threshold
    }

    /// Adds `n` zeros to the window without scoring them (see [`SpikeDip::zeros_are_quiet`]).
    pub fn push_zeros(&mut self, n: usize) {
        if n >= self.window {
            self.history.clear();
            self.history.extend(std::iter::repeat_n(0.0, self.window));
            self.sorted.0.clear();
            self.sorted.0.extend(std::iter::repeat_n(0.0, self.window));
            return;
        }
        for _ in 0..n {
            self.push(0.0);
        }
    }

    fn update_scaled(&mut self, x: f64, floor: f64) -> Assessment {
        let out = match self.z_scaled(x, floor) {
            None => Assessment::QUIET,
            Some(z) => {
                let signed = match self.direction {
                    Direction::Both => z.abs(),
                    Direction::Spikes => z.max(0.0),
                    Direction::Dips => (-z).max(0.0),
                };
                Assessment {
                    score: squash(signed, self.threshold),
                    anomalous: signed > self.threshold,
                }
            }
        };
        self.push(x);
        out
    }

    /// Adds `x` to the window (and its sorted copy).
    fn push(&mut self, x: f64) {
        if self.sorted.0.len() != self.history.len() {
            self.sorted.0 = sorted(&self.history);
        }
        self.history.push_back(x);
        let at = self.sorted.0.partition_point(|y| y.total_cmp(&x).is_lt());
        self.sorted.0.insert(at, x);
        if self.history.len() > self.window {
            let old = self.history.pop_front().expect("longer than the window");
            let at = self.sorted.0.partition_point(|y| y.total_cmp(&old).is_lt());
            self.sorted.0.remove(at);
        }
    }
}

fn sorted(values: &VecDeque<f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().collect();
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// The median of sorted values.
fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of `|v - median|` over sorted values, in O(n): the deviations
/// come in increasing order walking outwards from the median.
fn mad_sorted(v: &[f64], median: f64) -> f64 {
    let n = v.len();
    let split = v.partition_point(|y| *y < median);
    let (mut below, mut above) = (split, split);
    let (mut prev, mut cur) = (0.0, 0.0);
    for _ in 0..=n / 2 {
        let down = if below > 0 {
            median - v[below - 1]
        } else {
            f64::INFINITY
        };
        let up = if above < n {
            v[above] - median
        } else {
            f64::INFINITY
        };
        prev = cur;
        if down <= up {
            cur = down;
            below -= 1;
        } else {
            cur = up;
            above += 1;
        }
    }
    if n % 2 == 1 {
        cur
    } else {
        (prev + cur) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    /// The median and MAD by sorting, as a reference.
    fn by_sorting(values: &[f64]) -> (f64, f64) {
        let med = |v: &mut Vec<f64>| {
            v.sort_unstable_by(f64::total_cmp);
            median_sorted(v)
        };
        let m = med(&mut values.to_vec());
        (m, med(&mut values.iter().map(|y| (y - m).abs()).collect()))
    }

    #[test]
    fn incremental_median_and_mad_equal_sorting() {
        let mut noise = Noise::new(9);
        for window in [3, 4, 10, 31] {
            let mut d = SpikeDip::new(window, 5.0, Direction::Both);
            for i in 0..500 {
                // Ties, zeros and outliers included.
                let x = match i % 9 {
                    0 => 0.0,
                    1 => 5.0,
                    2 => 1e6,
                    _ => (noise.normal() * 4.0).round(),
                };
                d.update(x);
                let h: Vec<f64> = d.history.iter().copied().collect();
                let (m, mad) = by_sorting(&h);
                assert_eq!(median_sorted(&d.sorted.0), m);
                assert_eq!(mad_sorted(&d.sorted.0, m), mad, "window {window}, step {i}");
            }
            // A restored detector (no cache) answers the same.
            let restored: SpikeDip =
                serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
            assert_eq!(restored.z(3.0), d.z(3.0));
        }
    }

    /// The rate at which `n` values of noise and a new one give `|z| > 6`,
    /// with the widening of a detector whose full baseline is 10.
    fn false_alarm_rate(n: usize, draws: usize, seed: u64) -> f64 {
        let mut noise = Noise::new(seed);
        let mut fired = 0;
        for _ in 0..draws {
            let mut d = SpikeDip::new(30, 6.0, Direction::Both);
            for _ in 0..n {
                d.push(noise.normal());
            }
            // Scale-free noise (no floor binds): 1% of a level of 0 is 0.
            if d.update(noise.normal()).anomalous {
                fired += 1;
            }
        }
        fired as f64 / draws as f64
    }

    #[test]
    fn a_short_baseline_fires_on_noise_no_more_often_than_ten_values() {
        let full = false_alarm_rate(10, 100_000, 21);
        assert!((0.003..0.007).contains(&full), "{full}");
        for n in MIN_HISTORY..FULL_HISTORY {
            let short = false_alarm_rate(n, 100_000, 22 + n as u64);
            // Sampling noise of ~500 events: 20% slack.
            assert!(short < full * 1.2, "n = {n}: {short} against {full} at 10");
        }
        let mut d = SpikeDip::new(30, 6.0, Direction::Both);
        assert_eq!(d.z(1.0), None);
        for x in [100.0, 101.0, 99.0] {
            assert_eq!(d.short_baseline(), None);
            d.update(x);
        }
        assert_eq!(d.short_baseline(), Some(3));
        assert!(d.update(2000.0).anomalous, "a ×20 spike on 3 values fires");
    }

    #[test]
    fn a_short_window_is_its_own_full_baseline() {
        let mut d = SpikeDip::new(5, 6.0, Direction::Both);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] {
            d.update(x);
        }
        assert_eq!(d.short_baseline(), None);
        assert_eq!(d.widening(5), 1.0);
        assert!((d.widening(3) - 39.0 / 3.6).abs() < 1e-12);
    }

    #[test]
    fn a_single_spike_fires_once_and_noise_does_not() {
        let mut d = SpikeDip::new(60, 5.0, Direction::Both);
        let mut noise = Noise::new(1);
        let mut fired = Vec::new();
        for i in 0..500 {
            let x = 10.0 + noise.normal() + if i == 300 { 12.0 } else { 0.0 };
            if d.update(x).anomalous {
                fired.push(i);
            }
        }
        assert_eq!(fired, [300]);
    }

    #[test]
    fn white_noise_stays_quiet() {
        let mut d = SpikeDip::new(100, 5.0, Direction::Both);
        let mut noise = Noise::new(2);
        let alarms = (0..20_000)
            .filter(|_| d.update(noise.normal()).anomalous)
            .count();
        assert!(alarms <= 2, "{alarms} false alarms in 20,000 normal values");
    }

    #[test]
    fn direction_selects_spikes_or_dips() {
        let mut spikes = SpikeDip::new(30, 4.0, Direction::Spikes);
        let mut dips = SpikeDip::new(30, 4.0, Direction::Dips);
        let mut noise = Noise::new(3);
        for _ in 0..100 {
            let x = noise.normal();
            spikes.update(x);
            dips.update(x);
        }
        assert!(!spikes.update(-20.0).anomalous && dips.update(-20.0).anomalous);
    }

    #[test]
    fn a_step_fires_at_the_step_then_becomes_the_new_normal() {
        let mut d = SpikeDip::new(40, 5.0, Direction::Both);
        let mut noise = Noise::new(4);
        let fired: Vec<usize> = (0..400)
            .filter(|&i| {
                d.update(noise.normal() + if i >= 200 { 15.0 } else { 0.0 })
                    .anomalous
            })
            .collect();
        assert!(fired.first() == Some(&200), "{fired:?}");
        assert!(
            fired.iter().all(|&i| i < 200 + 25),
            "once half the window is past the step it is normal again: {fired:?}"
        );
    }
}

//! Univariate series anomaly scoring: one score in `[0, 1]` per value, from
//! the values (and their timestamps) up to and including it — no look-ahead.
//!
//! [`SeriesDetector`] asks four questions of every value, each answered in
//! the same unit — decades of improbability, `−log10 p` — so they can be
//! compared and combined:
//!
//! | component | question | how |
//! |---|---|---|
//! | level | is this value far from what the season and the level predict? | two-sided normal tail of the [`Seasonal`] baseline's residual `z` |
//! | change | has the level moved and stayed? | two-sided CUSUM of the residuals (drift 0.5 σ per value), whose stationary tail is `e^(−h)` |
//! | variance | has the noise grown? | the residuals' recent mean square (about 20 values) against a χ² with as many degrees of freedom |
//! | flat | is the value stuck? | the probability of a run of exact repeats this long, from how often this series repeats a value |
//!
//! Then three steps turn the strongest answer into the score:
//!
//! 1. **Combine**: the largest surprise, less `log10(4)` for having asked
//!    four questions (Bonferroni).
//! 2. **Calibrate**: on real data the tails are heavier than normal, and
//!    differently so per series; the detector keeps a histogram of its own
//!    combined surprises (forgetting slowly) and rescales them so that this
//!    series' 99th percentile sits at 2 decades, as it would were the model
//!    exact. A series whose ordinary days look improbable to the model is
//!    thereby believed less, and one series' score means what another's does.
//! 3. **Onset**: an anomaly is news once. A surprise of [`EPISODE`] decades
//!    or more opens an *episode* and scores in full; until the surprise has
//!    stayed below that for `onset_window` values, the episode goes on and
//!    its values score at most half of [`EPISODE`] — so a level shift scores
//!    high at the shift and not on the plateau while the baseline takes the
//!    new level in, and a stuck sensor at the first repeats, not at every
//!    one after (its evidence only grows while it stays stuck).
//!
//! The score is `s / (s + 6)` of the surprise `s` in decades (one half at a
//! probability of 1e-6; see [`from_surprise`]). The first values score 0 (the baseline warms up over 10 values;
//! seasons join after two periods, see [`Seasonal`]). Missing values (`NaN`)
//! score 0 and are skipped. Every part is plain data for checkpoints.
//!
//! Each component on its own, and the post-processing steps, are scored on
//! the labelled corpus by `benches/detection` (see BENCHMARKS.md), which is
//! where the choices above were made: the combination scores above each of
//! its parts there.

use serde::{Deserialize, Serialize};

use super::gaussian::{from_surprise, normal_surprise};
use super::likelihood::Likelihood;
use super::seasonal::{Rates, Seasonal};

/// The questions the detector asks; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Components {
    /// The residual's own improbability.
    pub level: bool,
    /// CUSUM of the residuals.
    pub change: bool,
    /// Recent mean square of the residuals.
    pub variance: bool,
    /// Runs of exact repeats.
    pub flat: bool,
    /// The level against a slow copy of itself (a slope that changed).
    pub trend: bool,
}

impl Components {
    /// All four.
    pub const ALL: Components = Components {
        level: true,
        change: true,
        variance: true,
        flat: true,
        trend: true,
    };

    fn count(&self) -> usize {
        [
            self.level,
            self.change,
            self.variance,
            self.flat,
            self.trend,
        ]
        .iter()
        .filter(|c| **c)
        .count()
    }
}

/// How a [`SeriesDetector`] is put together (the defaults are what users get).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesConfig {
    /// Which questions to ask.
    pub components: Components,
    /// Whether the baseline may learn daily and weekly seasons.
    pub seasons: bool,
    /// Rates of the baseline.
    pub rates: Rates,
    /// Rescale surprises to the series' own 99th percentile.
    pub calibrate: bool,
    /// Values below the episode level that end an episode (0: no onset step).
    pub onset_window: usize,
    /// Decades of surprise that open an episode ([`EPISODE`]).
    pub episode: f64,
    /// Replace the calibration by the anomaly likelihood of the combined
    /// surprise ([`Likelihood`]; measured, not the default).
    pub likelihood: bool,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            components: Components::ALL,
            seasons: true,
            rates: Rates::default(),
            calibrate: true,
            onset_window: 32,
            episode: EPISODE,
            likelihood: false,
        }
    }
}

/// Decades of surprise that open an episode (see the module docs).
pub const EPISODE: f64 = 4.0;

/// CUSUM drift per value, in residual standard deviations.
const CUSUM_K: f64 = 0.5;
/// Residuals are clipped here before the CUSUM and variance see them, so a
/// single wild value is the level component's news, not theirs.
const CLIP_Z: f64 = 6.0;
/// Rate of the trend component's slow level (per value).
const TREND_SLOW: f64 = 0.005;
/// Rate of the trend component's running mean and variance of the gap.
const TREND_RATE: f64 = 0.002;
/// Values before the trend component answers.
const TREND_WARMUP: u64 = 300;
/// Rate of the residuals' recent mean square (about 2/rate − 1 = 19 degrees of freedom).
const VARIANCE_RATE: f64 = 0.1;

/// The per-series detector; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesDetector {
    config: SeriesConfig,
    baseline: Seasonal,
    up: f64,
    down: f64,
    mean_square: f64,
    /// Variance component: values since the mean square was (re)started.
    squares_seen: u64,
    last: Option<f64>,
    run: u64,
    /// Values that repeated the one before, and values compared.
    repeats: u64,
    compared: u64,
    /// Trend component: the slow level, and the running mean and variance of
    /// the fast level's distance from it.
    slow: Option<f64>,
    gap_mean: f64,
    gap_var: f64,
    gaps: u64,
    /// Per component.
    calibration: [Calibration; 5],
    /// In an episode: values below [`EPISODE`] since the last one above it.
    episode: Option<u32>,
    /// With `config.likelihood`.
    likelihood: Option<Likelihood>,
}

impl Default for SeriesDetector {
    fn default() -> Self {
        SeriesDetector::with_config(SeriesConfig::default())
    }
}

impl SeriesDetector {
    /// The default detector, its onset step over `window` values.
    pub fn new(window: usize) -> Self {
        SeriesDetector::with_config(SeriesConfig {
            onset_window: window,
            ..SeriesConfig::default()
        })
    }

    /// A detector put together as `config` says.
    pub fn with_config(config: SeriesConfig) -> Self {
        let baseline = if config.seasons {
            Seasonal::new(config.rates)
        } else {
            Seasonal::plain(config.rates)
        };
        SeriesDetector {
            config,
            baseline,
            up: 0.0,
            down: 0.0,
            mean_square: 1.0,
            squares_seen: 0,
            last: None,
            run: 0,
            repeats: 0,
            compared: 0,
            slow: None,
            gap_mean: 0.0,
            gap_var: 0.0,
            gaps: 0,
            calibration: Default::default(),
            episode: None,
            likelihood: config.likelihood.then(Likelihood::default),
        }
    }

    /// Scores `x` at `t_ms` against what came before, then learns from it.
    pub fn update(&mut self, t_ms: i64, x: f64) -> f64 {
        match self.surprise(t_ms, x) {
            Some(s) => from_surprise(s),
            None => 0.0,
        }
    }

    /// The combined, calibrated, onset-weighted surprise of `x` in decades (`None`: not scored).
    pub fn surprise(&mut self, t_ms: i64, x: f64) -> Option<f64> {
        if !x.is_finite() {
            return None;
        }
        let raw = self.components(t_ms, x)?;
        let mut strongest: f64 = 0.0;
        for (k, s) in raw.into_iter().enumerate() {
            let s = if self.config.calibrate {
                let c = self.calibration[k].apply(s);
                self.calibration[k].observe(s);
                c
            } else {
                s
            };
            strongest = strongest.max(s);
        }
        let c = &self.config.components;
        let mut combined = (strongest - (c.count().max(1) as f64).log10()).max(0.0);
        if let Some(l) = &mut self.likelihood {
            combined = -l
                .tail(from_surprise(combined))
                .max(f64::MIN_POSITIVE)
                .log10();
        }
        Some(self.onset(combined))
    }

    /// Each component's surprise, 0 for those not asked (`None` while warming up).
    fn components(&mut self, t_ms: i64, x: f64) -> Option<[f64; 5]> {
        let c = self.config.components;
        let flat = self.flat(x);
        let z = self.baseline.update(t_ms, x)?;
        let zc = z.clamp(-CLIP_Z, CLIP_Z);
        let mut s = [0.0; 5];
        if c.level {
            s[0] = normal_surprise(z);
        }
        if c.change {
            self.up = (self.up + zc - CUSUM_K).max(0.0);
            self.down = (self.down - zc - CUSUM_K).max(0.0);
            let h = self.up.max(self.down);
            // P(S > h) ≈ e^(−2kh) for unit-variance steps; two-sided.
            s[1] = (2.0 * CUSUM_K * h - std::f64::consts::LN_2).max(0.0) / std::f64::consts::LN_10;
        }
        if c.variance {
            self.squares_seen += 1;
            self.mean_square += VARIANCE_RATE * (zc * zc - self.mean_square);
            if self.squares_seen >= 20 {
                s[2] = chi_square_surprise(self.mean_square, 2.0 / VARIANCE_RATE - 1.0);
            }
        }
        if c.flat {
            s[3] = flat;
        }
        if c.trend {
            s[4] = self.trend();
        }
        Some(s)
    }

    /// Decades of improbability of the level's distance from its slow copy.
    fn trend(&mut self) -> f64 {
        let Some(fast) = self.baseline.level() else {
            return 0.0;
        };
        let slow = self.slow.get_or_insert(fast);
        *slow += TREND_SLOW * (fast - *slow);
        let gap = fast - *slow;
        self.gaps += 1;
        let n = self.gaps as f64;
        let z = if self.gaps > TREND_WARMUP {
            (gap - self.gap_mean) / self.gap_var.sqrt().max(f64::MIN_POSITIVE)
        } else {
            0.0
        };
        // Winsorised, so an episode does not widen what is normal.
        let sd = self.gap_var.sqrt();
        let g = if self.gaps > TREND_WARMUP {
            gap.clamp(self.gap_mean - 3.0 * sd, self.gap_mean + 3.0 * sd)
        } else {
            gap
        };
        let rate = TREND_RATE.max(1.0 / n);
        let d = g - self.gap_mean;
        self.gap_mean += rate * d;
        self.gap_var += rate * (d * (g - self.gap_mean) - self.gap_var);
        if self.gaps > TREND_WARMUP {
            normal_surprise(z)
        } else {
            0.0
        }
    }

    /// Decades of improbability of the current run of exact repeats.
    fn flat(&mut self, x: f64) -> f64 {
        let repeated = self.last == Some(x);
        if self.last.is_some() {
            self.compared += 1;
            self.repeats += repeated as u64;
        }
        self.last = Some(x);
        self.run = if repeated { self.run + 1 } else { 0 };
        if self.run == 0 || self.compared < 30 {
            return 0.0;
        }
        // A repeat's probability, with one pseudo-repeat so that a series that
        // never repeated is not certain it never will.
        let p = (self.repeats as f64 + 1.0) / (self.compared as f64 + 2.0);
        -(self.run as f64) * p.log10()
    }

    fn onset(&mut self, s: f64) -> f64 {
        let w = self.config.onset_window as u32;
        let level = self.config.episode;
        if w == 0 {
            return s;
        }
        match &mut self.episode {
            None => {
                if s >= level {
                    self.episode = Some(0);
                }
                s
            }
            Some(quiet) => {
                if s < level {
                    *quiet += 1;
                    if *quiet >= w {
                        self.episode = None;
                    }
                } else {
                    *quiet = 0;
                }
                0.5 * s.min(level)
            }
        }
    }
}

/// `−log10 P(χ²_ν / ν ≥ m)` (one-sided: only more variance), by Wilson–Hilferty.
fn chi_square_surprise(mean_square: f64, dof: f64) -> f64 {
    if mean_square.is_nan() || mean_square <= 1.0 {
        return 0.0;
    }
    let v = 2.0 / (9.0 * dof);
    let z = (mean_square.cbrt() - (1.0 - v)) / v.sqrt();
    // One-sided: half the two-sided tail.
    (normal_surprise(z) + std::f64::consts::LOG10_2).max(0.0)
}

/// Bins per decade of surprise.
const PER_DECADE: f64 = 8.0;
/// Bins: up to 16 decades, the last one open-ended (a 99th percentile past
/// 10 decades already takes the smallest factor).
const BINS: usize = 128;
/// Surprises seen before the calibration applies.
const CALIBRATION_MIN: f64 = 200.0;
/// Where the 99th percentile of an exact model's surprises sits.
const TARGET_P99: f64 = 2.0;

/// The histogram of a detector's own surprises; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Calibration {
    counts: Vec<f32>,
    total: f32,
    factor: f32,
    since: u32,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            counts: vec![0.0; BINS],
            total: 0.0,
            factor: 1.0,
            since: 0,
        }
    }
}

impl Calibration {
    /// Forgetting per value: a half-life of about 7,000 values.
    const DECAY: f64 = 0.9999;

    fn apply(&self, s: f64) -> f64 {
        s * f64::from(self.factor)
    }

    fn observe(&mut self, s: f64) {
        let bin = ((s * PER_DECADE) as usize).min(BINS - 1);
        self.counts[bin] += 1.0;
        self.total += 1.0;
        self.since += 1;
        if self.since >= 50 {
            let decay = Self::DECAY.powi(self.since as i32) as f32;
            self.counts.iter_mut().for_each(|c| *c *= decay);
            self.total *= decay;
            self.since = 0;
            self.refit();
        }
    }

    fn refit(&mut self) {
        if f64::from(self.total) < CALIBRATION_MIN * 0.99 {
            return;
        }
        let tail = 0.01 * self.total;
        let mut seen = 0.0;
        let mut p99 = 0.0;
        for (b, c) in self.counts.iter().enumerate().rev() {
            if seen + c >= tail {
                // Within the bin, as if its values were spread evenly.
                let inside = ((tail - seen) / c.max(f32::MIN_POSITIVE)).clamp(0.0, 1.0);
                p99 = (b as f64 + 1.0 - f64::from(inside)) / PER_DECADE;
                break;
            }
            seen += c;
        }
        self.factor = (TARGET_P99 / p99.max(0.5)).clamp(0.2, 2.0) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    const MIN: i64 = 60_000;

    fn scores(values: &[f64]) -> Vec<f64> {
        let mut d = SeriesDetector::default();
        values
            .iter()
            .enumerate()
            .map(|(i, x)| d.update(i as i64 * MIN, *x))
            .collect()
    }

    #[test]
    fn white_noise_stays_low() {
        let mut noise = Noise::new(31);
        let v: Vec<f64> = (0..5000).map(|_| 10.0 + noise.normal()).collect();
        let s = scores(&v);
        let high = s.iter().filter(|x| **x > 0.5).count();
        assert!(high == 0, "{high} values over 0.5 in white noise");
        assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn a_single_spike_scores_high_at_the_spike_only() {
        let mut noise = Noise::new(32);
        let mut v: Vec<f64> = (0..2000).map(|_| 10.0 + noise.normal()).collect();
        v[1500] = 25.0;
        let s = scores(&v);
        let noise_max = s[..1500].iter().cloned().fold(0.0, f64::max);
        assert!(
            s[1500] > 0.6 && s[1500] > 2.0 * noise_max,
            "{} {noise_max}",
            s[1500]
        );
        let after = s[1502..].iter().cloned().fold(0.0, f64::max);
        assert!(after < 0.5, "{after}");
        // No look-ahead: the scores before the spike are those of the series without it.
        let mut clean = v.clone();
        clean[1500] = 10.0;
        assert_eq!(scores(&clean)[..1500], s[..1500]);
    }

    #[test]
    fn a_step_scores_high_at_the_step_and_not_on_the_plateau() {
        let mut noise = Noise::new(33);
        let v: Vec<f64> = (0..3000)
            .map(|i| if i < 2000 { 10.0 } else { 16.0 } + noise.normal())
            .collect();
        let s = scores(&v);
        let at_step = s[2000..2010].iter().cloned().fold(0.0, f64::max);
        let before = s[100..2000].iter().cloned().fold(0.0, f64::max);
        assert!(
            at_step > 0.6 && at_step > 2.0 * before,
            "{at_step} {before}"
        );
        let late = s[2100..].iter().cloned().fold(0.0, f64::max);
        assert!(late < 0.5, "the new level became normal: {late}");
    }

    #[test]
    fn a_slow_ramp_stays_quiet() {
        let mut noise = Noise::new(34);
        let v: Vec<f64> = (0..5000)
            .map(|i| 10.0 + i as f64 * 0.002 + noise.normal() * 0.5)
            .collect();
        let high = scores(&v).iter().filter(|x| **x > 0.5).count();
        assert!(high == 0, "{high}");
    }

    #[test]
    fn a_stuck_sensor_is_seen_within_a_few_values() {
        let mut noise = Noise::new(35);
        let mut v: Vec<f64> = (0..2000).map(|_| 50.0 + noise.normal()).collect();
        for i in 1500..1600 {
            v[i] = v[1499];
        }
        let s = scores(&v);
        let first = s[1500..1600]
            .iter()
            .position(|x| *x >= from_surprise(EPISODE));
        assert!(first.is_some_and(|i| i < 10), "{first:?}");
    }

    #[test]
    fn a_count_series_that_often_repeats_is_not_flat_when_it_repeats() {
        // Counts around 2 repeat a value a third of the time.
        let mut noise = Noise::new(36);
        let v: Vec<f64> = (0..5000)
            .map(|_| (2.0 + noise.normal()).round().max(0.0))
            .collect();
        let high = scores(&v).iter().filter(|x| **x > 0.5).count();
        assert!(high <= 2, "{high}");
    }

    #[test]
    fn a_missing_daily_peak_is_an_anomaly() {
        let mut noise = Noise::new(37);
        let step = 5 * MIN;
        let day = 288;
        let peak = |i: i64| {
            let h = (i % day) as f64 / 12.0;
            let d = (h - 13.0).abs() / 2.0;
            15.0 * (-0.5 * d * d).exp()
        };
        let mut d = SeriesDetector::default();
        let mut normal_max: f64 = 0.0;
        let mut missing_max: f64 = 0.0;
        for i in 0..(12 * day) {
            let skip = (10 * day..11 * day).contains(&i);
            let x = 100.0 + if skip { 0.0 } else { peak(i) } + noise.normal();
            let s = d.update(i * step, x);
            if (4 * day..10 * day).contains(&i) {
                normal_max = normal_max.max(s);
            } else if skip {
                missing_max = missing_max.max(s);
            }
        }
        assert!(
            missing_max >= from_surprise(EPISODE) && missing_max > 1.5 * normal_max,
            "{missing_max} {normal_max}"
        );
    }
}

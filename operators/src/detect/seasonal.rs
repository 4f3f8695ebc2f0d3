//! A seasonality-aware baseline: what a value should be, given the level of
//! the series, the time of day and the day of the week, learned online.
//!
//! In: `(event time in ms, value)` pairs in time order (a `NaN` is skipped;
//! gaps in time are fine). Out: per value, the standardised residual `z` of
//! the value against the prediction made *before* seeing it — no look-ahead —
//! or `None` during the first values. State: per candidate profile a level, a
//! table of seasonal offsets, an autoregressive correction and two error
//! averages; plain data, checkpointed with the operator that owns it.
//!
//! **Profiles.** Three candidates run side by side, each a robust
//! Holt–Winters-style additive model (level + offset of the value's phase
//! bin + `φ` × the previous residual):
//!
//! | profile | phase bins | when it can apply |
//! |---|---|---|
//! | none | — | always |
//! | daily | time of day, at most 288 bins (5 minutes, or the spacing) | spacing of at most 2 hours |
//! | weekly | hour of the week (168 bins), or day of the week at daily spacing | spacing of at most a day |
//!
//! The spacing is the smallest positive step between timestamps seen so far,
//! so gaps do not coarsen it. A seasonal profile becomes eligible once it has
//! seen two whole periods, and the baseline answers with whichever eligible
//! profile has had the smallest mean absolute residual over the last few
//! hundred values (switching only for a 5% improvement): the season is found,
//! not declared, and a series without one keeps the plain level.
//!
//! **Robustness.** Residuals are winsorised at 3 scale units before they move
//! the level, the offsets and the scale, so an
//! anomaly does not teach the baseline that it is normal (a lasting level
//! shift is still absorbed, at the level's rate). The scale is the mean
//! absolute residual × √(π/2) (a standard deviation under normal noise) with
//! a floor of a millionth of the level, so a flat series does not turn
//! rounding into alarms.

use serde::{Deserialize, Serialize};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;

/// Values before the baseline answers at all.
const WARMUP: u64 = 10;

/// Rates of the running averages (per value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Level (a half-life of ~14 values at 0.05).
    pub level: f64,
    /// A seasonal offset, per visit of its bin.
    pub season: f64,
    /// The residual scale used for `z`.
    pub scale: f64,
    /// The profile-selection error.
    pub select: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            level: 0.05,
            season: 0.15,
            scale: 0.01,
            select: 0.002,
        }
    }
}

/// One candidate model (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    /// Period in ms; 0 for the plain level.
    period_ms: i64,
    bin_ms: i64,
    /// Per bin; NaN until the bin is first seen.
    offsets: Vec<f64>,
    /// Per bin: visits so far, up to 255 (an offset averages its first
    /// visits, then forgets at the season rate, reached long before).
    visits: Vec<u8>,
    /// The level the prediction starts from (of the deseasoned values).
    level: f64,
    /// A slow level of the deseasoned values, that the offsets are learned
    /// against: it moves over about a period, so it does not take in the
    /// season the offsets are there to learn.
    slow: f64,
    /// Mean absolute residual (for `z`).
    abs_residual: f64,
    /// Slower mean absolute residual (for choosing a profile).
    error: f64,
    /// Lag-1 autocorrelation of residuals: running Σ r·r₋₁ and Σ r².
    lagged: f64,
    squares: f64,
    previous: f64,
    n: u64,
    /// First timestamp seen by this profile.
    since_ms: i64,
}

impl Profile {
    fn new(period_ms: i64, bin_ms: i64, t_ms: i64, x: f64) -> Self {
        let bins = if period_ms > 0 {
            (period_ms / bin_ms).max(1) as usize
        } else {
            0
        };
        Profile {
            period_ms,
            bin_ms,
            offsets: vec![f64::NAN; bins],
            visits: vec![0; bins],
            level: x,
            slow: x,
            abs_residual: 0.0,
            error: 0.0,
            lagged: 0.0,
            squares: 0.0,
            previous: 0.0,
            n: 0,
            since_ms: t_ms,
        }
    }

    fn bin(&self, t_ms: i64) -> Option<usize> {
        if self.offsets.is_empty() {
            return None;
        }
        Some((t_ms.div_euclid(self.bin_ms)).rem_euclid(self.offsets.len() as i64) as usize)
    }

    fn offset(&self, t_ms: i64) -> f64 {
        self.bin(t_ms)
            .map(|b| self.offsets[b])
            .filter(|o| o.is_finite())
            .unwrap_or(0.0)
    }

    fn phi(&self) -> f64 {
        if self.squares > 0.0 {
            (self.lagged / self.squares).clamp(0.0, 0.95)
        } else {
            0.0
        }
    }

    /// The prediction for time `t_ms`.
    fn predict(&self, t_ms: i64) -> f64 {
        self.level + self.offset(t_ms) + self.phi() * self.previous
    }

    /// The residual scale: the recent mean absolute residual, but not below
    /// half the long-run one (a stuck stretch must not make the noise that
    /// follows it look wild), nor a millionth of the level.
    fn scale(&self) -> f64 {
        (self.abs_residual.max(0.5 * self.error) * 1.253_314).max(self.level.abs() * 1e-6)
    }

    /// Whether it has seen two whole periods.
    fn eligible(&self, t_ms: i64) -> bool {
        self.n >= WARMUP && t_ms - self.since_ms >= 2 * self.period_ms
    }

    /// Learns from `x` at `t_ms` (values `spacing_ms` apart at most); returns
    /// the residual of the prediction made before.
    fn learn(&mut self, t_ms: i64, x: f64, spacing_ms: i64, rates: &Rates) -> f64 {
        let r = x - self.predict(t_ms);
        self.n += 1;
        let warm = self.n > WARMUP;
        let bound = 3.0 * self.scale();
        let clip = |v: f64| if warm { v.clamp(-bound, bound) } else { v };
        let rc = clip(r);
        self.level += rates.level * rc;
        if let Some(b) = self.bin(t_ms) {
            // The slow level moves over about one period of values.
            let per_period = (self.period_ms / spacing_ms.max(1)).max(1) as f64;
            let slow_rate = (2.0 / per_period).max(1.0 / self.n as f64).min(rates.level);
            let offset = self.offset(t_ms);
            self.slow += slow_rate * clip(x - offset - self.slow);
            self.visits[b] = self.visits[b].saturating_add(1);
            let rate = rates.season.max(1.0 / self.visits[b] as f64);
            let o = &mut self.offsets[b];
            let target = x - self.slow;
            if o.is_finite() {
                *o += rate * clip(target - *o);
            } else {
                *o = target;
            }
        }
        let a = r.abs().min(if warm { bound } else { f64::INFINITY });
        let fast = rates.scale.max(1.0 / self.n as f64);
        self.abs_residual += fast * (a - self.abs_residual);
        let slow = rates.select.max(1.0 / self.n as f64);
        self.error += slow * (a - self.error);
        // Lag-1 autocorrelation of the (winsorised) residuals.
        let lag = rates.scale;
        self.lagged += lag * (rc * self.previous - self.lagged);
        self.squares += lag * (rc * rc - self.squares);
        self.previous = rc;
        r
    }
}

/// The baseline; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seasonal {
    rates: Rates,
    spacing_ms: i64,
    last_ms: Option<i64>,
    profiles: Vec<Profile>,
    chosen: usize,
    /// Seasonal profiles may be added (not yet, or no longer: the spacing is known).
    seasons: bool,
    n: u64,
}

impl Default for Seasonal {
    fn default() -> Self {
        Seasonal::new(Rates::default())
    }
}

impl Seasonal {
    /// A baseline with `rates`.
    pub fn new(rates: Rates) -> Self {
        Seasonal {
            rates,
            spacing_ms: i64::MAX,
            last_ms: None,
            profiles: Vec::new(),
            chosen: 0,
            seasons: true,
            n: 0,
        }
    }

    /// A baseline that never models a season (the plain level with its AR term).
    pub fn plain(rates: Rates) -> Self {
        Seasonal {
            seasons: false,
            ..Seasonal::new(rates)
        }
    }

    /// The profile answering now: 0 none, otherwise its period in ms.
    pub fn period_ms(&self) -> i64 {
        self.profiles.get(self.chosen).map_or(0, |p| p.period_ms)
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The current residual scale (a standard deviation), if warmed up.
    pub fn scale(&self) -> Option<f64> {
        (self.n > WARMUP).then(|| self.profiles[self.chosen].scale())
    }

    /// The level of the profile answering now (the deseasoned level), if warmed up.
    pub fn level(&self) -> Option<f64> {
        (self.n > WARMUP).then(|| self.profiles[self.chosen].level)
    }

    /// The prediction for `t_ms`, if warmed up.
    pub fn predict(&self, t_ms: i64) -> Option<f64> {
        (self.n > WARMUP).then(|| self.profiles[self.chosen].predict(t_ms))
    }

    /// Standardised residual of `x` at `t_ms` against the prediction made
    /// before it (`None` while warming up), then learns from it.
    pub fn update(&mut self, t_ms: i64, x: f64) -> Option<f64> {
        if !x.is_finite() {
            return None;
        }
        if let Some(last) = self.last_ms {
            let step = t_ms - last;
            if step > 0 && step < self.spacing_ms {
                self.spacing_ms = step;
            }
        }
        self.last_ms = Some(t_ms);
        if self.profiles.is_empty() {
            self.profiles.push(Profile::new(0, 1, t_ms, x));
        }
        // Seasonal profiles join once the spacing has been seen a few times.
        if self.seasons && self.n == WARMUP && self.spacing_ms < i64::MAX {
            let s = self.spacing_ms;
            if s <= 2 * HOUR {
                self.profiles
                    .push(Profile::new(DAY, s.max(DAY / 288), t_ms, x));
            }
            if s <= DAY {
                let bin = if s >= DAY { DAY } else { s.max(HOUR) };
                self.profiles.push(Profile::new(WEEK, bin, t_ms, x));
            }
            let level = self.profiles[0].level;
            for p in &mut self.profiles[1..] {
                p.level = level;
                p.slow = level;
            }
            self.seasons = false;
        }
        let z = (self.n >= WARMUP).then(|| {
            let p = &self.profiles[self.chosen];
            (x - p.predict(t_ms)) / p.scale().max(f64::MIN_POSITIVE)
        });
        for p in &mut self.profiles {
            p.learn(t_ms, x, self.spacing_ms, &self.rates);
        }
        self.n += 1;
        self.choose(t_ms);
        z
    }

    fn choose(&mut self, t_ms: i64) {
        let current = self.profiles[self.chosen].error;
        let best = (0..self.profiles.len())
            .filter(|&i| i == 0 || self.profiles[i].eligible(t_ms))
            .min_by(|&a, &b| self.profiles[a].error.total_cmp(&self.profiles[b].error));
        if let Some(b) = best {
            if self.profiles[b].error < 0.95 * current {
                self.chosen = b;
            }
        }
        // A profile that stopped being the best by far falls back.
        if self.chosen != 0 && self.profiles[0].error < 0.95 * self.profiles[self.chosen].error {
            self.chosen = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Noise;
    use super::*;

    fn daily(t: i64) -> f64 {
        let hour = t.rem_euclid(DAY) as f64 / HOUR as f64;
        let d = (hour - 14.0).abs().min(24.0 - (hour - 14.0).abs()) / 3.0;
        20.0 * (-0.5 * d * d).exp()
    }

    #[test]
    fn finds_a_daily_season_and_predicts_the_peak() {
        let mut noise = Noise::new(3);
        let mut s = Seasonal::default();
        let step = 5 * MINUTE;
        let mut late = Vec::new();
        for i in 0..(10 * DAY / step) {
            let t = i * step;
            let z = s.update(t, 100.0 + daily(t) + noise.normal());
            if t > 6 * DAY {
                late.push(z.unwrap());
            }
        }
        assert_eq!(s.period_ms(), DAY);
        // The peak is expected: residuals look like the unit noise.
        let big = late.iter().filter(|z| z.abs() > 4.5).count();
        assert!(big <= 2, "{big} of {}", late.len());
        let sd = (late.iter().map(|z| z * z).sum::<f64>() / late.len() as f64).sqrt();
        assert!((0.7..1.5).contains(&sd), "{sd}");
        // A missing peak is not.
        let t = 10 * DAY + 14 * HOUR;
        let z = s.update(t, 100.0).unwrap();
        assert!(z < -8.0, "{z}");
    }

    #[test]
    fn a_series_without_season_keeps_the_plain_level() {
        let mut noise = Noise::new(4);
        let mut s = Seasonal::default();
        for i in 0..5000 {
            s.update(i * HOUR, 50.0 + noise.normal());
        }
        assert_eq!(s.period_ms(), 0);
        assert!((s.scale().unwrap() - 1.0).abs() < 0.25, "{:?}", s.scale());
    }

    #[test]
    fn a_spike_stands_out_and_does_not_move_the_baseline() {
        let mut noise = Noise::new(5);
        let mut s = Seasonal::default();
        for i in 0..2000 {
            s.update(i * MINUTE, 10.0 + noise.normal());
        }
        let before = s.predict(2000 * MINUTE).unwrap();
        let z = s.update(2000 * MINUTE, 40.0).unwrap();
        assert!(z > 15.0, "{z}");
        let after = s.predict(2001 * MINUTE).unwrap();
        assert!((after - before).abs() < 0.5, "{before} {after}");
        assert!(s.update(2001 * MINUTE, f64::NAN).is_none());
    }
}

//! A labelled corpus of univariate series, generated deterministically from a
//! seed, for measuring detectors with [`super::scoring`].
//!
//! In: a seed and a number of series. Out: [`Series`], each with its
//! timestamps (ms since the epoch, UTC), its values (`NaN` where a reading is
//! missing) and its labelled [`Anomaly`] onsets (record index and [`Kind`]).
//! Series `i` depends only on the seed and `i`, so a longer corpus extends a
//! shorter one. No state beyond the generator's own.
//!
//! What a series is made of:
//! - **Spacing** 1 minute, 5 minutes, 1 hour or 1 day; 1,000–20,000 records
//!   (log-uniform; 1,000–4,000 at daily spacing), with 0–3 **gaps** (missing
//!   stretches of time, not labelled: gaps are normal in operational data).
//! - **Level** 10–10,000 and **noise** of 1–10% of it, Gaussian or Student-t
//!   with 3 degrees of freedom (heavy tails) or right-skewed (log-normal, as
//!   latencies are), half the time autocorrelated (AR(1), φ up to 0.8); a
//!   third of the series also **wander** (a slow random walk of the level, as
//!   temperatures do). One series in seven is a **count** instead (events per
//!   interval: Poisson around a level of 3–300, whole numbers, so repeated
//!   values are normal there).
//! - **Seasonality**: a daily peak (2–10 noise σ, at 8:00–20:00, 2–5 h wide)
//!   and weekend dips (1–5 σ), each present or not; and a linear **trend**.
//! - **Anomalies**: none in a tenth of the series, otherwise 1–4, each of a
//!   kind drawn uniformly, placed after the scorer's probation in separate
//!   slots so that their windows do not overlap. The label is the first record
//!   the anomaly changes: [`Kind::Seasonal`] and [`Kind::TrendChange`] are
//!   labelled at their onset even though they take a while to stand out.

use std::f64::consts::PI;

use super::scoring::{probation, WINDOW_FRACTION};

/// What kind of anomaly a label marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// 1–5 records 6–15 σ above the series.
    Spike,
    /// 1–5 records 6–15 σ below the series.
    Dip,
    /// The level moves by 4–10 σ and stays.
    LevelShift,
    /// The noise grows 3–6× for a while.
    VarianceChange,
    /// A stuck sensor: the last reading repeated for a while.
    FlatLine,
    /// The value falls to 0, or goes missing (`NaN`), for a while.
    Dropout,
    /// The slope changes, moving the series 4–8 σ over a window, then levels off.
    TrendChange,
    /// A day's peak is missing or at the wrong hour (at daily spacing: a
    /// week's weekend dip is missing or on weekdays).
    Seasonal,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 8] = [
        Kind::Spike,
        Kind::Dip,
        Kind::LevelShift,
        Kind::VarianceChange,
        Kind::FlatLine,
        Kind::Dropout,
        Kind::TrendChange,
        Kind::Seasonal,
    ];

    /// Lower snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::Dip => "dip",
            Kind::LevelShift => "level_shift",
            Kind::VarianceChange => "variance_change",
            Kind::FlatLine => "flat_line",
            Kind::Dropout => "dropout",
            Kind::TrendChange => "trend_change",
            Kind::Seasonal => "seasonal",
        }
    }
}

/// A labelled anomaly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anomaly {
    /// The first record the anomaly changes.
    pub start: usize,
    /// Its kind.
    pub kind: Kind,
}

/// One labelled series.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// `s<index>_<spacing>`, e.g. `s0042_5min`.
    pub name: String,
    /// The regular spacing of records, outside gaps.
    pub spacing_ms: i64,
    /// Per record, ms since the epoch (UTC), increasing.
    pub timestamps_ms: Vec<i64>,
    /// Per record; `NaN` where the reading is missing.
    pub values: Vec<f64>,
    /// The anomalies, by start.
    pub anomalies: Vec<Anomaly>,
}

/// `count` series from `seed`.
pub fn corpus(seed: u64, count: usize) -> Vec<Series> {
    (0..count).map(|i| series(seed, i)).collect()
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 2026-01-05T00:00Z, a Monday.
const EPOCH: i64 = 1_767_571_200_000;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
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
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
    fn sign(&mut self) -> f64 {
        if self.chance(0.5) {
            1.0
        } else {
            -1.0
        }
    }
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * self.uniform()).cos()
    }
    /// A log-normal (σ = 0.6 in log space), centred and scaled to unit variance.
    fn lognormal_unit(&mut self) -> f64 {
        const S2: f64 = 0.36;
        let mean = (S2 / 2.0).exp();
        let sd = ((S2.exp() - 1.0) * S2.exp()).sqrt();
        ((0.6 * self.normal()).exp() - mean) / sd
    }
    /// A Poisson draw (Knuth's product below 30, a rounded normal above).
    fn poisson(&mut self, mean: f64) -> f64 {
        if mean >= 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0);
        }
        let limit = (-mean).exp();
        let mut k = 0.0;
        let mut p = self.uniform();
        while p > limit {
            k += 1.0;
            p *= self.uniform();
        }
        k
    }
    /// Student-t with 3 degrees of freedom, scaled to unit variance.
    fn student3(&mut self) -> f64 {
        let chi2: f64 = (0..3).map(|_| self.normal().powi(2)).sum();
        self.normal() / (chi2 / 3.0).sqrt() / 3f64.sqrt()
    }
}

/// The normal behaviour of a series.
struct Shape {
    level: f64,
    sigma: f64,
    heavy: bool,
    skewed: bool,
    counts: bool,
    wander: f64,
    phi: f64,
    slope: f64,
    daily: f64,
    peak_hour: f64,
    width_hours: f64,
    weekly: f64,
}

impl Shape {
    /// The daily component at `t` with the peak at `peak_hour`.
    fn daily_at(&self, t: i64, peak_hour: f64) -> f64 {
        let hour = (t.rem_euclid(DAY)) as f64 / HOUR as f64;
        let d = (hour - peak_hour).abs();
        let d = d.min(24.0 - d) / self.width_hours;
        self.daily * (-0.5 * d * d).exp()
    }
    /// The weekly component at `t` with the dip on `dip_days` (0 = Monday).
    fn weekly_at(&self, t: i64, dip_days: [i64; 2]) -> f64 {
        let day = (t - EPOCH).div_euclid(DAY).rem_euclid(7);
        if dip_days.contains(&day) {
            -self.weekly
        } else {
            0.0
        }
    }
}

const WEEKEND: [i64; 2] = [5, 6];

/// Series `index` of the corpus from `seed`.
pub fn series(seed: u64, index: usize) -> Series {
    let mut rng = Rng(seed ^ (index as u64).wrapping_mul(0xd134_2543_de82_ef95));
    rng.next();
    let (spacing_ms, label) = [
        (MINUTE, "1min"),
        (5 * MINUTE, "5min"),
        (HOUR, "1h"),
        (DAY, "1d"),
    ][[0, 0, 0, 1, 1, 1, 2, 2, 2, 3][rng.int(0, 9)]];
    let max_len: f64 = if spacing_ms == DAY { 4_000.0 } else { 20_000.0 };
    let n = (1_000f64.ln() + rng.uniform() * (max_len / 1_000.0).ln()).exp() as usize;
    let count = if rng.chance(0.1) { 0 } else { rng.int(1, 4) };
    let slots = slots(n, count);
    // A seasonal anomaly needs a whole period (a day; a week at daily spacing) inside its slot.
    let period = if spacing_ms < DAY {
        (DAY / spacing_ms) as usize
    } else {
        7
    };
    let kinds: Vec<Kind> = slots
        .iter()
        .map(|(lo, hi)| loop {
            let kind = Kind::ALL[rng.int(0, 7)];
            if kind != Kind::Seasonal || hi - lo >= period {
                break kind;
            }
        })
        .collect();
    let shape = shape(&mut rng, n, spacing_ms, kinds.contains(&Kind::Seasonal));
    let timestamps_ms = timestamps(&mut rng, n, spacing_ms);
    let mut values = normal_values(&mut rng, &shape, &timestamps_ms);
    let window = ((WINDOW_FRACTION * n as f64 / count.max(1) as f64) as usize).max(1);
    let mut anomalies = Vec::new();
    for (kind, (lo, hi)) in kinds.into_iter().zip(slots) {
        let last = if kind == Kind::Seasonal {
            hi - period
        } else {
            hi
        };
        let start = rng.int(lo, last);
        let ctx = Context {
            shape: &shape,
            timestamps: &timestamps_ms,
            window,
            room: hi + window - start,
        };
        let start = inject(&mut rng, &ctx, &mut values, kind, start);
        anomalies.push(Anomaly { start, kind });
    }
    if shape.counts {
        // Counts stay whole numbers, anomalies included (NaN stays missing).
        for v in values.iter_mut().filter(|v| v.is_finite()) {
            *v = v.round().max(0.0);
        }
    }
    Series {
        name: format!("s{index:04}_{label}"),
        spacing_ms,
        timestamps_ms,
        values,
        anomalies,
    }
}

fn shape(rng: &mut Rng, n: usize, spacing_ms: i64, seasonal: bool) -> Shape {
    let counts = rng.chance(1.0 / 7.0);
    let (level, sigma) = if counts {
        let level = (3f64.ln() + rng.uniform() * 100f64.ln()).exp();
        (level, level.sqrt())
    } else {
        let level = (10f64.ln() + rng.uniform() * 1_000f64.ln()).exp();
        (level, level * rng.range(0.01, 0.1))
    };
    let heavy = !counts && rng.chance(0.4);
    let skewed = !counts && !heavy && rng.chance(0.25);
    let wander = if rng.chance(1.0 / 3.0) {
        sigma * rng.range(0.02, 0.1)
    } else {
        0.0
    };
    let daily_possible = spacing_ms < DAY;
    let daily = if daily_possible && (seasonal || rng.chance(0.6)) {
        sigma * rng.range(2.0, 10.0)
    } else {
        0.0
    };
    let weekly = if !daily_possible && seasonal {
        sigma * rng.range(3.0, 8.0)
    } else if rng.chance(0.4) {
        sigma * rng.range(1.0, 5.0)
    } else {
        0.0
    };
    let slope = if rng.chance(0.4) {
        sigma * rng.range(-5.0, 5.0) / n as f64
    } else {
        0.0
    };
    Shape {
        level,
        sigma,
        heavy,
        skewed,
        counts,
        wander,
        phi: if !counts && rng.chance(0.5) {
            rng.range(0.0, 0.8)
        } else {
            0.0
        },
        slope,
        daily,
        peak_hour: rng.range(8.0, 20.0),
        width_hours: rng.range(2.0, 5.0),
        weekly,
    }
}

/// Regular timestamps with 0–3 gaps of 5 to n/50 missing records.
fn timestamps(rng: &mut Rng, n: usize, spacing_ms: i64) -> Vec<i64> {
    let start = EPOCH + rng.int(0, 365) as i64 * DAY;
    let mut gaps: Vec<(usize, i64)> = (0..rng.int(0, 3))
        .map(|_| (rng.int(1, n - 1), rng.int(5, (n / 50).max(5)) as i64))
        .collect();
    gaps.sort_unstable();
    let mut skipped = 0;
    let mut g = 0;
    (0..n)
        .map(|i| {
            while g < gaps.len() && gaps[g].0 == i {
                skipped += gaps[g].1;
                g += 1;
            }
            start + (i as i64 + skipped) * spacing_ms
        })
        .collect()
}

fn normal_values(rng: &mut Rng, s: &Shape, timestamps: &[i64]) -> Vec<f64> {
    let innovation = s.sigma * (1.0 - s.phi * s.phi).sqrt();
    let mut ar = 0.0;
    let mut walk = 0.0;
    timestamps
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            // The walk is pulled back gently so that it wanders, not escapes.
            walk = 0.999 * walk + s.wander * rng.normal();
            let mean = s.level
                + s.slope * i as f64
                + s.daily_at(t, s.peak_hour)
                + s.weekly_at(t, WEEKEND)
                + walk;
            if s.counts {
                return rng.poisson(mean.max(0.0));
            }
            let e = if s.heavy {
                rng.student3()
            } else if s.skewed {
                rng.lognormal_unit()
            } else {
                rng.normal()
            };
            ar = s.phi * ar + innovation * e;
            mean + ar
        })
        .collect()
}

/// Where the `count` anomalies may start: equal slots after the probation,
/// each leaving a window of room on both sides.
fn slots(n: usize, count: usize) -> Vec<(usize, usize)> {
    if count == 0 {
        return Vec::new();
    }
    let window = (WINDOW_FRACTION * n as f64 / count as f64) as usize;
    let lo = probation(n) + window;
    let slot = (n - window - lo) / count;
    (0..count)
        .map(|k| {
            let start = lo + k * slot;
            (start, start + slot - window)
        })
        .collect()
}

/// What an anomaly may touch.
struct Context<'a> {
    shape: &'a Shape,
    timestamps: &'a [i64],
    window: usize,
    /// Records from the start to the next slot.
    room: usize,
}

/// Changes `values` from `start` on; returns the label (first changed record).
fn inject(rng: &mut Rng, c: &Context, values: &mut [f64], kind: Kind, start: usize) -> usize {
    let sigma = c.shape.sigma;
    let n = values.len();
    let lasting = |rng: &mut Rng, lo: usize, hi: usize| {
        let hi = hi.min(c.room).max(lo);
        (start + rng.int(lo, hi)).min(n)
    };
    match kind {
        Kind::Spike | Kind::Dip => {
            let sign = if kind == Kind::Spike { 1.0 } else { -1.0 };
            let len = if rng.chance(0.7) { 1 } else { rng.int(2, 5) };
            for v in &mut values[start..(start + len).min(n)] {
                *v += sign * sigma * rng.range(6.0, 15.0);
            }
        }
        Kind::LevelShift => {
            // Counts cannot fall below 0: theirs shift up.
            let sign = if c.shape.counts { 1.0 } else { rng.sign() };
            let delta = sign * sigma * rng.range(4.0, 10.0);
            values[start..].iter_mut().for_each(|v| *v += delta);
        }
        Kind::VarianceChange => {
            // Independent extra noise: m σ in all for m in 3..6.
            let factor = (rng.range(3.0, 6.0).powi(2) - 1.0).sqrt();
            let end = lasting(rng, c.window / 2, 3 * c.window);
            for v in &mut values[start..end] {
                *v += factor * sigma * rng.normal();
            }
        }
        Kind::FlatLine => {
            let stuck = values[start - 1];
            let end = lasting(rng, (c.window / 4).max(20), 2 * c.window);
            values[start..end].iter_mut().for_each(|v| *v = stuck);
        }
        Kind::Dropout => {
            let to = if rng.chance(0.6) { 0.0 } else { f64::NAN };
            let end = lasting(rng, 5, c.window.max(5));
            values[start..end].iter_mut().for_each(|v| *v = to);
        }
        Kind::TrendChange => {
            let sign = if c.shape.counts { 1.0 } else { rng.sign() };
            let total = sign * sigma * rng.range(4.0, 8.0);
            let ramp = lasting(rng, c.window, 3 * c.window) - start;
            for (k, v) in values[start..].iter_mut().enumerate() {
                *v += total * (k + 1).min(ramp) as f64 / c.window as f64;
            }
        }
        Kind::Seasonal => return seasonal(rng, c, values, start),
    }
    start
}

/// A day's peak missing or moved (a week's dip, at daily spacing) for one
/// period from `start`; returns the first record changed by more than 1 σ.
fn seasonal(rng: &mut Rng, c: &Context, values: &mut [f64], start: usize) -> usize {
    let s = c.shape;
    let daily = s.daily > 0.0;
    let until = c.timestamps[start] + if daily { DAY } else { 7 * DAY };
    let missing = rng.chance(0.5);
    let moved_peak = (s.peak_hour + rng.sign() * rng.range(6.0, 12.0)).rem_euclid(24.0);
    let moved_dip = [rng.int(0, 2) as i64, rng.int(3, 4) as i64];
    let mut label = None;
    for (i, &t) in c.timestamps.iter().enumerate().skip(start) {
        if t >= until {
            break;
        }
        let delta = if daily {
            let new = if missing {
                0.0
            } else {
                s.daily_at(t, moved_peak)
            };
            new - s.daily_at(t, s.peak_hour)
        } else {
            let new = if missing {
                0.0
            } else {
                s.weekly_at(t, moved_dip)
            };
            new - s.weekly_at(t, WEEKEND)
        };
        values[i] += delta;
        if label.is_none() && delta.abs() > s.sigma {
            label = Some(i);
        }
    }
    label.unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_same_seed_gives_the_same_corpus() {
        // Bit for bit (a missing value is NaN, which equals nothing), without printing series.
        type Bits = (String, Vec<i64>, Vec<u64>, Vec<Anomaly>);
        let bits = |c: &[Series]| -> Vec<Bits> {
            c.iter()
                .map(|s| {
                    let v = s.values.iter().map(|v| v.to_bits()).collect();
                    (
                        s.name.clone(),
                        s.timestamps_ms.clone(),
                        v,
                        s.anomalies.clone(),
                    )
                })
                .collect()
        };
        let a = bits(&corpus(5, 40));
        assert!(a == bits(&corpus(5, 40)));
        assert!(a[3].2 != bits(&corpus(6, 40))[3].2);
        // Series i depends on the seed and i only.
        assert!(a[..20] == bits(&corpus(5, 20))[..]);
        assert!(a[7] == bits(&[series(5, 7)])[0]);
    }

    #[test]
    fn every_kind_and_spacing_appears_with_the_promised_shapes() {
        let c = corpus(1, 300);
        let mut kinds = BTreeMap::new();
        let mut spacings = BTreeMap::new();
        for s in &c {
            *spacings.entry(s.spacing_ms).or_insert(0) += 1;
            let n = s.values.len();
            assert_eq!(s.timestamps_ms.len(), n);
            let max = if s.spacing_ms == DAY { 4_000 } else { 20_000 };
            assert!((1_000..=max).contains(&n), "{} {n}", s.name);
            assert!(s
                .timestamps_ms
                .windows(2)
                .all(|w| w[1] >= w[0] + s.spacing_ms));
            assert!(s.anomalies.len() <= 4);
            for a in &s.anomalies {
                *kinds.entry(a.kind).or_insert(0) += 1;
                assert!(a.start >= probation(n), "{} {a:?}", s.name);
            }
        }
        assert_eq!(kinds.len(), 8, "{kinds:?}");
        assert!(kinds.values().all(|k| *k >= 30), "{kinds:?}");
        assert_eq!(spacings.len(), 4, "{spacings:?}");
        assert!(c.iter().filter(|s| s.anomalies.is_empty()).count() >= 10);
        let gapped = c.iter().filter(|s| {
            s.timestamps_ms
                .windows(2)
                .any(|w| w[1] - w[0] > s.spacing_ms)
        });
        assert!(gapped.count() >= 100);
    }

    #[test]
    fn anomalies_change_the_series_where_labelled() {
        for s in corpus(2, 200) {
            for a in &s.anomalies {
                let v = &s.values;
                let i = a.start;
                match a.kind {
                    Kind::FlatLine => assert!(v[i..i + 20].iter().all(|x| *x == v[i - 1])),
                    Kind::Dropout => assert!(v[i..i + 5].iter().all(|x| *x == 0.0 || x.is_nan())),
                    Kind::Spike => assert!(v[i] > median(&v[i - 20..i]), "{} {a:?}", s.name),
                    Kind::Dip => assert!(v[i] < median(&v[i - 20..i]), "{} {a:?}", s.name),
                    _ => {}
                }
            }
        }
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_unstable_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

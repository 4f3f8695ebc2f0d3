//! Window-based scoring of anomaly detectors on labelled series, after the
//! published description of the Numenta Anomaly Benchmark's scorer (Lavin and
//! Ahmad, 2015), written here from that description.
//!
//! In: per series, one score per record (a detector's output, record by
//! record, no look-ahead), the record indices where labelled anomalies start,
//! and a threshold. Out: a [`Tally`] per series, summed over a corpus and turned
//! into a 0..100 score per [`Profile`] by [`Tally::normalised`]; [`optimise`]
//! picks the threshold that maximises it over the whole corpus. No state is
//! kept between calls: this is the benchmark's measuring stick, not an operator.
//!
//! The rules:
//! - **Windows.** Each labelled anomaly gets a window of
//!   `window_fraction` (10%) of the series' records divided by its number of
//!   anomalies, centred on the label and clipped to the series; overlapping
//!   windows merge.
//! - **Probation.** Detections in the first `probation_fraction` (15%) of a
//!   series, but never more than 750 records, are ignored: every detector
//!   needs some history (the cap is the benchmark's own: `0.15 · 5000`).
//! - **Detections** are records whose score is `>= threshold`. Inside a window
//!   only the first one counts, rewarded `A_TP · σ(y) / σ(−1)` where `y` runs
//!   from −1 at the window's first record to 0 past its last and
//!   `σ(y) = 2 / (1 + e^(5y)) − 1` — so a detection at the window's first
//!   record earns `A_TP`, one at its end ~0. A detection outside every window
//!   is a false positive costing `A_FP · −σ(y)` with `y` its distance after
//!   the preceding window's last record in window lengths less one (`σ` is −1
//!   from 3 on): a detection just after a window costs little, a detection
//!   before any window costs the full `A_FP`. A window without a detection
//!   costs `A_FN`.
//! - **Normalisation.** The corpus' raw score `S` is placed between that of the
//!   null detector (never fires: `−A_FN` per window) and the perfect one (fires
//!   on every window's first record): `100 · (S − S_null) / (S_perfect − S_null)`.
//!
//! Profile weights are those published: standard (`A_TP` 1, `A_FP` 0.11,
//! `A_FN` 1), reward low false positives (`A_FP` 0.22) and reward low false
//! negatives (`A_FN` 2). A [`Tally`] keeps the profile-free sums, so one pass
//! over the corpus at one threshold scores all three profiles.

/// An application profile: the weights of hits, false alarms and misses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Short name for tables.
    pub name: &'static str,
    /// Weight of a detected window (`A_TP`).
    pub true_positive: f64,
    /// Cost of a false positive far from any window (`A_FP`).
    pub false_positive: f64,
    /// Cost of a missed window (`A_FN`).
    pub false_negative: f64,
}

/// The standard profile.
pub const STANDARD: Profile = Profile {
    name: "standard",
    true_positive: 1.0,
    false_positive: 0.11,
    false_negative: 1.0,
};

/// The profile for applications where false alarms are expensive.
pub const REWARD_LOW_FP: Profile = Profile {
    name: "reward_low_FP",
    true_positive: 1.0,
    false_positive: 0.22,
    false_negative: 1.0,
};

/// The profile for applications where a missed anomaly is expensive.
pub const REWARD_LOW_FN: Profile = Profile {
    name: "reward_low_FN",
    true_positive: 1.0,
    false_positive: 0.11,
    false_negative: 2.0,
};

/// The three published profiles.
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP, REWARD_LOW_FN];

/// Share of a series' records that its anomaly windows cover together.
pub const WINDOW_FRACTION: f64 = 0.10;

/// Share of a series' first records whose detections are ignored.
pub const PROBATION_FRACTION: f64 = 0.15;

/// The scaled sigmoid: ~0.987 at `y = −1`, 0 at `y = 0`, towards −1 after; −1 from 3 on.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// An anomaly window: records `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First record in the window.
    pub start: usize,
    /// Last record in the window.
    pub end: usize,
}

impl Window {
    fn len(&self) -> f64 {
        (self.end - self.start + 1) as f64
    }
}

/// The windows of a series of `len` records with anomalies labelled at
/// `labels` (record indices, any order): see the module docs. Each returned
/// window lists the labels it holds (several only where windows merged).
pub fn windows(len: usize, labels: &[usize]) -> Vec<(Window, Vec<usize>)> {
    if len == 0 || labels.is_empty() {
        return Vec::new();
    }
    let mut sorted = labels.to_vec();
    sorted.sort_unstable();
    let size = ((WINDOW_FRACTION * len as f64 / labels.len() as f64) as usize).max(1);
    let mut out: Vec<(Window, Vec<usize>)> = Vec::new();
    for label in sorted {
        let label = label.min(len - 1);
        let start = label.saturating_sub(size / 2);
        let end = (label + (size - 1 - size / 2)).min(len - 1);
        match out.last_mut() {
            Some((w, held)) if start <= w.end + 1 => {
                w.end = w.end.max(end);
                held.push(label);
            }
            _ => out.push((Window { start, end }, vec![label])),
        }
    }
    out
}

/// Records of probation at most, whatever the series' length.
pub const MAX_PROBATION: usize = 750;

/// The first record whose detections count, for a series of `len` records.
pub fn probation(len: usize) -> usize {
    ((PROBATION_FRACTION * len as f64) as usize).min(MAX_PROBATION)
}

/// What a detector did on one series (or a corpus) at one threshold, before
/// any profile's weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Sum of `σ(y) / σ(−1)` over the windows' first detections (each in `0..=1`).
    pub hit_reward: f64,
    /// Sum of `−σ(y)` over false positives (each in `0..=1`).
    pub false_alarm_cost: f64,
    /// Number of false positives.
    pub false_positives: usize,
    /// Windows with no detection.
    pub missed: usize,
    /// Windows in all.
    pub windows: usize,
}

impl Tally {
    /// Adds another series' tally.
    pub fn add(&mut self, other: &Tally) {
        self.hit_reward += other.hit_reward;
        self.false_alarm_cost += other.false_alarm_cost;
        self.false_positives += other.false_positives;
        self.missed += other.missed;
        self.windows += other.windows;
    }

    /// The raw score under `profile`.
    pub fn raw(&self, profile: &Profile) -> f64 {
        profile.true_positive * self.hit_reward
            - profile.false_positive * self.false_alarm_cost
            - profile.false_negative * self.missed as f64
    }

    /// The raw score of the detector that never fires.
    pub fn null(&self, profile: &Profile) -> f64 {
        -profile.false_negative * self.windows as f64
    }

    /// The raw score of the detector that fires on each window's first record only.
    pub fn perfect(&self, profile: &Profile) -> f64 {
        profile.true_positive * self.windows as f64
    }

    /// The score under `profile` on the 0..100 scale (null 0, perfect 100; below 0
    /// when false positives cost more than the hits earn). 0 without windows.
    pub fn normalised(&self, profile: &Profile) -> f64 {
        let (null, perfect) = (self.null(profile), self.perfect(profile));
        if perfect <= null {
            return 0.0;
        }
        100.0 * (self.raw(profile) - null) / (perfect - null)
    }
}

/// The outcome on one series at one threshold: its [`Tally`], and for each
/// window the record of its first detection (`None`: missed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The profile-free sums.
    pub tally: Tally,
    /// Per window, in order, the record that detected it.
    pub detected: Vec<Option<usize>>,
    /// The records that were false positives.
    pub false_positives: Vec<usize>,
}

/// Scores one series: `scores` per record, its `windows` (from [`windows`]),
/// detections counting from record `from` (see [`probation`]). A NaN score is
/// not a detection.
pub fn score_series(scores: &[f64], windows: &[Window], from: usize, threshold: f64) -> Outcome {
    let mut out = Outcome {
        detected: vec![None; windows.len()],
        ..Outcome::default()
    };
    out.tally.windows = windows.len();
    // `next`: the first window not ending before the current record.
    let mut next = 0;
    for (i, s) in scores.iter().enumerate().skip(from) {
        // A NaN score is below every threshold.
        if s.is_nan() || *s < threshold {
            continue;
        }
        while next < windows.len() && windows[next].end < i {
            next += 1;
        }
        match windows.get(next) {
            Some(w) if w.start <= i => {
                if out.detected[next].is_none() {
                    let y = (i as f64 - w.end as f64 - 1.0) / w.len();
                    out.tally.hit_reward += scaled_sigmoid(y) / scaled_sigmoid(-1.0);
                    out.detected[next] = Some(i);
                }
            }
            _ => {
                let cost = match next.checked_sub(1).map(|p| windows[p]) {
                    Some(p) => -scaled_sigmoid((i - p.end) as f64 / (p.len() - 1.0).max(1.0)),
                    None => 1.0,
                };
                out.tally.false_alarm_cost += cost;
                out.tally.false_positives += 1;
                out.false_positives.push(i);
            }
        }
    }
    out.tally.missed = out.detected.iter().filter(|d| d.is_none()).count();
    out
}

/// One series as the optimiser sees it: a detector's scores and the windows.
#[derive(Clone, Debug)]
pub struct Scored<'a> {
    /// One score per record.
    pub scores: &'a [f64],
    /// The series' anomaly windows.
    pub windows: &'a [Window],
    /// The first record whose detections count.
    pub from: usize,
}

/// The corpus' tally at `threshold`.
pub fn tally(corpus: &[Scored], threshold: f64) -> Tally {
    let mut total = Tally::default();
    for s in corpus {
        total.add(&score_series(s.scores, s.windows, s.from, threshold).tally);
    }
    total
}

/// The best threshold per profile and its normalised score, in [`PROFILES`] order.
///
/// Candidates are the pooled scores' own quantiles — tail shares from 1/2
/// down to one record in the corpus, 24 per decade — plus "never fire"
/// (above the highest score, the null detector's 0); the best candidate for
/// each profile is then refined on 16 steps between its neighbours.
pub fn optimise(corpus: &[Scored]) -> [(f64, f64); 3] {
    let mut pooled: Vec<f64> = corpus
        .iter()
        .flat_map(|s| s.scores[s.from.min(s.scores.len())..].iter().copied())
        .filter(|x| x.is_finite())
        .collect();
    pooled.sort_unstable_by(f64::total_cmp);
    let candidates = quantile_candidates(&pooled);
    let evaluate = |t: f64| {
        let total = tally(corpus, t);
        PROFILES.map(|p| total.normalised(&p))
    };
    let scored: Vec<(f64, [f64; 3])> = candidates.iter().map(|&t| (t, evaluate(t))).collect();
    let mut best = [(f64::INFINITY, 0.0); 3];
    for (k, b) in best.iter_mut().enumerate() {
        let at = (0..scored.len())
            .max_by(|&a, &b| scored[a].1[k].total_cmp(&scored[b].1[k]).then(b.cmp(&a)))
            .unwrap_or(0);
        *b = (scored[at].0, scored[at].1[k]);
        // Refine between the neighbouring candidates.
        let lo = scored[at.saturating_sub(1)].0;
        let hi = scored[(at + 1).min(scored.len() - 1)].0;
        if lo.is_finite() && hi.is_finite() && hi > lo {
            for step in 1..16 {
                let t = lo + (hi - lo) * step as f64 / 16.0;
                let s = evaluate(t)[k];
                if s > b.1 {
                    *b = (t, s);
                }
            }
        }
    }
    best
}

/// Ascending candidate thresholds from sorted scores; the last is "never fire".
fn quantile_candidates(sorted: &[f64]) -> Vec<f64> {
    let n = sorted.len();
    let mut out = Vec::new();
    if n > 0 {
        let decades = (n as f64 / 2.0).log10().max(0.0);
        let steps = (decades * 24.0).ceil() as usize;
        for k in 0..=steps {
            // Tail share from 1/2 down to 1/n.
            let tail = 0.5 * 10f64.powf(-(k as f64) / 24.0);
            let rank = ((1.0 - tail) * n as f64).floor() as usize;
            out.push(sorted[rank.min(n - 1)]);
        }
        out.push(sorted[n - 1]);
    }
    out.sort_unstable_by(f64::total_cmp);
    out.dedup();
    let top = out.last().copied().unwrap_or(0.0);
    out.push(if top > 0.0 { top * 2.0 + 1.0 } else { 1.0 });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1,000-record series with anomalies labelled at 400 and 800: windows of 50.
    fn two_windows() -> Vec<Window> {
        windows(1000, &[800, 400])
            .into_iter()
            .map(|w| w.0)
            .collect()
    }

    fn fire_at(records: &[usize]) -> Vec<f64> {
        let mut s = vec![0.0; 1000];
        for r in records {
            s[*r] = 1.0;
        }
        s
    }

    #[test]
    fn windows_are_a_tenth_of_the_series_centred_and_merged() {
        let w = two_windows();
        assert_eq!(
            w,
            vec![
                Window {
                    start: 375,
                    end: 424
                },
                Window {
                    start: 775,
                    end: 824
                }
            ]
        );
        // Overlapping windows merge and keep both labels; windows clip at the ends.
        let merged = windows(1000, &[500, 530, 2]);
        assert_eq!(merged[0].0, Window { start: 0, end: 18 });
        assert_eq!(
            merged[1],
            (
                Window {
                    start: 484,
                    end: 546
                },
                vec![500, 530]
            )
        );
        assert!(windows(1000, &[]).is_empty());
    }

    #[test]
    fn the_sigmoid_rewards_early_detection() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614).abs() < 1e-6);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.986_614).abs() < 1e-6);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn a_perfect_detector_scores_100_and_the_null_detector_0() {
        let w = two_windows();
        let perfect = score_series(&fire_at(&[375, 775]), &w, 150, 0.5);
        assert_eq!(perfect.detected, vec![Some(375), Some(775)]);
        let null = score_series(&[0.0; 1000], &w, 150, 0.5);
        assert_eq!(null.tally.missed, 2);
        for p in PROFILES {
            assert!((perfect.tally.normalised(&p) - 100.0).abs() < 1e-9);
            assert_eq!(null.tally.normalised(&p), 0.0);
        }
        // Later detections inside the same window change nothing.
        let again = score_series(&fire_at(&[375, 380, 775, 790]), &w, 150, 0.5);
        assert_eq!(again.tally, perfect.tally);
    }

    #[test]
    fn an_early_detection_beats_a_late_one() {
        let w = two_windows();
        let early = score_series(&fire_at(&[380]), &w, 150, 0.5).tally;
        let middle = score_series(&fire_at(&[400]), &w, 150, 0.5).tally;
        let late = score_series(&fire_at(&[420]), &w, 150, 0.5).tally;
        let s = |t: &Tally| t.normalised(&STANDARD);
        assert!(
            s(&early) > s(&middle) && s(&middle) > s(&late),
            "{early:?} {middle:?} {late:?}"
        );
        // In the middle of the window y = -0.5: σ = 2/(1+e^-2.5) - 1.
        let y = (400.0 - 424.0 - 1.0) / 50.0;
        assert!((middle.hit_reward - scaled_sigmoid(y) / scaled_sigmoid(-1.0)).abs() < 1e-12);
        // A late hit still beats a miss.
        assert!(s(&late) > 0.0);
    }

    #[test]
    fn a_false_positive_costs_the_profiles_weight() {
        let w = two_windows();
        // Before any window: the full weight. After one: the sigmoid of the distance.
        let before = score_series(&fire_at(&[200]), &w, 150, 0.5).tally;
        assert_eq!((before.false_positives, before.false_alarm_cost), (1, 1.0));
        for p in PROFILES {
            assert!((before.raw(&p) - (-p.false_positive - 2.0 * p.false_negative)).abs() < 1e-12);
        }
        let near = score_series(&fire_at(&[430]), &w, 150, 0.5).tally;
        let far = score_series(&fire_at(&[600]), &w, 150, 0.5).tally;
        assert!((near.false_alarm_cost - -scaled_sigmoid(6.0 / 49.0)).abs() < 1e-12);
        assert!(near.false_alarm_cost < 0.6 && far.false_alarm_cost == 1.0);
        // Low-FP doubles the cost; low-FN keeps it.
        let cost = |p: &Profile| {
            before.raw(p)
                - Tally {
                    false_alarm_cost: 0.0,
                    ..before.clone()
                }
                .raw(p)
        };
        assert!((cost(&STANDARD) + 0.11).abs() < 1e-12);
        assert!((cost(&REWARD_LOW_FP) + 0.22).abs() < 1e-12);
        assert!((cost(&REWARD_LOW_FN) + 0.11).abs() < 1e-12);
        // Detections in the probation are ignored.
        assert_eq!(
            score_series(&fire_at(&[100]), &w, 150, 0.5)
                .tally
                .false_positives,
            0
        );
    }

    #[test]
    fn normalisation_places_a_score_between_null_and_perfect() {
        let w = two_windows();
        // One window found at its start, the other missed, one false positive before both.
        let t = score_series(&fire_at(&[200, 375]), &w, 150, 0.5).tally;
        let hit = 1.0;
        // Standard: raw = hit - 0.11 - 1; null = -2; perfect = 2 hit.
        let expected = 100.0 * (hit - 0.11 - 1.0 + 2.0) / (2.0 * hit + 2.0);
        assert!((t.normalised(&STANDARD) - expected).abs() < 1e-9);
        // Low-FN: null = -4, perfect = 2 hit.
        let expected = 100.0 * (hit - 0.11 - 2.0 + 4.0) / (2.0 * hit + 4.0);
        assert!((t.normalised(&REWARD_LOW_FN) - expected).abs() < 1e-9);
        // Sums over series normalise against the corpus' own null and perfect.
        let mut corpus = t.clone();
        corpus.add(&score_series(&fire_at(&[375, 775]), &w, 150, 0.5).tally);
        let expected = 100.0 * (3.0 * hit - 0.11 - 1.0 + 4.0) / (4.0 * hit + 4.0);
        assert!((corpus.normalised(&STANDARD) - expected).abs() < 1e-9);
    }

    #[test]
    fn the_optimiser_finds_the_threshold_that_separates() {
        let w = two_windows();
        // Onsets score 0.9, a false alarm 0.7, the rest low noise.
        let mut s: Vec<f64> = (0..1000).map(|i| (i % 17) as f64 / 100.0).collect();
        s[376] = 0.9;
        s[776] = 0.9;
        s[300] = 0.7;
        let corpus = [Scored {
            scores: &s,
            windows: &w,
            from: 150,
        }];
        let best = optimise(&corpus);
        for (k, (threshold, score)) in best.iter().enumerate() {
            assert!(*threshold > 0.7 && *threshold <= 0.9, "{k}: {threshold}");
            let expected = tally(&corpus, 0.9).normalised(&PROFILES[k]);
            assert!((score - expected).abs() < 1e-9 && *score > 99.0, "{score}");
        }
        // A detector that only fires falsely is best never firing: 0.
        let noise: Vec<f64> = (0..1000)
            .map(|i| if i == 200 { 1.0 } else { 0.0 })
            .collect();
        let corpus = [Scored {
            scores: &noise,
            windows: &w,
            from: 150,
        }];
        assert!(optimise(&corpus).iter().all(|(_, s)| *s == 0.0));
    }
}

//! Anomaly detectors scored on the generated labelled corpus.
//!
//! `cargo bench -p millrace-operators --bench detection [-- --series N --seed S --only a,b]`
//! generates N labelled series (default 1,000, seed 1; see `detect::corpus`),
//! runs every detector of the project that scores a series record by record
//! with no look-ahead — the default series detector, each of its parts and
//! steps, the anomaly-likelihood post-processor, the monitors' detectors —
//! and the baselines, over every series, and scores each with the
//! window-based scorer of `detect::scoring` (threshold optimised per detector
//! and profile over the whole corpus). It prints markdown tables:
//!
//! 1. detector × profile (standard, reward_low_FP, reward_low_FN) on the
//!    0..100 scale, with the standard profile's threshold and records/s (the
//!    detector alone, single thread);
//! 2. per anomaly kind, the share of windows detected at the standard
//!    threshold;
//! 3. false positives per 1,000 scored points, by what precedes them: the
//!    clean stretch before a series' first window, or a window of each kind
//!    (the stretch after a level shift is where plateaus of high scores show).
//!
//! The detectors:
//! - `series`: `SeriesDetector::default()`, as in `series_anomaly.toml`;
//! - `series_level` … `series_trend`: one of its questions alone, with its
//!   calibration and onset steps;
//! - `series_raw`: all questions, neither step; `series_no_onset`,
//!   `series_no_calibration`, `series_no_seasons`: the default less one part;
//! - `series_likelihood`: the anomaly likelihood in place of the calibration;
//! - `likelihood_raw`, `likelihood_series`, `likelihood_gaussian`: the
//!   likelihood applied to `series_raw`, `series` and `windowed_gaussian`;
//! - `spike_dip`: `SpikeDip::new(30, 6.0, Both)`, a `spike` monitor's defaults; score = `Assessment.score`;
//! - `page_hinkley`: `PageHinkley::new(0.5, 25.0, 30)`, a `change_point` monitor's defaults;
//! - `windowed_gaussian`: mean and standard deviation of the last 6,400 values,
//!   score from the normal tail probability of the value (the classic
//!   baseline of the public benchmarks);
//! - `half_space_trees`: half-space trees on (value, step), window 250;
//! - `random`: uniform scores, seeded per series.
//!
//! `x_episode_E` and `x_quiet_Q` (with `--only`) try other onset settings.
//! A missing value (`NaN`) scores 0 and is not shown to the detector
//! (`SeriesDetector` skips it itself).

use std::collections::BTreeMap;
use std::time::Instant;

use millrace_operators::detect::change_point::PageHinkley;
use millrace_operators::detect::corpus::{self, Kind, Series};
use millrace_operators::detect::gaussian::WindowedGaussian;
use millrace_operators::detect::hst::HalfSpaceTrees;
use millrace_operators::detect::likelihood::Likelihood;
use millrace_operators::detect::scoring::{self, Scored, Window, PROFILES};
use millrace_operators::detect::series::{Components, SeriesConfig, SeriesDetector};
use millrace_operators::detect::spike::{Direction, SpikeDip};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A detector scoring one series, one value at a time.
trait Online {
    fn score(&mut self, t_ms: i64, x: f64) -> f64;
}

impl Online for SeriesDetector {
    fn score(&mut self, t_ms: i64, x: f64) -> f64 {
        self.update(t_ms, x)
    }
}

impl Online for SpikeDip {
    fn score(&mut self, _: i64, x: f64) -> f64 {
        if x.is_finite() {
            self.update(x).score
        } else {
            0.0
        }
    }
}

impl Online for PageHinkley {
    fn score(&mut self, _: i64, x: f64) -> f64 {
        if x.is_finite() {
            self.update(x).score
        } else {
            0.0
        }
    }
}

impl Online for WindowedGaussian {
    fn score(&mut self, _: i64, x: f64) -> f64 {
        self.update(x)
    }
}

/// Half-space trees on the value and its step.
struct Hst {
    trees: HalfSpaceTrees,
    last: Option<f64>,
}

impl Online for Hst {
    fn score(&mut self, _: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let step = self.last.map_or(0.0, |l| x - l);
        self.last = Some(x);
        self.trees.update(&[x, step])
    }
}

/// Any detector's score through the anomaly-likelihood post-processor.
struct Likely<D>(D, Likelihood);

impl<D: Online> Online for Likely<D> {
    fn score(&mut self, t_ms: i64, x: f64) -> f64 {
        let raw = self.0.score(t_ms, x);
        if x.is_finite() {
            self.1.update(raw)
        } else {
            0.0
        }
    }
}

/// Uniform scores (SplitMix64).
struct Random(u64);

impl Online for Random {
    fn score(&mut self, _: i64, _: f64) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

const DETECTORS: [&str; 19] = [
    "series",
    "series_level",
    "series_change",
    "series_variance",
    "series_flat",
    "series_trend",
    "series_raw",
    "series_no_onset",
    "series_no_calibration",
    "series_no_seasons",
    "series_likelihood",
    "likelihood_raw",
    "likelihood_series",
    "spike_dip",
    "page_hinkley",
    "windowed_gaussian",
    "likelihood_gaussian",
    "half_space_trees",
    "random",
];

/// One component of the default detector, with the default calibration and onset steps.
fn part(components: Components) -> Box<dyn Online> {
    Box::new(SeriesDetector::with_config(SeriesConfig {
        components,
        ..SeriesConfig::default()
    }))
}

fn variant(f: impl FnOnce(&mut SeriesConfig)) -> Box<dyn Online> {
    let mut c = SeriesConfig::default();
    f(&mut c);
    Box::new(SeriesDetector::with_config(c))
}

fn detector(name: &str, seed: u64, index: usize) -> Box<dyn Online> {
    let none = Components {
        level: false,
        change: false,
        variance: false,
        flat: false,
        trend: false,
    };
    let raw = SeriesConfig {
        calibrate: false,
        onset_window: 0,
        ..SeriesConfig::default()
    };
    match name {
        "series" => Box::new(SeriesDetector::default()),
        "series_level" => part(Components {
            level: true,
            ..none
        }),
        "series_change" => part(Components {
            change: true,
            ..none
        }),
        "series_variance" => part(Components {
            variance: true,
            ..none
        }),
        "series_flat" => part(Components { flat: true, ..none }),
        "series_trend" => part(Components {
            trend: true,
            ..none
        }),
        "x_no_trend" => part(Components {
            trend: false,
            ..Components::ALL
        }),
        "series_raw" => Box::new(SeriesDetector::with_config(raw)),
        "series_no_onset" => Box::new(SeriesDetector::with_config(SeriesConfig {
            onset_window: 0,
            ..SeriesConfig::default()
        })),
        "series_no_calibration" => Box::new(SeriesDetector::with_config(SeriesConfig {
            calibrate: false,
            ..SeriesConfig::default()
        })),
        "series_no_seasons" => Box::new(SeriesDetector::with_config(SeriesConfig {
            seasons: false,
            ..SeriesConfig::default()
        })),
        "likelihood_raw" => Box::new(Likely(
            SeriesDetector::with_config(raw),
            Likelihood::default(),
        )),
        "likelihood_series" => Box::new(Likely(SeriesDetector::default(), Likelihood::default())),
        "spike_dip" => Box::new(SpikeDip::new(30, 6.0, Direction::Both)),
        "page_hinkley" => Box::new(PageHinkley::new(0.5, 25.0, 30)),
        "windowed_gaussian" => Box::new(WindowedGaussian::new(6_400)),
        "likelihood_gaussian" => {
            Box::new(Likely(WindowedGaussian::new(6_400), Likelihood::default()))
        }
        "half_space_trees" => Box::new(Hst {
            trees: HalfSpaceTrees::new(2, 25, 15, 250, seed ^ index as u64),
            last: None,
        }),
        // Experiments: `x_episode_E`, `x_quiet_Q`.
        x if x.starts_with("x_episode_") => {
            let e: f64 = x["x_episode_".len()..].parse().unwrap();
            variant(|c| c.episode = e)
        }
        "series_likelihood" => variant(|c| {
            c.calibrate = false;
            c.likelihood = true
        }),
        "x_likelihood_calibrated" => variant(|c| c.likelihood = true),
        x if x.starts_with("x_quiet_") => {
            let q: usize = x["x_quiet_".len()..].parse().unwrap();
            variant(|c| c.onset_window = q)
        }
        "random" => Box::new(Random(
            seed ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
        )),
        _ => unreachable!("{name}"),
    }
}

/// One series' windows, the kind of each (its first label's), and the probation.
struct Labels {
    windows: Vec<Window>,
    kinds: Vec<Kind>,
    from: usize,
}

fn labels(s: &Series) -> Labels {
    let starts: Vec<usize> = s.anomalies.iter().map(|a| a.start).collect();
    let (windows, kinds) = scoring::windows(s.values.len(), &starts)
        .into_iter()
        .map(|(w, held)| {
            let kind = s
                .anomalies
                .iter()
                .find(|a| a.start == held[0])
                .unwrap()
                .kind;
            (w, kind)
        })
        .unzip();
    Labels {
        windows,
        kinds,
        from: scoring::probation(s.values.len()),
    }
}

/// Per kind (detected, windows); per preceding kind (`None`: no window yet) (false positives, points).
type Breakdown = (
    BTreeMap<Kind, (usize, usize)>,
    BTreeMap<Option<Kind>, (usize, usize)>,
);

fn breakdown(scores: &[Vec<f64>], labels: &[Labels], threshold: f64) -> Breakdown {
    let (mut hits, mut alarms): Breakdown = Default::default();
    for (s, l) in scores.iter().zip(labels) {
        let out = scoring::score_series(s, &l.windows, l.from, threshold);
        for (kind, d) in l.kinds.iter().zip(&out.detected) {
            let e = hits.entry(*kind).or_default();
            e.0 += d.is_some() as usize;
            e.1 += 1;
        }
        // The stretches outside windows, each led by the window before it.
        let mut lead = None;
        let mut begin = l.from;
        let bounds = l.windows.iter().map(|w| (w.start, w.end + 1));
        for (k, (start, next)) in bounds.chain([(s.len(), s.len())]).enumerate() {
            let (lo, hi) = (begin, start.max(begin));
            let e = alarms.entry(lead).or_default();
            e.1 += hi - lo;
            e.0 += out
                .false_positives
                .iter()
                .filter(|i| (lo..hi).contains(*i))
                .count();
            lead = l.kinds.get(k).copied();
            begin = next.max(l.from);
        }
    }
    (hits, alarms)
}

struct Result {
    name: &'static str,
    best: [(f64, f64); 3],
    records_per_s: f64,
    breakdown: Breakdown,
}

fn measure(name: &'static str, seed: u64, corpus: &[Series], labels: &[Labels]) -> Result {
    let t = Instant::now();
    let scores: Vec<Vec<f64>> = corpus
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut d = detector(name, seed, i);
            s.timestamps_ms
                .iter()
                .zip(&s.values)
                .map(|(t, x)| d.score(*t, *x))
                .collect()
        })
        .collect();
    let elapsed = t.elapsed().as_secs_f64();
    let records: usize = corpus.iter().map(|s| s.values.len()).sum();
    let scored: Vec<Scored> = scores
        .iter()
        .zip(labels)
        .map(|(s, l)| Scored {
            scores: s,
            windows: &l.windows,
            from: l.from,
        })
        .collect();
    let best = scoring::optimise(&scored);
    // Where the scores lie outside windows (after probation): quantiles, to stderr.
    let mut outside: Vec<f64> = scores
        .iter()
        .zip(labels)
        .flat_map(|(s, l)| {
            s.iter()
                .enumerate()
                .skip(l.from)
                .filter(|(i, _)| !l.windows.iter().any(|w| (w.start..=w.end).contains(i)))
                .map(|(_, v)| *v)
                .collect::<Vec<f64>>()
        })
        .collect();
    outside.sort_unstable_by(f64::total_cmp);
    let q = |p: f64| outside[((outside.len() - 1) as f64 * p) as usize];
    eprintln!(
        "{name}: outside windows p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} p99.99 {:.3} max {:.3}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        q(1.0)
    );
    let breakdown = breakdown(&scores, labels, best[0].0);
    eprintln!(
        "{name}: {records} records in {elapsed:.2} s, scored in {:.2} s",
        t.elapsed().as_secs_f64() - elapsed
    );
    Result {
        name,
        best,
        records_per_s: records as f64 / elapsed,
        breakdown,
    }
}

fn print_tables(results: &[Result]) {
    println!("| detector | standard | reward_low_FP | reward_low_FN | threshold (standard) | records/s |");
    println!("|---|---|---|---|---|---|");
    for r in results {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.6} | {:.0} |",
            r.name, r.best[0].1, r.best[1].1, r.best[2].1, r.best[0].0, r.records_per_s
        );
    }
    let names: Vec<&str> = results.iter().map(|r| r.name).collect();
    println!("\nShare of windows detected at the standard threshold:\n");
    println!("| kind | windows | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for kind in Kind::ALL {
        let total = results[0].breakdown.0.get(&kind).map_or(0, |e| e.1);
        let cells: Vec<String> = results
            .iter()
            .map(|r| {
                let (d, n) = r.breakdown.0.get(&kind).copied().unwrap_or_default();
                format!("{:.0}%", 100.0 * d as f64 / n.max(1) as f64)
            })
            .collect();
        println!("| {} | {total} | {} |", kind.name(), cells.join(" | "));
    }
    println!(
        "\nFalse positives per 1,000 scored points outside windows, by the window before them:\n"
    );
    println!("| after | points | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    let leads = std::iter::once(None).chain(Kind::ALL.map(Some));
    for lead in leads {
        let points = results[0].breakdown.1.get(&lead).map_or(0, |e| e.1);
        let cells: Vec<String> = results
            .iter()
            .map(|r| {
                let (f, n) = r.breakdown.1.get(&lead).copied().unwrap_or_default();
                format!("{:.2}", 1000.0 * f as f64 / n.max(1) as f64)
            })
            .collect();
        let label = lead.map_or("(no window yet)", Kind::name);
        println!("| {label} | {points} | {} |", cells.join(" | "));
    }
}

/// The scorer on this corpus: an oracle firing at each window's first record
/// scores 100 on every profile, and one that never fires 0.
fn sanity(corpus: &[Series], labels: &[Labels]) {
    let oracle: Vec<Vec<f64>> = corpus
        .iter()
        .zip(labels)
        .map(|(s, l)| {
            let mut v = vec![0.0; s.values.len()];
            l.windows.iter().for_each(|w| v[w.start.max(l.from)] = 1.0);
            v
        })
        .collect();
    let scored: Vec<Scored> = oracle
        .iter()
        .zip(labels)
        .map(|(s, l)| Scored {
            scores: s,
            windows: &l.windows,
            from: l.from,
        })
        .collect();
    for p in PROFILES {
        let perfect = scoring::tally(&scored, 0.5).normalised(&p);
        let null = scoring::tally(&scored, 2.0).normalised(&p);
        assert!(
            (perfect - 100.0).abs() < 1e-6 && null == 0.0,
            "{perfect} {null}"
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = arg(&args, "--series", 1_000) as usize;
    let seed = arg(&args, "--seed", 1);
    let t = Instant::now();
    let corpus = corpus::corpus(seed, count);
    let labels: Vec<Labels> = corpus.iter().map(labels).collect();
    let records: usize = corpus.iter().map(|s| s.values.len()).sum();
    let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
    for a in corpus.iter().flat_map(|s| &s.anomalies) {
        *kinds.entry(a.kind).or_default() += 1;
    }
    let mut spacings: BTreeMap<i64, usize> = BTreeMap::new();
    for s in &corpus {
        *spacings.entry(s.spacing_ms / 60_000).or_default() += 1;
    }
    println!(
        "corpus: seed {seed}, {count} series, {records} records, generated in {:.1} s; series per spacing (min): {spacings:?}; anomalies: {}",
        t.elapsed().as_secs_f64(),
        kinds.iter().map(|(k, n)| format!("{} {n}", k.name())).collect::<Vec<_>>().join(", ")
    );
    sanity(&corpus, &labels);
    // `--only a,b`: just these detectors.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect());
    let names: Vec<&'static str> = match &only {
        None => DETECTORS.to_vec(),
        Some(o) => o
            .iter()
            .map(|x| &*Box::leak(x.clone().into_boxed_str()))
            .collect(),
    };
    let results: Vec<Result> = names
        .iter()
        .map(|name| measure(name, seed, &corpus, &labels))
        .collect();
    println!(
        "\nProfiles: {}\n",
        PROFILES
            .map(|p| format!(
                "{} (A_TP {}, A_FP {}, A_FN {})",
                p.name, p.true_positive, p.false_positive, p.false_negative
            ))
            .join("; ")
    );
    print_tables(&results);
}

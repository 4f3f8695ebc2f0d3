//! Monitors: windowed anomaly rules over the data, the model and the pipeline.
//!
//! Two halves. On every worker, `score` reduces the scored records of an
//! epoch to per-event-time-window aggregates (count, sum, max of the
//! monitored fields, counts per group, histograms for drift rules) and the
//! records' arrival times with [`WindowPartial::add`] — one small message per
//! epoch and worker, never one per record, and no copy of the records. On the
//! coordinator, [`Monitors`] merges them (in worker order, so sums are
//! deterministic), closes a window once the watermark (latest event time seen
//! minus `allowed_lateness_ms`) has passed its end, feeds the closed windows
//! in event-time order to each rule's detector (an empty window counts as
//! zero records, so a silent gap is seen), and turns detections into
//! [`Alert`]s with a lifecycle: `firing` once, then nothing while it keeps
//! firing, then `resolved` after `resolve_after` windows (or epochs, or
//! files) without a detection. Per-epoch signals — the rejected rate, the
//! model's error stream, the end-to-end latency, sink batch sizes, landed
//! files, a restart — are fed with each completed epoch ([`EpochFacts`]).
//! All of it is serializable: the coordinator checkpoints it with the epoch.
//! **Shape:** [`Monitors::epoch`] merges the workers' aggregates into the
//! open windows, has every per-epoch rule find what it finds in the epoch's
//! signals, then closes the windows the watermark has passed, where every
//! windowed rule reads the window (a count, an aggregate, a log-mass, a
//! histogram, a gap) and its reading goes through the alert lifecycle. One
//! function per rule kind does the reading; none of it touches timely.
//!
//! | `kind` | series | detector |
//! |---|---|---|
//! | `volume` | records per window, overall or per value of `group_by` | [`SpikeDip`] on the count (spikes and drops) |
//! | `spike` | `aggregate` of `field` per window | [`SpikeDip`] |
//! | `change_point` | `aggregate` of `field` per window | [`PageHinkley`] |
//! | `multivariate` | the vector of `aggregate` of each of `fields` per window | [`HalfSpaceTrees`] over the last `history` windows' vectors; the log-mass of a window's vector against its recent ones ([`SpikeDip`], falls only) |
//! | `staleness` | event-time gap between consecutive non-empty windows | fires when the gap exceeds `threshold` ms |
//! | `drift` | every record's `field` (or score), as a histogram per window | [`HistDrift`]: PSI and KS of the last `current` windows against the `history` windows before them |
//! | `error_rate` | the model's prequential `(score, label)` pairs, in blocks of `block_records` (1,000) labelled records | [`QualityDrift`]: the block's ROC AUC against the earlier blocks (robust z, one-sided CUSUM) — a concept drift |
//! | `rejected_rate` | share of rejected lines per epoch | fires above `threshold` |
//! | `latency` | `percentile` of record arrival → sink commit per epoch (processing time) | fires above `threshold` ms |
//! | `file_size` | bytes of each landed file | [`SpikeDip`] on log-size (abnormally large or small) |
//! | `batch_size` | rows committed to the sinks per epoch | [`SpikeDip`] on log-rows |
//! | `restart` | the engine resumed after a run that did not finish cleanly | fires on the first epoch |
//! | `idle_source` | processing time since input was last read (overall; with `group_by = "partition"` also per Kafka partition), checked every second by the coordinator even when nothing arrives | fires past `threshold` ms (300,000) |
//! | `watermark_stall` | processing time during which records arrived but the latest event time did not advance | fires past `threshold` ms (60,000) |
//! | `errors` | source and sink errors and retries per epoch (Kafka fetch, consumer and produce errors, produce retries) | fires above `threshold` (0) |
//!
//! Warm-up: [`SpikeDip`] rules (`volume`, `spike`, `file_size`,
//! `batch_size`) score from the 3rd value on, with the MAD scale widened
//! below a full baseline of 10 values (see [`crate::detect::spike`]); a
//! window rule's alert on a short baseline says so ("baseline: 7 windows").
//! `change_point` waits for `history` values, `drift` for `history +
//! current` windows with records, `error_rate` for 10 blocks of labelled
//! records (10,000 by default: the model's own early learning is not drift); the threshold rules need no history.
//!
//! Latency is measured from a record's arrival (the landed file's
//! modification time; the Kafka message's timestamp) to the moment its epoch
//! is complete at the coordinator, every sink having written it: the
//! end-to-end figure a user feels, so a backfill of old files shows a high
//! latency, by design.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::change_point::PageHinkley;
use crate::detect::drift::{Binning, HistDrift, Histogram};
use crate::detect::hst::HalfSpaceTrees;
use crate::detect::quality::{QualityDrift, DEFAULT_H};
use crate::detect::spike::{Direction, SpikeDip};
use crate::detect::Assessment;
use crate::ledger::LedgerCounts;
use crate::record::Scored;
use crate::schema::{Schema, SchemaError};
use crate::Epoch;

/// What a rule found in an epoch: the assessment, the observed value, the
/// expected range and, for grouped rules, the group.
type Finding = (Assessment, f64, Option<(f64, f64)>, Option<String>);

/// One `[[monitors]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// Rule id (lower snake case): names the alert.
    pub id: String,
    /// What is watched (see the module docs).
    pub kind: MonitorKind,
    /// The field watched by `spike`, `change_point` and `drift`: a numeric field, or `score`.
    #[serde(default)]
    pub field: Option<String>,
    /// `multivariate` only: the fields watched together (numeric fields or `score`, at least two).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// How a window's values become one number.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// `volume` only: a categorical field with a vocabulary; each value (and
    /// "other") gets its own baseline and alerts.
    #[serde(default)]
    pub group_by: Option<String>,
    /// Event-time window length.
    #[serde(default = "default_window")]
    pub window_ms: i64,
    /// The detector's threshold: robust z for `volume`/`spike`/`file_size`/
    /// `batch_size`, λ (in standard deviations) for `change_point`, PSI for
    /// `drift`, gap ms for `staleness`, rejected share for `rejected_rate`,
    /// ms for `latency`, the CUSUM alarm for `error_rate` (5); unused by `restart`.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// `latency` only: the percentile compared with the threshold (default 99).
    #[serde(default)]
    pub percentile: Option<f64>,
    /// Windows (or epochs, or files) of history a detector compares against;
    /// for `drift`, the reference windows.
    #[serde(default = "default_history")]
    pub history: usize,
    /// `drift` only: the recent windows compared with the reference (default 3).
    #[serde(default)]
    pub current: Option<usize>,
    /// `error_rate` only: labelled records per block whose ROC AUC is judged (default 1,000).
    #[serde(default)]
    pub block_records: Option<usize>,
    /// Quiet windows after which a firing alert resolves.
    #[serde(default = "default_resolve")]
    pub resolve_after: u32,
    /// `info`, `warning` or `critical`.
    #[serde(default)]
    pub severity: Severity,
}

fn default_window() -> i64 {
    10_000
}

fn default_history() -> usize {
    30
}

fn default_resolve() -> u32 {
    3
}

/// Monitor kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorKind {
    /// Records per window far above or below their recent history.
    Volume,
    /// A window aggregate far from its recent history.
    Spike,
    /// A lasting shift in a window aggregate.
    ChangePoint,
    /// A window whose aggregates of several fields are unusual together.
    Multivariate,
    /// No records for longer than the threshold (event time).
    Staleness,
    /// The distribution of a field or of the score shifts from its reference.
    Drift,
    /// The model's prequential error rate rises.
    ErrorRate,
    /// The share of rejected lines in an epoch exceeds the threshold.
    RejectedRate,
    /// Records take longer than the threshold from arrival to sink commit.
    Latency,
    /// A landed file is abnormally large or small.
    FileSize,
    /// A sink batch (an epoch's committed rows) is abnormally large or small.
    BatchSize,
    /// The engine restarted after a run that did not finish cleanly.
    Restart,
    /// No input read for longer than the threshold, in processing time (a live job whose upstream went quiet).
    IdleSource,
    /// Records keep coming but the event-time watermark has not moved for longer than the threshold.
    WatermarkStall,
    /// Source or sink errors and retries in an epoch above the threshold.
    Errors,
}

impl MonitorKind {
    /// Judged once per closed event-time window (the others once per epoch or file).
    fn windowed(self) -> bool {
        matches!(
            self,
            MonitorKind::Volume
                | MonitorKind::Spike
                | MonitorKind::ChangePoint
                | MonitorKind::Multivariate
                | MonitorKind::Staleness
                | MonitorKind::Drift
        )
    }
}

/// Window aggregates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Mean of the values.
    #[default]
    Mean,
    /// Sum of the values.
    Sum,
    /// Largest value.
    Max,
    /// Number of records.
    Count,
}

/// Alert severities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look.
    #[default]
    Warning,
    /// Someone should look now.
    Critical,
}

/// An alert's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The rule started firing.
    Firing,
    /// The rule has been quiet for `resolve_after` windows.
    Resolved,
}

/// An alert: a rule that started or stopped firing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's id.
    pub rule_id: String,
    /// Its kind.
    pub kind: MonitorKind,
    /// The group it is about (`group_by` value, or the file), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Severity.
    pub severity: Severity,
    /// Firing or resolved.
    pub state: AlertState,
    /// Start of the window (or epoch's event time) it is about, ms.
    pub window_start_ms: i64,
    /// End of that window, ms.
    pub window_end_ms: i64,
    /// The observed value.
    pub observed: f64,
    /// The expected range, when the detector has one.
    pub expected: Option<(f64, f64)>,
    /// The detector's score in [0, 1].
    pub score: f64,
    /// A sentence for people.
    pub message: String,
    /// The epoch in which it was raised.
    pub epoch: Epoch,
}

/// Per-epoch, per-worker window aggregates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowPartial {
    /// The worker that computed it (merges happen in worker order).
    pub worker: usize,
    /// Window start (ms) → per slot: (count, sum, max). Slot 0 is the record
    /// count, then one per watched series, then the group counts.
    pub windows: BTreeMap<i64, Vec<(u64, f64, f64)>>,
    /// Window start (ms) → one histogram per drift series.
    pub hists: BTreeMap<i64, Vec<Histogram>>,
    /// Records by arrival time (ms), run-length encoded in record order.
    pub arrivals: Vec<(i64, u64)>,
}

/// What the monitors need from every record: the watched series, group counts and histograms.
#[derive(Clone, Debug, PartialEq)]
pub struct Watched {
    /// Window length shared by all value monitors (the smallest declared).
    pub window_ms: i64,
    /// Per series: `None` = the model score, `Some(i)` = numeric field `i`.
    pub series: Vec<Option<usize>>,
    /// Series whose per-window histograms drift rules read.
    pub hist: Vec<Option<usize>>,
    /// `group_by` fields: categorical index and vocabulary; their counts
    /// follow the series' slots, one per value and one for "other".
    pub groups: Vec<(usize, Vec<String>)>,
}

impl Watched {
    /// The series a set of monitors needs. Each rule is checked in turn
    /// ([`Watched::admit`]); the first error found is the one returned.
    pub fn new(schema: &Schema, specs: &[MonitorSpec]) -> Result<Watched, SchemaError> {
        let mut watched = Watched {
            window_ms: i64::MAX,
            series: Vec::new(),
            hist: Vec::new(),
            groups: Vec::new(),
        };
        let mut ids = BTreeMap::new();
        for (i, m) in specs.iter().enumerate() {
            watched.admit(schema, i, m, &mut ids)?;
        }
        if watched.window_ms == i64::MAX {
            watched.window_ms = default_window();
        }
        Ok(watched)
    }

    /// Checks `monitors[i]` and adds what it watches: its id (unique among
    /// `ids`), its window, its fields, its group and the options only some
    /// kinds take, in that order. A windowed rule's window bounds the shared one.
    fn admit(
        &mut self,
        schema: &Schema,
        i: usize,
        m: &MonitorSpec,
        ids: &mut BTreeMap<String, usize>,
    ) -> Result<(), SchemaError> {
        check_rule_id(i, m, ids)?;
        if m.window_ms <= 0 {
            return Err(rule_error(
                i,
                "window_ms",
                "expected a positive window".into(),
            ));
        }
        self.watch_fields(schema, i, m)?;
        self.watch_field(schema, i, m)?;
        self.watch_group(schema, i, m)?;
        check_kind_options(i, m)?;
        if m.kind.windowed() {
            self.window_ms = self.window_ms.min(m.window_ms);
        }
        Ok(())
    }

    /// `fields`: only `multivariate` takes them, at least two, each a series.
    fn watch_fields(
        &mut self,
        schema: &Schema,
        i: usize,
        m: &MonitorSpec,
    ) -> Result<(), SchemaError> {
        let e = |key: &str, message: String| rule_error(i, key, message);
        match (&m.fields, m.kind == MonitorKind::Multivariate) {
            (None, true) => Err(e(
                "fields",
                "expected the fields to watch together (numeric fields or `score`)".into(),
            )),
            (Some(fs), true) => {
                if fs.len() < 2 {
                    return Err(e("fields", "expected at least two fields".into()));
                }
                for f in fs {
                    let s = field_series(schema, f).ok_or_else(|| {
                        e(
                            "fields",
                            format!("`{f}` is not a numeric field of the schema, nor `score`"),
                        )
                    })?;
                    if !self.series.contains(&s) {
                        self.series.push(s);
                    }
                }
                Ok(())
            }
            (Some(_), false) => Err(e(
                "fields",
                format!(
                    "only `multivariate` monitors take `fields`, not `{}` (use `field`)",
                    kind_key(m.kind)
                ),
            )),
            (None, false) => Ok(()),
        }
    }

    /// `field`: `spike`, `change_point` and `drift` need one (a series;
    /// `drift` reads its histogram), the others take none.
    fn watch_field(
        &mut self,
        schema: &Schema,
        i: usize,
        m: &MonitorSpec,
    ) -> Result<(), SchemaError> {
        let e = |key: &str, message: String| rule_error(i, key, message);
        let needs_field = matches!(
            m.kind,
            MonitorKind::Spike | MonitorKind::ChangePoint | MonitorKind::Drift
        );
        match (&m.field, needs_field) {
            (None, true) => Err(e(
                "field",
                "expected the field to watch (a numeric field, or `score`)".into(),
            )),
            (Some(f), true) => {
                let s = field_series(schema, f).ok_or_else(|| {
                    e(
                        "field",
                        format!("`{f}` is not a numeric field of the schema, nor `score`"),
                    )
                })?;
                if m.kind == MonitorKind::Drift {
                    if !self.hist.contains(&s) {
                        self.hist.push(s);
                    }
                } else if !self.series.contains(&s) {
                    self.series.push(s);
                }
                Ok(())
            }
            (Some(_), false) => Err(e(
                "field",
                format!("`{}` monitors read no field", kind_key(m.kind)),
            )),
            (None, false) => Ok(()),
        }
    }

    /// `group_by`: `volume` groups by a categorical field with a vocabulary
    /// (whose counts then get slots), `idle_source` only by `partition`
    /// (Kafka; no slots: the coordinator tracks partitions).
    fn watch_group(
        &mut self,
        schema: &Schema,
        i: usize,
        m: &MonitorSpec,
    ) -> Result<(), SchemaError> {
        let e = |key: &str, message: String| rule_error(i, key, message);
        let Some(g) = m.group_by.as_ref().filter(|_| {
            m.kind != MonitorKind::IdleSource || m.group_by.as_deref() != Some("partition")
        }) else {
            return Ok(());
        };
        if m.kind == MonitorKind::IdleSource {
            return Err(e(
                "group_by",
                format!("`idle_source` groups only by `partition` (Kafka), not `{g}`"),
            ));
        }
        if m.kind != MonitorKind::Volume {
            return Err(e(
                "group_by",
                format!("only `volume` (by a categorical field) and `idle_source` (by `partition`) monitors group, not `{}`", kind_key(m.kind)),
            ));
        }
        let Some(ci) = schema.categorical.iter().position(|c| &c.name == g) else {
            return Err(e(
                "group_by",
                format!("`{g}` is not a categorical field of the schema"),
            ));
        };
        let Some(vocab) = schema.categorical[ci].vocabulary.clone() else {
            return Err(e(
                "group_by",
                format!(
                    "`{g}` has no vocabulary: groups must be a declared, bounded set of values"
                ),
            ));
        };
        if !self.groups.iter().any(|(c, _)| *c == ci) {
            self.groups.push((ci, vocab));
        }
        Ok(())
    }

    /// The slots of a `multivariate` rule's fields.
    fn indices(&self, fields: &[String], schema: &Schema) -> Vec<usize> {
        fields
            .iter()
            .map(|f| self.index(&Some(f.clone()), schema))
            .collect()
    }

    fn field_of(field: &Option<String>, schema: &Schema) -> Option<usize> {
        match field.as_deref() {
            Some("score") | None => None,
            Some(f) => schema.numeric_index(f),
        }
    }

    fn index(&self, field: &Option<String>, schema: &Schema) -> usize {
        let s = Self::field_of(field, schema);
        1 + self
            .series
            .iter()
            .position(|x| *x == s)
            .expect("validated by Watched::new")
    }

    fn hist_index(&self, field: &Option<String>, schema: &Schema) -> usize {
        let s = Self::field_of(field, schema);
        self.hist
            .iter()
            .position(|x| *x == s)
            .expect("validated by Watched::new")
    }

    /// The first slot of group-by field `ci`'s counts.
    fn group_offset(&self, ci: usize) -> usize {
        let mut at = 1 + self.series.len();
        for (c, vocab) in &self.groups {
            if *c == ci {
                return at;
            }
            at += vocab.len() + 1;
        }
        unreachable!("validated by Watched::new")
    }

    fn width(&self) -> usize {
        1 + self.series.len() + self.groups.iter().map(|(_, v)| v.len() + 1).sum::<usize>()
    }

    fn binning(series: Option<usize>) -> Binning {
        match series {
            None => Binning::Unit,
            Some(_) => Binning::Asinh,
        }
    }
}

impl WindowPartial {
    /// Adds one scored record to its event-time window (the per-worker half, called by `score`).
    #[inline]
    pub fn add(&mut self, watched: &Watched, s: &Scored) {
        let start = s.record.event_time.div_euclid(watched.window_ms) * watched.window_ms;
        let w = self
            .windows
            .entry(start)
            .or_insert_with(|| vec![(0, 0.0, f64::NEG_INFINITY); watched.width()]);
        w[0].0 += 1;
        let value = |series: &Option<usize>| match series {
            None => s.score,
            Some(i) => s.record.nums[*i],
        };
        for (k, series) in watched.series.iter().enumerate() {
            let v = value(series);
            let slot = &mut w[k + 1];
            slot.0 += 1;
            slot.1 += v;
            slot.2 = slot.2.max(v);
        }
        let mut at = 1 + watched.series.len();
        for (ci, vocab) in &watched.groups {
            let v = s.record.cats.get(*ci).map_or("", String::as_str);
            let k = vocab.iter().position(|x| x == v).unwrap_or(vocab.len());
            w[at + k].0 += 1;
            at += vocab.len() + 1;
        }
        if !watched.hist.is_empty() {
            let hs = self
                .hists
                .entry(start)
                .or_insert_with(|| vec![Histogram::new(); watched.hist.len()]);
            for (h, series) in hs.iter_mut().zip(&watched.hist) {
                *h.entry(Watched::binning(*series).bin(value(series)))
                    .or_default() += 1;
            }
        }
        self.arrived(s.record.arrived_ms);
    }

    /// Counts one record's arrival time (all that is kept when no monitor is declared: the latency figures).
    #[inline]
    pub fn arrived(&mut self, arrived_ms: i64) {
        match self.arrivals.last_mut() {
            Some((t, n)) if *t == arrived_ms => *n += 1,
            _ => self.arrivals.push((arrived_ms, 1)),
        }
    }
}

/// An error in `monitors[i].key`.
fn rule_error(i: usize, key: &str, message: String) -> SchemaError {
    SchemaError {
        path: format!("monitors[{i}].{key}"),
        message,
    }
}

/// A rule id is lower snake case and names one rule only (`ids`: id → the
/// first rule with it).
fn check_rule_id(
    i: usize,
    m: &MonitorSpec,
    ids: &mut BTreeMap<String, usize>,
) -> Result<(), SchemaError> {
    if m.id.is_empty()
        || !m
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(rule_error(
            i,
            "id",
            "expected a lower_snake_case rule id".into(),
        ));
    }
    if let Some(first) = ids.insert(m.id.clone(), i) {
        return Err(rule_error(
            i,
            "id",
            format!("rule `{}` is already defined by monitors[{first}]", m.id),
        ));
    }
    Ok(())
}

/// The options only one kind takes: `percentile` (`latency`, in (0, 100]),
/// `block_records` (`error_rate`, at least 50) and `current` (`drift`).
fn check_kind_options(i: usize, m: &MonitorSpec) -> Result<(), SchemaError> {
    let e = |key: &str, message: String| rule_error(i, key, message);
    if m.percentile.is_some() && m.kind != MonitorKind::Latency {
        return Err(e(
            "percentile",
            "only `latency` monitors take a percentile".into(),
        ));
    }
    if let Some(p) = m.percentile {
        if !(0.0..=100.0).contains(&p) || p == 0.0 {
            return Err(e(
                "percentile",
                format!("expected a percentile in (0, 100], found {p}"),
            ));
        }
    }
    if m.block_records.is_some() && m.kind != MonitorKind::ErrorRate {
        return Err(e(
            "block_records",
            "only `error_rate` monitors take `block_records`".into(),
        ));
    }
    if m.block_records.is_some_and(|b| b < 50) {
        return Err(e(
            "block_records",
            "expected at least 50 labelled records per block".into(),
        ));
    }
    if m.current.is_some() && m.kind != MonitorKind::Drift {
        return Err(e(
            "current",
            "only `drift` monitors take `current` windows".into(),
        ));
    }
    Ok(())
}

/// A watched series: `None` for the score, `Some(i)` for numeric field `i`; `None` if neither.
fn field_series(schema: &Schema, f: &str) -> Option<Option<usize>> {
    if f == "score" {
        Some(None)
    } else {
        schema.numeric_index(f).map(Some)
    }
}

/// The `p`-th percentiles (0–100) of `now - arrival` over records, in ms.
pub fn latency_percentiles(arrivals: &[(i64, u64)], now_ms: i64, ps: &[f64]) -> Vec<f64> {
    let mut lat: Vec<(i64, u64)> = arrivals
        .iter()
        .map(|(t, n)| ((now_ms - t).max(0), *n))
        .collect();
    lat.sort_unstable();
    let total: u64 = lat.iter().map(|x| x.1).sum();
    ps.iter()
        .map(|p| {
            if total == 0 {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (l, n) in &lat {
                seen += n;
                if seen >= rank {
                    return *l as f64;
                }
            }
            lat.last().map_or(f64::NAN, |x| x.0 as f64)
        })
        .collect()
}

/// What the coordinator knows when an epoch completes.
#[derive(Clone, Debug, Default)]
pub struct EpochFacts<'a> {
    /// The epoch.
    pub epoch: Epoch,
    /// Every worker's window aggregates of the epoch (any order).
    pub partials: Vec<WindowPartial>,
    /// The epoch's ledger.
    pub tally: LedgerCounts,
    /// The model's prequential `(score, label)` pairs, in record order.
    pub predictions: &'a [(f64, bool)],
    /// The latest event time seen so far.
    pub latest_ms: Option<i64>,
    /// Files that ended in the epoch: (name, bytes), in name order.
    pub files: Vec<(String, u64)>,
    /// Rows the sinks committed in the epoch.
    pub rows_committed: u64,
    /// Wall-clock time of the commit (ms since the Unix epoch).
    pub now_ms: i64,
    /// Source and sink errors and retries during the epoch.
    pub io_errors: u64,
}

/// A rule's detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Detector {
    Spike(SpikeDip),
    Change(PageHinkley),
    Drift(HistDrift),
    Quality(QualityDrift),
    /// Half-space trees over window vectors, and the robust z of their log-mass.
    Multi(HalfSpaceTrees, SpikeDip),
    Threshold(f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Rule {
    spec: MonitorSpec,
    /// The group this instance of the rule watches (`group_by` rules have one per value).
    group: Option<String>,
    /// Its slot in a window's aggregates (or drift histogram index).
    series: usize,
    /// `multivariate`: the slots of its fields.
    #[serde(default)]
    slots: Vec<usize>,
    detector: Detector,
    firing: bool,
    quiet: u32,
    /// Last non-empty window end (staleness); the watermark last seen (watermark stall).
    last_seen_end: Option<i64>,
    recent: std::collections::VecDeque<f64>,
    /// Watermark stall: since when (processing time) the watermark has not moved.
    #[serde(default)]
    since_ms: Option<i64>,
    /// `volume` and `spike`: whether the firing alert is a rise (1) or a fall (−1).
    #[serde(default)]
    direction: i8,
}

impl Detector {
    /// The detector of a new `m` rule, with the kind's default threshold
    /// where `m` gives none (see the module docs).
    fn for_spec(m: &MonitorSpec) -> Detector {
        let threshold = m.threshold;
        match m.kind {
            MonitorKind::Volume
            | MonitorKind::Spike
            | MonitorKind::FileSize
            | MonitorKind::BatchSize => Detector::Spike(SpikeDip::new(
                m.history,
                threshold.unwrap_or(DEFAULT_Z),
                Direction::Both,
            )),
            MonitorKind::Multivariate => {
                let dims = m.fields.as_ref().map_or(2, Vec::len);
                // The id seeds the trees: the same rule builds the same trees in every run.
                let seed = crate::hash::bytes_hash(m.id.as_bytes());
                Detector::Multi(
                    HalfSpaceTrees::new(dims, 25, 8, m.history.max(10), seed),
                    SpikeDip::new(m.history, threshold.unwrap_or(DEFAULT_Z), Direction::Dips),
                )
            }
            MonitorKind::ChangePoint => Detector::Change(PageHinkley::new(
                0.5,
                threshold.unwrap_or(25.0),
                m.history as u64,
            )),
            MonitorKind::Drift => Detector::Drift(HistDrift::new(
                m.history,
                m.current.unwrap_or(3),
                threshold.unwrap_or(0.2),
                0.1,
            )),
            // A concept drift shows in how the model ranks records (the 0/1
            // error rate of a rare-positive stream barely moves).
            MonitorKind::ErrorRate => Detector::Quality(QualityDrift::new(
                m.block_records.unwrap_or(1000),
                m.history,
                threshold.unwrap_or(DEFAULT_H),
            )),
            MonitorKind::Staleness => {
                Detector::Threshold(threshold.unwrap_or(3.0 * m.window_ms as f64))
            }
            MonitorKind::RejectedRate => Detector::Threshold(threshold.unwrap_or(0.05)),
            MonitorKind::Latency => Detector::Threshold(threshold.unwrap_or(60_000.0)),
            MonitorKind::Restart => Detector::Threshold(0.0),
            MonitorKind::IdleSource => Detector::Threshold(threshold.unwrap_or(300_000.0)),
            MonitorKind::WatermarkStall => Detector::Threshold(threshold.unwrap_or(60_000.0)),
            MonitorKind::Errors => Detector::Threshold(threshold.unwrap_or(0.0)),
        }
    }
}

impl Rule {
    /// A quiet rule `spec` for `group`, reading slot `series` with `detector`.
    fn new(spec: &MonitorSpec, group: Option<String>, series: usize, detector: Detector) -> Rule {
        Rule {
            spec: spec.clone(),
            group,
            series,
            detector,
            firing: false,
            quiet: 0,
            last_seen_end: None,
            recent: std::collections::VecDeque::new(),
            since_ms: None,
            direction: 0,
            slots: Vec::new(),
        }
    }

    /// The rules `m` makes: a grouped `volume` rule one per value of its
    /// group (and one for "(other)"), each on its count's slot; a `spike`
    /// or `change_point` rule one on its series' slot, a `drift` rule one on
    /// its histogram, a `multivariate` rule one on its fields' slots; any
    /// other one rule on slot 0 (the record count).
    fn instances(m: &MonitorSpec, schema: &Schema, watched: &Watched) -> Vec<Rule> {
        let detector = Detector::for_spec(m);
        let rule =
            |group: Option<String>, series: usize| Rule::new(m, group, series, detector.clone());
        match (m.kind, &m.group_by) {
            (MonitorKind::Volume, Some(g)) => {
                let (ci, vocab) = watched
                    .groups
                    .iter()
                    .find(|(c, _)| schema.categorical[*c].name == *g)
                    .expect("validated by Watched::new");
                let at = watched.group_offset(*ci);
                vocab
                    .iter()
                    .chain(std::iter::once(&"(other)".to_string()))
                    .enumerate()
                    .map(|(k, v)| rule(Some(v.clone()), at + k))
                    .collect()
            }
            (MonitorKind::Spike | MonitorKind::ChangePoint, _) => {
                vec![rule(None, watched.index(&m.field, schema))]
            }
            (MonitorKind::Drift, _) => vec![rule(None, watched.hist_index(&m.field, schema))],
            (MonitorKind::Multivariate, _) => {
                let mut r = rule(None, 0);
                r.slots = watched.indices(m.fields.as_deref().unwrap_or_default(), schema);
                vec![r]
            }
            _ => vec![rule(None, 0)],
        }
    }
}

/// The coordinator's half: rules, open windows, watermark. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Monitors {
    window_ms: i64,
    allowed_lateness_ms: i64,
    rules: Vec<Rule>,
    open: BTreeMap<i64, Vec<(u64, f64, f64)>>,
    open_hists: BTreeMap<i64, Vec<Histogram>>,
    /// Windows before this start are closed.
    closed_until: Option<i64>,
    watermark: i64,
    width: usize,
    hist_width: usize,
    /// A restart to report with the next epoch.
    restart: Option<String>,
    /// When input was last read (processing time, ms): not checkpointed, a
    /// resumed run starts counting from its own start.
    #[serde(skip)]
    last_input_ms: Option<i64>,
    /// When each Kafka partition last moved (processing time, ms; not checkpointed).
    #[serde(skip)]
    partitions: BTreeMap<String, i64>,
    /// Test switch: close empty windows one by one (not checkpointed).
    #[serde(skip)]
    closed_form: ClosedForm,
    /// The latest event time at which a concept drift (`error_rate`) was firing.
    #[serde(default)]
    concept_drift_ms: Option<i64>,
}

/// Whether runs of empty windows are closed in closed form (see
/// [`Monitors::close_windows`]); `off` is the window-by-window reference
/// the closed form is tested against. Not part of a [`Monitors`]' identity.
#[derive(Clone, Copy, Debug, Default)]
struct ClosedForm {
    off: bool,
}

impl PartialEq for ClosedForm {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Robust z above which `volume`, `spike`, `file_size` and `batch_size` fire by default.
const DEFAULT_Z: f64 = 6.0;

impl Monitors {
    /// Rules for `specs` over the `watched` series: one per spec, or one per
    /// group for a grouped `volume` rule ([`Rule::instances`]).
    pub fn new(
        schema: &Schema,
        specs: &[MonitorSpec],
        watched: &Watched,
        allowed_lateness_ms: i64,
    ) -> Monitors {
        let rules = specs
            .iter()
            .flat_map(|m| Rule::instances(m, schema, watched))
            .collect();
        Monitors {
            window_ms: watched.window_ms,
            allowed_lateness_ms,
            rules,
            open: BTreeMap::new(),
            open_hists: BTreeMap::new(),
            closed_until: None,
            watermark: i64::MIN,
            width: watched.width(),
            hist_width: watched.hist.len(),
            restart: None,
            last_input_ms: None,
            partitions: BTreeMap::new(),
            closed_form: ClosedForm::default(),
            concept_drift_ms: None,
        }
    }

    /// Kafka partition `key` (`topic/partition`) moved at `now_ms`.
    pub fn saw_partition(&mut self, key: &str, now_ms: i64) {
        self.partitions.insert(key.to_string(), now_ms);
    }

    /// Whether any rule needs the coordinator to look at the clock while nothing arrives.
    pub fn has_idle_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.spec.kind == MonitorKind::IdleSource)
    }

    /// Input was read (or the run started) at `now_ms`.
    pub fn saw_input(&mut self, now_ms: i64) {
        self.last_input_ms = Some(now_ms);
    }

    /// The processing-time check of `idle_source` rules, at `now_ms`; `epoch` is the last completed one.
    pub fn idle_check(&mut self, now_ms: i64, epoch: Epoch) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let Some(overall) = self.last_input_ms else {
            return alerts;
        };
        // Per-partition instances of rules grouped by partition, made as partitions appear.
        let grouped: Vec<usize> = (0..self.rules.len())
            .filter(|&i| {
                let r = &self.rules[i];
                r.spec.kind == MonitorKind::IdleSource
                    && r.group.is_none()
                    && r.spec.group_by.as_deref() == Some("partition")
            })
            .collect();
        for i in grouped {
            let keys: Vec<String> = self.partitions.keys().cloned().collect();
            for key in keys {
                let id = self.rules[i].spec.id.clone();
                if !self
                    .rules
                    .iter()
                    .any(|r| r.spec.id == id && r.group.as_deref() == Some(key.as_str()))
                {
                    let mut r = self.rules[i].clone();
                    r.group = Some(key);
                    r.firing = false;
                    r.quiet = 0;
                    self.rules.push(r);
                }
            }
        }
        for i in 0..self.rules.len() {
            if self.rules[i].spec.kind != MonitorKind::IdleSource {
                continue;
            }
            let last = match &self.rules[i].group {
                None => overall,
                Some(p) => self.partitions.get(p).copied().unwrap_or(overall),
            };
            let idle = (now_ms - last).max(0) as f64;
            let Detector::Threshold(t) = self.rules[i].detector else {
                unreachable!()
            };
            let a = Assessment {
                score: crate::detect::squash(idle, t),
                anomalous: idle > t,
            };
            // Quiet checks only count once input is flowing again.
            if !a.anomalous && idle > t / 2.0 {
                continue;
            }
            self.lifecycle(
                i,
                epoch,
                (last, now_ms),
                a,
                idle,
                Some((0.0, t)),
                None,
                &mut alerts,
            );
        }
        alerts
    }

    /// The engine resumed after a run that did not finish cleanly: `restart`
    /// rules fire with the next epoch, saying `why`.
    pub fn restarted(&mut self, why: String) {
        self.restart = Some(why);
    }

    /// The engine resumed after a run that did not finish cleanly: `restart`
    /// rules fire now (even if no epoch follows), saying `why`; `epoch` is
    /// the last committed one. They resolve with the epochs that follow.
    pub fn restart_alerts(&mut self, why: &str, epoch: Epoch, now_ms: i64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for i in 0..self.rules.len() {
            if self.rules[i].spec.kind == MonitorKind::Restart {
                let a = Assessment {
                    score: 1.0,
                    anomalous: true,
                };
                self.lifecycle(
                    i,
                    epoch,
                    (now_ms, now_ms),
                    a,
                    1.0,
                    None,
                    Some(why.to_string()),
                    &mut alerts,
                );
            }
        }
        alerts
    }

    /// Judges one completed epoch; returns the alerts it raises: the
    /// workers' window aggregates join the open windows, the watermark
    /// moves, the per-epoch and per-file rules judge the epoch, then the
    /// windows the watermark has passed are closed and judged.
    pub fn epoch(&mut self, facts: EpochFacts<'_>) -> Vec<Alert> {
        let EpochFacts {
            epoch,
            partials,
            tally,
            predictions,
            latest_ms,
            files,
            rows_committed,
            now_ms,
            io_errors,
        } = facts;
        let mut alerts = Vec::new();
        let arrivals = self.merge_partials(partials);
        if let Some(t) = latest_ms {
            self.watermark = self.watermark.max(t - self.allowed_lateness_ms);
        }
        let signals = EpochSignals {
            input: tally.input,
            rejected: tally.rejected_total() as f64 / tally.input.max(1) as f64,
            predictions,
            arrivals,
            latest_ms,
            files,
            rows_committed,
            now_ms,
            io_errors,
            restart: self.restart.take(),
        };
        // Per-epoch and per-file rules first: a concept drift they find this
        // epoch explains the score drift the windows may show.
        self.judge_epoch_rules(epoch, &signals, &mut alerts);
        self.close_windows(epoch, &mut alerts);
        alerts
    }

    /// Every worker's window aggregates of an epoch into the open windows,
    /// in worker order (so sums are deterministic); returns their records'
    /// arrival times.
    fn merge_partials(&mut self, mut partials: Vec<WindowPartial>) -> Vec<(i64, u64)> {
        partials.sort_by_key(|p| p.worker);
        let mut arrivals = Vec::new();
        for p in partials {
            arrivals.extend(p.arrivals);
            for (start, w) in p.windows {
                self.merge_window(start, w);
            }
            for (start, hs) in p.hists {
                self.merge_hists(start, hs);
            }
        }
        arrivals
    }

    /// One worker's `(count, sum, max)` slots of the window at `start` into
    /// the open one; dropped if that window is closed (already judged).
    fn merge_window(&mut self, start: i64, w: Vec<(u64, f64, f64)>) {
        use std::collections::btree_map::Entry;
        if self.closed_until.is_some_and(|c| start < c) {
            return; // Late for a closed window: already judged.
        }
        match self.open.entry(start) {
            // The first worker's aggregates are the window's (no copy).
            Entry::Vacant(e) if w.len() == self.width => {
                e.insert(w);
            }
            e => {
                let slot = e.or_insert_with(|| vec![(0, 0.0, f64::NEG_INFINITY); self.width]);
                for (a, b) in slot.iter_mut().zip(w) {
                    a.0 += b.0;
                    a.1 += b.1;
                    a.2 = a.2.max(b.2);
                }
            }
        }
    }

    /// One worker's drift histograms of the window at `start` into the open
    /// ones; dropped if that window is closed.
    fn merge_hists(&mut self, start: i64, hs: Vec<Histogram>) {
        use std::collections::btree_map::Entry;
        if self.closed_until.is_some_and(|c| start < c) {
            return;
        }
        match self.open_hists.entry(start) {
            Entry::Vacant(e) if hs.len() == self.hist_width => {
                e.insert(hs);
            }
            e => {
                let slot = e.or_insert_with(|| vec![Histogram::new(); self.hist_width]);
                for (a, b) in slot.iter_mut().zip(hs) {
                    for (bin, n) in b {
                        *a.entry(bin).or_default() += n;
                    }
                }
            }
        }
    }

    /// The per-epoch and per-file rules, in rule order, on `signals`; then
    /// notes whether a concept drift (`error_rate`) is firing as of the
    /// epoch's latest event time.
    fn judge_epoch_rules(
        &mut self,
        epoch: Epoch,
        signals: &EpochSignals<'_>,
        alerts: &mut Vec<Alert>,
    ) {
        let at = signals.latest_ms.unwrap_or(0);
        for i in 0..self.rules.len() {
            for finding in signals.findings(&mut self.rules[i]) {
                self.report_epoch_finding(i, epoch, at, finding, alerts);
            }
        }
        if self
            .rules
            .iter()
            .any(|r| r.spec.kind == MonitorKind::ErrorRate && r.firing)
        {
            self.concept_drift_ms = Some(at);
        }
    }

    /// Rule `i`'s finding in an epoch (at event time `at`) through its
    /// lifecycle: the observed value joins its recent ones, which give the
    /// expected range when the detector has none.
    fn report_epoch_finding(
        &mut self,
        i: usize,
        epoch: Epoch,
        at: i64,
        (assessment, observed, expected, detail): Finding,
        alerts: &mut Vec<Alert>,
    ) {
        let rule = &mut self.rules[i];
        rule.recent.push_back(observed);
        if rule.recent.len() > rule.spec.history.max(5) {
            rule.recent.pop_front();
        }
        let expected = expected.or_else(|| expected_range(rule.recent.make_contiguous()));
        self.lifecycle(
            i,
            epoch,
            (at, at),
            assessment,
            observed,
            expected,
            detail,
            alerts,
        );
    }

    /// Closes every window that ends at or before the watermark, in
    /// event-time order, empty windows between them included — in closed
    /// form: a run of empty windows costs O(window) however long it is.
    ///
    /// Why that is exact: an empty window changes only `volume` rules (their
    /// detector and recent counts take a 0) and `staleness` rules (the other
    /// kinds skip windows without values). A `volume` rule that is not firing
    /// and whose median count is small enough that a 0 cannot be an outlier
    /// ([`SpikeDip::zeros_are_quiet`]: the median only falls while zeros come
    /// in) stays quiet for the whole run, so the run is the zeros it pushes
    /// into its history. A `staleness` rule changes only where the gap
    /// crosses its threshold, at a window computed from its last window with
    /// records. So the run jumps to the next crossing, the next window with
    /// data or the watermark, whichever comes first, whenever every `volume`
    /// rule is quiet; otherwise (a dip just fired, or is resolving) it closes
    /// one window as it is and looks again. A rule's history is all zeros
    /// after `history` empty windows, so at most that many are closed one by
    /// one.
    fn close_windows(&mut self, epoch: Epoch, alerts: &mut Vec<Alert>) {
        loop {
            let with_data = match (self.open.keys().next(), self.open_hists.keys().next()) {
                (Some(&a), Some(&b)) => Some(a.min(b)),
                (a, b) => a.or(b).copied(),
            };
            let Some(next) = self.closed_until.or(with_data) else {
                break;
            };
            if next.saturating_add(self.window_ms) > self.watermark {
                break;
            }
            if with_data == Some(next) {
                let w = self
                    .open
                    .remove(&next)
                    .unwrap_or_else(|| vec![(0, 0.0, f64::NEG_INFINITY); self.width]);
                let hs = self.open_hists.remove(&next).unwrap_or_default();
                self.closed_until = Some(next + self.window_ms);
                self.close_window(epoch, next, &w, hs, alerts);
                continue;
            }
            // An empty window: the first of a run that ends at the next window
            // with data or after the last window the watermark closes.
            let closable = self.watermark.saturating_sub(self.window_ms);
            let run_end = with_data.unwrap_or(i64::MAX).min(
                next + (closable - next).div_euclid(self.window_ms) * self.window_ms
                    + self.window_ms,
            );
            if !self.closed_form.off && self.empty_windows_are_quiet() {
                let jump = self.next_staleness_crossing(next).unwrap_or(i64::MAX);
                let to = run_end.min(jump);
                if to > next {
                    self.skip_quiet_empty_windows(((to - next) / self.window_ms) as usize);
                    self.closed_until = Some(to);
                    continue;
                }
            }
            let w = vec![(0, 0.0, f64::NEG_INFINITY); self.width];
            self.closed_until = Some(next + self.window_ms);
            self.close_window(epoch, next, &w, Vec::new(), alerts);
        }
    }

    /// Whether no `volume` rule can alert or resolve on a run of empty windows.
    fn empty_windows_are_quiet(&self) -> bool {
        self.rules.iter().all(|r| match (&r.detector, r.spec.kind) {
            (Detector::Spike(d), MonitorKind::Volume) => !r.firing && d.zeros_are_quiet(),
            _ => true,
        })
    }

    /// What `n` quiet empty windows do to the rules: `volume` rules take `n` zeros.
    fn skip_quiet_empty_windows(&mut self, n: usize) {
        for r in &mut self.rules {
            if let (Detector::Spike(d), MonitorKind::Volume) = (&mut r.detector, r.spec.kind) {
                d.push_zeros(n);
                let keep = r.spec.history.max(1);
                let zeros = n.min(keep);
                let drop = (r.recent.len() + zeros)
                    .saturating_sub(keep)
                    .min(r.recent.len());
                r.recent.drain(..drop);
                r.recent.extend(std::iter::repeat_n(0.0, zeros));
            }
        }
    }

    /// The start of the first window from `from` on whose end takes a
    /// `staleness` rule past its threshold (firing it, or resetting the
    /// resolution it had begun), if any rule can get there.
    fn next_staleness_crossing(&self, from: i64) -> Option<i64> {
        self.rules
            .iter()
            // A firing rule that has begun to resolve is reset by a crossing too.
            .filter(|r| r.spec.kind == MonitorKind::Staleness && (!r.firing || r.quiet > 0))
            .filter_map(|r| {
                let Detector::Threshold(t) = r.detector else {
                    return None;
                };
                let seen = r.last_seen_end?;
                // The first window end `e` on the grid with `e - seen > t`.
                let first_end = seen.saturating_add(t.max(0.0) as i64).saturating_add(1);
                let k = (first_end - from - self.window_ms).max(0);
                let start =
                    from + (k + self.window_ms - 1).div_euclid(self.window_ms) * self.window_ms;
                Some(start)
            })
            .min()
    }

    /// Judges the closed window at `start` (its slots `w`, its drift
    /// histograms `hists`) with every windowed rule, in rule order.
    fn close_window(
        &mut self,
        epoch: Epoch,
        start: i64,
        w: &[(u64, f64, f64)],
        mut hists: Vec<Histogram>,
        alerts: &mut Vec<Alert>,
    ) {
        let end = start + self.window_ms;
        for i in 0..self.rules.len() {
            if let Some(reading) = self.read_window(i, start, w, &mut hists) {
                self.report_window_reading(i, epoch, (start, end), reading, alerts);
            }
        }
    }

    /// What rule `i` reads in the closed window at `start`, updating its
    /// detector; `None` if it has nothing to say about the window (not a
    /// windowed rule, or no values for it).
    fn read_window(
        &mut self,
        i: usize,
        start: i64,
        w: &[(u64, f64, f64)],
        hists: &mut [Histogram],
    ) -> Option<WindowReading> {
        let end = start + self.window_ms;
        let rule = &mut self.rules[i];
        match rule.spec.kind {
            MonitorKind::Volume => Some(rule.read_volume(w)),
            MonitorKind::Spike | MonitorKind::ChangePoint => rule.read_level(w),
            MonitorKind::Multivariate => rule.read_multivariate(w),
            MonitorKind::Drift => {
                // While the model re-learns after a concept drift its
                // scores move: that is the concept drift alert's news.
                let relearning = rule.spec.field.as_deref() == Some("score")
                    && self.concept_drift_ms.is_some_and(|t| {
                        start <= t.saturating_add(rule.spec.history as i64 * self.window_ms)
                    });
                rule.read_drift(hists, relearning)
            }
            MonitorKind::Staleness => rule.read_staleness(w[0].0, end),
            _ => None,
        }
    }

    /// Rule `i`'s reading of a closed window through its lifecycle: a rise
    /// that turned into a fall (or back) resolves first, then the reading
    /// fires, stays quiet or resolves, with the expected range and detail
    /// written only when an alert is due.
    fn report_window_reading(
        &mut self,
        i: usize,
        epoch: Epoch,
        window: (i64, i64),
        reading: WindowReading,
        alerts: &mut Vec<Alert>,
    ) {
        let (observed, assessment, direction) =
            (reading.observed, reading.assessment, reading.direction);
        let rule = &self.rules[i];
        // A rise that turns into a fall (a spike, then a gap) is two
        // anomalies: the first resolves and the second fires.
        let flipped = assessment.anomalous
            && rule.firing
            && direction.is_some_and(|d| rule.direction != 0 && d != rule.direction);
        if flipped {
            self.resolve_flipped(i, epoch, window, observed, alerts);
        }
        let rule = &mut self.rules[i];
        // The expected range is only said in an alert: computed when one is due.
        let alerting = if assessment.anomalous {
            !rule.firing
        } else {
            rule.firing && rule.quiet + 1 >= rule.spec.resolve_after
        };
        let expected = rule.window_expected(observed, alerting);
        let firing = alerting && assessment.anomalous;
        let detail = reading.detail(alerting, firing, rule.spec.history);
        if firing {
            rule.direction = direction.unwrap_or(0);
        }
        let detail = detail.or_else(|| rule.group.clone());
        self.lifecycle(
            i, epoch, window, assessment, observed, expected, detail, alerts,
        );
    }

    /// Rule `i` fired on a rise (or fall) and now sees the opposite: the
    /// firing alert resolves at once, saying so.
    fn resolve_flipped(
        &mut self,
        i: usize,
        epoch: Epoch,
        window: (i64, i64),
        observed: f64,
        alerts: &mut Vec<Alert>,
    ) {
        let rule = &mut self.rules[i];
        let was = if rule.direction > 0 { "rise" } else { "fall" };
        rule.quiet = rule.spec.resolve_after.saturating_sub(1);
        let before = alerts.len();
        self.lifecycle(
            i,
            epoch,
            window,
            Assessment::QUIET,
            observed,
            None,
            None,
            alerts,
        );
        if let Some(a) = alerts.get_mut(before) {
            let r = &self.rules[i];
            a.message = format!(
                "{} `{}`: the {was} is over, the opposite follows (observed {observed:.3})",
                kind_name(r.spec.kind),
                r.spec.id
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn lifecycle(
        &mut self,
        i: usize,
        epoch: Epoch,
        (start, end): (i64, i64),
        a: Assessment,
        observed: f64,
        expected: Option<(f64, f64)>,
        detail: Option<String>,
        alerts: &mut Vec<Alert>,
    ) {
        let rule = &mut self.rules[i];
        let spec = &rule.spec;
        let group = rule.group.clone().or_else(|| {
            (spec.kind == MonitorKind::FileSize)
                .then(|| detail.clone())
                .flatten()
        });
        let make = |state: AlertState, message: String| Alert {
            rule_id: spec.id.clone(),
            kind: spec.kind,
            group: group.clone(),
            severity: spec.severity,
            state,
            window_start_ms: start,
            window_end_ms: end,
            observed,
            expected,
            score: a.score,
            message,
            epoch,
        };
        let about = match (&rule.group, &detail) {
            (Some(g), Some(d)) if d != g => format!(" for `{g}` ({d})"),
            (Some(g), _) => format!(" for `{g}`"),
            (None, Some(d)) if spec.kind == MonitorKind::FileSize => format!(" for file `{d}`"),
            (None, Some(d)) if spec.kind == MonitorKind::Restart => format!(": {d}"),
            (None, Some(d)) => format!(" ({d})"),
            (None, None) => String::new(),
        };
        let unit = match spec.kind {
            MonitorKind::Latency | MonitorKind::IdleSource | MonitorKind::WatermarkStall => " ms",
            MonitorKind::FileSize => " bytes",
            MonitorKind::BatchSize => " rows",
            _ => "",
        };
        if a.anomalous {
            rule.quiet = 0;
            if !rule.firing {
                rule.firing = true;
                let range = expected.map_or(String::new(), |(lo, hi)| {
                    format!(", expected about {lo:.3}..{hi:.3}{unit}")
                });
                let message = if spec.kind == MonitorKind::Restart {
                    format!("{} `{}`{about}", kind_name(spec.kind), spec.id)
                } else {
                    format!(
                        "{} `{}`{about}: observed {observed:.3}{unit}{range}",
                        kind_name(spec.kind),
                        spec.id
                    )
                };
                alerts.push(make(AlertState::Firing, message));
            }
        } else if rule.firing {
            rule.quiet += 1;
            if rule.quiet >= spec.resolve_after {
                rule.firing = false;
                rule.quiet = 0;
                let about = rule
                    .group
                    .as_ref()
                    .map_or(String::new(), |g| format!(" for `{g}`"));
                alerts.push(make(
                    AlertState::Resolved,
                    format!(
                        "{} `{}`{about} is back to normal (observed {observed:.3}{unit})",
                        kind_name(spec.kind),
                        spec.id
                    ),
                ));
            }
        }
    }

    /// Rules currently firing (with their group, if any).
    pub fn firing(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.firing)
            .map(|r| match &r.group {
                Some(g) => format!("{}[{g}]", r.spec.id),
                None => r.spec.id.clone(),
            })
            .collect()
    }
}

/// What a windowed rule read in one closed window.
struct WindowReading {
    /// The value judged (a count, an aggregate, a log-mass, PSI, a gap).
    observed: f64,
    /// The detector's verdict on it.
    assessment: Assessment,
    /// `drift`: the window's PSI and KS.
    drift: Option<(f64, f64)>,
    /// Windows a spike or volume rule compared with, if fewer than a full baseline.
    short: Option<usize>,
    /// Whether the value is above (1) or below (−1) what a spike or volume rule expected.
    direction: Option<i8>,
    /// A multivariate rule's window vector, for its alert.
    combination: Option<String>,
}

impl WindowReading {
    /// A reading with nothing to add but the value and the verdict.
    fn plain(observed: f64, assessment: Assessment) -> WindowReading {
        WindowReading {
            observed,
            assessment,
            drift: None,
            short: None,
            direction: None,
            combination: None,
        }
    }

    /// The detail of the alert due (`alerting`; `firing` if it fires): a
    /// drift rule's measures, a multivariate rule's vector, the side and a
    /// short baseline of a spike or volume rule. Said only in an alert, so
    /// written only for one.
    fn detail(self, alerting: bool, firing: bool, history: usize) -> Option<String> {
        let side = match self.direction {
            Some(1) => "a rise",
            Some(_) => "a fall",
            None => "",
        };
        match (self.drift, self.short) {
            (Some((psi, ks)), _) if alerting => Some(format!("PSI {psi:.3}, KS {ks:.3}")),
            _ if firing && self.combination.is_some() => self
                .combination
                .map(|c| format!("{c}; log-mass among the last {history} windows")),
            (_, Some(n)) if firing && !side.is_empty() => {
                Some(format!("{side}; baseline: {n} windows"))
            }
            (_, Some(n)) if firing => Some(format!("baseline: {n} windows")),
            _ if firing && !side.is_empty() => Some(side.to_string()),
            _ => None,
        }
    }
}

/// Whether `x` is above (1) or below (−1) what `d` expects, once it can say.
fn side(d: &SpikeDip, x: f64) -> Option<i8> {
    d.z(x).map(|z| if z >= 0.0 { 1i8 } else { -1 })
}

impl Rule {
    /// `volume`: the window's count in the rule's slot (every window has one, 0 if empty).
    fn read_volume(&mut self, w: &[(u64, f64, f64)]) -> WindowReading {
        let Detector::Spike(d) = &mut self.detector else {
            unreachable!()
        };
        let n = w[self.series].0 as f64;
        let short = d.short_baseline();
        let direction = side(d, n);
        WindowReading {
            short,
            direction,
            ..WindowReading::plain(n, d.update_count(n))
        }
    }

    /// `spike` and `change_point`: the aggregate of the rule's series, if
    /// the window has values of it.
    fn read_level(&mut self, w: &[(u64, f64, f64)]) -> Option<WindowReading> {
        let (n, sum, max) = w[self.series];
        if n == 0 {
            return None; // No values: nothing to say about their level.
        }
        let v = aggregate(self.spec.aggregate, (n, sum, max));
        Some(match &mut self.detector {
            Detector::Spike(d) => {
                let short = d.short_baseline();
                let direction = side(d, v);
                WindowReading {
                    short,
                    direction,
                    ..WindowReading::plain(v, d.update(v))
                }
            }
            Detector::Change(d) => WindowReading::plain(v, d.update(v)),
            _ => unreachable!(),
        })
    }

    /// `multivariate`: the log-mass of the window's vector of aggregates
    /// among the recent ones, if the window has values of every field.
    fn read_multivariate(&mut self, w: &[(u64, f64, f64)]) -> Option<WindowReading> {
        let Detector::Multi(trees, mass) = &mut self.detector else {
            unreachable!()
        };
        if self.slots.iter().any(|&k| w[k].0 == 0) {
            return None; // No values: nothing to say about their joint level.
        }
        let v: Vec<f64> = self
            .slots
            .iter()
            .map(|&k| aggregate(self.spec.aggregate, w[k]))
            .collect();
        let fields = self.spec.fields.as_deref().unwrap_or_default();
        let combination = Some(
            fields
                .iter()
                .zip(&v)
                .map(|(f, x)| format!("{f} {x:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let (observed, assessment, short) = match trees.update_mass(&v) {
            // The log of the mass (half a vector at least: an empty region is not −∞).
            Some(m) => {
                let l = (m.max(0.5)).ln();
                let short = mass.short_baseline();
                (l, mass.update(l), short)
            }
            None => (f64::NAN, Assessment::QUIET, None),
        };
        Some(WindowReading {
            short,
            combination,
            ..WindowReading::plain(observed, assessment)
        })
    }

    /// `drift`: the window's histogram against the reference, if the window
    /// has values; never anomalous while the model is `relearning`.
    fn read_drift(&mut self, hists: &mut [Histogram], relearning: bool) -> Option<WindowReading> {
        let Some(h) = hists.get_mut(self.series).filter(|h| !h.is_empty()) else {
            return None; // No values in the window.
        };
        let Detector::Drift(d) = &mut self.detector else {
            unreachable!()
        };
        let mut a = d.update(std::mem::take(h));
        let m = d.last.unwrap_or_default();
        if relearning {
            a.anomalous = false;
        }
        Some(WindowReading {
            drift: Some((m.psi, m.ks)),
            ..WindowReading::plain(m.psi, a)
        })
    }

    /// `staleness`: a window with records (`count`) ends the gap; an empty
    /// one is judged on the gap so far, the window ending at `end`.
    fn read_staleness(&mut self, count: u64, end: i64) -> Option<WindowReading> {
        let Detector::Threshold(t) = self.detector else {
            unreachable!()
        };
        if count > 0 {
            self.last_seen_end = Some(end);
            return Some(WindowReading::plain(0.0, Assessment::QUIET));
        }
        // The gap so far: from the end of the last window with records.
        let gap = self.last_seen_end.map_or(0, |s| end - s) as f64;
        if self.firing && gap <= t {
            // Only windows with records show that data flows
            // again: a stream whose spacing is longer than the
            // threshold stays stale (one alert) instead of
            // firing and resolving at every record.
            return None;
        }
        let a = Assessment {
            score: crate::detect::squash(gap, t),
            anomalous: gap > t,
        };
        Some(WindowReading::plain(gap, a))
    }

    /// The expected range for a window's alert: the threshold of a drift
    /// or staleness rule; otherwise the recent windows' range, the observed
    /// value joining them (worked out only when `alerting`).
    fn window_expected(&mut self, observed: f64, alerting: bool) -> Option<(f64, f64)> {
        match (self.spec.kind, &self.detector) {
            (MonitorKind::Drift, _) => Some((0.0, self.spec.threshold.unwrap_or(0.2))),
            // A gap is compared with its threshold, not with earlier gaps.
            (MonitorKind::Staleness, Detector::Threshold(t)) => Some((0.0, *t)),
            _ => {
                if self.recent.len() >= self.spec.history.max(1) {
                    self.recent.pop_front();
                }
                self.recent.push_back(observed);
                alerting
                    .then(|| expected_range(self.recent.make_contiguous()))
                    .flatten()
            }
        }
    }
}

/// What the per-epoch and per-file rules read from one completed epoch
/// (from its [`EpochFacts`]).
struct EpochSignals<'a> {
    /// Records read in the epoch.
    input: u64,
    /// The share of them rejected.
    rejected: f64,
    /// The model's prequential `(score, label)` pairs, in record order.
    predictions: &'a [(f64, bool)],
    /// Every worker's records by arrival time (ms), in worker order.
    arrivals: Vec<(i64, u64)>,
    /// The latest event time seen so far.
    latest_ms: Option<i64>,
    /// Files that ended in the epoch: (name, bytes), in name order.
    files: Vec<(String, u64)>,
    /// Rows the sinks committed in the epoch.
    rows_committed: u64,
    /// Wall-clock time of the commit (ms).
    now_ms: i64,
    /// Source and sink errors and retries during the epoch.
    io_errors: u64,
    /// A restart to report, if the engine resumed before this epoch.
    restart: Option<String>,
}

impl EpochSignals<'_> {
    /// What `rule` finds in the epoch, updating its detector: nothing for
    /// a windowed rule or a signal the epoch lacks, one finding per file
    /// for `file_size`, at most one otherwise.
    fn findings(&self, rule: &mut Rule) -> Vec<Finding> {
        let threshold = match rule.detector {
            Detector::Threshold(t) => t,
            _ => f64::NAN,
        };
        let over = |x: f64| -> Finding {
            let a = Assessment {
                score: crate::detect::squash(x, threshold),
                anomalous: x > threshold,
            };
            (a, x, Some((0.0, threshold)), None)
        };
        match rule.spec.kind {
            MonitorKind::RejectedRate if self.input > 0 => vec![over(self.rejected)],
            MonitorKind::ErrorRate if !self.predictions.is_empty() => {
                self.worst_block(rule).into_iter().collect()
            }
            MonitorKind::Latency if !self.arrivals.is_empty() => {
                let p = rule.spec.percentile.unwrap_or(99.0);
                vec![over(
                    latency_percentiles(&self.arrivals, self.now_ms, &[p])[0],
                )]
            }
            MonitorKind::BatchSize if self.rows_committed > 0 => {
                let Detector::Spike(d) = &mut rule.detector else {
                    unreachable!()
                };
                let a = d.update((self.rows_committed as f64).ln());
                vec![(a, self.rows_committed as f64, None, None)]
            }
            MonitorKind::FileSize => {
                let Detector::Spike(d) = &mut rule.detector else {
                    unreachable!()
                };
                self.files
                    .iter()
                    .map(|(name, bytes)| {
                        let a = d.update((*bytes as f64 + 1.0).ln());
                        (a, *bytes as f64, None, Some(name.clone()))
                    })
                    .collect()
            }
            MonitorKind::Errors => vec![over(self.io_errors as f64)],
            MonitorKind::WatermarkStall if self.input > 0 => vec![over(self.stalled_ms(rule))],
            MonitorKind::Restart => {
                let fired = self.restart.is_some();
                let x = if fired { 1.0 } else { 0.0 };
                let a = Assessment {
                    score: x,
                    anomalous: fired,
                };
                vec![(a, x, None, self.restart.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// `error_rate`: the epoch's predictions through the rule's
    /// [`QualityDrift`]; the worst block that ended in the epoch, if one did.
    fn worst_block(&self, rule: &mut Rule) -> Option<Finding> {
        let Detector::Quality(q) = &mut rule.detector else {
            unreachable!()
        };
        let mut worst: Option<Finding> = None;
        for (score, label) in self.predictions {
            if let Some(a) = q.update(*score, *label) {
                let (auc, expected) = q.last.unwrap_or((f64::NAN, None));
                if worst.as_ref().is_none_or(|w| a.score >= w.0.score) {
                    worst = Some((a, auc, expected, None));
                }
            }
        }
        let block = rule.spec.block_records.unwrap_or(1000);
        worst.map(|(a, auc, expected, _)| {
            let detail = format!("ROC AUC of the last {block} labelled records");
            (a, auc, expected, Some(detail))
        })
    }

    /// `watermark_stall`, in an epoch with records: how long (ms) the
    /// watermark has not moved; a watermark past the one the rule last saw
    /// restarts the count now.
    fn stalled_ms(&self, rule: &mut Rule) -> f64 {
        let wm = self.latest_ms.unwrap_or(i64::MIN);
        if rule.last_seen_end.is_none_or(|seen| wm > seen) {
            rule.last_seen_end = Some(wm);
            rule.since_ms = Some(self.now_ms);
        }
        (self.now_ms - rule.since_ms.unwrap_or(self.now_ms)).max(0) as f64
    }
}

/// A window's `(count, sum, max)` of a series as one number.
fn aggregate(a: Aggregate, (n, sum, max): (u64, f64, f64)) -> f64 {
    match a {
        Aggregate::Mean => sum / n as f64,
        Aggregate::Sum => sum,
        Aggregate::Max => max,
        Aggregate::Count => n as f64,
    }
}

/// The kind's name in the topology.
pub fn kind_key(kind: MonitorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn kind_name(kind: MonitorKind) -> &'static str {
    match kind {
        MonitorKind::Volume => "volume anomaly",
        MonitorKind::Spike => "spike or dip",
        MonitorKind::ChangePoint => "change point",
        MonitorKind::Multivariate => "unusual combination",
        MonitorKind::Staleness => "stale data",
        MonitorKind::Drift => "distribution drift",
        MonitorKind::ErrorRate => "concept drift (the model ranks labels worse)",
        MonitorKind::RejectedRate => "rejected records",
        MonitorKind::Latency => "slow processing",
        MonitorKind::FileSize => "abnormal file size",
        MonitorKind::BatchSize => "abnormal batch size",
        MonitorKind::Restart => "engine restarted",
        MonitorKind::IdleSource => "no input",
        MonitorKind::WatermarkStall => "event time stalled",
        MonitorKind::Errors => "source or sink errors",
    }
}

/// Median ± 3 robust standard deviations of recent observations.
fn expected_range(recent: &[f64]) -> Option<(f64, f64)> {
    if recent.len() < 5 {
        return None;
    }
    let mut v = recent[..recent.len() - 1].to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let med = v[v.len() / 2];
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_unstable_by(f64::total_cmp);
    let mad = dev[dev.len() / 2] * 1.4826;
    Some((med - 3.0 * mad, med + 3.0 * mad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SchemaSpec;

    fn schema() -> Schema {
        let spec: SchemaSpec = serde_json::from_str(
            r#"{"key": "k", "event_time": {"field": "t"}, "numeric": [{"name": "amount"}]}"#,
        )
        .unwrap();
        Schema::new(&spec).unwrap()
    }

    fn specs(toml_text: &str) -> Vec<MonitorSpec> {
        #[derive(Deserialize)]
        struct M {
            monitors: Vec<MonitorSpec>,
        }
        toml::from_str::<M>(toml_text).unwrap().monitors
    }

    /// Feeds `counts[i]` records of amount `amounts[i]` in window i, one window per epoch.
    fn drive(m: &mut Monitors, watched: &Watched, counts: &[u64], amounts: &[f64]) -> Vec<Alert> {
        let mut out = Vec::new();
        for (i, (&n, &a)) in counts.iter().zip(amounts).enumerate() {
            let start = i as i64 * watched.window_ms;
            let mut p = WindowPartial::default();
            if n > 0 {
                p.windows
                    .insert(start, vec![(n, 0.0, 0.0), (n, a * n as f64, a)]);
            }
            let tally = LedgerCounts {
                input: n,
                clean: n,
                ..Default::default()
            };
            out.extend(m.epoch(EpochFacts {
                epoch: i as u64,
                partials: vec![p],
                tally,
                latest_ms: Some(start + watched.window_ms),
                ..Default::default()
            }));
        }
        out
    }

    #[test]
    fn multivariate_finds_a_window_unusual_only_in_its_combination() {
        let spec: SchemaSpec = serde_json::from_str(
            r#"{"key": "k", "event_time": {"field": "t"}, "numeric": [{"name": "amount"}, {"name": "f0"}]}"#,
        )
        .unwrap();
        let s = Schema::new(&spec).unwrap();
        let sp = specs(
            r#"
            [[monitors]]
            id = "joint"
            kind = "multivariate"
            fields = ["amount", "f0"]
            window_ms = 1000
            history = 30
            "#,
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut m = Monitors::new(&s, &sp, &watched, 0);
        let mut alerts = Vec::new();
        let mut u = 0.37f64;
        for i in 0..200u64 {
            // amount and f0 move together; window 150 breaks the link, each
            // value within its usual range.
            u = (u * 9301.0 + 49297.0) % 233280.0 / 233280.0 * 0.999 + 0.0005;
            let (a, f) = if i == 150 {
                (60.0, 0.05)
            } else {
                (50.0 + 10.0 * u, u)
            };
            let start = i as i64 * 1000;
            let mut p = WindowPartial::default();
            p.windows.insert(
                start,
                vec![(100, 0.0, 0.0), (100, a * 100.0, a), (100, f * 100.0, f)],
            );
            alerts.extend(m.epoch(EpochFacts {
                epoch: i,
                partials: vec![p],
                tally: LedgerCounts {
                    input: 100,
                    clean: 100,
                    ..Default::default()
                },
                latest_ms: Some(start + 1000),
                ..Default::default()
            }));
        }
        let fired: Vec<i64> = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| a.window_start_ms / 1000)
            .collect();
        assert_eq!(fired, vec![150], "{alerts:#?}");
        assert!(
            alerts[0].message.contains("amount 60.000, f0 0.050"),
            "{}",
            alerts[0].message
        );
        // Validation: fields are required, known and at least two; `field` is not the key.
        let bad = |t: &str| Watched::new(&s, &specs(t)).unwrap_err().path;
        assert_eq!(
            bad("[[monitors]]\nid = \"j\"\nkind = \"multivariate\"\n"),
            "monitors[0].fields"
        );
        assert_eq!(
            bad("[[monitors]]\nid = \"j\"\nkind = \"multivariate\"\nfields = [\"amount\", \"nope\"]\n"),
            "monitors[0].fields"
        );
        assert_eq!(
            bad("[[monitors]]\nid = \"j\"\nkind = \"spike\"\nfields = [\"amount\", \"f0\"]\n"),
            "monitors[0].fields"
        );
    }

    #[test]
    fn volume_spike_gap_and_level_shift_raise_and_resolve_alerts() {
        let s = schema();
        let sp = specs(
            r#"
            [[monitors]]
            id = "volume"
            kind = "volume"
            window_ms = 1000
            [[monitors]]
            id = "gap"
            kind = "staleness"
            window_ms = 1000
            threshold = 2500
            [[monitors]]
            id = "amount_level"
            kind = "change_point"
            field = "amount"
            window_ms = 1000
            "#,
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut m = Monitors::new(&s, &sp, &watched, 0);
        let mut counts = vec![1000u64; 200];
        let mut amounts: Vec<f64> = (0..200)
            .map(|i| 50.0 + ((i * 7919) % 13) as f64 * 0.1)
            .collect();
        counts[60] = 5000; // a volume spike
        for c in &mut counts[100..105] {
            *c = 0; // a five-window silent gap
        }
        for a in &mut amounts[150..] {
            *a += 10.0; // a level shift
        }
        let alerts = drive(&mut m, &watched, &counts, &amounts);
        let find = |id: &str, state: AlertState| {
            alerts
                .iter()
                .filter(|a| a.rule_id == id && a.state == state)
                .map(|a| a.epoch)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            find("volume", AlertState::Firing).first(),
            Some(&60),
            "{alerts:#?}"
        );
        assert!(find("volume", AlertState::Resolved)
            .iter()
            .any(|e| (61..70).contains(e)));
        let gap = find("gap", AlertState::Firing);
        assert!(
            gap.first().is_some_and(|e| (102..105).contains(e)),
            "{gap:?}"
        );
        assert!(find("gap", AlertState::Resolved)
            .iter()
            .any(|e| (105..112).contains(e)));
        let shift = find("amount_level", AlertState::Firing);
        assert!(shift.iter().any(|e| (150..160).contains(e)), "{shift:?}");
        // Deduplicated while firing: one firing per episode.
        assert!(
            find("volume", AlertState::Firing).len() <= 3,
            "{:?}",
            find("volume", AlertState::Firing)
        );
    }

    #[test]
    fn a_steady_stream_raises_nothing() {
        let s = schema();
        let sp = specs(
            r#"
            [[monitors]]
            id = "volume"
            kind = "volume"
            [[monitors]]
            id = "amount_spike"
            kind = "spike"
            field = "amount"
            [[monitors]]
            id = "gap"
            kind = "staleness"
            [[monitors]]
            id = "rejects"
            kind = "rejected_rate"
            "#,
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut m = Monitors::new(&s, &sp, &watched, 0);
        let counts: Vec<u64> = (0..300).map(|i| 1000 + ((i * 37) % 61) as u64).collect();
        let amounts: Vec<f64> = (0..300)
            .map(|i| 50.0 + ((i * 7919) % 13) as f64 * 0.1)
            .collect();
        assert!(drive(&mut m, &watched, &counts, &amounts).is_empty());
    }

    /// Sparse event time: records in a few windows with long runs of empty
    /// windows between them (up to a day of 10-second windows).
    fn sparse_epochs(seed: u64, epochs: usize, per_window: u64) -> Vec<(i64, u64, f64)> {
        let mut noise = crate::detect::testing::Noise::new(seed);
        let mut t = 0i64;
        (0..epochs)
            .map(|i| {
                let gap = match i % 7 {
                    0 => 1,
                    1 | 2 => 2 + (noise.normal().abs() * 3.0) as i64,
                    3 => 40 + (noise.normal().abs() * 30.0) as i64,
                    4 => 8_640 + (noise.normal().abs() * 1000.0) as i64,
                    _ => 1 + (noise.normal().abs() * 200.0) as i64,
                };
                t += gap * 10_000;
                let n = if i % 11 == 5 {
                    per_window * 6
                } else {
                    per_window + (noise.normal().abs() * per_window as f64 / 9.0) as u64
                };
                (t, n, 50.0 + noise.normal())
            })
            .collect()
    }

    fn drive_sparse(m: &mut Monitors, windows: &[(i64, u64, f64)]) -> Vec<Alert> {
        let mut out = Vec::new();
        for (i, &(start, n, a)) in windows.iter().enumerate() {
            let mut p = WindowPartial::default();
            p.windows
                .insert(start, vec![(n, 0.0, 0.0), (n, a * n as f64, a)]);
            out.extend(m.epoch(EpochFacts {
                epoch: i as u64,
                partials: vec![p],
                tally: LedgerCounts {
                    input: n,
                    clean: n,
                    ..Default::default()
                },
                latest_ms: Some(start + 10_000),
                ..Default::default()
            }));
        }
        out
    }

    #[test]
    fn empty_windows_in_closed_form_equal_window_by_window() {
        let s = schema();
        let sp = specs(
            r#"
            [[monitors]]
            id = "volume"
            kind = "volume"
            history = 12
            [[monitors]]
            id = "amount_spike"
            kind = "spike"
            field = "amount"
            [[monitors]]
            id = "gap"
            kind = "staleness"
            threshold = 30000
            [[monitors]]
            id = "long_gap"
            kind = "staleness"
            threshold = 3600000
            resolve_after = 5
            [[monitors]]
            id = "shift"
            kind = "change_point"
            field = "amount"
            "#,
        );
        let watched = Watched::new(&s, &sp).unwrap();
        // Dense windows (a 0 is a dip) and windows of a record or two (a 0 is not).
        for (seed, per_window) in [(1, 900), (2, 900), (3, 1), (4, 2), (5, 30)] {
            let windows = sparse_epochs(seed, 120, per_window);
            let mut fast = Monitors::new(&s, &sp, &watched, 0);
            let mut reference = fast.clone();
            reference.closed_form.off = true;
            // The reference closes ~150,000 empty windows one by one.
            let expected = drive_sparse(&mut reference, &windows);
            let got = drive_sparse(&mut fast, &windows);
            assert!(expected.len() > 10, "seed {seed}: the stream raises alerts");
            assert_eq!(got, expected, "seed {seed}");
            assert_eq!(fast, reference, "seed {seed}: same state");
        }
    }

    #[test]
    fn config_errors_name_the_rule() {
        let s = schema();
        let e = Watched::new(
            &s,
            &specs("[[monitors]]\nid = \"x\"\nkind = \"spike\"\nfield = \"nope\"\n"),
        )
        .unwrap_err();
        assert_eq!(e.path, "monitors[0].field");
        let e = Watched::new(&s, &specs("[[monitors]]\nid = \"x\"\nkind = \"volume\"\n[[monitors]]\nid = \"x\"\nkind = \"volume\"\n")).unwrap_err();
        assert_eq!(e.path, "monitors[1].id");
    }

    fn cat_schema() -> Schema {
        let spec: SchemaSpec = serde_json::from_str(
            r#"{"key": "k", "event_time": {"field": "t"}, "numeric": [{"name": "amount"}],
                "categorical": [{"name": "region", "vocabulary": ["north", "south"]}]}"#,
        )
        .unwrap();
        Schema::new(&spec).unwrap()
    }

    fn scored(t: i64, region: &str, arrived_ms: i64) -> Scored {
        Scored {
            record: crate::record::Record {
                pos: crate::record::Pos { input: 0, line: 0 },
                source: "f".into(),
                line_hash: 0,
                key: "k".into(),
                key_hash: 0,
                id: None,
                event_time: t,
                label: None,
                nums: vec![1.0],
                missing: 0,
                cats: vec![region.into()],
                arrived_ms,
            },
            score: 0.5,
            model_version: 1,
            shadow_score: None,
        }
    }

    #[test]
    fn volume_per_group_alerts_only_the_group_that_moved() {
        let s = cat_schema();
        let sp = specs(
            "[[monitors]]\nid = \"by_region\"\nkind = \"volume\"\ngroup_by = \"region\"\nwindow_ms = 1000\n",
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut m = Monitors::new(&s, &sp, &watched, 0);
        let mut alerts = Vec::new();
        for w in 0..60i64 {
            let mut p = WindowPartial::default();
            let south = if w == 40 { 10 } else { 100 + w % 7 };
            for i in 0..(100 + (w * 3) % 11) {
                p.add(&watched, &scored(w * 1000 + i, "north", 0));
            }
            for i in 0..south {
                p.add(&watched, &scored(w * 1000 + i, "south", 0));
            }
            alerts.extend(m.epoch(EpochFacts {
                epoch: w as u64,
                partials: vec![p],
                latest_ms: Some((w + 1) * 1000),
                ..Default::default()
            }));
        }
        let fired: Vec<_> = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .collect();
        assert_eq!(fired.len(), 1, "{alerts:#?}");
        assert_eq!(fired[0].group.as_deref(), Some("south"));
        assert_eq!(fired[0].epoch, 40);
        assert!(alerts
            .iter()
            .any(|a| a.state == AlertState::Resolved && a.group.as_deref() == Some("south")));
        let e = Watched::new(
            &s,
            &specs("[[monitors]]\nid = \"x\"\nkind = \"volume\"\ngroup_by = \"amount\"\n"),
        )
        .unwrap_err();
        assert_eq!(e.path, "monitors[0].group_by");
    }

    #[test]
    fn latency_file_size_batch_size_and_restart_rules() {
        let s = cat_schema();
        let sp = specs(
            r#"
            [[monitors]]
            id = "slow"
            kind = "latency"
            percentile = 50
            threshold = 5000
            [[monitors]]
            id = "files"
            kind = "file_size"
            [[monitors]]
            id = "batches"
            kind = "batch_size"
            [[monitors]]
            id = "restart"
            kind = "restart"
            resolve_after = 2
            "#,
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut m = Monitors::new(&s, &sp, &watched, 0);
        m.restarted("killed".into());
        let mut all = Vec::new();
        for e in 0..40u64 {
            let mut p = WindowPartial::default();
            let now = 1_000_000 + e as i64 * 1000;
            // Epoch 20: most records arrived 10 s before their commit; otherwise 1 s.
            let lag = if e == 20 { 10_000 } else { 1_000 };
            for i in 0..100 {
                p.add(&watched, &scored(i, "north", now - lag));
            }
            let size = if e == 30 {
                40_000_000
            } else {
                1_000_000 + e * 1000
            };
            let rows = if e == 35 { 20 } else { 10_000 + e };
            all.extend(m.epoch(EpochFacts {
                epoch: e,
                partials: vec![p],
                latest_ms: Some(100),
                files: vec![(format!("f{e}.csv"), size)],
                rows_committed: rows,
                now_ms: now,
                ..Default::default()
            }));
        }
        let firing = |id: &str| {
            all.iter()
                .filter(|a| a.rule_id == id && a.state == AlertState::Firing)
                .map(|a| (a.epoch, a.group.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(firing("slow"), vec![(20, None)], "{all:#?}");
        assert_eq!(firing("files"), vec![(30, Some("f30.csv".to_string()))]);
        assert_eq!(firing("batches"), vec![(35, None)]);
        assert_eq!(firing("restart"), vec![(0, None)]);
        assert!(all
            .iter()
            .any(|a| a.rule_id == "restart" && a.state == AlertState::Resolved && a.epoch == 2));
        assert!(all
            .iter()
            .find(|a| a.rule_id == "restart")
            .unwrap()
            .message
            .contains("killed"));
        assert_eq!(
            latency_percentiles(&[(0, 98), (-5000, 2)], 1000, &[50.0, 99.0]),
            vec![1000.0, 6000.0]
        );
    }

    #[test]
    fn errors_watermark_stall_and_idle_partitions() {
        let s = cat_schema();
        let sp = specs(
            r#"
            [[monitors]]
            id = "errors"
            kind = "errors"
            resolve_after = 1
            [[monitors]]
            id = "stall"
            kind = "watermark_stall"
            threshold = 5000
            resolve_after = 1
            [[monitors]]
            id = "idle"
            kind = "idle_source"
            group_by = "partition"
            threshold = 3000
            resolve_after = 1
            "#,
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut m = Monitors::new(&s, &sp, &watched, 0);
        let tally = LedgerCounts {
            input: 100,
            clean: 100,
            ..Default::default()
        };
        let mut all = Vec::new();
        for e in 0..20u64 {
            let now = 1_000_000 + e as i64 * 1000;
            // Event time moves until epoch 8, then stays while records keep coming; errors in epoch 3.
            let latest = 50_000 + e.min(8) as i64 * 1000;
            all.extend(m.epoch(EpochFacts {
                epoch: e,
                tally,
                latest_ms: Some(latest),
                now_ms: now,
                io_errors: if e == 3 { 7 } else { 0 },
                ..Default::default()
            }));
        }
        let fired = |id: &str| {
            all.iter()
                .filter(|a| a.rule_id == id && a.state == AlertState::Firing)
                .map(|a| a.epoch)
                .collect::<Vec<_>>()
        };
        assert_eq!(fired("errors"), vec![3]);
        assert!(all
            .iter()
            .any(|a| a.rule_id == "errors" && a.state == AlertState::Resolved && a.epoch == 4));
        assert_eq!(
            fired("stall"),
            vec![14],
            "stalled since epoch 8 (t = 1,008,000), > 5 s at 1,014,000"
        );
        // Idle: partition p1 keeps moving, p0 stops; only p0 fires.
        m.saw_input(0);
        m.saw_partition("t/0", 0);
        m.saw_partition("t/1", 0);
        let mut idle = Vec::new();
        for k in 1..=10 {
            let now = k * 1000;
            m.saw_input(now);
            m.saw_partition("t/1", now);
            idle.extend(m.idle_check(now, 0));
        }
        let groups: Vec<_> = idle
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| a.group.clone())
            .collect();
        assert_eq!(groups, vec![Some("t/0".to_string())], "{idle:#?}");
        let e = Watched::new(
            &s,
            &specs("[[monitors]]\nid = \"x\"\nkind = \"idle_source\"\ngroup_by = \"region\"\n"),
        )
        .unwrap_err();
        assert_eq!(e.path, "monitors[0].group_by");
    }

    #[test]
    fn partials_merge_in_worker_order_and_late_ones_for_closed_windows_drop() {
        let s = schema();
        let sp = specs(
            "[[monitors]]\nid = \"v\"\nkind = \"volume\"\nwindow_ms = 1000\n\
             [[monitors]]\nid = \"d\"\nkind = \"drift\"\nfield = \"amount\"\nwindow_ms = 1000\n",
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut m = Monitors::new(&s, &sp, &watched, 0);
        let partial = |worker: usize, start: i64, n: u64, max: f64, arrived: i64| WindowPartial {
            worker,
            windows: BTreeMap::from([(start, vec![(n, n as f64, max)])]),
            hists: BTreeMap::from([(start, vec![Histogram::from([(1, n)])])]),
            arrivals: vec![(arrived, n)],
        };
        let arrivals = m.merge_partials(vec![
            partial(2, 0, 3, 9.0, 30),
            partial(0, 0, 1, 2.0, 10),
            partial(1, 1000, 5, 1.0, 20),
        ]);
        assert_eq!(arrivals, [(10, 1), (20, 5), (30, 3)], "in worker order");
        assert_eq!(m.open[&0], [(4, 4.0, 9.0)]);
        assert_eq!(m.open[&1000], [(5, 5.0, 1.0)]);
        assert_eq!(m.open_hists[&0], [Histogram::from([(1, 4)])]);
        m.closed_until = Some(1000);
        m.open.remove(&0);
        m.merge_partials(vec![partial(0, 0, 7, 7.0, 0), partial(1, 1000, 1, 8.0, 0)]);
        assert!(
            !m.open.contains_key(&0),
            "late for a closed window: dropped"
        );
        assert_eq!(m.open[&1000], [(6, 6.0, 8.0)]);
        assert_eq!(m.open_hists[&1000], [Histogram::from([(1, 6)])]);
    }

    #[test]
    fn epoch_signals_are_what_each_per_epoch_rule_finds() {
        let s = schema();
        let sp = specs(
            "[[monitors]]\nid = \"rej\"\nkind = \"rejected_rate\"\n\
             [[monitors]]\nid = \"io\"\nkind = \"errors\"\nthreshold = 2\n\
             [[monitors]]\nid = \"re\"\nkind = \"restart\"\n\
             [[monitors]]\nid = \"stall\"\nkind = \"watermark_stall\"\nthreshold = 100\n\
             [[monitors]]\nid = \"files\"\nkind = \"file_size\"\n\
             [[monitors]]\nid = \"rows\"\nkind = \"batch_size\"\n\
             [[monitors]]\nid = \"lat\"\nkind = \"latency\"\npercentile = 50\n\
             [[monitors]]\nid = \"vol\"\nkind = \"volume\"\n",
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut rules: Vec<Rule> = sp
            .iter()
            .flat_map(|m| Rule::instances(m, &s, &watched))
            .collect();
        let mut signals = EpochSignals {
            input: 10,
            rejected: 0.3,
            predictions: &[],
            arrivals: vec![(900, 1), (500, 3)],
            latest_ms: Some(5_000),
            files: vec![("a.csv".into(), 99), ("b.csv".into(), 0)],
            rows_committed: 0,
            now_ms: 1_000,
            io_errors: 3,
            restart: Some("crashed".into()),
        };
        let mut find = |signals: &EpochSignals, k: usize| signals.findings(&mut rules[k]);
        let rej = find(&signals, 0);
        assert_eq!(
            (rej[0].1, rej[0].2, rej[0].0.anomalous),
            (0.3, Some((0.0, 0.05)), true)
        );
        let io = find(&signals, 1);
        assert_eq!((io[0].1, io[0].0.anomalous), (3.0, true));
        let re = find(&signals, 2);
        assert_eq!((re[0].1, re[0].3.as_deref()), (1.0, Some("crashed")));
        assert_eq!(
            find(&signals, 3)[0].1,
            0.0,
            "the watermark moved: the count starts"
        );
        signals.now_ms = 1_250;
        assert_eq!(find(&signals, 3)[0].1, 250.0, "stalled since 1,000");
        signals.latest_ms = Some(6_000);
        assert_eq!(find(&signals, 3)[0].1, 0.0, "moved again");
        let files = find(&signals, 4);
        let named: Vec<_> = files.iter().map(|f| (f.1, f.3.clone().unwrap())).collect();
        assert_eq!(named, [(99.0, "a.csv".into()), (0.0, "b.csv".into())]);
        assert!(
            find(&signals, 5).is_empty(),
            "no rows committed: nothing to judge"
        );
        assert_eq!(
            find(&signals, 6)[0].1,
            750.0,
            "the median of 1,250 - arrival"
        );
        assert!(find(&signals, 7).is_empty(), "volume is judged per window");
        signals.input = 0;
        signals.restart = None;
        assert!(find(&signals, 0).is_empty(), "no input: no rate");
        assert!(
            find(&signals, 3).is_empty(),
            "no records: no stall to measure"
        );
        assert_eq!(find(&signals, 2)[0].0, Assessment::QUIET);
    }

    #[test]
    fn window_readings_say_only_what_an_alert_needs() {
        let quiet = WindowReading::plain(1.0, Assessment::QUIET);
        assert_eq!(quiet.detail(true, true, 30), None);
        let drift = WindowReading {
            drift: Some((0.25, 0.5)),
            ..WindowReading::plain(0.25, Assessment::QUIET)
        };
        assert_eq!(
            drift.detail(true, false, 30).as_deref(),
            Some("PSI 0.250, KS 0.500")
        );
        let spike = || WindowReading {
            short: Some(4),
            direction: Some(-1),
            ..WindowReading::plain(0.0, Assessment::QUIET)
        };
        assert_eq!(
            spike().detail(true, true, 30).as_deref(),
            Some("a fall; baseline: 4 windows")
        );
        assert_eq!(
            spike().detail(true, false, 30),
            None,
            "a resolution says nothing"
        );
        let multi = WindowReading {
            combination: Some("amount 1.000, f0 2.000".into()),
            ..WindowReading::plain(0.0, Assessment::QUIET)
        };
        assert_eq!(
            multi.detail(true, true, 12).as_deref(),
            Some("amount 1.000, f0 2.000; log-mass among the last 12 windows")
        );
    }

    #[test]
    fn staleness_readings_end_the_gap_with_records() {
        let s = schema();
        let sp = specs(
            "[[monitors]]\nid = \"st\"\nkind = \"staleness\"\nthreshold = 2500\nwindow_ms = 1000\n",
        );
        let watched = Watched::new(&s, &sp).unwrap();
        let mut rule = Rule::instances(&sp[0], &s, &watched).remove(0);
        let r = rule.read_staleness(4, 1000).unwrap();
        assert_eq!((r.observed, rule.last_seen_end), (0.0, Some(1000)));
        let r = rule.read_staleness(0, 3000).unwrap();
        assert_eq!((r.observed, r.assessment.anomalous), (2000.0, false));
        let r = rule.read_staleness(0, 4000).unwrap();
        assert_eq!((r.observed, r.assessment.anomalous), (3000.0, true));
        rule.firing = true;
        assert!(
            rule.read_staleness(0, 3000).is_none(),
            "firing: only records end it"
        );
        assert_eq!(rule.window_expected(5.0, true), Some((0.0, 2500.0)));
    }

    #[test]
    fn each_kind_gets_its_detector_and_default_threshold() {
        let sp = specs(
            "[[monitors]]\nid = \"a\"\nkind = \"staleness\"\nwindow_ms = 2000\n\
             [[monitors]]\nid = \"b\"\nkind = \"idle_source\"\n\
             [[monitors]]\nid = \"c\"\nkind = \"latency\"\nthreshold = 5\n\
             [[monitors]]\nid = \"d\"\nkind = \"spike\"\nfield = \"amount\"\n",
        );
        let thresholds: Vec<Option<f64>> = sp
            .iter()
            .map(|m| match Detector::for_spec(m) {
                Detector::Threshold(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(thresholds, [Some(6000.0), Some(300_000.0), Some(5.0), None]);
        assert!(matches!(Detector::for_spec(&sp[3]), Detector::Spike(_)));
    }
}

//! Monitors: windowed anomaly rules over the data, the model and the pipeline.
//!
//! Two halves. On every worker, `score` reduces the scored records of an
//! epoch to per-event-time-window aggregates (count, sum, max) of the
//! monitored fields with [`WindowPartial::add`] — one small message per epoch
//! and worker, never one per record, and no copy of the records. On the coordinator, [`Monitors`] merges
//! them (in worker order, so sums are deterministic), closes a window once
//! the watermark (latest event time seen minus `allowed_lateness_ms`) has
//! passed its end, feeds the closed windows in event-time order to each rule's
//! detector (an empty window counts as zero records, so a silent gap is seen),
//! and turns detections into [`Alert`]s with a lifecycle: `firing` once, then
//! nothing while it keeps firing, then `resolved` after `resolve_after`
//! windows without a detection. Per-epoch signals (rejected rate, model error
//! stream) are fed as epochs complete. All of it is serializable: the
//! coordinator checkpoints it with the epoch.
//!
//! | `kind` | series | detector |
//! |---|---|---|
//! | `volume` | records per window | [`SpikeDip`] on the count (spikes and drops) |
//! | `spike` | `aggregate` of `field` per window | [`SpikeDip`] |
//! | `change_point` | `aggregate` of `field` per window | [`PageHinkley`] |
//! | `staleness` | event-time gap between consecutive non-empty windows | fires when the gap exceeds `threshold` ms |
//! | `drift` | `aggregate` of `field` per window (e.g. mean score) | [`DriftMonitor`] (PSI and KS) over window values |
//! | `error_rate` | the model's 0/1 prequential errors, record by record | [`Adwin`], fires when the error rate rises |
//! | `rejected_rate` | share of rejected lines per epoch | fires above `threshold` |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::adwin::Adwin;
use crate::detect::change_point::PageHinkley;
use crate::detect::drift::DriftMonitor;
use crate::detect::spike::{Direction, SpikeDip};
use crate::detect::Assessment;
use crate::ledger::LedgerCounts;
use crate::record::Scored;
use crate::schema::{Schema, SchemaError};
use crate::Epoch;

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
    /// How a window's values become one number.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Event-time window length.
    #[serde(default = "default_window")]
    pub window_ms: i64,
    /// The detector's threshold: robust z for `volume`/`spike`, λ (in standard
    /// deviations) for `change_point`, PSI for `drift`, gap ms for `staleness`,
    /// rejected share for `rejected_rate`; unused by `error_rate`.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Windows (or epochs) of history a detector compares against.
    #[serde(default = "default_history")]
    pub history: usize,
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
    /// No records for longer than the threshold (event time).
    Staleness,
    /// The distribution of a window aggregate shifts from its reference.
    Drift,
    /// The model's prequential error rate rises.
    ErrorRate,
    /// The share of rejected lines in an epoch exceeds the threshold.
    RejectedRate,
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
    /// Window start (ms) → per monitored series: (count, sum, max). Series 0 is the record count.
    pub windows: BTreeMap<i64, Vec<(u64, f64, f64)>>,
}

/// What the monitored series are: the fields the value monitors read.
#[derive(Clone, Debug, PartialEq)]
pub struct Watched {
    /// Window length shared by all value monitors (the smallest declared).
    pub window_ms: i64,
    /// Per series: `None` = the model score, `Some(i)` = numeric field `i`.
    pub series: Vec<Option<usize>>,
}

impl Watched {
    /// The series a set of monitors needs.
    pub fn new(schema: &Schema, specs: &[MonitorSpec]) -> Result<Watched, SchemaError> {
        let mut series = Vec::new();
        let mut window_ms = i64::MAX;
        let mut ids = BTreeMap::new();
        for (i, m) in specs.iter().enumerate() {
            let path = format!("monitors[{i}]");
            let e = |key: &str, message: String| SchemaError {
                path: format!("{path}.{key}"),
                message,
            };
            if m.id.is_empty()
                || !m
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(e("id", "expected a lower_snake_case rule id".into()));
            }
            if let Some(first) = ids.insert(m.id.clone(), i) {
                return Err(e(
                    "id",
                    format!("rule `{}` is already defined by monitors[{first}]", m.id),
                ));
            }
            if m.window_ms <= 0 {
                return Err(e("window_ms", "expected a positive window".into()));
            }
            let needs_field = matches!(
                m.kind,
                MonitorKind::Spike | MonitorKind::ChangePoint | MonitorKind::Drift
            );
            match (&m.field, needs_field) {
                (None, true) => {
                    return Err(e(
                        "field",
                        "expected the field to watch (a numeric field, or `score`)".into(),
                    ))
                }
                (Some(f), true) => {
                    let s = if f == "score" {
                        None
                    } else {
                        Some(schema.numeric_index(f).ok_or_else(|| {
                            e(
                                "field",
                                format!("`{f}` is not a numeric field of the schema, nor `score`"),
                            )
                        })?)
                    };
                    if !series.contains(&s) {
                        series.push(s);
                    }
                }
                (Some(_), false) => {
                    return Err(e(
                        "field",
                        format!("`{:?}` monitors read no field", m.kind).to_lowercase(),
                    ))
                }
                (None, false) => {}
            }
            if !matches!(m.kind, MonitorKind::ErrorRate | MonitorKind::RejectedRate) {
                window_ms = window_ms.min(m.window_ms);
            }
        }
        Ok(Watched {
            window_ms: if window_ms == i64::MAX {
                default_window()
            } else {
                window_ms
            },
            series,
        })
    }

    fn index(&self, field: &Option<String>, schema: &Schema) -> usize {
        let s = match field.as_deref() {
            Some("score") | None => None,
            Some(f) => schema.numeric_index(f),
        };
        1 + self
            .series
            .iter()
            .position(|x| *x == s)
            .expect("validated by Watched::new")
    }
}

impl WindowPartial {
    /// Adds one scored record to its event-time window (the per-worker half, called by `score`).
    #[inline]
    pub fn add(&mut self, watched: &Watched, s: &Scored) {
        let width = watched.series.len() + 1;
        let start = s.record.event_time.div_euclid(watched.window_ms) * watched.window_ms;
        let w = self
            .windows
            .entry(start)
            .or_insert_with(|| vec![(0, 0.0, f64::NEG_INFINITY); width]);
        w[0].0 += 1;
        for (k, series) in watched.series.iter().enumerate() {
            let v = match series {
                None => s.score,
                Some(i) => s.record.nums[*i],
            };
            let slot = &mut w[k + 1];
            slot.0 += 1;
            slot.1 += v;
            slot.2 = slot.2.max(v);
        }
    }
}

/// A rule's detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Detector {
    Spike(SpikeDip),
    Change(PageHinkley),
    Drift(DriftMonitor),
    Adwin(Adwin),
    Threshold(f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Rule {
    spec: MonitorSpec,
    series: usize,
    detector: Detector,
    firing: bool,
    quiet: u32,
    /// Last non-empty window end (staleness).
    last_seen_end: Option<i64>,
    recent: Vec<f64>,
}

/// The coordinator's half: rules, open windows, watermark. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Monitors {
    window_ms: i64,
    allowed_lateness_ms: i64,
    rules: Vec<Rule>,
    open: BTreeMap<i64, Vec<(u64, f64, f64)>>,
    /// Windows before this start are closed.
    closed_until: Option<i64>,
    watermark: i64,
    width: usize,
}

impl Monitors {
    /// Rules for `specs` over the `watched` series.
    pub fn new(
        schema: &Schema,
        specs: &[MonitorSpec],
        watched: &Watched,
        allowed_lateness_ms: i64,
    ) -> Monitors {
        let rules = specs
            .iter()
            .map(|m| {
                let threshold = m.threshold;
                let detector = match m.kind {
                    MonitorKind::Volume => Detector::Spike(SpikeDip::new(
                        m.history,
                        threshold.unwrap_or(6.0),
                        Direction::Both,
                    )),
                    MonitorKind::Spike => Detector::Spike(SpikeDip::new(
                        m.history,
                        threshold.unwrap_or(6.0),
                        Direction::Both,
                    )),
                    MonitorKind::ChangePoint => Detector::Change(PageHinkley::new(
                        0.5,
                        threshold.unwrap_or(25.0),
                        m.history as u64,
                    )),
                    MonitorKind::Drift => Detector::Drift(DriftMonitor::new(
                        m.history,
                        m.history,
                        (m.history as u64 / 4).max(1),
                        threshold.unwrap_or(0.25),
                        1e-3,
                    )),
                    MonitorKind::ErrorRate => Detector::Adwin(Adwin::new(0.002, 256, 10_000)),
                    MonitorKind::Staleness => {
                        Detector::Threshold(threshold.unwrap_or(3.0 * m.window_ms as f64))
                    }
                    MonitorKind::RejectedRate => Detector::Threshold(threshold.unwrap_or(0.05)),
                };
                let series = match m.kind {
                    MonitorKind::Spike | MonitorKind::ChangePoint | MonitorKind::Drift => {
                        watched.index(&m.field, schema)
                    }
                    _ => 0,
                };
                Rule {
                    spec: m.clone(),
                    series,
                    detector,
                    firing: false,
                    quiet: 0,
                    last_seen_end: None,
                    recent: Vec::new(),
                }
            })
            .collect();
        Monitors {
            window_ms: watched.window_ms,
            allowed_lateness_ms,
            rules,
            open: BTreeMap::new(),
            closed_until: None,
            watermark: i64::MIN,
            width: watched.series.len() + 1,
        }
    }

    /// Feeds one completed epoch: its window partials (any worker order), its
    /// ledger, the model's errors in record order, and the latest event time.
    pub fn epoch(
        &mut self,
        epoch: Epoch,
        mut partials: Vec<WindowPartial>,
        tally: &LedgerCounts,
        errors: &[bool],
        latest_ms: Option<i64>,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        partials.sort_by_key(|p| p.worker);
        for p in partials {
            for (start, w) in p.windows {
                if self.closed_until.is_some_and(|c| start < c) {
                    continue; // Late for a closed window: already judged.
                }
                let slot = self
                    .open
                    .entry(start)
                    .or_insert_with(|| vec![(0, 0.0, f64::NEG_INFINITY); self.width]);
                for (a, b) in slot.iter_mut().zip(w) {
                    a.0 += b.0;
                    a.1 += b.1;
                    a.2 = a.2.max(b.2);
                }
            }
        }
        if let Some(t) = latest_ms {
            self.watermark = self.watermark.max(t - self.allowed_lateness_ms);
        }
        // Close every window that ends at or before the watermark, filling gaps with empty windows.
        loop {
            let next = match (self.closed_until, self.open.keys().next()) {
                (Some(c), _) => c,
                (None, Some(&first)) => first,
                (None, None) => break,
            };
            if next + self.window_ms > self.watermark {
                break;
            }
            let w = self
                .open
                .remove(&next)
                .unwrap_or_else(|| vec![(0, 0.0, f64::NEG_INFINITY); self.width]);
            self.closed_until = Some(next + self.window_ms);
            self.close_window(epoch, next, &w, &mut alerts);
        }
        // Per-epoch rules.
        let rejected = tally.rejected_total() as f64 / tally.input.max(1) as f64;
        let at = latest_ms.unwrap_or(0);
        for i in 0..self.rules.len() {
            let kind = self.rules[i].spec.kind;
            let found = match kind {
                MonitorKind::RejectedRate if tally.input > 0 => {
                    let Detector::Threshold(t) = self.rules[i].detector else {
                        unreachable!()
                    };
                    Some((
                        Assessment {
                            score: crate::detect::squash(rejected, t),
                            anomalous: rejected > t,
                        },
                        rejected,
                        Some((0.0, t)),
                    ))
                }
                MonitorKind::ErrorRate if !errors.is_empty() => {
                    let Detector::Adwin(a) = &mut self.rules[i].detector else {
                        unreachable!()
                    };
                    let mut worst = Assessment::QUIET;
                    for e in errors {
                        let r = a.update(f64::from(*e));
                        // Only a rise in the error rate, by at least a tenth, is degradation
                        // (small swings while the model is still learning are not).
                        if r.anomalous
                            && a.last_change
                                .is_some_and(|(before, after)| after > before * 1.1)
                            && r.score > worst.score
                        {
                            worst = r;
                        }
                    }
                    let expected = a.last_change.map(|(before, _)| (0.0, before));
                    Some((worst, a.mean(), expected))
                }
                _ => None,
            };
            if let Some((assessment, observed, expected)) = found {
                self.lifecycle(
                    i,
                    epoch,
                    at,
                    at,
                    assessment,
                    observed,
                    expected,
                    &mut alerts,
                );
            }
        }
        alerts
    }

    fn close_window(
        &mut self,
        epoch: Epoch,
        start: i64,
        w: &[(u64, f64, f64)],
        alerts: &mut Vec<Alert>,
    ) {
        let end = start + self.window_ms;
        for i in 0..self.rules.len() {
            let rule = &mut self.rules[i];
            let count = w[0].0;
            let (observed, assessment) = match rule.spec.kind {
                MonitorKind::Volume => {
                    let Detector::Spike(d) = &mut rule.detector else {
                        unreachable!()
                    };
                    (count as f64, d.update(count as f64))
                }
                MonitorKind::Spike | MonitorKind::ChangePoint | MonitorKind::Drift => {
                    let (n, sum, max) = w[rule.series];
                    if n == 0 {
                        continue; // No values: nothing to say about their level.
                    }
                    let v = match rule.spec.aggregate {
                        Aggregate::Mean => sum / n as f64,
                        Aggregate::Sum => sum,
                        Aggregate::Max => max,
                        Aggregate::Count => n as f64,
                    };
                    let a = match &mut rule.detector {
                        Detector::Spike(d) => d.update(v),
                        Detector::Change(d) => d.update(v),
                        Detector::Drift(d) => d.update(v),
                        _ => unreachable!(),
                    };
                    (v, a)
                }
                MonitorKind::Staleness => {
                    let Detector::Threshold(t) = rule.detector else {
                        unreachable!()
                    };
                    if count == 0 {
                        // The gap so far: from the end of the last window with records.
                        let gap = rule.last_seen_end.map_or(0, |s| end - s) as f64;
                        (
                            gap,
                            Assessment {
                                score: crate::detect::squash(gap, t),
                                anomalous: gap > t,
                            },
                        )
                    } else {
                        rule.last_seen_end = Some(end);
                        (0.0, Assessment::QUIET)
                    }
                }
                MonitorKind::ErrorRate | MonitorKind::RejectedRate => continue,
            };
            rule.recent.push(observed);
            if rule.recent.len() > rule.spec.history {
                rule.recent.remove(0);
            }
            let expected = expected_range(&rule.recent);
            self.lifecycle(i, epoch, start, end, assessment, observed, expected, alerts);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn lifecycle(
        &mut self,
        i: usize,
        epoch: Epoch,
        start: i64,
        end: i64,
        a: Assessment,
        observed: f64,
        expected: Option<(f64, f64)>,
        alerts: &mut Vec<Alert>,
    ) {
        let rule = &mut self.rules[i];
        let spec = &rule.spec;
        let make = |state: AlertState, message: String| Alert {
            rule_id: spec.id.clone(),
            kind: spec.kind,
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
        if a.anomalous {
            rule.quiet = 0;
            if !rule.firing {
                rule.firing = true;
                let range = expected.map_or(String::new(), |(lo, hi)| {
                    format!(", expected about {lo:.3}..{hi:.3}")
                });
                alerts.push(make(
                    AlertState::Firing,
                    format!(
                        "{} `{}`: observed {observed:.3}{range}",
                        kind_name(spec.kind),
                        spec.id
                    ),
                ));
            }
        } else if rule.firing {
            rule.quiet += 1;
            if rule.quiet >= spec.resolve_after {
                rule.firing = false;
                rule.quiet = 0;
                alerts.push(make(
                    AlertState::Resolved,
                    format!(
                        "{} `{}` is back to normal (observed {observed:.3})",
                        kind_name(spec.kind),
                        spec.id
                    ),
                ));
            }
        }
    }

    /// Rules currently firing.
    pub fn firing(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|r| r.firing)
            .map(|r| r.spec.id.as_str())
            .collect()
    }
}

fn kind_name(kind: MonitorKind) -> &'static str {
    match kind {
        MonitorKind::Volume => "volume anomaly",
        MonitorKind::Spike => "spike or dip",
        MonitorKind::ChangePoint => "change point",
        MonitorKind::Staleness => "stale data",
        MonitorKind::Drift => "distribution drift",
        MonitorKind::ErrorRate => "model error rising",
        MonitorKind::RejectedRate => "rejected records",
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
            let mut p = WindowPartial {
                worker: 0,
                windows: BTreeMap::new(),
            };
            if n > 0 {
                p.windows
                    .insert(start, vec![(n, 0.0, 0.0), (n, a * n as f64, a)]);
            }
            let tally = LedgerCounts {
                input: n,
                clean: n,
                ..Default::default()
            };
            out.extend(m.epoch(
                i as u64,
                vec![p],
                &tally,
                &[],
                Some(start + watched.window_ms),
            ));
        }
        out
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
}

//! `report`: one self-contained HTML page about a lake — what the pipeline
//! took in and rejected, what the model predicted and how its quality moved,
//! which alerts fired — with server-side SVG charts (no script, no network:
//! the file opens anywhere, and the live view serves the same page).
//!
//! It reads the lake's tables (`metrics`, `scored`, `rejected`, `alerts`)
//! with the Parquet reader; every chart is computed from them:
//!
//! | chart | from |
//! |---|---|
//! | records per minute (event time) | `scored` and `rejected` event times |
//! | ledger per epoch: clean / rejected / duplicate | `metrics` |
//! | rejected records by reason | `metrics` `rejected_<reason>` |
//! | prequential accuracy, log loss and AUC per epoch, model versions marked | `metrics` and `scored.model_version` |
//! | score distribution, latest windows against the earliest, with PSI and KS | `scored` |
//! | alerts on a timeline, firing and resolved | `alerts` |
//! | end-to-end latency p50 / p99 per epoch | `metrics` |
//! | top keys by volume | `scored` |

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use millrace_operators::detect::drift::{hist_measures, Binning, Histogram};
use millrace_operators::record::Reason;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::svg::{self, esc, Series, XAxis};

/// One epoch's row of the `metrics` table (what the report uses).
#[derive(Clone, Debug, Default)]
pub struct EpochRow {
    /// The epoch.
    pub epoch: u64,
    /// Latest event time (ms).
    pub time_ms: i64,
    /// Ledger.
    pub input: u64,
    /// Clean lines.
    pub clean: u64,
    /// Rejected lines.
    pub rejected: u64,
    /// Duplicates dropped.
    pub duplicate: u64,
    /// Rejected per reason code.
    pub reasons: Vec<(String, u64)>,
    /// Labelled records.
    pub labelled: u64,
    /// Prequential metrics of the epoch.
    pub accuracy: f64,
    /// Mean log loss.
    pub log_loss: f64,
    /// Exact AUC.
    pub auc: f64,
    /// Latency percentiles (ms).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Lines of the delayed-label source that became labels.
    pub labels: u64,
    /// Delayed labels: learned, expired predictions, orphaned labels, predictions waiting.
    pub late: [u64; 4],
    /// The challenger's accuracy, log loss and AUC (NaN without one).
    pub challenger: [f64; 3],
}

/// An alert row.
#[derive(Clone, Debug)]
pub struct AlertRow {
    /// Rule (and group).
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// Window start (ms).
    pub start_ms: i64,
    /// Window end (ms).
    pub end_ms: i64,
    /// The message.
    pub message: String,
    /// Severity.
    pub severity: String,
}

/// Everything the page shows, read from a lake.
#[derive(Clone, Debug, Default)]
pub struct ReportData {
    /// The lake.
    pub lake: PathBuf,
    /// Per epoch, in epoch order.
    pub epochs: Vec<EpochRow>,
    /// Scored records: (event time, score, model version, epoch).
    pub scores: Vec<(i64, f64, u64, u64)>,
    /// Records by key.
    pub keys: BTreeMap<String, u64>,
    /// Rejected lines' event times (where known).
    pub rejected_times: Vec<i64>,
    /// Alerts, in epoch order.
    pub alerts: Vec<AlertRow>,
}

/// The Parquet files of the table at `dir` (a folder or an object-store
/// prefix) that hold its rows, each once (compactions honoured).
fn files(dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    crate::connectors::compaction::live_parts(dir).map_err(|error| ReportError::Io {
        file: dir.to_path_buf(),
        error,
    })
}

/// A lake the report cannot be made from, or a page it cannot write.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{}: {error}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A table's part is not Parquet the report can read.
    #[error("{}: {error}", file.display())]
    Parquet {
        /// The part.
        file: PathBuf,
        /// What the reader said.
        error: parquet::errors::ParquetError,
    },
    /// A row group of a part could not be decoded.
    #[error("{}: {error}", file.display())]
    Arrow {
        /// The part.
        file: PathBuf,
        /// What the decoder said.
        error: arrow::error::ArrowError,
    },
}

fn batches(lake: &Path, table: &str) -> Result<Vec<RecordBatch>, ReportError> {
    let mut out = Vec::new();
    for f in files(&lake.join(table))? {
        let io = |error| ReportError::Io {
            file: f.clone(),
            error,
        };
        let parquet = |error| ReportError::Parquet {
            file: f.clone(),
            error,
        };
        let reader = if crate::core::storage::is_remote(&f) {
            let bytes = crate::core::storage::read(&f).map_err(io)?;
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .and_then(|b| b.build())
                .map_err(parquet)?
        } else {
            let file = File::open(&f).map_err(io)?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(parquet)?
        };
        for b in reader {
            out.push(b.map_err(|error| ReportError::Arrow {
                file: f.clone(),
                error,
            })?);
        }
    }
    Ok(out)
}

fn u64s(b: &RecordBatch, name: &str) -> Option<Vec<u64>> {
    let c = b.column_by_name(name)?.as_primitive_opt::<UInt64Type>()?;
    Some(
        (0..c.len())
            .map(|i| if c.is_null(i) { 0 } else { c.value(i) })
            .collect(),
    )
}

fn f64s(b: &RecordBatch, name: &str) -> Option<Vec<f64>> {
    let c = b.column_by_name(name)?.as_primitive_opt::<Float64Type>()?;
    Some(
        (0..c.len())
            .map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) })
            .collect(),
    )
}

fn times(b: &RecordBatch, name: &str) -> Option<Vec<Option<i64>>> {
    let c = b
        .column_by_name(name)?
        .as_primitive_opt::<TimestampMillisecondType>()?;
    Some(
        (0..c.len())
            .map(|i| (!c.is_null(i)).then(|| c.value(i)))
            .collect(),
    )
}

fn strings(b: &RecordBatch, name: &str) -> Option<Vec<String>> {
    let c = b.column_by_name(name)?.as_string_opt::<i32>()?;
    Some(
        (0..c.len())
            .map(|i| {
                if c.is_null(i) {
                    String::new()
                } else {
                    c.value(i).to_string()
                }
            })
            .collect(),
    )
}

/// Reads what the report shows from `lake`.
pub fn load(lake: &Path) -> Result<ReportData, ReportError> {
    let (scores, keys) = load_scores(lake)?;
    let mut rejected_times = Vec::new();
    for b in batches(lake, "rejected")? {
        if let Some(t) = times(&b, "event_time") {
            rejected_times.extend(t.into_iter().flatten());
        }
    }
    Ok(ReportData {
        lake: lake.to_path_buf(),
        epochs: load_epochs(lake)?,
        scores,
        keys,
        rejected_times,
        alerts: load_alerts(lake)?,
    })
}

/// The metrics table: one row per epoch (a replayed epoch's row read last wins).
fn load_epochs(lake: &Path) -> Result<Vec<EpochRow>, ReportError> {
    let mut epochs: BTreeMap<u64, EpochRow> = BTreeMap::new();
    for b in batches(lake, "metrics")? {
        let get = |n: &str| u64s(&b, n).unwrap_or_else(|| vec![0; b.num_rows()]);
        let getf = |n: &str| f64s(&b, n).unwrap_or_else(|| vec![f64::NAN; b.num_rows()]);
        let (epoch, input, clean, rejected, duplicate, labelled) = (
            get("epoch"),
            get("input"),
            get("clean"),
            get("rejected"),
            get("duplicate"),
            get("labelled"),
        );
        let (acc, ll, auc, p50, p99) = (
            getf("accuracy"),
            getf("log_loss"),
            getf("auc"),
            getf("latency_p50_ms"),
            getf("latency_p99_ms"),
        );
        let time = times(&b, "time").unwrap_or_default();
        let labels = get("label_lines");
        let late = [
            get("labels_learned"),
            get("predictions_expired"),
            get("labels_orphaned"),
            get("predictions_waiting"),
        ];
        let challenger = [
            getf("challenger_accuracy"),
            getf("challenger_log_loss"),
            getf("challenger_auc"),
        ];
        let reasons: Vec<(String, Vec<u64>)> = Reason::ALL
            .iter()
            .map(|r| (r.code().to_string(), get(&format!("rejected_{}", r.code()))))
            .collect();
        for i in 0..b.num_rows() {
            // A replayed epoch rewrites its row: the last one read wins (they are equal).
            epochs.insert(
                epoch[i],
                EpochRow {
                    epoch: epoch[i],
                    time_ms: time.get(i).copied().flatten().unwrap_or(0),
                    input: input[i],
                    clean: clean[i],
                    rejected: rejected[i],
                    duplicate: duplicate[i],
                    reasons: reasons.iter().map(|(c, v)| (c.clone(), v[i])).collect(),
                    labelled: labelled[i],
                    accuracy: acc[i],
                    log_loss: ll[i],
                    auc: auc[i],
                    p50_ms: p50[i],
                    p99_ms: p99[i],
                    labels: labels[i],
                    late: [late[0][i], late[1][i], late[2][i], late[3][i]],
                    challenger: [challenger[0][i], challenger[1][i], challenger[2][i]],
                },
            );
        }
    }
    Ok(epochs.into_values().collect())
}

/// The scored table: (event time, score, model version, epoch) in event
/// time order, and records per key.
#[allow(clippy::type_complexity)]
fn load_scores(
    lake: &Path,
) -> Result<(Vec<(i64, f64, u64, u64)>, BTreeMap<String, u64>), ReportError> {
    let mut scores = Vec::new();
    let mut keys: BTreeMap<String, u64> = BTreeMap::new();
    for b in batches(lake, "scored")? {
        let (Some(t), Some(s), Some(v), Some(e), Some(k)) = (
            times(&b, "event_time"),
            f64s(&b, "score"),
            u64s(&b, "model_version"),
            u64s(&b, "epoch"),
            b.column_by_name("key")
                .and_then(|c| c.as_string_opt::<i32>())
                .cloned(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            scores.push((t[i].unwrap_or(0), s[i], v[i], e[i]));
            *keys.entry(k.value(i).to_string()).or_default() += 1;
        }
    }
    scores.sort_unstable_by_key(|x| (x.0, x.3));
    Ok((scores, keys))
}

/// The alerts table, in epoch and window order.
fn load_alerts(lake: &Path) -> Result<Vec<AlertRow>, ReportError> {
    let mut alerts = Vec::new();
    for b in batches(lake, "alerts")? {
        let (Some(rule), Some(state), Some(s), Some(e), Some(msg), Some(sev), Some(ep)) = (
            strings(&b, "rule_id"),
            strings(&b, "state"),
            times(&b, "window_start"),
            times(&b, "window_end"),
            strings(&b, "message"),
            strings(&b, "severity"),
            u64s(&b, "epoch"),
        ) else {
            continue;
        };
        let group = strings(&b, "group").unwrap_or_else(|| vec![String::new(); b.num_rows()]);
        for i in 0..b.num_rows() {
            let rule = if group[i].is_empty() {
                rule[i].clone()
            } else {
                format!("{}[{}]", rule[i], group[i])
            };
            alerts.push((
                ep[i],
                AlertRow {
                    rule,
                    state: state[i].clone(),
                    start_ms: s[i].unwrap_or(0),
                    end_ms: e[i].unwrap_or(0),
                    message: msg[i].clone(),
                    severity: sev[i].clone(),
                },
            ));
        }
    }
    alerts.sort_by_key(|a| (a.0, a.1.start_ms));
    Ok(alerts.into_iter().map(|a| a.1).collect())
}

/// The score histogram (20 bins over [0, 1]) of the given records.
fn score_hist(scores: &[(i64, f64, u64, u64)]) -> Vec<f64> {
    let mut h = vec![0.0; 20];
    for s in scores {
        h[Binning::Unit.bin(s.1) as usize] += 1.0;
    }
    h
}

/// The page.
pub fn render(data: &ReportData, title: &str) -> String {
    let e = &data.epochs;
    let marks = version_marks(data);
    let mut charts = vec![records_chart(data), ledger_chart(e)];
    charts.extend(late_labels_chart(e));
    charts.push(rejects_chart(e));
    charts.extend(quality_charts(e, &marks));
    charts.push(score_drift_chart(data));
    charts.push(alerts_chart(data));
    charts.push(latency_chart(e));
    charts.push(top_keys_chart(data));
    page(data, title, &charts)
}

fn epoch_time(r: &EpochRow) -> f64 {
    r.time_ms as f64
}

/// Records per minute of event time: clean (scored) and rejected.
fn records_chart(data: &ReportData) -> String {
    let per_minute = |ts: &mut dyn Iterator<Item = i64>| {
        let mut m: BTreeMap<i64, f64> = BTreeMap::new();
        for x in ts {
            *m.entry(x.div_euclid(60_000) * 60_000).or_default() += 1.0;
        }
        m.into_iter()
            .map(|(k, v)| (k as f64, v))
            .collect::<Vec<_>>()
    };
    svg::line_chart(
        "records-per-minute",
        "Records per minute",
        XAxis::TimeMs,
        "event time (UTC)",
        "records / minute",
        &[
            Series {
                name: "clean".into(),
                points: per_minute(&mut data.scores.iter().map(|s| s.0)),
            },
            Series {
                name: "rejected".into(),
                points: per_minute(&mut data.rejected_times.iter().copied()),
            },
        ],
        &[],
        true,
    )
}

/// Every input line of each epoch: clean, rejected, a duplicate (or a label).
fn ledger_chart(e: &[EpochRow]) -> String {
    svg::stacked_bars(
        "ledger",
        if e.iter().any(|r| r.labels > 0) {
            "Ledger per epoch: every input line is clean, rejected, a duplicate or a label"
        } else {
            "Ledger per epoch: every input line is clean, rejected or a duplicate"
        },
        XAxis::Number,
        "epoch",
        "lines",
        &[
            Series {
                name: "clean".into(),
                points: e.iter().map(|r| (r.epoch as f64, r.clean as f64)).collect(),
            },
            Series {
                name: "rejected".into(),
                points: e
                    .iter()
                    .map(|r| (r.epoch as f64, r.rejected as f64))
                    .collect(),
            },
            Series {
                name: "duplicate".into(),
                points: e
                    .iter()
                    .map(|r| (r.epoch as f64, r.duplicate as f64))
                    .collect(),
            },
        ]
        .into_iter()
        .chain(e.iter().any(|r| r.labels > 0).then(|| {
            Series {
                name: "labels".into(),
                points: e
                    .iter()
                    .map(|r| (r.epoch as f64, r.labels as f64))
                    .collect(),
            }
        }))
        .collect::<Vec<_>>(),
    )
}

/// Delayed labels per epoch, when there are any.
fn late_labels_chart(e: &[EpochRow]) -> Option<String> {
    if !e.iter().any(|r| r.late.iter().any(|n| *n > 0)) {
        return None;
    }
    let late = |i: usize| -> Vec<(f64, f64)> {
        e.iter()
            .map(|r| (r.epoch as f64, r.late[i] as f64))
            .collect()
    };
    Some(svg::line_chart(
        "late-labels",
        "Delayed labels per epoch: learned, expired, orphaned, and predictions still waiting",
        XAxis::Number,
        "epoch",
        "records",
        &[
            Series {
                name: "learned".into(),
                points: late(0),
            },
            Series {
                name: "predictions expired".into(),
                points: late(1),
            },
            Series {
                name: "labels orphaned".into(),
                points: late(2),
            },
            Series {
                name: "waiting".into(),
                points: late(3),
            },
        ],
        &[],
        true,
    ))
}

/// Rejected lines by reason over the whole lake.
fn rejects_chart(e: &[EpochRow]) -> String {
    let mut reasons: BTreeMap<String, f64> = BTreeMap::new();
    for r in e {
        for (c, n) in &r.reasons {
            *reasons.entry(c.clone()).or_default() += *n as f64;
        }
    }
    let mut reasons: Vec<(String, f64)> = reasons.into_iter().filter(|r| r.1 > 0.0).collect();
    reasons.sort_by(|a, b| b.1.total_cmp(&a.1));
    svg::bar_chart(
        "rejects",
        "Rejected records by reason",
        "lines rejected",
        &reasons,
    )
}

/// Model versions: where each version first scored (by its epoch's time), about 12 of them.
fn version_marks(data: &ReportData) -> Vec<(f64, String)> {
    let mut first_epoch_of: BTreeMap<u64, u64> = BTreeMap::new();
    for s in &data.scores {
        let f = first_epoch_of.entry(s.2).or_insert(s.3);
        *f = (*f).min(s.3);
    }
    let epoch_time: BTreeMap<u64, f64> = data
        .epochs
        .iter()
        .map(|r| (r.epoch, epoch_time(r)))
        .collect();
    let marks: Vec<(f64, String)> = first_epoch_of
        .iter()
        .filter_map(|(v, ep)| epoch_time.get(ep).map(|x| (*x, format!("v{v}"))))
        .collect();
    // Too many marks clutter: keep about 12.
    let step = marks.len().div_ceil(12).max(1);
    marks.into_iter().step_by(step).collect()
}

/// Prequential accuracy, ROC AUC and log loss per labelled epoch (the challenger's too), with the versions marked.
fn quality_charts(e: &[EpochRow], marks: &[(f64, String)]) -> [String; 2] {
    let labelled: Vec<&EpochRow> = e.iter().filter(|r| r.labelled > 0).collect();
    let challenger = labelled.iter().any(|r| r.challenger[2].is_finite());
    let quality = |f: fn(&EpochRow) -> f64| {
        labelled
            .iter()
            .map(|r| (epoch_time(r), f(r)))
            .collect::<Vec<_>>()
    };
    let quality_chart = svg::line_chart(
        "quality",
        "Prequential quality per epoch (dashed lines: model versions)",
        XAxis::TimeMs,
        "event time (UTC)",
        "accuracy / ROC AUC",
        &[
            Series {
                name: "accuracy".into(),
                points: quality(|r| r.accuracy),
            },
            Series {
                name: "ROC AUC".into(),
                points: quality(|r| r.auc),
            },
        ]
        .into_iter()
        .chain(
            challenger
                .then(|| {
                    [
                        Series {
                            name: "challenger accuracy".into(),
                            points: quality(|r| r.challenger[0]),
                        },
                        Series {
                            name: "challenger ROC AUC".into(),
                            points: quality(|r| r.challenger[2]),
                        },
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .collect::<Vec<_>>(),
        marks,
        false,
    );
    let log_loss_chart = svg::line_chart(
        "log-loss",
        "Prequential log loss per epoch",
        XAxis::TimeMs,
        "event time (UTC)",
        "log loss (nats)",
        &[Series {
            name: "log loss".into(),
            points: quality(|r| r.log_loss),
        }]
        .into_iter()
        .chain(challenger.then(|| Series {
            name: "challenger log loss".into(),
            points: quality(|r| r.challenger[1]),
        }))
        .collect::<Vec<_>>(),
        marks,
        true,
    );
    [quality_chart, log_loss_chart]
}

/// Scores now against a reference window: the last tenth of the records against the first tenth.
fn score_drift_chart(data: &ReportData) -> String {
    let n = data.scores.len();
    let tenth = (n / 10).max(1).min(n);
    let (reference, now) = (
        &data.scores[..tenth.min(n)],
        &data.scores[n - tenth.min(n)..],
    );
    let to_hist = |v: &[f64]| -> Histogram {
        v.iter()
            .enumerate()
            .map(|(i, c)| (i as i32, *c as u64))
            .collect()
    };
    let (hr, hn) = (score_hist(reference), score_hist(now));
    let m = hist_measures(&to_hist(&hr), &to_hist(&hn));
    let edges: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
    svg::histogram_compare(
        "score-drift",
        &format!(
            "Score distribution: latest tenth vs first tenth (PSI {:.3}, KS {:.3})",
            m.psi, m.ks
        ),
        "score",
        &edges,
        ("first tenth (reference)", &hr),
        ("latest tenth", &hn),
    )
}

/// Alerts on a timeline of event time.
fn alerts_chart(data: &ReportData) -> String {
    let mut rows: BTreeMap<String, Vec<(f64, Option<f64>)>> = BTreeMap::new();
    for a in &data.alerts {
        let spans = rows.entry(a.rule.clone()).or_default();
        match a.state.as_str() {
            "firing" => spans.push((a.start_ms as f64, None)),
            _ => {
                if let Some(open) = spans.iter_mut().rev().find(|s| s.1.is_none()) {
                    open.1 = Some(a.end_ms as f64);
                }
            }
        }
    }
    let (x0, x1) = (
        data.scores.first().map_or(0.0, |s| s.0 as f64),
        data.scores.last().map_or(1.0, |s| s.0 as f64),
    );
    svg::timeline(
        "alerts",
        "Alerts (event time)",
        &rows.into_iter().collect::<Vec<_>>(),
        x0,
        x1,
    )
}

/// End-to-end latency per epoch.
fn latency_chart(e: &[EpochRow]) -> String {
    svg::line_chart(
        "latency",
        "End-to-end latency per epoch (arrival to commit)",
        XAxis::Number,
        "epoch",
        "latency (s)",
        &[
            Series {
                name: "p50".into(),
                points: e.iter().map(|r| (r.epoch as f64, r.p50_ms / 1e3)).collect(),
            },
            Series {
                name: "p99".into(),
                points: e.iter().map(|r| (r.epoch as f64, r.p99_ms / 1e3)).collect(),
            },
        ],
        &[],
        true,
    )
}

/// The ten keys with most records.
fn top_keys_chart(data: &ReportData) -> String {
    let mut keys: Vec<(String, f64)> = data
        .keys
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    keys.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    keys.truncate(10);
    svg::bar_chart("top-keys", "Top 10 keys by volume", "records scored", &keys)
}

/// The HTML page around the charts: the key figures, the charts, the alert table.
fn page(data: &ReportData, title: &str, charts: &[String]) -> String {
    let e = &data.epochs;
    let labelled: Vec<&EpochRow> = e.iter().filter(|r| r.labelled > 0).collect();
    let total = |f: fn(&EpochRow) -> u64| e.iter().map(f).sum::<u64>();
    let mut html = String::new();
    html.push_str(&format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>body{{font-family:sans-serif;margin:24px;max-width:1600px;color:#222}}h1{{font-size:22px}}.grid{{display:flex;flex-wrap:wrap;gap:16px}}.chart{{border:1px solid #ddd}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ddd;padding:3px 8px;text-align:left}}.kpi{{display:inline-block;margin-right:24px}}.kpi b{{font-size:20px;display:block}}</style></head><body><h1>{t}</h1><p>Lake <code>{lake}</code> · {n_e} epoch(s) · generated from the lake's tables</p>"#,
        t = esc(title),
        lake = esc(&data.lake.display().to_string()),
        n_e = e.len()
    ));
    let last_auc = labelled.last().map_or(f64::NAN, |r| r.auc);
    html.push_str(&format!(
        r#"<div id="kpis"><span class="kpi"><b id="kpi-input">{}</b>lines in</span><span class="kpi"><b id="kpi-clean">{}</b>clean</span><span class="kpi"><b id="kpi-rejected">{}</b>rejected</span><span class="kpi"><b id="kpi-duplicate">{}</b>duplicates</span><span class="kpi"><b id="kpi-alerts">{}</b>alerts</span><span class="kpi"><b id="kpi-auc">{:.4}</b>latest epoch AUC</span></div><div class="grid">"#,
        total(|r| r.input),
        total(|r| r.clean),
        total(|r| r.rejected),
        total(|r| r.duplicate),
        data.alerts.len(),
        last_auc
    ));
    for c in charts {
        html.push_str(c);
    }
    html.push_str("</div><h2>Alerts</h2><table id=\"alert-table\"><tr><th>rule</th><th>state</th><th>severity</th><th>window start (UTC)</th><th>message</th></tr>");
    for a in &data.alerts {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.rule),
            esc(&a.state),
            esc(&a.severity),
            svg::fmt_time(a.start_ms as f64, false),
            esc(&a.message)
        ));
    }
    html.push_str("</table></body></html>\n");
    html
}

/// Reads `lake` and writes the page to `out` (atomically).
pub fn write(lake: &Path, out: &Path, title: &str) -> Result<(), ReportError> {
    let data = load(lake)?;
    let html = render(&data, title);
    crate::core::storage::write_atomic(out, html.as_bytes()).map_err(|error| ReportError::Io {
        file: out.to_path_buf(),
        error,
    })
}

//! `ledger`: the epoch coordinator on worker 0.
//!
//! **In:** every worker's [`Event`]s — input and outcome tallies, prequential
//! evaluations, sink commits (with their pending parts), finished-file facts,
//! source positions and saved operator snapshots — exchanged to worker 0.
//! **Out:** one [`MetricsRow`] per completed epoch. Its frontier is the run's
//! *committed* frontier: the landing source watches it for flow control.
//! **When an epoch completes** (the input frontier has passed it, so every
//! sink on every worker has written it and every worker has saved its
//! snapshots): the checkpoint of the epoch is written — the commit point —
//! then the epoch's parts are published, the files that ended in it are
//! appended to the manifest, old checkpoints are pruned, the ledger is checked
//! (`in = clean + rejected + duplicate`), and the metrics row is written to the
//! `metrics` table (directly: it is an operational table, rewritten under the
//! same name if the epoch is replayed). A failure raises a fault and stops
//! before anything later is committed.
//! **Where the writes run:** the coordinator computes an epoch's ledger,
//! evaluation, alerts and checkpoint on worker 0, then hands the durable part
//! (metrics and alerts parts, checkpoint, publication, manifest, pruning, Kafka
//! group offsets, registry versions) to its committer thread, which does it
//! in epoch order. The epoch's capability is held until the committer is done,
//! so the committed frontier still means "durable"; worker 0 meanwhile goes on
//! with the next epochs instead of waiting for fsyncs (one worker: 15% more
//! records/s).
//! **State:** per-epoch accumulators until completion, the latest position of
//! every source and snapshot of every operator instance (carried from the
//! resumed checkpoint), and the run totals (including every `(score, label)`
//! pair, for the exact whole-run AUC: 16 bytes per labelled record).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Builder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use arrow::record_batch::RecordBatch;
use millrace_operators::learn::eval::EvalMetrics;
use millrace_operators::record::Reason;
use millrace_operators::schema::Schema;
use millrace_operators::{Epoch, EvalPartial, LedgerCounts, Tally};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use tracing::{error, info};

use crate::connectors::alerts::{alerts_table, append_jsonl};
use crate::connectors::lake::{write_epoch, Commit, Lake, TableFormat};
use crate::connectors::lake::{SinkId, Table};
use crate::connectors::landing::{FileFact, FilePos, SourcePos};
use crate::core::fault::Fault;
use crate::dataflow::coordinator::checkpoint::{self, Checkpoint, StateRef};
use crate::dataflow::coordinator::manifest;
use crate::dataflow::coordinator::snapshots::StateSaved;
use millrace_operators::monitor::{
    latency_percentiles, Alert, AlertState, EpochFacts, Monitors, WindowPartial,
};

/// What workers report to the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Event {
    /// Lines read, or where lines went.
    Tally(Tally),
    /// Prequential evaluation of scored records.
    Eval(EvalPartial),
    /// A sink committed part of an epoch.
    Commit(Commit),
    /// A landed file was read to its end.
    File(FileFact),
    /// A source's position at the end of the epoch.
    Source(SourcePos),
    /// A worker's operator snapshots of the epoch are durable.
    State(StateSaved),
    /// A worker's window aggregates of the epoch, for the monitors.
    Windows(WindowPartial),
    /// A new version of the shared model, for the registry.
    Model(millrace_operators::score::ModelRelease),
}

/// One row of the `metrics` table: an epoch's ledger, throughput and model quality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// The epoch.
    pub epoch: Epoch,
    /// Latest event time scored so far (ms); places the row in the lake.
    pub time_ms: i64,
    /// The epoch's ledger.
    pub ledger: LedgerCounts,
    /// Lines per second of wall time since the previous epoch completed.
    pub records_per_s: f64,
    /// Wall time since the previous epoch completed (ms).
    pub wall_ms: f64,
    /// Rows committed by the sinks in this epoch.
    pub rows_committed: u64,
    /// Bytes committed by the sinks in this epoch.
    pub bytes_committed: u64,
    /// Prequential metrics of this epoch's labelled records.
    pub epoch_eval: EvalMetrics,
    /// Prequential accuracy and log loss of the run so far (AUC only for the epoch: exact AUC over the whole run is computed at the end).
    pub run_eval: EvalMetrics,
    /// Median end-to-end latency of the epoch's records, arrival to commit (ms; NaN without records).
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Delayed labels in this epoch (levels at its end).
    #[serde(default)]
    pub labels: millrace_operators::labels::LabelCounts,
    /// The challenger's prequential metrics on the same records, when one scores in shadow.
    #[serde(default)]
    pub challenger_eval: Option<EvalMetrics>,
    /// The newest model version that scored the epoch's records (metrics per version: group by it).
    #[serde(default)]
    pub model_version: u64,
}

/// The `metrics` table: one row per epoch.
pub fn metrics_table() -> TableFormat<MetricsRow> {
    TableFormat {
        table: Table::Metrics,
        arrow_schema: metrics_schema,
        partition_time: |r| r.time_ms,
        batch: metrics_batch,
    }
}

fn metrics_schema(_schema: &Schema) -> SchemaRef {
    let u = |n: &str| Field::new(n, DataType::UInt64, false);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    let mut fields = vec![
        u("epoch"),
        Field::new(
            "time",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        u("input"),
        u("clean"),
        u("rejected"),
        u("duplicate"),
        u("malformed"),
        u("invalid"),
    ];
    fields.extend(
        Reason::ALL
            .iter()
            .map(|r| u(&format!("rejected_{}", r.code()))),
    );
    fields.extend([
        f("records_per_s"),
        f("wall_ms"),
        u("rows_committed"),
        u("bytes_committed"),
        u("labelled"),
        f("accuracy"),
        f("log_loss"),
        f("auc"),
        u("labelled_total"),
        f("accuracy_total"),
        f("log_loss_total"),
        f("latency_p50_ms"),
        f("latency_p99_ms"),
        u("model_version"),
        u("label_lines"),
        u("labels_learned"),
        u("predictions_expired"),
        u("labels_orphaned"),
        u("predictions_waiting"),
        f("challenger_accuracy"),
        f("challenger_log_loss"),
        f("challenger_auc"),
    ]);
    Arc::new(ArrowSchema::new(fields))
}

fn metrics_batch(
    _schema: &Schema,
    arrow: SchemaRef,
    rows: &[&MetricsRow],
    _epoch: Epoch,
) -> RecordBatch {
    let u = |get: &dyn Fn(&MetricsRow) -> u64| -> ArrayRef {
        let mut b = UInt64Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_value(get(r)));
        Arc::new(b.finish())
    };
    let f = |get: &dyn Fn(&MetricsRow) -> f64| -> ArrayRef {
        let mut b = Float64Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| {
            let v = get(r);
            b.append_option(v.is_finite().then_some(v))
        });
        Arc::new(b.finish())
    };
    let mut time =
        arrow::array::TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    rows.iter().for_each(|r| time.append_value(r.time_ms));
    let mut cols: Vec<ArrayRef> = vec![
        u(&|r| r.epoch),
        Arc::new(time.finish()),
        u(&|r| r.ledger.input),
        u(&|r| r.ledger.clean),
        u(&|r| r.ledger.rejected_total()),
        u(&|r| r.ledger.duplicate),
        u(&|r| r.ledger.malformed()),
        u(&|r| r.ledger.invalid()),
    ];
    for reason in Reason::ALL {
        cols.push(u(&move |r| r.ledger.rejected[reason.index()]));
    }
    cols.extend([
        f(&|r| r.records_per_s),
        f(&|r| r.wall_ms),
        u(&|r| r.rows_committed),
        u(&|r| r.bytes_committed),
        u(&|r| r.epoch_eval.n),
        f(&|r| r.epoch_eval.accuracy),
        f(&|r| r.epoch_eval.log_loss),
        f(&|r| r.epoch_eval.auc),
        u(&|r| r.run_eval.n),
        f(&|r| r.run_eval.accuracy),
        f(&|r| r.run_eval.log_loss),
        f(&|r| r.latency_p50_ms),
        f(&|r| r.latency_p99_ms),
        u(&|r| r.model_version),
        u(&|r| r.ledger.labels),
        u(&|r| r.labels.learned),
        u(&|r| r.labels.expired),
        u(&|r| r.labels.orphaned),
        u(&|r| r.labels.waiting + r.labels.due),
        f(&|r| r.challenger_eval.map_or(f64::NAN, |m| m.accuracy)),
        f(&|r| r.challenger_eval.map_or(f64::NAN, |m| m.log_loss)),
        f(&|r| r.challenger_eval.map_or(f64::NAN, |m| m.auc)),
    ]);
    RecordBatch::try_new(arrow, cols).expect("columns match the metrics schema")
}

/// What a run did, as seen by the coordinator.
#[derive(Clone, Debug, Default)]
pub struct RunTotals {
    /// Epochs completed.
    pub epochs: u64,
    /// The whole run's ledger.
    pub ledger: LedgerCounts,
    /// Epochs whose ledger did not balance (always 0 unless there is a bug).
    pub unbalanced_epochs: u64,
    /// The whole run's prequential evaluation (with all pairs).
    pub eval: EvalPartial,
    /// Files read to their end and recorded in the manifest.
    pub files: Vec<FileFact>,
    /// Rows and bytes committed to the lake, by table.
    pub committed: BTreeMap<SinkId, (u64, u64, u64)>,
    /// Alerts raised, in order.
    pub alerts: Vec<Alert>,
    /// Promotions of the challenger: the epoch and the version it became.
    pub promotions: Vec<(Epoch, u64)>,
    /// Per completed epoch, in order: the epoch, and `eval`'s labelled count,
    /// correct count and log-loss sum after it (its pairs are `eval.pairs[..n]`).
    pub marks: Vec<(Epoch, u64, u64, f64)>,
}

impl RunTotals {
    /// Metrics over up to `groups` consecutive runs of epochs (exact AUC per group).
    /// Call before `eval.metrics()`, which reorders the pairs.
    pub fn by_epoch_groups(
        &self,
        groups: usize,
    ) -> Vec<(std::ops::RangeInclusive<Epoch>, EvalMetrics)> {
        let marks: Vec<_> = self.marks.iter().filter(|m| m.1 > 0).collect();
        if marks.is_empty() {
            return Vec::new();
        }
        let per = marks.len().div_ceil(groups.max(1));
        let mut out = Vec::new();
        let (mut n0, mut c0, mut l0) = (0u64, 0u64, 0f64);
        let mut prev = marks.first().map_or(0, |m| m.0);
        for chunk in marks.chunks(per) {
            let last = chunk[chunk.len() - 1];
            let mut part = EvalPartial {
                n: last.1 - n0,
                correct: last.2 - c0,
                log_loss_sum: last.3 - l0,
                pairs: self.eval.pairs[n0 as usize..last.1 as usize].to_vec(),
                ..Default::default()
            };
            out.push((chunk[0].0.min(prev)..=last.0, part.metrics()));
            (n0, c0, l0) = (last.1, last.2, last.3);
            prev = last.0 + 1;
        }
        out
    }
}

/// Counts a completed epoch's ledger (once per epoch, on the coordinator).
fn record_epoch_metrics(tally: &Tally, wall_s: f64) {
    use crate::core::metrics::*;
    metrics::counter!(RECORDS_CLEAN).increment(tally.clean);
    metrics::counter!(RECORDS_DUPLICATE).increment(tally.duplicate);
    for (reason, n) in tally.reasons() {
        metrics::counter!(RECORDS_REJECTED, "reason" => reason).increment(n);
    }
    metrics::counter!(EPOCHS_COMMITTED).increment(1);
    metrics::histogram!(EPOCH_COMMIT_SECONDS).record(wall_s);
}

#[derive(Default)]
struct EpochAcc {
    tally: Tally,
    eval: EvalPartial,
    files: Vec<FileFact>,
    rows: u64,
    bytes: u64,
    parts: Vec<(String, String)>,
    positions: Vec<SourcePos>,
    saved: Vec<StateRef>,
    evals: Vec<EvalPartial>,
    windows: Vec<WindowPartial>,
    releases: Vec<millrace_operators::score::ModelRelease>,
}

/// What the coordinator needs to publish model versions to the lake's registry.
#[derive(Clone, Debug)]
pub struct RegistryCtx {
    /// The pipeline's name (the model's name in the registry).
    pub name: String,
    /// The `[model]` table, as published with each version.
    pub config: serde_json::Value,
    /// The `[challenger]` table, for versions a promoted challenger made.
    pub challenger_config: Option<serde_json::Value>,
    /// Dense feature names, then sparse slot names (the weights' order).
    pub features: Vec<String>,
    /// The state fingerprint: a version can warm-start only a topology with the same one.
    pub fingerprint: String,
    /// Versions that keep their exact state (see `registry::prune_states`).
    pub keep_versions: usize,
}

/// How the coordinator checkpoints.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// Checkpoints to keep.
    pub keep: usize,
    /// Workers in the run.
    pub workers: usize,
    /// Fingerprint of the state-shaping parts of the topology.
    pub topology: String,
    /// The checkpoint the run resumed from, if any.
    pub resumed: Option<Checkpoint>,
}

/// What the coordinator is given.
pub struct Coordinator {
    /// The lake (metrics table, manifest, checkpoints).
    pub lake: Lake,
    /// Write the `metrics` table.
    pub metrics: bool,
    /// Checkpoint every epoch (`None`: no checkpoints, parts are visible at once).
    pub checkpointing: Option<Checkpointing>,
    /// The run's totals (read by the runtime at the end).
    pub totals: Rc<RefCell<RunTotals>>,
    /// Where faults go.
    pub fault: Fault,
    /// Kafka source: a client to commit the group's offsets after each checkpoint.
    pub kafka_commit: Option<rdkafka::consumer::BaseConsumer>,
    /// Kafka label source: a client to commit the label group's offsets after each checkpoint.
    pub label_kafka_commit: Option<rdkafka::consumer::BaseConsumer>,
    /// The monitors, fresh (the resumed checkpoint's state replaces them if it has one).
    pub monitors: Option<Monitors>,
    /// Write the `alerts` table.
    pub alerts_table: bool,
    /// The JSON-lines file alerts are appended to.
    pub alerts_jsonl: Option<std::path::PathBuf>,
    /// Alert channels (webhook, email) fed after each checkpoint.
    pub notifiers: Vec<crate::connectors::notify::Notifier>,
    /// Set when the previous run did not finish cleanly: why, for `restart` monitors.
    pub restart: Option<String>,
    /// Publish model versions to the lake's registry.
    pub registry: Option<RegistryCtx>,
    /// Progress counters of a `--once` run.
    pub progress: Option<Arc<crate::dataflow::progress::Progress>>,
    /// The channels' per-rule rate limit (alerts per hour).
    pub max_per_rule_per_hour: u32,
}

/// The coordinator operator. See the module docs.
pub trait Ledger<'scope> {
    /// Completes epochs as the frontier passes them.
    fn ledger(
        self,
        step_id: &str,
        coordinator: Coordinator,
    ) -> Stream<'scope, Epoch, Vec<MetricsRow>>;
}

impl<'scope> Ledger<'scope> for Stream<'scope, Epoch, Vec<Event>> {
    fn ledger(self, step_id: &str, c: Coordinator) -> Stream<'scope, Epoch, Vec<MetricsRow>> {
        let mut c = c;
        let committer = Committer::new(step_id, &mut c);
        let fault = c.fault.clone();
        let mut books = Books::new(step_id, c);
        let scope = self.scope();
        self.unary_frontier::<CapacityContainerBuilder<Vec<MetricsRow>>, _, _, _>(
            Exchange::new(|_: &Event| 0),
            step_id,
            move |_, info| {
                // `idle_source` rules look at the clock even when no epoch completes.
                let activator = scope.activator_for(info.address.clone());
                // The committer thread: an epoch's durable writes (metrics and alerts
                // parts, checkpoint, publication, manifest, Kafka offsets, registry) run
                // there, in epoch order, so fsyncs do not stall this worker's dataflow.
                // The epoch's capability is held until they are done: the committed
                // frontier (and so the sources' flow control) still follows durability.
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                let (jobs, job_rx) = std::sync::mpsc::channel::<CommitJob>();
                let (done_tx, done) =
                    std::sync::mpsc::channel::<(Epoch, Result<(), LedgerError>)>();
                std::thread::Builder::new()
                    .name("millrace-commit".into())
                    .spawn(move || {
                        for job in job_rx {
                            let epoch = job.epoch;
                            let result = committer.commit(job);
                            let failed = result.is_err();
                            let sent = done_tx.send((epoch, result));
                            let _ = wake.activate();
                            if sent.is_err() || failed {
                                return;
                            }
                        }
                    })
                    .expect("the committer thread starts");
                let mut stash: BTreeMap<Epoch, (Capability<Epoch>, EpochAcc)> = BTreeMap::new();
                let mut committing: BTreeMap<Epoch, (Capability<Epoch>, Committing)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    if !fault.is_raised() {
                        match books.between_epochs() {
                            Ok(true) => activator.activate_after(std::time::Duration::from_secs(1)),
                            Ok(false) => {}
                            Err(e) => return fault.raise(format!("{}: {e}", books.step)),
                        }
                    }
                    input.for_each_stamp(|cap, data| {
                        let Some(&epoch) = cap.least() else { return };
                        let acc = &mut stash
                            .entry(epoch)
                            .or_insert_with(|| (cap.delayed(&epoch, 0), EpochAcc::default()))
                            .1;
                        for event in data.flat_map(|d| d.drain(..)) {
                            acc.add(event, &books.totals);
                        }
                    });
                    while let Some(entry) = stash.first_entry() {
                        if frontier.less_equal(entry.key()) || fault.is_raised() {
                            break;
                        }
                        let epoch = *entry.key();
                        let (cap, acc) = entry.remove();
                        let (job, pending) = match books.complete(epoch, acc) {
                            Ok(done) => done,
                            Err(e) => return fault.raise(format!("{}: {e}", books.step)),
                        };
                        if jobs.send(job).is_err() {
                            return fault
                                .raise(format!("{}: the committer thread stopped", books.step));
                        }
                        committing.insert(epoch, (cap, pending));
                    }
                    // Epochs the committer has made durable, in order: what follows a commit.
                    while let Ok((epoch, result)) = done.try_recv() {
                        if let Err(e) = result {
                            return fault.raise(format!("{}: {e}", books.step));
                        }
                        if let Some((cap, c)) = committing.remove(&epoch) {
                            let row = books.committed(epoch, c);
                            output.session(&cap).give(row);
                        }
                    }
                }
            },
        )
    }
}

impl EpochAcc {
    /// One worker's event of the epoch; commits count in the run's totals at once.
    fn add(&mut self, event: Event, totals: &RefCell<RunTotals>) {
        match event {
            Event::Tally(t) => self.tally.add(&t),
            Event::Eval(e) => self.evals.push(e),
            Event::Windows(w) => self.windows.push(w),
            Event::Model(r) => self.releases.push(r),
            Event::Commit(c) => {
                self.rows += c.rows;
                self.bytes += c.bytes;
                let sink = c.sink.name();
                metrics::counter!(crate::core::metrics::RECORDS_OUT, "sink" => sink)
                    .increment(c.rows);
                metrics::counter!(crate::core::metrics::BYTES_OUT, "sink" => sink)
                    .increment(c.bytes);
                self.parts.extend(c.parts);
                let mut t = totals.borrow_mut();
                let entry = t.committed.entry(c.sink).or_default();
                entry.0 += c.files;
                entry.1 += c.rows;
                entry.2 += c.bytes;
            }
            Event::File(f) => self.files.push(f),
            // Positions and snapshots apply when their epoch completes: events
            // of later epochs can arrive before an earlier epoch is complete.
            Event::Source(p) => self.positions.push(p),
            Event::State(saved) => self.saved.extend(saved.refs),
        }
    }
}

/// The coordinator's books, without timely: where every source is, the
/// latest snapshot of every operator instance, the monitors, and the run's
/// totals. [`Books::complete`] turns a completed epoch into the job the
/// committer makes durable; [`Books::committed`] does what follows once it is.
struct Books {
    step: String,
    checkpointing: Option<Checkpointing>,
    totals: Rc<RefCell<RunTotals>>,
    monitors: Option<Monitors>,
    alerts_jsonl: Option<std::path::PathBuf>,
    notifiers: Vec<crate::connectors::notify::Notifier>,
    rate: crate::connectors::notify::RateLimit,
    registry: Option<RegistryCtx>,
    progress: Option<Arc<crate::dataflow::progress::Progress>>,
    write_metrics: bool,
    /// Why the previous run did not finish cleanly, until reported.
    restart: Option<String>,
    resumed_epoch: Epoch,
    idle_started: bool,
    io_errors_seen: u64,
    last_epoch: Epoch,
    /// Alerts raised between epochs: delivered at once, written to the table with the next epoch.
    between: Vec<Alert>,
    last: Instant,
    latest_time: i64,
    /// The latest source position per worker (records, labels).
    sources: Vec<Option<FilePos>>,
    label_sources: Vec<Option<FilePos>>,
    kafka_offsets: BTreeMap<String, i64>,
    label_kafka_offsets: BTreeMap<String, i64>,
    /// The latest snapshot per operator instance.
    states: BTreeMap<(String, usize), StateRef>,
    /// Prequential evaluation since the last published version: the published version's metrics.
    since_release: EvalPartial,
    /// The monitors' state in the checkpoint could not be read.
    restore_error: Option<LedgerError>,
}

impl Books {
    /// The books as the resumed checkpoint left them (or empty).
    fn new(step: &str, c: Coordinator) -> Books {
        let resumed = c.checkpointing.as_ref().and_then(|c| c.resumed.clone());
        let workers = c.checkpointing.as_ref().map_or(0, |c| c.workers);
        let mut restore_error = None;
        let monitors = match resumed.as_ref().and_then(|r| r.monitors.as_ref()) {
            Some(bytes) => match bincode::deserialize::<Monitors>(bytes) {
                Ok(m) => Some(m),
                Err(e) => {
                    restore_error = Some(LedgerError::Monitors(e));
                    None
                }
            },
            None => c.monitors,
        };
        let r = resumed.as_ref();
        Books {
            step: step.to_string(),
            totals: c.totals,
            monitors,
            alerts_jsonl: c.alerts_jsonl,
            notifiers: c.notifiers,
            rate: crate::connectors::notify::RateLimit::new(c.max_per_rule_per_hour),
            registry: c.registry,
            progress: c.progress,
            write_metrics: c.metrics,
            restart: c.restart,
            resumed_epoch: r.map_or(0, |r| r.epoch),
            idle_started: false,
            io_errors_seen: crate::core::metrics::IO_ERRORS
                .load(std::sync::atomic::Ordering::Relaxed),
            last_epoch: 0,
            between: Vec::new(),
            last: Instant::now(),
            latest_time: r.map_or(i64::MIN, |r| r.latest_time_ms),
            sources: r.map_or_else(|| vec![None; workers], |r| r.sources.clone()),
            label_sources: r.map_or_else(|| vec![None; workers], |r| r.label_sources.clone()),
            kafka_offsets: r.map(|r| r.kafka.clone()).unwrap_or_default(),
            label_kafka_offsets: r.map(|r| r.label_kafka.clone()).unwrap_or_default(),
            states: r
                .iter()
                .flat_map(|r| r.states.iter())
                .map(|s| ((s.step_id.clone(), s.worker), s.clone()))
                .collect(),
            since_release: EvalPartial::default(),
            restore_error,
            checkpointing: c.checkpointing,
        }
    }

    /// Between epochs: a restart is reported at once (the run may have
    /// nothing left to commit), and `idle_source` rules look at the clock.
    /// True if the clock must be looked at again in a second.
    fn between_epochs(&mut self) -> Result<bool, LedgerError> {
        if let Some(e) = self.restore_error.take() {
            return Err(e);
        }
        let Some(m) = self.monitors.as_mut() else {
            return Ok(false);
        };
        let now = unix_ms();
        let mut alerts = match self.restart.take() {
            Some(why) => m.restart_alerts(&why, self.resumed_epoch, now),
            None => Vec::new(),
        };
        if !m.has_idle_rules() && alerts.is_empty() {
            return Ok(false);
        }
        if !self.idle_started {
            m.saw_input(now);
            self.idle_started = true;
        }
        if m.has_idle_rules() {
            alerts.extend(m.idle_check(now, self.last_epoch));
        }
        let again = m.has_idle_rules();
        if !alerts.is_empty() {
            announce(&self.step, &alerts);
            self.append_jsonl(&alerts)?;
            deliver(&mut self.rate, &self.notifiers, &alerts, now);
            self.totals
                .borrow_mut()
                .alerts
                .extend(alerts.iter().cloned());
            self.between.extend(alerts);
        }
        Ok(again)
    }

    fn append_jsonl(&self, alerts: &[Alert]) -> Result<(), LedgerError> {
        match &self.alerts_jsonl {
            Some(path) => append_jsonl(path, alerts).map_err(|error| LedgerError::AlertsFile {
                path: path.clone(),
                error,
            }),
            None => Ok(()),
        }
    }

    /// A completed epoch (every worker's events are in): its evaluation,
    /// positions and snapshots are folded in, the monitors judge it, and its
    /// metrics row and checkpoint are made. The job for the committer, and
    /// what to do once it is durable.
    fn complete(
        &mut self,
        epoch: Epoch,
        mut acc: EpochAcc,
    ) -> Result<(CommitJob, Committing), LedgerError> {
        acc.files.sort_by(|a, b| a.name.cmp(&b.name));
        // Merge evaluations in worker order: pair order (and so every sum) is deterministic.
        acc.evals.sort_by_key(|e| e.worker);
        for e in std::mem::take(&mut acc.evals) {
            acc.eval.merge(&e);
        }
        self.fold_positions(&mut acc);
        if let Some((_, hi)) = acc.eval.event_range {
            self.latest_time = self.latest_time.max(hi);
        }
        let now = Instant::now();
        let wall = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let run_eval = self.fold_eval(&acc.eval);
        // End-to-end latency: from each record's arrival to now, when every sink has written its epoch.
        let now_ms = unix_ms();
        let latency = record_latency(&acc.windows, now_ms);
        let alerts = self.judge(epoch, &mut acc, now_ms);
        announce(&self.step, &alerts);
        // The table also gets the alerts raised between epochs (already delivered).
        let table_alerts: Vec<Alert> = self
            .between
            .drain(..)
            .chain(alerts.iter().cloned())
            .collect();
        self.append_jsonl(&alerts)?;
        let row = MetricsRow {
            epoch,
            time_ms: if self.latest_time == i64::MIN {
                0
            } else {
                self.latest_time
            },
            ledger: acc.tally,
            records_per_s: if wall > 0.0 {
                acc.tally.input as f64 / wall
            } else {
                f64::NAN
            },
            wall_ms: wall * 1e3,
            rows_committed: acc.rows,
            bytes_committed: acc.bytes,
            epoch_eval: acc.eval.metrics(),
            run_eval,
            latency_p50_ms: latency[0],
            latency_p99_ms: latency[1],
            labels: acc.eval.labels,
            challenger_eval: acc.eval.shadow.as_mut().map(|s| s.metrics()),
            model_version: acc.eval.version,
        };
        let releases = self.releases(&acc);
        let job = CommitJob {
            epoch,
            parts: std::mem::take(&mut acc.parts),
            files: acc.files.clone(),
            table_alerts,
            row: self.write_metrics.then(|| row.clone()),
            ckpt: self.checkpoint(epoch, &acc.files),
            offsets: [self.kafka_offsets.clone(), self.label_kafka_offsets.clone()],
            releases,
            now_ms,
        };
        let t = self.totals.borrow();
        let mark = (epoch, t.eval.n, t.eval.correct, t.eval.log_loss_sum);
        let pending = Committing {
            row,
            alerts,
            files: acc.files,
            tally: acc.tally,
            wall,
            version: acc.eval.version,
            releases: acc.releases,
            mark,
        };
        Ok((job, pending))
    }

    /// The epoch's source positions (a partition that moved is news for the
    /// monitors) and operator snapshots.
    fn fold_positions(&mut self, acc: &mut EpochAcc) {
        let moved_ms = unix_ms();
        for p in acc.positions.drain(..) {
            let offsets = if p.labels {
                &mut self.label_kafka_offsets
            } else {
                &mut self.kafka_offsets
            };
            if let Some(m) = self.monitors.as_mut() {
                for (key, offset) in &p.offsets {
                    if offsets.get(key) != Some(offset) {
                        m.saw_partition(key, moved_ms);
                    }
                }
            }
            offsets.extend(p.offsets);
            let sources = if p.labels {
                &mut self.label_sources
            } else {
                &mut self.sources
            };
            if p.worker >= sources.len() {
                sources.resize(p.worker + 1, None);
            }
            sources[p.worker] = p.position;
        }
        for r in acc.saved.drain(..) {
            self.states.insert((r.step_id.clone(), r.worker), r);
        }
    }

    /// The epoch's evaluation into the run's; the run's metrics so far.
    fn fold_eval(&mut self, eval: &EvalPartial) -> EvalMetrics {
        let mut t = self.totals.borrow_mut();
        let levels = t.eval.labels;
        t.eval.merge(eval);
        // Waiting, due and early are levels: the latest epoch's, not a sum over epochs.
        let latest = if eval.labels.is_empty() {
            levels
        } else {
            eval.labels
        };
        t.eval.labels.waiting = latest.waiting;
        t.eval.labels.due = latest.due;
        t.eval.labels.early = latest.early;
        let n = t.eval.n.max(1) as f64;
        let regression = t.eval.regression;
        let unless = |r: bool, v: f64| if r { f64::NAN } else { v };
        EvalMetrics {
            n: t.eval.n,
            accuracy: unless(regression, t.eval.correct as f64 / n),
            log_loss: unless(regression, t.eval.log_loss_sum / n),
            auc: f64::NAN,
            mae: unless(!regression, t.eval.abs_err_sum / n),
            rmse: unless(!regression, (t.eval.sq_err_sum / n).sqrt()),
        }
    }

    /// Monitors judge the epoch; their alerts are committed with it.
    fn judge(&mut self, epoch: Epoch, acc: &mut EpochAcc, now_ms: i64) -> Vec<Alert> {
        let Some(m) = self.monitors.as_mut() else {
            self.last_epoch = epoch;
            return Vec::new();
        };
        let all_io_errors =
            crate::core::metrics::IO_ERRORS.load(std::sync::atomic::Ordering::Relaxed);
        let io_errors = all_io_errors - self.io_errors_seen;
        self.io_errors_seen = all_io_errors;
        let alerts = m.epoch(EpochFacts {
            epoch,
            partials: std::mem::take(&mut acc.windows),
            tally: acc.tally,
            predictions: &acc.eval.pairs,
            latest_ms: (self.latest_time != i64::MIN).then_some(self.latest_time),
            files: acc
                .files
                .iter()
                .map(|f| (f.name.clone(), f.size_bytes))
                .collect(),
            rows_committed: acc.rows,
            now_ms,
            io_errors,
        });
        self.last_epoch = epoch;
        if acc.tally.input > 0 {
            m.saw_input(now_ms);
        }
        metrics::gauge!(crate::core::metrics::ALERTS_FIRING).set(m.firing().len() as f64);
        alerts
    }

    /// Each new model version with the metrics it earned since the previous one.
    fn releases(&mut self, acc: &EpochAcc) -> Vec<Release> {
        self.since_release.merge(&acc.eval);
        let Some(reg) = &self.registry else {
            return Vec::new();
        };
        let mut releases = Vec::new();
        for r in &acc.releases {
            let range = self.since_release.event_range;
            let metrics = std::mem::take(&mut self.since_release).metrics();
            let config = match (&reg.challenger_config, r.config) {
                (Some(c), 1) => c.clone(),
                _ => reg.config.clone(),
            };
            releases.push((r.clone(), config, range, metrics));
        }
        releases
    }

    /// The epoch's checkpoint, without its parts (the committer adds them
    /// with the metrics and alerts parts); `None` without checkpointing.
    fn checkpoint(&self, epoch: Epoch, files: &[FileFact]) -> Option<Checkpoint> {
        let ck = self.checkpointing.as_ref()?;
        Some(Checkpoint {
            version: checkpoint::VERSION,
            epoch,
            workers: ck.workers,
            topology: ck.topology.clone(),
            sources: self.sources.clone(),
            label_sources: self.label_sources.clone(),
            states: self.states.values().cloned().collect(),
            parts: Vec::new(),
            files: files.to_vec(),
            latest_time_ms: self.latest_time,
            kafka: self.kafka_offsets.clone(),
            label_kafka: self.label_kafka_offsets.clone(),
            monitors: self
                .monitors
                .as_ref()
                .map(|m| bincode::serialize(m).expect("monitor state serializes")),
        })
    }

    /// Once an epoch is durable: the run's totals and metrics, the log, the
    /// progress, the promotions, and the channels hear of its alerts. Its
    /// metrics row, for the output.
    fn committed(&mut self, epoch: Epoch, c: Committing) -> MetricsRow {
        let step = &self.step;
        let mut t = self.totals.borrow_mut();
        record_epoch_metrics(&c.tally, c.wall);
        // Model metrics without a version label (versions are unbounded); the version is its own gauge.
        if c.row.epoch_eval.n > 0 && c.row.epoch_eval.accuracy.is_finite() {
            metrics::gauge!(crate::core::metrics::MODEL_VERSION).set(c.version as f64);
            metrics::gauge!(crate::core::metrics::MODEL_ACCURACY).set(c.row.epoch_eval.accuracy);
            if c.row.epoch_eval.auc.is_finite() {
                metrics::gauge!(crate::core::metrics::MODEL_AUC).set(c.row.epoch_eval.auc);
            }
        }
        t.epochs += 1;
        t.ledger.add(&c.tally);
        if !c.tally.balanced() {
            t.unbalanced_epochs += 1;
            error!(step_id = %step, epoch, ledger = %c.tally, "An epoch's ledger does not balance; this is a bug.");
        }
        t.marks.push(c.mark);
        for f in &c.files {
            info!(step_id = %step, file = %f.name, rows = f.rows, epoch, "Recorded a processed file in the manifest.");
        }
        t.files.extend(c.files);
        if let Some(p) = &self.progress {
            use std::sync::atomic::Ordering::Relaxed;
            p.files_done.store(t.files.len() as u64, Relaxed);
            p.records.fetch_add(c.tally.input, Relaxed);
            let done: u64 = t.files.iter().map(|f| f.size_bytes).sum();
            let reading: u64 = self.sources.iter().flatten().map(|s| s.offset).sum();
            p.bytes_done.store(done + reading, Relaxed);
        }
        if self.registry.is_some() {
            for r in &c.releases {
                if r.promoted {
                    info!(step_id = %step, version = r.version, epoch, "The challenger beat the champion by the promotion rule and is now the champion.");
                    t.promotions.push((epoch, r.version));
                }
                info!(step_id = %step, version = r.version, epoch, "Published a model version to the registry.");
            }
        }
        // Channels hear of an epoch's alerts once it is committed.
        deliver(&mut self.rate, &self.notifiers, &c.alerts, unix_ms());
        t.alerts.extend(c.alerts);
        c.row
    }
}

/// The epoch's end-to-end latency (p50, p99 in ms) from each group of
/// records' arrival to `now_ms`, recorded in the metrics.
fn record_latency(windows: &[WindowPartial], now_ms: i64) -> Vec<f64> {
    let arrivals: Vec<(i64, u64)> = windows
        .iter()
        .flat_map(|w| w.arrivals.iter().copied())
        .collect();
    let latency = latency_percentiles(&arrivals, now_ms, &[50.0, 99.0]);
    // One sample per group of records that arrived together (a file, a
    // fetched batch): the recorder keeps every sample until a scrape, so
    // one per record would grow without bound in a job nobody scrapes.
    let histogram = metrics::histogram!(crate::core::metrics::LATENCY_SECONDS);
    for (t, _) in &arrivals {
        histogram.record((now_ms - t).max(0) as f64 / 1e3);
    }
    if latency[1].is_finite() {
        metrics::gauge!(crate::core::metrics::LATENCY_P99_SECONDS).set(latency[1] / 1e3);
    }
    latency
}

/// What the committer thread makes durable for one epoch, in this order: the
/// alerts and metrics parts, the checkpoint (the commit point), the published
/// parts, the manifest, the pruning of old checkpoints; then the Kafka
/// groups' offsets and the registry's new versions.
struct CommitJob {
    epoch: Epoch,
    /// The sinks' pending parts of the epoch.
    parts: Vec<(String, String)>,
    /// Files that ended in the epoch.
    files: Vec<FileFact>,
    /// Rows of the `alerts` table.
    table_alerts: Vec<Alert>,
    /// The row of the `metrics` table, if it is written.
    row: Option<MetricsRow>,
    /// The checkpoint, without its parts; `None` without checkpointing.
    ckpt: Option<Checkpoint>,
    /// The records' and the labels' Kafka offsets.
    offsets: [BTreeMap<String, i64>; 2],
    /// New model versions: the release, its config, the data range and metrics it earned.
    releases: Vec<Release>,
    now_ms: i64,
}

/// A model version to publish: the release, the config that made it, the
/// event-time range and the prequential metrics it earned.
type Release = (
    millrace_operators::score::ModelRelease,
    serde_json::Value,
    Option<(i64, i64)>,
    EvalMetrics,
);

/// What the committer needs besides the jobs.
struct Committer {
    step: String,
    lake: Lake,
    /// The `alerts` and `metrics` tables' formats and Arrow schemas.
    alerts: (TableFormat<Alert>, SchemaRef),
    metrics: (TableFormat<MetricsRow>, SchemaRef),
    keep: usize,
    write_alerts: bool,
    kafka_commit: [Option<rdkafka::consumer::BaseConsumer>; 2],
    registry: Option<RegistryCtx>,
}

/// An epoch handed to the committer: what the coordinator does once it is durable.
struct Committing {
    row: MetricsRow,
    alerts: Vec<Alert>,
    files: Vec<FileFact>,
    tally: LedgerCounts,
    wall: f64,
    version: u64,
    releases: Vec<millrace_operators::score::ModelRelease>,
    mark: (Epoch, u64, u64, f64),
}

impl Committer {
    /// The committer of the coordinator `c` (its Kafka clients move here).
    fn new(step: &str, c: &mut Coordinator) -> Committer {
        let (alerts, metrics) = (alerts_table(), metrics_table());
        let lake = c.lake.clone();
        Committer {
            step: step.to_string(),
            alerts: {
                let arrow = (alerts.arrow_schema)(&lake.schema);
                (alerts, arrow)
            },
            metrics: {
                let arrow = (metrics.arrow_schema)(&lake.schema);
                (metrics, arrow)
            },
            keep: c.checkpointing.as_ref().map_or(0, |c| c.keep),
            write_alerts: c.alerts_table,
            kafka_commit: [c.kafka_commit.take(), c.label_kafka_commit.take()],
            registry: c.registry.clone(),
            lake,
        }
    }

    /// Makes one epoch durable. See [`CommitJob`].
    fn commit(&self, mut job: CommitJob) -> Result<(), LedgerError> {
        let epoch = job.epoch;
        if self.write_alerts && !job.table_alerts.is_empty() {
            let parts = self.write_table(&self.alerts, "alerts", &job.table_alerts, epoch)?;
            job.parts.extend(parts);
        }
        // The metrics part is written like any sink's: pending until the checkpoint.
        if let Some(row) = &job.row {
            let parts =
                self.write_table(&self.metrics, "metrics", std::slice::from_ref(row), epoch)?;
            job.parts.extend(parts);
        }
        let root = &self.lake.root;
        if let Some(mut ckpt) = job.ckpt.take() {
            crate::crash_point!("before_checkpoint");
            ckpt.parts = std::mem::take(&mut job.parts);
            checkpoint::write(root, &ckpt, || {
                crate::crash_point!("checkpoint_before_rename")
            })
            .and_then(|()| {
                crate::crash_point!("before_publish");
                checkpoint::publish(root, &ckpt.parts)
            })
            .and_then(|()| manifest::append(root, &job.files))
            .and_then(|()| checkpoint::prune(root, self.keep))
            .map_err(|error| LedgerError::Checkpoint {
                epoch,
                root: root.clone(),
                error,
            })?;
            // Epoch committed: the tests' place to hold a job mid-run.
            crate::wait_point!("after_commit");
        } else {
            manifest::append(root, &job.files).map_err(|error| LedgerError::Manifest {
                root: root.clone(),
                error,
            })?;
        }
        // Offsets go back to the groups only once their epoch is committed.
        for (consumer, offsets) in self.kafka_commit.iter().zip(&job.offsets) {
            if let (Some(consumer), false) = (consumer, offsets.is_empty()) {
                if let Err(e) = crate::connectors::kafka::commit_offsets(consumer, offsets) {
                    tracing::warn!(step_id = %self.step, epoch, %e, "Cannot commit offsets to the Kafka group; they are in the checkpoint, retrying next epoch.");
                }
            }
        }
        self.release(&job)
    }

    /// Writes one epoch's rows of a coordinator table (alerts, metrics) as pending parts.
    fn write_table<R>(
        &self,
        (format, arrow): &(TableFormat<R>, SchemaRef),
        table: &'static str,
        rows: &[R],
        epoch: Epoch,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        write_epoch(&self.lake, format, arrow, rows, epoch, 0)
            .map(|commit| commit.parts)
            .map_err(|error| LedgerError::Table {
                table,
                epoch,
                root: self.lake.root.clone(),
                error,
            })
    }

    /// New model versions go to the registry once their epoch is committed.
    fn release(&self, job: &CommitJob) -> Result<(), LedgerError> {
        use crate::dataflow::coordinator::registry;
        let (Some(reg), root) = (&self.registry, &self.lake.root) else {
            return Ok(());
        };
        for (r, config, range, metrics) in &job.releases {
            let version = r.version;
            registry::publish(
                root,
                &reg.name,
                r,
                config,
                &reg.features,
                &reg.fingerprint,
                *range,
                *metrics,
                job.now_ms,
            )
            .map_err(|error| LedgerError::Publish { version, error })?;
            if r.promoted {
                // The rule promoted the challenger: it is the registry's champion too.
                registry::promote(root, &reg.name, &format!("v{version}"))
                    .map_err(|error| LedgerError::Champion { version, error })?;
            }
        }
        if !job.releases.is_empty() {
            registry::prune_states(root, &reg.name, reg.keep_versions)
                .map_err(LedgerError::Prune)?;
        }
        Ok(())
    }
}

/// Why the coordinator stops the run; the run's error prefixes the step.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The checkpoint's monitor state does not decode.
    #[error("cannot restore the monitors from the checkpoint: {0}")]
    Monitors(bincode::Error),
    /// `alerts.jsonl` could not be appended to.
    #[error("cannot append alerts to {}: {error}", path.display())]
    AlertsFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A coordinator table's part could not be written.
    #[error("cannot write the {table} of epoch {epoch} under {}: {error}", root.display())]
    Table {
        /// `alerts` or `metrics`.
        table: &'static str,
        /// The epoch.
        epoch: Epoch,
        /// The lake.
        root: PathBuf,
        /// The storage error.
        error: std::io::Error,
    },
    /// The checkpoint, its publication, the manifest or the pruning failed.
    #[error("cannot checkpoint epoch {epoch} under {}: {error}", root.display())]
    Checkpoint {
        /// The epoch.
        epoch: Epoch,
        /// The lake.
        root: PathBuf,
        /// The storage error.
        error: std::io::Error,
    },
    /// The manifest could not be appended to (a run without checkpoints).
    #[error("cannot record finished files in the manifest under {}: {error}", root.display())]
    Manifest {
        /// The lake.
        root: PathBuf,
        /// The storage error.
        error: std::io::Error,
    },
    /// A model version could not be published.
    #[error("cannot publish model version {version}: {error}")]
    Publish {
        /// The version.
        version: u64,
        /// The registry's error.
        error: super::registry::RegistryError,
    },
    /// A promoted version could not be made the champion.
    #[error("cannot mark version {version} champion: {error}")]
    Champion {
        /// The version.
        version: u64,
        /// The registry's error.
        error: super::registry::RegistryError,
    },
    /// Old versions' states could not be pruned.
    #[error("cannot prune model states: {0}")]
    Prune(super::registry::RegistryError),
}

/// Wall-clock time, ms since the Unix epoch.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Logs and counts alerts as they are raised.
fn announce(step: &str, alerts: &[Alert]) {
    // A storm (a misfitted rule on a sparse stream raises one per window) is
    // not logged line by line: it is all in the lake and the alerts file.
    const LOGGED: usize = 20;
    if alerts.len() > LOGGED {
        tracing::warn!(step_id = %step, epoch = alerts[0].epoch, more = alerts.len() - LOGGED, "More alerts in this epoch than are logged one by one; all are in the lake's alerts table and file.");
    }
    for (i, a) in alerts.iter().enumerate() {
        if i < LOGGED {
            tracing::warn!(step_id = %step, rule_id = %a.rule_id, state = ?a.state, epoch = a.epoch, message = %a.message, "Alert.");
        }
        let state = if a.state == AlertState::Firing {
            "firing"
        } else {
            "resolved"
        };
        metrics::counter!(crate::core::metrics::ALERTS, "rule" => a.rule_id.clone(), "state" => state)
            .increment(1);
    }
}

/// Hands alerts to the channels, within the per-rule rate limit.
fn deliver(
    rate: &mut crate::connectors::notify::RateLimit,
    notifiers: &[crate::connectors::notify::Notifier],
    alerts: &[Alert],
    now_ms: i64,
) {
    let admitted = rate.admit(alerts, now_ms);
    if admitted.is_empty() {
        return;
    }
    for n in notifiers {
        n.send(&admitted);
    }
}

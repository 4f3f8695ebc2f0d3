//! The runtime: runs a compiled topology on timely workers and reports.
//!
//! [`run`] starts `workers` timely worker threads, builds the dataflow of
//! [`crate::dataflow`] on each, steps them until the sources finish (`--once`)
//! or a fault is raised, and returns what the coordinator saw.
//! Faults raised inside operators (a file that cannot be read, a lake write
//! that fails) stop every worker; nothing past the failed epoch is committed.

pub mod lock;
pub mod running;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_operators::learn::eval::EvalMetrics;
use millrace_operators::LedgerCounts;
use tracing::warn;

use crate::connectors::lake::SinkId;
use crate::connectors::landing::FileFact;
use crate::core::fault::Fault;
use crate::dataflow;
use crate::dataflow::coordinator::{checkpoint, ledger, manifest, registry};
use crate::dataflow::progress;
use crate::topology::Compiled;

/// This process's place in a multi-process timely cluster.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// This process's index (0 hosts the coordinator).
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
}

impl Cluster {
    /// Reads a hostfile: one `host:port` per process, in process order (blank lines and `#` comments skipped).
    pub fn from_hostfile(
        path: &std::path::Path,
        processes: usize,
        process: usize,
    ) -> Result<Cluster, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the hostfile {}: {e}", path.display()))?;
        let addresses: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if addresses.len() != processes {
            return Err(format!(
                "the hostfile {} lists {} address(es), but --processes is {processes}",
                path.display(),
                addresses.len()
            ));
        }
        if let Some(bad) = addresses.iter().find(|a| {
            a.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
        }) {
            return Err(format!(
                "the hostfile {}: `{bad}` is not host:port",
                path.display()
            ));
        }
        if process >= processes {
            return Err(format!(
                "--process {process}: expected 0..{}",
                processes - 1
            ));
        }
        Ok(Cluster { process, addresses })
    }
}

/// How to run a topology.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Timely worker threads in this process.
    pub workers: usize,
    /// Several processes over TCP (timely's cluster mode); `None`: this process alone.
    pub cluster: Option<Cluster>,
    /// Read what is in the landing folder, then stop.
    pub once: bool,
    /// When set (e.g. by a signal handler), sources stop at their next epoch
    /// boundary and the run finishes committing what it has read.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// Where the run reports its fault (shared with the live view); a fresh one if `None`.
    pub fault: Option<Fault>,
    /// Show a `--once` run's progress on stderr.
    pub show_progress: bool,
    /// Sample records of the tappable steps here (the live view).
    pub taps: Option<Arc<crate::dataflow::tap::Taps>>,
    /// Set (by the live view's `POST /promote`) to promote the challenger at the next epoch.
    pub promote: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An external fault (I/O on the landing folder or the lake). Fix it and run again:
    /// the manifest and the lake hold only what was fully committed.
    #[error("{0}")]
    External(String),
    /// Timely could not start.
    #[error("cannot start the timely workers: {0}")]
    Startup(String),
    /// A worker panicked (a bug).
    #[error("a worker failed: {0}")]
    Internal(String),
    /// Starting would break a guarantee (the message says what to do).
    #[error("{0}")]
    Refused(String),
    /// Another live job holds the lake (see [`lock`]); nothing was changed.
    #[error("{0}")]
    Locked(lock::LockError),
}

impl From<lock::LockError> for RunError {
    fn from(e: lock::LockError) -> RunError {
        match e {
            held @ lock::LockError::Held { .. } => RunError::Locked(held),
            io => RunError::External(io.to_string()),
        }
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Worker threads, over all processes.
    pub workers: usize,
    /// This process's index and the number of processes.
    pub process: (usize, usize),
    /// Epochs completed.
    pub epochs: u64,
    /// The run's ledger.
    pub ledger: LedgerCounts,
    /// Epochs whose ledger did not balance (a bug if not 0).
    pub unbalanced_epochs: u64,
    /// Whole-run prequential metrics (exact AUC).
    pub eval: EvalMetrics,
    /// Prequential metrics over consecutive runs of epochs (at most 10 groups), in order.
    pub by_epochs: Vec<(std::ops::RangeInclusive<u64>, EvalMetrics)>,
    /// Files read in this run.
    pub files: Vec<FileFact>,
    /// Files, rows and bytes committed per table.
    pub committed: Vec<(SinkId, u64, u64, u64)>,
    /// Wall time.
    pub elapsed: Duration,
    /// The lake.
    pub lake: PathBuf,
    /// The checkpoint epoch the run resumed from.
    pub resumed_from: Option<u64>,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// Alerts raised by the monitors, in order.
    pub alerts: Vec<millrace_operators::monitor::Alert>,
    /// Delayed labels: what became of predictions and labels (levels at the end).
    pub labels: Option<millrace_operators::labels::LabelCounts>,
    /// The challenger's whole-run prequential metrics (exact AUC), when one scored in shadow.
    pub challenger: Option<EvalMetrics>,
    /// Promotions of the challenger: the epoch and the version it became.
    pub promotions: Vec<(u64, u64)>,
}

/// Runs `plan` to completion (with `once`) or until a fault.
pub fn run(plan: Arc<Compiled>, opts: &RunOptions) -> Result<RunSummary, RunError> {
    let delayed_labels = plan.labels.is_some();
    let lake = plan.topology.lake.path.clone();
    let processes = opts.cluster.as_ref().map_or(1, |c| c.addresses.len());
    let process = opts.cluster.as_ref().map_or(0, |c| c.process);
    // Every count of workers below is over the whole cluster: sources, keys and
    // checkpoints are spread over all of them.
    let workers = opts.workers.max(1) * processes;
    // One job per lake, taken before recovery reads or changes anything; held
    // until this function returns. Process 0 alone: see `lock`'s doc.
    let _lock = match process {
        0 => Some(lock::acquire(&lake, "run")?),
        _ => None,
    };
    crate::core::metrics::install();
    let start = prepare(&plan, workers, process == 0)?;
    let facts = manifest::load(&lake).map_err(|e| {
        RunError::External(format!(
            "cannot read the manifest under {}: {e}",
            lake.display()
        ))
    })?;
    let processed = Arc::new(manifest::processed(&facts));
    let resumed_from = start
        .checkpointing
        .as_ref()
        .and_then(|c| c.resumed.as_ref())
        .map(|c| c.epoch);
    // Epochs continue after the checkpoint (or, without checkpoints, after the
    // last recorded file), so part names never collide with another run's.
    let first_epoch = match &start.checkpointing {
        Some(c) => c.resumed.as_ref().map_or(0, |r| r.epoch + 1),
        None => facts.iter().map(|f| f.last_epoch + 1).max().unwrap_or(0),
    };
    // Kafka: assign partitions and resolve start offsets before any worker starts.
    let checkpointed_offsets = start
        .checkpointing
        .as_ref()
        .and_then(|c| c.resumed.as_ref())
        .map(|c| c.kafka.clone())
        .unwrap_or_default();
    let kafka_assignment = Arc::new(match plan.source.kafka() {
        Some(spec) => crate::connectors::kafka::plan(spec, workers, &checkpointed_offsets)
            .map_err(RunError::External)?,
        None => Vec::new(),
    });
    let label_kafka_assignment = Arc::new(
        match plan.labels.as_ref().and_then(|(l, _)| l.kafka.as_ref()) {
            Some(spec) => {
                let checkpointed = start
                    .checkpointing
                    .as_ref()
                    .and_then(|c| c.resumed.as_ref())
                    .map(|c| c.label_kafka.clone())
                    .unwrap_or_default();
                crate::connectors::kafka::plan(spec, workers, &checkpointed)
                    .map_err(RunError::External)?
            }
            None => Vec::new(),
        },
    );
    let kafka_sink = match &plan.topology.sink.kafka {
        Some(spec) => {
            let brokers = spec
                .brokers
                .clone()
                .or(plan.source.kafka().map(|k| k.brokers.clone()))
                .ok_or_else(|| {
                    RunError::Refused(
                        "sink.kafka.brokers: no brokers, and no Kafka source to take them from"
                            .into(),
                    )
                })?;
            // Epochs a previous run of this lake already committed to the topic (only when resuming).
            let lake_id = format!(
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(lake.display().to_string().as_bytes())
            );
            crate::connectors::kafka_sink::ensure_topic(&brokers, &spec.topic, 4)
                .map_err(RunError::External)?;
            if spec.transactional {
                let marker = crate::connectors::kafka_sink::marker_topic(&spec.topic);
                crate::connectors::kafka_sink::ensure_topic(&brokers, &marker, 1)
                    .map_err(RunError::External)?;
            }
            let committed = match (&start.checkpointing, spec.transactional) {
                (Some(c), true) if c.resumed.is_some() => {
                    crate::connectors::kafka_sink::committed_epochs(
                        &brokers,
                        &spec.librdkafka_options,
                        &spec.topic,
                        &lake_id,
                    )
                    .map_err(RunError::External)?
                }
                _ => BTreeMap::new(),
            };
            Some(crate::connectors::kafka_sink::KafkaSink {
                spec: spec.clone(),
                brokers,
                pipeline: plan.topology.name.clone(),
                lake_id,
                committed,
            })
        }
        None => None,
    };
    // Warm start: a published version instead of zero, unless a checkpoint is resumed.
    let warm_start = match (&plan.topology.model.warm_start, resumed_from) {
        (Some(which), None) => {
            let name = &plan.topology.name;
            let from = plan
                .topology
                .model
                .registry
                .clone()
                .unwrap_or_else(|| lake.clone());
            let reg = registry::load(&from, name).map_err(RunError::External)?;
            let v = registry::resolve(&reg, which)
                .map_err(|e| RunError::Refused(format!("model.warm_start: {e}")))?;
            let release = registry::load_state(&from, name, v, &plan.topology.state_fingerprint())
                .map_err(|e| RunError::Refused(format!("model.warm_start: {e}")))?;
            tracing::info!(model = %name, version = v, "Warm start from a published version.");
            Some(release)
        }
        _ => None,
    };
    // Progress of a backfill, on stderr.
    let progress = match (plan.source.landing(), opts.once, process) {
        (Some(l), true, 0) if opts.show_progress => Some(Arc::new(progress::Progress::for_folder(
            &l.path, l.format, &processed,
        ))),
        _ => None,
    };
    let taps = opts.taps.clone();
    let promote = opts.promote.clone();
    let progress_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress_thread = progress
        .clone()
        .map(|p| progress::report(p, progress_done.clone()));
    let checkpointing = start.checkpointing;
    let restore = Arc::new(start.restore);
    // One process speaks for the run: the coordinator's.
    let restart = if process == 0 {
        running::claim(&lake)?
    } else {
        None
    };
    let fault = opts.fault.clone().unwrap_or_default();
    let started = Instant::now();
    let config = match &opts.cluster {
        None => timely::Config::process(opts.workers.max(1)),
        Some(c) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: opts.workers.max(1),
                process: c.process,
                addresses: c.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    };
    let once = opts.once;
    let stop = opts.stop.clone();
    let worker_fault = fault.clone();
    let guards = timely::execute(config, move |worker| {
        let totals = Rc::new(RefCell::new(ledger::RunTotals::default()));
        let fault = worker_fault.clone();
        let index = worker.index();
        let done = worker.dataflow::<millrace_operators::Epoch, _, _>(|scope| {
            dataflow::build(
                scope,
                &plan,
                dataflow::Context {
                    once,
                    processed: (*processed).clone(),
                    first_epoch,
                    fault: fault.clone(),
                    stop: stop.clone(),
                    totals: totals.clone(),
                    checkpointing: checkpointing.clone(),
                    restore: restore.clone(),
                    kafka_assignment: kafka_assignment.clone(),
                    label_kafka_assignment: label_kafka_assignment.clone(),
                    prepared_sinks: kafka_sink
                        .iter()
                        .map(|k| Arc::new(k.clone()) as Arc<dyn crate::connectors::Sink + Send + Sync>)
                        .collect(),
                    restart: restart.clone(),
                    warm_start: warm_start.clone(),
                    progress: progress.clone(),
                    taps: taps.clone(),
                    promote: promote.clone(),
                },
            )
        });
        let done = match done {
            Ok(probe) => probe,
            Err(e) => {
                fault.raise(e.to_string());
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
                return (index, totals.borrow().clone());
            }
        };
        // A panic in an operator (a bug) must stop every worker, not leave the
        // others waiting for progress that will never come.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while !fault.is_raised() && !done.done() {
                worker.step_or_park(Some(Duration::from_millis(50)));
            }
        }));
        if let Err(p) = stepped {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            // A process that went away poisons the queues its peers read: not a bug.
            if what.contains("MergeQueue poisoned") || what.contains("timely communication error") {
                fault.raise(format!(
                    "lost the connection to another process of the cluster; every process stops (restart all of them to resume from the last checkpoint) [{what}]"
                ));
            } else {
                fault.raise(format!("worker {index} failed (a bug): {what}"));
            }
            return (index, totals.borrow().clone());
        }
        if fault.is_raised() {
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        }
        let t = totals.borrow().clone();
        (index, t)
    })
    .map_err(RunError::Startup)?;
    let mut totals = None;
    let mut failed = None;
    // Joining also joins the network threads, which panic if another process
    // went away: that is an error to report, not a crash.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()))
        .unwrap_or_else(|_| {
            vec![Err(
                "timely communication error: a network thread failed".into()
            )]
        });
    progress_done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = progress_thread {
        let _ = t.join();
    }
    for r in joined {
        match r {
            Ok((0, t)) => totals = Some(t),
            Ok(_) => {}
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(message) = fault.message() {
        return Err(RunError::External(message));
    }
    if let Some(e) = failed {
        // A process that dies closes its connections: the others' network threads
        // fail and poison the queues their workers read.
        if processes > 1
            && (e.contains("MergeQueue poisoned") || e.contains("timely communication error"))
        {
            return Err(RunError::External(format!(
                "process {process}: lost the connection to another process of the cluster; every process stops (restart all of them to resume from the last checkpoint) [{e}]"
            )));
        }
        return Err(RunError::Internal(e));
    }
    let mut t = match totals {
        Some(t) => t,
        // The coordinator is worker 0, in process 0: the others only report that they finished.
        None if process > 0 => ledger::RunTotals::default(),
        None => return Err(RunError::Internal("worker 0 reported nothing".into())),
    };
    if process == 0 {
        running::release(&lake);
    }
    let by_epochs = t.by_epoch_groups(10);
    Ok(RunSummary {
        workers,
        process: (process, processes),
        epochs: t.epochs,
        ledger: t.ledger,
        unbalanced_epochs: t.unbalanced_epochs,
        eval: t.eval.metrics(),
        by_epochs,
        files: t.files,
        committed: t
            .committed
            .into_iter()
            .map(|(k, (f, r, b))| (k, f, r, b))
            .collect(),
        elapsed: started.elapsed(),
        lake,
        resumed_from,
        peak_rss_bytes: peak_rss_bytes(),
        alerts: t.alerts.clone(),
        labels: delayed_labels.then_some(t.eval.labels),
        challenger: t.eval.shadow.as_mut().map(|s| s.metrics()),
        promotions: t.promotions.clone(),
    })
}

/// How a run starts: checkpointing, the checkpoint resumed, and the state to restore.
struct Start {
    checkpointing: Option<ledger::Checkpointing>,
    restore: BTreeMap<(String, usize), Vec<u8>>,
}

/// Finds the checkpoint to resume, brings the lake back to it (`recover`: only
/// the coordinator's process changes the lake; the others read the same
/// checkpoint, which recovery never removes), and loads its state. Refuses to
/// start over a lake with committed data but no usable checkpoint.
fn prepare(plan: &Compiled, workers: usize, recover: bool) -> Result<Start, RunError> {
    let t = &plan.topology;
    let lake = &t.lake.path;
    if !t.checkpoint.enabled {
        return Ok(Start {
            checkpointing: None,
            restore: BTreeMap::new(),
        });
    }
    let io = |what: &str, e: std::io::Error| {
        RunError::External(format!("cannot {what} under {}: {e}", lake.display()))
    };
    let topology = t.state_fingerprint();
    let (newest, rejected) = checkpoint::newest(lake);
    let resumed = match newest {
        Some(c) => {
            if c.workers != workers {
                return Err(RunError::Refused(format!(
                    "the lake {} was checkpointed by a run with {} worker(s); resume it with --workers {} \
                     (keyed state is partitioned over the workers; rescaling a checkpoint is not supported yet)",
                    lake.display(),
                    c.workers,
                    c.workers
                )));
            }
            if c.topology != topology {
                return Err(RunError::Refused(format!(
                    "the lake {} was checkpointed under a different schema, cleaning, features or model; \
                     its state does not fit this topology. Use a new lake (--lake DIR), or restore the topology that wrote it",
                    lake.display()
                )));
            }
            for r in &rejected {
                warn!(checkpoint = %r.file.display(), reason = %r.reason, "Falling back past an unusable checkpoint.");
            }
            if recover {
                checkpoint::recover(lake, Some(&c))
                    .map_err(|e| io("roll the lake back to its checkpoint", e))?;
            }
            Some(c)
        }
        None => {
            if checkpoint::has_committed_data(lake).map_err(|e| io("look for committed data", e))? {
                let why = if rejected.is_empty() {
                    "it has no checkpoint (was it written with checkpoints off, or by an older millrace?)".to_string()
                } else {
                    let reasons: Vec<String> = rejected
                        .iter()
                        .map(|r| format!("{}: {}", r.file.display(), r.reason))
                        .collect();
                    format!("no checkpoint in it is usable ({})", reasons.join("; "))
                };
                return Err(RunError::Refused(format!(
                    "the lake {} holds committed data but {why}. Starting from empty would duplicate or lose output, \
                     so millrace will not. Move the lake aside (or delete it) to start over, or run with --lake DIR",
                    lake.display()
                )));
            }
            if recover {
                checkpoint::recover(lake, None).map_err(|e| io("clear uncommitted files", e))?;
            }
            None
        }
    };
    let restore = match &resumed {
        Some(c) => {
            checkpoint::load_states(lake, c).map_err(|e| io("load the checkpointed state", e))?
        }
        None => BTreeMap::new(),
    };
    Ok(Start {
        checkpointing: Some(ledger::Checkpointing {
            keep: t.checkpoint.keep,
            workers,
            topology,
            resumed,
        }),
        restore,
    })
}

/// Peak resident memory of this process so far (Linux), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let (process, processes) = self.process;
        if process > 0 {
            return write!(
                f,
                "process {process} of {processes}: done in {secs:.2} s (process 0 hosts the coordinator and prints the run's summary)"
            );
        }
        if let Some(e) = self.resumed_from {
            writeln!(f, "resumed from the checkpoint of epoch {e}")?;
        }
        writeln!(
            f,
            "run: {} file(s), {} epoch(s), {} worker(s){}, {:.2} s, {:.0} records/s",
            self.files.len(),
            self.epochs,
            self.workers,
            if processes > 1 {
                format!(" in {processes} processes")
            } else {
                String::new()
            },
            secs,
            self.ledger.input as f64 / secs.max(1e-9)
        )?;
        writeln!(f, "ledger: {}", self.ledger)?;
        if self.ledger.rejected_total() > 0 {
            let reasons: Vec<String> = self
                .ledger
                .reasons()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            writeln!(
                f,
                "rejected: {} malformed + {} invalid ({})",
                self.ledger.malformed(),
                self.ledger.invalid(),
                reasons.join(", ")
            )?;
        }
        if self.eval.n > 0 && self.eval.mae.is_finite() {
            writeln!(
                f,
                "model (prequential, {} labelled): MAE {:.5}  RMSE {:.5}",
                self.eval.n, self.eval.mae, self.eval.rmse
            )?;
        } else if self.eval.n > 0 {
            writeln!(
                f,
                "model (prequential, {} labelled): accuracy {:.5}  log loss {:.5}  ROC AUC {:.5}",
                self.eval.n, self.eval.accuracy, self.eval.log_loss, self.eval.auc
            )?;
        }
        if let Some(c) = &self.challenger {
            writeln!(
                f,
                "challenger (shadow, {} labelled): accuracy {:.5}  log loss {:.5}  ROC AUC {:.5}",
                c.n, c.accuracy, c.log_loss, c.auc
            )?;
        }
        for (epoch, version) in &self.promotions {
            writeln!(f, "promoted: the challenger became the champion after epoch {epoch}, as version {version}")?;
        }
        if let Some(l) = &self.labels {
            writeln!(
                f,
                "late labels: {} learned, {} predictions expired, {} labels orphaned; waiting at the end: {} predictions, {} joined not yet due, {} labels",
                l.learned, l.expired, l.orphaned, l.waiting, l.due, l.early
            )?;
        }
        if self.by_epochs.len() > 1 {
            writeln!(
                f,
                "model by epoch:      labelled  accuracy  log loss   ROC AUC"
            )?;
            for (range, m) in &self.by_epochs {
                writeln!(
                    f,
                    "  {:>8} – {:<8} {:>9}   {:.5}   {:.5}   {:.5}",
                    range.start(),
                    range.end(),
                    m.n,
                    m.accuracy,
                    m.log_loss,
                    m.auc
                )?;
            }
        }
        writeln!(
            f,
            "peak memory: {:.1} MB",
            self.peak_rss_bytes as f64 / 1_048_576.0
        )?;
        if !self.alerts.is_empty() {
            // A long list (a rule that does not fit the stream) is in the lake, not on the terminal.
            const LISTED: usize = 50;
            writeln!(f, "alerts: {} raised", self.alerts.len())?;
            if self.alerts.len() > LISTED {
                writeln!(
                    f,
                    "  (the first {LISTED}; all {} are in the lake's alerts table)",
                    self.alerts.len()
                )?;
            }
            for a in self.alerts.iter().take(LISTED) {
                writeln!(
                    f,
                    "  epoch {:>6}  {:<8} {:?} {}",
                    a.epoch,
                    format!("{:?}", a.state).to_lowercase(),
                    a.severity,
                    a.message
                )?;
            }
        }
        if let Some((_, _, rows, bytes)) = self.committed.iter().find(|c| c.0 == SinkId::Kafka) {
            writeln!(f, "kafka: {rows} scored records produced ({bytes} bytes)")?;
        }
        if let Some((_, _, rows, bytes)) = self.committed.iter().find(|c| c.0 == SinkId::Csv) {
            writeln!(f, "csv: {rows} rows appended ({bytes} bytes)")?;
        }
        let tables: Vec<String> = self
            .committed
            .iter()
            .filter(|c| matches!(c.0, SinkId::Lake(_)))
            .map(|(t, files, rows, _)| format!("{} {rows} rows in {files} files", t.name()))
            .collect();
        write!(
            f,
            "lake: {} ({})",
            self.lake.display(),
            if tables.is_empty() {
                "nothing new".into()
            } else {
                tables.join(", ")
            }
        )
    }
}

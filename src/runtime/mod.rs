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

use crate::connectors::compaction;
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

/// A hostfile that does not describe the cluster.
#[derive(Debug, thiserror::Error)]
pub enum HostfileError {
    /// It could not be read.
    #[error("cannot read the hostfile {}: {error}", path.display())]
    Read {
        /// The hostfile.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// It lists another number of processes than `--processes`.
    #[error("the hostfile {} lists {listed} address(es), but --processes is {processes}", path.display())]
    Count {
        /// The hostfile.
        path: PathBuf,
        /// Addresses it lists.
        listed: usize,
        /// `--processes`.
        processes: usize,
    },
    /// A line is not `host:port`.
    #[error("the hostfile {}: `{entry}` is not host:port", path.display())]
    NotHostPort {
        /// The hostfile.
        path: PathBuf,
        /// The line.
        entry: String,
    },
    /// `--process` is not one of them.
    #[error("--process {process}: expected 0..{}", processes.saturating_sub(1))]
    Process {
        /// `--process`.
        process: usize,
        /// `--processes`.
        processes: usize,
    },
}

impl Cluster {
    /// Reads a hostfile: one `host:port` per process, in process order (blank lines and `#` comments skipped).
    pub fn from_hostfile(
        path: &std::path::Path,
        processes: usize,
        process: usize,
    ) -> Result<Cluster, HostfileError> {
        let text = std::fs::read_to_string(path).map_err(|error| HostfileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let addresses: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if addresses.len() != processes {
            return Err(HostfileError::Count {
                path: path.to_path_buf(),
                listed: addresses.len(),
                processes,
            });
        }
        let host_port = |a: &String| {
            a.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_some()
        };
        if let Some(bad) = addresses.iter().find(|a| !host_port(a)) {
            return Err(HostfileError::NotHostPort {
                path: path.to_path_buf(),
                entry: bad.clone(),
            });
        }
        if process >= processes {
            return Err(HostfileError::Process { process, processes });
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
    let resumed = start
        .checkpointing
        .as_ref()
        .and_then(|c| c.resumed.as_ref());
    let resumed_from = resumed.map(|c| c.epoch);
    // Epochs continue after the checkpoint (or, without checkpoints, after the
    // last recorded file), so part names never collide with another run's.
    let first_epoch = match &start.checkpointing {
        Some(_) => resumed_from.map_or(0, |e| e + 1),
        None => facts.iter().map(|f| f.last_epoch + 1).max().unwrap_or(0),
    };
    let (kafka_assignment, label_kafka_assignment) = kafka_assignments(&plan, &start, workers)?;
    let kafka_sink = prepare_kafka_sink(&plan, &start, &lake)?;
    let warm_start = warm_start(&plan, resumed_from, &lake)?;
    let processed = manifest::processed(&facts);
    let (progress, progress_done, progress_thread) =
        show_progress(&plan, opts, process, &processed);
    // One process speaks for the run: the coordinator's.
    let restart = if process == 0 {
        running::claim(&lake)?
    } else {
        None
    };
    let fault = opts.fault.clone().unwrap_or_default();
    let shared = WorkerShared {
        plan: plan.clone(),
        processes,
        once: opts.once,
        processed: Arc::new(processed),
        first_epoch,
        fault: fault.clone(),
        stop: opts.stop.clone(),
        checkpointing: start.checkpointing,
        restore: Arc::new(start.restore),
        kafka_assignment: Arc::new(kafka_assignment),
        label_kafka_assignment: Arc::new(label_kafka_assignment),
        kafka_sink,
        restart,
        warm_start,
        progress,
        taps: opts.taps.clone(),
        promote: opts.promote.clone(),
    };
    let compaction = start_compaction(&plan, process);
    let started = Instant::now();
    let guards = timely::execute(timely_config(opts), move |worker| shared.work(worker))
        .map_err(RunError::Startup)?;
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
    let totals = coordinator_totals(joined, &fault, process, processes)?;
    finish_compaction(compaction, &lake, opts.once)?;
    if process == 0 {
        running::release(&lake);
    }
    Ok(RunSummary::new(
        totals,
        &plan,
        workers,
        (process, processes),
        started.elapsed(),
        resumed_from,
    ))
}

/// Compaction beside the dataflow (with `[lake.compaction]`), on the
/// coordinator's process only: its passes commit through create-only
/// records (see `connectors::compaction`).
fn start_compaction(plan: &Compiled, process: usize) -> Option<compaction::Background> {
    let lake = &plan.topology.lake;
    match (&lake.compaction, process) {
        (Some(spec), 0) => Some(compaction::Background::start(
            &lake.path,
            &lake.tables,
            spec,
        )),
        _ => None,
    }
}

/// Stops the background compaction; a `--once` run has made its last
/// commit, so every partition is closed and is compacted now.
fn finish_compaction(
    compaction: Option<compaction::Background>,
    lake: &std::path::Path,
    once: bool,
) -> Result<(), RunError> {
    let Some(c) = compaction else {
        return Ok(());
    };
    let done = c
        .finish(once)
        .map_err(|e| RunError::External(format!("cannot compact {}: {e}", lake.display())))?;
    if done.partitions > 0 {
        tracing::info!(lake = %lake.display(), %done, "Compacted the lake.");
    }
    Ok(())
}

/// What every worker thread starts from: the plan and what was prepared for
/// it before timely started (the checkpoint, assignments, the Kafka sink).
struct WorkerShared {
    plan: Arc<Compiled>,
    /// Processes in the job (1: this process alone).
    processes: usize,
    once: bool,
    processed: Arc<crate::connectors::landing::Processed>,
    first_epoch: u64,
    fault: Fault,
    stop: Arc<std::sync::atomic::AtomicBool>,
    checkpointing: Option<ledger::Checkpointing>,
    restore: Arc<BTreeMap<(String, usize), Vec<u8>>>,
    kafka_assignment: Arc<Vec<Vec<crate::connectors::kafka::Assigned>>>,
    label_kafka_assignment: Arc<Vec<Vec<crate::connectors::kafka::Assigned>>>,
    kafka_sink: Option<crate::connectors::kafka_sink::KafkaSink>,
    restart: Option<String>,
    warm_start: Option<millrace_operators::score::ModelRelease>,
    progress: Option<Arc<progress::Progress>>,
    taps: Option<Arc<crate::dataflow::tap::Taps>>,
    promote: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl WorkerShared {
    /// The dataflow's context on one worker, which keeps its totals in `totals`.
    fn context(&self, totals: Rc<RefCell<ledger::RunTotals>>) -> dataflow::Context {
        dataflow::Context {
            once: self.once,
            processed: (*self.processed).clone(),
            first_epoch: self.first_epoch,
            fault: self.fault.clone(),
            stop: self.stop.clone(),
            totals,
            checkpointing: self.checkpointing.clone(),
            restore: self.restore.clone(),
            kafka_assignment: self.kafka_assignment.clone(),
            label_kafka_assignment: self.label_kafka_assignment.clone(),
            prepared_sinks: self
                .kafka_sink
                .iter()
                .map(|k| Arc::new(k.clone()) as Arc<dyn crate::connectors::Sink + Send + Sync>)
                .collect(),
            restart: self.restart.clone(),
            warm_start: self.warm_start.clone(),
            progress: self.progress.clone(),
            taps: self.taps.clone(),
            promote: self.promote.clone(),
        }
    }

    /// One worker: builds the dataflow and steps it until it is done or a
    /// fault is raised; returns its index and totals.
    fn work(&self, worker: &mut timely::worker::Worker) -> (usize, ledger::RunTotals) {
        let totals = Rc::new(RefCell::new(ledger::RunTotals::default()));
        let fault = &self.fault;
        let index = worker.index();
        let done = worker.dataflow::<millrace_operators::Epoch, _, _>(|scope| {
            dataflow::build(scope, &self.plan, self.context(totals.clone()))
        });
        let done = match done {
            Ok(probe) => probe,
            Err(e) => {
                fault.raise(e.to_string());
                self.stop_the_cluster();
                drop_dataflows(worker);
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
            if is_lost_peer(&what) {
                fault.raise(format!("{LOST_PEER} [{what}]"));
            } else {
                fault.raise(format!("worker {index} failed (a bug): {what}"));
            }
            return (index, totals.borrow().clone());
        }
        if fault.is_raised() {
            self.stop_the_cluster();
            drop_dataflows(worker);
        }
        let t = totals.borrow().clone();
        (index, t)
    }

    /// After a fault on this process, in a job of several: exits the process.
    ///
    /// Timely cannot tell the other processes: a process whose workers leave
    /// their dataflows shuts its connections down cleanly, and its peers then
    /// wait for its progress forever (the job hangs). Exiting at once, as if
    /// killed, ends the connections mid-stream instead: the peers' network
    /// threads fail, their workers stop with the lost-peer error, and every
    /// process exits. Nothing is lost: the epoch in flight was not
    /// checkpointed, and restarting every process resumes from the last
    /// checkpoint. A fault that is itself a lost peer needs no exit: that
    /// peer's connections are gone already.
    fn stop_the_cluster(&self) {
        let Some(message) = self.fault.message() else {
            return;
        };
        if self.processes > 1 && !message.starts_with(LOST_PEER) {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}

fn drop_dataflows(worker: &mut timely::worker::Worker) {
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
}

const LOST_PEER: &str = "lost the connection to another process of the cluster; every process stops (restart all of them to resume from the last checkpoint)";

/// A process that dies closes its connections: the others' network threads
/// fail and poison the queues their workers read.
fn is_lost_peer(what: &str) -> bool {
    what.contains("MergeQueue poisoned") || what.contains("timely communication error")
}

/// The progress of a backfill (`--once` over a landing folder), shown on
/// stderr by process 0: the counters, the flag that ends the display, its thread.
#[allow(clippy::type_complexity)]
fn show_progress(
    plan: &Compiled,
    opts: &RunOptions,
    process: usize,
    processed: &crate::connectors::landing::Processed,
) -> (
    Option<Arc<progress::Progress>>,
    Arc<std::sync::atomic::AtomicBool>,
    Option<std::thread::JoinHandle<()>>,
) {
    let progress = match (plan.source.landing(), opts.once, process) {
        (Some(l), true, 0) if opts.show_progress => Some(Arc::new(progress::Progress::for_folder(
            &l.path, l.format, processed,
        ))),
        _ => None,
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = progress.clone().map(|p| progress::report(p, done.clone()));
    (progress, done, thread)
}

/// The workers' results: the coordinator's totals (worker 0, in process 0;
/// the others only report that they finished), or the fault that stopped them.
fn coordinator_totals(
    joined: Vec<Result<(usize, ledger::RunTotals), String>>,
    fault: &Fault,
    process: usize,
    processes: usize,
) -> Result<ledger::RunTotals, RunError> {
    let mut totals = None;
    let mut failed = None;
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
        if processes > 1 && is_lost_peer(&e) {
            return Err(RunError::External(format!(
                "process {process}: {LOST_PEER} [{e}]"
            )));
        }
        return Err(RunError::Internal(e));
    }
    match totals {
        Some(t) => Ok(t),
        None if process > 0 => Ok(ledger::RunTotals::default()),
        None => Err(RunError::Internal("worker 0 reported nothing".into())),
    }
}

/// Timely's configuration: threads in this process, and the cluster's addresses.
fn timely_config(opts: &RunOptions) -> timely::Config {
    match &opts.cluster {
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
    }
}

type Assignments = Vec<Vec<crate::connectors::kafka::Assigned>>;

/// Kafka: the records' and the labels' partitions assigned to the workers,
/// with their start offsets, before any worker starts.
fn kafka_assignments(
    plan: &Compiled,
    start: &Start,
    workers: usize,
) -> Result<(Assignments, Assignments), RunError> {
    let resumed = start
        .checkpointing
        .as_ref()
        .and_then(|c| c.resumed.as_ref());
    let records = match plan.source.kafka() {
        Some(spec) => {
            let offsets = resumed.map(|c| c.kafka.clone()).unwrap_or_default();
            crate::connectors::kafka::plan(spec, workers, &offsets)
                .map_err(|e| RunError::External(e.to_string()))?
        }
        None => Vec::new(),
    };
    let labels = match plan.labels.as_ref().and_then(|(l, _)| l.kafka.as_ref()) {
        Some(spec) => {
            let offsets = resumed.map(|c| c.label_kafka.clone()).unwrap_or_default();
            crate::connectors::kafka::plan(spec, workers, &offsets)
                .map_err(|e| RunError::External(e.to_string()))?
        }
        None => Vec::new(),
    };
    Ok((records, labels))
}

/// The Kafka sink, its topics made sure of; whether it resumes a checkpoint
/// (each worker reads the epochs it already committed once its transactions are initialised).
fn prepare_kafka_sink(
    plan: &Compiled,
    start: &Start,
    lake: &std::path::Path,
) -> Result<Option<crate::connectors::kafka_sink::KafkaSink>, RunError> {
    use crate::connectors::kafka_sink::{ensure_topic, marker_topic, KafkaSink};
    let Some(spec) = &plan.topology.sink.kafka else {
        return Ok(None);
    };
    let brokers = spec
        .brokers
        .clone()
        .or(plan.source.kafka().map(|k| k.brokers.clone()))
        .ok_or_else(|| {
            RunError::Refused(
                "sink.kafka.brokers: no brokers, and no Kafka source to take them from".into(),
            )
        })?;
    // Names this lake in the marker topic (epochs its runs committed to Kafka).
    let lake_id = format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(lake.display().to_string().as_bytes())
    );
    ensure_topic(&brokers, &spec.topic, 4).map_err(|e| RunError::External(e.to_string()))?;
    if spec.transactional {
        ensure_topic(&brokers, &marker_topic(&spec.topic), 1)
            .map_err(|e| RunError::External(e.to_string()))?;
    }
    let resuming = start
        .checkpointing
        .as_ref()
        .is_some_and(|c| c.resumed.is_some());
    Ok(Some(KafkaSink {
        spec: spec.clone(),
        brokers,
        pipeline: plan.topology.name.clone(),
        lake_id,
        resuming,
    }))
}

/// Warm start: a published version instead of zero, unless a checkpoint is resumed.
fn warm_start(
    plan: &Compiled,
    resumed_from: Option<u64>,
    lake: &std::path::Path,
) -> Result<Option<millrace_operators::score::ModelRelease>, RunError> {
    let (Some(which), None) = (&plan.topology.model.warm_start, resumed_from) else {
        return Ok(None);
    };
    let name = &plan.topology.name;
    let from = plan
        .topology
        .model
        .registry
        .clone()
        .unwrap_or_else(|| lake.to_path_buf());
    let reg = registry::load(&from, name).map_err(|e| RunError::External(e.to_string()))?;
    let v = registry::resolve(&reg, which)
        .map_err(|e| RunError::Refused(format!("model.warm_start: {e}")))?;
    let release = registry::load_state(&from, name, v, &plan.topology.state_fingerprint())
        .map_err(|e| RunError::Refused(format!("model.warm_start: {e}")))?;
    tracing::info!(model = %name, version = v, "Warm start from a published version.");
    Ok(Some(release))
}

impl RunSummary {
    /// The summary of a run from the coordinator's totals.
    fn new(
        mut t: ledger::RunTotals,
        plan: &Compiled,
        workers: usize,
        process: (usize, usize),
        elapsed: Duration,
        resumed_from: Option<u64>,
    ) -> RunSummary {
        let by_epochs = t.by_epoch_groups(10);
        RunSummary {
            workers,
            process,
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
            elapsed,
            lake: plan.topology.lake.path.clone(),
            resumed_from,
            peak_rss_bytes: peak_rss_bytes(),
            alerts: t.alerts.clone(),
            labels: plan.labels.is_some().then_some(t.eval.labels),
            challenger: t.eval.shadow.as_mut().map(|s| s.metrics()),
            promotions: t.promotions.clone(),
        }
    }
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
        self.fmt_model(f)?;
        writeln!(
            f,
            "peak memory: {:.1} MB",
            self.peak_rss_bytes as f64 / 1_048_576.0
        )?;
        self.fmt_alerts(f)?;
        self.fmt_outputs(f)
    }
}

impl RunSummary {
    /// The model's lines: prequential metrics, the challenger, promotions, late labels, by epoch.
    fn fmt_model(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
        Ok(())
    }

    /// The alerts raised (the first 50).
    fn fmt_alerts(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
        Ok(())
    }

    /// What was written: Kafka, CSV and the lake's tables.
    fn fmt_outputs(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

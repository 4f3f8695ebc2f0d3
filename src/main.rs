//! The `millrace` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use millrace::gen::{generate, GenFormat, GenOptions};
use millrace::runtime::{self, RunOptions};
use millrace::topology::{Compiled, Topology};

/// How long a run may take to stop after SIGINT/SIGTERM before it exits as if killed.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// millrace: streaming ML pipelines on timely dataflow.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a topology.
    Run {
        /// The topology file.
        topology: PathBuf,
        /// Timely worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Process the files in the landing folder, then exit (backfill).
        #[arg(long)]
        once: bool,
        /// Use this landing folder instead of the topology's.
        #[arg(long)]
        landing: Option<PathBuf>,
        /// Use this lake folder instead of the topology's.
        #[arg(long)]
        lake: Option<PathBuf>,
        /// Use these Kafka bootstrap servers (host:port[,host:port]) instead of the topology's.
        #[arg(long)]
        brokers: Option<String>,
        /// Processes in the cluster (timely's cluster mode; each runs --workers threads).
        #[arg(long, default_value_t = 1, requires = "hostfile")]
        processes: usize,
        /// This process's index in the cluster (0 hosts the coordinator).
        #[arg(long, default_value_t = 0)]
        process: usize,
        /// One host:port per process, in process order.
        #[arg(long)]
        hostfile: Option<PathBuf>,
        /// Start this many local processes on loopback and wait for them (try the cluster on one machine).
        #[arg(long, conflicts_with_all = ["hostfile", "process"])]
        local_cluster: Option<usize>,
        /// Serve the live view (/, /metrics, /healthz, /dataflow) here, e.g. 127.0.0.1:9898.
        #[arg(long)]
        http_addr: Option<String>,
    },
    /// Write the HTML report of a lake (charts of input, rejects, model quality, alerts, latency).
    Report {
        /// The lake.
        lake: PathBuf,
        /// The page to write.
        #[arg(short, long, default_value = "report.html")]
        out: PathBuf,
        /// The page's title.
        #[arg(long)]
        title: Option<String>,
    },
    /// Print a Grafana dashboard (JSON) for the metrics millrace exports.
    Grafana,
    /// Print sampled records leaving a step of a running job (`clean`, `rejected`, `score`).
    Tap {
        /// The topology of the running job (its `[runtime] http_addr` says where it is).
        topology: PathBuf,
        /// The step.
        step: String,
        /// The job's live view, if not the topology's `http_addr`.
        #[arg(long)]
        addr: Option<String>,
        /// Stop after this many records.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Check a topology and print the dataflow it builds.
    Validate {
        /// The topology file.
        topology: PathBuf,
    },
    /// Write the synthetic transaction stream (with known faults) and its ground truth.
    Gen(GenArgs),
    /// The model registry of a lake: published versions and the champion.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// List the published versions (the champion is marked).
    List {
        /// The lake.
        lake: PathBuf,
        /// The model (pipeline) name; needed when the lake has several.
        #[arg(long)]
        model: Option<String>,
    },
    /// Print a version's model.json (`champion`, `latest` or `v<N>`).
    Show {
        /// The lake.
        lake: PathBuf,
        /// Which version.
        version: String,
        /// The model (pipeline) name.
        #[arg(long)]
        model: Option<String>,
    },
    /// Make a version the champion (warm starts with `champion` take it).
    Promote {
        /// The lake.
        lake: PathBuf,
        /// Which version.
        version: String,
        /// The model (pipeline) name.
        #[arg(long)]
        model: Option<String>,
    },
    /// Promote the challenger of a running job now (its live view's `POST /promote`).
    PromoteChallenger {
        /// The job's `--http-addr`.
        #[arg(long)]
        addr: String,
    },
    /// Go back to the previous champion.
    Rollback {
        /// The lake.
        lake: PathBuf,
        /// The model (pipeline) name.
        #[arg(long)]
        model: Option<String>,
    },
}

/// Writes `bytes` to `path` through a temporary name in the same folder (a
/// landing folder never sees a half-written file).
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(millrace::core::storage::write_atomic(path, bytes)?)
}

/// The one model in `lake`, or the named one.
fn model_name(lake: &std::path::Path, model: Option<String>) -> anyhow::Result<String> {
    use millrace::dataflow::coordinator::registry;
    if let Some(m) = model {
        return Ok(m);
    }
    let all = registry::models(lake);
    match all.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no model is published in {}", lake.display()),
        many => bail!(
            "{} holds several models ({}); pass --model NAME",
            lake.display(),
            many.join(", ")
        ),
    }
}

fn models(action: ModelsAction) -> anyhow::Result<()> {
    use millrace::dataflow::coordinator::registry;
    match action {
        ModelsAction::List { lake, model } => {
            let name = model_name(&lake, model)?;
            let reg = registry::load(&lake, &name).map_err(anyhow::Error::msg)?;
            let champion = reg.champion();
            println!(
                "model `{name}` in {}: {} version(s)",
                lake.display(),
                reg.versions.len()
            );
            println!(
                "  version     epoch    records   labelled   accuracy   log loss    ROC AUC   state"
            );
            // Whether the version's exact state is kept (warm-startable) or pruned (`keep_versions`).
            let state = |v: u64| {
                if registry::state_path(&lake, &name, v).exists() {
                    "kept"
                } else {
                    "pruned"
                }
            };
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.5}"));
            for v in &reg.versions {
                println!(
                    "{} v{:<8} {:>7} {:>10} {:>10}   {:>8}   {:>8}   {:>8}   {}",
                    if Some(v.version) == champion {
                        "*"
                    } else {
                        " "
                    },
                    v.version,
                    v.epoch,
                    v.records,
                    v.metrics.n,
                    f(v.metrics.accuracy),
                    f(v.metrics.log_loss),
                    f(v.metrics.auc),
                    state(v.version)
                );
            }
            if let Some(c) = champion {
                println!(
                    "champion: v{c}{}",
                    if reg.pinned.is_some() {
                        " (promoted)"
                    } else {
                        " (newest)"
                    }
                );
            }
        }
        ModelsAction::Show {
            lake,
            version,
            model,
        } => {
            let name = model_name(&lake, model)?;
            let reg = registry::load(&lake, &name).map_err(anyhow::Error::msg)?;
            let v = registry::resolve(&reg, &version).map_err(anyhow::Error::msg)?;
            let p = registry::dir(&lake, &name)
                .join(format!("v{v}"))
                .join("model.json");
            print!(
                "{}",
                std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?
            );
            println!();
        }
        ModelsAction::Promote {
            lake,
            version,
            model,
        } => {
            let name = model_name(&lake, model)?;
            // The running job rewrites the registry too: not while one holds the lake.
            let _lock = millrace::runtime::lock::acquire(&lake, "models promote")?;
            let v = registry::promote(&lake, &name, &version).map_err(anyhow::Error::msg)?;
            println!("champion of `{name}`: v{v}");
        }
        ModelsAction::PromoteChallenger { addr } => {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr)
                .with_context(|| format!("cannot reach the job's live view at {addr}"))?;
            write!(
                s,
                "POST /promote HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).trim();
            anyhow::ensure!(out.starts_with("HTTP/1.1 202"), "{addr}: {body}");
            println!("{body}");
        }
        ModelsAction::Rollback { lake, model } => {
            let name = model_name(&lake, model)?;
            let _lock = millrace::runtime::lock::acquire(&lake, "models rollback")?;
            let v = registry::rollback(&lake, &name).map_err(anyhow::Error::msg)?;
            println!("champion of `{name}`: v{v} (rolled back)");
        }
    }
    Ok(())
}

/// `millrace gen` arguments.
#[derive(clap::Args)]
struct GenArgs {
    /// Rows to generate (duplicates come on top).
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Random seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Output encoding.
    #[arg(long, value_enum, default_value_t = Fmt::Csv)]
    format: Fmt,
    /// Output file (`-` for stdout). Written under a temporary name and renamed
    /// into place, so it can go straight into a landing folder.
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// Write the ground truth (what was injected, and where) as JSON here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Distinct accounts.
    #[arg(long, default_value_t = 10_000)]
    accounts: u32,
    /// Event time of the first record (ms since the Unix epoch).
    #[arg(long, default_value_t = 1_767_225_600_000)]
    start_ms: i64,
    /// Records per second of event time.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Where the concept drift starts, as a fraction of the rows.
    #[arg(long, default_value_t = 0.6)]
    drift_at: f64,
    /// Fraction of rows with a missing value.
    #[arg(long, default_value_t = 0.01)]
    missing: f64,
    /// Fraction of malformed rows.
    #[arg(long, default_value_t = 0.002)]
    malformed: f64,
    /// Fraction of invalid rows.
    #[arg(long, default_value_t = 0.002)]
    invalid: f64,
    /// Fraction of rows written twice.
    #[arg(long, default_value_t = 0.001)]
    duplicates: f64,
    /// Largest out-of-order delay of event times (ms).
    #[arg(long, default_value_t = 2000)]
    max_lateness_ms: u64,
    /// A clean stream: no missing, malformed, invalid or duplicate rows, no spike, no gap.
    #[arg(long)]
    no_faults: bool,
    /// Produce the rows (with --topic) or the labels (with --labels-topic) to
    /// Kafka (bootstrap servers) instead of writing a file.
    #[arg(long)]
    to_kafka: Option<String>,
    /// The topic for --to-kafka (created with --partitions if missing).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of a topic --to-kafka creates (default: 4 for records, 1 for labels).
    #[arg(long)]
    partitions: Option<i32>,
    /// Delayed labels: write the labels to this CSV (`tx_id,label[,labelled_at]`)
    /// instead of inline; the records get a `tx_id` column (CSV only).
    #[arg(long)]
    labels_out: Option<PathBuf>,
    /// Delayed labels on Kafka: produce the labels to this topic (with
    /// --to-kafka; one partition unless --partitions says more) instead of --labels-out.
    #[arg(long, requires = "to_kafka", conflicts_with = "labels_out")]
    labels_topic: Option<String>,
    /// With --labels-out or --labels-topic: a label becomes known this many records after its record.
    #[arg(long, default_value_t = 0)]
    label_delay: u64,
    /// With --labels-out or --labels-topic: the fraction of labels that never come.
    #[arg(long, default_value_t = 0.0)]
    label_missing: f64,
}

impl GenArgs {
    /// The generator's options.
    fn options(&self) -> GenOptions {
        GenOptions {
            rows: self.rows,
            seed: self.seed,
            format: match self.format {
                Fmt::Csv => GenFormat::Csv,
                Fmt::Jsonl => GenFormat::Jsonl,
            },
            accounts: self.accounts,
            start_ms: self.start_ms,
            rate: self.rate,
            drift_at: self.drift_at,
            missing: self.missing,
            malformed: self.malformed,
            invalid: self.invalid,
            duplicates: self.duplicates,
            max_lateness_ms: self.max_lateness_ms,
            no_faults: self.no_faults,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Fmt {
    Csv,
    Jsonl,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MILLRACE_LOG")
        .unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `millrace tap`: polls the job's `/tap/<step>` and prints new samples until `limit`.
fn tap(
    topology: &std::path::Path,
    step: &str,
    addr: Option<String>,
    limit: usize,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let plan = load(topology)?;
    let addr = addr.or(plan.topology.runtime.http_addr.clone()).context(
        "the topology has no `[runtime] http_addr` and no --addr was given: where is the job?",
    )?;
    if !millrace::dataflow::tap::STEPS.contains(&step) {
        bail!(
            "no step `{step}` to tap; steps: {}",
            millrace::dataflow::tap::STEPS.join(", ")
        );
    }
    let (mut after, mut shown) = (0u64, 0usize);
    let started = std::time::Instant::now();
    while shown < limit {
        let mut s = std::net::TcpStream::connect(&addr)
            .with_context(|| format!("cannot reach the job's live view at {addr}"))?;
        write!(
            s,
            "GET /tap/{step}?after={after} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let body = out.split_once("\r\n\r\n").map_or("", |x| x.1);
        if !out.starts_with("HTTP/1.1 200") {
            bail!("{addr}: {}", body.trim());
        }
        for line in body.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).context("a tap line is not JSON")?;
            after = after.max(v["seq"].as_u64().unwrap_or(0));
            println!("{}", v["record"]);
            shown += 1;
            if shown >= limit {
                break;
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(600) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    Ok(())
}

/// `run --local-cluster N`: this same command as N processes on loopback.
/// Prints process 0's output; if any process fails, stops the others and
/// reports which one failed and why.
fn local_cluster_run(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--local-cluster: expected at least 1 process");
    }
    // The command line without --local-cluster.
    let mut args: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--local-cluster" {
            it.next();
        } else if !a.starts_with("--local-cluster=") {
            args.push(a);
        }
    }
    // Free loopback ports (bound, read, released; the processes bind them next).
    let addresses: Vec<String> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.to_string())
        })
        .collect::<std::io::Result<_>>()
        .context("cannot find free loopback ports")?;
    let hostfile = std::env::temp_dir().join(format!("millrace-hosts-{}.txt", std::process::id()));
    std::fs::write(&hostfile, addresses.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", hostfile.display()))?;
    let exe = std::env::current_exe().context("cannot find the millrace binary")?;
    let mut children = Vec::new();
    for i in 0..n {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&args)
            .args(["--processes", &n.to_string(), "--process", &i.to_string()])
            .arg("--hostfile")
            .arg(&hostfile)
            .stdout(std::process::Stdio::piped());
        children.push(
            cmd.spawn()
                .with_context(|| format!("cannot start process {i}"))?,
        );
    }
    // Each process's stdout, read on its own thread so none blocks on a full pipe.
    let outputs: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let mut out = c.stdout.take().expect("piped");
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut s);
                s
            })
        })
        .collect();
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; n];
    let mut first_failure = None;
    while status.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if status[i].is_none() {
                if let Some(s) = c.try_wait()? {
                    status[i] = Some(s);
                    if !s.success() && first_failure.is_none() {
                        first_failure = Some((i, s));
                    }
                }
            }
        }
        if first_failure.is_some() {
            // Give the others a moment to notice and stop on their own, then stop them.
            std::thread::sleep(std::time::Duration::from_secs(2));
            for (i, c) in children.iter_mut().enumerate() {
                if status[i].is_none() {
                    let _ = c.kill();
                    status[i] = c.wait().ok();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&hostfile);
    let texts: Vec<String> = outputs
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    print!("{}", texts[0]);
    if let Some((i, s)) = first_failure {
        if s.code() == Some(millrace::runtime::lock::EXIT_LOCKED.into()) {
            // Refused: another job holds the lake; say so with the same exit code.
            std::process::exit(s.code().unwrap_or(1));
        }
        bail!("process {i} of the local cluster failed ({s}); the others were stopped (its error is above)");
    }
    Ok(())
}

fn load(path: &std::path::Path) -> anyhow::Result<Compiled> {
    Ok(Topology::load(path)?)
}

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match real_main(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// [`runtime::lock::EXIT_LOCKED`] when another job holds the lake, 1 for any other error.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    use millrace::runtime::{lock, RunError};
    let locked = e.chain().any(|c| {
        matches!(c.downcast_ref(), Some(RunError::Locked(_)))
            || matches!(c.downcast_ref(), Some(lock::LockError::Held { .. }))
    });
    if locked {
        ExitCode::from(lock::EXIT_LOCKED)
    } else {
        ExitCode::FAILURE
    }
}

fn real_main(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Models { action } => models(action)?,
        Command::Report { lake, out, title } => {
            let title = title.unwrap_or_else(|| format!("millrace · {}", lake.display()));
            millrace::report::write(&lake, &out, &title).map_err(anyhow::Error::msg)?;
            println!("report: {}", out.display());
        }
        Command::Grafana => println!("{}", millrace::core::metrics::grafana_dashboard()),
        Command::Tap {
            topology,
            step,
            addr,
            limit,
        } => tap(&topology, &step, addr, limit)?,
        Command::Validate { topology } => {
            let plan = load(&topology)?;
            println!("{}", millrace::dataflow::describe(&plan));
        }
        Command::Run {
            topology,
            workers,
            once,
            landing,
            lake,
            brokers,
            processes,
            process,
            hostfile,
            local_cluster,
            http_addr,
        } => {
            if let Some(n) = local_cluster {
                return local_cluster_run(n);
            }
            let mut plan = load(&topology)?;
            if let Some(dir) = landing {
                match plan.landing.as_mut() {
                    Some(l) => l.path = dir,
                    None => bail!("--landing: this topology reads Kafka, not a landing folder"),
                }
            }
            if let Some(b) = brokers {
                match plan.kafka.as_mut() {
                    Some(k) => k.brokers = b.clone(),
                    None if plan.topology.sink.kafka.is_none() => {
                        bail!("--brokers: this topology uses no Kafka")
                    }
                    None => {}
                }
                if let Some(alerts) = plan
                    .topology
                    .alerts
                    .kafka
                    .as_mut()
                    .filter(|a| a.brokers.is_some())
                {
                    alerts.brokers = Some(b.clone());
                }
                if let Some(sink) = plan.topology.sink.kafka.as_mut() {
                    sink.brokers = Some(b);
                }
            }
            if let Some(dir) = lake {
                plan.topology.lake.path = dir;
            }
            if workers == 0 {
                bail!("--workers: expected at least 1 worker");
            }
            if let (true, Some(l)) = (once, &plan.landing) {
                if !l.path.is_dir() {
                    bail!("the landing folder {} does not exist (set `source.landing.path` or pass --landing DIR)", l.path.display());
                }
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            ctrlc::set_handler(move || {
                if flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!("millrace: second interrupt, exiting now");
                    std::process::exit(130);
                }
                eprintln!("millrace: stopping at the next epoch boundary (interrupt again to exit at once)");
                // A stop must not wait on an epoch that takes long (or never
                // ends): past the grace period the process exits as a kill
                // would. Commits are atomic, so the lake keeps its last
                // committed epoch and the next run resumes from it.
                std::thread::spawn(|| {
                    std::thread::sleep(STOP_GRACE);
                    eprintln!(
                        "millrace: did not stop within {} s; exiting now (the lake keeps its last committed epoch)",
                        STOP_GRACE.as_secs()
                    );
                    std::process::exit(130);
                });
            })
            .context("cannot install the signal handler")?;
            let fault = millrace::core::fault::Fault::default();
            let http_addr = http_addr.or(plan.topology.runtime.http_addr.clone());
            let taps = http_addr
                .as_ref()
                .map(|_| Arc::new(millrace::dataflow::tap::Taps::new(100)));
            let promote = (http_addr.is_some() && plan.topology.challenger.is_some())
                .then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
            if let Some(addr) = &http_addr {
                // Only the coordinator's process has the lake's whole picture and the job's metrics.
                if process == 0 {
                    let bound = millrace::http::serve(
                        addr,
                        millrace::http::LiveView {
                            lake: plan.topology.lake.path.clone(),
                            name: plan.topology.name.clone(),
                            dataflow: millrace::dataflow::describe(&plan),
                            fault: fault.clone(),
                            taps: taps.clone().expect("with an address"),
                            promote: promote.clone(),
                        },
                    )
                    .map_err(anyhow::Error::msg)?;
                    eprintln!(
                        "millrace: live view on http://{bound}/ (/metrics, /healthz, /dataflow)"
                    );
                }
            }
            let report = plan
                .topology
                .report
                .as_ref()
                .filter(|_| once && process == 0)
                .map(|r| {
                    if r.path.is_absolute() {
                        r.path.clone()
                    } else {
                        plan.topology.lake.path.join(&r.path)
                    }
                });
            let (lake_dir, name) = (plan.topology.lake.path.clone(), plan.topology.name.clone());
            let cluster = match &hostfile {
                Some(path) => Some(
                    runtime::Cluster::from_hostfile(path, processes, process)
                        .map_err(anyhow::Error::msg)?,
                ),
                None => None,
            };
            let summary = runtime::run(
                Arc::new(plan),
                &RunOptions {
                    workers,
                    cluster,
                    once,
                    stop,
                    fault: Some(fault),
                    show_progress: true,
                    taps,
                    promote,
                },
            )?;
            println!("{summary}");
            if let Some(path) = report {
                millrace::report::write(&lake_dir, &path, &format!("millrace · {name}"))
                    .map_err(anyhow::Error::msg)?;
                println!("report: {}", path.display());
            }
            if summary.unbalanced_epochs > 0 {
                bail!(
                    "{} epoch(s) did not balance their ledger",
                    summary.unbalanced_epochs
                );
            }
        }
        Command::Gen(args) => {
            let opts = args.options();
            let GenArgs {
                format,
                out,
                truth,
                to_kafka,
                topic,
                partitions,
                labels_out,
                labels_topic,
                label_delay,
                label_missing,
                ..
            } = args;
            anyhow::ensure!(
                to_kafka.is_none() || topic.is_some() || labels_topic.is_some(),
                "--to-kafka: expected --topic (the records' topic) or --labels-topic"
            );
            let split_labels = labels_out.is_some() || labels_topic.is_some();
            anyhow::ensure!(
                split_labels || (label_delay == 0 && label_missing == 0.0),
                "--label-delay and --label-missing: expected --labels-out or --labels-topic"
            );
            if split_labels {
                anyhow::ensure!(
                    format == Fmt::Csv,
                    "--labels-out/--labels-topic: expected CSV records (the default --format)"
                );
                let mut buf = Vec::new();
                let t = generate(&opts, &mut buf)?;
                let (records, labels, split) =
                    millrace::gen::split_labels(&buf, label_delay, label_missing);
                match (&to_kafka, &topic) {
                    (Some(brokers), Some(topic)) => {
                        let n = millrace::connectors::kafka_sink::produce_lines(
                            brokers,
                            topic,
                            partitions.unwrap_or(4),
                            &records,
                            true,
                        )
                        .map_err(anyhow::Error::msg)?;
                        eprintln!("produced {n} records to `{topic}` at {brokers}");
                    }
                    _ => {
                        anyhow::ensure!(
                            out.as_os_str() != "-",
                            "delayed labels: expected the records in a file (--out) or on Kafka (--topic)"
                        );
                        write_atomically(&out, &records)?;
                    }
                }
                let whereto = match (&to_kafka, &labels_topic, &labels_out) {
                    (Some(brokers), Some(lt), _) => {
                        // One partition by default: labels stay in the order they became known.
                        let parts = partitions.unwrap_or(1);
                        millrace::connectors::kafka_sink::produce_lines(
                            brokers, lt, parts, &labels, true,
                        )
                        .map_err(anyhow::Error::msg)?;
                        format!("produced to `{lt}` at {brokers}")
                    }
                    (_, _, Some(path)) => {
                        write_atomically(path, &labels)?;
                        format!("written to {}", path.display())
                    }
                    _ => unreachable!("checked above"),
                };
                eprintln!(
                    "labels: {} {whereto}, {} left out",
                    split.labels, split.dropped
                );
                if let Some(path) = truth {
                    std::fs::write(&path, t.to_json())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                return Ok(());
            }
            if let (Some(brokers), Some(topic)) = (&to_kafka, &topic) {
                let mut buf = Vec::new();
                let t = generate(&opts, &mut buf)?;
                let n = millrace::connectors::kafka_sink::produce_lines(
                    brokers,
                    topic,
                    partitions.unwrap_or(4),
                    &buf,
                    format == Fmt::Csv,
                )
                .map_err(anyhow::Error::msg)?;
                eprintln!("produced {n} records to `{topic}` at {brokers}");
                if let Some(path) = truth {
                    std::fs::write(&path, t.to_json())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                return Ok(());
            }
            let t = if out.as_os_str() == "-" {
                let stdout = std::io::stdout();
                generate(&opts, stdout.lock())?
            } else {
                let (t, _) = millrace::core::storage::write_atomic_with(
                    &out,
                    || {},
                    |file| generate(&opts, std::io::BufWriter::with_capacity(1 << 20, file)),
                )?;
                t
            };
            if let Some(path) = truth {
                let mut f = std::fs::File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                f.write_all(t.to_json().as_bytes())?;
            }
        }
    }
    Ok(())
}

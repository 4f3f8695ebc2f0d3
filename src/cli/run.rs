//! `millrace run`: load a topology, apply the command line's overrides, stop
//! cleanly on a signal, serve the live view, run, and print the summary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::core::fault::Fault;
use crate::dataflow::tap::Taps;
use crate::runtime::{self, RunOptions};
use crate::topology::Compiled;

/// How long a run may take to stop after SIGINT/SIGTERM before it exits as if killed.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// `millrace run` arguments.
#[derive(clap::Args)]
pub struct RunArgs {
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
    /// Use this lake instead of the topology's: a folder, or an az://, abfss:// or s3:// URL.
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
    /// The NAME of the environment variable holding the live view's token
    /// (instead of `[runtime] http_token_env`): `/tap` and `POST /promote` need it.
    #[arg(long, value_name = "NAME")]
    http_token_env: Option<String>,
}

/// Runs `millrace run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if let Some(n) = args.local_cluster {
        return super::local_cluster::run(n);
    }
    let mut plan = super::load(&args.topology)?;
    apply_overrides(&mut plan, &args)?;
    let stop = stop_on_signal()?;
    let fault = Fault::default();
    let http_addr = args
        .http_addr
        .clone()
        .or(plan.topology.runtime.http_addr.clone());
    let taps = http_addr.as_ref().map(|_| Arc::new(Taps::new(100)));
    let promote = (http_addr.is_some() && plan.topology.challenger.is_some())
        .then(|| Arc::new(AtomicBool::new(false)));
    // Only the coordinator's process has the lake's whole picture and the job's metrics.
    if let (Some(addr), 0) = (&http_addr, args.process) {
        let token = live_view_token(&args, &plan)?;
        let locked = token.is_some();
        let view = crate::http::LiveView {
            lake: plan.topology.lake.path.clone(),
            name: plan.topology.name.clone(),
            dataflow: crate::dataflow::describe(&plan),
            fault: fault.clone(),
            taps: taps.clone().expect("with an address"),
            promote: promote.clone(),
            token,
            allowed_hosts: plan.topology.runtime.http_allowed_hosts.clone(),
        };
        let bound = crate::http::serve(addr, view).map_err(|e| match e {
            crate::http::HttpError::Bind { .. } => {
                anyhow::anyhow!("the live view (--http-addr or `[runtime] http_addr`): {e}")
            }
            crate::http::HttpError::Start(_) => anyhow::Error::new(e),
        })?;
        eprintln!(
            "millrace: live view on http://{bound}/ (/metrics, /healthz, /dataflow){}",
            if locked {
                "; /tap and POST /promote need the token"
            } else {
                ""
            }
        );
    }
    let report = report_path(&plan, args.once && args.process == 0);
    let (lake_dir, name) = (plan.topology.lake.path.clone(), plan.topology.name.clone());
    let cluster = match &args.hostfile {
        Some(path) => Some(runtime::Cluster::from_hostfile(
            path,
            args.processes,
            args.process,
        )?),
        None => None,
    };
    let options = RunOptions {
        workers: args.workers,
        cluster,
        once: args.once,
        stop,
        fault: Some(fault),
        show_progress: true,
        taps,
        promote,
    };
    let summary = runtime::run(Arc::new(plan), &options)?;
    println!("{summary}");
    if let Some(path) = report {
        crate::report::write(&lake_dir, &path, &format!("millrace · {name}"))?;
        println!("report: {}", path.display());
    }
    if summary.unbalanced_epochs > 0 {
        bail!(
            "{} epoch(s) did not balance their ledger",
            summary.unbalanced_epochs
        );
    }
    Ok(())
}

/// The live view's token, from the variable `--http-token-env` or
/// `[runtime] http_token_env` names (`None`: neither names one).
fn live_view_token(args: &RunArgs, plan: &Compiled) -> anyhow::Result<Option<crate::http::Token>> {
    let (name, key) = match (&args.http_token_env, &plan.topology.runtime.http_token_env) {
        (Some(name), _) => (name, "--http-token-env"),
        (None, Some(name)) => (name, "`[runtime] http_token_env`"),
        (None, None) => return Ok(None),
    };
    crate::http::Token::from_env(name)
        .map(Some)
        .map_err(|problem| match problem {
            // Not a name: perhaps the token itself, so it is not quoted back.
            crate::http::TokenProblem::BadName => anyhow::anyhow!("{key}: {problem}"),
            _ => anyhow::anyhow!("{key}: the environment variable {name} {problem}"),
        })
}

/// The command line's `--landing`, `--brokers`, `--lake` and checks of `--workers` and the folder.
fn apply_overrides(plan: &mut Compiled, args: &RunArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.landing {
        match plan.source.landing_mut() {
            Some(l) => {
                l.path = crate::core::storage::parse(&dir.to_string_lossy())
                    .map_err(|e| anyhow::anyhow!("--landing: {e}"))?
            }
            None => bail!("--landing: this topology reads Kafka, not a landing folder"),
        }
    }
    if let Some(b) = &args.brokers {
        match plan.source.kafka_mut() {
            Some(k) => k.brokers = b.clone(),
            None if plan.topology.sink.kafka.is_none() => {
                bail!("--brokers: this topology uses no Kafka")
            }
            None => {}
        }
        let alerts = plan.topology.alerts.kafka.as_mut();
        if let Some(alerts) = alerts.filter(|a| a.brokers.is_some()) {
            alerts.brokers = Some(b.clone());
        }
        if let Some(sink) = plan.topology.sink.kafka.as_mut() {
            sink.brokers = Some(b.clone());
        }
    }
    if let Some(dir) = &args.lake {
        plan.topology.lake.path = crate::cli::lake_arg(dir)?;
    }
    if args.workers == 0 {
        bail!("--workers: expected at least 1 worker");
    }
    if let (true, Some(l)) = (args.once, plan.source.landing()) {
        // (A container or bucket prefix always exists; it may hold nothing.)
        if !crate::core::storage::is_remote(&l.path) && !l.path.is_dir() {
            bail!("the landing folder {} does not exist (set `source.landing.path` or pass --landing DIR)", l.path.display());
        }
    }
    Ok(())
}

/// A flag set by SIGINT/SIGTERM: the sources stop at the next epoch
/// boundary. A second signal exits at once; a stop that takes longer than
/// [`STOP_GRACE`] exits as a kill would (commits are atomic, so the lake
/// keeps its last committed epoch and the next run resumes from it).
fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            eprintln!("millrace: second interrupt, exiting now");
            std::process::exit(130);
        }
        eprintln!(
            "millrace: stopping at the next epoch boundary (interrupt again to exit at once)"
        );
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
    Ok(stop)
}

/// Where a `--once` run writes its report (`[report] path`, under the lake unless absolute).
fn report_path(plan: &Compiled, writes: bool) -> Option<PathBuf> {
    let r = plan.topology.report.as_ref().filter(|_| writes)?;
    Some(if r.path.is_absolute() {
        r.path.clone()
    } else {
        plan.topology.lake.path.join(&r.path)
    })
}

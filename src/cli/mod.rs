//! The `millrace` command line: the top layer, on everything else.
//!
//! One file per command family: [`run`] (and [`local_cluster`]), [`gen`],
//! [`models`], and [`client`] for the commands that talk to a running job's
//! live view (`tap`, `models promote-challenger`). `report`, `grafana` and
//! `validate` are a line each here. Errors are `anyhow` at this edge only,
//! and map to exit codes in [`main`].

mod client;
mod gen;
mod lake;
mod local_cluster;
mod models;
mod run;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::topology::{Compiled, Topology};

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

/// Checks a lake given on the command line (a folder or an object-store URL;
/// any other scheme is refused by name) and returns the form the engine
/// carries. Not a clap value parser: clap would quote a refused value back,
/// and a URL with credentials in it must not be echoed.
pub fn lake_arg(lake: &std::path::Path) -> anyhow::Result<PathBuf> {
    crate::core::storage::parse(&lake.to_string_lossy())
        .map_err(|e| anyhow::anyhow!("--lake / LAKE: {e}"))
}

#[derive(Subcommand)]
enum Command {
    /// Run a topology.
    Run(run::RunArgs),
    /// Write the HTML report of a lake (charts of input, rejects, model quality, alerts, latency).
    Report {
        /// The lake: a folder, or an az://, abfss:// or s3:// URL.
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
    Gen(gen::GenArgs),
    /// Compact a lake's small parts into few large files (atomically for its readers).
    Compact(lake::CompactArgs),
    /// Print the Parquet files that hold a lake table's rows, each row once
    /// (for readers given a file list, such as DuckDB's `read_parquet([...])`).
    Files(lake::FilesArgs),
    /// The model registry of a lake: published versions and the champion.
    Models {
        #[command(subcommand)]
        action: models::ModelsAction,
    },
}

/// The `millrace` binary: parses the command line, runs the command, and
/// maps its error to an exit code (75 when another job holds the lake).
pub fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Gen(args) => gen::run(args),
        Command::Compact(args) => lake::compact(args),
        Command::Files(args) => lake::files(args),
        Command::Models { action } => models::run(action),
        Command::Report { lake, out, title } => {
            let lake = lake_arg(&lake)?;
            let title = title.unwrap_or_else(|| format!("millrace · {}", lake.display()));
            crate::report::write(&lake, &out, &title)?;
            println!("report: {}", out.display());
            Ok(())
        }
        Command::Grafana => {
            println!("{}", crate::core::metrics::grafana_dashboard());
            Ok(())
        }
        Command::Tap {
            topology,
            step,
            addr,
            limit,
        } => client::tap(&topology, &step, addr, limit),
        Command::Validate { topology } => {
            let plan = load(&topology)?;
            println!("{}", crate::dataflow::describe(&plan));
            Ok(())
        }
    }
}

/// [`runtime::lock::EXIT_LOCKED`] when another job holds the lake, 1 for any other error.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    use crate::runtime::{lock, RunError};
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

fn load(path: &std::path::Path) -> anyhow::Result<Compiled> {
    Ok(Topology::load(path)?)
}

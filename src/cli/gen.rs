//! `millrace gen`: the synthetic transaction stream, to a file, stdout or
//! Kafka, with its ground truth, optionally with its labels split off (delayed
//! labels, to a file or a topic).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;

use crate::gen::{generate, GenFormat, GenOptions, Truth};

/// `millrace gen` arguments.
#[derive(clap::Args)]
pub struct GenArgs {
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
    /// Kafka (bootstrap servers) instead of writing a file; fails unless the
    /// broker acknowledges every record.
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

/// Runs `millrace gen`.
pub fn run(args: GenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.to_kafka.is_none() || args.topic.is_some() || args.labels_topic.is_some(),
        "--to-kafka: expected --topic (the records' topic) or --labels-topic"
    );
    let split_labels = args.labels_out.is_some() || args.labels_topic.is_some();
    anyhow::ensure!(
        split_labels || (args.label_delay == 0 && args.label_missing == 0.0),
        "--label-delay and --label-missing: expected --labels-out or --labels-topic"
    );
    let truth = if split_labels {
        with_delayed_labels(&args)?
    } else if let (Some(brokers), Some(topic)) = (&args.to_kafka, &args.topic) {
        let mut buf = Vec::new();
        let t = generate(&args.options(), &mut buf)?;
        let csv = args.format == Fmt::Csv;
        let n = produce(brokers, topic, args.partitions.unwrap_or(4), &buf, csv)?;
        eprintln!("produced {n} records to `{topic}` at {brokers}");
        t
    } else if args.out.as_os_str() == "-" {
        generate(&args.options(), std::io::stdout().lock())?
    } else {
        let (t, _) = crate::core::storage::write_atomic_with(
            &args.out,
            || {},
            |file| {
                generate(
                    &args.options(),
                    std::io::BufWriter::with_capacity(1 << 20, file),
                )
            },
        )?;
        t
    };
    if let Some(path) = &args.truth {
        crate::core::storage::write_atomic(path, truth.to_json().as_bytes())?;
    }
    Ok(())
}

fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    lines: &[u8],
    csv: bool,
) -> anyhow::Result<u64> {
    Ok(crate::connectors::kafka_sink::produce_lines(
        brokers, topic, partitions, lines, csv,
    )?)
}

/// The records and their labels apart (`--labels-out` / `--labels-topic`).
fn with_delayed_labels(args: &GenArgs) -> anyhow::Result<Truth> {
    anyhow::ensure!(
        args.format == Fmt::Csv,
        "--labels-out/--labels-topic: expected CSV records (the default --format)"
    );
    let mut buf = Vec::new();
    let t = generate(&args.options(), &mut buf)?;
    let (records, labels, split) =
        crate::gen::split_labels(&buf, args.label_delay, args.label_missing);
    match (&args.to_kafka, &args.topic) {
        (Some(brokers), Some(topic)) => {
            let n = produce(brokers, topic, args.partitions.unwrap_or(4), &records, true)?;
            eprintln!("produced {n} records to `{topic}` at {brokers}");
        }
        _ => {
            anyhow::ensure!(
                args.out.as_os_str() != "-",
                "delayed labels: expected the records in a file (--out) or on Kafka (--topic)"
            );
            write(&args.out, &records)?;
        }
    }
    let whereto = match (&args.to_kafka, &args.labels_topic, &args.labels_out) {
        (Some(brokers), Some(lt), _) => {
            // One partition by default: labels stay in the order they became known.
            produce(brokers, lt, args.partitions.unwrap_or(1), &labels, true)?;
            format!("produced to `{lt}` at {brokers}")
        }
        (_, _, Some(path)) => {
            write(path, &labels)?;
            format!("written to {}", path.display())
        }
        _ => unreachable!("checked by the caller"),
    };
    eprintln!(
        "labels: {} {whereto}, {} left out",
        split.labels, split.dropped
    );
    Ok(t)
}

/// Writes a generated file atomically (a landing folder never sees half of it).
fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::core::storage::write_atomic(path, bytes)
        .with_context(|| format!("--out {}", path.display()))
}

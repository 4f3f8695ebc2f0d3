//! `millrace compact` and `millrace files`: the lake's maintenance and its
//! file list for readers (see `connectors::compaction`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::connectors::compaction::{self, CompactionSpec, Options};
use crate::connectors::lake::Table;

const TABLES: [Table; 5] = [
    Table::Clean,
    Table::Scored,
    Table::Rejected,
    Table::Metrics,
    Table::Alerts,
];

fn table(name: &str) -> anyhow::Result<Table> {
    TABLES
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = TABLES.iter().map(|t| t.name()).collect();
            anyhow::anyhow!(
                "no table `{name}`; the lake's tables are {}",
                names.join(", ")
            )
        })
}

/// `millrace compact`.
#[derive(Args)]
pub struct CompactArgs {
    /// The lake: a folder, or an az://, abfss:// or s3:// URL.
    lake: PathBuf,
    /// Compact only this table (repeatable; default: every table).
    #[arg(long = "table")]
    tables: Vec<String>,
    /// Merge parts into files of about this size (MiB); larger parts are left alone.
    #[arg(long, default_value_t = CompactionSpec::default().target_file_mb)]
    target_file_mb: f64,
    /// Delete replaced files once this long has passed since their swap
    /// (readers that listed a partition before have that long to finish).
    #[arg(long, default_value_t = CompactionSpec::default().grace_ms)]
    grace_ms: u64,
    /// Leave each table's newest partition alone (a job is still writing it).
    #[arg(long)]
    closed_only: bool,
}

/// Compacts the lake and prints what it did.
pub fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let lake = super::lake_arg(&args.lake)?;
    if !(args.target_file_mb > 0.0 && args.target_file_mb.is_finite()) {
        anyhow::bail!("--target-file-mb: expected a size in MiB > 0");
    }
    let tables = match args.tables.is_empty() {
        true => TABLES.to_vec(),
        false => args
            .tables
            .iter()
            .map(|t| table(t))
            .collect::<Result<_, _>>()?,
    };
    let spec = CompactionSpec {
        target_file_mb: args.target_file_mb,
        grace_ms: args.grace_ms,
        ..CompactionSpec::default()
    };
    let done = compaction::compact_lake(&lake, &tables, Options::of(&spec, args.closed_only))
        .with_context(|| format!("cannot compact {}", lake.display()))?;
    println!("{}: {done}", lake.display());
    Ok(())
}

/// `millrace files`.
#[derive(Args)]
pub struct FilesArgs {
    /// The lake: a folder, or an az://, abfss:// or s3:// URL.
    lake: PathBuf,
    /// The table.
    table: String,
    /// Print each file's rows (from its footer) and the total.
    #[arg(long)]
    rows: bool,
}

/// Prints the files that hold the table's rows, one per line.
pub fn files(args: FilesArgs) -> anyhow::Result<()> {
    let lake = super::lake_arg(&args.lake)?;
    let t = table(&args.table)?;
    let dir = lake.join(t.name());
    let files =
        compaction::live_parts(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut total = 0u64;
    for f in &files {
        if args.rows {
            let rows = compaction::footer_rows(f)?;
            total += rows;
            println!("{}\t{rows}", f.display());
        } else {
            println!("{}", f.display());
        }
    }
    if args.rows {
        println!("total\t{total}");
    }
    Ok(())
}

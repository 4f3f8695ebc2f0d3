//! What sinks report when they have written an epoch: the engine's ids for
//! its sinks and the [`Commit`] records the coordinator publishes and counts.
//!
//! A sink writes each epoch it is given once the frontier has passed it and
//! reports one [`Commit`] per epoch, worker and table (or topic, or CSV
//! folder): how much it wrote and, with checkpoints, the parts it left under
//! pending names for the coordinator to publish once the epoch's checkpoint
//! is durable. Plain data.

use millrace_operators::Epoch;
use serde::{Deserialize, Serialize};

/// The lake's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Every clean (imputed) record with all its fields.
    Clean,
    /// Key, event time, score, label and model version of every clean record.
    Scored,
    /// Rejected lines with reason, raw text, source and line.
    Rejected,
    /// Per-epoch ledger, throughput and model metrics.
    Metrics,
    /// Alerts raised by the monitors (firing and resolved).
    Alerts,
}

impl Table {
    /// The table's folder name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Clean => "clean",
            Table::Scored => "scored",
            Table::Rejected => "rejected",
            Table::Metrics => "metrics",
            Table::Alerts => "alerts",
        }
    }
}

/// A sink that reports commits: a lake table, the Kafka sink or the CSV sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SinkId {
    /// A table of the Parquet lake.
    Lake(Table),
    /// The scored topic of `[sink.kafka]`.
    Kafka,
    /// The per-input CSV files of `[sink.csv]`.
    Csv,
}

impl SinkId {
    /// The sink's name in metrics and summaries (a lake table's is the table's).
    pub fn name(self) -> &'static str {
        match self {
            SinkId::Lake(t) => t.name(),
            SinkId::Kafka => "kafka",
            SinkId::Csv => "csv",
        }
    }
}

/// A committed part of an epoch of one sink on one worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The sink.
    pub sink: SinkId,
    /// The epoch.
    pub epoch: Epoch,
    /// The worker that wrote it.
    pub worker: usize,
    /// Files written.
    pub files: u64,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// With checkpoints: the parts, still under their pending names, and the
    /// visible names the coordinator renames them to once the epoch's
    /// checkpoint is written (both relative to the lake).
    pub parts: Vec<(String, String)>,
}

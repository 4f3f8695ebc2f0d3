//! Source positions and what sources report: the engine's record of where
//! each input stands, kept in checkpoints and the file manifest.
//!
//! Every source reports, per epoch and worker, a [`SourcePos`] (the file it
//! is in the middle of, or the next Kafka offset of each of its partitions)
//! and, for each input it finished, a [`FileFact`]. The coordinator writes
//! both into the checkpoint and the manifest; a resumed run hands them back
//! to the sources. Plain data.

use std::collections::BTreeMap;

use millrace_operators::record::Chunk;
use millrace_operators::Epoch;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

/// What the landing source knows about a file it has read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFact {
    /// File name, relative to the landing folder.
    pub name: String,
    /// Size in bytes (of the file itself, also when it is gzipped).
    pub size_bytes: u64,
    /// Data records read (the CSV header is not counted; blank lines are not
    /// counted; a CSV record whose quoted field holds newlines counts once).
    pub rows: u64,
    /// xxh3 of the whole content (of the file itself, also when it is gzipped).
    pub content_hash: u64,
    /// Modification time of the file when it was picked up (ms since the Unix epoch).
    pub arrived_ms: i64,
    /// The epoch in which the file's last record was emitted.
    pub last_epoch: Epoch,
    /// The worker that read it.
    pub worker: usize,
}

/// Where a worker's source is inside a file: what a checkpoint records to resume it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePos {
    /// File name, relative to the landing folder.
    pub name: String,
    /// Size when it was picked up.
    pub size_bytes: u64,
    /// Its arrival time (ms).
    pub arrived_ms: i64,
    /// Bytes consumed (header included; in the decompressed stream for a gzipped file).
    pub offset: u64,
    /// Line number of the next line.
    pub next_line: u64,
    /// Data records read so far.
    pub rows: u64,
    /// xxh3 of the `offset` bytes consumed: a resumed file must still begin with them.
    #[serde(default)]
    pub prefix_hash: Option<u64>,
}

/// A source position at the end of an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePos {
    /// The worker.
    pub worker: usize,
    /// The file it is in the middle of, if any.
    pub position: Option<FilePos>,
    /// Kafka sources: the next offset of each of the worker's partitions (`topic/partition`).
    #[serde(default)]
    pub offsets: BTreeMap<String, i64>,
    /// A position of the delayed-label source (`[source.labels]`).
    #[serde(default)]
    pub labels: bool,
}

/// What a source emits: chunks of records, facts of finished inputs, and its
/// position at every epoch's end (the landing folder's and Kafka's alike).
pub type SourceStreams<'scope> = (
    Stream<'scope, Epoch, Vec<Chunk>>,
    Stream<'scope, Epoch, Vec<FileFact>>,
    Stream<'scope, Epoch, Vec<SourcePos>>,
);

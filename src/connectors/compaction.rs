//! Compaction: the small parts of a lake table's partitions merged into few
//! large files, swapped in atomically for every reader that reads the lake
//! the way this module does ([`live_parts`]).
//!
//! **Why.** Every epoch writes one part per partition it touches and per
//! worker, so a long run leaves thousands of small files; Parquet readers
//! (DuckDB, Spark, BI tools) slow down on them and every object-store request
//! costs money.
//!
//! **Layout.** A partition folder (`<table>/date=…/hour=…/`, or the table's
//! folder without partitions) holds the epochs' parts (`part-<epoch>-<worker>.parquet`),
//! the files compactions wrote (`compact-<seq>-<nonce>-<i>.parquet`) and the
//! compactions' commit records, `_compactions/<seq>.json` (a folder Hive
//! readers skip). A record names the files it added (with rows and bytes) and
//! the files they replace.
//!
//! **What a reader reads.** The partition's `part-` files that no record
//! removed, plus the files records added that no later record removed. An
//! epoch's part is visible from its publication on (see
//! `dataflow::coordinator::checkpoint`); a compacted file is visible only
//! from its record on.
//!
//! **Protocol for one partition.** (1) List it and read its records; take its
//! live files smaller than the target size, in name (= epoch) order, and cut
//! them into runs of about the target size; (2) write each run's rows as one
//! file under a fresh name (a whole-file atomic write, no reader counts it yet);
//! (3) write record `seq` = the newest + 1 **create-only** (a hard link of a
//! fsynced file locally, a conditional put in an object store): that single
//! write is the swap — before it readers see the old parts, after it the new
//! file, never both or neither; (4) once the grace period has passed, later
//! passes delete the replaced files (readers that listed the partition before
//! the swap have that long to finish). Two compactors of one partition (a
//! job's background pass and `millrace compact`) cannot both commit a plan
//! made from the same state: the second's create fails, it deletes its files
//! and leaves the partition to the next pass. A crash before the record leaves
//! a file no record names; passes delete such files when a newer record
//! exists or the grace period has passed.
//!
//! **Readers that glob.** A reader that globs `*.parquet` instead of reading
//! through [`live_parts`] (or `millrace files`) sees a partition's old parts
//! and its compacted file together until the grace period ends; set
//! `grace_ms` to how long such readers take, or list the files with
//! `millrace files LAKE TABLE`.
//!
//! **Recovery.** Compaction only ever reads visible parts — those of epochs
//! whose checkpoint is durable — so a run's recovery never rolls back what a
//! compaction read. A checkpoint's part that a compaction replaced and a
//! pass then deleted is still committed (its rows are in the compacted file):
//! `checkpoint` asks [`is_compacted`] before it calls such a part missing.
//!
//! **When.** `millrace compact LAKE` compacts every partition; with
//! `[lake.compaction]` a continuous run compacts its closed partitions (all
//! but the newest of each table: the stream has moved past them) every
//! `interval_ms` on a thread of its own, and a `--once` run compacts every
//! partition after its last commit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::lake::{write_batches, Compression, Table};
use crate::core::storage;

/// The folder of a partition that holds its compactions' records.
pub const RECORDS: &str = "_compactions";
/// The record format this build writes and reads.
const VERSION: u32 = 1;

/// `[lake.compaction]`: compaction in the background of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionSpec {
    /// Parts are merged into files of about this size (MiB of Parquet);
    /// parts of this size or more are left as they are.
    #[serde(default = "default_target_mb")]
    pub target_file_mb: f64,
    /// How long replaced files stay after the swap, for readers that listed
    /// the partition before it (and for readers that glob).
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// How often a continuous run looks for closed partitions to compact.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
}

fn default_target_mb() -> f64 {
    128.0
}
fn default_grace_ms() -> u64 {
    10 * 60 * 1000
}
fn default_interval_ms() -> u64 {
    60 * 1000
}

impl Default for CompactionSpec {
    fn default() -> Self {
        CompactionSpec {
            target_file_mb: default_target_mb(),
            grace_ms: default_grace_ms(),
            interval_ms: default_interval_ms(),
        }
    }
}

impl CompactionSpec {
    /// The target size in bytes.
    pub fn target_bytes(&self) -> u64 {
        (self.target_file_mb * 1024.0 * 1024.0) as u64
    }
}

/// One compaction of one partition: its commit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    version: u32,
    /// When it was committed (ms since the Unix epoch): the grace period runs from here.
    created_ms: i64,
    /// The files it added.
    added: Vec<Added>,
    /// The files its added files replace (names in the partition folder).
    removed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Added {
    name: String,
    rows: u64,
    bytes: u64,
}

/// A partition folder of a table: what is in it and its records.
#[derive(Debug, Default)]
struct Partition {
    /// The folder.
    dir: PathBuf,
    /// Its path under the table (`""` without partitions).
    rel: String,
    /// The Parquet files in it, with their sizes.
    files: BTreeMap<String, u64>,
    /// Its compactions' records, by sequence number.
    records: BTreeMap<u64, Record>,
}

impl Partition {
    /// Every name some record replaced.
    fn removed(&self) -> BTreeSet<&str> {
        self.records
            .values()
            .flat_map(|r| r.removed.iter().map(String::as_str))
            .collect()
    }

    /// The files a reader reads, with their sizes, in name order.
    fn live(&self) -> Vec<(String, u64)> {
        // A lone file is live (see [`partitions`]), and its records unread.
        if self.files.len() == 1 {
            return self.files.iter().map(|(n, s)| (n.clone(), *s)).collect();
        }
        let removed = self.removed();
        let mut live: BTreeMap<String, u64> = self
            .files
            .iter()
            .filter(|(name, _)| name.starts_with("part-") && !removed.contains(name.as_str()))
            .map(|(n, s)| (n.clone(), *s))
            .collect();
        for a in self.records.values().flat_map(|r| &r.added) {
            if !removed.contains(a.name.as_str()) {
                live.insert(a.name.clone(), a.bytes);
            }
        }
        live.into_iter().collect()
    }
}

/// Whether a path under a table is one a reader looks at: not in a folder
/// whose name starts with `_` or `.`, not a hidden file.
fn visible_parquet(dir: &str, name: &str) -> bool {
    !name.starts_with('.')
        && name.ends_with(".parquet")
        && !dir
            .split('/')
            .any(|c| c.starts_with('_') || c.starts_with('.'))
}

/// The partitions of the table at `table_dir` (a folder or an object-store
/// prefix), from one listing. Records are read only where a partition holds
/// more than one file: a lone file is always live (a record removes files
/// only beside the file it adds, and that one goes only when a later record
/// replaces it in turn), so a compacted partition costs no reads.
fn partitions(table_dir: &Path) -> std::io::Result<Vec<Partition>> {
    let mut found: BTreeMap<String, Partition> = BTreeMap::new();
    let mut records: Vec<(String, u64, PathBuf)> = Vec::new();
    for (path, size) in storage::list(table_dir, true)? {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let owner = match dir.rsplit_once('/') {
            Some((owner, last)) if last == RECORDS => Some(owner),
            None if dir == RECORDS => Some(""),
            _ => None,
        };
        if let Some(owner) = owner {
            // Not `<seq>.json`: a record's temporary file.
            if let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            {
                records.push((owner.to_string(), seq, table_dir.join(&path)));
            }
        } else if visible_parquet(dir, name) {
            entry(&mut found, table_dir, dir)
                .files
                .insert(name.to_string(), size);
        }
    }
    for (owner, seq, file) in records {
        if let Some(p) = found.get_mut(&owner).filter(|p| p.files.len() > 1) {
            p.records.insert(seq, read_record(&file)?);
        }
    }
    Ok(found.into_values().collect())
}

/// The partition at `rel` under `table_dir`, added when it is not known yet.
fn entry<'a>(
    found: &'a mut BTreeMap<String, Partition>,
    table_dir: &Path,
    rel: &str,
) -> &'a mut Partition {
    found.entry(rel.to_string()).or_insert_with(|| Partition {
        dir: if rel.is_empty() {
            table_dir.to_path_buf()
        } else {
            table_dir.join(rel)
        },
        rel: rel.to_string(),
        ..Partition::default()
    })
}

fn read_record(file: &Path) -> std::io::Result<Record> {
    let bytes = storage::read(file)?;
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a compaction record: {e}", file.display()),
        )
    })?;
    if record.version != VERSION {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: compaction record format {}, this build reads {VERSION}",
                file.display(),
                record.version
            ),
        ));
    }
    Ok(record)
}

/// The Parquet files a reader of the table at `table_dir` reads — every
/// row of the table once — in partition and name order.
pub fn live_parts(table_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(partitions(table_dir)?
        .into_iter()
        .flat_map(|p| {
            let dir = p.dir.clone();
            p.live().into_iter().map(move |(name, _)| dir.join(name))
        })
        .collect())
}

/// Whether the part at `rel` (relative to `lake`) was replaced by a
/// compaction: its rows are in a compacted file, whether or not it is still there.
pub fn is_compacted(lake: &Path, rel: &str) -> std::io::Result<bool> {
    let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let records = lake.join(dir).join(RECORDS);
    for (file, _) in storage::list(&records, false)? {
        if !file.ends_with(".json") || file.starts_with('.') {
            continue;
        }
        if read_record(&records.join(&file))?
            .removed
            .iter()
            .any(|r| r == name)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a pass compacts.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Merge parts into files of about this many bytes.
    pub target_bytes: u64,
    /// Delete replaced files this long after their swap.
    pub grace_ms: u64,
    /// Leave each table's newest partition alone (a running job still writes it).
    pub closed_only: bool,
}

impl Options {
    /// The options of `[lake.compaction]`.
    pub fn of(spec: &CompactionSpec, closed_only: bool) -> Options {
        Options {
            target_bytes: spec.target_bytes(),
            grace_ms: spec.grace_ms,
            closed_only,
        }
    }
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Partitions compacted.
    pub partitions: usize,
    /// Files replaced.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Rows moved.
    pub rows: u64,
    /// Replaced (or orphaned) files deleted.
    pub deleted: usize,
    /// Partitions another compactor committed first (left for the next pass).
    pub conflicts: usize,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.partitions += o.partitions;
        self.files_in += o.files_in;
        self.files_out += o.files_out;
        self.rows += o.rows;
        self.deleted += o.deleted;
        self.conflicts += o.conflicts;
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partitions compacted: {} files → {} ({} rows); {} replaced files deleted",
            self.partitions, self.files_in, self.files_out, self.rows, self.deleted
        )?;
        if self.conflicts > 0 {
            write!(
                f,
                "; {} partitions left to the next pass (another compactor committed first)",
                self.conflicts
            )?;
        }
        Ok(())
    }
}

/// A partition that could not be compacted.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Storage failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A part is not Parquet this build reads.
    #[error("{}: {error}", file.display())]
    Parquet {
        /// The part.
        file: PathBuf,
        /// What the reader said.
        error: parquet::errors::ParquetError,
    },
    /// The rows read do not add up (a part changed under the compactor?).
    #[error("{}: read {read} rows from parts whose footers say {expected}; nothing swapped", dir.display())]
    Rows {
        /// The partition.
        dir: PathBuf,
        /// Rows read.
        read: u64,
        /// Rows the parts' footers give.
        expected: u64,
    },
}

/// Compacts the tables of the lake at `lake` that exist; see the module docs.
pub fn compact_lake(lake: &Path, tables: &[Table], opts: Options) -> Result<Summary, CompactError> {
    let mut total = Summary::default();
    for t in tables {
        total.add(&compact_table(&lake.join(t.name()), opts)?);
    }
    Ok(total)
}

/// Compacts the partitions of one table and deletes what grace lets go.
pub fn compact_table(table_dir: &Path, opts: Options) -> Result<Summary, CompactError> {
    let mut parts = partitions(table_dir)?;
    let newest = parts
        .iter()
        .filter(|p| !p.files.is_empty())
        .map(|p| p.rel.clone())
        .max();
    let mut total = Summary::default();
    for p in &mut parts {
        if !(opts.closed_only && Some(&p.rel) == newest.as_ref()) {
            let (done, committed) = compact_partition(p, opts)?;
            total.add(&done);
            if let Some((seq, record)) = committed {
                p.records.insert(seq, record);
            }
        }
        // After the pass's own commit: with no grace, what it replaced goes now.
        total.deleted += sweep(p, opts.grace_ms)?;
    }
    Ok(total)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Deletes the files of `p` that records replaced more than `grace_ms` ago,
/// and compacted files no record added (a crashed or beaten compactor's)
/// that a newer record supersedes or that are older than the grace period.
fn sweep(p: &Partition, grace_ms: u64) -> std::io::Result<usize> {
    let now = now_ms();
    let mut doomed: BTreeSet<&str> = BTreeSet::new();
    for r in p.records.values() {
        if r.created_ms.saturating_add(grace_ms as i64) <= now {
            doomed.extend(r.removed.iter().map(String::as_str));
        }
    }
    let added: BTreeSet<&str> = p
        .records
        .values()
        .flat_map(|r| r.added.iter().map(|a| a.name.as_str()))
        .collect();
    let newest = p.records.keys().next_back().copied().unwrap_or(0);
    for name in p.files.keys().filter(|n| n.starts_with("compact-")) {
        if added.contains(name.as_str()) {
            continue;
        }
        let seq = name
            .strip_prefix("compact-")
            .and_then(|n| n.split('-').next())
            .and_then(|n| n.parse::<u64>().ok());
        let superseded = seq.is_some_and(|s| s <= newest);
        let old = || -> std::io::Result<bool> {
            Ok(storage::stat(&p.dir.join(name))?
                .is_some_and(|(_, modified)| modified.saturating_add(grace_ms as i64) <= now))
        };
        if superseded || old()? {
            doomed.insert(name);
        }
    }
    let mut deleted = 0;
    for name in doomed {
        if p.files.contains_key(name) && storage::remove_file(&p.dir.join(name))? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Runs of the live files smaller than the target, in name order, each of
/// about the target size; a run of one file is left alone.
fn plan(live: &[(String, u64)], target: u64) -> Vec<Vec<String>> {
    let mut runs: Vec<Vec<String>> = Vec::new();
    let (mut run, mut bytes) = (Vec::new(), 0u64);
    for (name, size) in live.iter().filter(|(_, size)| *size < target) {
        if !run.is_empty() && bytes + size > target {
            runs.push(std::mem::take(&mut run));
            bytes = 0;
        }
        run.push(name.clone());
        bytes += size;
    }
    runs.push(run);
    runs.retain(|r| r.len() > 1);
    runs
}

/// The rows a Parquet file's footer gives (the footer is all that is read
/// from a local file; an object is fetched whole).
pub fn footer_rows(file: &Path) -> Result<u64, CompactError> {
    let parquet = |error| CompactError::Parquet {
        file: file.to_path_buf(),
        error,
    };
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let rows = if storage::is_remote(file) {
        let bytes = bytes::Bytes::from(storage::read(file)?);
        SerializedFileReader::new(bytes)
            .map_err(parquet)?
            .metadata()
            .file_metadata()
            .num_rows()
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        SerializedFileReader::new(f)
            .map_err(parquet)?
            .metadata()
            .file_metadata()
            .num_rows()
    };
    Ok(rows as u64)
}

/// A part's rows, its schema and codec, and the rows its footer gives.
fn read_part(file: &Path) -> Result<(Vec<RecordBatch>, SchemaRef, Compression, u64), CompactError> {
    let parquet = |error| CompactError::Parquet {
        file: file.to_path_buf(),
        error,
    };
    let bytes = bytes::Bytes::from(storage::read(file)?);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet)?;
    let meta = builder.metadata().clone();
    let rows = meta.file_metadata().num_rows() as u64;
    let compression = match meta
        .row_groups()
        .first()
        .and_then(|g| g.columns().first())
        .map(|c| c.compression())
    {
        Some(parquet::basic::Compression::UNCOMPRESSED) => Compression::None,
        _ => Compression::Snappy,
    };
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .map_err(parquet)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parquet(e.into()))?;
    Ok((batches, schema, compression, rows))
}

/// What a partition's compaction did, and the record it committed.
type Compacted = (Summary, Option<(u64, Record)>);

/// Compacts one partition (see the module docs): writes the runs' files,
/// then commits them with one create-only record.
fn compact_partition(p: &Partition, opts: Options) -> Result<Compacted, CompactError> {
    let runs = plan(&p.live(), opts.target_bytes);
    if runs.is_empty() {
        return Ok((Summary::default(), None));
    }
    let seq = p.records.keys().next_back().map_or(1, |s| s + 1);
    let nonce = format!(
        "{:08x}",
        xxhash_rust::xxh3::xxh3_64(
            format!("{}-{:?}", std::process::id(), std::time::Instant::now()).as_bytes()
        ) as u32
    );
    let mut record = Record {
        version: VERSION,
        created_ms: 0,
        added: Vec::new(),
        removed: Vec::new(),
    };
    for (i, run) in runs.iter().enumerate() {
        let name = format!("compact-{seq:010}-{nonce}-{i:03}.parquet");
        match write_run(p, run, &name) {
            Ok(Some(added)) => {
                record.removed.extend(added.1);
                record.added.push(added.0);
            }
            Ok(None) => {}
            Err(e) => {
                discard(p, &record.added);
                return Err(e);
            }
        }
    }
    if record.added.is_empty() {
        return Ok((Summary::default(), None));
    }
    crate::crash_point!("compaction_before_record");
    crate::wait_point!("compaction_hold_before_record");
    record.created_ms = now_ms();
    let path = p.dir.join(RECORDS).join(format!("{seq:010}.json"));
    let body = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    match storage::write_create(&path, &body, || {}) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn!(partition = %p.dir.display(), seq, "Another compactor committed this partition first; left to the next pass.");
            discard(p, &record.added);
            let lost = Summary {
                conflicts: 1,
                ..Summary::default()
            };
            return Ok((lost, None));
        }
        Err(e) => {
            discard(p, &record.added);
            return Err(e.into());
        }
    }
    crate::wait_point!("compaction_hold_after_record");
    let summary = Summary {
        partitions: 1,
        files_in: record.removed.len(),
        files_out: record.added.len(),
        rows: record.added.iter().map(|a| a.rows).sum(),
        ..Summary::default()
    };
    info!(partition = %p.dir.display(), files_in = summary.files_in, files_out = summary.files_out, rows = summary.rows, "Compacted a partition.");
    Ok((summary, Some((seq, record))))
}

/// Deletes files a compaction wrote and will not commit.
fn discard(p: &Partition, added: &[Added]) {
    for a in added {
        if let Err(e) = storage::remove_file(&p.dir.join(&a.name)) {
            warn!(file = %p.dir.join(&a.name).display(), %e, "Cannot delete an uncommitted compacted file; a later pass will.");
        }
    }
}

/// Writes the rows of one run's files (those with the first one's schema)
/// as `name`; returns what it added and the files it replaces, or `None`
/// when fewer than two files share a schema.
fn write_run(
    p: &Partition,
    run: &[String],
    name: &str,
) -> Result<Option<(Added, Vec<String>)>, CompactError> {
    let (mut batches, mut replaced) = (Vec::new(), Vec::new());
    let (mut schema, mut compression, mut expected) =
        (None::<SchemaRef>, Compression::Snappy, 0u64);
    for file in run {
        let (b, s, c, rows) = read_part(&p.dir.join(file))?;
        match &schema {
            None => {
                schema = Some(s);
                compression = c;
            }
            // A part of another schema (the topology's schema changed between
            // runs) stays as it is.
            Some(first) if first.fields() != s.fields() => continue,
            Some(_) => {}
        }
        batches.extend(b);
        replaced.push(file.clone());
        expected += rows;
    }
    if schema.is_none() || replaced.len() < 2 || batches.is_empty() {
        return Ok(None);
    }
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if rows != expected {
        return Err(CompactError::Rows {
            dir: p.dir.clone(),
            read: rows,
            expected,
        });
    }
    let bytes = write_batches(&p.dir, name, &batches, compression)?;
    Ok(Some((
        Added {
            name: name.to_string(),
            rows,
            bytes,
        },
        replaced,
    )))
}

/// Compaction on a thread of a continuous run: a pass over the closed
/// partitions every `interval_ms`, until [`Background::finish`].
pub struct Background {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lake: PathBuf,
    tables: Vec<Table>,
    spec: CompactionSpec,
}

impl Background {
    /// Starts the thread.
    pub fn start(lake: &Path, tables: &[Table], spec: &CompactionSpec) -> Background {
        let (stop, stopped) = mpsc::channel::<()>();
        let (l, t, s) = (lake.to_path_buf(), tables.to_vec(), spec.clone());
        let thread = std::thread::Builder::new()
            .name("millrace-compaction".into())
            .spawn(move || {
                let every = std::time::Duration::from_millis(s.interval_ms.max(1));
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    match compact_lake(&l, &t, Options::of(&s, true)) {
                        Ok(done) if done.partitions + done.deleted > 0 => {
                            info!(lake = %l.display(), %done, "Compaction pass.")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(lake = %l.display(), %e, "A compaction pass failed; the lake is as it was, the next pass retries.")
                        }
                    }
                }
            })
            .ok();
        Background {
            stop: Some(stop),
            thread,
            lake: lake.to_path_buf(),
            tables: tables.to_vec(),
            spec: spec.clone(),
        }
    }

    /// Stops the thread (after the partition it is at); with `all`, then
    /// compacts every partition (a `--once` run's last commit is made).
    pub fn finish(mut self, all: bool) -> Result<Summary, CompactError> {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !all {
            return Ok(Summary::default());
        }
        compact_lake(&self.lake, &self.tables, Options::of(&self.spec, false))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<(String, u64)> {
        v.iter().map(|n| (n.to_string(), 10)).collect()
    }

    #[test]
    fn runs_are_cut_at_the_target_and_single_files_are_left_alone() {
        let live = names(&["a", "b", "c", "d", "e"]);
        assert_eq!(plan(&live, 25), vec![vec!["a", "b"], vec!["c", "d"]]);
        assert_eq!(plan(&live, 1000), vec![vec!["a", "b", "c", "d", "e"]]);
        // Files at the target or over it are not rewritten.
        let mut big = live.clone();
        big[2].1 = 50;
        assert_eq!(plan(&big, 50), vec![vec!["a", "b", "d", "e"]]);
        assert!(plan(&names(&["a"]), 1000).is_empty());
    }

    #[test]
    fn a_reader_sees_unreplaced_parts_and_committed_compacted_files() {
        let mut p = Partition::default();
        for n in [
            "part-1.parquet",
            "part-2.parquet",
            "part-3.parquet",
            "compact-0000000001-x-000.parquet",
            "compact-0000000002-y-000.parquet",
        ] {
            p.files.insert(n.into(), 1);
        }
        // Before any record: the epochs' parts only (a compacted file without
        // its record is not committed).
        let live: Vec<String> = p.live().into_iter().map(|(n, _)| n).collect();
        assert_eq!(live, ["part-1.parquet", "part-2.parquet", "part-3.parquet"]);
        p.records.insert(
            1,
            Record {
                version: VERSION,
                created_ms: 0,
                added: vec![Added {
                    name: "compact-0000000001-x-000.parquet".into(),
                    rows: 2,
                    bytes: 1,
                }],
                removed: vec!["part-1.parquet".into(), "part-2.parquet".into()],
            },
        );
        let live: Vec<String> = p.live().into_iter().map(|(n, _)| n).collect();
        assert_eq!(live, ["compact-0000000001-x-000.parquet", "part-3.parquet"]);
        // A second compaction replaces the first one's file too.
        p.records.insert(
            2,
            Record {
                version: VERSION,
                created_ms: 0,
                added: vec![Added {
                    name: "compact-0000000002-y-000.parquet".into(),
                    rows: 3,
                    bytes: 1,
                }],
                removed: vec![
                    "compact-0000000001-x-000.parquet".into(),
                    "part-3.parquet".into(),
                ],
            },
        );
        let live: Vec<String> = p.live().into_iter().map(|(n, _)| n).collect();
        assert_eq!(live, ["compact-0000000002-y-000.parquet"]);
        // Once the replaced files are gone the lone file is read without its records.
        let lone = Partition {
            files: [("compact-0000000002-y-000.parquet".to_string(), 1)].into(),
            ..Partition::default()
        };
        assert_eq!(
            lone.live(),
            [("compact-0000000002-y-000.parquet".to_string(), 1)]
        );
    }

    #[test]
    fn only_parquet_outside_hidden_folders_is_read() {
        assert!(visible_parquet("date=2026-01-01/hour=00", "part-1.parquet"));
        assert!(!visible_parquet(
            "date=2026-01-01",
            ".part-1.parquet.pending"
        ));
        assert!(!visible_parquet("_compactions", "x.parquet"));
        assert!(!visible_parquet("", "part-1.parquet.tmp"));
    }
}

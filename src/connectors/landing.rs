//! `landing`: the landing-folder source (the trigger of the data-factory workflow).
//!
//! **Out:** [`Chunk`]s of whole records (to `parse`, on this worker); at the
//! epoch in which each file ends, a [`FileFact`] (name, size, records,
//! content hash, arrival) for the manifest and the monitors; and at the end
//! of every epoch a [`SourcePos`] (the file it is in the middle of, with byte
//! offset, line and the hash of the bytes before it) for the checkpoint.
//! **Records:** a JSON-lines record is a line; a CSV record is a line, or
//! several when a quoted field holds a newline (RFC 4180): the source reads
//! on while a quote is open ([`Quoting`], the machine `parse` splits with),
//! so a chunk never ends inside a record. The ledger and `rows` count
//! records, not physical lines; a record's line is the one it starts on.
//! A record that is not UTF-8 is passed on lossily decoded with its exact
//! bytes beside it (`parse` rejects it as `bad_encoding`).
//! **Restore:** given a checkpointed [`FilePos`], the source reopens that file
//! at that offset (re-hashing the prefix so the file's content hash stays
//! whole, and checking that it is still the prefix that was read) and
//! continues from the epoch after the checkpoint. A resumed file that is gone
//! is skipped with a warning (what was committed of it stays).
//! **Partitioning:** every worker lists the folder and reads the files it owns
//! (stable hash of the file name over all workers), in name order.
//! **Which files:** regular files directly in the folder whose names do not
//! start with `.` or `_` and do not end in a temporary suffix (`.tmp`,
//! `.part`, `.partial`, `.crdownload`, `.inprogress`) — those are ignored
//! without a word, they are on their way in —, with a known format (`.csv`,
//! `.jsonl`, `.ndjson`, `.json`, each also gzipped as `.gz`), whose
//! modification time is at least `settle_ms` old (so both "write to a
//! temporary name, then rename in" and "write in place, then stop" work).
//! Any other file (another extension, a name that is not UTF-8) is not read:
//! it is logged once and counted in `millrace_landing_files_skipped_total`.
//! A gzipped file is decompressed as it is read; its checkpointed offsets are
//! offsets in the decompressed stream, its size and content hash those of the
//! file itself.
//! **Content identity:** a file is processed once per content: a name the
//! manifest lists with the same size and xxh3 content hash is skipped; the
//! same name with another content is a new file, read in full; another name
//! with the content of a file already read is read too (it is another file),
//! with a warning naming the first.
//! **Changes while reading:** a file must not change once picked up. At its
//! end the source checks that it read as many bytes as the file had when
//! picked up and that the open file's size and modification time are those
//! it had (a file that grows past that size is caught as soon as it does);
//! a resumed file must still have its size at pick-up and the prefix that was
//! read. A changed file is never recorded as read, and the chunk that ran
//! into the change is not passed on (it may end in a cut record). Then, by
//! `on_change`: `fail` (default) stops the run with an error naming the file
//! — its unfinished epoch is not committed, and the next run resumes from the
//! checkpoint once the file is back to what was picked up (the truncated,
//! then landed again whole, case: no record is read twice), or skips it if
//! it is gone; `retry` warns, waits until the file has settled again and
//! reads on after the records already passed on if they are still its
//! beginning (hash of those bytes), else stops as `fail` — those records are
//! (being) committed, so reading the new content from its start could
//! count them twice.
//! **Epochs:** an epoch ends after `records_per_epoch` records or at the end
//! of a file, whichever comes first, so the same files always give the same
//! epochs. The source holds back while `max_epochs_in_flight` of its epochs
//! are not yet committed (it watches a probe on the committed stream): a
//! slow sink slows it down instead of growing memory.
//! **`--once`:** the files present at start are read (waiting for any that
//! have not settled), then the source finishes; otherwise it polls every
//! `poll_interval_ms`.
//! **A container or bucket:** `path` may be an object-store URL (`az://`,
//! `abfss://`, `s3://`, the storage layer's; credentials from the
//! environment) naming a prefix: the objects directly under it are the
//! folder's files, with the same rules (names, formats, `settle_ms` on their
//! last modification, content identity through the manifest, so an object is
//! read once across restarts). An object is fetched whole when it is opened
//! (one request; its size counts against memory while it is read), and at its
//! end its size and last modification are looked up again: an object
//! replaced while read is a changed file.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;
use millrace_operators::hash::{bytes_hash, owner};
use millrace_operators::parse::{is_blank, split_record, Quoting};
use millrace_operators::record::{Chunk, Format};
use millrace_operators::Epoch;
use serde::{Deserialize, Serialize};
use timely::dataflow::{ProbeHandle, Scope};
use tracing::{info, warn};
use xxhash_rust::xxh3::Xxh3;

use super::source::{source, Emit, Next, Reader, Shell};
use crate::core::fault::Fault;
pub use crate::core::position::{FileFact, FilePos, SourcePos, SourceStreams};
use crate::core::storage;

/// `[source.landing]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandingSpec {
    /// The folder to watch (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// How files are encoded: `csv`, `jsonl`, or `auto` (by file extension).
    #[serde(default)]
    pub format: FileFormat,
    /// How often to look for new files when not running `--once`.
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
    /// A file is complete once its size and modification time have not changed for this long.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    /// What to do when a file changes after it was picked up (see [`OnChange`]).
    #[serde(default)]
    pub on_change: OnChange,
}

/// `[source.landing] on_change`: what the landing source does when a file
/// changes (shrinks, grows, is rewritten) after it was picked up. A changed
/// file is never recorded as read; see `src/connectors/landing.rs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Stop the run with an error naming the file (nothing of its unfinished
    /// epoch is committed); the next run resumes it from the checkpoint once
    /// it is back to what was picked up.
    #[default]
    Fail,
    /// Warn, wait until the file settles again, then go on after the records
    /// already read if they are still the file's beginning (else stop as `fail`).
    Retry,
}

/// `poll_interval_ms` by default.
pub fn default_poll() -> u64 {
    1_000
}

/// `settle_ms` by default.
pub fn default_settle() -> u64 {
    1_000
}

/// File encodings the landing source reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// By extension: `.csv` is CSV; `.jsonl`, `.ndjson` and `.json` are JSON lines.
    #[default]
    Auto,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Names with these endings are files still being written.
const TEMP_SUFFIXES: [&str; 5] = [".tmp", ".part", ".partial", ".crdownload", ".inprogress"];

/// Whether a directory entry name may be a landed file.
pub fn is_candidate_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name.starts_with('_')
        || TEMP_SUFFIXES.iter().any(|s| name.ends_with(s)))
}

/// Whether `name` is a gzipped file (`.gz`): it is decompressed as it is read.
pub fn is_gzip(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gz")
}

/// The format of `name` under `format`, or `None` if it is not a file this
/// source reads. `auto` goes by the extension, under a `.gz` if there is one.
pub fn format_of(name: &str, format: FileFormat) -> Option<Format> {
    match format {
        FileFormat::Csv => Some(Format::Csv),
        FileFormat::Jsonl => Some(Format::Jsonl),
        FileFormat::Auto => {
            let lower = name.to_ascii_lowercase();
            let lower = lower.strip_suffix(".gz").unwrap_or(&lower);
            if lower.ends_with(".csv") {
                Some(Format::Csv)
            } else if [".jsonl", ".ndjson", ".json"]
                .iter()
                .any(|s| lower.ends_with(s))
            {
                Some(Format::Jsonl)
            } else {
                None
            }
        }
    }
}

/// Files already processed, by name: `(size, content hash)` of each version.
pub type Processed = HashMap<String, Vec<(u64, u64)>>;

/// The xxh3 of a file's whole content.
pub fn file_hash(path: &Path) -> std::io::Result<u64> {
    let mut h = Xxh3::new();
    let mut f = Src::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.digest());
        }
        h.update(&buf[..n]);
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Candidate {
    name: String,
    format: Format,
    size: u64,
    modified_ms: i64,
}

/// Why the landing source stops the run (each names the folder or the file).
#[derive(Debug, thiserror::Error)]
pub enum LandingError {
    /// The folder could not be listed.
    #[error("cannot list the landing folder {}: {error}", dir.display())]
    List {
        /// The landing folder.
        dir: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A settled file could not be opened.
    #[error("cannot open a landed file: {0}")]
    Open(std::io::Error),
    /// A file could not be read.
    #[error("cannot read landed file `{name}`: {error}")]
    Read {
        /// The file's name in the folder.
        name: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file a checkpoint was in the middle of cannot be resumed.
    #[error("cannot resume landed file `{name}`: {error}. Land it again as it was picked up, or move it away")]
    Resume {
        /// The file's name in the folder.
        name: String,
        /// What is wrong with it.
        error: std::io::Error,
    },
}

/// What a folder entry is to the worker listing it.
enum Listed {
    /// Settled, owned, not processed: to be read.
    Ready(Candidate),
    /// Still being written (modified within `settle_ms`).
    Unsettled(String),
    /// Another worker's, in hand, already read, or not a data file.
    Not,
}

/// A landed file's bytes on their way to the decoder: counted, and hashed
/// when the file is gzipped (a plain file is hashed as its records are read).
struct Tee {
    src: Src,
    bytes: u64,
    hasher: Option<Xxh3>,
}

/// Where a landed file's bytes come from: a local file, streamed; or an
/// object of a container or bucket, fetched whole when it is opened.
enum Src {
    File(File),
    Object {
        bytes: std::io::Cursor<Vec<u8>>,
        path: PathBuf,
    },
}

impl Src {
    fn open(path: &Path) -> std::io::Result<Src> {
        Ok(if storage::is_remote(path) {
            Src::Object {
                bytes: std::io::Cursor::new(storage::read(path)?),
                path: path.to_path_buf(),
            }
        } else {
            Src::File(File::open(path)?)
        })
    }

    /// Its size and modification time now (a local file's own, even if
    /// another file has been renamed over its name since).
    fn stat(&self) -> std::io::Result<(u64, i64)> {
        match self {
            Src::File(f) => f.metadata().map(|m| (m.len(), storage::modified_ms(&m))),
            Src::Object { path, .. } => storage::stat(path)?
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "it is gone")),
        }
    }
}

impl Read for Src {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Src::File(f) => f.read(buf),
            Src::Object { bytes, .. } => bytes.read(buf),
        }
    }
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.src.read(buf)?;
        self.bytes += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A landed file, decompressed if it is gzipped.
// One per open file: the plain reader's buffer stays inline, where every read goes.
#[allow(clippy::large_enum_variant)]
enum Decoded {
    Plain(Tee),
    Gzip(Box<MultiGzDecoder<Tee>>),
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Decoded::Plain(t) => t.read(buf),
            Decoded::Gzip(g) => g.read(buf),
        }
    }
}

impl Decoded {
    fn tee(&self) -> &Tee {
        match self {
            Decoded::Plain(t) => t,
            Decoded::Gzip(g) => g.get_ref(),
        }
    }
}

struct OpenFile {
    name: Arc<str>,
    input: u64,
    format: Format,
    reader: BufReader<Decoded>,
    header: Option<Arc<[String]>>,
    next_line: u64,
    rows: u64,
    /// Size and modification time it must keep while it is read.
    size: u64,
    modified_ms: i64,
    /// When it arrived (its records' `arrived_ms`; kept across a resume).
    arrived_ms: i64,
    /// xxh3 of the (decompressed) bytes consumed.
    hasher: Xxh3,
    offset: u64,
}

/// Where a file was before a chunk was read: restored when the chunk is dropped.
struct Mark {
    offset: u64,
    next_line: u64,
    rows: u64,
    hasher: Xxh3,
}

impl OpenFile {
    fn position(&self) -> FilePos {
        FilePos {
            name: self.name.to_string(),
            size_bytes: self.size,
            arrived_ms: self.arrived_ms,
            offset: self.offset,
            next_line: self.next_line,
            rows: self.rows,
            prefix_hash: Some(self.hasher.digest()),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            offset: self.offset,
            next_line: self.next_line,
            rows: self.rows,
            hasher: self.hasher.clone(),
        }
    }

    fn restore(&mut self, m: Mark) {
        self.offset = m.offset;
        self.next_line = m.next_line;
        self.rows = m.rows;
        self.hasher = m.hasher;
    }

    /// The content hash of the whole file, once it has been read to its end.
    fn content_hash(&self) -> u64 {
        match &self.reader.get_ref().tee().hasher {
            Some(h) => h.digest(),
            None => self.hasher.digest(),
        }
    }

    /// How the file differs from what was picked up, if it does: `at_end`,
    /// it has been read to its end and must have had exactly its size.
    fn changed(&self, at_end: bool) -> Option<String> {
        let read = self.reader.get_ref().tee().bytes;
        if read > self.size || (at_end && read != self.size) {
            return Some(format!(
                "{read} bytes read of the {} it had when picked up",
                self.size
            ));
        }
        if !at_end {
            return None;
        }
        match self.reader.get_ref().tee().src.stat() {
            Ok((len, _)) if len != self.size => Some(format!(
                "it is now {len} bytes, {} when picked up",
                self.size
            )),
            Ok((_, modified)) if modified != self.modified_ms => {
                Some("it was modified again after it was picked up".to_string())
            }
            Ok(_) => None,
            Err(e) => Some(format!("cannot stat it: {e}")),
        }
    }
}

/// Settings of one landing source instance.
pub struct LandingSource {
    /// The topology's `[source.landing]`, with overrides applied.
    pub spec: LandingSpec,
    /// Read only what is there at start, then finish.
    pub once: bool,
    /// Records per epoch.
    pub records_per_epoch: u64,
    /// Uncommitted epochs allowed before the source waits.
    pub max_epochs_in_flight: u64,
    /// Files the manifest lists as processed.
    pub processed: Processed,
    /// The first epoch of this run: after every epoch an earlier run committed,
    /// so a run never writes over another run's parts.
    pub first_epoch: Epoch,
    /// Where I/O errors are reported.
    pub fault: Fault,
    /// Set on SIGINT/SIGTERM: the source cuts its epoch and finishes; a file it
    /// was in the middle of is not recorded, so the next run reads it again.
    pub stop: Arc<AtomicBool>,
    /// Per worker: where to resume (from the checkpoint), if in the middle of a file.
    pub resume: Vec<Option<FilePos>>,
}

/// Why a file of the landing folder is not read (the `reason` label of
/// `millrace_landing_files_skipped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not `.csv`, `.jsonl`, `.ndjson`, `.json` (or one of these gzipped) under `format = "auto"`.
    UnsupportedExtension,
    /// The name is not UTF-8.
    UnreadableName,
}

impl Skip {
    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Skip::UnsupportedExtension => "unsupported_extension",
            Skip::UnreadableName => "unreadable_name",
        }
    }
}

/// A file to reopen where it was left: from a checkpoint, or after it changed (`retry`).
struct Reopen {
    pos: FilePos,
    /// `retry`: the file may have a new size; it is reopened once settled.
    settle: bool,
}

struct State {
    cfg: LandingSource,
    worker: usize,
    peers: usize,
    queue: VecDeque<Candidate>,
    current: Option<OpenFile>,
    lines_in_epoch: u64,
    /// In `--once` mode: the names present at start that are not yet settled.
    unsettled: Vec<String>,
    listed_once: bool,
    /// The folder's absence was reported (a live source waits for it quietly after that).
    missing_warned: bool,
    next_scan: Instant,
    buf: Vec<u8>,
    /// Files found processed at `(size, modified)`: not hashed again while unchanged.
    known: HashMap<String, (u64, i64)>,
    /// A file to reopen at a position before anything else is read.
    reopen: Option<Reopen>,
    /// Files not read, already logged and counted.
    skipped: HashSet<OsString>,
    /// `(size, content hash)` → name of every file processed, for the same-content warning.
    contents: HashMap<(u64, u64), String>,
}

impl State {
    /// Logs and counts, once, a file of the folder that is not read.
    fn skip(&mut self, name: OsString, why: Skip) {
        if self.skipped.contains(&name) {
            return;
        }
        warn!(worker = self.worker, file = %name.to_string_lossy(), reason = why.code(), "A file in the landing folder is not read.");
        metrics::counter!(crate::core::metrics::LANDING_FILES_SKIPPED, "reason" => why.code())
            .increment(1);
        self.skipped.insert(name);
    }

    /// Lists the folder; queues settled, owned, unprocessed files.
    fn scan(&mut self) -> std::io::Result<()> {
        let root = self.cfg.spec.path.clone();
        let now = ms(SystemTime::now());
        let listed = if storage::is_remote(&root) {
            self.list_objects(&root, now)?
        } else {
            self.list_files(&root, now)?
        };
        let Some(listed) = listed else {
            return Ok(());
        };
        let (mut found, mut unsettled) = (Vec::new(), Vec::new());
        for entry in listed {
            match entry {
                Listed::Ready(c) => found.push(c),
                Listed::Unsettled(name) => unsettled.push(name),
                Listed::Not => {}
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        if self.cfg.once {
            if !self.listed_once {
                self.listed_once = true;
                self.unsettled = unsettled;
            } else {
                // Only files present at start count; take those that have settled since.
                found.retain(|c| self.unsettled.contains(&c.name));
                self.unsettled.retain(|n| unsettled.contains(n));
            }
        }
        if !found.is_empty() {
            info!(
                worker = self.worker,
                files = found.len(),
                "Found new files in the landing folder."
            );
        }
        self.queue.extend(found);
        Ok(())
    }

    /// What each file of a local folder is to this worker; `None` if the folder does not exist.
    fn list_files(&mut self, root: &Path, now: i64) -> std::io::Result<Option<Vec<Listed>>> {
        let Some(entries) = self.list(root)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for entry in entries {
            out.push(self.consider(root, &entry?, now)?);
        }
        Ok(Some(out))
    }

    /// What each object directly under a container or bucket prefix is to this worker.
    fn list_objects(&mut self, root: &Path, now: i64) -> std::io::Result<Option<Vec<Listed>>> {
        let mut out = Vec::new();
        for (name, size, modified_ms) in storage::files(root)?.unwrap_or_default() {
            if owner(bytes_hash(name.as_bytes()), self.peers) != self.worker
                || !is_candidate_name(&name)
            {
                continue;
            }
            let Some(format) = format_of(&name, self.cfg.spec.format) else {
                self.skip(name.into(), Skip::UnsupportedExtension);
                continue;
            };
            out.push(self.settled(root, name, format, size, modified_ms, now)?);
        }
        Ok(Some(out))
    }

    /// The folder's entries; `None` (said once) if the folder does not exist.
    fn list(&mut self, root: &Path) -> std::io::Result<Option<std::fs::ReadDir>> {
        match std::fs::read_dir(root) {
            Ok(e) => {
                self.missing_warned = false;
                Ok(Some(e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.cfg.once {
                    // Read what is there: nothing.
                    if !self.listed_once {
                        warn!(path = %root.display(), "The landing folder does not exist: nothing to read.");
                    }
                    self.listed_once = true;
                    self.unsettled.clear();
                } else if !std::mem::replace(&mut self.missing_warned, true) {
                    // Once, not at every poll; it is said again if the folder goes away again.
                    warn!(path = %root.display(), "The landing folder does not exist yet; waiting for it.");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// What one entry of the folder is to this worker.
    fn consider(
        &mut self,
        root: &Path,
        entry: &std::fs::DirEntry,
        now: i64,
    ) -> std::io::Result<Listed> {
        let os_name = entry.file_name();
        if owner(bytes_hash(os_name.as_encoded_bytes()), self.peers) != self.worker {
            return Ok(Listed::Not);
        }
        let Some(name) = os_name.to_str().map(str::to_string) else {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                self.skip(os_name, Skip::UnreadableName);
            }
            return Ok(Listed::Not);
        };
        if !is_candidate_name(&name) {
            return Ok(Listed::Not);
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Moved away since the folder was read: not there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listed::Not),
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            return Ok(Listed::Not);
        }
        let Some(format) = format_of(&name, self.cfg.spec.format) else {
            self.skip(os_name, Skip::UnsupportedExtension);
            return Ok(Listed::Not);
        };
        let modified_ms = meta.modified().map(ms).unwrap_or(now);
        self.settled(root, name, format, meta.len(), modified_ms, now)
    }

    /// What a data file of this worker's is: to be read, still being
    /// written, or not (in hand already, or read before with this content).
    fn settled(
        &mut self,
        root: &Path,
        name: String,
        format: Format,
        size: u64,
        modified_ms: i64,
        now: i64,
    ) -> std::io::Result<Listed> {
        let in_hand = self.queue.iter().any(|c| c.name == name)
            || self
                .current
                .as_ref()
                .is_some_and(|f| &*f.name == name.as_str())
            || self.reopen.as_ref().is_some_and(|r| r.pos.name == name);
        if in_hand {
            return Ok(Listed::Not);
        }
        if now - modified_ms < self.cfg.spec.settle_ms as i64 {
            return Ok(Listed::Unsettled(name));
        }
        if self.known.get(&name) == Some(&(size, modified_ms)) {
            return Ok(Listed::Not);
        }
        if let Some(versions) = self.cfg.processed.get(&name) {
            if versions.iter().any(|(s, _)| *s == size) {
                let h = file_hash(&root.join(&name))?;
                if versions.contains(&(size, h)) {
                    self.known.insert(name, (size, modified_ms));
                    return Ok(Listed::Not);
                }
            }
        }
        Ok(Listed::Ready(Candidate {
            name,
            format,
            size,
            modified_ms,
        }))
    }

    /// Reads one record (physical lines while a CSV quote is open) onto `self.buf`.
    /// Returns the bytes read (0 at the end of the file).
    fn read_record(
        reader: &mut BufReader<Decoded>,
        buf: &mut Vec<u8>,
        csv: bool,
        lines: &mut u64,
    ) -> std::io::Result<usize> {
        let first = buf.len();
        let mut open = false;
        loop {
            let start = buf.len();
            let n = reader.read_until(b'\n', buf)?;
            if n == 0 {
                return Ok(buf.len() - first);
            }
            *lines += 1;
            if csv {
                open = Quoting::open_after(open, &buf[start..]);
            }
            if !open {
                return Ok(buf.len() - first);
            }
        }
    }

    fn open(&mut self, c: Candidate) -> std::io::Result<OpenFile> {
        let path: PathBuf = self.cfg.spec.path.join(&c.name);
        let gzip = is_gzip(&c.name);
        let tee = Tee {
            src: Src::open(&path)?,
            bytes: 0,
            hasher: gzip.then(Xxh3::new),
        };
        let decoded = if gzip {
            Decoded::Gzip(Box::new(MultiGzDecoder::new(tee)))
        } else {
            Decoded::Plain(tee)
        };
        let mut reader = BufReader::with_capacity(1 << 20, decoded);
        let mut hasher = Xxh3::new();
        let mut next_line = 1;
        let mut header = None;
        let mut offset = 0;
        if c.format == Format::Csv {
            self.buf.clear();
            offset += Self::read_record(&mut reader, &mut self.buf, true, &mut next_line)? as u64;
            hasher.update(&self.buf);
            let text = String::from_utf8_lossy(&self.buf);
            let text = text
                .trim_end_matches(['\n', '\r'])
                .trim_start_matches('\u{feff}');
            let names = split_record(text)
                .unwrap_or_else(|_| text.split(',').map(str::to_string).collect());
            let names: Vec<String> = names
                .iter()
                .map(|h| h.trim().trim_matches('"').to_string())
                .collect();
            header = Some(names.into());
        }
        Ok(OpenFile {
            input: bytes_hash(c.name.as_bytes()),
            name: c.name.into(),
            format: c.format,
            reader,
            header,
            next_line,
            rows: 0,
            size: c.size,
            modified_ms: c.modified_ms,
            arrived_ms: c.modified_ms,
            hasher,
            offset,
        })
    }

    /// Reopens a file at a position (a checkpoint's, or where `retry` left
    /// it): it must still begin with the bytes read before it, and — unless
    /// `new_size` (a retried file settled again) — have the size it had.
    fn reopen(&mut self, pos: &FilePos, new_size: bool) -> std::io::Result<OpenFile> {
        let path = self.cfg.spec.path.join(&pos.name);
        let (size, modified_ms) = storage::stat(&path)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "it is gone"))?;
        if !new_size && size != pos.size_bytes {
            return Err(std::io::Error::other(format!(
                "it changed since it was picked up: {size} bytes, {} then",
                pos.size_bytes
            )));
        }
        let format = format_of(&pos.name, self.cfg.spec.format).unwrap_or(Format::Csv);
        let mut f = self.open(Candidate {
            name: pos.name.clone(),
            format,
            size,
            modified_ms,
        })?;
        f.arrived_ms = pos.arrived_ms;
        // Re-hash what was read before so the content hash covers the whole file.
        let mut rest = pos.offset.saturating_sub(f.offset);
        let mut buf = vec![0u8; 1 << 16];
        while rest > 0 {
            let n = f.reader.read(&mut buf[..rest.min(1 << 16) as usize])?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "it is shorter than its checkpointed position {}",
                    pos.offset
                )));
            }
            f.hasher.update(&buf[..n]);
            rest -= n as u64;
        }
        if pos.prefix_hash.is_some_and(|h| h != f.hasher.digest()) {
            return Err(std::io::Error::other(format!(
                "its first {} bytes are not those that were read",
                pos.offset
            )));
        }
        f.offset = pos.offset;
        f.next_line = pos.next_line;
        f.rows = pos.rows;
        Ok(f)
    }

    /// Reads up to `max` data records of the current file into a chunk.
    /// Returns the chunk (if any text was read), the records in it, and whether the file ended.
    fn read_chunk(&mut self, max: u64) -> std::io::Result<(Option<Chunk>, u64, bool)> {
        let f = self.current.as_mut().expect("called with an open file");
        let csv = f.format == Format::Csv;
        let mut text = String::new();
        let mut undecodable = Vec::new();
        let first_line = f.next_line;
        let mut records = 0;
        let mut eof = false;
        while records < max {
            self.buf.clear();
            let start_line = f.next_line;
            let n = Self::read_record(&mut f.reader, &mut self.buf, csv, &mut f.next_line)?;
            if n == 0 {
                eof = true;
                break;
            }
            f.offset += n as u64;
            f.hasher.update(&self.buf);
            let blank = match std::str::from_utf8(&self.buf) {
                Ok(s) => {
                    text.push_str(s);
                    is_blank(s)
                }
                Err(_) => {
                    let body = self
                        .buf
                        .strip_suffix(b"\n")
                        .map_or(&self.buf[..], |b| b.strip_suffix(b"\r").unwrap_or(b));
                    undecodable.push((start_line, body.to_vec()));
                    let lossy = String::from_utf8_lossy(&self.buf);
                    text.push_str(&lossy);
                    is_blank(&lossy)
                }
            };
            if !text.ends_with('\n') {
                text.push('\n');
            }
            if !blank {
                f.rows += 1;
                records += 1;
            }
        }
        let chunk = (!text.is_empty()).then(|| Chunk {
            source: f.name.clone(),
            input: f.input,
            first_line,
            format: f.format,
            header: f.header.clone(),
            text,
            arrived_ms: f.arrived_ms,
            positions: None,
            undecodable,
        });
        Ok((chunk, records, eof))
    }

    /// A file changed while it was read (`why`): the chunk that ran into it
    /// is dropped (`mark` restored), and the run stops or waits per `on_change`.
    fn changed(&mut self, step_id: &str, mark: Mark, why: String) {
        let mut f = self.current.take().expect("called with an open file");
        f.restore(mark);
        match self.cfg.spec.on_change {
            OnChange::Fail => self.cfg.fault.raise(format!(
                "{step_id}: landed file `{}` changed while being read ({why}); it is not recorded as read. \
                 Land it again as it was (the next run resumes it where the last checkpoint left it), \
                 or move it away, or set `[source.landing] on_change = \"retry\"`",
                f.name
            )),
            OnChange::Retry => {
                warn!(step_id = %step_id, file = %f.name, %why, records_read = f.rows, "A landed file changed while being read; reading on once it has settled again.");
                self.reopen = Some(Reopen {
                    pos: f.position(),
                    settle: true,
                });
            }
        }
    }

    /// Reopens the file of `self.reopen` if it can be now. `Ok(false)`: not yet.
    fn try_reopen(&mut self, step_id: &str) -> Result<bool, LandingError> {
        let Some(r) = self.reopen.take() else {
            return Ok(true);
        };
        let path = self.cfg.spec.path.join(&r.pos.name);
        if r.settle {
            let settled = storage::stat(&path)
                .ok()
                .flatten()
                .map(|(_, modified)| modified);
            if settled.is_some_and(|t| ms(SystemTime::now()) - t < self.cfg.spec.settle_ms as i64) {
                self.reopen = Some(r);
                return Ok(false);
            }
        }
        match self.reopen(&r.pos, r.settle) {
            Ok(f) => {
                info!(step_id = %step_id, file = %r.pos.name, line = r.pos.next_line, "Resuming a landed file at its position.");
                self.current = Some(f);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!(step_id = %step_id, file = %r.pos.name, records_read = r.pos.rows, "A landed file to resume is gone; what was read of it stays, the rest is not read.");
                Ok(true)
            }
            Err(error) => Err(LandingError::Resume {
                name: r.pos.name,
                error,
            }),
        }
    }

    /// The fact of a file read to its end, after its checks passed.
    fn finish(&mut self, step_id: &str, epoch: Epoch) -> FileFact {
        let f = self.current.take().expect("open");
        let fact = FileFact {
            name: f.name.to_string(),
            size_bytes: f.size,
            rows: f.rows,
            content_hash: f.content_hash(),
            arrived_ms: f.arrived_ms,
            last_epoch: epoch,
            worker: self.worker,
        };
        info!(step_id = %step_id, file = %fact.name, rows = fact.rows, bytes = fact.size_bytes, epoch, "Read a landed file.");
        let key = (fact.size_bytes, fact.content_hash);
        match self.contents.get(&key) {
            Some(first) if *first != fact.name => {
                warn!(step_id = %step_id, file = %fact.name, same_as = %first, "A landed file has the same content as one read before; it was read as a file of its own.");
            }
            _ => {
                self.contents.insert(key, fact.name.clone());
            }
        }
        // Remember it now: the manifest records it only once its epoch is committed.
        self.cfg
            .processed
            .entry(fact.name.clone())
            .or_default()
            .push(key);
        fact
    }
}

impl super::Source for LandingSpec {
    fn build<'scope>(
        &self,
        scope: Scope<'scope, Epoch>,
        step_id: &str,
        start: super::SourceStart,
        committed: ProbeHandle<Epoch>,
    ) -> SourceStreams<'scope> {
        let source = LandingSource {
            spec: self.clone(),
            once: start.once,
            records_per_epoch: start.records_per_epoch,
            max_epochs_in_flight: start.max_epochs_in_flight,
            processed: start.processed,
            first_epoch: start.first_epoch,
            fault: start.fault,
            stop: start.stop,
            resume: start.files,
        };
        landing(scope, step_id, source, committed)
    }
}

/// Builds the landing source on this worker. See the module docs.
pub fn landing<'scope>(
    scope: Scope<'scope, Epoch>,
    step_id: &str,
    cfg: LandingSource,
    committed: ProbeHandle<Epoch>,
) -> SourceStreams<'scope> {
    let worker = scope.index();
    let resume = cfg.resume.get(worker).cloned().flatten();
    let contents = cfg
        .processed
        .iter()
        .flat_map(|(name, v)| v.iter().map(move |k| (*k, name.clone())))
        .collect();
    let settle_on_resume = cfg.spec.on_change == OnChange::Retry;
    let shell = Shell {
        first_epoch: cfg.first_epoch,
        max_epochs_in_flight: cfg.max_epochs_in_flight,
        fault: cfg.fault.clone(),
    };
    let state = State {
        worker,
        peers: scope.peers(),
        cfg,
        queue: VecDeque::new(),
        current: None,
        lines_in_epoch: 0,
        unsettled: Vec::new(),
        listed_once: false,
        missing_warned: false,
        next_scan: Instant::now(),
        buf: Vec::new(),
        known: HashMap::new(),
        reopen: resume.map(|pos| Reopen {
            pos,
            settle: settle_on_resume,
        }),
        skipped: HashSet::new(),
        contents,
    };
    let reader = LandingReader {
        step_id: step_id.to_string(),
        state,
    };
    source(
        scope,
        step_id,
        shell,
        Ok::<_, LandingError>(reader),
        committed,
    )
}

/// The landing folder as a [`Reader`]: one file at a time, a chunk per step.
struct LandingReader {
    step_id: String,
    state: State,
}

impl LandingReader {
    /// How long to wait before looking at the folder again.
    fn poll(&self) -> Duration {
        let spec = &self.state.cfg.spec;
        Duration::from_millis(spec.poll_interval_ms.max(10))
            .min(Duration::from_millis(spec.settle_ms.max(10)))
    }

    /// Opens the next file (listing the folder when the queue is empty and
    /// it is time); `Err` says when to come back instead.
    fn next_file(&mut self) -> Result<(), Next> {
        let state = &self.state;
        let done_listing = state.cfg.once && state.listed_once && state.unsettled.is_empty();
        if state.queue.is_empty() && Instant::now() >= state.next_scan && !done_listing {
            if let Err(error) = self.state.scan() {
                let dir = self.state.cfg.spec.path.clone();
                return Err(self.fail(LandingError::List { dir, error }));
            }
            self.state.next_scan = Instant::now() + self.poll();
        }
        let state = &mut self.state;
        match state.queue.pop_front() {
            Some(candidate) => match state.open(candidate) {
                Ok(f) => {
                    state.current = Some(f);
                    Ok(())
                }
                Err(e) => Err(self.fail(LandingError::Open(e))),
            },
            // Done: everything present at start has been read.
            None if state.cfg.once && state.listed_once && state.unsettled.is_empty() => {
                Err(Next::Finished)
            }
            None => {
                let wait = state.next_scan.saturating_duration_since(Instant::now());
                Err(Next::After(wait.max(Duration::from_millis(5))))
            }
        }
    }
}

impl LandingReader {
    /// Stops the run with `e`.
    fn fail(&self, e: LandingError) -> Next {
        self.state.cfg.fault.raise(format!("{}: {e}", self.step_id));
        Next::Never
    }
}

impl Reader for LandingReader {
    fn halt(&mut self) -> bool {
        let state = &mut self.state;
        if !state.cfg.stop.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(f) = state.current.take() {
            warn!(step_id = %self.step_id, file = %f.name, "Stopping in the middle of a file; the next run reads it again.");
        }
        true
    }

    fn step(&mut self, epoch: Epoch, emit: &mut Emit) -> Next {
        match self.state.try_reopen(&self.step_id) {
            Ok(true) => {}
            Ok(false) => return Next::After(self.poll()),
            Err(e) => return self.fail(e),
        }
        if self.state.current.is_none() {
            if let Err(next) = self.next_file() {
                return next;
            }
        }
        let state = &mut self.state;
        let room = state.cfg.records_per_epoch - state.lines_in_epoch;
        let mark = state.current.as_ref().map(OpenFile::mark).expect("open");
        let (chunk, lines, eof) = match state.read_chunk(room) {
            Ok(r) => r,
            Err(error) => {
                let name = state
                    .current
                    .as_ref()
                    .map(|f| f.name.to_string())
                    .unwrap_or_default();
                return self.fail(LandingError::Read { name, error });
            }
        };
        let (step_id, state) = (&self.step_id, &mut self.state);
        // A file that changed is caught before the chunk that ran into it goes out.
        if let Some(why) = state.current.as_ref().and_then(|f| f.changed(eof)) {
            state.changed(step_id, mark, why);
            return Next::Now;
        }
        state.lines_in_epoch += lines;
        if let Some(chunk) = chunk {
            metrics::counter!(crate::core::metrics::RECORDS_IN, "step" => "landing")
                .increment(lines);
            metrics::counter!(crate::core::metrics::BYTES_IN, "step" => "landing")
                .increment(chunk.text.len() as u64);
            emit.chunks.push(chunk);
            if !eof {
                crate::crash_point!("landing_mid_file");
                crate::wait_point!("landing_between_chunks");
            }
        }
        if eof {
            emit.facts.push(state.finish(step_id, epoch));
        }
        if eof || state.lines_in_epoch >= state.cfg.records_per_epoch {
            let position = state.current.as_ref().map(OpenFile::position);
            emit.cut = Some(SourcePos {
                worker: state.worker,
                position,
                offsets: BTreeMap::new(),
                labels: false,
            });
            state.lines_in_epoch = 0;
        }
        Next::Now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &Path, on_change: OnChange) -> State {
        State {
            cfg: LandingSource {
                spec: LandingSpec {
                    path: dir.to_path_buf(),
                    format: FileFormat::Auto,
                    poll_interval_ms: 10,
                    settle_ms: 0,
                    on_change,
                },
                once: true,
                records_per_epoch: 1000,
                max_epochs_in_flight: 4,
                processed: Processed::new(),
                first_epoch: 0,
                fault: Fault::default(),
                stop: Arc::new(AtomicBool::new(false)),
                resume: Vec::new(),
            },
            worker: 0,
            peers: 1,
            queue: VecDeque::new(),
            current: None,
            lines_in_epoch: 0,
            unsettled: Vec::new(),
            listed_once: false,
            missing_warned: false,
            next_scan: Instant::now(),
            buf: Vec::new(),
            known: HashMap::new(),
            reopen: None,
            skipped: HashSet::new(),
            contents: HashMap::new(),
        }
    }

    fn folder(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("millrace-landing-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn candidate(dir: &Path, name: &str) -> Candidate {
        let m = std::fs::metadata(dir.join(name)).unwrap();
        Candidate {
            name: name.into(),
            format: format_of(name, FileFormat::Auto).unwrap(),
            size: m.len(),
            modified_ms: m.modified().map(ms).unwrap(),
        }
    }

    #[test]
    fn formats_by_extension_under_gzip() {
        for (name, f) in [
            ("a.csv", Some(Format::Csv)),
            ("a.CSV.GZ", Some(Format::Csv)),
            ("a.ndjson.gz", Some(Format::Jsonl)),
            ("a.txt", None),
            ("a.gz", None),
        ] {
            assert_eq!(format_of(name, FileFormat::Auto), f, "{name}");
        }
        assert!(is_gzip("x.json.gz") && !is_gzip("x.json"));
    }

    #[test]
    fn chunks_hold_whole_quoted_records_and_undecodable_bytes() {
        let dir = folder("records");
        let text = b"\"a,\nb\",c\nx,\"open\n\ny\"\n\xff,1\r\nlast,2";
        std::fs::write(
            dir.join("f.csv"),
            [b"h1,\"h\n2\"\n".as_slice(), text].concat(),
        )
        .unwrap();
        let mut s = state(&dir, OnChange::Fail);
        let f = s.open(candidate(&dir, "f.csv")).unwrap();
        assert_eq!(&*f.header.clone().unwrap(), ["h1", "h\n2"]);
        assert_eq!(f.next_line, 3);
        s.current = Some(f);
        let (chunk, n, eof) = s.read_chunk(2).unwrap();
        let chunk = chunk.unwrap();
        assert_eq!((n, eof, chunk.first_line), (2, false, 3));
        assert_eq!(chunk.text, "\"a,\nb\",c\nx,\"open\n\ny\"\n");
        let (chunk, n, eof) = s.read_chunk(10).unwrap();
        let chunk = chunk.unwrap();
        assert_eq!((n, eof, chunk.first_line), (2, true, 8));
        assert_eq!(chunk.undecodable, [(8, b"\xff,1".to_vec())]);
        assert!(s.current.as_ref().unwrap().changed(true).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_that_shrank_or_changed_prefix_is_caught() {
        let dir = folder("changed");
        let body: String = (0..200).map(|i| format!("{i},x\n")).collect();
        std::fs::write(dir.join("f.csv"), format!("a,b\n{body}")).unwrap();
        let mut s = state(&dir, OnChange::Fail);
        s.current = Some(s.open(candidate(&dir, "f.csv")).unwrap());
        let (_, n, _) = s.read_chunk(50).unwrap();
        assert_eq!(n, 50);
        let pos = s.current.as_ref().unwrap().position();
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("f.csv"))
            .unwrap()
            .set_len(300)
            .unwrap();
        let (_, _, eof) = s.read_chunk(1000).unwrap();
        assert!(eof);
        let why = s.current.as_ref().unwrap().changed(true).unwrap();
        assert!(why.contains("it is now 300 bytes"), "{why}");
        // Resuming: the size must be the one picked up, and the prefix the one read.
        assert!(s
            .reopen(&pos, false)
            .err()
            .unwrap()
            .to_string()
            .contains("changed since"));
        std::fs::write(
            dir.join("f.csv"),
            format!("a,b\n{}", body.replace('x', "y")),
        )
        .unwrap();
        let err = s.reopen(&pos, false).err().unwrap().to_string();
        assert!(err.contains("are not those that were read"), "{err}");
        std::fs::write(dir.join("f.csv"), format!("a,b\n{body}")).unwrap();
        let f = s.reopen(&pos, false).unwrap();
        assert_eq!((f.offset, f.rows, f.next_line), (pos.offset, 50, 52));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_gzipped_file_resumes_at_an_offset_of_its_decompressed_stream() {
        use std::io::Write;
        let dir = folder("gzip");
        let plain: String =
            "a,b\n".to_string() + &(0..100).map(|i| format!("{i},x\n")).collect::<String>();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(plain.as_bytes()).unwrap();
        let gz = e.finish().unwrap();
        std::fs::write(dir.join("f.csv.gz"), &gz).unwrap();
        let mut s = state(&dir, OnChange::Fail);
        s.current = Some(s.open(candidate(&dir, "f.csv.gz")).unwrap());
        s.read_chunk(10).unwrap();
        let pos = s.current.as_ref().unwrap().position();
        assert_eq!(pos.offset as usize, plain.find("10,x").unwrap());
        s.current = Some(s.reopen(&pos, false).unwrap());
        let (chunk, n, eof) = s.read_chunk(1000).unwrap();
        assert_eq!((n, eof), (90, true));
        assert!(chunk.unwrap().text.starts_with("10,x\n"));
        let f = s.current.as_ref().unwrap();
        assert!(f.changed(true).is_none());
        assert_eq!(f.content_hash(), xxhash_rust::xxh3::xxh3_64(&gz));
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! `landing`: the landing-folder source (the trigger of the data-factory workflow).
//!
//! **Out:** [`Chunk`]s of whole lines (to `parse`, on this worker); at the
//! epoch in which each file ends, a [`FileFact`] (name, size, rows, content
//! hash, arrival) for the manifest and the monitors; and at the end of every
//! epoch a [`SourcePos`] (the file it is in the middle of, with byte offset and
//! line) for the checkpoint.
//! **Restore:** given a checkpointed [`FilePos`], the source reopens that file
//! at that offset (re-hashing the prefix so the file's content hash stays
//! whole) and continues from the epoch after the checkpoint.
//! **Partitioning:** every worker lists the folder and reads the files it owns
//! (stable hash of the file name over all workers), in name order.
//! **Which files:** regular files directly in the folder whose names do not
//! start with `.` or `_` and do not end in a temporary suffix (`.tmp`,
//! `.part`, `.partial`, `.crdownload`, `.inprogress`), with a known format,
//! whose modification time is at least `settle_ms` old (so both "write to a
//! temporary name, then rename in" and "write in place, then stop" work), and
//! that the manifest does not already list with the same name, size and
//! content hash. A file that changes after it was read is a new file.
//! **Epochs:** an epoch ends after `records_per_epoch` lines or at the end of a
//! file, whichever comes first, so the same files always give the same epochs.
//! The source holds back while `max_epochs_in_flight` of its epochs are not yet
//! committed (it watches a probe on the committed stream): a slow sink slows it
//! down instead of growing memory.
//! **`--once`:** the files present at start are read (waiting for any that
//! have not settled), then the source finishes; otherwise it polls every
//! `poll_interval_ms`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use millrace_operators::hash::{bytes_hash, owner};
use millrace_operators::record::{Chunk, Format};
use millrace_operators::Epoch;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::{ProbeHandle, Scope, Stream};
use tracing::{info, warn};
use xxhash_rust::xxh3::Xxh3;

use crate::runtime::Fault;
use crate::topology::{FileFormat, LandingSpec};

/// What the landing source knows about a file it has read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFact {
    /// File name, relative to the landing folder.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Data lines read (the CSV header is not counted; blank lines are not counted).
    pub rows: u64,
    /// xxh3 of the whole content.
    pub content_hash: u64,
    /// Modification time of the file when it was picked up (ms since the Unix epoch).
    pub arrived_ms: i64,
    /// The epoch in which the file's last line was emitted.
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
    /// Bytes consumed (header included).
    pub offset: u64,
    /// Line number of the next line.
    pub next_line: u64,
    /// Data lines read so far.
    pub rows: u64,
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

/// What a source emits: chunks of lines, facts of finished inputs, and its
/// position at every epoch's end (the landing folder's and Kafka's alike).
pub type SourceStreams<'scope> = (
    Stream<'scope, Epoch, Vec<Chunk>>,
    Stream<'scope, Epoch, Vec<FileFact>>,
    Stream<'scope, Epoch, Vec<SourcePos>>,
);

/// Names with these endings are files still being written.
const TEMP_SUFFIXES: [&str; 5] = [".tmp", ".part", ".partial", ".crdownload", ".inprogress"];

/// Whether a directory entry name may be a landed file.
pub fn is_candidate_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name.starts_with('_')
        || TEMP_SUFFIXES.iter().any(|s| name.ends_with(s)))
}

/// The format of `name` under `format`, or `None` if it is not a file this source reads.
pub fn format_of(name: &str, format: FileFormat) -> Option<Format> {
    match format {
        FileFormat::Csv => Some(Format::Csv),
        FileFormat::Jsonl => Some(Format::Jsonl),
        FileFormat::Auto => {
            let lower = name.to_ascii_lowercase();
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
    let mut f = File::open(path)?;
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

struct OpenFile {
    name: Arc<str>,
    input: u64,
    format: Format,
    reader: BufReader<File>,
    header: Option<Arc<[String]>>,
    next_line: u64,
    rows: u64,
    size: u64,
    arrived_ms: i64,
    hasher: Xxh3,
    offset: u64,
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
        }
    }
}

/// Settings of one landing source instance.
pub struct LandingSource {
    /// The topology's `[source.landing]`, with overrides applied.
    pub spec: LandingSpec,
    /// Read only what is there at start, then finish.
    pub once: bool,
    /// Lines per epoch.
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
}

impl State {
    /// Lists the folder; queues settled, owned, unprocessed files.
    fn scan(&mut self) -> std::io::Result<()> {
        let root = &self.cfg.spec.path;
        let now = ms(SystemTime::now());
        let settle = self.cfg.spec.settle_ms as i64;
        let mut found = Vec::new();
        let mut unsettled = Vec::new();
        let entries = match std::fs::read_dir(root) {
            Ok(e) => {
                self.missing_warned = false;
                e
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
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !is_candidate_name(&name)
                || owner(bytes_hash(name.as_bytes()), self.peers) != self.worker
            {
                continue;
            }
            let Some(format) = format_of(&name, self.cfg.spec.format) else {
                continue;
            };
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            if self.queue.iter().any(|c| c.name == name)
                || self
                    .current
                    .as_ref()
                    .is_some_and(|f| &*f.name == name.as_str())
            {
                continue;
            }
            let size = meta.len();
            let modified_ms = meta.modified().map(ms).unwrap_or(now);
            if now - modified_ms < settle {
                unsettled.push(name);
                continue;
            }
            if self.known.get(&name) == Some(&(size, modified_ms)) {
                continue;
            }
            if let Some(versions) = self.cfg.processed.get(&name) {
                if versions.iter().any(|(s, _)| *s == size) {
                    let h = file_hash(&root.join(&name))?;
                    if versions.contains(&(size, h)) {
                        self.known.insert(name, (size, modified_ms));
                        continue;
                    }
                }
            }
            found.push(Candidate {
                name,
                format,
                size,
                modified_ms,
            });
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

    fn open(&mut self, c: Candidate) -> std::io::Result<OpenFile> {
        let path: PathBuf = self.cfg.spec.path.join(&c.name);
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&path)?);
        let mut hasher = Xxh3::new();
        let mut next_line = 1;
        let mut header = None;
        let mut offset = 0;
        if c.format == Format::Csv {
            self.buf.clear();
            offset += reader.read_until(b'\n', &mut self.buf)? as u64;
            hasher.update(&self.buf);
            let text = String::from_utf8_lossy(&self.buf);
            let names: Vec<String> = text
                .trim_end_matches(['\n', '\r'])
                .trim_start_matches('\u{feff}')
                .split(',')
                .map(|h| h.trim().trim_matches('"').to_string())
                .collect();
            header = Some(names.into());
            next_line = 2;
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
            arrived_ms: c.modified_ms,
            hasher,
            offset,
        })
    }

    /// Reopens a file at a checkpointed position.
    fn reopen(&mut self, pos: &FilePos) -> std::io::Result<OpenFile> {
        let format = format_of(&pos.name, self.cfg.spec.format).unwrap_or(Format::Csv);
        let mut f = self.open(Candidate {
            name: pos.name.clone(),
            format,
            size: pos.size_bytes,
            modified_ms: pos.arrived_ms,
        })?;
        // Re-hash what was read before the checkpoint so the content hash covers the whole file.
        let mut rest = pos.offset - f.offset;
        let mut buf = vec![0u8; 1 << 16];
        while rest > 0 {
            let n = f.reader.read(&mut buf[..rest.min(1 << 16) as usize])?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "`{}` is shorter than its checkpointed position {}",
                    pos.name, pos.offset
                )));
            }
            f.hasher.update(&buf[..n]);
            rest -= n as u64;
        }
        f.offset = pos.offset;
        f.next_line = pos.next_line;
        f.rows = pos.rows;
        Ok(f)
    }

    /// Reads up to `max` data lines of the current file into a chunk.
    /// Returns the chunk (if any text was read), the data lines in it, and whether the file ended.
    fn read_chunk(&mut self, max: u64) -> std::io::Result<(Option<Chunk>, u64, bool)> {
        let f = self.current.as_mut().expect("called with an open file");
        let mut text = String::new();
        let first_line = f.next_line;
        let mut lines = 0;
        let mut eof = false;
        while lines < max {
            self.buf.clear();
            let n = f.reader.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                eof = true;
                break;
            }
            f.offset += n as u64;
            f.hasher.update(&self.buf);
            match std::str::from_utf8(&self.buf) {
                Ok(s) => text.push_str(s),
                Err(_) => text.push_str(&String::from_utf8_lossy(&self.buf)),
            }
            if !text.ends_with('\n') {
                text.push('\n');
            }
            f.next_line += 1;
            if self.buf.iter().any(|b| !b.is_ascii_whitespace()) {
                f.rows += 1;
                lines += 1;
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
            undecodable: Vec::new(),
        });
        Ok((chunk, lines, eof))
    }
}

/// Builds the landing source on this worker. See the module docs.
pub fn landing<'scope>(
    scope: Scope<'scope, Epoch>,
    step_id: &str,
    cfg: LandingSource,
    committed: ProbeHandle<Epoch>,
) -> SourceStreams<'scope> {
    let mut builder = OperatorBuilder::new(step_id.to_owned(), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address);
    let (chunks_out, chunks) = builder.new_output();
    let (facts_out, facts) = builder.new_output();
    let mut chunks_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Chunk>>>::from(chunks_out);
    let mut facts_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<FileFact>>>::from(facts_out);
    let (pos_out, positions) = builder.new_output();
    let mut pos_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<SourcePos>>>::from(pos_out);
    let step_id = step_id.to_string();
    let mut state = State {
        worker: scope.index(),
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
    };
    let resume = state.cfg.resume.get(state.worker).cloned().flatten();
    builder.build(move |mut caps| {
        // One capability per output: [chunks, facts, positions].
        for cap in caps.iter_mut() {
            cap.downgrade(&state.cfg.first_epoch);
        }
        let mut caps = Some(caps);
        let mut resume = resume;
        move |_frontiers| {
            let Some(c) = caps.as_mut() else { return };
            let epoch = *c[0].time();
            if state.cfg.stop.load(Ordering::Relaxed) {
                if let Some(f) = state.current.take() {
                    warn!(step_id = %step_id, file = %f.name, "Stopping in the middle of a file; the next run reads it again.");
                }
                caps = None;
                return;
            }
            let poll = Duration::from_millis(state.cfg.spec.poll_interval_ms.max(10));
            // Flow control: wait while too many of our epochs are uncommitted.
            let committed = committed.with_frontier(|f| f.first().copied());
            if committed.is_some_and(|done| epoch >= done + state.cfg.max_epochs_in_flight) {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            if let Some(pos) = resume.take() {
                match state.reopen(&pos) {
                    Ok(f) => {
                        info!(step_id = %step_id, file = %pos.name, line = pos.next_line, "Resuming a landed file at its checkpointed position.");
                        state.current = Some(f);
                    }
                    Err(e) => {
                        state.cfg.fault.raise(format!("{step_id}: cannot resume landed file `{}`: {e}", pos.name));
                        return;
                    }
                }
            }
            if state.current.is_none() {
                if state.queue.is_empty() && (Instant::now() >= state.next_scan) && !(state.cfg.once && state.listed_once && state.unsettled.is_empty()) {
                    if let Err(e) = state.scan() {
                        state.cfg.fault.raise(format!("{step_id}: cannot list the landing folder {}: {e}", state.cfg.spec.path.display()));
                        return;
                    }
                    state.next_scan = Instant::now() + poll.min(Duration::from_millis(state.cfg.spec.settle_ms.max(10)));
                }
                match state.queue.pop_front() {
                    Some(candidate) => match state.open(candidate) {
                        Ok(f) => state.current = Some(f),
                        Err(e) => {
                            state.cfg.fault.raise(format!("{step_id}: cannot open a landed file: {e}"));
                            return;
                        }
                    },
                    None => {
                        if state.cfg.once && state.listed_once && state.unsettled.is_empty() {
                            caps = None; // Done: everything present at start has been read.
                        } else {
                            activator.activate_after(state.next_scan.saturating_duration_since(Instant::now()).max(Duration::from_millis(5)));
                        }
                        return;
                    }
                }
            }
            let room = state.cfg.records_per_epoch - state.lines_in_epoch;
            let (chunk, lines, eof) = match state.read_chunk(room) {
                Ok(r) => r,
                Err(e) => {
                    let name = state.current.as_ref().map(|f| f.name.to_string()).unwrap_or_default();
                    state.cfg.fault.raise(format!("{step_id}: cannot read landed file `{name}`: {e}"));
                    return;
                }
            };
            let mut chunks_handle = chunks_out.activate();
            let mut facts_handle = facts_out.activate();
            let mut pos_handle = pos_out.activate();
            state.lines_in_epoch += lines;
            if let Some(chunk) = chunk {
                metrics::counter!(crate::metrics::RECORDS_IN, "step" => "landing").increment(lines);
                metrics::counter!(crate::metrics::BYTES_IN, "step" => "landing").increment(chunk.text.len() as u64);
                chunks_handle.session(&c[0]).give(chunk);
                if !eof {
                    crate::crash_point!("landing_mid_file");
                }
            }
            if eof {
                let f = state.current.take().expect("open");
                let fact = FileFact {
                    name: f.name.to_string(),
                    size_bytes: f.size,
                    rows: f.rows,
                    content_hash: f.hasher.digest(),
                    arrived_ms: f.arrived_ms,
                    last_epoch: epoch,
                    worker: state.worker,
                };
                info!(step_id = %step_id, file = %fact.name, rows = fact.rows, bytes = fact.size_bytes, epoch, "Read a landed file.");
                // Remember it now: the manifest records it only once its epoch is committed.
                state.cfg.processed.entry(fact.name.clone()).or_default().push((fact.size_bytes, fact.content_hash));
                facts_handle.session(&c[1]).give(fact);
            }
            if eof || state.lines_in_epoch >= state.cfg.records_per_epoch {
                let position = state.current.as_ref().map(OpenFile::position);
                pos_handle.session(&c[2]).give(SourcePos { worker: state.worker, position, offsets: BTreeMap::new(), labels: false });
                for cap in c.iter_mut() {
                    cap.downgrade(&(epoch + 1));
                }
                state.lines_in_epoch = 0;
            }
            activator.activate();
        }
    });
    (chunks, facts, positions)
}

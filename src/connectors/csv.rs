//! `csv`: scored rows back out as CSV, one file per input, in input order.
//!
//! For series scoring (`topologies/series_anomaly.toml`): every input file
//! `<landing>/NAME` gets `<lake>/<path>/NAME` with the event time (written
//! back in the schema's format), the numeric and categorical fields, the label
//! if there is one, and the score — one row per input line, in input order.
//! A line that was rejected keeps its place as a row with the event time (if
//! it could be read), empty fields and a score of 0, so row *i* of the output
//! is line *i* of the input; why it was rejected is in the lake's `rejected`
//! table.
//! Exact duplicates are not rows of their own when `clean.dedup_window_records`
//! is above 0 (the series topology sets it to 0).
//!
//! **Partitioning:** rows are exchanged by the hash of their input's name, so
//! one worker owns each output file. **Order:** an epoch is written once the
//! frontier has passed it, its rows sorted by line, so files grow in input
//! order. **Exactly once:** the operator's state is the length of every file
//! it owns after each epoch, snapshotted with the epoch; on restore a file is
//! cut back to its checkpointed length (and a file the checkpoint does not know
//! is removed), so the epochs replayed after a crash are written once. Files
//! are appended in place: a reader sees them grow, epoch by epoch.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use millrace_operators::epochs::{decode, encode, EpochStash, Snapshot, StateError, StateIo};
use millrace_operators::hash::{bytes_hash, owner};
use millrace_operators::parse::format_time;
use millrace_operators::record::{Reject, Scored};
use millrace_operators::schema::Schema;
use millrace_operators::Epoch;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

use crate::connectors::lake::Commit;
use crate::connectors::lake::SinkId;
use crate::core::fault::Fault;

/// `[sink.csv]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSinkSpec {
    /// The folder, relative to the lake (default `series_scores`).
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// The score column's name (default `score`).
    #[serde(default = "default_score")]
    pub score_column: String,
}

fn default_path() -> PathBuf {
    PathBuf::from("series_scores")
}

fn default_score() -> String {
    "score".into()
}

/// One output row, on its way to the worker that owns its file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CsvRow {
    /// The input's name.
    pub source: Arc<str>,
    /// The input line it stands for.
    pub line: u64,
    /// The row, without its line end.
    pub text: String,
}

/// The header line of every file.
pub fn header(schema: &Schema, spec: &CsvSinkSpec) -> String {
    let mut cols = vec![schema.event_time.field.clone()];
    cols.extend(schema.numeric.iter().map(|f| f.name.clone()));
    cols.extend(schema.categorical.iter().map(|f| f.name.clone()));
    if let Some(l) = &schema.label {
        cols.push(l.field.clone());
    }
    cols.push(spec.score_column.clone());
    cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")
}

/// The row of a scored record.
pub fn scored_row(schema: &Schema, s: &Scored) -> CsvRow {
    let r = &s.record;
    let mut text = format_time(r.event_time, schema.event_time.format);
    for v in &r.nums {
        text.push(',');
        text.push_str(&v.to_string());
    }
    for c in &r.cats {
        text.push(',');
        text.push_str(&quote(c));
    }
    if schema.label.is_some() {
        text.push(',');
        if let Some(l) = r.label {
            text.push_str(&l.to_string());
        }
    }
    text.push(',');
    text.push_str(&s.score.to_string());
    CsvRow {
        source: r.source.clone(),
        line: r.pos.line,
        text,
    }
}

/// The placeholder row of a rejected line: its event time if it was read, then empty fields.
pub fn rejected_row(schema: &Schema, r: &Reject) -> CsvRow {
    let mut text = r
        .event_time
        .map(|t| format_time(t, schema.event_time.format))
        .unwrap_or_default();
    let empty =
        schema.numeric.len() + schema.categorical.len() + usize::from(schema.label.is_some()) + 1;
    for _ in 0..empty - 1 {
        text.push(',');
    }
    // A line that could not be read is no evidence of an anomaly: score 0, so
    // every row has a number a scorer can read.
    text.push_str(",0");
    CsvRow {
        source: r.source.clone(),
        line: r.pos.line,
        text,
    }
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The output file name of an input: its name, with path separators made safe.
fn file_name(source: &str) -> String {
    source.replace(['/', '\\'], "_")
}

/// Bytes written per owned file: the operator's state.
type Lengths = BTreeMap<String, u64>;

/// Cuts this worker's files back to their checkpointed lengths; removes those the checkpoint does not know.
fn reconcile(dir: &Path, lengths: &Lengths, worker: usize, peers: usize) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if owner(bytes_hash(name.as_bytes()), peers) != worker {
            continue;
        }
        match lengths.get(&name) {
            Some(len) => OpenOptions::new()
                .write(true)
                .open(e.path())?
                .set_len(*len)?,
            None => std::fs::remove_file(e.path())?,
        }
    }
    Ok(())
}

impl super::Sink for CsvSinkSpec {
    fn step_id(&self) -> &str {
        "csv"
    }

    /// Scored rows and rejected lines (which keep their rows), one file per input.
    fn build<'scope>(
        &self,
        inputs: &super::SinkInputs<'scope>,
        ctx: &super::SinkContext,
        state: StateIo,
    ) -> Result<super::SinkStreams<'scope>, StateError> {
        use timely::dataflow::operators::vec::Map;
        use timely::dataflow::operators::Concatenate;
        let (a, b) = (ctx.schema.clone(), ctx.schema.clone());
        let scope = inputs.scored.scope();
        let rows = scope.concatenate(vec![
            inputs.scored.clone().flat_map(move |batch| {
                let a = a.clone();
                (0..batch.len()).map(move |i| scored_row(&a, &batch[i]))
            }),
            inputs.rejected.clone().map(move |r| rejected_row(&b, &r)),
        ]);
        let (commits, snapshots) = rows.sink_csv(
            self.step_id(),
            ctx.lake.join(&self.path),
            header(&ctx.schema, self),
            state,
            ctx.fault.clone(),
        )?;
        Ok(super::SinkStreams {
            commits,
            snapshots: Some(snapshots),
        })
    }
}

/// The files one worker appends to: the operator's state, without timely.
struct CsvFiles {
    dir: PathBuf,
    header: String,
    lengths: Lengths,
}

impl CsvFiles {
    /// Appends one epoch's rows, each to its input's file (the header first
    /// in a new file), synced; the commit that records what was written.
    fn append(
        &mut self,
        epoch: Epoch,
        worker: usize,
        mut rows: Vec<CsvRow>,
    ) -> std::io::Result<Commit> {
        rows.sort_by(|a, b| (&a.source, a.line).cmp(&(&b.source, b.line)));
        let mut commit = Commit {
            sink: SinkId::Csv,
            epoch,
            worker,
            files: 0,
            rows: rows.len() as u64,
            bytes: 0,
            parts: Vec::new(),
        };
        for group in rows.chunk_by(|a, b| a.source == b.source) {
            let name = file_name(&group[0].source);
            let len = self.lengths.entry(name.clone()).or_insert(0);
            let mut text = String::new();
            if *len == 0 {
                text.push_str(&self.header);
                text.push('\n');
            }
            for r in group {
                text.push_str(&r.text);
                text.push('\n');
            }
            std::fs::create_dir_all(&self.dir)?;
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(&name))?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
            *len += text.len() as u64;
            commit.files += 1;
            commit.bytes += text.len() as u64;
        }
        Ok(commit)
    }
}

/// The CSV sink operator. See the module docs.
pub trait CsvSink<'scope> {
    /// Appends each epoch's rows to their files; returns the commits and (when checkpointing) the state snapshots.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn sink_csv(
        self,
        step_id: &str,
        dir: PathBuf,
        header: String,
        state: StateIo,
        fault: Fault,
    ) -> Result<
        (
            Stream<'scope, Epoch, Vec<Commit>>,
            Stream<'scope, Epoch, Vec<Snapshot>>,
        ),
        StateError,
    >;
}

impl<'scope> CsvSink<'scope> for Stream<'scope, Epoch, Vec<CsvRow>> {
    fn sink_csv(
        self,
        step_id: &str,
        dir: PathBuf,
        header: String,
        state: StateIo,
        fault: Fault,
    ) -> Result<
        (
            Stream<'scope, Epoch, Vec<Commit>>,
            Stream<'scope, Epoch, Vec<Snapshot>>,
        ),
        StateError,
    > {
        let scope = self.scope();
        let (worker, peers) = (scope.index(), scope.peers());
        let lengths: Lengths = match &state.restore {
            Some(bytes) => decode(step_id, bytes)?,
            None => Lengths::new(),
        };
        if state.snapshot {
            if let Err(e) = reconcile(&dir, &lengths, worker, peers) {
                fault.raise(format!(
                    "{step_id}: cannot restore {} to its checkpoint: {e}",
                    dir.display()
                ));
            }
        }
        let mut builder = OperatorBuilder::new(step_id.to_owned(), scope);
        let mut input = builder.new_input(
            self,
            Exchange::new(move |r: &CsvRow| owner(bytes_hash(r.source.as_bytes()), peers) as u64),
        );
        let (commit_out, commits) = builder.new_output();
        let (snap_out, snapshots) = builder.new_output();
        let mut commit_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Commit>>>::from(commit_out);
        let mut snap_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Snapshot>>>::from(snap_out);
        let step = step_id.to_string();
        let mut files = CsvFiles {
            dir,
            header,
            lengths,
        };
        builder.build(move |_caps| {
            let mut stash = EpochStash::new(2);
            move |frontiers| {
                stash.ingest(&mut input);
                let mut commit_handle = commit_out.activate();
                let mut snap_handle = snap_out.activate();
                while let Some((epoch, caps, rows)) = stash.next_ready(&frontiers[0]) {
                    if fault.is_raised() {
                        continue;
                    }
                    let commit = match files.append(epoch, worker, rows) {
                        Ok(commit) => commit,
                        Err(e) => {
                            fault.raise(format!(
                                "{step}: cannot append epoch {epoch} under {}: {e}",
                                files.dir.display()
                            ));
                            continue;
                        }
                    };
                    commit_handle.session(&caps[0]).give(commit);
                    if state.snapshot {
                        snap_handle.session(&caps[1]).give(Snapshot {
                            step_id: step.clone(),
                            worker,
                            epoch,
                            bytes: encode(&files.lengths),
                        });
                    }
                }
            }
        });
        Ok((commits, snapshots))
    }
}

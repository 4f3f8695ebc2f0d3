//! `lake`: the Parquet data-lake sink.
//!
//! **In:** rows of one table ([`LakeRow`]: clean records, scored rows,
//! rejects, metrics), through a pipeline pact — every worker writes its own
//! rows, and files are named after the epoch and the worker.
//! **Out:** one [`Commit`] per epoch that had rows, at that epoch, once its
//! files are durable.
//! **Commit protocol:** rows are buffered per epoch; when the input frontier
//! has passed an epoch, its rows are split by event hour into Hive partitions
//! `<lake>/<table>/date=YYYY-MM-DD/hour=HH/`, each part is written to a hidden
//! temporary name (`.part-<epoch>-<worker>.parquet.tmp`, which Parquet readers
//! skip) and fsynced. With checkpoints (the default) it is then renamed to its
//! hidden pending name and listed in the [`Commit`]: the coordinator renames it
//! to `part-<epoch>-<worker>.parquet` only after the epoch's checkpoint is
//! durable (see `runtime::checkpoint`), so a reader never sees an epoch that a
//! crash could still roll back. Without checkpoints it is renamed to its
//! visible name at once. On an object-store lake (`core::storage`) a part is
//! one put straight to its pending (or visible) name — a put is atomic — and
//! publication is a copy and a delete. Either way a reader sees whole files or none, and
//! part names are a function of (epoch, worker), so a replayed epoch rewrites
//! the same files instead of adding new ones.
//! **Faults:** a write error is raised on the run's [`Fault`] and the sink stops
//! committing (it keeps its capability, so nothing downstream — the manifest,
//! the source's flow control — advances past the failed epoch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int32Builder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_operators::parse::civil_from_days;
use millrace_operators::record::{Reject, Scored};
use millrace_operators::schema::{LabelKind, Schema};
use millrace_operators::Epoch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

pub use crate::core::commit::{Commit, SinkId, Table};
use crate::core::fault::Fault;
use crate::core::storage;
use crate::core::write_behind::WriteBehind;

/// `[lake]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeSpec {
    /// The lake's root folder.
    pub path: PathBuf,
    /// The tables to write.
    #[serde(default = "all_tables")]
    pub tables: Vec<Table>,
    /// Parquet compression.
    #[serde(default)]
    pub compression: Compression,
    /// How event time splits a table into Hive partitions.
    #[serde(default)]
    pub partition: Partitioning,
    /// `[lake.compaction]`: compact small parts in the background of a run.
    #[serde(default)]
    pub compaction: Option<super::compaction::CompactionSpec>,
}

/// How a lake table is split into Hive partitions by event time (UTC).
///
/// Finer partitions let a reader skip more, but every partition an epoch
/// touches is a file of its own: a stream whose epochs span days or months
/// of event time (a backfill, hourly or daily series) writes far fewer,
/// larger files with `day` or `month`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partitioning {
    /// `date=YYYY-MM-DD/hour=HH/`.
    #[default]
    Hour,
    /// `date=YYYY-MM-DD/`.
    Day,
    /// `month=YYYY-MM/`.
    Month,
    /// No partition folders: the table's parts sit in its folder.
    None,
}

fn all_tables() -> Vec<Table> {
    vec![Table::Clean, Table::Scored, Table::Rejected, Table::Metrics]
}

/// Parquet compression codecs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Snappy: fast, read by every Parquet reader.
    #[default]
    Snappy,
    /// None.
    None,
}

/// Where and how tables are written.
#[derive(Clone, Debug)]
pub struct Lake {
    /// The lake's root folder.
    pub root: PathBuf,
    /// Parquet compression.
    pub compression: Compression,
    /// The stream's schema (the `clean` table has its columns).
    pub schema: Arc<Schema>,
    /// Two-phase commit: write parts under pending names for the checkpoint to publish.
    pub pending: bool,
    /// How event time splits the tables into partitions.
    pub partitioning: Partitioning,
}

/// How rows of type `R` become one lake table. A sink can write several
/// tables from one stream (the `clean` and `scored` tables both come from
/// scored records), so the rows are not copied per table.
pub struct TableFormat<R> {
    /// The table.
    pub table: Table,
    /// The table's Arrow schema.
    pub arrow_schema: fn(&Schema) -> SchemaRef,
    /// Event time (ms) that places a row in a partition.
    pub partition_time: fn(&R) -> i64,
    /// Builds a record batch of rows written at an epoch.
    pub batch: fn(&Schema, SchemaRef, &[&R], Epoch) -> RecordBatch,
}

impl<R> Clone for TableFormat<R> {
    fn clone(&self) -> Self {
        TableFormat {
            table: self.table,
            arrow_schema: self.arrow_schema,
            partition_time: self.partition_time,
            batch: self.batch,
        }
    }
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    )
}

fn ts_builder(n: usize) -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC")
}

fn label_type(schema: &Schema) -> DataType {
    match schema.label.as_ref().map(|l| l.kind) {
        Some(LabelKind::Regression) => DataType::Float64,
        _ => DataType::Int32,
    }
}

/// Appends a label in the table's label type.
enum LabelCol {
    Binary(Int32Builder),
    Real(Float64Builder),
}

impl LabelCol {
    fn new(schema: &Schema, n: usize) -> Self {
        match label_type(schema) {
            DataType::Float64 => LabelCol::Real(Float64Builder::with_capacity(n)),
            _ => LabelCol::Binary(Int32Builder::with_capacity(n)),
        }
    }
    fn append(&mut self, v: Option<f64>) {
        match self {
            LabelCol::Binary(b) => b.append_option(v.map(|x| x as i32)),
            LabelCol::Real(b) => b.append_option(v),
        }
    }
    fn finish(self) -> ArrayRef {
        match self {
            LabelCol::Binary(mut b) => Arc::new(b.finish()),
            LabelCol::Real(mut b) => Arc::new(b.finish()),
        }
    }
}

fn lineage_fields() -> [Field; 4] {
    [
        Field::new("source", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, false),
        ts("arrived_at", false),
        Field::new("epoch", DataType::UInt64, false),
    ]
}

fn lineage_columns<'a>(
    rows: impl Iterator<Item = (&'a str, u64, i64)>,
    n: usize,
    epoch: Epoch,
) -> [ArrayRef; 4] {
    let (mut source, mut line, mut arrived) = (
        StringBuilder::new(),
        UInt64Builder::with_capacity(n),
        ts_builder(n),
    );
    for (s, l, a) in rows {
        source.append_value(s);
        line.append_value(l);
        arrived.append_value(a);
    }
    let mut ep = UInt64Builder::with_capacity(n);
    ep.append_value_n(epoch, n);
    [
        Arc::new(source.finish()),
        Arc::new(line.finish()),
        Arc::new(arrived.finish()),
        Arc::new(ep.finish()),
    ]
}

/// The `clean` table: every clean, imputed record with all its fields and the names of the imputed ones.
pub fn clean_table() -> TableFormat<Scored> {
    TableFormat {
        table: Table::Clean,
        arrow_schema: clean_schema,
        partition_time: |s| s.record.event_time,
        batch: clean_batch,
    }
}

fn clean_schema(schema: &Schema) -> SchemaRef {
    let mut fields = vec![
        ts(&schema.event_time.field, false),
        Field::new(schema.key_column(), DataType::Utf8, false),
    ];
    if !schema.id.is_empty() {
        fields.push(Field::new(&schema.id, DataType::Utf8, true));
    }
    fields.extend(
        schema
            .numeric
            .iter()
            .map(|f| Field::new(&f.name, DataType::Float64, false)),
    );
    fields.extend(
        schema
            .categorical
            .iter()
            .map(|f| Field::new(&f.name, DataType::Utf8, true)),
    );
    if let Some(l) = &schema.label {
        fields.push(Field::new(&l.field, label_type(schema), true));
    }
    fields.push(Field::new(
        "imputed",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        false,
    ));
    fields.extend(lineage_fields());
    Arc::new(ArrowSchema::new(fields))
}

fn clean_batch(schema: &Schema, arrow: SchemaRef, rows: &[&Scored], epoch: Epoch) -> RecordBatch {
    let n = rows.len();
    let mut time = ts_builder(n);
    let mut key = StringBuilder::new();
    let mut id = StringBuilder::new();
    let mut nums: Vec<Float64Builder> = schema
        .numeric
        .iter()
        .map(|_| Float64Builder::with_capacity(n))
        .collect();
    let mut cats: Vec<StringBuilder> = schema
        .categorical
        .iter()
        .map(|_| StringBuilder::new())
        .collect();
    let mut label = LabelCol::new(schema, n);
    let mut imputed = ListBuilder::new(StringBuilder::new());
    for r in rows.iter().map(|s| &s.record) {
        time.append_value(r.event_time);
        key.append_value(&r.key);
        id.append_option(r.id.as_deref());
        for (i, b) in nums.iter_mut().enumerate() {
            b.append_value(r.nums[i]);
        }
        for (i, b) in cats.iter_mut().enumerate() {
            let v = &r.cats[i];
            b.append_option((!v.is_empty()).then_some(v.as_str()));
        }
        label.append(r.label);
        for (i, f) in schema.numeric.iter().enumerate() {
            if r.missing & (1 << i) != 0 {
                imputed.values().append_value(&f.name);
            }
        }
        imputed.append(true);
    }
    let mut cols: Vec<ArrayRef> = vec![Arc::new(time.finish()), Arc::new(key.finish())];
    if !schema.id.is_empty() {
        cols.push(Arc::new(id.finish()));
    }
    cols.extend(
        nums.into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef),
    );
    cols.extend(
        cats.into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef),
    );
    if schema.label.is_some() {
        cols.push(label.finish());
    }
    cols.push(Arc::new(imputed.finish()));
    cols.extend(lineage_columns(
        rows.iter()
            .map(|s| (&*s.record.source, s.record.pos.line, s.record.arrived_ms)),
        n,
        epoch,
    ));
    RecordBatch::try_new(arrow, cols).expect("columns match the table schema")
}

/// The `scored` table: key, event time, score, label and model version of every clean record.
pub fn scored_table() -> TableFormat<Scored> {
    TableFormat {
        table: Table::Scored,
        arrow_schema: scored_schema,
        partition_time: |s| s.record.event_time,
        batch: scored_batch,
    }
}

fn scored_schema(schema: &Schema) -> SchemaRef {
    let mut fields = vec![
        Field::new("key", DataType::Utf8, false),
        ts("event_time", false),
        Field::new("score", DataType::Float64, false),
        Field::new("label", label_type(schema), true),
        Field::new("model_version", DataType::UInt64, false),
    ];
    if !schema.id.is_empty() {
        fields.push(Field::new("id", DataType::Utf8, true));
    }
    fields.extend(lineage_fields());
    Arc::new(ArrowSchema::new(fields))
}

fn scored_batch(schema: &Schema, arrow: SchemaRef, rows: &[&Scored], epoch: Epoch) -> RecordBatch {
    let n = rows.len();
    let mut key = StringBuilder::new();
    let mut time = ts_builder(n);
    let mut score = Float64Builder::with_capacity(n);
    let mut label = LabelCol::new(schema, n);
    let mut version = UInt64Builder::with_capacity(n);
    let mut id = StringBuilder::new();
    for s in rows {
        key.append_value(&s.record.key);
        id.append_option(s.record.id.as_deref());
        time.append_value(s.record.event_time);
        score.append_value(s.score);
        label.append(s.record.label);
        version.append_value(s.model_version);
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(key.finish()),
        Arc::new(time.finish()),
        Arc::new(score.finish()),
        label.finish(),
        Arc::new(version.finish()),
    ];
    if !schema.id.is_empty() {
        cols.push(Arc::new(id.finish()));
    }
    cols.extend(lineage_columns(
        rows.iter()
            .map(|s| (&*s.record.source, s.record.pos.line, s.record.arrived_ms)),
        n,
        epoch,
    ));
    RecordBatch::try_new(arrow, cols).expect("columns match the table schema")
}

/// The `rejected` table: reason, class (malformed or invalid), detail, raw
/// text, the exact bytes of a record that is not UTF-8 (`raw_bytes`, binary,
/// null otherwise: `raw` holds it lossily decoded) and lineage.
pub fn rejected_table() -> TableFormat<Reject> {
    TableFormat {
        table: Table::Rejected,
        arrow_schema: rejected_schema,
        partition_time: Reject::partition_time,
        batch: rejected_batch,
    }
}

fn rejected_schema(_schema: &Schema) -> SchemaRef {
    let mut fields = vec![
        Field::new("reason", DataType::Utf8, false),
        Field::new("class", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        ts("event_time", true),
        Field::new("raw_bytes", DataType::Binary, true),
    ];
    fields.extend(lineage_fields());
    Arc::new(ArrowSchema::new(fields))
}

fn rejected_batch(
    _schema: &Schema,
    arrow: SchemaRef,
    rows: &[&Reject],
    epoch: Epoch,
) -> RecordBatch {
    let n = rows.len();
    let (mut reason, mut class, mut detail, mut raw) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut time = ts_builder(n);
    let mut bytes = arrow::array::BinaryBuilder::new();
    for r in rows {
        bytes.append_option(r.raw_bytes.as_deref());
        reason.append_value(r.reason.code());
        class.append_value(if r.reason.is_malformed() {
            "malformed"
        } else {
            "invalid"
        });
        detail.append_value(&r.detail);
        raw.append_value(&r.raw);
        time.append_option(r.event_time);
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(reason.finish()),
        Arc::new(class.finish()),
        Arc::new(detail.finish()),
        Arc::new(raw.finish()),
        Arc::new(time.finish()),
        Arc::new(bytes.finish()),
    ];
    cols.extend(lineage_columns(
        rows.iter().map(|r| (&*r.source, r.pos.line, r.arrived_ms)),
        n,
        epoch,
    ));
    RecordBatch::try_new(arrow, cols).expect("columns match the table schema")
}

/// `date=YYYY-MM-DD/hour=HH` of a time in ms.
pub fn partition_of(ms: i64) -> String {
    partition_path(Partitioning::Hour, ms)
}

/// The partition folder (relative to the table's) of a time in ms; empty for [`Partitioning::None`].
pub fn partition_path(p: Partitioning, ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let hour = ms.rem_euclid(86_400_000) / 3_600_000;
    let (y, m, d) = civil_from_days(days);
    match p {
        Partitioning::Hour => format!("date={y:04}-{m:02}-{d:02}/hour={hour:02}"),
        Partitioning::Day => format!("date={y:04}-{m:02}-{d:02}"),
        Partitioning::Month => format!("month={y:04}-{m:02}"),
        Partitioning::None => String::new(),
    }
}

/// A key that is equal for two times exactly when they share a partition.
fn partition_key(p: Partitioning, ms: i64) -> i64 {
    match p {
        Partitioning::Hour => ms.div_euclid(3_600_000),
        Partitioning::Day => ms.div_euclid(86_400_000),
        Partitioning::Month => {
            let (y, m, _) = civil_from_days(ms.div_euclid(86_400_000));
            y * 12 + m as i64
        }
        Partitioning::None => 0,
    }
}

/// The committed file name of `epoch` written by `worker`.
pub fn part_name(epoch: Epoch, worker: usize) -> String {
    format!("part-{epoch:010}-{worker:04}.parquet")
}

/// The hidden name a part has until its epoch's checkpoint publishes it.
pub fn pending_name(name: &str) -> String {
    format!(".{name}.pending")
}

/// Writes one Parquet file atomically and durably ([`storage::write_atomic_with`]).
/// Returns the bytes written.
pub fn write_part(
    dir: &Path,
    name: &str,
    batch: &RecordBatch,
    compression: Compression,
) -> std::io::Result<u64> {
    write_batches(dir, name, std::slice::from_ref(batch), compression)
}

/// [`write_part`] of several batches of one schema (the first decides which
/// columns are dictionary-encoded); there must be at least one.
pub fn write_batches(
    dir: &Path,
    name: &str,
    batches: &[RecordBatch],
    compression: Compression,
) -> std::io::Result<u64> {
    let batch = &batches[0];
    let codec = match compression {
        Compression::Snappy => parquet::basic::Compression::SNAPPY,
        Compression::None => parquet::basic::Compression::UNCOMPRESSED,
    };
    // Dictionary-encode only text columns that repeat: numbers and times are
    // mostly distinct, and so are keys and ids, and interning distinct values
    // costs more than it saves (it was a sixth of the writer thread's time).
    let mut props = WriterProperties::builder()
        .set_compression(codec)
        .set_dictionary_enabled(false);
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let repeats = match field.data_type() {
            DataType::Utf8 => mostly_repeated(column.as_string::<i32>()),
            DataType::List(_) => true,
            _ => false,
        };
        if repeats {
            let column = match field.data_type() {
                DataType::List(item) => parquet::schema::types::ColumnPath::new(vec![
                    field.name().clone(),
                    "list".into(),
                    item.name().clone(),
                ]),
                _ => parquet::schema::types::ColumnPath::new(vec![field.name().clone()]),
            };
            props = props.set_column_dictionary_enabled(column, true);
        }
    }
    let props = props.build();
    let ((), bytes) = storage::write_atomic_with(
        &dir.join(name),
        || {},
        |file| {
            let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))
                .map_err(std::io::Error::other)?;
            for batch in batches {
                writer.write(batch).map_err(std::io::Error::other)?;
            }
            writer.close().map(|_| ()).map_err(std::io::Error::other)
        },
    )?;
    Ok(bytes)
}

/// Whether a text column's values repeat enough for a dictionary to pay: at
/// most half of an evenly spaced sample of up to 256 values are distinct.
fn mostly_repeated(values: &arrow::array::StringArray) -> bool {
    let n = values.len();
    if n == 0 {
        return true;
    }
    let step = n.div_ceil(256);
    let mut seen = std::collections::HashSet::new();
    let mut sampled = 0;
    for i in (0..n).step_by(step) {
        sampled += 1;
        seen.insert(values.is_valid(i).then(|| values.value(i)));
    }
    seen.len() * 2 <= sampled
}

/// Writes the rows of one epoch of one table into their partitions; returns the commit record.
pub fn write_epoch<'r, R: 'r>(
    lake: &Lake,
    format: &TableFormat<R>,
    arrow: &SchemaRef,
    rows: impl IntoIterator<Item = &'r R>,
    epoch: Epoch,
    worker: usize,
) -> std::io::Result<Commit> {
    // Grouped by partition first: its name is formatted once per part, not per row.
    let mut groups: BTreeMap<i64, (i64, Vec<&R>)> = BTreeMap::new();
    for r in rows {
        let t = (format.partition_time)(r);
        groups
            .entry(partition_key(lake.partitioning, t))
            .or_insert_with(|| (t, Vec::new()))
            .1
            .push(r);
    }
    let parts = groups
        .into_values()
        .map(|(t, rows)| (partition_path(lake.partitioning, t), rows));
    let mut commit = Commit {
        sink: SinkId::Lake(format.table),
        epoch,
        worker,
        files: 0,
        rows: 0,
        bytes: 0,
        parts: Vec::new(),
    };
    let table = format.table.name();
    for (partition, rows) in parts {
        let batch = (format.batch)(&lake.schema, arrow.clone(), &rows, epoch);
        let name = part_name(epoch, worker);
        let folder = if partition.is_empty() {
            table.to_string()
        } else {
            format!("{table}/{partition}")
        };
        let dir = lake.root.join(&folder);
        if lake.pending {
            let pending = pending_name(&name);
            commit.bytes += write_part(&dir, &pending, &batch, lake.compression)?;
            commit
                .parts
                .push((format!("{folder}/{pending}"), format!("{folder}/{name}")));
        } else {
            commit.bytes += write_part(&dir, &name, &batch, lake.compression)?;
        }
        commit.files += 1;
        commit.rows += rows.len() as u64;
    }
    Ok(commit)
}

/// The lake tables of the scored records (`clean`, `scored`), one sink writing both.
pub struct LakeRecords {
    /// The tables to write (`clean`, `scored`, or both).
    pub tables: Vec<Table>,
    /// Parquet compression.
    pub compression: Compression,
    /// Partitions by event time.
    pub partitioning: Partitioning,
}

/// The `rejected` table.
pub struct LakeRejected {
    /// Parquet compression.
    pub compression: Compression,
    /// Partitions by event time.
    pub partitioning: Partitioning,
}

impl LakeSpec {
    /// The sinks `[lake]` declares: one for the scored records' tables, one for
    /// the rejected lines (the `metrics` and `alerts` tables are the coordinator's).
    pub fn sinks(&self) -> Vec<std::sync::Arc<dyn super::Sink + Send + Sync>> {
        let mut out: Vec<std::sync::Arc<dyn super::Sink + Send + Sync>> = Vec::new();
        let tables: Vec<Table> = [Table::Clean, Table::Scored]
            .into_iter()
            .filter(|t| self.tables.contains(t))
            .collect();
        if !tables.is_empty() {
            out.push(std::sync::Arc::new(LakeRecords {
                tables,
                compression: self.compression,
                partitioning: self.partition,
            }));
        }
        if self.tables.contains(&Table::Rejected) {
            out.push(std::sync::Arc::new(LakeRejected {
                compression: self.compression,
                partitioning: self.partition,
            }));
        }
        out
    }
}

fn lake(ctx: &super::SinkContext, compression: Compression, partitioning: Partitioning) -> Lake {
    Lake {
        root: ctx.lake.clone(),
        compression,
        schema: ctx.schema.clone(),
        pending: ctx.pending,
        partitioning,
    }
}

impl super::Sink for LakeRecords {
    fn step_id(&self) -> &str {
        "lake_records"
    }

    fn build<'scope>(
        &self,
        inputs: &super::SinkInputs<'scope>,
        ctx: &super::SinkContext,
        _state: millrace_operators::epochs::StateIo,
    ) -> Result<super::SinkStreams<'scope>, millrace_operators::epochs::StateError> {
        let formats = self
            .tables
            .iter()
            .map(|t| match t {
                Table::Clean => clean_table(),
                _ => scored_table(),
            })
            .collect();
        let lake = lake(ctx, self.compression, self.partitioning);
        let commits =
            inputs
                .scored
                .clone()
                .sink_lake(self.step_id(), lake, formats, ctx.fault.clone());
        Ok(super::SinkStreams {
            commits,
            snapshots: None,
        })
    }
}

impl super::Sink for LakeRejected {
    fn step_id(&self) -> &str {
        "lake_rejected"
    }

    fn build<'scope>(
        &self,
        inputs: &super::SinkInputs<'scope>,
        ctx: &super::SinkContext,
        _state: millrace_operators::epochs::StateIo,
    ) -> Result<super::SinkStreams<'scope>, millrace_operators::epochs::StateError> {
        let lake = lake(ctx, self.compression, self.partitioning);
        let commits = inputs.rejected.clone().sink_lake(
            self.step_id(),
            lake,
            vec![rejected_table()],
            ctx.fault.clone(),
        );
        Ok(super::SinkStreams {
            commits,
            snapshots: None,
        })
    }
}

/// What a lake sink's stream carries: single rows (rejected lines) or the
/// shared batches of the scored records.
pub trait Rows<R>: Clone + Send + 'static {
    /// The rows.
    fn rows(&self) -> &[R];
}

impl Rows<Reject> for Reject {
    fn rows(&self) -> &[Reject] {
        std::slice::from_ref(self)
    }
}

impl<R: Send + Sync + 'static> Rows<R> for Arc<Vec<R>> {
    fn rows(&self) -> &[R] {
        self
    }
}

/// The lake sink operator. See the module docs.
pub trait LakeSink<'scope, R> {
    /// Writes this stream's rows to the lake tables in `formats`; returns the commits (one per table and epoch).
    fn sink_lake(
        self,
        step_id: &str,
        lake: Lake,
        formats: Vec<TableFormat<R>>,
        fault: Fault,
    ) -> Stream<'scope, Epoch, Vec<Commit>>;
}

impl<'scope, R: 'static, I: Rows<R>> LakeSink<'scope, R> for Stream<'scope, Epoch, Vec<I>> {
    fn sink_lake(
        self,
        step_id: &str,
        lake: Lake,
        formats: Vec<TableFormat<R>>,
        fault: Fault,
    ) -> Stream<'scope, Epoch, Vec<Commit>> {
        let worker = self.scope().index();
        let arrows: Vec<SchemaRef> = formats
            .iter()
            .map(|f| (f.arrow_schema)(&lake.schema))
            .collect();
        self.write_behind(step_id, fault, move |epoch, data: Vec<I>| {
            crate::crash_point!("lake_write");
            let mut commits = Vec::with_capacity(formats.len());
            for (format, arrow) in formats.iter().zip(&arrows) {
                let rows = data.iter().flat_map(Rows::rows);
                let commit =
                    write_epoch(&lake, format, arrow, rows, epoch, worker).map_err(|error| {
                        WriteError {
                            epoch,
                            table: format.table.name(),
                            root: lake.root.clone(),
                            error,
                        }
                    })?;
                commits.push(commit);
            }
            crate::crash_point!("lake_after_write");
            Ok::<_, WriteError>(commits)
        })
    }
}

/// An epoch's part of a table could not be written (the run stops before
/// the epoch is checkpointed).
#[derive(Debug, thiserror::Error)]
#[error("cannot write epoch {epoch} of table `{table}` under {}: {error}", root.display())]
pub struct WriteError {
    /// The epoch.
    pub epoch: Epoch,
    /// The table.
    pub table: &'static str,
    /// The lake.
    pub root: PathBuf,
    /// The storage error.
    pub error: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_by_utc_hour() {
        assert_eq!(partition_of(1_767_225_600_000), "date=2026-01-01/hour=00");
        assert_eq!(
            partition_of(1_767_225_600_000 + 3_600_000 * 13 + 59_999),
            "date=2026-01-01/hour=13"
        );
        assert_eq!(partition_of(-1), "date=1969-12-31/hour=23");
        assert_eq!(part_name(42, 3), "part-0000000042-0003.parquet");
    }

    #[test]
    fn coarser_partitions_by_day_month_or_none() {
        let t = 1_767_225_600_000 + 3_600_000 * 13; // 2026-01-01 13:00
        assert_eq!(partition_path(Partitioning::Day, t), "date=2026-01-01");
        assert_eq!(partition_path(Partitioning::Month, t), "month=2026-01");
        assert_eq!(partition_path(Partitioning::Month, -1), "month=1969-12");
        assert_eq!(partition_path(Partitioning::None, t), "");
        // The grouping key agrees with the folder at month and year ends.
        let dec31 = 1_767_225_600_000 - 1;
        for p in [
            Partitioning::Hour,
            Partitioning::Day,
            Partitioning::Month,
            Partitioning::None,
        ] {
            let same = partition_key(p, dec31) == partition_key(p, t);
            assert_eq!(
                same,
                partition_path(p, dec31) == partition_path(p, t),
                "{p:?}"
            );
            assert_eq!(
                partition_key(p, t) == partition_key(p, t + 1),
                partition_path(p, t) == partition_path(p, t + 1)
            );
        }
    }
}

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
//! skip), fsynced, renamed to `part-<epoch>-<worker>.parquet`, and the folder is
//! fsynced. A reader therefore sees whole files or none.
//! **Faults:** a write error is raised on the run's [`Fault`] and the sink stops
//! committing (it keeps its capability, so nothing downstream — the manifest,
//! the source's flow control — advances past the failed epoch).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, ListBuilder, StringBuilder, TimestampMillisecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_operators::parse::civil_from_days;
use millrace_operators::record::{Record, Reject, Scored};
use millrace_operators::schema::{LabelKind, Schema};
use millrace_operators::Epoch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::runtime::Fault;
use crate::topology::{Compression, Table};

/// A committed part of an epoch of one table on one worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The table.
    pub table: Table,
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
}

/// A row type with a lake table.
pub trait LakeRow: Clone + 'static {
    /// The table it goes to.
    const TABLE: Table;
    /// The table's Arrow schema.
    fn arrow_schema(schema: &Schema) -> SchemaRef;
    /// Event time (ms) that places the row in a partition.
    fn partition_time(&self) -> i64;
    /// Builds a record batch of `rows` written at `epoch`.
    fn batch(schema: &Schema, arrow: SchemaRef, rows: &[&Self], epoch: Epoch) -> RecordBatch;
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), nullable)
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

fn lineage_columns<'a>(rows: impl Iterator<Item = (&'a str, u64, i64)>, n: usize, epoch: Epoch) -> [ArrayRef; 4] {
    let (mut source, mut line, mut arrived) = (StringBuilder::new(), UInt64Builder::with_capacity(n), ts_builder(n));
    for (s, l, a) in rows {
        source.append_value(s);
        line.append_value(l);
        arrived.append_value(a);
    }
    let mut ep = UInt64Builder::with_capacity(n);
    ep.append_value_n(epoch, n);
    [Arc::new(source.finish()), Arc::new(line.finish()), Arc::new(arrived.finish()), Arc::new(ep.finish())]
}

impl LakeRow for Record {
    const TABLE: Table = Table::Clean;

    fn arrow_schema(schema: &Schema) -> SchemaRef {
        let mut fields = vec![ts(&schema.event_time.field, false), Field::new(&schema.key, DataType::Utf8, false)];
        fields.extend(schema.numeric.iter().map(|f| Field::new(&f.name, DataType::Float64, false)));
        fields.extend(schema.categorical.iter().map(|f| Field::new(&f.name, DataType::Utf8, true)));
        if let Some(l) = &schema.label {
            fields.push(Field::new(&l.field, label_type(schema), true));
        }
        fields.push(Field::new("imputed", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false));
        fields.extend(lineage_fields());
        Arc::new(ArrowSchema::new(fields))
    }

    fn partition_time(&self) -> i64 {
        self.event_time
    }

    fn batch(schema: &Schema, arrow: SchemaRef, rows: &[&Self], epoch: Epoch) -> RecordBatch {
        let n = rows.len();
        let mut time = ts_builder(n);
        let mut key = StringBuilder::new();
        let mut nums: Vec<Float64Builder> = schema.numeric.iter().map(|_| Float64Builder::with_capacity(n)).collect();
        let mut cats: Vec<StringBuilder> = schema.categorical.iter().map(|_| StringBuilder::new()).collect();
        let mut label = LabelCol::new(schema, n);
        let mut imputed = ListBuilder::new(StringBuilder::new());
        for r in rows {
            time.append_value(r.event_time);
            key.append_value(&r.key);
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
        cols.extend(nums.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef));
        cols.extend(cats.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef));
        if schema.label.is_some() {
            cols.push(label.finish());
        }
        cols.push(Arc::new(imputed.finish()));
        cols.extend(lineage_columns(rows.iter().map(|r| (&*r.source, r.pos.line, r.arrived_ms)), n, epoch));
        RecordBatch::try_new(arrow, cols).expect("columns match the table schema")
    }
}

impl LakeRow for Scored {
    const TABLE: Table = Table::Scored;

    fn arrow_schema(schema: &Schema) -> SchemaRef {
        let mut fields = vec![
            Field::new("key", DataType::Utf8, false),
            ts("event_time", false),
            Field::new("score", DataType::Float64, false),
            Field::new("label", label_type(schema), true),
            Field::new("model_version", DataType::UInt64, false),
        ];
        fields.extend(lineage_fields());
        Arc::new(ArrowSchema::new(fields))
    }

    fn partition_time(&self) -> i64 {
        self.event_time
    }

    fn batch(schema: &Schema, arrow: SchemaRef, rows: &[&Self], epoch: Epoch) -> RecordBatch {
        let n = rows.len();
        let mut key = StringBuilder::new();
        let mut time = ts_builder(n);
        let mut score = Float64Builder::with_capacity(n);
        let mut label = LabelCol::new(schema, n);
        let mut version = UInt64Builder::with_capacity(n);
        for r in rows {
            key.append_value(&r.key);
            time.append_value(r.event_time);
            score.append_value(r.score);
            label.append(r.label);
            version.append_value(r.model_version);
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(key.finish()),
            Arc::new(time.finish()),
            Arc::new(score.finish()),
            label.finish(),
            Arc::new(version.finish()),
        ];
        cols.extend(lineage_columns(rows.iter().map(|r| (&*r.source, r.pos.line, r.arrived_ms)), n, epoch));
        RecordBatch::try_new(arrow, cols).expect("columns match the table schema")
    }
}

impl LakeRow for Reject {
    const TABLE: Table = Table::Rejected;

    fn arrow_schema(_schema: &Schema) -> SchemaRef {
        let mut fields = vec![
            Field::new("reason", DataType::Utf8, false),
            Field::new("class", DataType::Utf8, false),
            Field::new("detail", DataType::Utf8, false),
            Field::new("raw", DataType::Utf8, false),
            ts("event_time", true),
        ];
        fields.extend(lineage_fields());
        Arc::new(ArrowSchema::new(fields))
    }

    fn partition_time(&self) -> i64 {
        self.partition_time()
    }

    fn batch(_schema: &Schema, arrow: SchemaRef, rows: &[&Self], epoch: Epoch) -> RecordBatch {
        let n = rows.len();
        let (mut reason, mut class, mut detail, mut raw) =
            (StringBuilder::new(), StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
        let mut time = ts_builder(n);
        for r in rows {
            reason.append_value(r.reason.code());
            class.append_value(if r.reason.is_malformed() { "malformed" } else { "invalid" });
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
        ];
        cols.extend(lineage_columns(rows.iter().map(|r| (&*r.source, r.pos.line, r.arrived_ms)), n, epoch));
        RecordBatch::try_new(arrow, cols).expect("columns match the table schema")
    }
}

/// `date=YYYY-MM-DD/hour=HH` of a time in ms.
pub fn partition_of(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let hour = ms.rem_euclid(86_400_000) / 3_600_000;
    let (y, m, d) = civil_from_days(days);
    format!("date={y:04}-{m:02}-{d:02}/hour={hour:02}")
}

/// The committed file name of `epoch` written by `worker`.
pub fn part_name(epoch: Epoch, worker: usize) -> String {
    format!("part-{epoch:010}-{worker:04}.parquet")
}

/// Writes one Parquet file atomically: temporary name, fsync, rename, fsync of the folder.
/// Returns the bytes written.
pub fn write_atomic(dir: &Path, name: &str, batch: &RecordBatch, compression: Compression) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let codec = match compression {
        Compression::Snappy => parquet::basic::Compression::SNAPPY,
        Compression::None => parquet::basic::Compression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder().set_compression(codec).build();
    let file = File::create(&tmp)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(std::io::Error::other)?;
    writer.write(batch).map_err(std::io::Error::other)?;
    let file = writer.into_inner().map_err(std::io::Error::other)?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(bytes)
}

/// Writes the rows of one epoch into their partitions; returns the commit record.
pub fn write_epoch<R: LakeRow>(lake: &Lake, arrow: &SchemaRef, rows: &[R], epoch: Epoch, worker: usize) -> std::io::Result<Commit> {
    let mut parts: BTreeMap<String, Vec<&R>> = BTreeMap::new();
    for r in rows {
        parts.entry(partition_of(r.partition_time())).or_default().push(r);
    }
    let mut commit = Commit { table: R::TABLE, epoch, worker, files: 0, rows: 0, bytes: 0 };
    let table_dir = lake.root.join(R::TABLE.name());
    for (partition, rows) in parts {
        let batch = R::batch(&lake.schema, arrow.clone(), &rows, epoch);
        commit.bytes += write_atomic(&table_dir.join(partition), &part_name(epoch, worker), &batch, lake.compression)?;
        commit.files += 1;
        commit.rows += rows.len() as u64;
    }
    Ok(commit)
}

/// The lake sink operator. See the module docs.
pub trait LakeSink<'scope> {
    /// Writes this stream's rows to their lake table; returns the commits.
    fn sink_lake(self, step_id: &str, lake: Lake, fault: Fault) -> Stream<'scope, Epoch, Vec<Commit>>;
}

impl<'scope, R: LakeRow> LakeSink<'scope> for Stream<'scope, Epoch, Vec<R>> {
    fn sink_lake(self, step_id: &str, lake: Lake, fault: Fault) -> Stream<'scope, Epoch, Vec<Commit>> {
        let worker = self.scope().index();
        let arrow = R::arrow_schema(&lake.schema);
        let step = step_id.to_string();
        self.unary_frontier::<CapacityContainerBuilder<Vec<Commit>>, _, _, _>(Pipeline, step_id, move |_, _| {
            let mut stash: BTreeMap<Epoch, (Capability<Epoch>, Vec<R>)> = BTreeMap::new();
            let mut failed = false;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = stash.entry(epoch).or_insert_with(|| (cap.delayed(&epoch, 0), Vec::new()));
                    for batch in data {
                        entry.1.append(batch);
                    }
                });
                while !failed {
                    let Some(entry) = stash.first_entry() else { break };
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let epoch = *entry.key();
                    match write_epoch(&lake, &arrow, &entry.get().1, epoch, worker) {
                        Ok(commit) => {
                            let (cap, _) = entry.remove();
                            output.session(&cap).give(commit);
                        }
                        Err(e) => {
                            failed = true;
                            fault.raise(format!(
                                "{step}: cannot write epoch {epoch} of table `{}` under {}: {e}",
                                R::TABLE.name(),
                                lake.root.display()
                            ));
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_by_utc_hour() {
        assert_eq!(partition_of(1_767_225_600_000), "date=2026-01-01/hour=00");
        assert_eq!(partition_of(1_767_225_600_000 + 3_600_000 * 13 + 59_999), "date=2026-01-01/hour=13");
        assert_eq!(partition_of(-1), "date=1969-12-31/hour=23");
        assert_eq!(part_name(42, 3), "part-0000000042-0003.parquet");
    }
}

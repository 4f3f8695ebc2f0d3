//! The record model that flows between millrace's operators.
//!
//! A source cuts its input into [`Chunk`]s of whole lines; `parse` turns each
//! line into a [`Parsed`] value (a [`Record`] or a [`Reject`]); `clean` emits
//! clean records; `featurize` wraps them into [`Example`]s; `score` emits
//! [`Scored`] rows. Every value knows where it came from ([`Pos`] and the
//! source name), so any output row can be traced back to its input line.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where in the input a line came from: the input's id and the line number in it.
///
/// `input` is the stable hash of the input's name (file name, or topic and
/// partition), so positions order deterministically across workers and runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pos {
    /// Stable id of the input (hash of its name).
    pub input: u64,
    /// 1-based line number in the input (the CSV header is line 1).
    pub line: u64,
}

/// The encoding of a chunk's lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values, one record per line, mapped through a header.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// A run of complete lines from one input, as a source emits it.
///
/// Chunks stay on the worker that read them (they go to `parse` through a
/// pipeline pact); only parsed records cross workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chunk {
    /// The input's name (a file name relative to the landing folder).
    pub source: Arc<str>,
    /// Stable id of the input, see [`Pos::input`].
    pub input: u64,
    /// Line number of the first line in `text`.
    pub first_line: u64,
    /// How the lines are encoded.
    pub format: Format,
    /// For CSV, the column names from the input's header line.
    pub header: Option<Arc<[String]>>,
    /// Whole lines, each ending in `\n` (the last one may lack it).
    pub text: String,
    /// When the input arrived (processing time, ms since the Unix epoch).
    pub arrived_ms: i64,
    /// The position of each line when they are not consecutive from
    /// `first_line` (Kafka offsets); `None` for files.
    pub positions: Option<Vec<u64>>,
    /// Records whose bytes are not valid UTF-8: the line (or Kafka offset)
    /// where each starts and its exact bytes, without the terminator. `text`
    /// holds their lossy decoding (same quotes and newlines), so records are
    /// split the same way; `parse` rejects them as `bad_encoding` and the
    /// `rejected` table keeps these bytes.
    #[serde(default)]
    pub undecodable: Vec<(u64, Vec<u8>)>,
}

/// One parsed record. Numeric and categorical values are in schema order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Where the record came from.
    pub pos: Pos,
    /// The input's name.
    pub source: Arc<str>,
    /// Hash of the raw line, for exact-duplicate detection.
    pub line_hash: u64,
    /// The record key (e.g. the account).
    pub key: String,
    /// Stable hash of `key`; the record lives on the worker that owns it.
    pub key_hash: u64,
    /// The record's id (`[schema] id`), if the schema declares one.
    #[serde(default)]
    pub id: Option<String>,
    /// Event time, ms since the Unix epoch.
    pub event_time: i64,
    /// The label, if the record carries one.
    pub label: Option<f64>,
    /// Numeric fields in schema order; `NaN` where missing until `clean` imputes.
    pub nums: Vec<f64>,
    /// Bit `i` set: numeric field `i` was missing (and, after `clean`, imputed).
    pub missing: u64,
    /// Categorical fields in schema order (empty string where missing).
    pub cats: Vec<String>,
    /// When the record's input arrived (processing time, ms).
    pub arrived_ms: i64,
}

/// Why a line was rejected. The set is closed so metric labels stay bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The line has a different number of fields than the header.
    FieldCount,
    /// A JSON line is not a JSON object.
    BadJson,
    /// A numeric field does not parse as a finite number.
    BadNumber,
    /// The event time does not parse in the declared format.
    BadTime,
    /// The label does not parse.
    BadLabel,
    /// A required field (key, event time, or a declared column) is absent.
    MissingField,
    /// A numeric value is outside its declared range.
    OutOfRange,
    /// A categorical value is not in its declared vocabulary.
    UnknownCategory,
    /// A binary label other than 0 or 1.
    InvalidLabel,
    /// The event time is behind the watermark by more than the allowed lateness.
    Late,
    /// The CSV header lacks a declared column or names one twice: every
    /// record of the file is rejected with it.
    BadHeader,
    /// The record's bytes are not valid UTF-8 (the raw bytes are kept).
    BadEncoding,
}

impl Reason {
    /// All reasons, in a fixed order (used for ledgers and metric labels).
    pub const ALL: [Reason; 12] = [
        Reason::FieldCount,
        Reason::BadJson,
        Reason::BadNumber,
        Reason::BadTime,
        Reason::BadLabel,
        Reason::MissingField,
        Reason::OutOfRange,
        Reason::UnknownCategory,
        Reason::InvalidLabel,
        Reason::Late,
        Reason::BadHeader,
        Reason::BadEncoding,
    ];

    /// The reason code written to the `rejected` table and used as metric label.
    pub fn code(self) -> &'static str {
        match self {
            Reason::FieldCount => "field_count",
            Reason::BadJson => "bad_json",
            Reason::BadNumber => "bad_number",
            Reason::BadTime => "bad_time",
            Reason::BadLabel => "bad_label",
            Reason::MissingField => "missing_field",
            Reason::OutOfRange => "out_of_range",
            Reason::UnknownCategory => "unknown_category",
            Reason::InvalidLabel => "invalid_label",
            Reason::Late => "late",
            Reason::BadHeader => "bad_header",
            Reason::BadEncoding => "bad_encoding",
        }
    }

    /// Whether the line could not be read at all (`malformed`) rather than
    /// read and found to break a declared rule (`invalid`, `late`).
    pub fn is_malformed(self) -> bool {
        matches!(
            self,
            Reason::FieldCount
                | Reason::BadJson
                | Reason::BadNumber
                | Reason::BadTime
                | Reason::BadLabel
                | Reason::MissingField
                | Reason::BadHeader
                | Reason::BadEncoding
        )
    }

    /// Position of the reason in [`Reason::ALL`].
    pub fn index(self) -> usize {
        Reason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every reason")
    }
}

/// A line that did not become a clean record, with the reason and the raw text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// Where the line came from.
    pub pos: Pos,
    /// The input's name.
    pub source: Arc<str>,
    /// Hash of the raw line.
    pub line_hash: u64,
    /// The reason code.
    pub reason: Reason,
    /// A human-readable detail: which field, what value, what was expected.
    pub detail: String,
    /// The raw record, without its terminator (lossily decoded when it is not UTF-8).
    pub raw: String,
    /// The record's exact bytes when they are not valid UTF-8 (`bad_encoding`).
    #[serde(default)]
    pub raw_bytes: Option<Vec<u8>>,
    /// The event time, if it parsed (used to place the row in the lake).
    pub event_time: Option<i64>,
    /// When the line's input arrived (processing time, ms).
    pub arrived_ms: i64,
}

impl Reject {
    /// Event time if known, else the arrival time: where the row is partitioned.
    pub fn partition_time(&self) -> i64 {
        self.event_time.unwrap_or(self.arrived_ms)
    }
}

/// The output of `parse`: a record, or a line that could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Parsed {
    /// A syntactically valid record (not yet validated, deduplicated or imputed).
    Record(Record),
    /// A malformed line.
    Reject(Reject),
}

impl Parsed {
    /// The hash that routes this value: the key's for records, the line's otherwise.
    ///
    /// Exact duplicates have the same key, so they meet on the key's owner.
    pub fn route(&self) -> u64 {
        match self {
            Parsed::Record(r) => r.key_hash,
            Parsed::Reject(r) => r.line_hash,
        }
    }

    /// The position of the underlying line.
    pub fn pos(&self) -> Pos {
        match self {
            Parsed::Record(r) => r.pos,
            Parsed::Reject(r) => r.pos,
        }
    }
}

/// A clean record with its feature vector, ready for a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The clean record.
    pub record: Record,
    /// Dense features that the model standardises, in feature-spec order.
    pub dense: Vec<f64>,
    /// Indices of active one-hot / hashed features (value 1.0, not standardised).
    pub sparse: Vec<u32>,
}

/// A scored clean record: what the `clean` and `scored` tables and the scored stream are made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The clean record (with its key, event time, label and lineage).
    pub record: Record,
    /// The model's score (probability of the positive class).
    pub score: f64,
    /// The model version that produced the score.
    pub model_version: u64,
    /// The challenger's score of the same record, when one scores in shadow.
    #[serde(default)]
    pub shadow_score: Option<f64>,
}

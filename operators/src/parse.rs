//! `parse`: schema-driven parsing of CSV and JSON lines into records.
//!
//! **In:** a stream of [`Chunk`]s (whole records from one input), through a
//! pipeline pact: chunks are parsed on the worker whose source read them.
//! **Out:** one [`Parsed`] value per record — a [`Record`] or, for a record
//! that cannot be read (wrong field count, broken JSON, bytes that are not
//! UTF-8, a header that lacks a declared column, a number or time that does
//! not parse, a missing key) or that breaks a declared rule (a value outside
//! its range or vocabulary, a binary label not 0/1), a [`Reject`] with its
//! reason and raw text — and a side stream of [`Tally`]s counting the records
//! read per epoch (the `input` column of the ledger: records, not physical
//! lines). Rejects are not counted here: they travel on to `clean`, which
//! deduplicates them like any record.
//! **State:** none but a cache of column layouts per CSV header.
//! **Shape:** the work of a batch is [`ParseMachine::on_batch`], without
//! timely; the operator gives each batch's records to one port and its
//! tally to the other.
//!
//! CSV follows RFC 4180: fields may be quoted, with `""` for a quote inside,
//! and a quoted field may hold separators and newlines, so a record may span
//! physical lines ([`records`] splits a chunk quote-aware with the same
//! [`Quoting`] machine the landing source cuts chunks with). A quote opens a
//! quoted field only at the start of a field; elsewhere (`5" pipe`) it is an
//! ordinary character. A record's position is the line it starts on. A quote
//! left open at the end of the input makes the rest of it one record,
//! rejected as `field_count` (`unterminated quoted field`). Empty fields are
//! missing values. Kafka messages and JSON lines are one record per line.
//!
//! **Headers:** a CSV header that lacks a declared column (event time, key,
//! id, a numeric or categorical field not marked `optional = true`) or names
//! a declared column (the label too) more than once makes every record of the
//! input a `bad_header` reject whose detail names the columns, and is logged
//! once per input. The label column may be absent: its records are then
//! unlabelled (scored without learning, or labelled later by `[source.labels]`).
//!
//! **Times:** `rfc3339` and `datetime` are calendar-checked (month lengths,
//! leap years; offsets within ±23:59). `datetime` is exactly
//! `YYYY-MM-DD HH:MM:SS[.fff]` (a space, seconds, no zone); `rfc3339` needs
//! the seconds and a zone (`Z` or `±HH:MM`).

use std::collections::HashSet;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

use crate::hash::{key_hash, line_hash};
use crate::ledger::Tally;
use crate::record::{Chunk, Format, Parsed, Pos, Reason, Record, Reject};
use crate::schema::{Impute, LabelKind, Schema, TimeFormat};
use crate::Epoch;

/// Column positions of the schema's fields in one CSV header.
#[derive(Clone, Debug)]
struct Layout {
    width: usize,
    time: Option<usize>,
    key: Option<usize>,
    id: Option<usize>,
    label: Option<usize>,
    nums: Vec<Option<usize>>,
    cats: Vec<Option<usize>>,
    /// Why the header cannot be used (`bad_header`), if it cannot.
    problem: Option<String>,
}

/// Parses lines against a [`Schema`]. Holds small per-header caches, so keep one per operator.
pub struct Parser {
    schema: Arc<Schema>,
    layout: Option<(Arc<[String]>, Layout)>,
    ranges: Vec<(usize, usize)>,
    unquoted: Vec<String>,
    /// The JSON members a record is read from, in slot order: the event
    /// time, the key, the label, the id, the numbers, the categories (empty
    /// where the schema declares none, which no member matches).
    json_names: Vec<String>,
    /// The distinct names of `json_names` with the slots each fills (a
    /// member may fill more than one: the key may also be the id).
    wanted: Vec<(String, Vec<usize>)>,
    /// For the k-th member of the last object read, the index in `wanted`
    /// of its name (`NOT_WANTED` if none): lines of one producer keep their
    /// members in one order, so a key is compared with the name it had last
    /// time before the others are searched.
    order: Vec<u32>,
    /// Per-record buffers of the JSON reader (see `parse_json`).
    raw: Vec<Option<(usize, usize)>>,
    values: Vec<Slot>,
    unescaped: Vec<String>,
}

/// A field value on its way into a record.
enum Field<'a> {
    Text(&'a str),
    Missing,
}

impl Parser {
    /// A parser for `schema`.
    pub fn new(schema: Arc<Schema>) -> Self {
        let mut json_names = vec![
            schema.event_time.field.clone(),
            schema.key.clone(),
            schema
                .label
                .as_ref()
                .map_or(String::new(), |l| l.field.clone()),
            schema.id.clone(),
        ];
        json_names.extend(schema.numeric.iter().map(|f| f.name.clone()));
        json_names.extend(schema.categorical.iter().map(|f| f.name.clone()));
        let mut wanted: Vec<(String, Vec<usize>)> = Vec::new();
        for (slot, name) in json_names.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match wanted.iter_mut().find(|(n, _)| n == name) {
                Some((_, slots)) => slots.push(slot),
                None => wanted.push((name.clone(), vec![slot])),
            }
        }
        Parser {
            schema,
            layout: None,
            ranges: Vec::new(),
            unquoted: Vec::new(),
            json_names,
            wanted,
            order: Vec::new(),
            raw: Vec::new(),
            values: Vec::new(),
            unescaped: Vec::new(),
        }
    }

    fn layout_for(&mut self, header: &Arc<[String]>) -> &Layout {
        let fresh = match &self.layout {
            Some((h, _)) => !Arc::ptr_eq(h, header) && **h != **header,
            None => true,
        };
        if fresh {
            let find = |name: &str| header.iter().position(|h| h.trim() == name);
            let s = &self.schema;
            let layout = Layout {
                width: header.len(),
                time: find(&s.event_time.field),
                key: if s.key.is_empty() { None } else { find(&s.key) },
                id: if s.id.is_empty() { None } else { find(&s.id) },
                label: s.label.as_ref().and_then(|l| find(&l.field)),
                nums: s.numeric.iter().map(|f| find(&f.name)).collect(),
                cats: s.categorical.iter().map(|f| find(&f.name)).collect(),
                problem: header_problem(s, header),
            };
            self.layout = Some((header.clone(), layout));
        }
        &self.layout.as_ref().expect("set above").1
    }

    /// Parses one record (without its terminator) of `chunk` at position `pos`.
    pub fn parse_line(&mut self, chunk: &Chunk, line: &str, pos: Pos) -> Parsed {
        if !chunk.undecodable.is_empty() {
            if let Ok(i) = chunk
                .undecodable
                .binary_search_by_key(&pos.line, |(l, _)| *l)
            {
                return undecodable(chunk, line, pos, &chunk.undecodable[i].1);
            }
        }
        let lh = line_hash(line.as_bytes());
        let result = match chunk.format {
            Format::Csv => self.parse_csv(chunk, line, pos, lh),
            Format::Jsonl => self.parse_json(chunk, line, pos, lh),
        };
        let result = result.and_then(|mut record| match violation(&self.schema, &mut record) {
            None => Ok(record),
            Some((reason, detail)) => Err((reason, detail, Some(record.event_time))),
        });
        match result {
            Ok(record) => Parsed::Record(record),
            Err((reason, detail, event_time)) => Parsed::Reject(Reject {
                pos,
                source: chunk.source.clone(),
                line_hash: lh,
                reason,
                detail,
                raw: line.to_string(),
                raw_bytes: None,
                event_time,
                arrived_ms: chunk.arrived_ms,
            }),
        }
    }

    fn parse_csv(
        &mut self,
        chunk: &Chunk,
        line: &str,
        pos: Pos,
        lh: u64,
    ) -> Result<Record, (Reason, String, Option<i64>)> {
        let Some(header) = chunk.header.clone() else {
            return Err((
                Reason::MissingField,
                "CSV input has no header line".into(),
                None,
            ));
        };
        let layout = self.layout_for(&header).clone();
        if let Some(problem) = layout.problem {
            return Err((Reason::BadHeader, problem, None));
        }
        let quoted = line.contains('"');
        self.ranges.clear();
        self.unquoted.clear();
        if quoted {
            split_quoted(line, &mut self.unquoted).map_err(|d| (Reason::FieldCount, d, None))?;
        } else {
            let mut start = 0;
            for (i, b) in line.bytes().enumerate() {
                if b == b',' {
                    self.ranges.push((start, i));
                    start = i + 1;
                }
            }
            self.ranges.push((start, line.len()));
        }
        let n = if quoted {
            self.unquoted.len()
        } else {
            self.ranges.len()
        };
        if n != layout.width {
            return Err((
                Reason::FieldCount,
                format!("expected {} fields, found {n}", layout.width),
                None,
            ));
        }
        let ranges = &self.ranges;
        let unquoted = &self.unquoted;
        let get = |col: Option<usize>| -> Field<'_> {
            match col {
                None => Field::Missing,
                Some(c) => {
                    let text = if quoted {
                        unquoted[c].as_str()
                    } else {
                        &line[ranges[c].0..ranges[c].1]
                    };
                    let text = text.trim();
                    if text.is_empty() {
                        Field::Missing
                    } else {
                        Field::Text(text)
                    }
                }
            }
        };
        build(
            &self.schema,
            chunk,
            pos,
            lh,
            get(layout.time),
            get(layout.key),
            get(layout.id),
            layout.label.map(|c| get(Some(c))).unwrap_or(Field::Missing),
            layout.nums.iter().map(|c| get(*c)),
            layout.cats.iter().map(|c| get(*c)),
        )
    }

    /// Reads the members of the JSON object `line` into `raw`: slots in
    /// `json_names` order (time, key, label, id, numbers, categories), each
    /// the byte range of its raw value in `line`. The buffers are the
    /// parser's, reused from record to record.
    fn read_members(&mut self, line: &str) -> Result<(), serde_json::Error> {
        self.raw.clear();
        self.raw.resize(self.json_names.len(), None);
        let mut members = Members {
            wanted: &self.wanted,
            order: &mut self.order,
            slots: &mut self.raw,
            line,
        };
        if members.scan_flat().is_some() {
            return Ok(());
        }
        // Not a flat object of plain members (or not JSON): serde_json
        // reads it, and its messages say what is wrong.
        members.slots.fill(None);
        let mut de = serde_json::Deserializer::from_str(line);
        serde::de::DeserializeSeed::deserialize(members, &mut de).and_then(|()| de.end())
    }

    fn parse_json(
        &mut self,
        chunk: &Chunk,
        line: &str,
        pos: Pos,
        lh: u64,
    ) -> Result<Record, (Reason, String, Option<i64>)> {
        if let Err(e) = self.read_members(line) {
            let message = if e.is_data() {
                format!("expected a JSON object: {e}")
            } else {
                e.to_string()
            };
            return Err((Reason::BadJson, message, None));
        }
        let s = &self.schema;
        self.values.clear();
        self.unescaped.clear();
        for (i, raw) in self.raw.iter().enumerate() {
            let Some((start, end)) = *raw else {
                self.values.push(Slot::Missing);
                continue;
            };
            let t = &line[start..end];
            let slot = match t.as_bytes().first() {
                Some(b'n') => Slot::Missing,
                Some(b't') => Slot::True,
                Some(b'f') => Slot::False,
                Some(b'"') if !t.contains('\\') => Slot::Line(start + 1, end - 1),
                Some(b'"') => {
                    let v = serde_json::from_str::<String>(t)
                        .map_err(|e| (Reason::BadJson, e.to_string(), None))?;
                    self.unescaped.push(v);
                    Slot::Unescaped(self.unescaped.len() - 1)
                }
                Some(b'[') | Some(b'{') => {
                    return Err((
                        Reason::BadJson,
                        format!(
                            "field `{}`: expected a scalar, found {}",
                            self.json_names[i],
                            if t.starts_with('[') {
                                "an array"
                            } else {
                                "an object"
                            }
                        ),
                        None,
                    ))
                }
                _ => Slot::Line(start, end),
            };
            self.values.push(slot);
        }
        let (values, unescaped) = (&self.values, &self.unescaped);
        let field = |i: usize| -> Field<'_> {
            let text = match values[i] {
                Slot::Missing => return Field::Missing,
                Slot::True => "1",
                Slot::False => "0",
                Slot::Line(a, b) => &line[a..b],
                Slot::Unescaped(u) => unescaped[u].as_str(),
            };
            match text.trim() {
                "" => Field::Missing,
                t => Field::Text(t),
            }
        };
        let nn = s.numeric.len();
        build(
            s,
            chunk,
            pos,
            lh,
            field(0),
            field(1),
            field(3),
            field(2),
            (0..nn).map(|i| field(4 + i)),
            (0..s.categorical.len()).map(|i| field(4 + nn + i)),
        )
    }
}

/// Where a JSON member's value is, once read: JSON `true`/`false` read as
/// `1`/`0`, a string without escapes as its bytes inside the quotes.
#[derive(Clone, Copy)]
enum Slot {
    Missing,
    True,
    False,
    /// A byte range of the line.
    Line(usize, usize),
    /// An escaped string, unescaped into the parser's buffer at this index.
    Unescaped(usize),
}

/// Reads one JSON object into the slots of the members `wanted` names
/// (the raw text of each value; where a key repeats, the last one), in one
/// pass and without a map: keys are borrowed from the line unless escaped.
/// Every other member is still checked for syntax, and skipped.
struct Members<'n, 's, 'de> {
    wanted: &'n [(String, Vec<usize>)],
    /// See [`Parser::order`].
    order: &'s mut Vec<u32>,
    /// Each wanted member's raw value, as a byte range of `line`.
    slots: &'s mut [Option<(usize, usize)>],
    line: &'de str,
}

/// In [`Parser::order`]: the member's name is not wanted (or not known yet).
const NOT_WANTED: u32 = u32::MAX;

impl Members<'_, '_, '_> {
    /// Reads the line by hand if it is one flat object whose keys have no
    /// escapes and whose values are numbers, `true`, `false`, `null` or
    /// strings without escapes — what producers of records write — and
    /// `None` for anything else, even valid JSON (nested values, escapes):
    /// serde_json reads those. What this accepts, serde_json accepts with
    /// the same members and raw values (RFC 8259's grammar for numbers and
    /// whitespace; no control characters in strings), checked against it
    /// by a property test. It is ~3× faster than serde_json's reader with
    /// raw values, which was a tenth of a Kafka run's CPU.
    fn scan_flat(&mut self) -> Option<()> {
        let line = self.line;
        let b = line.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let mut k = 0;
        if b.get(i) == Some(&b'}') {
            return (skip_ws(b, i + 1) == b.len()).then_some(());
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let end = plain_string_end(b, i + 1)?;
            let key = &line[i + 1..end];
            i = skip_ws(b, end + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let start = skip_ws(b, i + 1);
            let end = match *b.get(start)? {
                b'"' => plain_string_end(b, start + 1)? + 1,
                b't' => literal_end(b, start, b"true")?,
                b'f' => literal_end(b, start, b"false")?,
                b'n' => literal_end(b, start, b"null")?,
                b'-' | b'0'..=b'9' => number_end(b, start)?,
                _ => return None,
            };
            if let Some(w) = self.lookup(k, key) {
                for &slot in &self.wanted[w].1 {
                    self.slots[slot] = Some((start, end));
                }
            }
            k += 1;
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(()),
                _ => return None,
            }
        }
    }

    /// The index in `wanted` of the k-th member's name `key`, if it is wanted.
    fn lookup(&mut self, k: usize, key: &str) -> Option<usize> {
        if self.order.len() <= k {
            self.order.resize(k + 1, NOT_WANTED);
        }
        let guess = self.order[k] as usize;
        if self.wanted.get(guess).is_some_and(|(n, _)| n == key) {
            return Some(guess);
        }
        let found = self.wanted.iter().position(|(n, _)| n == key);
        self.order[k] = found.map_or(NOT_WANTED, |i| i as u32);
        found
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Members<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Members<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // The words of serde's own map visitor, which users' errors show.
        f.write_str("a map")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut k = 0;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let found = self.lookup(k, &key);
            k += 1;
            let Some(w) = found else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            let value: &'de serde_json::value::RawValue = map.next_value()?;
            // A borrowed raw value is a slice of the line it was read from.
            let start = value.get().as_ptr() as usize - self.line.as_ptr() as usize;
            let range = (start, start + value.get().len());
            for &slot in &self.wanted[w].1 {
                self.slots[slot] = Some(range);
            }
        }
        Ok(())
    }
}

/// The first byte at or after `i` that is not JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Where the string whose contents start at `i` closes (its quote), if it
/// has no escapes and no control characters (`None` otherwise).
fn plain_string_end(b: &[u8], i: usize) -> Option<usize> {
    let n = b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (b[i + n] == b'"').then_some(i + n)
}

/// The end of `word` at `i`, if it is there.
fn literal_end(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

/// The end of the JSON number at `i` (RFC 8259: `-? (0 | [1-9][0-9]*)
/// (. [0-9]+)? ([eE] [+-]? [0-9]+)?`), if one is there.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: usize| b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// A member's key, borrowed from the line where it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The first declared rule (plausible event time, range, vocabulary, required
/// value) `record` breaks, if any. Values outside the range of a field that
/// says `clamp = true` are clamped to the bound here instead.
pub fn violation(schema: &Schema, record: &mut Record) -> Option<(Reason, String)> {
    if !schema.event_time.field.is_empty() {
        if let Some(why) = schema
            .event_time
            .implausible(record.event_time, record.arrived_ms)
        {
            return Some((Reason::BadTime, why));
        }
    }
    for (i, f) in schema.numeric.iter().enumerate() {
        if record.missing & (1 << i) != 0 {
            if f.impute == Impute::Reject {
                return Some((
                    Reason::MissingField,
                    format!("`{}` is missing and `impute = \"reject\"`", f.name),
                ));
            }
            continue;
        }
        let v = record.nums[i];
        let (lo, hi) = f.bounds();
        if f.clamp {
            record.nums[i] = v.clamp(lo, hi);
        } else if v < lo || v > hi {
            return Some((
                Reason::OutOfRange,
                format!(
                    "`{}` = {} is outside [{}, {}]",
                    f.name,
                    number(v),
                    number(lo),
                    number(hi)
                ),
            ));
        }
    }
    for (i, f) in schema.categorical.iter().enumerate() {
        let v = &record.cats[i];
        if !v.is_empty() && f.vocabulary.is_some() && f.slot(v).is_none() {
            return Some((
                Reason::UnknownCategory,
                format!("`{}` = `{v}` is not in its vocabulary", f.name),
            ));
        }
    }
    None
}

/// A number as a person writes it: `12.5`, `1e200` (not 201 digits).
fn number(v: f64) -> String {
    if v != 0.0 && !(1e-6..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// Why a record cannot be read: the reason, a detail, and its event time
/// once that was read.
type Unreadable = (Reason, String, Option<i64>);

/// A record from its fields as one input format found them (in schema
/// order), read in order: the event time, the key, the id, the label, the
/// numbers, the categories. The first field that cannot be read rejects it.
#[allow(clippy::too_many_arguments)]
fn build<'a>(
    schema: &Schema,
    chunk: &Chunk,
    pos: Pos,
    lh: u64,
    time: Field<'a>,
    key: Field<'a>,
    id: Field<'a>,
    label: Field<'a>,
    nums: impl Iterator<Item = Field<'a>>,
    cats: impl Iterator<Item = Field<'a>>,
) -> Result<Record, Unreadable> {
    let event_time = read_event_time(schema, time)?;
    let key = read_key(schema, chunk, key, event_time)?;
    let id = read_id(schema, id, event_time)?;
    let label = read_label(schema, label, event_time)?;
    let (nums, missing) = read_numbers(schema, nums, event_time)?;
    let cats = cats
        .map(|f| match f {
            Field::Missing => String::new(),
            Field::Text(t) => t.to_string(),
        })
        .collect();
    let key_hash = key_hash(&key);
    Ok(Record {
        pos,
        source: chunk.source.clone(),
        line_hash: lh,
        key,
        key_hash,
        id,
        event_time,
        label,
        nums,
        missing,
        cats,
        arrived_ms: chunk.arrived_ms,
    })
}

/// The event time in ms; `i64::MIN` for a stream without one (a label
/// stream that says only what, not when).
fn read_event_time(schema: &Schema, time: Field<'_>) -> Result<i64, Unreadable> {
    let tf = &schema.event_time;
    match time {
        Field::Missing if tf.field.is_empty() => Ok(i64::MIN),
        Field::Missing => Err((Reason::BadTime, format!("`{}` is missing", tf.field), None)),
        Field::Text(t) => parse_time(t, tf.format).ok_or_else(|| {
            (
                Reason::BadTime,
                format!(
                    "`{}`: cannot read `{t}` as {}",
                    tf.field,
                    format_name(tf.format)
                ),
                None,
            )
        }),
    }
}

/// The key; the input's name when the schema declares no key field.
fn read_key(
    schema: &Schema,
    chunk: &Chunk,
    key: Field<'_>,
    event_time: i64,
) -> Result<String, Unreadable> {
    match key {
        Field::Missing if schema.key.is_empty() => Ok(chunk.source.to_string()),
        Field::Missing => Err((
            Reason::MissingField,
            format!("key `{}` is missing", schema.key),
            Some(event_time),
        )),
        Field::Text(k) => Ok(k.to_string()),
    }
}

/// The record id, required when the schema declares an id field.
fn read_id(schema: &Schema, id: Field<'_>, event_time: i64) -> Result<Option<String>, Unreadable> {
    match id {
        Field::Missing if schema.id.is_empty() => Ok(None),
        Field::Missing => Err((
            Reason::MissingField,
            format!("id `{}` is missing", schema.id),
            Some(event_time),
        )),
        Field::Text(v) => Ok(Some(v.to_string())),
    }
}

/// The label, if the schema has one and the record carries it: a finite
/// number, 0 or 1 for a binary label.
fn read_label(
    schema: &Schema,
    label: Field<'_>,
    event_time: i64,
) -> Result<Option<f64>, Unreadable> {
    let (Field::Text(t), Some(spec)) = (label, &schema.label) else {
        return Ok(None);
    };
    let v: f64 = t.parse().map_err(|_| {
        (
            Reason::BadLabel,
            format!("label `{}`: cannot read `{t}` as a number", spec.field),
            Some(event_time),
        )
    })?;
    if !v.is_finite() {
        return Err((
            Reason::BadLabel,
            format!("label `{}`: `{t}` is not finite", spec.field),
            Some(event_time),
        ));
    }
    if spec.kind == LabelKind::Binary && v != 0.0 && v != 1.0 {
        // Readable but outside the rule: an invalid record, decided here once.
        return Err((
            Reason::InvalidLabel,
            format!("label `{}`: expected 0 or 1, found `{t}`", spec.field),
            Some(event_time),
        ));
    }
    Ok(Some(v))
}

/// The numeric fields (NaN where missing) and the mask of the missing ones
/// (bit `i` for field `i`); every present value must be a finite number.
fn read_numbers<'a>(
    schema: &Schema,
    nums: impl Iterator<Item = Field<'a>>,
    event_time: i64,
) -> Result<(Vec<f64>, u64), Unreadable> {
    let mut values = Vec::with_capacity(schema.numeric.len());
    let mut missing = 0u64;
    for (i, (f, field)) in nums.zip(&schema.numeric).enumerate() {
        match f {
            Field::Missing => {
                missing |= 1 << i;
                values.push(f64::NAN);
            }
            Field::Text(t) => match t.parse::<f64>() {
                Ok(v) if v.is_finite() => values.push(v),
                _ => {
                    return Err((
                        Reason::BadNumber,
                        format!("`{}`: cannot read `{t}` as a number", field.name),
                        Some(event_time),
                    ))
                }
            },
        }
    }
    Ok((values, missing))
}

/// Why `header` cannot carry `schema`'s records, if it cannot: the declared
/// columns it lacks (the label and `optional` fields may be absent) and those
/// it names more than once.
pub fn header_problem(schema: &Schema, header: &[String]) -> Option<String> {
    let count = |name: &str| header.iter().filter(|h| h.trim() == name).count();
    let declared = [
        (schema.event_time.field.as_str(), true),
        (schema.key.as_str(), true),
        (schema.id.as_str(), true),
        (
            schema.label.as_ref().map_or("", |l| l.field.as_str()),
            false,
        ),
    ]
    .into_iter()
    .chain(
        schema
            .numeric
            .iter()
            .map(|f| (f.name.as_str(), !f.optional)),
    )
    .chain(
        schema
            .categorical
            .iter()
            .map(|f| (f.name.as_str(), !f.optional)),
    );
    let (mut missing, mut twice) = (Vec::new(), Vec::new());
    for (name, required) in declared.filter(|(name, _)| !name.is_empty()) {
        let list = match count(name) {
            0 if required => &mut missing,
            0 | 1 => continue,
            _ => &mut twice,
        };
        let name = format!("`{name}`");
        if !list.contains(&name) {
            list.push(name);
        }
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "the header has no column {} (a numeric or categorical field may say `optional = true`)",
            missing.join(", ")
        ));
    }
    if !twice.is_empty() {
        parts.push(format!(
            "the header names {} more than once",
            twice.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The reject of a record whose bytes are not UTF-8: `line` is their lossy
/// decoding, `bytes` the record exactly.
fn undecodable(chunk: &Chunk, line: &str, pos: Pos, bytes: &[u8]) -> Parsed {
    let at = std::str::from_utf8(bytes)
        .err()
        .map_or(0, |e| e.valid_up_to());
    Parsed::Reject(Reject {
        pos,
        source: chunk.source.clone(),
        line_hash: line_hash(bytes),
        reason: Reason::BadEncoding,
        detail: format!("not valid UTF-8 (at byte {at} of the record; the raw bytes are kept)"),
        raw: line.to_string(),
        raw_bytes: Some(bytes.to_vec()),
        event_time: None,
        arrived_ms: chunk.arrived_ms,
    })
}

/// Where a CSV scan is inside a record: what decides whether a newline ends
/// the record (RFC 4180: a newline inside a quoted field does not). The
/// landing source cuts chunks and [`records`] splits them with this one
/// machine, so both agree on where every record ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quoting {
    /// At the start of a field (after a separator or a line start, and any spaces or tabs).
    #[default]
    FieldStart,
    /// In an unquoted field, or after a quoted one closed (a quote is then an ordinary character).
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// Just after a quote in a quoted field: another quote escapes it, anything else closes the field.
    QuoteInQuoted,
}

impl Quoting {
    /// The state after byte `b`.
    #[inline]
    pub fn step(self, b: u8) -> Quoting {
        use Quoting::*;
        match (self, b) {
            (Quoted, b'"') => QuoteInQuoted,
            (Quoted, _) => Quoted,
            (QuoteInQuoted, b'"') | (FieldStart, b'"') => Quoted,
            (_, b',' | b'\n') => FieldStart,
            (FieldStart, b' ' | b'\t') => FieldStart,
            _ => Unquoted,
        }
    }

    /// Whether a record that is inside a quoted field (`open`) or not at the
    /// start of the physical line `line` (with or without its newline) is
    /// inside one at its end — then the newline does not end the record.
    #[inline]
    pub fn open_after(open: bool, line: &[u8]) -> bool {
        if !line.contains(&b'"') {
            return open;
        }
        let start = if open {
            Quoting::Quoted
        } else {
            Quoting::FieldStart
        };
        line.iter().fold(start, |s, b| s.step(*b)) == Quoting::Quoted
    }
}

/// The records of a chunk's `text`, each with the number of physical lines
/// before it: lines, or for CSV (`csv`) quote-aware records, which may span
/// lines. A record excludes its newline (and a `\r` before it). Blank
/// records are yielded too (callers skip them, see [`is_blank`]).
pub fn records(text: &str, csv: bool) -> Records<'_> {
    Records {
        text,
        at: 0,
        line: 0,
        csv,
    }
}

/// Iterator of [`records`].
pub struct Records<'a> {
    text: &'a str,
    at: usize,
    line: u64,
    csv: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = (u64, &'a str);

    fn next(&mut self) -> Option<(u64, &'a str)> {
        let len = self.text.len();
        if self.at >= len {
            return None;
        }
        let (start, first) = (self.at, self.line);
        let mut open = false;
        loop {
            let (end, next) = match self.text[self.at..].find('\n') {
                Some(i) => (self.at + i, self.at + i + 1),
                None => (len, len),
            };
            if self.csv {
                open = Quoting::open_after(open, &self.text.as_bytes()[self.at..end]);
            }
            self.line += 1;
            self.at = next;
            if !open || next >= len {
                let mut record = &self.text[start..end];
                if end < len {
                    record = record.strip_suffix('\r').unwrap_or(record);
                }
                return Some((first, record));
            }
        }
    }
}

/// Whether a record is blank (not a record: neither sources nor `parse` count it).
pub fn is_blank(record: &str) -> bool {
    record.trim().is_empty()
}

/// Splits one CSV record into its fields (RFC 4180, the rules of [`Quoting`]).
pub fn split_record(record: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    split_quoted(record, &mut out)?;
    Ok(out)
}

/// Splits one CSV record with quoted fields, by the rules of [`Quoting`].
fn split_quoted(line: &str, out: &mut Vec<String>) -> Result<(), String> {
    use Quoting::*;
    let mut field = String::new();
    let mut state = FieldStart;
    for c in line.chars() {
        state = match (state, c) {
            (Quoted, '"') => QuoteInQuoted,
            (Quoted, c) => {
                field.push(c);
                Quoted
            }
            (QuoteInQuoted, '"') => {
                field.push('"');
                Quoted
            }
            (FieldStart, '"') => {
                field.clear();
                Quoted
            }
            (_, ',') => {
                out.push(std::mem::take(&mut field));
                FieldStart
            }
            (FieldStart, ' ' | '\t') => {
                field.push(c);
                FieldStart
            }
            (_, c) => {
                field.push(c);
                Unquoted
            }
        };
    }
    if state == Quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(field);
    Ok(())
}

fn format_name(f: TimeFormat) -> &'static str {
    match f {
        TimeFormat::EpochMs => "epoch milliseconds",
        TimeFormat::EpochS => "epoch seconds",
        TimeFormat::Rfc3339 => "an RFC 3339 timestamp",
        TimeFormat::Datetime => "`YYYY-MM-DD HH:MM:SS`",
    }
}

/// Parses an event time in `format` to ms since the Unix epoch.
pub fn parse_time(text: &str, format: TimeFormat) -> Option<i64> {
    match format {
        TimeFormat::EpochMs => text.parse::<i64>().ok().or_else(|| {
            let v: f64 = text.parse().ok()?;
            (v.is_finite() && v.abs() < 9.0e15).then(|| v.round() as i64)
        }),
        TimeFormat::EpochS => {
            let v: f64 = text.parse().ok()?;
            (v.is_finite() && v.abs() < 9.0e12).then(|| (v * 1000.0).round() as i64)
        }
        TimeFormat::Rfc3339 => parse_datetime(text, true),
        TimeFormat::Datetime => parse_datetime(text, false),
    }
}

/// Writes `ms` back in `format` (UTC), the inverse of [`parse_time`]:
/// `parse_time(&format_time(t, f), f) == Some(t)`.
pub fn format_time(ms: i64, format: TimeFormat) -> String {
    match format {
        TimeFormat::EpochMs => ms.to_string(),
        TimeFormat::EpochS => {
            if ms.rem_euclid(1000) == 0 {
                ms.div_euclid(1000).to_string()
            } else {
                format!("{}", ms as f64 / 1000.0)
            }
        }
        TimeFormat::Rfc3339 | TimeFormat::Datetime => {
            let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
            let (y, m, d) = civil_from_days(days);
            let (h, min, sec, milli) = (
                rest / 3_600_000,
                rest / 60_000 % 60,
                rest / 1000 % 60,
                rest % 1000,
            );
            let sep = if format == TimeFormat::Rfc3339 {
                'T'
            } else {
                ' '
            };
            let mut out = format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{min:02}:{sec:02}");
            if milli != 0 {
                out.push_str(&format!(".{milli:03}"));
            }
            if format == TimeFormat::Rfc3339 {
                out.push('Z');
            }
            out
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `y` is a leap year of the proleptic Gregorian calendar.
pub fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Days in month `m` (1–12) of year `y`.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD?HH:MM:SS[.fff][zone]`: `rfc3339` (a `T`, `t` or space, and a
/// zone) or `datetime` (a space, no zone). Dates are calendar-checked.
fn parse_datetime(text: &str, rfc3339: bool) -> Option<i64> {
    let b = text.as_bytes();
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || s.len() > 4 || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0, |n, c| n * 10 + i64::from(c - b'0')))
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    if !(1..=12).contains(&mo) || d < 1 || d > i64::from(days_in_month(y, mo as u32)) {
        return None;
    }
    match b[10] {
        b' ' => {}
        b'T' | b't' if rfc3339 => {}
        _ => return None,
    }
    let (h, mi, s) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut ms = days_from_civil(y, mo as u32, d as u32) * 86_400_000;
    ms += (h * 3600 + mi * 60 + s) * 1000;
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') || rest.first() == Some(&b',') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let frac = &rest[1..1 + digits];
        let mut f = 0i64;
        for (i, c) in frac.iter().take(3).enumerate() {
            f += i64::from(c - b'0') * [100, 10, 1][i];
        }
        ms += f;
        rest = &rest[1 + digits..];
    }
    match rest {
        [] => (!rfc3339).then_some(ms),
        [b'Z'] | [b'z'] if rfc3339 => Some(ms),
        [sign @ (b'+' | b'-'), zone @ ..] if rfc3339 => {
            let (zh, zm) = match zone {
                [a, b, b':', c, d] | [a, b, c, d] => (num(&[*a, *b])?, num(&[*c, *d])?),
                [a, b] => (num(&[*a, *b])?, 0),
                _ => return None,
            };
            if zh > 23 || zm > 59 {
                return None;
            }
            let offset = (zh * 60 + zm) * 60_000;
            Some(if *sign == b'+' {
                ms - offset
            } else {
                ms + offset
            })
        }
        _ => None,
    }
}

/// Parses every record of `chunk` into `out`; returns how many there were.
/// A bad header is logged once per input (`warned`).
pub fn parse_chunk(
    parser: &mut Parser,
    chunk: &Chunk,
    warned: &mut HashSet<u64>,
    mut out: impl FnMut(Parsed),
) -> u64 {
    // Files' CSV records may span lines; a Kafka message is one line.
    let csv = chunk.format == Format::Csv && chunk.positions.is_none();
    let mut n = 0;
    for (i, (offset, record)) in records(&chunk.text, csv).enumerate() {
        let line = match &chunk.positions {
            Some(p) => p.get(i).copied().unwrap_or(chunk.first_line + offset),
            None => chunk.first_line + offset,
        };
        // A file's blank lines are not records (the landing source does not
        // count them either); a message is one, empty or not (a tombstone is
        // rejected as unreadable, not skipped).
        if chunk.positions.is_none() && is_blank(record) {
            continue;
        }
        let parsed = parser.parse_line(
            chunk,
            record,
            Pos {
                input: chunk.input,
                line,
            },
        );
        if let Parsed::Reject(r) = &parsed {
            if r.reason == Reason::BadHeader && warned.insert(chunk.input) {
                tracing::warn!(file = %chunk.source, problem = %r.detail, "A landed file's header does not fit the schema: every record of it is rejected as bad_header.");
            }
        }
        out(parsed);
        n += 1;
    }
    n
}

/// `parse` on one worker, without timely: the [`Parser`] (its header
/// cache) and the inputs whose bad header was logged. The operator hands it
/// each batch of chunks as it arrives; parsing keeps no per-epoch state.
pub struct ParseMachine {
    parser: Parser,
    /// Inputs whose bad header was logged.
    warned: HashSet<u64>,
}

impl ParseMachine {
    /// A machine for `schema`.
    pub fn new(schema: Arc<Schema>) -> Self {
        ParseMachine {
            parser: Parser::new(schema),
            warned: HashSet::new(),
        }
    }

    /// Parses every record of `chunks` (one timestamp's) in order, each to
    /// `emit` as it is read; returns the [`Tally`] of the records read.
    pub fn on_batch(
        &mut self,
        chunks: impl IntoIterator<Item = Chunk>,
        mut emit: impl FnMut(Parsed),
    ) -> Tally {
        let mut n = 0u64;
        for chunk in chunks {
            n += parse_chunk(&mut self.parser, &chunk, &mut self.warned, &mut emit);
        }
        Tally {
            input: n,
            ..Tally::default()
        }
    }
}

/// The `parse` operator. See the module docs.
pub trait Parse<'scope> {
    /// Parses every line of every chunk; returns the parsed values and the per-epoch input tallies.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Event};
    /// use millrace_operators::parse::Parse;
    /// use millrace_operators::record::{Chunk, Format, Parsed};
    /// use millrace_operators::schema::{Schema, SchemaSpec};
    ///
    /// let spec: SchemaSpec = serde_json::from_str(
    ///     r#"{"key": "account", "event_time": {"field": "t", "max_age_ms": 9000000000000000000}, "numeric": [{"name": "amount"}]}"#).unwrap();
    /// let schema = Arc::new(Schema::new(&spec).unwrap());
    /// let chunk = Chunk {
    ///     source: "a.csv".into(), input: 1, first_line: 2, format: Format::Csv,
    ///     header: Some(vec!["t".to_string(), "account".into(), "amount".into()].into()),
    ///     text: "1000,acct-1,12.5\n2000,acct-2,oops\n".into(), arrived_ms: 0, positions: None,
    ///     undecodable: Vec::new(),
    /// };
    /// let (parsed, _tallies) = timely::example(move |scope| {
    ///     let (parsed, tallies) = vec![chunk].to_stream(scope).parse(schema);
    ///     (parsed.capture(), tallies.capture())
    /// });
    /// let parsed: Vec<Parsed> = parsed.try_iter()
    ///     .flat_map(|e| match e { Event::Messages(_, d) => d, Event::Progress(_) => vec![] })
    ///     .collect();
    /// assert!(matches!(&parsed[0], Parsed::Record(r) if r.key == "acct-1" && r.nums == [12.5]));
    /// assert!(matches!(&parsed[1], Parsed::Reject(r) if r.reason.code() == "bad_number" && r.pos.line == 3));
    /// ```
    fn parse(
        self,
        schema: Arc<Schema>,
    ) -> (
        Stream<'scope, Epoch, Vec<Parsed>>,
        Stream<'scope, Epoch, Vec<Tally>>,
    );
}

impl<'scope> Parse<'scope> for Stream<'scope, Epoch, Vec<Chunk>> {
    fn parse(
        self,
        schema: Arc<Schema>,
    ) -> (
        Stream<'scope, Epoch, Vec<Parsed>>,
        Stream<'scope, Epoch, Vec<Tally>>,
    ) {
        let mut builder = OperatorBuilder::new("parse".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (parsed_out, parsed) = builder.new_output();
        let (tally_out, tallies) = builder.new_output();
        let mut parsed_out = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<Parsed>>,
        >::from(parsed_out);
        let mut tally_out = OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<Tally>>,
        >::from(tally_out);
        let mut machine = ParseMachine::new(schema);
        // Batches of one source are much alike in size: the last one's
        // saves the output from growing (and moving) record by record.
        let mut size_hint = 0;
        builder.build(move |_caps| {
            move |_frontiers| {
                let mut parsed_handle = parsed_out.activate();
                let mut tally_handle = tally_out.activate();
                input.for_each_stamp(|cap, data| {
                    let chunks = data.flat_map(|d| d.drain(..));
                    let mut parsed = Vec::with_capacity(size_hint);
                    let tally = machine.on_batch(chunks, |p| parsed.push(p));
                    size_hint = parsed.len();
                    parsed_handle.session(&cap).give_container(&mut parsed);
                    tally_handle.session(&cap).give(tally);
                });
            }
        });
        (parsed, tallies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SchemaSpec;

    fn schema() -> Arc<Schema> {
        let spec: SchemaSpec = toml::from_str(
            r#"
            key = "account"
            event_time = { field = "event_time", max_age_ms = 9000000000000000000, max_future_ms = 9000000000000000000 }
            label = { field = "label" }
            [[numeric]]
            names = ["amount", "f0"]
            [[categorical]]
            name = "category"
            "#,
        )
        .unwrap();
        Arc::new(Schema::new(&spec).unwrap())
    }

    fn chunk(format: Format) -> Chunk {
        let header: Vec<String> = "event_time,account,category,amount,f0,label"
            .split(',')
            .map(String::from)
            .collect();
        Chunk {
            source: "t.csv".into(),
            input: 9,
            first_line: 2,
            format,
            header: Some(header.into()),
            text: String::new(),
            arrived_ms: 5,
            positions: None,
            undecodable: Vec::new(),
        }
    }

    fn parse_one(format: Format, line: &str) -> Parsed {
        Parser::new(schema()).parse_line(&chunk(format), line, Pos { input: 9, line: 2 })
    }

    fn reason(p: Parsed) -> &'static str {
        match p {
            Parsed::Reject(r) => r.reason.code(),
            Parsed::Record(r) => panic!("expected a reject, got {r:?}"),
        }
    }

    #[test]
    fn csv_record_with_missing_value() {
        let Parsed::Record(r) = parse_one(Format::Csv, "1767225600000,acct-1,fuel,,0.5,1") else {
            panic!()
        };
        assert_eq!(r.key, "acct-1");
        assert_eq!(r.event_time, 1_767_225_600_000);
        assert!(r.nums[0].is_nan());
        assert_eq!(r.nums[1], 0.5);
        assert_eq!(r.missing, 0b01);
        assert_eq!(r.cats, ["fuel"]);
        assert_eq!(r.label, Some(1.0));
    }

    #[test]
    fn csv_malformed_rows_have_reasons() {
        assert_eq!(
            reason(parse_one(Format::Csv, "1,acct-1,fuel,1.0")),
            "field_count"
        );
        assert_eq!(
            reason(parse_one(Format::Csv, "1,acct-1,fuel,n/a,0.5,1")),
            "bad_number"
        );
        assert_eq!(
            reason(parse_one(Format::Csv, "yesterday,acct-1,fuel,1,0.5,1")),
            "bad_time"
        );
        assert_eq!(
            reason(parse_one(Format::Csv, "1,acct-1,fuel,1,0.5,7")),
            "invalid_label"
        );
        assert_eq!(
            reason(parse_one(Format::Csv, "1,,fuel,1,0.5,1")),
            "missing_field"
        );
    }

    #[test]
    fn csv_quoted_fields() {
        let Parsed::Record(r) = parse_one(Format::Csv, r#"1,"acct, ""quoted""",fuel,2.5,0.5,0"#)
        else {
            panic!()
        };
        assert_eq!(r.key, r#"acct, "quoted""#);
        assert_eq!(
            reason(parse_one(Format::Csv, r#"1,"acct,fuel,2.5,0.5,0"#)),
            "field_count"
        );
    }

    #[test]
    fn json_lines() {
        let Parsed::Record(r) = parse_one(
            Format::Jsonl,
            r#"{"event_time":1000,"account":"a","category":"fuel","amount":null,"f0":0.25,"label":0}"#,
        ) else {
            panic!()
        };
        assert_eq!((r.event_time, r.missing, r.label), (1000, 1, Some(0.0)));
        assert_eq!(
            reason(parse_one(
                Format::Jsonl,
                r#"{"event_time": "1", "account": "#
            )),
            "bad_json"
        );
        assert_eq!(reason(parse_one(Format::Jsonl, "[1,2]")), "bad_json");
        assert_eq!(
            reason(parse_one(
                Format::Jsonl,
                r#"{"event_time":1,"account":"a","amount":"n/a"}"#
            )),
            "bad_number"
        );
    }

    #[test]
    fn json_members_are_read_as_a_json_reader_would() {
        let record = |line: &str| match parse_one(Format::Jsonl, line) {
            Parsed::Record(r) => r,
            Parsed::Reject(r) => panic!("{line}: {:?} {}", r.reason, r.detail),
        };
        // Members the schema does not read may hold anything well formed.
        let r = record(
            r#"{"extra":{"a":[1,{"b":null}]},"event_time":7,"account":"a\"b","f0":1.5,"tags":["x"],"amount":2}"#,
        );
        assert_eq!(
            (r.event_time, r.key.as_str(), r.nums[0], r.nums[1]),
            (7, "a\"b", 2.0, 1.5)
        );
        // An escaped key names the same member; a repeated key, its last value.
        let r = record(r#"{"event_time":7,"acc\u006funt":"k","amount":1,"amount":3}"#);
        assert_eq!((r.key.as_str(), r.nums[0]), ("k", 3.0));
        for bad in [
            r#"{"event_time":7,"account":"a","extra":{"a":}}"#,
            r#"{"event_time":7,"account":"a"} trailing"#,
            r#"{"event_time":7,"account":"a","amount":1,}"#,
            r#"{"event_time":7,"account":"a","amount":[1]}"#,
            r#"{"event_time":7,"account":"a","amount":01}"#,
            r#""not an object""#,
        ] {
            assert_eq!(reason(parse_one(Format::Jsonl, bad)), "bad_json", "{bad}");
        }
        let Parsed::Reject(r) = parse_one(Format::Jsonl, "[1,2]") else {
            panic!()
        };
        assert!(
            r.detail
                .starts_with("expected a JSON object: invalid type: sequence, expected a map"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn plain_records_are_read_by_hand() {
        let parser = Parser::new(schema());
        let mut slots = vec![None; parser.json_names.len()];
        for line in [
            r#"{"event_time":1767225600000,"account":"acct-003574","category":"electronics","amount":117.55,"f0":-2.09319,"label":0}"#,
            r#" { "event_time" : 1 , "account" : "a", "extra": null, "f0": 1e-3, "label": true } "#,
            "{}",
        ] {
            let mut order = Vec::new();
            let mut members = Members {
                wanted: &parser.wanted,
                order: &mut order,
                slots: &mut slots,
                line,
            };
            assert!(members.scan_flat().is_some(), "{line}");
        }
    }

    #[test]
    fn one_parser_reads_members_in_any_order_from_line_to_line() {
        // The reader guesses each member's name from the line before: lines
        // whose members move, vanish or repeat must read as if alone.
        let lines = [
            r#"{"event_time":1,"account":"a","amount":1,"f0":2,"category":"x","label":1}"#,
            r#"{"event_time":2,"account":"b","amount":3,"f0":4,"category":"y","label":0}"#,
            r#"{"label":1,"category":"z","f0":6,"amount":5,"account":"c","event_time":3}"#,
            r#"{"extra":0,"event_time":4,"account":"d","f0":8}"#,
            r#"{"event_time":5,"event_time":6,"account":"e","amount":9,"amount":10}"#,
            r#"{"event_time":7,"account":"f","amount":11,"f0":12,"category":"w","label":0}"#,
        ];
        let mut parser = Parser::new(schema());
        let c = chunk(Format::Jsonl);
        for line in lines {
            let pos = Pos { input: 9, line: 2 };
            let shared = parser.parse_line(&c, line, pos);
            let alone = Parser::new(schema()).parse_line(&c, line, pos);
            // Debug text: a missing number is NaN, which is not equal to itself.
            assert_eq!(format!("{shared:?}"), format!("{alone:?}"), "{line}");
            assert!(matches!(shared, Parsed::Record(_)), "{line}: {shared:?}");
        }
    }

    #[test]
    fn times_format_back_to_what_was_read() {
        for (text, f) in [
            ("2014-04-01 00:05:00", TimeFormat::Datetime),
            ("2014-04-01 23:59:59.250", TimeFormat::Datetime),
            ("1969-12-31T23:59:59Z", TimeFormat::Rfc3339),
            ("1767225600123", TimeFormat::EpochMs),
            ("1767225600", TimeFormat::EpochS),
            ("1767225600.5", TimeFormat::EpochS),
        ] {
            let t = parse_time(text, f).unwrap();
            assert_eq!(format_time(t, f), text);
        }
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2014-04-01 00:00:00", TimeFormat::Datetime),
            Some(1_396_310_400_000)
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z", TimeFormat::Rfc3339),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_time("2026-01-01T01:00:00.250+01:00", TimeFormat::Rfc3339),
            Some(1_767_225_600_250)
        );
        assert_eq!(parse_time("2026-01-01T00:00:00", TimeFormat::Rfc3339), None);
        assert_eq!(
            parse_time("1767225600.5", TimeFormat::EpochS),
            Some(1_767_225_600_500)
        );
        assert_eq!(
            parse_time("2026-13-01 00:00:00", TimeFormat::Datetime),
            None
        );
        for d in [-800_000, -1, 0, 1, 20_454, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    /// Parses a whole chunk of text the way the operator does.
    fn parse_text(schema: Arc<Schema>, header: &str, text: &str) -> Vec<Parsed> {
        let mut c = chunk(Format::Csv);
        c.header = Some(
            header
                .split(',')
                .map(String::from)
                .collect::<Vec<_>>()
                .into(),
        );
        c.text = text.into();
        c.arrived_ms = 1_767_225_600_000;
        let mut out = Vec::new();
        let n = parse_chunk(&mut Parser::new(schema), &c, &mut HashSet::new(), |p| {
            out.push(p)
        });
        assert_eq!(n as usize, out.len());
        out
    }

    #[test]
    fn machine_tallies_every_record_of_a_batch_and_keeps_their_order() {
        let mut m = ParseMachine::new(schema());
        let mut csv = chunk(Format::Csv);
        csv.text = "1767225600000,a,fuel,1,2,1\n\n1767225600000,b,fuel,oops,2,0\n".into();
        let mut json = chunk(Format::Jsonl);
        json.input = 10;
        json.first_line = 1;
        json.text = r#"{"event_time": 1767225600000, "account": "c", "category": "x", "amount": 3, "f0": 4}"#.into();
        json.text.push_str("\nnot json\n");
        let mut out = Vec::new();
        let tally = m.on_batch(vec![csv, json], |p| out.push(p));
        assert_eq!(
            tally,
            Tally {
                input: 4,
                ..Tally::default()
            },
            "blank lines are not records"
        );
        let seen: Vec<(u64, u64, &str)> = out
            .iter()
            .map(|p| match p {
                Parsed::Record(r) => (r.pos.input, r.pos.line, "record"),
                Parsed::Reject(r) => (r.pos.input, r.pos.line, r.reason.code()),
            })
            .collect();
        assert_eq!(
            seen,
            [
                (9, 2, "record"),
                (9, 4, "bad_number"),
                (10, 1, "record"),
                (10, 2, "bad_json")
            ]
        );
        let tally = m.on_batch(Vec::new(), |_| panic!("no records"));
        assert_eq!(
            tally,
            Tally::default(),
            "an empty batch still has its tally"
        );
    }

    #[test]
    fn machine_keeps_rejecting_a_bad_header_across_batches() {
        let mut m = ParseMachine::new(schema());
        let bad: Vec<String> = ["event_time", "account", "amount"]
            .map(String::from)
            .to_vec();
        let mut c = chunk(Format::Csv);
        c.header = Some(bad.into());
        c.text = "1767225600000,a,1\n".into();
        for _ in 0..2 {
            let mut out = Vec::new();
            let tally = m.on_batch(vec![c.clone(), c.clone()], |p| out.push(p));
            assert_eq!(tally.input, 2);
            assert!(out
                .iter()
                .all(|p| matches!(p, Parsed::Reject(r) if r.reason == Reason::BadHeader)));
        }
        assert_eq!(m.warned, HashSet::from([9]), "logged once for the input");
        // A good header afterwards is read again, not the cached bad one.
        let mut good = chunk(Format::Csv);
        good.text = "1767225600000,a,fuel,1,2,1\n".into();
        let mut out = Vec::new();
        m.on_batch(vec![good], |p| out.push(p));
        assert!(matches!(&out[0], Parsed::Record(r) if r.key == "a"));
    }

    const HEADER: &str = "event_time,account,category,amount,f0,label";

    #[test]
    fn records_span_lines_only_inside_quotes() {
        let text = "a,b\r\n\"x\ny\",\"q\"\"\n\"\n5\" pipe,\"z\"\nlast";
        let got: Vec<(u64, &str)> = records(text, true).collect();
        assert_eq!(
            got,
            [
                (0, "a,b"),
                (1, "\"x\ny\",\"q\"\"\n\""),
                (4, "5\" pipe,\"z\""),
                (5, "last")
            ]
        );
        // Not CSV (JSON lines, Kafka messages): one record per line.
        assert_eq!(records(text, false).count(), 6);
        // An unterminated quote takes the rest of the text.
        let got: Vec<(u64, &str)> = records("1,2\n\"open,\n3,4\n", true).collect();
        assert_eq!(got, [(0, "1,2"), (1, "\"open,\n3,4")]);
    }

    #[test]
    fn quoting_machine_agrees_with_the_field_splitter() {
        for (line, open) in [
            ("plain,line", false),
            ("\"open", true),
            ("\"closed\"", false),
            ("  \"spaced", true),
            ("x\"literal", false),
            ("\"a\"\"b", true),
            ("\"a\"\"\"", false),
            ("\"a\"x\"", false),
        ] {
            assert_eq!(Quoting::open_after(false, line.as_bytes()), open, "{line}");
            assert_eq!(split_record(line).is_err(), open, "{line}");
        }
        assert_eq!(
            split_record("\"a,\nb\", c ,\"\"\"q\"\"\"").unwrap(),
            ["a,\nb", " c ", "\"q\""]
        );
    }

    #[test]
    fn quoted_newlines_make_one_record_at_its_first_line() {
        let text =
            "1767225600000,\"acct\n1\",fuel,1.5,0.5,1\n\n1767225600001,acct-2,\"fu,el\",2,0.5,0\n";
        let out = parse_text(schema(), HEADER, text);
        assert_eq!(out.len(), 2);
        let Parsed::Record(r) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!((r.key.as_str(), r.pos.line), ("acct\n1", 2));
        let Parsed::Record(r) = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert_eq!((r.cats[0].as_str(), r.pos.line), ("fu,el", 5));
        // An unterminated quote: one reject holding the rest.
        let out = parse_text(schema(), HEADER, "1,\"a,fuel,1,0.5,1\n2,b,fuel,1,0.5,1\n");
        assert_eq!(out.len(), 1);
        let Parsed::Reject(r) = &out[0] else { panic!() };
        assert_eq!(
            (r.reason.code(), r.detail.as_str()),
            ("field_count", "unterminated quoted field")
        );
        assert_eq!(r.raw, "1,\"a,fuel,1,0.5,1\n2,b,fuel,1,0.5,1");
    }

    #[test]
    fn bad_headers_reject_every_record_and_say_why() {
        let text = "1767225600000,acct-1,fuel,1,1\n1767225600000,acct-2,fuel,1,0\n";
        let out = parse_text(schema(), "event_time,account,category,amount,label", text);
        assert_eq!(out.len(), 2);
        for p in &out {
            let Parsed::Reject(r) = p else { panic!() };
            assert_eq!(r.reason.code(), "bad_header");
            assert!(r.detail.contains("no column `f0`"), "{}", r.detail);
        }
        let out = parse_text(
            schema(),
            "event_time,account,category,amount,f0,label,amount",
            "1,a,fuel,1,2,1,3\n",
        );
        let Parsed::Reject(r) = &out[0] else { panic!() };
        assert_eq!(r.detail, "the header names `amount` more than once");
        let out = parse_text(
            schema(),
            "event_time,category,amount,f0,label,label",
            "1,fuel,1,2,1,1\n",
        );
        let Parsed::Reject(r) = &out[0] else { panic!() };
        assert!(
            r.detail.contains("no column `account`")
                && r.detail.contains("names `label` more than once"),
            "{}",
            r.detail
        );
        // The label may be absent: the records are unlabelled.
        let out = parse_text(
            schema(),
            "event_time,account,category,amount,f0",
            "1767225600000,a,fuel,1,2\n",
        );
        let Parsed::Record(r) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(r.label, None);
    }

    #[test]
    fn optional_columns_may_be_absent() {
        let spec: SchemaSpec = toml::from_str(
            r#"
            key = "account"
            event_time = { field = "event_time" }
            [[numeric]]
            names = ["amount"]
            [[numeric]]
            name = "f0"
            optional = true
            [[categorical]]
            name = "category"
            optional = true
            "#,
        )
        .unwrap();
        let schema = Arc::new(Schema::new(&spec).unwrap());
        let out = parse_text(schema, "event_time,account,amount", "1767225600000,a,2.5\n");
        let Parsed::Record(r) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!((r.nums[0], r.missing, r.cats[0].as_str()), (2.5, 0b10, ""));
    }

    #[test]
    fn invalid_utf8_is_rejected_with_its_bytes() {
        let bytes = b"1767225600000,acct-\xff,fuel,1,0.5,1".to_vec();
        let mut c = chunk(Format::Csv);
        c.text = format!(
            "{}\n1767225600000,ok,fuel,1,0.5,1\n",
            String::from_utf8_lossy(&bytes)
        );
        c.undecodable = vec![(2, bytes.clone())];
        c.arrived_ms = 1_767_225_600_000;
        let mut out = Vec::new();
        parse_chunk(&mut Parser::new(schema()), &c, &mut HashSet::new(), |p| {
            out.push(p)
        });
        let Parsed::Reject(r) = &out[0] else { panic!() };
        assert_eq!(
            (r.reason.code(), r.raw_bytes.as_deref()),
            ("bad_encoding", Some(&bytes[..]))
        );
        assert!(r.raw.contains('\u{fffd}'));
        assert!(matches!(&out[1], Parsed::Record(r) if r.key == "ok" && r.pos.line == 3));
    }

    #[test]
    fn calendar_dates_are_checked() {
        let lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for (y, leap) in [
            (2023, false),
            (2024, true),
            (1900, false),
            (2000, true),
            (2100, false),
        ] {
            for (m, len) in lengths.iter().enumerate() {
                let len = if m == 1 && leap { 29 } else { *len };
                let m = m + 1;
                let last = format!("{y}-{m:02}-{len:02} 12:00:00");
                let past = format!("{y}-{m:02}-{:02} 12:00:00", len + 1);
                let t = parse_time(&last, TimeFormat::Datetime).unwrap_or_else(|| panic!("{last}"));
                assert_eq!(format_time(t, TimeFormat::Datetime), last);
                assert_eq!(parse_time(&past, TimeFormat::Datetime), None, "{past}");
                let rfc = format!("{}Z", last.replace(' ', "T"));
                assert_eq!(parse_time(&rfc, TimeFormat::Rfc3339), Some(t));
                let rfc = format!("{}Z", past.replace(' ', "T"));
                assert_eq!(parse_time(&rfc, TimeFormat::Rfc3339), None, "{rfc}");
            }
        }
        assert_eq!(
            parse_time("2026-02-31 00:00:00", TimeFormat::Datetime),
            None
        );
        assert_eq!(
            parse_time("2026-01-00 00:00:00", TimeFormat::Datetime),
            None
        );
        for (text, ok) in [
            ("2026-01-01T00:00:00+23:59", true),
            ("2026-01-01T00:00:00-23:59", true),
            ("2026-01-01T00:00:00+25:00", false),
            ("2026-01-01T00:00:00+01:60", false),
            ("2026-01-01T00:00Z", false),
            ("2026-01-01T00:00:00", false),
        ] {
            assert_eq!(
                parse_time(text, TimeFormat::Rfc3339).is_some(),
                ok,
                "{text}"
            );
        }
        for text in [
            "2026-01-01T00:00:00",
            "2026-01-01 00:00",
            "2026-01-01 00:00:00Z",
            "2026-01-01 00:00:00+01:00",
            "2026-01-01",
            "2026-01-01 00:00:00 ",
        ] {
            assert_eq!(parse_time(text, TimeFormat::Datetime), None, "{text}");
        }
        assert_eq!(
            parse_time("2026-01-01 00:00:00.5", TimeFormat::Datetime),
            Some(1_767_225_600_500)
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn fragment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(",".to_string()),
                Just("\"".to_string()),
                Just("\n".to_string()),
                Just("\r\n".to_string()),
                Just(" ".to_string()),
                Just("1767225600000".to_string()),
                Just("1e308".to_string()),
                Just("NaN".to_string()),
                Just("fuel".to_string()),
                Just("acct".to_string()),
                "[0-9.eE+-]{1,6}",
                any::<String>(),
            ]
        }

        /// Pieces of JSON objects, well and badly formed.
        fn json_token() -> impl Strategy<Value = String> {
            let t = |s: &str| Just(s.to_string());
            prop_oneof![
                4 => prop_oneof![t("\"event_time\""), t("\"account\""), t("\"amount\""), t("\"f0\""),
                    t("\"category\""), t("\"label\""), t("\"other\""), t("\"acc\\u006funt\""), t("\"\"")],
                4 => prop_oneof![t("0"), t("-0"), t("01"), t("1."), t("1.5"), t("-2.25e-3"), t("1e"), t("1E+400"),
                    t(".5"), t("-"), t("+1"), t("12"), t("0x1"), t("1e5x")],
                3 => prop_oneof![t("\"x\""), t("\"\""), t("\"a\\\"b\""), t("\"\t\""), t("\"é\""), t("\"\\u0041\""),
                    t("\"open")],
                2 => prop_oneof![t("true"), t("false"), t("null"), t("tru"), t("nullx"), t("NaN")],
                1 => prop_oneof![t("[1]"), t("{}"), t("{\"a\":1}"), t("[")],
                6 => prop_oneof![t(":"), t(","), t("{"), t("}"), t(" "), t("\t"), t("\r"), t("\u{a0}"), t("x")],
            ]
        }

        /// A line that is mostly an object: `{`, members, `}`, with noise.
        fn json_line() -> impl Strategy<Value = String> {
            let ws = prop_oneof![Just(""), Just(""), Just(" "), Just("\t"), Just("\n ")];
            let member = (
                json_token(),
                ws.clone(),
                json_token(),
                json_token(),
                json_token(),
            );
            (
                prop::collection::vec(member, 0..6),
                any::<bool>(),
                json_token(),
                ws,
            )
                .prop_map(|(members, tidy, tail, pad)| {
                    if tidy {
                        // Well formed but for what the tokens hold: `"k":v`, commas, one brace.
                        let body: Vec<String> = members
                            .iter()
                            .map(|(k, w, _, v, _)| format!("{w}{k}{w}:{w}{v}{w}"))
                            .collect();
                        format!("{pad}{{{}}}{pad}", body.join(","))
                    } else {
                        let body: String = members
                            .iter()
                            .map(|(k, w, c, v, sep)| format!("{k}{w}{c}{v}{sep}"))
                            .collect();
                        format!("{{{body}{tail}")
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

            /// What the hand-written reader accepts, serde_json accepts, with
            /// the same members and raw values; and a plain record is read by hand.
            #[test]
            fn hand_reader_agrees_with_serde_json(line in json_line()) {
                let parser = Parser::new(schema());
                let n = parser.json_names.len();
                let (mut fast, mut slow) = (vec![None; n], vec![None; n]);
                let (mut order_fast, mut order_slow) = (Vec::new(), Vec::new());
                let read_fast = Members { wanted: &parser.wanted, order: &mut order_fast, slots: &mut fast, line: &line }
                    .scan_flat();
                let mut de = serde_json::Deserializer::from_str(&line);
                let read_slow = serde::de::DeserializeSeed::deserialize(
                    Members { wanted: &parser.wanted, order: &mut order_slow, slots: &mut slow, line: &line },
                    &mut de,
                )
                .and_then(|()| de.end());
                if read_fast.is_some() {
                    prop_assert!(read_slow.is_ok(), "{line}: {read_slow:?}");
                    prop_assert_eq!(fast, slow, "{}", line);
                }
            }

            /// Any text: no panic, one parsed value per non-blank record,
            /// records cover the text, lines add up.
            #[test]
            fn every_record_is_accounted_for(parts in prop::collection::vec(fragment(), 0..40), csv in any::<bool>()) {
                let text: String = parts.concat();
                let recs: Vec<(u64, &str)> = records(&text, csv).collect();
                let lines = text.matches('\n').count() as u64 + u64::from(!text.is_empty() && !text.ends_with('\n'));
                let mut next = 0;
                for (offset, r) in &recs {
                    prop_assert_eq!(*offset, next);
                    next += r.matches('\n').count() as u64 + 1;
                }
                prop_assert_eq!(next, lines);
                let expected = recs.iter().filter(|(_, r)| !is_blank(r)).count();
                let mut c = chunk(if csv { Format::Csv } else { Format::Jsonl });
                c.text = text.clone();
                let mut out = Vec::new();
                let n = parse_chunk(&mut Parser::new(schema()), &c, &mut HashSet::new(), |p| out.push(p));
                prop_assert_eq!(n as usize, expected);
                prop_assert_eq!(out.len(), expected);
                // Through the cleaner's rules too: whatever was read, values are finite or missing.
                for p in &mut out {
                    if let Parsed::Record(r) = p {
                        prop_assert!(r.nums.iter().enumerate().all(|(i, v)| v.is_finite() || r.missing & (1 << i) != 0));
                    }
                }
            }

            /// Arbitrary bytes, lossily decoded as a source does: same guarantees.
            #[test]
            fn arbitrary_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
                let text = String::from_utf8_lossy(&bytes).to_string();
                let expected = records(&text, true).filter(|(_, r)| !is_blank(r)).count();
                let mut c = chunk(Format::Csv);
                c.text = text;
                let n = parse_chunk(&mut Parser::new(schema()), &c, &mut HashSet::new(), |_| {});
                prop_assert_eq!(n as usize, expected);
            }

            /// Any date-like text parses to a time that formats back to the same date, or not at all.
            #[test]
            fn datetimes_round_trip(y in 0i64..10000, m in 0u32..14, d in 0u32..33, h in 0u32..25) {
                let text = format!("{y:04}-{m:02}-{d:02} {h:02}:00:00");
                match parse_time(&text, TimeFormat::Datetime) {
                    Some(t) => prop_assert_eq!(format_time(t, TimeFormat::Datetime), text),
                    None => prop_assert!(m == 0 || m > 12 || d == 0 || d > days_in_month(y, m) || h > 23),
                }
            }
        }
    }
}

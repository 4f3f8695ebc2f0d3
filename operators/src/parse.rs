//! `parse`: schema-driven parsing of CSV and JSON lines into records.
//!
//! **In:** a stream of [`Chunk`]s (whole lines from one input), through a
//! pipeline pact: chunks are parsed on the worker whose source read them.
//! **Out:** one [`Parsed`] value per line — a [`Record`] or, for a line that
//! cannot be read (wrong field count, broken JSON, a number or time that does
//! not parse, a missing key) or that breaks a declared rule (a value outside
//! its range or vocabulary, a binary label not 0/1), a [`Reject`] with its
//! reason and raw text — and a side stream of [`Tally`]s counting the lines
//! read per epoch (the `input` column of the ledger). Rejects are not counted
//! here: they travel on to `clean`, which deduplicates them like any line.
//! **State:** none but a cache of column layouts per CSV header.
//!
//! CSV follows RFC 4180 within a line: fields may be quoted, with `""` for a
//! quote inside; a record never spans lines. Empty fields are missing values.

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
}

/// Parses lines against a [`Schema`]. Holds small per-header caches, so keep one per operator.
pub struct Parser {
    schema: Arc<Schema>,
    layout: Option<(Arc<[String]>, Layout)>,
    ranges: Vec<(usize, usize)>,
    unquoted: Vec<String>,
}

/// A field value on its way into a record.
enum Field<'a> {
    Text(&'a str),
    Missing,
}

impl Parser {
    /// A parser for `schema`.
    pub fn new(schema: Arc<Schema>) -> Self {
        Parser {
            schema,
            layout: None,
            ranges: Vec::new(),
            unquoted: Vec::new(),
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
            };
            self.layout = Some((header.clone(), layout));
        }
        &self.layout.as_ref().expect("set above").1
    }

    /// Parses one line (without its terminator) of `chunk` at position `pos`.
    pub fn parse_line(&mut self, chunk: &Chunk, line: &str, pos: Pos) -> Parsed {
        let lh = line_hash(line.as_bytes());
        let result = match chunk.format {
            Format::Csv => self.parse_csv(chunk, line, pos, lh),
            Format::Jsonl => self.parse_json(chunk, line, pos, lh),
        };
        let result = result.and_then(|record| match violation(&self.schema, &record) {
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
        let layout = self.layout_for(&header).clone();
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
        let s = &self.schema;
        let absent = [
            (layout.time, &s.event_time.field),
            (layout.key, &s.key),
            (layout.id, &s.id),
        ]
        .into_iter()
        .find(|(col, name)| col.is_none() && !name.is_empty());
        if let Some((_, missing)) = absent {
            return Err((
                Reason::MissingField,
                format!("header has no column `{missing}`"),
                None,
            ));
        }
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

    fn parse_json(
        &mut self,
        chunk: &Chunk,
        line: &str,
        pos: Pos,
        lh: u64,
    ) -> Result<Record, (Reason, String, Option<i64>)> {
        use std::borrow::Cow;
        use std::collections::HashMap;
        // Borrow keys and raw value text from the line: no tree of values is built.
        let obj: HashMap<Cow<str>, &serde_json::value::RawValue, crate::hash::FxBuild> =
            match serde_json::from_str(line) {
                Ok(o) => o,
                Err(e) => {
                    let message = if e.is_data() {
                        format!("expected a JSON object: {e}")
                    } else {
                        e.to_string()
                    };
                    return Err((Reason::BadJson, message, None));
                }
            };
        let mut owned: Vec<Option<Cow<str>>> =
            Vec::with_capacity(3 + self.schema.numeric.len() + self.schema.categorical.len());
        let s = &self.schema;
        let text = |name: &str| -> Result<Option<Cow<str>>, (Reason, String, Option<i64>)> {
            let Some(raw) = obj.get(name) else {
                return Ok(None);
            };
            let t = raw.get();
            match t.as_bytes().first() {
                Some(b'n') => Ok(None),
                Some(b't') => Ok(Some(Cow::Borrowed("1"))),
                Some(b'f') => Ok(Some(Cow::Borrowed("0"))),
                Some(b'"') if !t.contains('\\') => Ok(Some(Cow::Borrowed(&t[1..t.len() - 1]))),
                Some(b'"') => serde_json::from_str::<String>(t)
                    .map(|v| Some(Cow::Owned(v)))
                    .map_err(|e| (Reason::BadJson, e.to_string(), None)),
                Some(b'[') | Some(b'{') => Err((
                    Reason::BadJson,
                    format!(
                        "field `{name}`: expected a scalar, found {}",
                        if t.starts_with('[') {
                            "an array"
                        } else {
                            "an object"
                        }
                    ),
                    None,
                )),
                _ => Ok(Some(Cow::Borrowed(t))),
            }
        };
        owned.push(text(&s.event_time.field)?);
        owned.push(if s.key.is_empty() {
            None
        } else {
            text(&s.key)?
        });
        owned.push(match &s.label {
            Some(l) => text(&l.field)?,
            None => None,
        });
        owned.push(if s.id.is_empty() { None } else { text(&s.id)? });
        for f in &s.numeric {
            owned.push(text(&f.name)?);
        }
        for f in &s.categorical {
            owned.push(text(&f.name)?);
        }
        let field = |i: usize| -> Field<'_> {
            match owned[i].as_deref().map(str::trim) {
                None | Some("") => Field::Missing,
                Some(t) => Field::Text(t),
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

/// The first declared rule (range, vocabulary, required value) `record` breaks, if any.
pub fn violation(schema: &Schema, record: &Record) -> Option<(Reason, String)> {
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
        if f.min.is_some_and(|lo| v < lo) || f.max.is_some_and(|hi| v > hi) {
            let lo = f.min.map_or("-inf".to_string(), |x| x.to_string());
            let hi = f.max.map_or("+inf".to_string(), |x| x.to_string());
            return Some((
                Reason::OutOfRange,
                format!("`{}` = {v} is outside [{lo}, {hi}]", f.name),
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
) -> Result<Record, (Reason, String, Option<i64>)> {
    let tf = &schema.event_time;
    let event_time = match time {
        // A stream without event time (a label stream that says only what, not when).
        Field::Missing if tf.field.is_empty() => i64::MIN,
        Field::Missing => {
            return Err((Reason::BadTime, format!("`{}` is missing", tf.field), None))
        }
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
        })?,
    };
    let key = match key {
        Field::Missing if schema.key.is_empty() => chunk.source.to_string(),
        Field::Missing => {
            return Err((
                Reason::MissingField,
                format!("key `{}` is missing", schema.key),
                Some(event_time),
            ))
        }
        Field::Text(k) => k.to_string(),
    };
    let id = match id {
        Field::Missing if schema.id.is_empty() => None,
        Field::Missing => {
            return Err((
                Reason::MissingField,
                format!("id `{}` is missing", schema.id),
                Some(event_time),
            ))
        }
        Field::Text(v) => Some(v.to_string()),
    };
    let label = match (label, &schema.label) {
        (Field::Text(t), Some(spec)) => {
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
            Some(v)
        }
        _ => None,
    };
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
        nums: values,
        missing,
        cats,
        arrived_ms: chunk.arrived_ms,
    })
}

/// Splits one CSV line with quoted fields (RFC 4180 within a line).
fn split_quoted(line: &str, out: &mut Vec<String>) -> Result<(), String> {
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
        } else if c == ',' {
            out.push(std::mem::take(&mut field));
            was_quoted = false;
        } else if c == '"' && field.trim().is_empty() && !was_quoted {
            field.clear();
            in_quotes = true;
            was_quoted = true;
        } else {
            field.push(c);
        }
    }
    if in_quotes {
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

fn parse_datetime(text: &str, need_zone: bool) -> Option<i64> {
    let b = text.as_bytes();
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo as u32, d as u32) * 86_400_000;
    let mut rest = &b[10..];
    if rest.is_empty() {
        return (!need_zone).then_some(ms);
    }
    if rest[0] != b'T' && rest[0] != b't' && rest[0] != b' ' {
        return None;
    }
    rest = &rest[1..];
    if rest.len() < 5 || rest[2] != b':' {
        return None;
    }
    let (h, mi) = (num(&rest[0..2])?, num(&rest[3..5])?);
    rest = &rest[5..];
    let mut s = 0;
    if rest.first() == Some(&b':') {
        s = num(rest.get(1..3)?)?;
        rest = &rest[3..];
    }
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    ms += (h * 3600 + mi * 60 + s) * 1000;
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
        [] => (!need_zone).then_some(ms),
        [b'Z'] | [b'z'] => Some(ms),
        [sign @ (b'+' | b'-'), zone @ ..] => {
            let (zh, zm) = match zone {
                [a, b, b':', c, d] | [a, b, c, d] => (num(&[*a, *b])?, num(&[*c, *d])?),
                [a, b] => (num(&[*a, *b])?, 0),
                _ => return None,
            };
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
    ///     r#"{"key": "account", "event_time": {"field": "t"}, "numeric": [{"name": "amount"}]}"#).unwrap();
    /// let schema = Arc::new(Schema::new(&spec).unwrap());
    /// let chunk = Chunk {
    ///     source: "a.csv".into(), input: 1, first_line: 2, format: Format::Csv,
    ///     header: Some(vec!["t".to_string(), "account".into(), "amount".into()].into()),
    ///     text: "1000,acct-1,12.5\n2000,acct-2,oops\n".into(), arrived_ms: 0, positions: None,
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
        let mut parser = Parser::new(schema);
        builder.build(move |_caps| {
            move |_frontiers| {
                let mut parsed_handle = parsed_out.activate();
                let mut tally_handle = tally_out.activate();
                input.for_each_stamp(|cap, data| {
                    let mut session = parsed_handle.session(&cap);
                    let mut lines = 0u64;
                    for chunk in data.flat_map(|d| d.drain(..)) {
                        let mut pos = Pos {
                            input: chunk.input,
                            line: chunk.first_line,
                        };
                        for (i, line) in chunk.text.lines().enumerate() {
                            if let Some(p) = &chunk.positions {
                                pos.line = p[i];
                            }
                            // Blank lines are not records (sources do not count them either).
                            if !line.trim().is_empty() {
                                session.give(parser.parse_line(&chunk, line, pos));
                                lines += 1;
                            }
                            pos.line += 1;
                        }
                    }
                    tally_handle.session(&cap).give(Tally {
                        input: lines,
                        ..Tally::default()
                    });
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
            event_time = { field = "event_time" }
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
}

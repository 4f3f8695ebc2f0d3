//! The declared shape of a stream: event time, key, label, numeric and
//! categorical fields, with the rules `clean` enforces.
//!
//! The `*Spec` types deserialize straight from the topology file (the
//! `[schema]` table), with unknown keys rejected; [`Schema::new`] checks them
//! and compiles lookups the operators use on the hot path.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// `[schema]` in a topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    /// The event-time field and its format.
    pub event_time: EventTimeSpec,
    /// The key field (e.g. `account`): keyed state is partitioned on it.
    /// Left out, every input (landed file, Kafka partition) is its own key:
    /// one series per file.
    #[serde(default)]
    pub key: String,
    /// The record id field (e.g. `tx_id`): what labels arriving later on
    /// their own source (`[source.labels]`) are joined by. Optional.
    #[serde(default)]
    pub id: String,
    /// The label field, if the stream carries labels.
    #[serde(default)]
    pub label: Option<LabelSpec>,
    /// Numeric fields, in the order features and tables see them.
    #[serde(default)]
    pub numeric: Vec<NumericSpec>,
    /// Categorical fields.
    #[serde(default)]
    pub categorical: Vec<CategoricalSpec>,
}

/// `[schema.event_time]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeSpec {
    /// Field name.
    pub field: String,
    /// How the value is written.
    #[serde(default)]
    pub format: TimeFormat,
    /// An event time later than the record's arrival (a landed file's
    /// modification time, a Kafka message's timestamp; the wall clock when
    /// the arrival is unknown) by more than this is rejected as `bad_time`:
    /// a clock in the future, a time in microseconds read as milliseconds.
    #[serde(default = "default_max_future_ms")]
    pub max_future_ms: i64,
    /// An event time earlier than the record's arrival by more than this is
    /// rejected as `bad_time` (default 50 years: a `0` or `-1` placeholder, a
    /// time in seconds read as milliseconds). Raise it to replay older history.
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: i64,
}

fn default_max_future_ms() -> i64 {
    86_400_000
}

fn default_max_age_ms() -> i64 {
    50 * 365 * 86_400_000 + 12 * 86_400_000
}

/// The magnitude beyond which a numeric value is out of range whatever the
/// field declares: the squares and sums of squares that features, scalers
/// and monitors keep would overflow to infinity beyond about 1e150, and sums
/// of many such squares well before; 1e100 leaves room for both.
pub const MAX_MAGNITUDE: f64 = 1e100;

impl EventTimeSpec {
    /// Why `t` is not a plausible event time for a record that arrived at
    /// `arrived_ms` (`<= 0`: unknown, the wall clock is used), if it is not.
    pub fn implausible(&self, t: i64, arrived_ms: i64) -> Option<String> {
        let now = if arrived_ms > 0 {
            arrived_ms
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let (lo, hi) = (
            now.saturating_sub(self.max_age_ms.max(0)),
            now.saturating_add(self.max_future_ms.max(0)),
        );
        if t > hi {
            Some(format!(
                "`{}` = {t} ms is more than {} ms after the record arrived (`max_future_ms`)",
                self.field, self.max_future_ms
            ))
        } else if t < lo {
            Some(format!(
                "`{}` = {t} ms is more than {} ms before the record arrived (`max_age_ms`)",
                self.field, self.max_age_ms
            ))
        } else {
            None
        }
    }
}

/// How an event time is written in the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Integer milliseconds since the Unix epoch.
    #[default]
    EpochMs,
    /// Seconds since the Unix epoch (integer or decimal).
    EpochS,
    /// RFC 3339, e.g. `2026-01-01T00:00:00Z` or with an offset.
    Rfc3339,
    /// `YYYY-MM-DD HH:MM:SS[.fff]` (or with a `T`), taken as UTC.
    Datetime,
}

/// `[schema.label]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// Field name.
    pub field: String,
    /// What the label is.
    #[serde(default)]
    pub kind: LabelKind,
}

/// What a label means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// 0 or 1; anything else is rejected as `invalid_label`.
    #[default]
    Binary,
    /// Any finite number.
    Regression,
}

/// One `[[schema.numeric]]` entry. `names` declares several fields with the same rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericSpec {
    /// Field name (or use `names`).
    #[serde(default)]
    pub name: Option<String>,
    /// Several field names sharing these rules.
    #[serde(default)]
    pub names: Vec<String>,
    /// Smallest valid value (inclusive).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest valid value (inclusive).
    #[serde(default)]
    pub max: Option<f64>,
    /// What to do with a missing value.
    #[serde(default)]
    pub impute: Impute,
    /// The value used when `impute = "constant"`.
    #[serde(default)]
    pub impute_value: Option<f64>,
    /// Clamp a value outside `[min, max]` (or beyond ±1e100) to the bound
    /// instead of rejecting the record as `out_of_range`.
    #[serde(default)]
    pub clamp: bool,
    /// The column may be absent from a CSV header (it is then imputed like a
    /// missing value); by default a header without it rejects the whole
    /// file as `bad_header`.
    #[serde(default)]
    pub optional: bool,
}

/// How a missing numeric value is filled in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    /// The running mean of the field over earlier clean records (0 before any).
    #[default]
    Mean,
    /// The constant in `impute_value`.
    Constant,
    /// A missing value rejects the record (`missing_field`).
    Reject,
}

/// One `[[schema.categorical]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalSpec {
    /// Field name.
    pub name: String,
    /// The allowed values; a value outside it is rejected as `unknown_category`.
    #[serde(default)]
    pub vocabulary: Option<Vec<String>>,
    /// Without a vocabulary: hash values into this many buckets for features.
    #[serde(default)]
    pub hash_buckets: Option<u32>,
    /// The column may be absent from a CSV header (the value is then
    /// missing); by default a header without it rejects the whole file as
    /// `bad_header`.
    #[serde(default)]
    pub optional: bool,
}

/// A compiled numeric field.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericField {
    /// Field name.
    pub name: String,
    /// Inclusive lower bound.
    pub min: Option<f64>,
    /// Inclusive upper bound.
    pub max: Option<f64>,
    /// Imputation rule.
    pub impute: Impute,
    /// Constant for [`Impute::Constant`].
    pub impute_value: f64,
    /// Clamp out-of-range values to the bound instead of rejecting.
    pub clamp: bool,
    /// May be absent from a CSV header.
    pub optional: bool,
}

impl NumericField {
    /// The bounds a value must lie in: the declared ones within ±[`MAX_MAGNITUDE`].
    pub fn bounds(&self) -> (f64, f64) {
        (
            self.min.unwrap_or(-MAX_MAGNITUDE).max(-MAX_MAGNITUDE),
            self.max.unwrap_or(MAX_MAGNITUDE).min(MAX_MAGNITUDE),
        )
    }
}

/// A compiled categorical field.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoricalField {
    /// Field name.
    pub name: String,
    /// Allowed values, in declared order (their one-hot index).
    pub vocabulary: Option<Vec<String>>,
    /// Value → index in `vocabulary`.
    pub index: HashMap<String, u32, crate::hash::FxBuild>,
    /// Hash buckets when there is no vocabulary.
    pub hash_buckets: Option<u32>,
    /// May be absent from a CSV header.
    pub optional: bool,
}

impl CategoricalField {
    /// Number of one-hot slots this field occupies.
    pub fn width(&self) -> u32 {
        match (&self.vocabulary, self.hash_buckets) {
            (Some(v), _) => v.len() as u32,
            (None, Some(b)) => b,
            (None, None) => 0,
        }
    }

    /// The one-hot slot of `value`, if it has one.
    pub fn slot(&self, value: &str) -> Option<u32> {
        if self.vocabulary.is_some() {
            self.index.get(value).copied()
        } else {
            self.hash_buckets
                .map(|b| (crate::hash::bytes_hash(value.as_bytes()) % u64::from(b.max(1))) as u32)
        }
    }
}

/// A checked schema, shared by parse, clean and featurize.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    /// The event-time field.
    pub event_time: EventTimeSpec,
    /// The key field; empty: the input's name is the key.
    pub key: String,
    /// The record id field; empty: records have no id.
    pub id: String,
    /// The label, if any.
    pub label: Option<LabelSpec>,
    /// Numeric fields in order.
    pub numeric: Vec<NumericField>,
    /// Categorical fields in order.
    pub categorical: Vec<CategoricalField>,
}

/// A schema that cannot be used, with the offending key path.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// Key path in the topology, e.g. `schema.numeric[2].name`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.into(),
        message: message.into(),
    }
}

impl Schema {
    /// The key's column name in the lake: the key field, or `series` when each input is its own key.
    pub fn key_column(&self) -> &str {
        if self.key.is_empty() {
            "series"
        } else {
            &self.key
        }
    }

    /// Checks a spec: names present and unique, ranges ordered, vocabularies
    /// non-empty, at most 64 numeric fields (the imputation mask is a `u64`).
    /// Fields are checked in declaration order (event time, key, id, label,
    /// numeric, categorical); the first error found is the one returned.
    pub fn new(spec: &SchemaSpec) -> Result<Schema, SchemaError> {
        let mut names = FieldNames::default();
        names.claim(&spec.event_time.field, "schema.event_time.field".into())?;
        if !spec.key.is_empty() {
            names.claim(&spec.key, "schema.key".into())?;
        }
        if !spec.id.is_empty() {
            names.claim(&spec.id, "schema.id".into())?;
        }
        if let Some(label) = &spec.label {
            names.claim(&label.field, "schema.label.field".into())?;
        }
        let numeric = numeric_fields(&spec.numeric, &mut names)?;
        let categorical = (spec.categorical.iter().enumerate())
            .map(|(i, c)| categorical_field(i, c, &mut names))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schema {
            event_time: spec.event_time.clone(),
            key: spec.key.clone(),
            id: spec.id.clone(),
            label: spec.label.clone(),
            numeric,
            categorical,
        })
    }

    /// Index of a numeric field by name.
    pub fn numeric_index(&self, name: &str) -> Option<usize> {
        self.numeric.iter().position(|f| f.name == name)
    }

    /// Index of a categorical field by name.
    pub fn categorical_index(&self, name: &str) -> Option<usize> {
        self.categorical.iter().position(|f| f.name == name)
    }
}

/// The field names a schema has declared so far, each with the key path
/// that declared it.
#[derive(Default)]
struct FieldNames {
    seen: HashMap<String, String>,
}

impl FieldNames {
    /// Declares `name` at `path`: it must be non-empty and not declared before.
    fn claim(&mut self, name: &str, path: String) -> Result<(), SchemaError> {
        if name.is_empty() {
            return Err(err(path, "expected a field name, found an empty string"));
        }
        if let Some(first) = self.seen.insert(name.to_string(), path.clone()) {
            return Err(err(
                path,
                format!("field `{name}` is already declared at {first}"),
            ));
        }
        Ok(())
    }
}

/// The numeric fields of `[[schema.numeric]]` entries, in order (an entry
/// with `names` declares several alike); at most 64 of them.
fn numeric_fields(
    specs: &[NumericSpec],
    names: &mut FieldNames,
) -> Result<Vec<NumericField>, SchemaError> {
    let mut numeric = Vec::new();
    for (i, n) in specs.iter().enumerate() {
        numeric_entry(i, n, names, &mut numeric)?;
    }
    if numeric.len() > 64 {
        return Err(err(
            "schema.numeric",
            format!(
                "at most 64 numeric fields are supported, found {}",
                numeric.len()
            ),
        ));
    }
    Ok(numeric)
}

/// Checks `schema.numeric[i]` (`name` or `names`, its range, its
/// imputation) and appends its fields to `out`.
fn numeric_entry(
    i: usize,
    n: &NumericSpec,
    names: &mut FieldNames,
    out: &mut Vec<NumericField>,
) -> Result<(), SchemaError> {
    let path = format!("schema.numeric[{i}]");
    let entry_names: Vec<String> = match (&n.name, n.names.is_empty()) {
        (Some(name), true) => vec![name.clone()],
        (None, false) => n.names.clone(),
        (Some(_), false) => return Err(err(path, "give either `name` or `names`, not both")),
        (None, true) => return Err(err(path, "expected `name = \"...\"` or `names = [...]`")),
    };
    if let (Some(lo), Some(hi)) = (n.min, n.max) {
        if lo > hi {
            return Err(err(
                format!("{path}.min"),
                format!("min ({lo}) is greater than max ({hi})"),
            ));
        }
    }
    let impute_value = match (n.impute, n.impute_value) {
        (Impute::Constant, Some(v)) => v,
        (Impute::Constant, None) => {
            return Err(err(
                format!("{path}.impute_value"),
                "`impute = \"constant\"` needs `impute_value = <number>`",
            ))
        }
        (_, Some(_)) => {
            return Err(err(
                format!("{path}.impute_value"),
                "`impute_value` is only used with `impute = \"constant\"`",
            ))
        }
        (_, None) => 0.0,
    };
    for name in entry_names {
        names.claim(&name, format!("{path}.name"))?;
        out.push(NumericField {
            name,
            min: n.min,
            max: n.max,
            impute: n.impute,
            impute_value,
            clamp: n.clamp,
            optional: n.optional,
        });
    }
    Ok(())
}

/// Checks `schema.categorical[i]` (its name; a non-empty vocabulary of
/// distinct values, or a positive number of hash buckets, not both) and
/// compiles its value index.
fn categorical_field(
    i: usize,
    c: &CategoricalSpec,
    names: &mut FieldNames,
) -> Result<CategoricalField, SchemaError> {
    let path = format!("schema.categorical[{i}]");
    names.claim(&c.name, format!("{path}.name"))?;
    let mut index = HashMap::default();
    if let Some(vocab) = &c.vocabulary {
        if vocab.is_empty() {
            return Err(err(
                format!("{path}.vocabulary"),
                "expected at least one value",
            ));
        }
        if c.hash_buckets.is_some() {
            return Err(err(
                format!("{path}.hash_buckets"),
                "give either `vocabulary` or `hash_buckets`, not both",
            ));
        }
        for (j, v) in vocab.iter().enumerate() {
            if index.insert(v.clone(), j as u32).is_some() {
                return Err(err(
                    format!("{path}.vocabulary[{j}]"),
                    format!("value `{v}` is listed twice"),
                ));
            }
        }
    }
    if c.hash_buckets == Some(0) {
        return Err(err(
            format!("{path}.hash_buckets"),
            "expected a positive number of buckets",
        ));
    }
    Ok(CategoricalField {
        name: c.name.clone(),
        vocabulary: c.vocabulary.clone(),
        index,
        hash_buckets: c.hash_buckets,
        optional: c.optional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SchemaSpec {
        toml::from_str(
            r#"
            key = "account"
            event_time = { field = "event_time" }
            label = { field = "label" }
            [[numeric]]
            name = "amount"
            min = 0.0
            [[numeric]]
            names = ["f0", "f1"]
            [[categorical]]
            name = "category"
            vocabulary = ["a", "b"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn compiles_names_in_order() {
        let s = Schema::new(&spec()).unwrap();
        let names: Vec<_> = s.numeric.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["amount", "f0", "f1"]);
        assert_eq!(s.categorical[0].slot("b"), Some(1));
        assert_eq!(s.categorical[0].slot("z"), None);
    }

    #[test]
    fn duplicate_field_names_point_at_both_declarations() {
        let mut sp = spec();
        sp.numeric[1].names = vec!["f0".into(), "amount".into()];
        let e = Schema::new(&sp).unwrap_err();
        assert_eq!(e.path, "schema.numeric[1].name");
        assert!(
            e.message
                .contains("already declared at schema.numeric[0].name"),
            "{e}"
        );
    }

    #[test]
    fn constant_imputation_needs_a_value() {
        let mut sp = spec();
        sp.numeric[0].impute = Impute::Constant;
        assert_eq!(
            Schema::new(&sp).unwrap_err().path,
            "schema.numeric[0].impute_value"
        );
    }
}

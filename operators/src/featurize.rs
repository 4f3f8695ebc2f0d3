//! `featurize`: incremental per-key features, derived columns and categoricals.
//!
//! **In:** clean [`Record`]s, already on the worker that owns their key (the
//! output of `clean`), through a pipeline pact, in deterministic order.
//! **Out:** one [`Example`] per record: a dense vector (in the order the
//! `[[features]]` entries are declared) and the active sparse slots of one-hot
//! and hashed categoricals.
//! **Order:** an epoch is processed once the input frontier has passed it, so
//! a snapshot after it holds exactly the state as of that epoch.
//! **State** ([`KeyState`] per key; a [`Snapshot`] after each processed epoch
//! when checkpointing, restored from one at construction): the count
//! and, for every field a per-key feature reads, the running mean and the sum
//! of squared deviations (Welford). A record updates its key's state before
//! its features are read, so `key_count` is 1 for a key's first record.
//!
//! Standardisation is not done here: it belongs to the model (`score`), which
//! must standardise with the statistics from before a record when predicting
//! and after it when learning.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

use crate::clean::PreHashed;
use crate::detect::series::SeriesDetector;
use crate::epochs::{decode, encode, EpochStash, Snapshot, StateError, StateIo};
use crate::record::{Example, Record};
use crate::schema::{Schema, SchemaError, MAX_MAGNITUDE};
use crate::Epoch;

/// One `[[features]]` entry in a topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Feature name (defaults to the field name for `value`, `one_hot` and `hashed`).
    #[serde(default)]
    pub name: Option<String>,
    /// What the feature computes.
    pub kind: FeatureKind,
    /// The input field it reads (not used by `key_count`).
    #[serde(default)]
    pub field: Option<String>,
    /// Buckets for `hashed` (defaults to the field's `hash_buckets`).
    #[serde(default)]
    pub buckets: Option<u32>,
    /// Whether the model standardises this dense feature (default true).
    #[serde(default = "yes")]
    pub standardize: bool,
    /// `anomaly` only: how many unremarkable values end an anomaly episode,
    /// after which a new anomaly scores in full again (default 32; see
    /// [`SeriesDetector`]).
    #[serde(default)]
    pub window: Option<usize>,
}

fn yes() -> bool {
    true
}

/// The kinds of feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A numeric field as it is (after imputation).
    Value,
    /// `ln(1 + x)` of a numeric field (x > -1; else 0).
    Log1p,
    /// Records seen so far for this record's key, this one included.
    KeyCount,
    /// Running mean of a numeric field for this key, this record included.
    KeyMean,
    /// Running (population) standard deviation of a numeric field for this key.
    KeyStd,
    /// The field's value divided by its key's running mean (0 if the mean is ≤ 0).
    RatioToKeyMean,
    /// The field's value minus its key's running mean, over the key's std (0 if std is 0).
    KeyZscore,
    /// One sparse slot per vocabulary value of a categorical field.
    OneHot,
    /// A categorical field hashed into `buckets` sparse slots.
    Hashed,
    /// How anomalous the field's value is against the key's recent values, in
    /// `[0, 1]`, from values up to this one ([`SeriesDetector`]).
    Anomaly,
}

#[derive(Clone, Debug, PartialEq)]
enum Compiled {
    Value(usize),
    Log1p(usize),
    KeyCount,
    KeyMean(usize),
    KeyStd(usize),
    Ratio {
        field: usize,
        tracked: usize,
    },
    Zscore {
        field: usize,
        tracked: usize,
    },
    /// The `k`-th anomaly detector's score.
    Anomaly(usize),
}

#[derive(Clone, Debug, PartialEq)]
struct SparseSlots {
    field: usize,
    offset: u32,
    buckets: Option<u32>,
}

/// Checked feature definitions for one schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    schema: Arc<Schema>,
    dense: Vec<Compiled>,
    /// Names of the dense features, in vector order.
    pub dense_names: Vec<String>,
    /// Per dense feature: whether the model standardises it.
    pub standardize: Vec<bool>,
    sparse: Vec<SparseSlots>,
    /// Names of the sparse slots, in slot order (`field=value` or `field#bucket`).
    pub sparse_names: Vec<String>,
    /// Numeric fields (schema indices) whose per-key statistics are kept.
    tracked: Vec<usize>,
    /// Per anomaly detector: the numeric field it reads and its window.
    anomalies: Vec<(usize, usize)>,
}

impl Features {
    /// Checks `specs` against `schema`.
    pub fn new(schema: Arc<Schema>, specs: &[FeatureSpec]) -> Result<Features, SchemaError> {
        let mut f = Features {
            schema: schema.clone(),
            dense: Vec::new(),
            dense_names: Vec::new(),
            standardize: Vec::new(),
            sparse: Vec::new(),
            sparse_names: Vec::new(),
            tracked: Vec::new(),
            anomalies: Vec::new(),
        };
        let mut names = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let path = format!("features[{i}]");
            let e = |key: &str, message: String| SchemaError {
                path: format!("{path}.{key}"),
                message,
            };
            let field = spec.field.as_deref();
            let numeric = |f: Option<&str>| -> Result<usize, SchemaError> {
                let name = f.ok_or_else(|| {
                    e(
                        "field",
                        "expected the numeric field this feature reads".into(),
                    )
                })?;
                schema.numeric_index(name).ok_or_else(|| {
                    e(
                        "field",
                        format!(
                            "`{name}` is not a numeric field of the schema (declared: {})",
                            list(schema.numeric.iter().map(|n| &n.name))
                        ),
                    )
                })
            };
            let mut track = |j: usize| {
                if !f.tracked.contains(&j) {
                    f.tracked.push(j);
                }
                f.tracked.iter().position(|t| *t == j).expect("just pushed")
            };
            let dense = match spec.kind {
                FeatureKind::Value => Some(Compiled::Value(numeric(field)?)),
                FeatureKind::Log1p => Some(Compiled::Log1p(numeric(field)?)),
                FeatureKind::KeyCount => {
                    if field.is_some() {
                        return Err(e("field", "`key_count` reads no field".into()));
                    }
                    Some(Compiled::KeyCount)
                }
                FeatureKind::KeyMean => Some(Compiled::KeyMean(track(numeric(field)?))),
                FeatureKind::KeyStd => Some(Compiled::KeyStd(track(numeric(field)?))),
                FeatureKind::RatioToKeyMean => {
                    let j = numeric(field)?;
                    Some(Compiled::Ratio {
                        field: j,
                        tracked: track(j),
                    })
                }
                FeatureKind::KeyZscore => {
                    let j = numeric(field)?;
                    Some(Compiled::Zscore {
                        field: j,
                        tracked: track(j),
                    })
                }
                FeatureKind::Anomaly => {
                    let window = spec.window.unwrap_or(32);
                    if window < 1 {
                        return Err(e(
                            "window",
                            format!("expected at least 1 value, found {window}"),
                        ));
                    }
                    f.anomalies.push((numeric(field)?, window));
                    Some(Compiled::Anomaly(f.anomalies.len() - 1))
                }
                FeatureKind::OneHot | FeatureKind::Hashed => None,
            };
            if spec.window.is_some() && spec.kind != FeatureKind::Anomaly {
                return Err(e("window", "only `anomaly` features take a window".into()));
            }
            let default_name = match spec.kind {
                FeatureKind::KeyCount => Some("key_count".to_string()),
                _ => field.map(str::to_string),
            };
            let name = spec
                .name
                .clone()
                .or(default_name)
                .ok_or_else(|| e("name", "expected a feature name".into()))?;
            if let Some(first) = names.insert(name.clone(), i) {
                return Err(e(
                    "name",
                    format!("feature `{name}` is already defined by features[{first}]"),
                ));
            }
            match dense {
                Some(c) => {
                    f.dense.push(c);
                    f.dense_names.push(name);
                    f.standardize.push(spec.standardize);
                }
                None => {
                    let fname = field.ok_or_else(|| {
                        e(
                            "field",
                            "expected the categorical field this feature reads".into(),
                        )
                    })?;
                    let j = schema.categorical_index(fname).ok_or_else(|| {
                        e(
                            "field",
                            format!(
                                "`{fname}` is not a categorical field of the schema (declared: {})",
                                list(schema.categorical.iter().map(|c| &c.name))
                            ),
                        )
                    })?;
                    let cat = &schema.categorical[j];
                    let offset = f.sparse_names.len() as u32;
                    let buckets = match spec.kind {
                        FeatureKind::OneHot => {
                            let vocab = cat.vocabulary.as_ref().ok_or_else(|| {
                                e("kind", format!("`one_hot` needs a vocabulary on `{fname}`; use `kind = \"hashed\"` for open-ended values"))
                            })?;
                            f.sparse_names
                                .extend(vocab.iter().map(|v| format!("{name}={v}")));
                            None
                        }
                        _ => {
                            let b = spec.buckets.or(cat.hash_buckets).ok_or_else(|| {
                                e("buckets", format!("`hashed` needs `buckets` here or `hash_buckets` on `{fname}`"))
                            })?;
                            if b == 0 {
                                return Err(e(
                                    "buckets",
                                    "expected a positive number of buckets".into(),
                                ));
                            }
                            f.sparse_names.extend((0..b).map(|k| format!("{name}#{k}")));
                            Some(b)
                        }
                    };
                    f.sparse.push(SparseSlots {
                        field: j,
                        offset,
                        buckets,
                    });
                }
            }
        }
        Ok(f)
    }

    /// Length of the dense vector.
    pub fn dense_len(&self) -> usize {
        self.dense.len()
    }

    /// Number of sparse slots.
    pub fn sparse_len(&self) -> usize {
        self.sparse_names.len()
    }

    /// Updates `state` with `record` and computes its features.
    pub fn compute(&self, state: &mut KeyState, record: Record) -> Example {
        state.count += 1;
        if state.mean.len() < self.tracked.len() {
            state.mean.resize(self.tracked.len(), 0.0);
            state.m2.resize(self.tracked.len(), 0.0);
        }
        let n = state.count as f64;
        for (t, &j) in self.tracked.iter().enumerate() {
            let x = record.nums[j];
            let delta = x - state.mean[t];
            state.mean[t] += delta / n;
            state.m2[t] += delta * (x - state.mean[t]);
        }
        if state.detectors.len() < self.anomalies.len() {
            let have = state.detectors.len();
            state.detectors.extend(
                self.anomalies[have..]
                    .iter()
                    .map(|(_, w)| SeriesDetector::new(*w)),
            );
        }
        let anomaly: Vec<f64> = self
            .anomalies
            .iter()
            .zip(state.detectors.iter_mut())
            .map(|((j, _), d)| d.update(record.event_time, record.nums[*j]))
            .collect();
        let std = |t: usize| (state.m2[t] / n).max(0.0).sqrt();
        let dense = self
            .dense
            .iter()
            .map(|c| match *c {
                Compiled::Value(j) => record.nums[j],
                Compiled::Log1p(j) => {
                    let x = record.nums[j];
                    if x > -1.0 {
                        x.ln_1p()
                    } else {
                        0.0
                    }
                }
                Compiled::KeyCount => n,
                Compiled::KeyMean(t) => state.mean[t],
                Compiled::KeyStd(t) => std(t),
                Compiled::Ratio { field, tracked } => {
                    let m = state.mean[tracked];
                    if m > 0.0 {
                        record.nums[field] / m
                    } else {
                        0.0
                    }
                }
                Compiled::Anomaly(k) => anomaly[k],
                Compiled::Zscore { field, tracked } => {
                    let s = std(tracked);
                    if s > 0.0 {
                        (record.nums[field] - state.mean[tracked]) / s
                    } else {
                        0.0
                    }
                }
            })
            .map(finite)
            .collect::<Vec<f64>>();
        let sparse = self
            .sparse
            .iter()
            .filter_map(|s| {
                let v = &record.cats[s.field];
                if v.is_empty() {
                    return None;
                }
                let cat = &self.schema.categorical[s.field];
                let slot = match s.buckets {
                    None => cat.index.get(v.as_str()).copied()?,
                    Some(b) => (crate::hash::bytes_hash(v.as_bytes()) % u64::from(b)) as u32,
                };
                Some(s.offset + slot)
            })
            .collect();
        Example {
            record,
            dense,
            sparse,
        }
    }
}

/// A feature value the model can use whatever the input: a ratio to a
/// vanishing mean or a statistic that overflowed is held at ±[`MAX_MAGNITUDE`],
/// and a value that is not a number (0/0) counts as 0, so no learner or
/// scaler ever takes in a NaN or an infinity.
fn finite(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE)
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Per-key running statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    /// Records seen for the key.
    pub count: u64,
    /// Running mean per tracked field.
    pub mean: Vec<f64>,
    /// Sum of squared deviations per tracked field (Welford's M2).
    pub m2: Vec<f64>,
    /// Per `anomaly` feature: the key's series detector.
    #[serde(default)]
    pub detectors: Vec<SeriesDetector>,
}

/// All keys' state on one worker, keyed by the key's stable hash.
pub type KeyStates = HashMap<u64, KeyState, BuildHasherDefault<PreHashed>>;

/// The `featurize` operator. See the module docs.
pub trait Featurize<'scope> {
    /// Computes features for every record, updating per-key state; returns the
    /// examples and the state snapshots.
    #[allow(clippy::type_complexity)]
    fn featurize(
        self,
        step_id: &str,
        features: Arc<Features>,
        state: StateIo,
    ) -> Result<
        (
            Stream<'scope, Epoch, Vec<Example>>,
            Stream<'scope, Epoch, Vec<Snapshot>>,
        ),
        StateError,
    >;
}

impl<'scope> Featurize<'scope> for Stream<'scope, Epoch, Vec<Record>> {
    fn featurize(
        self,
        step_id: &str,
        features: Arc<Features>,
        state: StateIo,
    ) -> Result<
        (
            Stream<'scope, Epoch, Vec<Example>>,
            Stream<'scope, Epoch, Vec<Snapshot>>,
        ),
        StateError,
    > {
        let worker = self.scope().index();
        let mut states: KeyStates = match &state.restore {
            Some(bytes) => decode(step_id, bytes)?,
            None => KeyStates::default(),
        };
        let mut builder = OperatorBuilder::new(step_id.to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (examples_out, examples) = builder.new_output();
        let (snap_out, snapshots) = builder.new_output();
        let mut examples_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Example>>>::from(examples_out);
        let mut snap_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Snapshot>>>::from(snap_out);
        let step = step_id.to_string();
        builder.build(move |_caps| {
            let mut stash = EpochStash::new(2);
            move |frontiers| {
                stash.ingest(&mut input);
                let mut examples_handle = examples_out.activate();
                let mut snap_handle = snap_out.activate();
                while let Some((epoch, caps, batch)) = stash.next_ready(&frontiers[0]) {
                    let mut session = examples_handle.session(&caps[0]);
                    for record in batch {
                        let state = states.entry(record.key_hash).or_default();
                        session.give(features.compute(state, record));
                    }
                    if state.snapshot {
                        snap_handle.session(&caps[1]).give(Snapshot {
                            step_id: step.clone(),
                            worker,
                            epoch,
                            bytes: encode(&states),
                        });
                    }
                }
            }
        });
        Ok((examples, snapshots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Pos;
    use crate::schema::SchemaSpec;

    fn features(extra: &str) -> Result<Features, SchemaError> {
        let spec: SchemaSpec = toml::from_str(
            r#"
            key = "k"
            event_time = { field = "t" }
            [[numeric]]
            names = ["amount", "x"]
            [[categorical]]
            name = "c"
            vocabulary = ["a", "b", "c"]
            [[categorical]]
            name = "m"
            hash_buckets = 8
            "#,
        )
        .unwrap();
        #[derive(Deserialize)]
        struct F {
            features: Vec<FeatureSpec>,
        }
        let f: F = toml::from_str(extra).unwrap();
        Features::new(Arc::new(Schema::new(&spec).unwrap()), &f.features)
    }

    fn record(amount: f64, c: &str) -> Record {
        Record {
            pos: Pos { input: 0, line: 0 },
            source: "s".into(),
            line_hash: 0,
            key: "k1".into(),
            key_hash: 1,
            id: None,
            event_time: 0,
            label: None,
            nums: vec![amount, 2.0],
            missing: 0,
            cats: vec![c.into(), "zz".into()],
            arrived_ms: 0,
        }
    }

    const ALL: &str = r#"
        [[features]]
        name = "n"
        kind = "key_count"
        [[features]]
        name = "mean"
        kind = "key_mean"
        field = "amount"
        [[features]]
        name = "std"
        kind = "key_std"
        field = "amount"
        [[features]]
        name = "ratio"
        kind = "ratio_to_key_mean"
        field = "amount"
        [[features]]
        name = "z"
        kind = "key_zscore"
        field = "amount"
        [[features]]
        name = "log"
        kind = "log1p"
        field = "amount"
        [[features]]
        kind = "value"
        field = "x"
        [[features]]
        kind = "one_hot"
        field = "c"
        [[features]]
        kind = "hashed"
        field = "m"
    "#;

    #[test]
    fn per_key_statistics_update_before_they_are_read() {
        let f = features(ALL).unwrap();
        assert_eq!(
            f.dense_names,
            ["n", "mean", "std", "ratio", "z", "log", "x"]
        );
        assert_eq!(f.sparse_len(), 3 + 8);
        let mut st = KeyState::default();
        let e1 = f.compute(&mut st, record(10.0, "b"));
        assert_eq!(e1.dense, [1.0, 10.0, 0.0, 1.0, 0.0, 11f64.ln(), 2.0]);
        let e2 = f.compute(&mut st, record(30.0, ""));
        assert_eq!(e2.dense[..5], [2.0, 20.0, 10.0, 1.5, 1.0]);
        assert_eq!(e1.sparse[0], 1, "`b` is slot 1 of `c`");
        assert_eq!(e1.sparse.len(), 2);
        assert!((3..11).contains(&e1.sparse[1]));
        assert_eq!(e2.sparse.len(), 1, "a missing category has no slot");
    }

    #[test]
    fn welford_matches_two_pass() {
        let f = features(ALL).unwrap();
        let xs = [3.0, 7.5, 1.25, 9.0, 4.0, 4.0, 100.0];
        let mut st = KeyState::default();
        let mut last = None;
        for x in xs {
            last = Some(f.compute(&mut st, record(x, "a")));
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        let d = last.unwrap().dense;
        assert!((d[1] - mean).abs() < 1e-12 && (d[2] - var.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn config_errors_name_the_entry() {
        let e = features("[[features]]\nkind = \"key_mean\"\nfield = \"nope\"\n").unwrap_err();
        assert_eq!(e.path, "features[0].field");
        assert!(e.message.contains("declared: amount, x"), "{e}");
        let e = features("[[features]]\nkind = \"one_hot\"\nfield = \"m\"\n").unwrap_err();
        assert!(e.message.contains("needs a vocabulary"), "{e}");
        let e = features("[[features]]\nkind = \"value\"\nfield = \"x\"\n[[features]]\nkind = \"value\"\nfield = \"x\"\n").unwrap_err();
        assert_eq!(e.path, "features[1].name");
    }
}

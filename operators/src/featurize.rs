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
//! **Shape:** the work of an epoch is [`FeaturizeMachine::on_epoch`], without
//! timely; the operator only stashes the input's epochs and hands the machine
//! each one the frontier has passed, its examples to one port and its
//! snapshot to the other.
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
    /// Checks `specs` against `schema`, entry by entry ([`Features::add`]);
    /// the first error found is the one returned.
    pub fn new(schema: Arc<Schema>, specs: &[FeatureSpec]) -> Result<Features, SchemaError> {
        let mut f = Features {
            schema,
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
            f.add(i, spec, &mut names)?;
        }
        Ok(f)
    }

    /// Checks `features[i]` and appends it: a dense feature, or the sparse
    /// slots of a categorical one. `names`: feature name → the first entry
    /// with it.
    fn add(
        &mut self,
        i: usize,
        spec: &FeatureSpec,
        names: &mut HashMap<String, usize>,
    ) -> Result<(), SchemaError> {
        let dense = self.compile_dense(i, spec)?;
        if spec.window.is_some() && spec.kind != FeatureKind::Anomaly {
            return Err(feature_error(
                i,
                "window",
                "only `anomaly` features take a window".into(),
            ));
        }
        let name = feature_name(i, spec, names)?;
        match dense {
            Some(c) => {
                self.dense.push(c);
                self.dense_names.push(name);
                self.standardize.push(spec.standardize);
                Ok(())
            }
            None => self.add_sparse(i, spec, &name),
        }
    }

    /// A dense feature compiled (its per-key statistics and detectors
    /// registered); `None` for the categorical kinds.
    fn compile_dense(
        &mut self,
        i: usize,
        spec: &FeatureSpec,
    ) -> Result<Option<Compiled>, SchemaError> {
        let field = spec.field.as_deref();
        let compiled = match spec.kind {
            FeatureKind::Value => Compiled::Value(numeric_field(&self.schema, i, field)?),
            FeatureKind::Log1p => Compiled::Log1p(numeric_field(&self.schema, i, field)?),
            FeatureKind::KeyCount => {
                if field.is_some() {
                    return Err(feature_error(
                        i,
                        "field",
                        "`key_count` reads no field".into(),
                    ));
                }
                Compiled::KeyCount
            }
            FeatureKind::KeyMean => {
                let j = numeric_field(&self.schema, i, field)?;
                Compiled::KeyMean(self.track(j))
            }
            FeatureKind::KeyStd => {
                let j = numeric_field(&self.schema, i, field)?;
                Compiled::KeyStd(self.track(j))
            }
            FeatureKind::RatioToKeyMean => {
                let j = numeric_field(&self.schema, i, field)?;
                Compiled::Ratio {
                    field: j,
                    tracked: self.track(j),
                }
            }
            FeatureKind::KeyZscore => {
                let j = numeric_field(&self.schema, i, field)?;
                Compiled::Zscore {
                    field: j,
                    tracked: self.track(j),
                }
            }
            FeatureKind::Anomaly => {
                let window = spec.window.unwrap_or(32);
                if window < 1 {
                    return Err(feature_error(
                        i,
                        "window",
                        format!("expected at least 1 value, found {window}"),
                    ));
                }
                let j = numeric_field(&self.schema, i, field)?;
                self.anomalies.push((j, window));
                Compiled::Anomaly(self.anomalies.len() - 1)
            }
            FeatureKind::OneHot | FeatureKind::Hashed => return Ok(None),
        };
        Ok(Some(compiled))
    }

    /// The index among the tracked fields of numeric field `j`, tracked from now on.
    fn track(&mut self, j: usize) -> usize {
        if !self.tracked.contains(&j) {
            self.tracked.push(j);
        }
        self.tracked
            .iter()
            .position(|t| *t == j)
            .expect("just pushed")
    }

    /// The sparse slots of categorical feature `features[i]`, named `name`:
    /// one per vocabulary value (`one_hot`), or `buckets` hashed ones.
    fn add_sparse(&mut self, i: usize, spec: &FeatureSpec, name: &str) -> Result<(), SchemaError> {
        let e = |key: &str, message: String| feature_error(i, key, message);
        let schema = &self.schema;
        let fname = spec.field.as_deref().ok_or_else(|| {
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
        let offset = self.sparse_names.len() as u32;
        let buckets = match spec.kind {
            FeatureKind::OneHot => {
                let vocab = cat.vocabulary.as_ref().ok_or_else(|| {
                    e("kind", format!("`one_hot` needs a vocabulary on `{fname}`; use `kind = \"hashed\"` for open-ended values"))
                })?;
                self.sparse_names
                    .extend(vocab.iter().map(|v| format!("{name}={v}")));
                None
            }
            _ => {
                let b = spec.buckets.or(cat.hash_buckets).ok_or_else(|| {
                    e(
                        "buckets",
                        format!("`hashed` needs `buckets` here or `hash_buckets` on `{fname}`"),
                    )
                })?;
                if b == 0 {
                    return Err(e("buckets", "expected a positive number of buckets".into()));
                }
                self.sparse_names
                    .extend((0..b).map(|k| format!("{name}#{k}")));
                Some(b)
            }
        };
        self.sparse.push(SparseSlots {
            field: j,
            offset,
            buckets,
        });
        Ok(())
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

/// An error in `features[i].key`.
fn feature_error(i: usize, key: &str, message: String) -> SchemaError {
    SchemaError {
        path: format!("features[{i}].{key}"),
        message,
    }
}

/// The schema index of the numeric field `features[i]` reads (`field`).
fn numeric_field(schema: &Schema, i: usize, field: Option<&str>) -> Result<usize, SchemaError> {
    let name = field.ok_or_else(|| {
        feature_error(
            i,
            "field",
            "expected the numeric field this feature reads".into(),
        )
    })?;
    schema.numeric_index(name).ok_or_else(|| {
        feature_error(
            i,
            "field",
            format!(
                "`{name}` is not a numeric field of the schema (declared: {})",
                list(schema.numeric.iter().map(|n| &n.name))
            ),
        )
    })
}

/// The name of `features[i]` (its own, or its field's; `key_count` for a
/// key count), unique among `names`, where it is recorded.
fn feature_name(
    i: usize,
    spec: &FeatureSpec,
    names: &mut HashMap<String, usize>,
) -> Result<String, SchemaError> {
    let default_name = match spec.kind {
        FeatureKind::KeyCount => Some("key_count".to_string()),
        _ => spec.field.clone(),
    };
    let name = spec
        .name
        .clone()
        .or(default_name)
        .ok_or_else(|| feature_error(i, "name", "expected a feature name".into()))?;
    if let Some(first) = names.insert(name.clone(), i) {
        return Err(feature_error(
            i,
            "name",
            format!("feature `{name}` is already defined by features[{first}]"),
        ));
    }
    Ok(name)
}

/// Names for an error message: `a, b`, or `none`.
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

/// `featurize` on one worker, epoch at a time and without timely: every
/// key's [`KeyState`] (see the module docs). The operator hands it each
/// epoch the input frontier has passed.
#[derive(Clone, Debug)]
pub struct FeaturizeMachine {
    step_id: String,
    worker: usize,
    features: Arc<Features>,
    states: KeyStates,
    snapshot: bool,
}

impl FeaturizeMachine {
    /// The machine of step `step_id` on `worker`, with no keys or, given
    /// `restore`, the keys of that snapshot; `snapshot`: snapshot the state
    /// after every epoch.
    pub fn new(
        step_id: &str,
        worker: usize,
        features: Arc<Features>,
        snapshot: bool,
        restore: Option<&[u8]>,
    ) -> Result<FeaturizeMachine, StateError> {
        let states = match restore {
            Some(bytes) => decode(step_id, bytes)?,
            None => KeyStates::default(),
        };
        Ok(FeaturizeMachine {
            step_id: step_id.to_string(),
            worker,
            features,
            states,
            snapshot,
        })
    }

    /// Processes one epoch: each record, in order, updates its key's state
    /// and goes to `emit` as its [`Example`] (one at a time, so an epoch's
    /// examples are never all held at once); returns the state after the
    /// epoch when checkpointing.
    pub fn on_epoch(
        &mut self,
        epoch: Epoch,
        records: Vec<Record>,
        mut emit: impl FnMut(Example),
    ) -> Option<Snapshot> {
        for record in records {
            let state = self.states.entry(record.key_hash).or_default();
            emit(self.features.compute(state, record));
        }
        self.snapshot.then(|| Snapshot {
            step_id: self.step_id.clone(),
            worker: self.worker,
            epoch,
            bytes: encode(&self.states),
        })
    }
}

/// The outputs of `featurize`, in the order they are built: each one's
/// index among an epoch's capabilities.
mod port {
    pub const EXAMPLES: usize = 0;
    pub const SNAPSHOTS: usize = 1;
    /// How many there are (one capability each per epoch).
    pub const COUNT: usize = 2;
}

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
        let mut machine = FeaturizeMachine::new(
            step_id,
            self.scope().index(),
            features,
            state.snapshot,
            state.restore.as_deref(),
        )?;
        let mut builder = OperatorBuilder::new(step_id.to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (examples_out, examples) = builder.new_output();
        let (snap_out, snapshots) = builder.new_output();
        let mut examples_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Example>>>::from(examples_out);
        let mut snap_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Snapshot>>>::from(snap_out);
        builder.build(move |_caps| {
            let mut stash = EpochStash::new(port::COUNT);
            move |frontiers| {
                stash.ingest(&mut input);
                let mut examples_handle = examples_out.activate();
                let mut snap_handle = snap_out.activate();
                while let Some((epoch, caps, batch)) = stash.next_ready(&frontiers[0]) {
                    let mut examples = Vec::with_capacity(batch.len());
                    let snapshot = machine.on_epoch(epoch, batch, |ex| examples.push(ex));
                    examples_handle
                        .session(&caps[port::EXAMPLES])
                        .give_container(&mut examples);
                    if let Some(snapshot) = snapshot {
                        snap_handle.session(&caps[port::SNAPSHOTS]).give(snapshot);
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

    fn keyed(key_hash: u64, amount: f64) -> Record {
        Record {
            key: format!("k{key_hash}"),
            key_hash,
            ..record(amount, "a")
        }
    }

    fn machine(snapshot: bool, restore: Option<&[u8]>) -> FeaturizeMachine {
        let f = Arc::new(features(ALL).unwrap());
        FeaturizeMachine::new("featurize", 3, f, snapshot, restore).unwrap()
    }

    fn run(
        m: &mut FeaturizeMachine,
        epoch: Epoch,
        records: Vec<Record>,
    ) -> (Vec<Example>, Option<Snapshot>) {
        let mut out = Vec::new();
        let snapshot = m.on_epoch(epoch, records, |ex| out.push(ex));
        (out, snapshot)
    }

    #[test]
    fn machine_keeps_each_keys_state_and_emits_in_input_order() {
        let mut m = machine(false, None);
        let (out, snapshot) = run(
            &mut m,
            1,
            vec![keyed(1, 10.0), keyed(2, 100.0), keyed(1, 30.0)],
        );
        assert_eq!(snapshot, None, "no snapshot unless checkpointing");
        let counts: Vec<(u64, f64, f64)> = out
            .iter()
            .map(|e| (e.record.key_hash, e.dense[0], e.dense[1]))
            .collect();
        assert_eq!(counts, [(1, 1.0, 10.0), (2, 1.0, 100.0), (1, 2.0, 20.0)]);
        let (out, _) = run(&mut m, 2, vec![keyed(2, 300.0)]);
        assert_eq!(
            (out[0].dense[0], out[0].dense[1]),
            (2.0, 200.0),
            "state carries across epochs"
        );
        let (out, _) = run(&mut m, 3, Vec::new());
        assert!(out.is_empty());
    }

    #[test]
    fn machine_snapshots_restore_to_the_same_examples_and_state() {
        let epochs: Vec<Vec<Record>> = vec![
            vec![keyed(1, 10.0), keyed(2, 5.0)],
            vec![keyed(1, 12.0), keyed(3, 7.0), keyed(2, 1.0)],
            vec![keyed(3, 70.0), keyed(1, 11.0), keyed(2, 4.0)],
        ];
        let mut whole = machine(true, None);
        let mut snapshots = Vec::new();
        let mut last = Vec::new();
        for (e, records) in epochs.iter().enumerate() {
            let (out, snapshot) = run(&mut whole, e as Epoch + 1, records.clone());
            let snapshot = snapshot.expect("checkpointing");
            assert_eq!(
                (snapshot.step_id.as_str(), snapshot.worker, snapshot.epoch),
                ("featurize", 3, e as Epoch + 1)
            );
            snapshots.push(snapshot);
            last = out;
        }
        // The snapshot is the per-key state map as it always was (bincode of `KeyStates`).
        let states: KeyStates = decode("featurize", &snapshots[1].bytes).unwrap();
        assert_eq!(states.len(), 3);
        assert_eq!(states[&1].count, 2);
        let mut resumed = machine(true, Some(&snapshots[1].bytes));
        let (out, snapshot) = run(&mut resumed, 3, epochs[2].clone());
        assert_eq!(out, last);
        let state = |s: &Snapshot| decode::<KeyStates>("featurize", &s.bytes).unwrap();
        assert_eq!(state(&snapshot.unwrap()), state(&snapshots[2]));
    }
}

//! `score`: predict, then learn (prequential), evaluate — and, with several
//! workers, share one model.
//!
//! **In:** [`Example`]s through a pipeline pact (they are already on the
//! worker that owns their key), and, with several workers, the model updates
//! every worker published in the previous epoch ([`ModelDelta`]s, broadcast
//! through a feedback edge that adds one epoch).
//! **Out:** one [`Scored`] row per example — every record is scored, labelled
//! or not, and carries the version of the model that scored it — one
//! [`EvalPartial`] per epoch with the prequential metrics of the labelled
//! ones, window aggregates for the monitors, and this worker's model update
//! when it publishes one.
//! **Order of work per labelled record** (River's pipeline semantics): the
//! dense features are standardised with the scaler's statistics from *before*
//! the record and scored; then the scaler learns the record, the features are
//! standardised again with the updated statistics, and the model learns from
//! those. Unlabelled records are only scored.
//! **Model refresh** (several workers): each worker learns from its own
//! records on top of the shared model. After an epoch in which it learned
//! `refresh_records` labelled records (or its event time moved
//! `refresh_event_seconds`), it publishes its update: the difference between
//! its model and the shared one (learner parameters, sparse; the scaler's
//! statistics of the records it learned). At the start of the next epoch every
//! worker merges all published updates into the shared model, in worker order
//! — the same sums everywhere, so every worker holds the same shared model —
//! and the version goes up by one. The learner's parameters move by the
//! updates' average weighted by their records (weighted parameter averaging);
//! the scaler's statistics are combined exactly (Chan et al.). A worker that
//! published continues from the new shared model; one that did not keeps its
//! unpublished update on top of it. Summing updates instead of averaging them
//! diverges: each worker has already moved most of the way towards what its
//! records say, so W moves overshoot W-fold. One worker has nothing to merge
//! with: the model is its own and the
//! version stays 1, so one worker reproduces River's numbers exactly.
//! **Order:** epoch at a time, once the frontiers have passed the epoch; the
//! updates of epoch e are merged before the examples of epoch e + 1 are scored.
//! **State** ([`Scorer`]: scaler statistics, learner, version, the shared
//! model and the last published update; a [`Snapshot`] after each processed
//! epoch when checkpointing, restored from one at construction). A worker
//! resumed from epoch e publishes again the update it published in e (its
//! snapshot has it), since the merge it was headed for was not checkpointed.
//! **Shape:** the work of an epoch is [`ScoreMachine::on_epoch`], without
//! timely: a [`ScoreInput`] in (the epoch's examples, updates, tallies and
//! labels), a [`ScoreOutput`] out with one field per output. The operator
//! only stashes each input's epochs, hands the machine the oldest one every
//! input has passed, and gives each field of its output to its port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{InputHandleCore, OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use timely::progress::frontier::MutableAntichain;

use crate::arena::{Arena, ArenaTally};
use crate::epochs::{decode, encode, EpochStash, Snapshot, StateError, StateIo};
use crate::featurize::Features;
use crate::labels::{Label, Pending, Prediction};
use crate::learn::logistic::ModelSpec;
use crate::learn::{EvalPartial, Learner, StandardScaler};
use crate::monitor::{Watched, WindowPartial};
use crate::record::{Example, Scored};
use crate::Epoch;

/// A worker's update to the shared model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDelta {
    /// The worker that learned it.
    pub worker: usize,
    /// The epoch it was published in.
    pub epoch: Epoch,
    /// Changed learner parameters: (index, difference).
    pub params: Vec<(u32, f64)>,
    /// Per dense feature: count, mean and sum of squared deviations of the values the scaler learned.
    pub scaler: Vec<(u64, f64, f64)>,
    /// Labelled records learned.
    pub records: u64,
    /// Whose update: 0 the champion, 1 the challenger (see [`crate::arena`]).
    #[serde(default)]
    pub model: u8,
    /// A learner whose state does not add up (a tree): the worker's whole model.
    #[serde(default)]
    pub member: Option<Box<Member>>,
}

/// One worker's published tree and the standardisation it learned with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The learner.
    pub model: Learner,
    /// Its standardisation.
    pub scaler: StandardScaler,
}

/// Several workers with a learner whose state does not add up (a Hoeffding
/// tree): the shared model is the forest of every worker's latest published
/// tree, their probabilities averaged. Each worker keeps growing its own tree
/// on its own records and publishes it every `every_records` records; every
/// worker replaces that worker's member at the next epoch, so all score with
/// the same forest, and the version goes up by one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Forest {
    every_records: u64,
    since: u64,
    members: std::collections::BTreeMap<usize, Member>,
    outbox: Option<ModelDelta>,
    /// One worker: no forest to share, but a new version every `every_records`
    /// records all the same (so its versions reach the registry, as a linear model's do).
    #[serde(default)]
    solo: bool,
}

impl Forest {
    fn new(
        every_records: u64,
        solo: bool,
        members: std::collections::BTreeMap<usize, Member>,
    ) -> Forest {
        Forest {
            every_records,
            since: 0,
            members,
            outbox: None,
            solo,
        }
    }
}

/// The shared model and when to publish to it (several workers only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Shared {
    every_records: u64,
    every_event_ms: Option<i64>,
    params: Vec<f64>,
    scaler: StandardScaler,
    updates: u64,
    /// Labelled records learned since the last publication.
    since: u64,
    last_published_ms: Option<i64>,
    latest_ms: Option<i64>,
    /// The update published last (resent on restore if its merge was not checkpointed).
    outbox: Option<ModelDelta>,
    /// One worker: nothing to merge with; a new version every `every_records` records all the same.
    #[serde(default)]
    solo: bool,
    /// Parameters changed since the last publication (so publishing and
    /// merging cost what changed, not the model's size).
    #[serde(default)]
    dirty: Vec<u32>,
    #[serde(skip)]
    marked: Vec<bool>,
}

impl Shared {
    fn mark(&mut self, touched: &[u32]) {
        if self.marked.len() < self.params.len() {
            // Fresh, or restored from a snapshot: rebuild the marks from the list.
            self.marked = vec![false; self.params.len()];
            for &i in &self.dirty {
                self.marked[i as usize] = true;
            }
        }
        for &i in touched {
            if !std::mem::replace(&mut self.marked[i as usize], true) {
                self.dirty.push(i);
            }
        }
    }
}

/// A version of the shared model, for the registry (emitted by worker 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRelease {
    /// The version.
    pub version: u64,
    /// The epoch after which it is the model.
    pub epoch: Epoch,
    /// The learner.
    pub model: Learner,
    /// The standardisation it scores with.
    pub scaler: StandardScaler,
    /// Which configuration made it: 0 `[model]`, 1 `[challenger]`.
    #[serde(default)]
    pub config: u8,
    /// It became the champion by a promotion in this epoch.
    #[serde(default)]
    pub promoted: bool,
    /// Several workers with a tree learner: the forest they all scored with,
    /// every worker's member (worker, member); `model` is worker 0's own.
    /// Empty for everything else.
    #[serde(default)]
    pub forest: Vec<(usize, Member)>,
}

/// The model state of `score` on one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scorer {
    /// Running standardisation of the dense features.
    pub scaler: StandardScaler,
    /// The learner.
    pub model: Learner,
    /// The version stamped on scored rows: 1, plus one per merge of updates.
    pub version: u64,
    /// Which configuration it follows: 0 `[model]`, 1 `[challenger]`.
    #[serde(default)]
    pub config: u8,
    threshold: f64,
    /// `kind = "feature"`: the dense feature that is the score.
    #[serde(default)]
    feature: Option<usize>,
    #[serde(default)]
    shared: Option<Shared>,
    /// Delayed labels: predictions waiting for their label, and the reverse.
    #[serde(default)]
    pending: Option<Pending>,
    /// Several workers with a tree: the forest of their published trees.
    #[serde(default)]
    forest: Option<Forest>,
    #[serde(skip)]
    scratch: Vec<f64>,
    #[serde(skip)]
    touched: Vec<u32>,
}

impl Scorer {
    /// Recomputes derived values after being decoded from a snapshot.
    pub fn restored(mut self) -> Self {
        self.scaler = self.scaler.restored();
        if let Some(s) = self.shared.as_mut() {
            s.scaler = std::mem::take(&mut s.scaler).restored();
        }
        if let Some(f) = self.forest.as_mut() {
            for m in f.members.values_mut() {
                m.scaler = std::mem::take(&mut m.scaler).restored();
            }
        }
        self
    }

    /// A fresh model for `features`.
    pub fn new(spec: &ModelSpec, features: &Features) -> Self {
        Scorer {
            scaler: StandardScaler::new(features.standardize.clone()),
            model: Learner::new(spec, features.dense_len(), features.sparse_len()),
            version: 1,
            config: 0,
            threshold: spec.threshold,
            feature: match spec.kind {
                crate::learn::logistic::ModelKind::Feature => spec
                    .feature
                    .as_ref()
                    .and_then(|f| features.dense_names.iter().position(|n| n == f)),
                _ => None,
            },
            shared: None,
            pending: None,
            forest: None,
            scratch: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Labels come late on their own stream: keep predictions up to `horizon_ms`
    /// for them (see [`Pending`]), at most `max_waiting` at once.
    pub fn expect_labels(&mut self, horizon_ms: i64, max_waiting: usize) {
        if self.feature.is_some() {
            return;
        }
        match self.pending.as_mut() {
            // Restored: the bound is the topology's now.
            Some(p) => p.max_waiting = max_waiting.max(1),
            None => self.pending = Some(Pending::new(horizon_ms, max_waiting)),
        }
    }

    /// Several workers making a forest of their models: an ensemble learner
    /// grows only this worker's share of its members (a fresh one; see
    /// `AdaptiveRandomForest::share`). Call after [`enable_refresh`](Self::enable_refresh).
    pub fn share_ensemble(&mut self, worker: usize, workers: usize) {
        if let Some(f) = self.forest.as_mut() {
            // A forest warm-started from more workers than this run has: their
            // members would never be replaced, so they go.
            f.members.retain(|w, _| *w < workers);
            self.model.share(worker, workers);
        }
    }

    /// Shares the model with other workers (see the module docs); the current state is the shared model.
    /// `solo`: this is the only worker — versions only.
    pub fn enable_refresh(&mut self, spec: &ModelSpec, solo: bool) {
        if let Some(s) = self.shared.as_mut() {
            s.solo = solo;
            return;
        }
        if self.feature.is_some() {
            return;
        }
        let every_records = spec.refresh_records.unwrap_or(1_000).max(1);
        let Some(params) = self.model.params() else {
            // Not a learner whose updates add up: the workers' models make a forest.
            match self.forest.as_mut() {
                Some(f) => {
                    // Restored or warm-started: the topology's cadence; one worker scores with its own model.
                    f.solo = solo;
                    f.every_records = every_records;
                    if solo {
                        f.members.clear();
                    }
                }
                None => self.forest = Some(Forest::new(every_records, solo, Default::default())),
            }
            return;
        };
        self.shared = Some(Shared {
            every_records,
            every_event_ms: spec.refresh_event_seconds.map(|s| (s * 1000.0) as i64),
            params,
            scaler: self.scaler.clone(),
            updates: self.model.updates(),
            since: 0,
            last_published_ms: None,
            latest_ms: None,
            outbox: None,
            solo,
            dirty: Vec::new(),
            marked: Vec::new(),
        });
    }

    /// Scores `ex` and, if labelled, learns from it; records the evaluation in `eval`.
    pub fn apply(&mut self, ex: Example, eval: &mut EvalPartial) -> Scored {
        let score = self.step(&ex, eval);
        Scored {
            record: ex.record,
            score,
            model_version: self.version,
            shadow_score: None,
        }
    }

    /// [`Scorer::apply`] without taking the example: the score (how the challenger scores in shadow).
    pub fn step(&mut self, ex: &Example, eval: &mut EvalPartial) -> f64 {
        if let Some(k) = self.feature {
            let p = ex.dense[k];
            eval.saw_event_time(ex.record.event_time);
            if let Some(y) = ex.record.label {
                eval.observe(p, y > 0.5, self.threshold);
            }
            return p;
        }
        let t = ex.record.event_time;
        if self.pending.is_some() {
            // Labels known by now are learned before this record is scored.
            self.learn_due(t, eval);
        }
        let p = self.predict(&ex.dense, &ex.sparse);
        eval.saw_event_time(t);
        eval.version = eval.version.max(self.version);
        if let Some(y) = ex.record.label {
            self.observe(eval, p, y);
            self.learn(&ex.dense, &ex.sparse, y);
        } else if let (Some(pending), Some(id)) = (self.pending.as_mut(), ex.record.id.as_deref()) {
            pending.predicted(
                id,
                Prediction {
                    event_time: t,
                    dense: ex.dense.clone(),
                    sparse: ex.sparse.clone(),
                    score: p,
                    version: self.version,
                },
            );
        }
        if let Some(pending) = self.pending.as_mut() {
            pending.saw(t);
        }
        if let Some(s) = self.shared.as_mut() {
            s.latest_ms = Some(s.latest_ms.map_or(t, |l| l.max(t)));
        }
        p
    }

    /// The shared model's prediction: the forest's mean once there is one, else this worker's model.
    fn predict(&mut self, dense: &[f64], sparse: &[u32]) -> f64 {
        if let Some(f) = self.forest.as_ref().filter(|f| !f.members.is_empty()) {
            let mut sum = 0.0;
            for m in f.members.values() {
                m.scaler.transform(dense, &mut self.scratch);
                sum += m.model.predict(&self.scratch, sparse);
            }
            return sum / f.members.len() as f64;
        }
        self.scaler.transform(dense, &mut self.scratch);
        self.model.predict(&self.scratch, sparse)
    }

    fn observe(&self, eval: &mut EvalPartial, p: f64, y: f64) {
        if self.model.is_classifier() {
            eval.observe(p, y > 0.5, self.threshold);
        } else {
            eval.observe_regression(p, y);
        }
    }

    /// Learns one labelled example (River's order: the scaler first, then the model).
    fn learn(&mut self, dense: &[f64], sparse: &[u32], y: f64) {
        self.scaler.learn(dense);
        self.scaler.transform(dense, &mut self.scratch);
        self.model.learn(&self.scratch, sparse, y);
        if let Some(f) = self.forest.as_mut() {
            f.since += 1;
        }
        if let Some(s) = self.shared.as_mut() {
            s.since += 1;
            if !s.solo {
                self.touched.clear();
                self.model.touched(dense.len(), sparse, &mut self.touched);
                s.mark(&self.touched);
            }
        }
    }

    /// Evaluates and learns every joined prediction whose label was known by `t`.
    fn learn_due(&mut self, t: i64, eval: &mut EvalPartial) {
        while let Some((p, y)) = self.pending.as_mut().and_then(|q| q.due(t)) {
            self.observe(eval, p.score, y);
            self.learn(&p.dense, &p.sparse, y);
        }
    }

    /// Late labels of an epoch, before its records: joined, and learned if already known.
    pub fn labels(&mut self, labels: Vec<Label>, eval: &mut EvalPartial) {
        let Some(q) = self.pending.as_mut() else {
            return;
        };
        for l in labels {
            q.label(l);
        }
        let w = q.watermark();
        self.learn_due(w, eval);
    }

    /// After an epoch's records: learns what is known by now, expires what waited too long.
    pub fn end_epoch(&mut self, eval: &mut EvalPartial) {
        let Some(w) = self.pending.as_ref().map(|q| q.watermark()) else {
            return;
        };
        self.learn_due(w, eval);
        eval.labels = self.pending.as_mut().expect("checked").end_epoch();
    }

    /// After `epoch`: this worker's update, if it is due.
    pub fn publish(&mut self, worker: usize, epoch: Epoch, _peers: usize) -> Option<ModelDelta> {
        if let Some(f) = self.forest.as_mut() {
            if f.since < f.every_records {
                return None;
            }
            if f.solo {
                // Nothing to share: the worker's model, in a new version.
                f.since = 0;
                self.version += 1;
                return None;
            }
            let delta = ModelDelta {
                worker,
                epoch,
                params: Vec::new(),
                scaler: Vec::new(),
                records: f.since,
                model: 0,
                member: Some(Box::new(Member {
                    model: self.model.clone(),
                    scaler: self.scaler.clone(),
                })),
            };
            f.since = 0;
            f.outbox = Some(delta.clone());
            return Some(delta);
        }
        let s = self.shared.as_mut()?;
        let by_time = match (s.every_event_ms, s.latest_ms) {
            (Some(every), Some(t)) => {
                s.since > 0 && t - s.last_published_ms.unwrap_or(i64::MIN / 2) >= every
            }
            _ => false,
        };
        if s.since < s.every_records && !by_time {
            return None;
        }
        if s.solo {
            // Nothing to merge with: the worker's model is the shared one, in a new version.
            s.since = 0;
            s.last_published_ms = s.latest_ms;
            self.version += 1;
            return None;
        }
        // Only what changed since the last publication: the dirty parameters.
        s.dirty.sort_unstable();
        let params = s
            .dirty
            .iter()
            .map(|&i| (i, self.model.param(i as usize) - s.params[i as usize]))
            .filter(|(_, d)| *d != 0.0)
            .collect();
        for &i in &s.dirty {
            if let Some(m) = s.marked.get_mut(i as usize) {
                *m = false;
            }
        }
        s.dirty.clear();
        let delta = ModelDelta {
            worker,
            epoch,
            params,
            scaler: scaler_delta(&self.scaler, &s.scaler),
            records: self.model.updates() - s.updates,
            model: 0,
            member: None,
        };
        s.since = 0;
        s.last_published_ms = s.latest_ms;
        s.outbox = Some(delta.clone());
        Some(delta)
    }

    /// The shared model as it stands, for the registry.
    pub fn release(&self, epoch: Epoch) -> ModelRelease {
        let (model, scaler) = match self.shared.as_ref().filter(|s| !s.solo) {
            Some(s) => {
                let mut m = self.model.clone();
                m.set_params(&s.params, s.updates);
                (m, s.scaler.clone())
            }
            None => (self.model.clone(), self.scaler.clone()),
        };
        let forest = self
            .forest
            .as_ref()
            .filter(|f| !f.solo)
            .map(|f| f.members.iter().map(|(w, m)| (*w, m.clone())).collect())
            .unwrap_or_default();
        ModelRelease {
            version: self.version,
            epoch,
            model,
            scaler,
            config: self.config,
            promoted: false,
            forest,
        }
    }

    /// Starts from a published version (warm start).
    ///
    /// A forest (several workers' trees) starts whole: every worker scores with
    /// its members until the workers of this run publish their own (see
    /// [`share_ensemble`](Self::share_ensemble) for a different worker count),
    /// and each worker grows worker 0's member further.
    pub fn warm_start(&mut self, release: ModelRelease) {
        self.model = release.model;
        self.scaler = release.scaler.restored();
        self.version = release.version;
        self.shared = None;
        if !release.forest.is_empty() {
            // (`enable_refresh` sets the cadence and whether there is anyone to share with.)
            let members = release
                .forest
                .into_iter()
                .map(|(w, mut m)| {
                    m.scaler = std::mem::take(&mut m.scaler).restored();
                    (w, m)
                })
                .collect();
            self.forest = Some(Forest::new(1_000, false, members));
        }
    }

    /// The update to publish again when resuming right after `epoch` (see the module docs).
    pub fn unmerged_outbox(&self, epoch: Epoch) -> Option<ModelDelta> {
        if let Some(f) = &self.forest {
            return f.outbox.clone().filter(|d| d.epoch == epoch);
        }
        self.shared
            .as_ref()?
            .outbox
            .clone()
            .filter(|d| d.epoch == epoch)
    }

    /// Adds the published updates (any order) to the shared model; this worker continues on top of it.
    pub fn merge(&mut self, worker: usize, deltas: &[ModelDelta]) {
        if let Some(f) = self.forest.as_mut() {
            let mut merged = false;
            for d in deltas {
                if let Some(m) = &d.member {
                    // From another process it was decoded: derived values are recomputed.
                    let mut m = (**m).clone();
                    m.scaler = std::mem::take(&mut m.scaler).restored();
                    f.members.insert(d.worker, m);
                    merged = true;
                }
            }
            if merged {
                self.version += 1;
            }
            return;
        }
        let Some(s) = self.shared.as_mut() else {
            return;
        };
        if deltas.is_empty() {
            return;
        }
        let mut deltas: Vec<&ModelDelta> = deltas.iter().collect();
        deltas.sort_by_key(|d| d.worker);
        let own_published = deltas.iter().any(|d| d.worker == worker);
        let unpublished_scaler = (!own_published).then(|| scaler_delta(&self.scaler, &s.scaler));
        let unpublished_updates = self.model.updates() - s.updates;
        // Weighted parameter averaging: the shared model moves by the updates'
        // mean, each weighted by the records behind it. (Adding them instead
        // overshoots: every worker has already moved the model most of the way
        // towards what its records say, and W such moves add up to W times too
        // far — measured: AUC 0.63 with 4 workers, against 0.85 with one.)
        let total = deltas.iter().map(|d| d.records).sum::<u64>().max(1) as f64;
        // Every parameter outside the updates is unchanged, here and on every
        // worker: only the updated ones are touched (cost ∝ the updates, not the model).
        for d in &deltas {
            let weight = d.records as f64 / total;
            for (i, v) in &d.params {
                let i = *i as usize;
                s.params[i] += weight * v;
                if !own_published {
                    // This worker keeps its unpublished update on top of the move.
                    let p = self.model.param(i);
                    self.model.set_param(i, p + weight * v);
                }
            }
            scaler_merge(&mut s.scaler, &d.scaler);
            s.updates += d.records;
        }
        if own_published {
            // It published everything it had: it continues from the shared model.
            for d in &deltas {
                for (i, _) in &d.params {
                    self.model.set_param(*i as usize, s.params[*i as usize]);
                }
            }
        }
        s.scaler = std::mem::take(&mut s.scaler).restored();
        let mut scaler = s.scaler.clone();
        if let Some(u) = &unpublished_scaler {
            scaler_merge(&mut scaler, u);
        }
        self.scaler = scaler.restored();
        let updates = s.updates
            + if own_published {
                0
            } else {
                unpublished_updates
            };
        self.model.set_updates(updates);
        self.version += 1;
    }
}

/// Per feature: count, mean and M2 of the values `now` learned beyond `base` (Chan et al., inverted).
fn scaler_delta(now: &StandardScaler, base: &StandardScaler) -> Vec<(u64, f64, f64)> {
    (0..now.count.len())
        .map(|i| {
            let (n1, n0) = (now.count[i], base.count[i]);
            let nd = n1 - n0;
            if nd == 0 {
                return (0, 0.0, 0.0);
            }
            let (m1, m0) = (now.mean[i], base.mean[i]);
            let md = (n1 as f64 * m1 - n0 as f64 * m0) / nd as f64;
            let delta = md - m0;
            let m2 = n1 as f64 * now.var[i]
                - n0 as f64 * base.var[i]
                - delta * delta * n0 as f64 * nd as f64 / n1 as f64;
            (nd, md, m2.max(0.0))
        })
        .collect()
}

/// Adds `(count, mean, M2)` per feature into `s` (Chan et al.'s parallel update).
fn scaler_merge(s: &mut StandardScaler, d: &[(u64, f64, f64)]) {
    for (i, &(nd, md, m2d)) in d.iter().enumerate() {
        if nd == 0 {
            continue;
        }
        let n0 = s.count[i];
        let n = n0 + nd;
        let delta = md - s.mean[i];
        let m2 = s.var[i] * n0 as f64 + m2d + delta * delta * n0 as f64 * nd as f64 / n as f64;
        s.mean[i] += delta * nd as f64 / n as f64;
        s.var[i] = m2 / n as f64;
        s.count[i] = n;
    }
}

/// The output streams of [`Score::score`].
pub struct ScoreStreams<'scope> {
    /// One scored row per example.
    pub scored: Stream<'scope, Epoch, Vec<Scored>>,
    /// One evaluation per processed epoch.
    pub evals: Stream<'scope, Epoch, Vec<EvalPartial>>,
    /// State snapshots after each processed epoch (when checkpointing).
    pub snapshots: Stream<'scope, Epoch, Vec<Snapshot>>,
    /// Per processed epoch: window aggregates of the monitored series (when watching) and arrival times.
    pub windows: Stream<'scope, Epoch, Vec<WindowPartial>>,
    /// This worker's published model updates (to broadcast back into `refresh`).
    pub deltas: Stream<'scope, Epoch, Vec<ModelDelta>>,
    /// New versions of the shared model for the registry (worker 0).
    pub releases: Stream<'scope, Epoch, Vec<ModelRelease>>,
    /// With a challenger and several workers: this worker's arena tally per epoch (to broadcast back).
    pub tallies: Stream<'scope, Epoch, Vec<ArenaTally>>,
}

/// A challenger scoring in shadow (see [`crate::arena`]).
pub struct Challenger<'scope> {
    /// Its model state (fresh, warm or restored).
    pub scorer: Scorer,
    /// Its configuration (when to publish its updates).
    pub spec: ModelSpec,
    /// The promotion state (fresh or restored).
    pub arena: Arena,
    /// Every worker's arena tallies, one epoch later (`None`: one worker).
    pub tallies: Option<Stream<'scope, Epoch, Vec<ArenaTally>>>,
    /// Worker 0: set to promote the challenger now, whatever the rule says (by command).
    pub promote_now: Option<Arc<AtomicBool>>,
}

/// The step id under which the challenger and the arena are checkpointed.
pub const CHALLENGER_STEP: &str = "score_challenger";

/// How `score` versions its model and shares it with the other workers.
pub struct Refresh<'scope> {
    /// Every worker's published updates, one epoch later (`None`: one worker, nothing to merge).
    pub updates: Option<Stream<'scope, Epoch, Vec<ModelDelta>>>,
    /// When to publish.
    pub spec: ModelSpec,
    /// Resuming after this epoch: publish again an update from it (see the module docs).
    pub resumed_after: Option<Epoch>,
    /// Delayed labels, already on the worker that owns their id (a learn-only
    /// input, see [`crate::labels`]), and how long predictions wait for them.
    pub labels: Option<(Stream<'scope, Epoch, Vec<Label>>, i64, usize)>,
    /// A challenger scoring in shadow.
    pub challenger: Option<Challenger<'scope>>,
}

/// How one worker's [`ScoreMachine`] is set up: what [`Score::score`] is
/// given, without the streams.
#[derive(Clone, Debug)]
pub struct ScoreSetup {
    /// The operator's step id (the key of its snapshots).
    pub step_id: String,
    /// This worker.
    pub worker: usize,
    /// Workers in the dataflow.
    pub peers: usize,
    /// The champion's configuration: when to publish, how often to release.
    pub spec: ModelSpec,
    /// Several workers share the model: every worker's updates come back
    /// one epoch later ([`ScoreInput::updates`]).
    pub shared: bool,
    /// Delayed labels ([`ScoreInput::labels`]): how long predictions wait
    /// for them (ms), and at most how many at once.
    pub labels: Option<(i64, usize)>,
    /// What the monitors watch, if any monitor is declared.
    pub watched: Option<Watched>,
    /// Snapshot the state after every epoch.
    pub snapshot: bool,
}

/// A challenger for a [`ScoreMachine`]: what [`Challenger`] holds, without the stream.
#[derive(Clone, Debug)]
pub struct ShadowSetup {
    /// Its model state (fresh, warm or restored).
    pub scorer: Scorer,
    /// Its configuration (when to publish its updates).
    pub spec: ModelSpec,
    /// The promotion state (fresh or restored).
    pub arena: Arena,
    /// Several workers: the tallies go round and every worker decides on
    /// everyone's one epoch later ([`ScoreInput::tallies`]); else the
    /// promotion is decided at the end of the epoch.
    pub shared_tallies: bool,
    /// Set to promote the challenger now, whatever the rule says.
    pub promote_now: Option<Arc<AtomicBool>>,
}

/// Everything one epoch brings to `score`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreInput {
    /// The epoch.
    pub epoch: Epoch,
    /// Every worker's model updates published in the previous epoch (any order).
    pub updates: Vec<ModelDelta>,
    /// Every worker's arena tallies of the previous epoch (any order).
    pub tallies: Vec<ArenaTally>,
    /// The delayed labels of the epoch, if the labels input had any (any order).
    pub labels: Option<Vec<Label>>,
    /// The epoch's examples, in input order.
    pub examples: Vec<Example>,
}

/// Everything one epoch of `score` emits: one field per output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreOutput {
    /// One scored row per example, in order.
    pub scored: Vec<Scored>,
    /// The epoch's evaluation, if it scored records or has label counts to report.
    pub eval: Option<EvalPartial>,
    /// The state after the epoch: the champion's, then the challenger's (when checkpointing).
    pub snapshots: Vec<Snapshot>,
    /// The window aggregates of the epoch's records, if it scored any.
    pub window: Option<WindowPartial>,
    /// This worker's published updates: the champion's, then the challenger's.
    pub deltas: Vec<ModelDelta>,
    /// A new version of the shared model for the registry (worker 0).
    pub release: Option<ModelRelease>,
    /// The arena tally to send to every worker (a challenger, several workers).
    pub tally: Option<ArenaTally>,
}

/// What a resumed worker sends again (see [`ScoreMachine::unmerged`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resend {
    /// Updates published in the epoch resumed after.
    pub deltas: Vec<ModelDelta>,
    /// The arena tally sent in it.
    pub tally: Option<ArenaTally>,
}

/// `score` on one worker, epoch at a time and without timely: the champion,
/// the challenger and its arena, and what the monitors watch (see the module docs).
#[derive(Clone, Debug)]
pub struct ScoreMachine {
    step_id: String,
    worker: usize,
    peers: usize,
    champion: Scorer,
    challenger: Option<Shadow>,
    watched: Option<Watched>,
    /// Updates are shared with other workers (and resent on resume).
    shared: bool,
    /// Records were routed by id from every worker: scored in input order.
    sort_by_pos: bool,
    /// Versions between two releases to the registry.
    publish_every: u64,
    snapshot: bool,
}

/// The challenger scoring in shadow, and the promotion state.
#[derive(Clone, Debug)]
struct Shadow {
    scorer: Scorer,
    arena: Arena,
    shared_tallies: bool,
    promote_now: Option<Arc<AtomicBool>>,
}

impl ScoreMachine {
    /// The machine for `setup`, starting from `scorer` or, given `restore`,
    /// from the champion's snapshot (the challenger comes restored already).
    pub fn new(
        setup: ScoreSetup,
        scorer: Scorer,
        challenger: Option<ShadowSetup>,
        restore: Option<&[u8]>,
    ) -> Result<ScoreMachine, StateError> {
        let ScoreSetup {
            step_id,
            worker,
            peers,
            spec,
            shared,
            labels,
            watched,
            snapshot,
        } = setup;
        let mut champion = match restore {
            Some(bytes) => decode::<Scorer>(&step_id, bytes)?.restored(),
            None => scorer,
        };
        champion.enable_refresh(&spec, !shared);
        champion.share_ensemble(worker, peers);
        if let Some((horizon, max_waiting)) = labels {
            champion.expect_labels(horizon, max_waiting);
        }
        let challenger = challenger.map(|c| {
            let mut scorer = c.scorer;
            scorer.config = 1;
            scorer.enable_refresh(&c.spec, !shared);
            scorer.share_ensemble(worker, peers);
            if let Some((horizon, max_waiting)) = labels {
                scorer.expect_labels(horizon, max_waiting);
            }
            Shadow {
                scorer,
                arena: c.arena,
                shared_tallies: c.shared_tallies,
                promote_now: c.promote_now,
            }
        });
        Ok(ScoreMachine {
            step_id,
            worker,
            peers,
            champion,
            challenger,
            watched,
            shared,
            sort_by_pos: labels.is_some() && peers > 1,
            publish_every: spec.publish_every_versions.unwrap_or(10).max(1),
            snapshot,
        })
    }

    /// Resuming right after `epoch`: what the restored state says was sent
    /// in it (the updates and the tally whose merge the checkpoint did not see).
    pub fn unmerged(&self, epoch: Epoch) -> Resend {
        let mut deltas = Vec::new();
        if self.shared {
            deltas.extend(self.champion.unmerged_outbox(epoch));
            if let Some(c) = &self.challenger {
                deltas.extend(c.scorer.unmerged_outbox(epoch).map(|mut d| {
                    d.model = 1;
                    d
                }));
            }
        }
        let tally = self
            .challenger
            .as_ref()
            .filter(|c| c.shared_tallies)
            .and_then(|c| c.arena.outbox.filter(|t| t.epoch == epoch));
        Resend { deltas, tally }
    }

    /// Processes one epoch: merges the updates, decides on the tallies,
    /// learns the labels, scores (and learns) the examples, then publishes,
    /// releases and snapshots what is due.
    pub fn on_epoch(&mut self, input: ScoreInput) -> ScoreOutput {
        let ScoreInput {
            epoch,
            updates,
            tallies,
            labels,
            mut examples,
        } = input;
        let version = self.champion.version;
        self.merge(updates);
        let promoted_before = self.decide(&tallies);
        let mut eval = self.fresh_eval();
        let mut shadow_eval = self.fresh_eval();
        if let Some(labels) = labels {
            self.learn_labels(labels, &mut eval, &mut shadow_eval);
        }
        if self.sort_by_pos {
            // Records were routed by id from every worker: input order, deterministically.
            examples.sort_by_key(|ex| ex.record.pos);
        }
        let (scored, window) = self.score_examples(examples, &mut eval, &mut shadow_eval);
        self.champion.end_epoch(&mut eval);
        let (tally, promoted_now) = self.judge_challenger(epoch, &mut eval, shadow_eval);
        let promoted = promoted_before || promoted_now;
        let window = eval.event_range.is_some().then_some(window);
        let reports = eval.event_range.is_some() || eval.n > 0 || !eval.labels.is_empty();
        let eval = reports.then_some(eval);
        let deltas = self.publish(epoch);
        let release = self.release(epoch, version, promoted);
        let snapshots = self.snapshots(epoch);
        ScoreOutput {
            scored,
            eval,
            snapshots,
            window,
            deltas,
            release,
            tally,
        }
    }

    fn fresh_eval(&self) -> EvalPartial {
        EvalPartial {
            worker: self.worker,
            ..EvalPartial::default()
        }
    }

    /// Every worker's updates of the previous epoch, each into its model.
    fn merge(&mut self, updates: Vec<ModelDelta>) {
        let (champion, challenger): (Vec<ModelDelta>, Vec<ModelDelta>) =
            updates.into_iter().partition(|d| d.model == 0);
        self.champion.merge(self.worker, &champion);
        if let Some(c) = self.challenger.as_mut() {
            c.scorer.merge(self.worker, &challenger);
        }
    }

    /// Every worker's tallies of the previous epoch: the same decision
    /// everywhere, after the merges (the version they made is the one to go
    /// past). True if the challenger was promoted.
    fn decide(&mut self, tallies: &[ArenaTally]) -> bool {
        let Some(c) = self.challenger.as_mut() else {
            return false;
        };
        if !c.arena.observe(tallies) {
            return false;
        }
        promote(&mut self.champion, &mut c.scorer);
        true
    }

    /// The epoch's late labels, before its records; they come from every
    /// worker, so their order is made deterministic.
    fn learn_labels(
        &mut self,
        mut labels: Vec<Label>,
        eval: &mut EvalPartial,
        shadow_eval: &mut EvalPartial,
    ) {
        labels.sort_by_key(|l| l.pos);
        if let Some(c) = self.challenger.as_mut() {
            c.scorer.labels(labels.clone(), shadow_eval);
        }
        self.champion.labels(labels, eval);
    }

    /// Scores every example with both models (the challenger first, in
    /// shadow) and adds it to the window aggregates.
    fn score_examples(
        &mut self,
        examples: Vec<Example>,
        eval: &mut EvalPartial,
        shadow_eval: &mut EvalPartial,
    ) -> (Vec<Scored>, WindowPartial) {
        let mut window = WindowPartial {
            worker: self.worker,
            ..WindowPartial::default()
        };
        let mut scored = Vec::with_capacity(examples.len());
        for ex in examples {
            let shadow_score = self
                .challenger
                .as_mut()
                .map(|c| c.scorer.step(&ex, shadow_eval));
            let mut s = self.champion.apply(ex, eval);
            s.shadow_score = shadow_score;
            match &self.watched {
                Some(w) => window.add(w, &s),
                None => window.arrived(s.record.arrived_ms),
            }
            scored.push(s);
        }
        (scored, window)
    }

    /// After the epoch's records: the challenger's evaluation goes with the
    /// champion's, and its tally either goes to every worker (decided next
    /// epoch) or, alone, decides a promotion now (in effect from the next
    /// epoch). The tally to send, and whether the challenger was promoted.
    fn judge_challenger(
        &mut self,
        epoch: Epoch,
        eval: &mut EvalPartial,
        mut shadow_eval: EvalPartial,
    ) -> (Option<ArenaTally>, bool) {
        let Some(c) = self.challenger.as_mut() else {
            return (None, false);
        };
        c.scorer.end_epoch(&mut shadow_eval);
        let mut tally = ArenaTally::of(self.worker, epoch, eval, &shadow_eval);
        tally.force = c
            .promote_now
            .as_ref()
            .is_some_and(|f| f.swap(false, Ordering::Relaxed));
        let mut sent = None;
        let mut promoted = false;
        if c.shared_tallies {
            // Only tallies with records: an empty one would come back as an
            // epoch to process, and so on forever after the input ends.
            if tally.n > 0 || tally.force {
                c.arena.outbox = Some(tally);
                sent = Some(tally);
            }
        } else if c.arena.observe(&[tally]) {
            promote(&mut self.champion, &mut c.scorer);
            promoted = true;
        }
        eval.shadow = Some(Box::new(shadow_eval));
        (sent, promoted)
    }

    /// This worker's updates due after `epoch`: the champion's, then the challenger's.
    fn publish(&mut self, epoch: Epoch) -> Vec<ModelDelta> {
        let mut deltas: Vec<ModelDelta> = self
            .champion
            .publish(self.worker, epoch, self.peers)
            .into_iter()
            .collect();
        if let Some(c) = self.challenger.as_mut() {
            if let Some(mut d) = c.scorer.publish(self.worker, epoch, self.peers) {
                d.model = 1;
                deltas.push(d);
            }
        }
        deltas
    }

    /// Every `publish_every` versions, and at a promotion, worker 0 hands the
    /// shared model to the registry (`version`: the one before the epoch).
    fn release(&self, epoch: Epoch, version: u64, promoted: bool) -> Option<ModelRelease> {
        let now = self.champion.version;
        let due = promoted || (now - 1).is_multiple_of(self.publish_every);
        if self.worker != 0 || now == version || !due {
            return None;
        }
        let mut release = self.champion.release(epoch);
        release.promoted = promoted;
        Some(release)
    }

    /// The state after `epoch`, when checkpointing: the champion under the
    /// step id, the challenger and the arena under [`CHALLENGER_STEP`].
    fn snapshots(&self, epoch: Epoch) -> Vec<Snapshot> {
        if !self.snapshot {
            return Vec::new();
        }
        let snapshot = |step_id: String, bytes| Snapshot {
            step_id,
            worker: self.worker,
            epoch,
            bytes,
        };
        let mut out = vec![snapshot(self.step_id.clone(), encode(&self.champion))];
        if let Some(c) = &self.challenger {
            out.push(snapshot(
                CHALLENGER_STEP.to_string(),
                encode(&(&c.scorer, &c.arena)),
            ));
        }
        out
    }
}

/// The challenger takes over: the two swap, and the new champion scores
/// under the version after both of theirs (versions only go up).
fn promote(champion: &mut Scorer, challenger: &mut Scorer) {
    std::mem::swap(champion, challenger);
    champion.version = champion.version.max(challenger.version) + 1;
}

/// The `score` operator. See the module docs.
pub trait Score<'scope> {
    /// Scores and learns from every example.
    fn score(
        self,
        step_id: &str,
        scorer: Scorer,
        watched: Option<Watched>,
        state: StateIo,
        refresh: Refresh<'scope>,
    ) -> Result<ScoreStreams<'scope>, StateError>;
}

impl<'scope> Score<'scope> for Stream<'scope, Epoch, Vec<Example>> {
    fn score(
        self,
        step_id: &str,
        scorer: Scorer,
        watched: Option<Watched>,
        state: StateIo,
        refresh: Refresh<'scope>,
    ) -> Result<ScoreStreams<'scope>, StateError> {
        let Refresh {
            updates,
            spec,
            resumed_after,
            labels,
            challenger,
        } = refresh;
        let setup = ScoreSetup {
            step_id: step_id.to_string(),
            worker: self.scope().index(),
            peers: self.scope().peers(),
            spec,
            shared: updates.is_some(),
            labels: labels.as_ref().map(|l| (l.1, l.2)),
            watched,
            snapshot: state.snapshot,
        };
        let (shadow, tallies) = match challenger {
            Some(c) => (
                Some(ShadowSetup {
                    scorer: c.scorer,
                    spec: c.spec,
                    arena: c.arena,
                    shared_tallies: c.tallies.is_some(),
                    promote_now: c.promote_now,
                }),
                c.tallies,
            ),
            None => (None, None),
        };
        let mut machine = ScoreMachine::new(setup, scorer, shadow, state.restore.as_deref())?;
        let resend = resumed_after.map(|e| (e, machine.unmerged(e)));
        let mut builder = OperatorBuilder::new(step_id.to_owned(), self.scope());
        let mut inputs = Inputs::new(&mut builder, self, updates, labels.map(|l| l.0), tallies);
        let (mut outputs, streams) = Outputs::new(&mut builder);
        builder.build(move |caps| {
            // Resuming right after an epoch: sent again, at that epoch.
            let mut resend_deltas = None;
            let mut resend_tally = None;
            if let Some((e, resend)) = resend {
                if !resend.deltas.is_empty() {
                    resend_deltas = Some((caps[port::DELTAS].delayed(&e), resend.deltas));
                }
                resend_tally = resend
                    .tally
                    .map(|t| (caps[port::TALLIES].delayed(&t.epoch), t));
            }
            drop(caps);
            move |frontiers| {
                if let Some((cap, deltas)) = resend_deltas.take() {
                    let mut live = outputs.deltas.activate();
                    live.session(&cap).give_iterator(deltas.into_iter());
                }
                if let Some((cap, tally)) = resend_tally.take() {
                    outputs.tallies.activate().session(&cap).give(tally);
                }
                inputs.ingest();
                let mut live = outputs.activate();
                // The oldest epoch with work, once every input has passed it.
                while let Some((caps, input)) = inputs.next_epoch(frontiers) {
                    live.give(&caps, machine.on_epoch(input));
                }
            }
        });
        Ok(streams)
    }
}

/// The outputs of `score`, in the order they are built: each one's index
/// among an epoch's capabilities.
mod port {
    pub const SCORED: usize = 0;
    pub const EVALS: usize = 1;
    pub const SNAPSHOTS: usize = 2;
    pub const WINDOWS: usize = 3;
    pub const DELTAS: usize = 4;
    pub const RELEASES: usize = 5;
    pub const TALLIES: usize = 6;
    /// How many there are (one capability each per epoch).
    pub const COUNT: usize = 7;
}

/// A pipeline input of `score`, with the epochs it has buffered.
struct InPort<D: Clone + 'static> {
    /// Its index among the operator's inputs (and frontiers).
    index: usize,
    handle: InputHandleCore<
        Epoch,
        Vec<D>,
        <Pipeline as ParallelizationContract<Epoch, Vec<D>>>::Puller,
    >,
    stash: EpochStash<D>,
}

impl<D: Clone + 'static> InPort<D> {
    fn new<'scope>(
        builder: &mut OperatorBuilder<'scope, Epoch>,
        stream: Stream<'scope, Epoch, Vec<D>>,
        index: usize,
    ) -> Self {
        InPort {
            index,
            handle: builder.new_input(stream, Pipeline),
            stash: EpochStash::new(port::COUNT),
        }
    }

    /// An input for `stream`, if there is one, as input `next` (which then moves on).
    fn optional<'scope>(
        builder: &mut OperatorBuilder<'scope, Epoch>,
        stream: Option<Stream<'scope, Epoch, Vec<D>>>,
        next: &mut usize,
    ) -> Option<Self> {
        let port = InPort::new(builder, stream?, *next);
        *next += 1;
        Some(port)
    }

    fn ingest(&mut self) {
        self.stash.ingest(&mut self.handle);
    }

    fn first(&self) -> Option<Epoch> {
        self.stash.first()
    }

    /// `epoch`'s data, if this input has any, its capabilities going to `caps`.
    fn take(
        &mut self,
        epoch: Epoch,
        frontiers: &[MutableAntichain<Epoch>],
        caps: &mut Option<Vec<Capability<Epoch>>>,
    ) -> Option<Vec<D>> {
        if self.stash.first() != Some(epoch) {
            return None;
        }
        let (_, c, data) = self
            .stash
            .next_ready(&frontiers[self.index])
            .expect("passed");
        *caps = Some(c);
        Some(data)
    }
}

/// The inputs of `score`, in the order they are built.
struct Inputs {
    examples: InPort<Example>,
    updates: Option<InPort<ModelDelta>>,
    labels: Option<InPort<Label>>,
    tallies: Option<InPort<ArenaTally>>,
}

impl Inputs {
    fn new<'scope>(
        builder: &mut OperatorBuilder<'scope, Epoch>,
        examples: Stream<'scope, Epoch, Vec<Example>>,
        updates: Option<Stream<'scope, Epoch, Vec<ModelDelta>>>,
        labels: Option<Stream<'scope, Epoch, Vec<Label>>>,
        tallies: Option<Stream<'scope, Epoch, Vec<ArenaTally>>>,
    ) -> Self {
        let examples = InPort::new(builder, examples, 0);
        let mut next = 1;
        let updates = InPort::optional(builder, updates, &mut next);
        let labels = InPort::optional(builder, labels, &mut next);
        let tallies = InPort::optional(builder, tallies, &mut next);
        Inputs {
            examples,
            updates,
            labels,
            tallies,
        }
    }

    /// Moves everything available on every input into its stash.
    fn ingest(&mut self) {
        self.examples.ingest();
        if let Some(p) = self.updates.as_mut() {
            p.ingest();
        }
        if let Some(p) = self.labels.as_mut() {
            p.ingest();
        }
        if let Some(p) = self.tallies.as_mut() {
            p.ingest();
        }
    }

    /// The oldest epoch with work, once every input has passed it: its
    /// capabilities (one per output) and everything the inputs hold for it.
    fn next_epoch(
        &mut self,
        frontiers: &[MutableAntichain<Epoch>],
    ) -> Option<(Vec<Capability<Epoch>>, ScoreInput)> {
        let epoch = [
            self.examples.first(),
            self.updates.as_ref().and_then(InPort::first),
            self.labels.as_ref().and_then(InPort::first),
            self.tallies.as_ref().and_then(InPort::first),
        ]
        .into_iter()
        .flatten()
        .min()?;
        if frontiers.iter().any(|f| f.less_equal(&epoch)) {
            return None;
        }
        let mut caps = None;
        let updates = (self.updates.as_mut()).and_then(|p| p.take(epoch, frontiers, &mut caps));
        let tallies = (self.tallies.as_mut()).and_then(|p| p.take(epoch, frontiers, &mut caps));
        let labels = (self.labels.as_mut()).and_then(|p| p.take(epoch, frontiers, &mut caps));
        let examples = self.examples.take(epoch, frontiers, &mut caps);
        let input = ScoreInput {
            epoch,
            updates: updates.unwrap_or_default(),
            tallies: tallies.unwrap_or_default(),
            labels,
            examples: examples.unwrap_or_default(),
        };
        Some((caps.expect("an epoch with work"), input))
    }
}

type Out<D> = OutputBuilder<Epoch, CapacityContainerBuilder<Vec<D>>>;
type Live<'a, D> = OutputBuilderSession<'a, Epoch, CapacityContainerBuilder<Vec<D>>>;

/// The outputs of `score`, one field per port.
struct Outputs {
    scored: Out<Scored>,
    evals: Out<EvalPartial>,
    snapshots: Out<Snapshot>,
    windows: Out<WindowPartial>,
    deltas: Out<ModelDelta>,
    releases: Out<ModelRelease>,
    tallies: Out<ArenaTally>,
}

/// One output, built as port `port`, and its stream.
fn output<'scope, D: Clone + 'static>(
    builder: &mut OperatorBuilder<'scope, Epoch>,
    port: usize,
) -> (Out<D>, Stream<'scope, Epoch, Vec<D>>) {
    let (out, stream) = builder.new_output();
    debug_assert_eq!(out.output_index(), port, "outputs are built in port order");
    (OutputBuilder::from(out), stream)
}

impl Outputs {
    fn new<'scope>(
        builder: &mut OperatorBuilder<'scope, Epoch>,
    ) -> (Outputs, ScoreStreams<'scope>) {
        let (scored, scored_stream) = output(builder, port::SCORED);
        let (evals, evals_stream) = output(builder, port::EVALS);
        let (snapshots, snapshots_stream) = output(builder, port::SNAPSHOTS);
        let (windows, windows_stream) = output(builder, port::WINDOWS);
        let (deltas, deltas_stream) = output(builder, port::DELTAS);
        let (releases, releases_stream) = output(builder, port::RELEASES);
        let (tallies, tallies_stream) = output(builder, port::TALLIES);
        let outputs = Outputs {
            scored,
            evals,
            snapshots,
            windows,
            deltas,
            releases,
            tallies,
        };
        let streams = ScoreStreams {
            scored: scored_stream,
            evals: evals_stream,
            snapshots: snapshots_stream,
            windows: windows_stream,
            deltas: deltas_stream,
            releases: releases_stream,
            tallies: tallies_stream,
        };
        (outputs, streams)
    }

    fn activate(&mut self) -> LiveOutputs<'_> {
        LiveOutputs {
            scored: self.scored.activate(),
            evals: self.evals.activate(),
            snapshots: self.snapshots.activate(),
            windows: self.windows.activate(),
            deltas: self.deltas.activate(),
            releases: self.releases.activate(),
            tallies: self.tallies.activate(),
        }
    }
}

/// The outputs of `score`, activated for one scheduling.
struct LiveOutputs<'a> {
    scored: Live<'a, Scored>,
    evals: Live<'a, EvalPartial>,
    snapshots: Live<'a, Snapshot>,
    windows: Live<'a, WindowPartial>,
    deltas: Live<'a, ModelDelta>,
    releases: Live<'a, ModelRelease>,
    tallies: Live<'a, ArenaTally>,
}

impl LiveOutputs<'_> {
    /// Gives each of an epoch's outputs to its port.
    fn give(&mut self, caps: &[Capability<Epoch>], out: ScoreOutput) {
        let ScoreOutput {
            scored,
            eval,
            snapshots,
            window,
            deltas,
            release,
            tally,
        } = out;
        if !scored.is_empty() {
            let mut scored = scored;
            self.scored
                .session(&caps[port::SCORED])
                .give_container(&mut scored);
        }
        if let Some(tally) = tally {
            self.tallies.session(&caps[port::TALLIES]).give(tally);
        }
        if let Some(window) = window {
            self.windows.session(&caps[port::WINDOWS]).give(window);
        }
        if let Some(eval) = eval {
            self.evals.session(&caps[port::EVALS]).give(eval);
        }
        for delta in deltas {
            self.deltas.session(&caps[port::DELTAS]).give(delta);
        }
        if let Some(release) = release {
            self.releases.session(&caps[port::RELEASES]).give(release);
        }
        for snapshot in snapshots {
            self.snapshots
                .session(&caps[port::SNAPSHOTS])
                .give(snapshot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::PromoteRule;
    use crate::featurize::FeatureSpec;
    use crate::record::{Pos, Record};
    use crate::schema::{Schema, SchemaSpec};
    use std::sync::Arc;

    fn setup() -> (Arc<Features>, Scorer) {
        let spec: SchemaSpec = serde_json::from_str(
            r#"{"key": "k", "event_time": {"field": "t"}, "label": {"field": "y"}, "numeric": [{"name": "x"}]}"#,
        )
        .unwrap();
        let schema = Arc::new(Schema::new(&spec).unwrap());
        let f: Vec<FeatureSpec> =
            serde_json::from_str(r#"[{"kind": "value", "field": "x"}]"#).unwrap();
        let features = Arc::new(Features::new(schema, &f).unwrap());
        let scorer = Scorer::new(&ModelSpec::default(), &features);
        (features, scorer)
    }

    fn logistic(s: &Scorer) -> &crate::learn::LogisticRegression {
        match &s.model {
            Learner::Logistic(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn example(x: f64, label: Option<f64>) -> Example {
        let record = Record {
            pos: Pos { input: 0, line: 0 },
            source: "s".into(),
            line_hash: 0,
            key: "k".into(),
            key_hash: 0,
            id: None,
            event_time: 7,
            label,
            nums: vec![x],
            missing: 0,
            cats: vec![],
            arrived_ms: 0,
        };
        Example {
            record,
            dense: vec![x],
            sparse: vec![],
        }
    }

    #[test]
    fn predicts_with_statistics_from_before_and_learns_with_them_after() {
        let (_, mut s) = setup();
        let mut eval = EvalPartial::default();
        // Record 1: no variance yet, the model is zero: p = 0.5.
        assert_eq!(s.apply(example(1.0, Some(1.0)), &mut eval).score, 0.5);
        // It was learned with its own statistics (var 0 -> standardised 0): only the intercept moved.
        assert_eq!(logistic(&s).weights, [0.0]);
        assert_eq!(logistic(&s).intercept, 0.005);
        // Record 2 is predicted with record 1's statistics (mean 1, var 0): standardised 0.
        let p2 = s.apply(example(3.0, Some(0.0)), &mut eval).score;
        assert_eq!(p2, 1.0 / (1.0 + (-0.005f64).exp()));
        // ... and learned with both: mean 2, sd 1, so x = 1 and w = -lr * g.
        let g = p2 - 0.0;
        assert!((logistic(&s).weights[0] - (-0.01 * g)).abs() < 1e-15);
        assert_eq!((eval.n, s.scaler.count[0]), (2, 2));
    }

    #[test]
    fn unlabelled_records_are_scored_but_not_learned() {
        let (_, mut s) = setup();
        let mut eval = EvalPartial::default();
        let out = s.apply(example(2.0, None), &mut eval);
        assert_eq!((out.score, out.model_version), (0.5, 1));
        assert_eq!((eval.n, s.model.updates(), s.scaler.count[0]), (0, 0, 0));
        assert_eq!(eval.event_range, Some((7, 7)));
    }

    #[test]
    fn a_lone_worker_versions_its_tree_as_a_linear_model_is_versioned() {
        let (features, _) = setup();
        for kind in [
            crate::learn::logistic::ModelKind::HoeffdingTree,
            crate::learn::logistic::ModelKind::AdaptiveRandomForest,
        ] {
            let spec = ModelSpec {
                kind,
                refresh_records: Some(50),
                ..Default::default()
            };
            let mut a = Scorer::new(&spec, &features);
            a.enable_refresh(&spec, true);
            let mut eval = EvalPartial::default();
            let start = a.version;
            for epoch in 0..4 {
                for i in 0..60 {
                    let x = (i % 17) as f64;
                    a.apply(example(x, Some(f64::from(x > 8.0))), &mut eval);
                }
                assert!(a.publish(0, epoch, 1).is_none(), "nothing to send");
            }
            assert_eq!(
                a.version,
                start + 4,
                "{kind:?}: a version per 50 records, at most one per epoch"
            );
            assert_eq!(
                a.release(4).model,
                a.model,
                "the registry gets the worker's model"
            );
        }
    }

    #[test]
    fn trees_make_one_forest_every_worker_scores_with() {
        let (features, _) = setup();
        let spec = ModelSpec {
            kind: crate::learn::logistic::ModelKind::HoeffdingTree,
            refresh_records: Some(50),
            ..Default::default()
        };
        let (mut a, mut b) = (Scorer::new(&spec, &features), Scorer::new(&spec, &features));
        a.enable_refresh(&spec, false);
        b.enable_refresh(&spec, false);
        let mut eval = EvalPartial::default();
        for i in 0..200 {
            let x = (i % 17) as f64;
            a.apply(example(x, Some(f64::from(x > 8.0))), &mut eval);
            b.apply(example(-x, Some(f64::from(x > 3.0))), &mut eval);
        }
        let deltas: Vec<ModelDelta> = [a.publish(0, 4, 2), b.publish(1, 4, 2)]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(deltas.len(), 2);
        a.merge(0, &deltas);
        b.merge(1, &deltas);
        assert_eq!((a.version, b.version), (2, 2));
        let (mut e1, mut e2) = (EvalPartial::default(), EvalPartial::default());
        for x in [-12.0, -2.0, 0.0, 5.0, 11.0] {
            let (pa, pb) = (
                a.step(&example(x, None), &mut e1),
                b.step(&example(x, None), &mut e2),
            );
            assert_eq!(pa, pb, "both score with the same forest at {x}");
        }
        // Nothing new learned: nothing to publish, and the forest stands.
        assert!(a.publish(0, 5, 2).is_none());
    }

    #[test]
    fn merged_updates_add_up_and_a_worker_keeps_what_it_has_not_sent() {
        let (_, base) = setup();
        let spec = ModelSpec {
            refresh_records: Some(2),
            ..Default::default()
        };
        let (mut a, mut b) = (base.clone(), base.clone());
        a.enable_refresh(&spec, false);
        b.enable_refresh(&spec, false);
        let mut eval = EvalPartial::default();
        for x in [1.0, 2.0, 3.0] {
            a.apply(example(x, Some(1.0)), &mut eval);
        }
        b.apply(example(-1.0, Some(0.0)), &mut eval);
        let da = a.publish(0, 3, 5).expect("3 records learned: a publishes");
        assert!(b.publish(1, 3, 5).is_none(), "1 record: b keeps it");
        // Both apply the merge set {a}: a becomes the new shared model; b keeps its own record on top.
        let (pa, pb_before) = (a.model.params().unwrap(), b.model.params().unwrap());
        a.merge(0, std::slice::from_ref(&da));
        b.merge(1, &[da]);
        assert_eq!((a.version, b.version), (2, 2));
        assert_eq!(a.model.params().unwrap(), pa);
        let pb = b.model.params().unwrap();
        let base_p = base.model.params().unwrap();
        for i in 0..pb.len() {
            let expect = pa[i] + (pb_before[i] - base_p[i]);
            assert!((pb[i] - expect).abs() < 1e-12, "{i}: {} vs {expect}", pb[i]);
        }
        assert_eq!(b.scaler.count[0], 4, "a's 3 records and b's 1");
        assert_eq!(b.model.updates(), 4);
    }

    fn machine_setup(snapshot: bool) -> ScoreSetup {
        ScoreSetup {
            step_id: "score".into(),
            worker: 0,
            peers: 1,
            spec: ModelSpec {
                refresh_records: Some(2),
                publish_every_versions: Some(1),
                ..ModelSpec::default()
            },
            shared: false,
            labels: None,
            watched: None,
            snapshot,
        }
    }

    fn epoch_of(epoch: Epoch, xs: &[f64]) -> ScoreInput {
        ScoreInput {
            epoch,
            examples: xs
                .iter()
                .map(|&x| example(x, Some(f64::from(x > 0.0))))
                .collect(),
            ..ScoreInput::default()
        }
    }

    #[test]
    fn the_machine_scores_every_example_in_order_and_reports_the_epoch() {
        let (_, s) = setup();
        let mut m = ScoreMachine::new(machine_setup(false), s, None, None).unwrap();
        let out = m.on_epoch(epoch_of(0, &[1.0, -1.0, 2.0]));
        assert_eq!(out.scored.len(), 3);
        let xs: Vec<f64> = out.scored.iter().map(|s| s.record.nums[0]).collect();
        assert_eq!(xs, [1.0, -1.0, 2.0]);
        let eval = out.eval.unwrap();
        assert_eq!(eval.n, 3);
        assert!(eval.shadow.is_none() && out.tally.is_none() && out.snapshots.is_empty());
        // Two learned records make a version: worker 0 releases it.
        assert!(out.release.is_some_and(|r| !r.promoted));
        // An empty epoch reports nothing and releases nothing.
        let out = m.on_epoch(epoch_of(1, &[]));
        assert_eq!(out, ScoreOutput::default());
    }

    #[test]
    fn a_forced_promotion_swaps_the_models_under_a_newer_version() {
        let (features, s) = setup();
        let force = Arc::new(AtomicBool::new(false));
        let challenger_spec = ModelSpec {
            learning_rate: 0.5,
            ..machine_setup(false).spec
        };
        let shadow = ShadowSetup {
            scorer: Scorer::new(&challenger_spec, &features),
            spec: challenger_spec,
            arena: Arena::new(PromoteRule::default()),
            shared_tallies: false,
            promote_now: Some(force.clone()),
        };
        let mut m = ScoreMachine::new(machine_setup(true), s, Some(shadow), None).unwrap();
        let out = m.on_epoch(epoch_of(0, &[1.0, -1.0]));
        // The challenger scores in shadow; nothing is promoted by the rule yet.
        assert!(out.scored.iter().all(|s| s.shadow_score.is_some()));
        assert!(out.eval.as_ref().unwrap().shadow.is_some());
        assert_eq!(out.snapshots.len(), 2);
        assert!(!out.release.as_ref().unwrap().promoted);
        let before = out.scored[0].model_version;
        force.store(true, Ordering::Relaxed);
        let out = m.on_epoch(epoch_of(1, &[1.0, -1.0]));
        let release = out.release.unwrap();
        assert!(release.promoted);
        assert!(release.version > before);
        assert!(!force.load(Ordering::Relaxed), "the command is used once");
        // From now on the challenger's learning rate is the champion's.
        assert_eq!(m.champion.config, 1);
    }

    #[test]
    fn a_machine_resumed_from_its_snapshot_carries_on_as_if_never_stopped() {
        let (_, s) = setup();
        let epochs: Vec<Vec<f64>> = (0..6)
            .map(|e| (0..5).map(|i| f64::from(e * 5 + i % 3) - 4.0).collect())
            .collect();
        let mut whole = ScoreMachine::new(machine_setup(true), s.clone(), None, None).unwrap();
        let mut outs = Vec::new();
        for (e, xs) in epochs.iter().enumerate() {
            outs.push(whole.on_epoch(epoch_of(e as Epoch, xs)));
        }
        let snap = &outs[2].snapshots[0];
        let mut resumed =
            ScoreMachine::new(machine_setup(true), s, None, Some(&snap.bytes)).unwrap();
        for (e, xs) in epochs.iter().enumerate().skip(3) {
            assert_eq!(
                resumed.on_epoch(epoch_of(e as Epoch, xs)),
                outs[e],
                "epoch {e}"
            );
        }
    }
}

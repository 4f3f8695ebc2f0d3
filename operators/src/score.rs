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

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

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
    pub promote_now: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
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
        mut scorer: Scorer,
        watched: Option<Watched>,
        state: StateIo,
        refresh: Refresh<'scope>,
    ) -> Result<ScoreStreams<'scope>, StateError> {
        let worker = self.scope().index();
        let peers = self.scope().peers();
        if let Some(bytes) = &state.restore {
            scorer = decode::<Scorer>(step_id, bytes)?.restored();
        }
        let mut builder = OperatorBuilder::new(step_id.to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        scorer.enable_refresh(&refresh.spec, refresh.updates.is_none());
        scorer.share_ensemble(worker, peers);
        let delayed = refresh.labels.is_some();
        let publish_every = refresh.spec.publish_every_versions.unwrap_or(10).max(1);
        let mut updates_in = refresh
            .updates
            .map(|updates| builder.new_input(updates, Pipeline));
        let mut next_input = 1 + usize::from(updates_in.is_some());
        let labels_ix = next_input;
        let horizon = refresh.labels.as_ref().map(|l| (l.1, l.2));
        let mut labels_in = refresh.labels.map(|(labels, horizon, max_waiting)| {
            scorer.expect_labels(horizon, max_waiting);
            builder.new_input(labels, Pipeline)
        });
        next_input += usize::from(labels_in.is_some());
        let tallies_ix = next_input;
        // The challenger: a second scorer, and the arena every worker keeps the same.
        let mut tallies_in = None;
        let mut promote_now = None;
        let mut shadow = refresh.challenger.map(|c| {
            let mut sc = c.scorer;
            sc.config = 1;
            sc.enable_refresh(&c.spec, updates_in.is_none());
            sc.share_ensemble(worker, peers);
            if let Some((h, m)) = horizon {
                sc.expect_labels(h, m);
            }
            tallies_in = c.tallies.map(|t| builder.new_input(t, Pipeline));
            promote_now = c.promote_now;
            (sc, c.arena)
        });
        // Resuming right after an epoch: send again what the restored state says
        // was sent in it (the updates and tallies whose merge the checkpoint did not see).
        let mut resend: Vec<ModelDelta> = Vec::new();
        let mut resend_tally = None;
        if let Some(e) = refresh.resumed_after {
            if updates_in.is_some() {
                resend.extend(scorer.unmerged_outbox(e));
                if let Some((sc, _)) = shadow.as_ref() {
                    resend.extend(sc.unmerged_outbox(e).map(|mut d| {
                        d.model = 1;
                        d
                    }));
                }
            }
            if let (Some((_, arena)), true) = (shadow.as_ref(), tallies_in.is_some()) {
                resend_tally = arena.outbox.filter(|t| t.epoch == e);
            }
        }
        let resumed_after = refresh.resumed_after;
        let (scored_out, scored) = builder.new_output();
        let (eval_out, evals) = builder.new_output();
        let (snap_out, snapshots) = builder.new_output();
        let (windows_out, windows) = builder.new_output();
        let (deltas_out, deltas) = builder.new_output();
        let (releases_out, releases) = builder.new_output();
        let (tallies_out, tallies) = builder.new_output();
        let mut windows_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<WindowPartial>>>::from(windows_out);
        let mut scored_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Scored>>>::from(scored_out);
        let mut eval_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<EvalPartial>>>::from(eval_out);
        let mut snap_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Snapshot>>>::from(snap_out);
        let mut deltas_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<ModelDelta>>>::from(deltas_out);
        let mut releases_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<ModelRelease>>>::from(releases_out);
        let mut tallies_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<ArenaTally>>>::from(tallies_out);
        let step = step_id.to_string();
        builder.build(move |caps| {
            let mut resend = resumed_after
                .filter(|_| !resend.is_empty())
                .map(|e| (caps[4].delayed(&e), resend));
            let mut resend_tally = resend_tally.map(|t| (caps[6].delayed(&t.epoch), t));
            drop(caps);
            let mut stash = EpochStash::new(7);
            let mut merges: EpochStash<ModelDelta> = EpochStash::new(7);
            let mut late: EpochStash<Label> = EpochStash::new(7);
            let mut scores: EpochStash<ArenaTally> = EpochStash::new(7);
            move |frontiers| {
                if let Some((cap, ds)) = resend.take() {
                    deltas_out
                        .activate()
                        .session(&cap)
                        .give_iterator(ds.into_iter());
                }
                if let Some((cap, t)) = resend_tally.take() {
                    tallies_out.activate().session(&cap).give(t);
                }
                stash.ingest(&mut input);
                if let Some(u) = updates_in.as_mut() {
                    merges.ingest(u);
                }
                if let Some(l) = labels_in.as_mut() {
                    late.ingest(l);
                }
                if let Some(t) = tallies_in.as_mut() {
                    scores.ingest(t);
                }
                let mut scored_handle = scored_out.activate();
                let mut eval_handle = eval_out.activate();
                let mut snap_handle = snap_out.activate();
                let mut windows_handle = windows_out.activate();
                let mut deltas_handle = deltas_out.activate();
                let mut releases_handle = releases_out.activate();
                let mut tallies_handle = tallies_out.activate();
                // The oldest epoch with work, once every input has passed it; merges before examples.
                while let Some(epoch) =
                    [stash.first(), merges.first(), late.first(), scores.first()]
                        .into_iter()
                        .flatten()
                        .min()
                {
                    if frontiers.iter().any(|f| f.less_equal(&epoch)) {
                        break;
                    }
                    let version = scorer.version;
                    let mut caps = None;
                    let mut promoted = false;
                    if merges.first() == Some(epoch) {
                        let (_, c, deltas) = merges.next_ready(&frontiers[1]).expect("passed");
                        let (champion, challenger): (Vec<ModelDelta>, Vec<ModelDelta>) =
                            deltas.into_iter().partition(|d| d.model == 0);
                        scorer.merge(worker, &champion);
                        if let Some((sc, _)) = shadow.as_mut() {
                            sc.merge(worker, &challenger);
                        }
                        caps = Some(c);
                    }
                    if scores.first() == Some(epoch) {
                        // Every worker's tallies of the previous epoch: the same decision everywhere.
                        let (_, c, tallies) =
                            scores.next_ready(&frontiers[tallies_ix]).expect("passed");
                        if let Some((sc, arena)) = shadow.as_mut() {
                            if arena.observe(&tallies) {
                                // After this epoch's merges: the version they made is the one to go past.
                                promote(&mut scorer, sc);
                                promoted = true;
                            }
                        }
                        caps = Some(c);
                    }
                    let mut eval = EvalPartial {
                        worker,
                        ..EvalPartial::default()
                    };
                    let mut shadow_eval = EvalPartial {
                        worker,
                        ..EvalPartial::default()
                    };
                    if late.first() == Some(epoch) {
                        let (_, c, mut labels) =
                            late.next_ready(&frontiers[labels_ix]).expect("passed");
                        // Labels come from every worker: their order is made deterministic.
                        labels.sort_by_key(|l| l.pos);
                        if let Some((sc, _)) = shadow.as_mut() {
                            sc.labels(labels.clone(), &mut shadow_eval);
                        }
                        scorer.labels(labels, &mut eval);
                        caps = Some(c);
                    }
                    let mut batch = Vec::new();
                    if stash.first() == Some(epoch) {
                        let (_, c, b) = stash.next_ready(&frontiers[0]).expect("passed");
                        batch = b;
                        caps = Some(c);
                    }
                    if delayed && peers > 1 {
                        // Records were routed by id from every worker: input order, deterministically.
                        batch.sort_by_key(|ex| ex.record.pos);
                    }
                    let caps = caps.expect("an epoch with work");
                    let mut partial = WindowPartial {
                        worker,
                        ..WindowPartial::default()
                    };
                    if !batch.is_empty() {
                        let mut session = scored_handle.session(&caps[0]);
                        for ex in batch {
                            let shadow_score = shadow
                                .as_mut()
                                .map(|(sc, _)| sc.step(&ex, &mut shadow_eval));
                            let mut s = scorer.apply(ex, &mut eval);
                            s.shadow_score = shadow_score;
                            match &watched {
                                Some(w) => partial.add(w, &s),
                                None => partial.arrived(s.record.arrived_ms),
                            }
                            session.give(s);
                        }
                    }
                    scorer.end_epoch(&mut eval);
                    if let Some((sc, arena)) = shadow.as_mut() {
                        sc.end_epoch(&mut shadow_eval);
                        let mut tally = ArenaTally::of(worker, epoch, &eval, &shadow_eval);
                        tally.force = promote_now
                            .as_ref()
                            .is_some_and(|f| f.swap(false, std::sync::atomic::Ordering::Relaxed));
                        if tallies_in.is_some() {
                            // Several workers: everyone decides on everyone's tallies, next
                            // epoch. Only tallies with records: an empty one would come back
                            // as an epoch to process, and so on forever after the input ends.
                            if tally.n > 0 || tally.force {
                                arena.outbox = Some(tally);
                                tallies_handle.session(&caps[6]).give(tally);
                            }
                        } else if arena.observe(&[tally]) {
                            // Alone: decided now, in effect from the next epoch.
                            promote(&mut scorer, sc);
                            promoted = true;
                        }
                        eval.shadow = Some(Box::new(std::mem::take(&mut shadow_eval)));
                    }
                    if eval.event_range.is_some() {
                        windows_handle.session(&caps[3]).give(partial);
                    }
                    if eval.event_range.is_some() || eval.n > 0 || !eval.labels.is_empty() {
                        eval_handle.session(&caps[1]).give(eval);
                    }
                    if let Some(d) = scorer.publish(worker, epoch, peers) {
                        deltas_handle.session(&caps[4]).give(d);
                    }
                    if let Some((sc, _)) = shadow.as_mut() {
                        if let Some(mut d) = sc.publish(worker, epoch, peers) {
                            d.model = 1;
                            deltas_handle.session(&caps[4]).give(d);
                        }
                    }
                    // Every `publish_every` versions, and at a promotion, worker 0 hands the shared model to the registry.
                    if worker == 0
                        && scorer.version != version
                        && (promoted || (scorer.version - 1).is_multiple_of(publish_every))
                    {
                        let mut release = scorer.release(epoch);
                        release.promoted = promoted;
                        releases_handle.session(&caps[5]).give(release);
                    }
                    if state.snapshot {
                        snap_handle.session(&caps[2]).give(Snapshot {
                            step_id: step.clone(),
                            worker,
                            epoch,
                            bytes: encode(&scorer),
                        });
                        if let Some(sh) = shadow.as_ref() {
                            snap_handle.session(&caps[2]).give(Snapshot {
                                step_id: CHALLENGER_STEP.to_string(),
                                worker,
                                epoch,
                                bytes: encode(sh),
                            });
                        }
                    }
                }
            }
        });
        Ok(ScoreStreams {
            scored,
            evals,
            snapshots,
            windows,
            deltas,
            releases,
            tallies,
        })
    }
}

/// The challenger takes over: the two swap, and the new champion scores
/// under the version after both of theirs (versions only go up).
fn promote(champion: &mut Scorer, challenger: &mut Scorer) {
    std::mem::swap(champion, challenger);
    champion.version = champion.version.max(challenger.version) + 1;
}

#[cfg(test)]
mod tests {
    use super::*;
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
}

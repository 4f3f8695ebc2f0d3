//! `score`: predict, then learn (prequential), and evaluate.
//!
//! **In:** [`Example`]s through a pipeline pact (they are already on the
//! worker that owns their key; the model is per worker until the refresh of
//! the cluster issue merges them).
//! **Out:** one [`Scored`] row per example — every record is scored, labelled
//! or not — and one [`EvalPartial`] per epoch with the prequential metrics of
//! the labelled ones.
//! **Order of work per labelled record** (River's pipeline semantics): the
//! dense features are standardised with the scaler's statistics from *before*
//! the record and scored; then the scaler learns the record, the features are
//! standardised again with the updated statistics, and the model learns from
//! those. Unlabelled records are only scored.
//! **Order:** epoch at a time, once the frontier has passed the epoch.
//! **State** ([`Scorer`]: scaler statistics, weights, version; a [`Snapshot`]
//! after each processed epoch when checkpointing, restored from one at
//! construction).

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

use crate::epochs::{decode, encode, EpochStash, Snapshot, StateError, StateIo};
use crate::featurize::Features;
use crate::learn::logistic::ModelSpec;
use crate::learn::{EvalPartial, LogisticRegression, StandardScaler};
use crate::monitor::{Watched, WindowPartial};
use crate::record::{Example, Scored};
use crate::Epoch;

/// The model state of `score` on one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scorer {
    /// Running standardisation of the dense features.
    pub scaler: StandardScaler,
    /// The learner.
    pub model: LogisticRegression,
    /// The version stamped on scored rows.
    pub version: u64,
    threshold: f64,
    /// `kind = "feature"`: the dense feature that is the score.
    #[serde(default)]
    feature: Option<usize>,
    #[serde(skip)]
    scratch: Vec<f64>,
}

impl Scorer {
    /// Recomputes derived values after being decoded from a snapshot.
    pub fn restored(mut self) -> Self {
        self.scaler = self.scaler.restored();
        self
    }

    /// A fresh model for `features`.
    pub fn new(spec: &ModelSpec, features: &Features) -> Self {
        Scorer {
            scaler: StandardScaler::new(features.standardize.clone()),
            model: LogisticRegression::new(spec, features.dense_len(), features.sparse_len()),
            version: 1,
            threshold: spec.threshold,
            feature: match spec.kind {
                crate::learn::logistic::ModelKind::Feature => spec
                    .feature
                    .as_ref()
                    .and_then(|f| features.dense_names.iter().position(|n| n == f)),
                _ => None,
            },
            scratch: Vec::new(),
        }
    }

    /// Scores `ex` and, if labelled, learns from it; records the evaluation in `eval`.
    pub fn apply(&mut self, ex: Example, eval: &mut EvalPartial) -> Scored {
        if let Some(k) = self.feature {
            let p = ex.dense[k];
            eval.saw_event_time(ex.record.event_time);
            if let Some(y) = ex.record.label {
                eval.observe(p, y > 0.5, self.threshold);
            }
            return Scored {
                record: ex.record,
                score: p,
                model_version: self.version,
            };
        }
        self.scaler.transform(&ex.dense, &mut self.scratch);
        let p = self.model.predict(&self.scratch, &ex.sparse);
        eval.saw_event_time(ex.record.event_time);
        if let Some(y) = ex.record.label {
            eval.observe(p, y > 0.5, self.threshold);
            self.scaler.learn(&ex.dense);
            self.scaler.transform(&ex.dense, &mut self.scratch);
            self.model.learn(&self.scratch, &ex.sparse, y);
        }
        Scored {
            record: ex.record,
            score: p,
            model_version: self.version,
        }
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
    ) -> Result<ScoreStreams<'scope>, StateError>;
}

impl<'scope> Score<'scope> for Stream<'scope, Epoch, Vec<Example>> {
    fn score(
        self,
        step_id: &str,
        mut scorer: Scorer,
        watched: Option<Watched>,
        state: StateIo,
    ) -> Result<ScoreStreams<'scope>, StateError> {
        let worker = self.scope().index();
        if let Some(bytes) = &state.restore {
            scorer = decode::<Scorer>(step_id, bytes)?.restored();
        }
        let mut builder = OperatorBuilder::new(step_id.to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (scored_out, scored) = builder.new_output();
        let (eval_out, evals) = builder.new_output();
        let (snap_out, snapshots) = builder.new_output();
        let (windows_out, windows) = builder.new_output();
        let mut windows_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<WindowPartial>>>::from(windows_out);
        let mut scored_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Scored>>>::from(scored_out);
        let mut eval_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<EvalPartial>>>::from(eval_out);
        let mut snap_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Snapshot>>>::from(snap_out);
        let step = step_id.to_string();
        builder.build(move |_caps| {
            let mut stash = EpochStash::new(4);
            move |frontiers| {
                stash.ingest(&mut input);
                let mut scored_handle = scored_out.activate();
                let mut eval_handle = eval_out.activate();
                let mut snap_handle = snap_out.activate();
                let mut windows_handle = windows_out.activate();
                while let Some((epoch, caps, batch)) = stash.next_ready(&frontiers[0]) {
                    let mut eval = EvalPartial {
                        worker,
                        ..EvalPartial::default()
                    };
                    let mut session = scored_handle.session(&caps[0]);
                    let mut partial = WindowPartial {
                        worker,
                        ..WindowPartial::default()
                    };
                    for ex in batch {
                        let s = scorer.apply(ex, &mut eval);
                        match &watched {
                            Some(w) => partial.add(w, &s),
                            None => partial.arrived(s.record.arrived_ms),
                        }
                        session.give(s);
                    }
                    windows_handle.session(&caps[3]).give(partial);
                    eval_handle.session(&caps[1]).give(eval);
                    if state.snapshot {
                        snap_handle.session(&caps[2]).give(Snapshot {
                            step_id: step.clone(),
                            worker,
                            epoch,
                            bytes: encode(&scorer),
                        });
                    }
                }
            }
        });
        Ok(ScoreStreams {
            scored,
            evals,
            snapshots,
            windows,
        })
    }
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

    fn example(x: f64, label: Option<f64>) -> Example {
        let record = Record {
            pos: Pos { input: 0, line: 0 },
            source: "s".into(),
            line_hash: 0,
            key: "k".into(),
            key_hash: 0,
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
        assert_eq!(s.model.weights, [0.0]);
        assert_eq!(s.model.intercept, 0.005);
        // Record 2 is predicted with record 1's statistics (mean 1, var 0): standardised 0.
        let p2 = s.apply(example(3.0, Some(0.0)), &mut eval).score;
        assert_eq!(p2, 1.0 / (1.0 + (-0.005f64).exp()));
        // ... and learned with both: mean 2, sd 1, so x = 1 and w = -lr * g.
        let g = p2 - 0.0;
        assert!((s.model.weights[0] - (-0.01 * g)).abs() < 1e-15);
        assert_eq!((eval.n, s.scaler.count[0]), (2, 2));
    }

    #[test]
    fn unlabelled_records_are_scored_but_not_learned() {
        let (_, mut s) = setup();
        let mut eval = EvalPartial::default();
        let out = s.apply(example(2.0, None), &mut eval);
        assert_eq!((out.score, out.model_version), (0.5, 1));
        assert_eq!((eval.n, s.model.updates, s.scaler.count[0]), (0, 0, 0));
        assert_eq!(eval.event_range, Some((7, 7)));
    }
}

//! Delayed labels: labels that arrive later than their records, on their own
//! source, joined to the predictions by record id.
//!
//! `label_lines` turns the label source's parsed lines into [`Label`]s (the
//! id is the label schema's key, so `key_hash` routes a label to the worker
//! that holds its prediction) and rejects, with a [`Tally`] per epoch so the
//! ledger accounts for every label line.
//!
//! [`Pending`] is the join state `score` keeps per worker: predictions waiting
//! for their label (with the features they were made from, so the model can
//! learn from them later), labels that came before their prediction, and
//! joined pairs waiting for the scored stream to reach the time their label
//! became known. A prediction expires once *both* streams have passed its
//! event time plus `horizon_ms`: the scored records (it was made) and the
//! labels (its label would have come by then) — the interval join's
//! watermark, the lesser of its inputs'. So a label stream read behind the
//! records (a backlog after downtime, a replay, a label topic with fewer
//! partitions than workers) does not expire predictions whose labels are on
//! their way. A label stream that stops altogether would keep every
//! prediction: at most `max_waiting` wait per worker, and beyond that the
//! oldest expire. A label without a prediction is orphaned once the scored
//! stream has passed its time plus the horizon.
//! Everything is counted ([`LabelCounts`]):
//!
//! - predictions made without a label = `learned` + `due` + `expired` + `waiting`;
//! - label lines accepted = `learned` + `due` + `orphaned` + `early`.
//!
//! `learned`, `expired` and `orphaned` are per-epoch counts; `waiting`,
//! `due` and `early` are levels at the end of the epoch.
//!
//! Order: `score` hands labels to [`Pending::label`] at the start of their
//! epoch and each prediction to [`Pending::predicted`] as it makes it; before
//! scoring a record at event time t it learns every joined pair whose label
//! was known at or before t ([`Pending::due`]). With labels known at their
//! record's own time this is exactly "predict, then learn" — the same numbers
//! as labels inline.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

use crate::epochs::EpochStash;
use crate::ledger::Tally;
use crate::record::{Parsed, Pos, Reject};
use crate::Epoch;

/// A label from the label source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// The record id it belongs to.
    pub id: String,
    /// `key_hash` of the id: the worker that owns it holds the prediction.
    pub id_hash: u64,
    /// The label.
    pub label: f64,
    /// When it became known (event-time ms); `None`: as soon as it is read.
    pub known_ms: Option<i64>,
    /// Where the label line came from.
    pub pos: Pos,
}

/// What became of predictions and labels (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelCounts {
    /// Predictions evaluated and learned from with their late label.
    pub learned: u64,
    /// Predictions whose label did not come within the horizon.
    pub expired: u64,
    /// Labels that met no prediction within the horizon.
    pub orphaned: u64,
    /// Level: predictions still waiting for a label.
    pub waiting: u64,
    /// Level: joined, waiting for the scored stream to reach the label's time.
    pub due: u64,
    /// Level: labels waiting for their prediction.
    pub early: u64,
}

impl LabelCounts {
    /// Adds the counts and the levels (levels of different workers add up).
    pub fn add(&mut self, o: &LabelCounts) {
        self.learned += o.learned;
        self.expired += o.expired;
        self.orphaned += o.orphaned;
        self.waiting += o.waiting;
        self.due += o.due;
        self.early += o.early;
    }

    /// Whether anything happened or is held.
    pub fn is_empty(&self) -> bool {
        *self == LabelCounts::default()
    }
}

/// A prediction kept for its label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The record's event time.
    pub event_time: i64,
    /// The dense features, not standardised (the scaler learns them with the label).
    pub dense: Vec<f64>,
    /// The sparse features.
    pub sparse: Vec<u32>,
    /// The score it was given.
    pub score: f64,
    /// The model version that gave it.
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Early {
    label: f64,
    known_ms: Option<i64>,
    /// This worker's event time when the label was read.
    seen_ms: i64,
}

/// The join state of one worker (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    horizon_ms: i64,
    waiting: HashMap<String, Prediction>,
    early: HashMap<String, Early>,
    /// Joined pairs by (time the label is known, join order).
    ready: BTreeMap<(i64, u64), (Prediction, f64)>,
    seq: u64,
    /// The latest event time scored on this worker.
    watermark: i64,
    /// The latest time a label arriving here became known (its `known_ms`,
    /// else this worker's event time when it was read).
    #[serde(default = "never")]
    label_clock: i64,
    /// Predictions that may wait at once.
    #[serde(default = "default_max_waiting")]
    pub max_waiting: usize,
    counts: LabelCounts,
}

fn never() -> i64 {
    i64::MIN
}

/// Predictions a worker keeps for their labels at most, by default (~200 MB of quickstart predictions).
pub const DEFAULT_MAX_WAITING: usize = 1_000_000;

fn default_max_waiting() -> usize {
    DEFAULT_MAX_WAITING
}

impl Pending {
    /// Empty state; predictions wait `horizon_ms` for their label, at most `max_waiting` of them.
    pub fn new(horizon_ms: i64, max_waiting: usize) -> Self {
        Pending {
            horizon_ms,
            waiting: HashMap::new(),
            early: HashMap::new(),
            ready: BTreeMap::new(),
            seq: 0,
            watermark: i64::MIN,
            label_clock: i64::MIN,
            max_waiting: max_waiting.max(1),
            counts: LabelCounts::default(),
        }
    }

    fn join(&mut self, p: Prediction, label: f64, known_ms: Option<i64>) {
        // A label with no time is due at once; one with a time, when the stream reaches it.
        let at = known_ms.map_or(i64::MIN, |k| k.max(p.event_time));
        self.ready.insert((at, self.seq), (p, label));
        self.seq += 1;
    }

    /// A label arrived.
    pub fn label(&mut self, l: Label) {
        self.label_clock = self.label_clock.max(l.known_ms.unwrap_or(self.watermark));
        if let Some(p) = self.waiting.remove(&l.id) {
            self.join(p, l.label, l.known_ms);
        } else if self.early.contains_key(&l.id) {
            // A second label for an id still unmatched: the first one stands.
            self.counts.orphaned += 1;
        } else {
            self.early.insert(
                l.id,
                Early {
                    label: l.label,
                    known_ms: l.known_ms,
                    seen_ms: self.watermark,
                },
            );
        }
    }

    /// A prediction for record `id` was made (the record had no label).
    pub fn predicted(&mut self, id: &str, p: Prediction) {
        self.watermark = self.watermark.max(p.event_time);
        if let Some(e) = self.early.remove(id) {
            self.join(p, e.label, e.known_ms);
        } else if self.waiting.insert(id.to_string(), p).is_some() {
            // The same id scored twice: the earlier prediction can no longer be matched.
            self.counts.expired += 1;
        }
    }

    /// The scored stream reached event time `t`.
    pub fn saw(&mut self, t: i64) {
        self.watermark = self.watermark.max(t);
    }

    /// The next joined pair whose label was known at or before `t`.
    pub fn due(&mut self, t: i64) -> Option<(Prediction, f64)> {
        let entry = self.ready.first_entry()?;
        if entry.key().0 > t {
            return None;
        }
        self.counts.learned += 1;
        Some(entry.remove())
    }

    /// This worker's latest event time.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Expires (and counts) the predictions made before `t`.
    fn expire_before(&mut self, t: i64) {
        let before = self.waiting.len();
        self.waiting.retain(|_, p| p.event_time >= t);
        self.counts.expired += (before - self.waiting.len()) as u64;
    }

    /// Expires what waited longer than the horizon; returns the epoch's counts and levels.
    pub fn end_epoch(&mut self) -> LabelCounts {
        if self.watermark != i64::MIN {
            let cutoff = self.watermark.saturating_sub(self.horizon_ms);
            // Predictions: by the lesser of the two streams' times.
            let clock = self.watermark.min(self.label_clock);
            if clock != i64::MIN {
                self.expire_before(clock.saturating_sub(self.horizon_ms));
            }
            if self.waiting.len() > self.max_waiting {
                // Over the bound: the oldest go (ties at the cut go too, so it holds).
                let mut times: Vec<i64> = self.waiting.values().map(|p| p.event_time).collect();
                let excess = self.waiting.len() - self.max_waiting;
                let kth = *times.select_nth_unstable(excess - 1).1;
                self.expire_before(kth.saturating_add(1));
            }
            let before = self.early.len();
            self.early
                .retain(|_, e| e.known_ms.unwrap_or(i64::MIN).max(e.seen_ms) >= cutoff);
            self.counts.orphaned += (before - self.early.len()) as u64;
        }
        let mut out = std::mem::take(&mut self.counts);
        out.waiting = self.waiting.len() as u64;
        out.due = self.ready.len() as u64;
        out.early = self.early.len() as u64;
        out
    }
}

/// The output streams of [`LabelLines::label_lines`].
pub struct LabelStreams<'scope> {
    /// Accepted labels.
    pub labels: Stream<'scope, Epoch, Vec<Label>>,
    /// Label lines that do not parse or break a rule.
    pub rejected: Stream<'scope, Epoch, Vec<Reject>>,
    /// Per epoch: accepted labels and rejects by reason.
    pub tallies: Stream<'scope, Epoch, Vec<Tally>>,
}

/// Parsed label lines into labels and rejects.
pub trait LabelLines<'scope> {
    /// See the module docs.
    fn label_lines(self, step_id: &str) -> LabelStreams<'scope>;
}

impl<'scope> LabelLines<'scope> for Stream<'scope, Epoch, Vec<Parsed>> {
    fn label_lines(self, step_id: &str) -> LabelStreams<'scope> {
        let mut builder = OperatorBuilder::new(step_id.to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (labels_out, labels) = builder.new_output();
        let (rejected_out, rejected) = builder.new_output();
        let (tallies_out, tallies) = builder.new_output();
        let mut labels_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Label>>>::from(labels_out);
        let mut rejected_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Reject>>>::from(rejected_out);
        let mut tallies_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Tally>>>::from(tallies_out);
        builder.build(move |caps| {
            drop(caps);
            let mut stash: EpochStash<Parsed> = EpochStash::new(3);
            move |frontiers| {
                stash.ingest(&mut input);
                let mut labels_h = labels_out.activate();
                let mut rejected_h = rejected_out.activate();
                let mut tallies_h = tallies_out.activate();
                while let Some((_, caps, batch)) = stash.next_ready(&frontiers[0]) {
                    let mut tally = Tally::default();
                    let mut ls = labels_h.session(&caps[0]);
                    let mut rs = rejected_h.session(&caps[1]);
                    for p in batch {
                        match p {
                            Parsed::Record(r) if r.label.is_none() => {
                                tally.reject(crate::record::Reason::MissingField);
                                rs.give(Reject {
                                    pos: r.pos,
                                    source: r.source,
                                    line_hash: r.line_hash,
                                    reason: crate::record::Reason::MissingField,
                                    detail: "the label is missing".into(),
                                    raw: r.key,
                                    raw_bytes: None,
                                    event_time: None,
                                    arrived_ms: r.arrived_ms,
                                });
                            }
                            Parsed::Record(r) => {
                                tally.labels += 1;
                                ls.give(Label {
                                    id_hash: r.key_hash,
                                    id: r.key,
                                    label: r.label.unwrap_or(f64::NAN),
                                    known_ms: (r.event_time != i64::MIN).then_some(r.event_time),
                                    pos: r.pos,
                                });
                            }
                            Parsed::Reject(j) => {
                                tally.reject(j.reason);
                                rs.give(j);
                            }
                        }
                    }
                    tallies_h.session(&caps[2]).give(tally);
                }
            }
        });
        LabelStreams {
            labels,
            rejected,
            tallies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(t: i64, score: f64) -> Prediction {
        Prediction {
            event_time: t,
            dense: vec![],
            sparse: vec![],
            score,
            version: 1,
        }
    }

    fn label(id: &str, y: f64, known: Option<i64>) -> Label {
        Label {
            id: id.into(),
            id_hash: 0,
            label: y,
            known_ms: known,
            pos: Pos { input: 0, line: 0 },
        }
    }

    #[test]
    fn joins_either_way_round_and_learns_when_the_label_is_known() {
        let mut p = Pending::new(1_000, DEFAULT_MAX_WAITING);
        p.label(label("a", 1.0, Some(500)));
        p.predicted("a", pred(100, 0.9));
        p.predicted("b", pred(200, 0.1));
        p.label(label("b", 0.0, None));
        // b's label has no time: due at its record's time; a's at 500.
        assert_eq!(p.due(400).map(|(q, y)| (q.score, y)), Some((0.1, 0.0)));
        assert!(p.due(400).is_none());
        assert_eq!(p.due(500).map(|(q, y)| (q.score, y)), Some((0.9, 1.0)));
        let c = p.end_epoch();
        assert_eq!((c.learned, c.waiting, c.due, c.early), (2, 0, 0, 0));
    }

    #[test]
    fn what_waits_past_the_horizon_is_counted() {
        let mut p = Pending::new(1_000, DEFAULT_MAX_WAITING);
        p.predicted("never", pred(0, 0.5));
        p.label(label("orphan", 1.0, Some(0)));
        p.saw(900);
        let c = p.end_epoch();
        assert_eq!((c.expired, c.orphaned, c.waiting, c.early), (0, 0, 1, 1));
        p.saw(1_001);
        let c = p.end_epoch();
        assert_eq!(
            (c.expired, c.orphaned, c.waiting, c.early),
            (0, 1, 1, 0),
            "the records passed 1,000, the labels did not: `never` may still get its label"
        );
        p.label(label("later", 0.0, Some(1_001)));
        let c = p.end_epoch();
        assert_eq!(
            (c.expired, c.waiting, c.early),
            (1, 0, 1),
            "both streams passed it"
        );
    }

    #[test]
    fn labels_read_behind_the_records_still_meet_their_predictions() {
        // The records run 10,000 ms ahead of their labels (a backlog read at
        // different speeds); labels are known 100 ms after their record.
        let mut p = Pending::new(1_000, DEFAULT_MAX_WAITING);
        for t in 0..20_000i64 {
            if t % 10 == 0 {
                p.predicted(&format!("r{t}"), pred(t, 0.5));
            }
            let l = t - 10_000;
            if l >= 0 && l % 10 == 0 {
                p.label(label(&format!("r{l}"), 1.0, Some(l + 100)));
            }
            if t % 1_000 == 0 {
                p.saw(t);
                while p.due(t).is_some() {}
                let c = p.end_epoch();
                assert_eq!(c.expired, 0, "at {t}");
            }
        }
        let c = p.end_epoch();
        assert_eq!(c.orphaned, 0);
    }

    #[test]
    fn at_most_max_waiting_predictions_wait() {
        let mut p = Pending::new(1_000, 100);
        for t in 0..250 {
            p.predicted(&format!("r{t}"), pred(t, 0.5));
        }
        let c = p.end_epoch();
        assert_eq!(
            (c.expired, c.waiting),
            (150, 100),
            "no labels at all: the oldest go"
        );
        assert!(p.waiting.values().all(|q| q.event_time >= 150));
    }
}

//! Epoch-at-a-time processing and operator snapshots.
//!
//! Stateful operators process an epoch only once their input frontier has
//! passed it, in epoch order, and (when checkpointing) emit a [`Snapshot`] of
//! their state right after each epoch they processed. Between two processed
//! epochs an operator's state does not change, so the state "as of epoch e"
//! is its latest snapshot at or before e — that is how the runtime assembles a
//! consistent checkpoint without every operator snapshotting every epoch.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::communication::Pull;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::Epoch;

/// The serialized state of one operator instance after an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The operator's step id.
    pub step_id: String,
    /// The worker it ran on.
    pub worker: usize,
    /// The last epoch the state includes.
    pub epoch: Epoch,
    /// The state, bincode-encoded.
    #[serde(with = "raw_bytes")]
    pub bytes: Vec<u8>,
}

/// `Vec<u8>` as one byte string rather than a sequence of numbers: bincode
/// writes the same length-prefixed bytes either way, but copies them in one
/// go instead of one call per byte (measured: 1.8% of a run's CPU).
mod raw_bytes {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(b) = a.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// State bytes that could not be decoded (a bug, or a checkpoint from another version).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode the state of `{step_id}`: {message}")]
pub struct StateError {
    /// The step whose state it was.
    pub step_id: String,
    /// The decoder's complaint.
    pub message: String,
}

/// The operator state format this build writes and reads (the checkpoint's
/// and the registry's format version). State is bincode, which has no schema,
/// so a build whose state layout differs must not read it: bump this whenever
/// any operator's state changes shape, and record the new layout (the test
/// `state_layout_is_the_one_recorded_for_this_format` fails until both are
/// done). 2: trees' subspaces and budgets, the forest, the label clock. 3:
/// trees' leaf models. 4: the series detector's seasonal baseline, calibration
/// and episodes.
pub const STATE_FORMAT: u32 = 4;

/// Encodes operator state.
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    bincode::serialize(state).expect("operator state is plain data and always serializes")
}

/// Decodes operator state saved by [`encode`].
pub fn decode<T: DeserializeOwned>(step_id: &str, bytes: &[u8]) -> Result<T, StateError> {
    bincode::deserialize(bytes).map_err(|e| StateError {
        step_id: step_id.to_string(),
        message: e.to_string(),
    })
}

/// An epoch ready to process, still in the stash: the epoch, its capabilities and its data.
pub type Ready<'a, D> = (Epoch, &'a [Capability<Epoch>], &'a [D]);

/// Buffers input per epoch, holding one capability per output, until the frontier passes the epoch.
pub struct EpochStash<D> {
    outputs: usize,
    pending: BTreeMap<Epoch, (Vec<Capability<Epoch>>, Vec<D>)>,
}

impl<D> EpochStash<D> {
    /// A stash for an operator with `outputs` outputs.
    pub fn new(outputs: usize) -> Self {
        EpochStash {
            outputs,
            pending: BTreeMap::new(),
        }
    }

    /// Moves everything available on `input` into the stash.
    pub fn ingest<P: Pull<Message<Epoch, Vec<D>>>>(
        &mut self,
        input: &mut InputHandleCore<Epoch, Vec<D>, P>,
    ) {
        let outputs = self.outputs;
        input.for_each_stamp(|cap, data| {
            let Some(&epoch) = cap.least() else { return };
            let entry = self.pending.entry(epoch).or_insert_with(|| {
                (
                    (0..outputs).map(|port| cap.delayed(&epoch, port)).collect(),
                    Vec::new(),
                )
            });
            for batch in data {
                // An epoch that comes as one container (what the operators
                // here give) is taken whole, not copied element by element.
                if entry.1.is_empty() {
                    std::mem::swap(&mut entry.1, batch);
                } else {
                    entry.1.append(batch);
                }
            }
        });
    }

    /// Removes and returns the oldest epoch if `frontier` has passed it.
    pub fn next_ready(
        &mut self,
        frontier: &MutableAntichain<Epoch>,
    ) -> Option<(Epoch, Vec<Capability<Epoch>>, Vec<D>)> {
        let entry = self.pending.first_entry()?;
        if frontier.less_equal(entry.key()) {
            return None;
        }
        let epoch = *entry.key();
        let (caps, data) = entry.remove();
        Some((epoch, caps, data))
    }

    /// The oldest buffered epoch that is ready, without removing it.
    pub fn peek_ready(&mut self, frontier: &MutableAntichain<Epoch>) -> Option<Ready<'_, D>> {
        let (epoch, (caps, data)) = self.pending.first_key_value()?;
        if frontier.less_equal(epoch) {
            return None;
        }
        Some((*epoch, caps, data))
    }

    /// The oldest buffered epoch, ready or not.
    pub fn first(&self) -> Option<Epoch> {
        self.pending.keys().next().copied()
    }

    /// Epochs buffered.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What a stateful operator is given about checkpoints.
#[derive(Clone, Debug, Default)]
pub struct StateIo {
    /// Emit a [`Snapshot`] after every epoch processed.
    pub snapshot: bool,
    /// State to start from (this worker's, from the checkpoint being resumed).
    pub restore: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of every state a checkpoint or a registry version holds,
    /// traced from the types themselves, must be the one recorded for this
    /// [`STATE_FORMAT`] in `state_layout.json`: a change of layout without a
    /// bump would let one build read another's state as garbage. After a bump,
    /// `MILLRACE_BLESS=1 cargo test -p millrace-operators state_layout`
    /// records the new layout.
    #[test]
    fn state_layout_is_the_one_recorded_for_this_format() {
        use serde_reflection::{Samples, Tracer, TracerConfig};
        let mut tracer = Tracer::new(TracerConfig::default());
        // Enums first: tracing one alone visits every variant.
        tracer
            .trace_simple_type::<crate::monitor::Aggregate>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::monitor::Detector>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::detect::spike::Direction>()
            .unwrap();
        tracer.trace_simple_type::<crate::learn::Learner>().unwrap();
        tracer
            .trace_simple_type::<crate::monitor::MonitorKind>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::monitor::Severity>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::learn::logistic::LeafPrediction>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::learn::hoeffding::Node>()
            .unwrap();
        let samples = Samples::new();
        tracer.trace_type::<Snapshot>(&samples).unwrap();
        tracer
            .trace_type::<crate::clean::Cleaner>(&samples)
            .unwrap();
        tracer
            .trace_type::<std::collections::HashMap<u64, crate::featurize::KeyState>>(&samples)
            .unwrap();
        tracer.trace_type::<crate::score::Scorer>(&samples).unwrap();
        tracer
            .trace_type::<crate::score::ModelRelease>(&samples)
            .unwrap();
        tracer
            .trace_type::<crate::monitor::Monitors>(&samples)
            .unwrap();
        let layout = serde_json::to_value(tracer.registry().unwrap()).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/state_layout.json");
        if std::env::var_os("MILLRACE_BLESS").is_some() {
            let current = serde_json::json!({"format": STATE_FORMAT, "layout": layout});
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&current).unwrap() + "\n",
            )
            .unwrap();
            return;
        }
        let recorded: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let bless =
            "record it with `MILLRACE_BLESS=1 cargo test -p millrace-operators state_layout`";
        if recorded["layout"] != layout {
            assert_ne!(
                recorded["format"], STATE_FORMAT,
                "operator state changed shape under STATE_FORMAT {STATE_FORMAT}: bump it, then {bless}"
            );
            panic!("format {STATE_FORMAT} has a new state layout: {bless}");
        }
        assert_eq!(
            recorded["format"], STATE_FORMAT,
            "STATE_FORMAT was bumped with the layout unchanged: {bless}"
        );
    }
}

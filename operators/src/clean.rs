//! `clean`: deduplicate and impute.
//!
//! **In:** [`Parsed`] values, exchanged on [`Parsed::route`] (the key's hash
//! for records, the line's hash for unreadable lines), so exact duplicates of
//! a line always meet on the same worker.
//! **Out:** three streams — clean [`Record`]s (missing numeric values imputed,
//! the imputed ones flagged in `missing`), [`Reject`]s (lines `parse` could
//! not read or found to break a declared rule, passed on once deduplicated), and
//! [`Tally`]s of where each line went. Every input value leaves on exactly one
//! of them: clean, rejected, or counted as `duplicate`.
//! **Order:** an epoch is processed once the input frontier has passed it, in
//! [`Pos`](crate::record::Pos) order, so the result does not depend on how
//! upstream workers interleaved — the same input and worker count give the
//! same output.
//! **State** ([`Cleaner`]): the dedup window (line hashes of the last
//! `dedup_window_records` distinct lines on this worker) and the running mean
//! of every numeric field over clean records. With checkpointing on, a
//! [`Snapshot`] of it follows every processed epoch on a fourth output, and a
//! snapshot given back at construction restores it.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;

use crate::epochs::{decode, encode, EpochStash, Snapshot, StateError, StateIo};
use crate::hash::owner;
use crate::ledger::Tally;
use crate::record::{Parsed, Record, Reject};
use crate::schema::{Impute, Schema};
use crate::Epoch;

/// `[clean]` in a topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanSpec {
    /// How many recent distinct lines to remember for exact-duplicate
    /// detection (spread over the workers); 0 turns deduplication off.
    #[serde(default = "default_dedup_window")]
    pub dedup_window_records: u64,
}

fn default_dedup_window() -> u64 {
    100_000
}

impl Default for CleanSpec {
    fn default() -> Self {
        CleanSpec {
            dedup_window_records: default_dedup_window(),
        }
    }
}

/// A hasher for values that are already good 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A set of pre-hashed `u64`s.
pub type HashSet64 = HashSet<u64, BuildHasherDefault<PreHashed>>;

/// Exact-duplicate detection over a window of recent distinct lines.
///
/// A ring of the last `window` distinct line hashes, with a hash set over it
/// for lookups: a line is a duplicate if an identical line is among the last
/// `window` distinct lines this worker saw. Only the ring is serialized (a flat
/// array, cheap to snapshot every epoch); the set is rebuilt on restore.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "DedupState", into = "DedupState")]
pub struct Dedup {
    window: usize,
    ring: Vec<u64>,
    /// Next slot to overwrite once the ring is full.
    head: usize,
    set: HashSet64,
}

/// The serialized form of [`Dedup`].
#[derive(Clone, Serialize, Deserialize)]
struct DedupState {
    window: usize,
    ring: Vec<u64>,
    head: usize,
}

impl From<DedupState> for Dedup {
    fn from(s: DedupState) -> Self {
        let set = s.ring.iter().copied().collect();
        Dedup {
            window: s.window,
            ring: s.ring,
            head: s.head,
            set,
        }
    }
}

impl From<Dedup> for DedupState {
    fn from(d: Dedup) -> Self {
        DedupState {
            window: d.window,
            ring: d.ring,
            head: d.head,
        }
    }
}

impl Dedup {
    /// A window of `window` lines; 0 disables.
    pub fn new(window: u64) -> Self {
        Dedup {
            window: window as usize,
            ring: Vec::new(),
            head: 0,
            set: HashSet64::default(),
        }
    }

    /// Whether `line_hash` was seen within the window; remembers it if not.
    pub fn is_duplicate(&mut self, line_hash: u64) -> bool {
        if self.window == 0 {
            return false;
        }
        if self.set.contains(&line_hash) {
            return true;
        }
        if self.ring.len() < self.window {
            self.ring.push(line_hash);
        } else {
            let old = std::mem::replace(&mut self.ring[self.head], line_hash);
            self.set.remove(&old);
            self.head = (self.head + 1) % self.window;
        }
        self.set.insert(line_hash);
        false
    }

    /// Lines currently remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

/// Running-mean imputation state, one entry per numeric field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Imputer {
    /// Observed values per field.
    pub count: Vec<u64>,
    /// Running mean of observed values per field.
    pub mean: Vec<f64>,
}

/// The state and logic of `clean` on one worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cleaner {
    #[serde(skip)]
    schema: Option<Arc<Schema>>,
    dedup: Dedup,
    imputer: Imputer,
}

/// What became of one parsed value.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// A clean (imputed) record.
    Clean(Record),
    /// A rejected line.
    Rejected(Reject),
    /// An exact duplicate of a recent line, dropped and counted.
    Duplicate,
}

impl Cleaner {
    /// A cleaner for `schema` with the rules in `spec`.
    pub fn new(schema: Arc<Schema>, spec: &CleanSpec, peers: usize) -> Self {
        let n = schema.numeric.len();
        let window = spec.dedup_window_records.div_ceil(peers.max(1) as u64);
        Cleaner {
            schema: Some(schema),
            dedup: Dedup::new(window),
            imputer: Imputer {
                count: vec![0; n],
                mean: vec![0.0; n],
            },
        }
    }

    /// The imputation state (for tests and checkpoints).
    pub fn imputer(&self) -> &Imputer {
        &self.imputer
    }

    /// Decides the fate of one parsed value, updating the state.
    pub fn apply(&mut self, parsed: Parsed) -> Outcome {
        let line_hash = match &parsed {
            Parsed::Record(r) => r.line_hash,
            Parsed::Reject(r) => r.line_hash,
        };
        if self.dedup.is_duplicate(line_hash) {
            return Outcome::Duplicate;
        }
        let mut record = match parsed {
            Parsed::Reject(r) => return Outcome::Rejected(r),
            Parsed::Record(r) => r,
        };
        let schema = self
            .schema
            .as_ref()
            .expect("a cleaner is built with its schema");
        let imp = &mut self.imputer;
        for (i, field) in schema.numeric.iter().enumerate() {
            let v = &mut record.nums[i];
            if record.missing & (1 << i) != 0 {
                *v = match field.impute {
                    Impute::Mean => imp.mean[i],
                    Impute::Constant => field.impute_value,
                    Impute::Reject => unreachable!("`parse` rejects missing values of such fields"),
                };
            } else {
                imp.count[i] += 1;
                imp.mean[i] += (*v - imp.mean[i]) / imp.count[i] as f64;
            }
        }
        Outcome::Clean(record)
    }
}

/// The output streams of [`Clean::clean`].
pub struct Cleaned<'scope> {
    /// Clean, imputed records.
    pub clean: Stream<'scope, Epoch, Vec<Record>>,
    /// Rejected lines with their reasons.
    pub rejected: Stream<'scope, Epoch, Vec<Reject>>,
    /// Per-epoch counts of clean, rejected and duplicate lines.
    pub tallies: Stream<'scope, Epoch, Vec<Tally>>,
    /// State snapshots after each processed epoch (when checkpointing).
    pub snapshots: Stream<'scope, Epoch, Vec<Snapshot>>,
}

/// The `clean` operator. See the module docs.
pub trait Clean<'scope> {
    /// Deduplicates and imputes, keyed on the record key.
    fn clean(
        self,
        step_id: &str,
        schema: Arc<Schema>,
        spec: &CleanSpec,
        state: StateIo,
    ) -> Result<Cleaned<'scope>, StateError>;
}

impl<'scope> Clean<'scope> for Stream<'scope, Epoch, Vec<Parsed>> {
    fn clean(
        self,
        step_id: &str,
        schema: Arc<Schema>,
        spec: &CleanSpec,
        state: StateIo,
    ) -> Result<Cleaned<'scope>, StateError> {
        let peers = self.scope().peers();
        let worker = self.scope().index();
        let mut cleaner = Cleaner::new(schema.clone(), spec, peers);
        if let Some(bytes) = &state.restore {
            let restored: Cleaner = decode(step_id, bytes)?;
            cleaner = Cleaner {
                schema: Some(schema),
                ..restored
            };
        }
        let mut builder = OperatorBuilder::new(step_id.to_owned(), self.scope());
        let mut input = builder.new_input(
            self,
            Exchange::new(move |p: &Parsed| owner(p.route(), peers) as u64),
        );
        let (clean_out, clean) = builder.new_output();
        let (rejected_out, rejected) = builder.new_output();
        let (tally_out, tallies) = builder.new_output();
        let (snap_out, snapshots) = builder.new_output();
        let mut clean_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Record>>>::from(clean_out);
        let mut rejected_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Reject>>>::from(rejected_out);
        let mut tally_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Tally>>>::from(tally_out);
        let mut snap_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Snapshot>>>::from(snap_out);
        let step = step_id.to_string();
        builder.build(move |_caps| {
            let mut stash = EpochStash::new(4);
            move |frontiers| {
                stash.ingest(&mut input);
                let mut clean_handle = clean_out.activate();
                let mut rejected_handle = rejected_out.activate();
                let mut tally_handle = tally_out.activate();
                let mut snap_handle = snap_out.activate();
                while let Some((epoch, caps, mut batch)) = stash.next_ready(&frontiers[0]) {
                    batch.sort_by_key(Parsed::pos);
                    let mut tally = Tally::default();
                    // Each output as one container: no per-record copies
                    // into timely's small buffers.
                    let mut clean = Vec::with_capacity(batch.len());
                    let mut rejected = Vec::new();
                    for parsed in batch {
                        match cleaner.apply(parsed) {
                            Outcome::Clean(r) => {
                                tally.clean += 1;
                                clean.push(r);
                            }
                            Outcome::Rejected(r) => {
                                tally.reject(r.reason);
                                rejected.push(r);
                            }
                            Outcome::Duplicate => tally.duplicate += 1,
                        }
                    }
                    clean_handle.session(&caps[0]).give_container(&mut clean);
                    rejected_handle
                        .session(&caps[1])
                        .give_container(&mut rejected);
                    tally_handle.session(&caps[2]).give(tally);
                    if state.snapshot {
                        snap_handle.session(&caps[3]).give(Snapshot {
                            step_id: step.clone(),
                            worker,
                            epoch,
                            bytes: encode(&cleaner),
                        });
                    }
                }
            }
        });
        Ok(Cleaned {
            clean,
            rejected,
            tallies,
            snapshots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Parser;
    use crate::record::{Chunk, Format, Pos, Reason};
    use crate::schema::SchemaSpec;

    fn setup(window: u64) -> (Parser, Cleaner, Chunk) {
        let spec: SchemaSpec = toml::from_str(
            r#"
            key = "k"
            event_time = { field = "t", max_age_ms = 9000000000000000000, max_future_ms = 9000000000000000000 }
            label = { field = "y" }
            [[numeric]]
            name = "amount"
            min = 0.0
            [[numeric]]
            name = "x"
            impute = "constant"
            impute_value = -1.0
            [[categorical]]
            name = "c"
            vocabulary = ["a", "b"]
            "#,
        )
        .unwrap();
        let schema = Arc::new(Schema::new(&spec).unwrap());
        let header: Vec<String> = ["t", "k", "amount", "x", "c", "y"].map(String::from).into();
        let chunk = Chunk {
            source: "f".into(),
            input: 1,
            first_line: 2,
            format: Format::Csv,
            header: Some(header.into()),
            text: String::new(),
            arrived_ms: 0,
            positions: None,
            undecodable: Vec::new(),
        };
        (
            Parser::new(schema.clone()),
            Cleaner::new(
                schema,
                &CleanSpec {
                    dedup_window_records: window,
                },
                1,
            ),
            chunk,
        )
    }

    fn run(window: u64, lines: &[&str]) -> (Vec<Outcome>, Cleaner) {
        let (mut parser, mut cleaner, chunk) = setup(window);
        let out = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                cleaner.apply(parser.parse_line(
                    &chunk,
                    l,
                    Pos {
                        input: 1,
                        line: i as u64 + 2,
                    },
                ))
            })
            .collect();
        (out, cleaner)
    }

    #[test]
    fn imputes_running_mean_of_earlier_clean_values() {
        let (out, cleaner) = run(
            10,
            &["1,a,10,0,a,0", "2,a,,,b,1", "3,b,20,5,a,0", "4,b,,1,a,1"],
        );
        let clean: Vec<&Record> = out
            .iter()
            .map(|o| match o {
                Outcome::Clean(r) => r,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(clean[1].nums, [10.0, -1.0]);
        assert_eq!(clean[1].missing, 0b11);
        assert_eq!(clean[3].nums, [15.0, 1.0]);
        assert_eq!(cleaner.imputer().count, [2, 3]);
    }

    #[test]
    fn invalid_values_are_rejected_and_do_not_move_the_mean() {
        let (out, cleaner) = run(10, &["1,a,-5,0,a,0", "2,a,1,0,zzz,0", "3,a,4,0,,1"]);
        assert!(
            matches!(&out[0], Outcome::Rejected(r) if r.reason == Reason::OutOfRange && r.detail.contains("outside [0, 1e100]"))
        );
        assert!(matches!(&out[1], Outcome::Rejected(r) if r.reason == Reason::UnknownCategory));
        assert!(
            matches!(&out[2], Outcome::Clean(_)),
            "a missing category is allowed"
        );
        assert_eq!(cleaner.imputer().mean[0], 4.0);
    }

    #[test]
    fn exact_duplicates_within_the_window_are_dropped_even_if_malformed() {
        let (out, _) = run(
            10,
            &["1,a,1,0,a,0", "1,a,1,0,a,0", "bad", "bad", "1,a,1,0,a,1"],
        );
        assert!(matches!(out[1], Outcome::Duplicate));
        assert!(matches!(&out[2], Outcome::Rejected(r) if r.reason == Reason::FieldCount));
        assert!(matches!(out[3], Outcome::Duplicate));
        assert!(matches!(out[4], Outcome::Clean(_)));
        let (out, _) = run(0, &["1,a,1,0,a,0", "1,a,1,0,a,0"]);
        assert!(
            matches!(out[1], Outcome::Clean(_)),
            "window 0 disables dedup"
        );
    }

    #[test]
    fn dedup_window_forgets_old_lines() {
        let mut d = Dedup::new(4);
        for h in 0..10 {
            assert!(!d.is_duplicate(h));
        }
        assert!(d.is_duplicate(9) && d.is_duplicate(6));
        assert!(
            !d.is_duplicate(5),
            "line 5 is older than the last 4 distinct lines"
        );
        assert_eq!(d.len(), 4);
        // The snapshot restores the same window.
        let restored: Dedup = crate::epochs::decode("t", &crate::epochs::encode(&d)).unwrap();
        let mut a = d.clone();
        let mut b = restored;
        for h in [5, 6, 7, 8, 9, 10, 5, 11] {
            assert_eq!(a.is_duplicate(h), b.is_duplicate(h), "{h}");
        }
    }
}

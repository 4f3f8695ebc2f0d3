//! Connectors: where records come from and where results go.
//!
//! The connectors layer (on [`crate::core`] only). One file per connector;
//! each owns its configuration (the TOML section it reads), its checks and
//! its timely operator. The dataflow does not name them: a topology compiles
//! into one [`Source`] for the records (and one for delayed labels, if any)
//! and a list of [`Sink`]s, and the dataflow builds whatever it is given.
//!
//! - A **source** owns its I/O and cuts epochs; it emits chunks of records,
//!   facts of finished inputs and its position at every epoch's end
//!   ([`SourceStreams`]). What it needs from the run — where to resume, which
//!   files are done, which Kafka partitions are this worker's — comes in a
//!   [`SourceStart`].
//! - A **sink** takes the scored and the rejected records ([`SinkInputs`]),
//!   buffers each epoch, writes it once the frontier has passed it, and
//!   reports a [`Commit`](crate::core::commit::Commit) per epoch (and, if it
//!   keeps state, snapshots for the checkpoint: [`SinkStreams`]).
//! - The alert channels ([`webhook`], [`email`], [`kafka_alerts`], behind
//!   [`notify`]) and the alerts table and file ([`alerts`]) are fed by the
//!   coordinator, not by the dataflow.

pub mod alerts;
pub mod compaction;
pub mod csv;
pub mod email;
pub mod kafka;
pub mod kafka_alerts;
pub mod kafka_sink;
pub mod lake;
pub mod landing;
pub mod notify;
pub mod source;
pub mod webhook;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use millrace_operators::epochs::{Snapshot, StateError, StateIo};
use millrace_operators::record::{Reject, Scored};
use millrace_operators::schema::Schema;
use millrace_operators::Epoch;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::core::commit::Commit;
use crate::core::fault::Fault;
use crate::core::position::{FilePos, SourceStreams};

/// What a source needs from the run when the dataflow is built.
#[derive(Clone)]
pub struct SourceStart {
    /// Read what is there, then finish.
    pub once: bool,
    /// An epoch ends after this many records (per worker).
    pub records_per_epoch: u64,
    /// The source waits while this many of its epochs are uncommitted.
    pub max_epochs_in_flight: u64,
    /// The first epoch of this run.
    pub first_epoch: Epoch,
    /// Where the source reports faults.
    pub fault: Fault,
    /// Set when the run is asked to stop.
    pub stop: Arc<AtomicBool>,
    /// Per worker, the file it was in the middle of at the resumed checkpoint
    /// (empty: start fresh).
    pub files: Vec<Option<FilePos>>,
    /// Inputs already processed (the landing folder's manifest, this source's names only).
    pub processed: landing::Processed,
    /// Kafka: every worker's partitions and start offsets.
    pub assignment: Arc<Vec<Vec<kafka::Assigned>>>,
}

/// A source of records: a landing folder, Kafka topics.
pub trait Source: Send + Sync {
    /// Builds the source's operator on this worker, as step `step_id`;
    /// `committed` is the job's committed frontier (for flow control).
    fn build<'scope>(
        &self,
        scope: Scope<'scope, Epoch>,
        step_id: &str,
        start: SourceStart,
        committed: ProbeHandle<Epoch>,
    ) -> SourceStreams<'scope>;
}

/// A batch of scored records as every sink of a worker sees it: shared, not
/// copied. Timely's `Tee` clones a container for each consumer of a stream
/// but the last, so with a lake and a Kafka topic each epoch's scored
/// records were deep-copied (every key and category a new `String`), then
/// freed twice on two writer threads: ~5% of a Kafka → Kafka run's CPU.
pub type ScoredBatch = Arc<Vec<Scored>>;

/// What sinks read.
pub struct SinkInputs<'scope> {
    /// Every scored (clean) record, in shared batches.
    pub scored: Stream<'scope, Epoch, Vec<ScoredBatch>>,
    /// Every rejected line (records and delayed labels).
    pub rejected: Stream<'scope, Epoch, Vec<Reject>>,
}

impl<'scope> SinkInputs<'scope> {
    /// The sinks' inputs: `scored`'s containers become shared batches
    /// (moved, not copied), which any number of sinks can read.
    pub fn new(
        scored: Stream<'scope, Epoch, Vec<Scored>>,
        rejected: Stream<'scope, Epoch, Vec<Reject>>,
    ) -> Self {
        use timely::container::CapacityContainerBuilder;
        use timely::dataflow::channels::pact::Pipeline;
        use timely::dataflow::operators::generic::operator::Operator;
        let scored = scored.unary::<CapacityContainerBuilder<Vec<ScoredBatch>>, _, _, _>(
            Pipeline,
            "share_scored",
            |_, _| {
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        let mut session = output.session(&cap);
                        for batch in data.filter(|d| !d.is_empty()) {
                            session.give(Arc::new(std::mem::take(batch)));
                        }
                    });
                }
            },
        );
        SinkInputs { scored, rejected }
    }
}

/// What a sink needs from the run.
pub struct SinkContext {
    /// The lake's root (sinks that write files write under it).
    pub lake: std::path::PathBuf,
    /// The stream's schema.
    pub schema: Arc<Schema>,
    /// Two-phase commit: leave parts under pending names for the checkpoint to publish.
    pub pending: bool,
    /// Where the sink reports faults.
    pub fault: Fault,
}

/// What a sink reports.
pub struct SinkStreams<'scope> {
    /// One commit per epoch, worker and table.
    pub commits: Stream<'scope, Epoch, Vec<Commit>>,
    /// Its state, if it keeps any, for the checkpoint.
    pub snapshots: Option<Stream<'scope, Epoch, Vec<Snapshot>>>,
}

/// A sink of scored and rejected records: lake tables, the CSV files, a Kafka topic.
pub trait Sink {
    /// Its step id (keys its checkpointed state, labels its metrics).
    fn step_id(&self) -> &str;

    /// Builds the sink's operators on this worker; `state` restores its
    /// checkpointed state, if it keeps any.
    fn build<'scope>(
        &self,
        inputs: &SinkInputs<'scope>,
        ctx: &SinkContext,
        state: StateIo,
    ) -> Result<SinkStreams<'scope>, StateError>;
}

//! The operator every source runs: a thin timely shell over a [`Reader`].
//!
//! A source's I/O and its epoch cuts live in a reader (the landing folder's
//! file queue, Kafka's partition queues), which knows nothing of timely. This
//! shell owns what is the same for every source:
//!
//! - **Ports:** three outputs, as [`SourceStreams`]: chunks of records, facts
//!   of finished inputs, and the position at each epoch's end. All three
//!   capabilities start at the run's first epoch and move together.
//! - **Flow control:** while `max_epochs_in_flight` of this source's epochs
//!   are not yet committed (the job's committed frontier, `committed`), the
//!   reader is not asked for more; the shell looks again in a millisecond.
//! - **Epochs:** a step that returns a [`SourcePos`] ends the current epoch:
//!   the position goes out at it and every capability moves to the next.
//! - **Activation:** the reader says when it wants to be asked again
//!   ([`Next`]); [`Next::Finished`] drops the capabilities, which closes the
//!   source's streams.

use std::time::Duration;

use millrace_operators::record::Chunk;
use millrace_operators::Epoch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::{ProbeHandle, Scope};

use crate::core::fault::Fault;
use crate::core::position::{FileFact, SourcePos, SourceStreams};

/// When a reader wants to be asked again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// As soon as possible: there is more to read.
    Now,
    /// After this long (nothing to read yet).
    After(Duration),
    /// Not by itself: it raised a fault, and the run stops.
    Never,
    /// Never again: the source is done; its streams close.
    Finished,
}

/// What one step of a reader emits.
#[derive(Default)]
pub struct Emit {
    /// Chunks of records, in order.
    pub chunks: Vec<Chunk>,
    /// Inputs finished in this step.
    pub facts: Vec<FileFact>,
    /// Set to end the epoch: the position after everything emitted so far.
    pub cut: Option<SourcePos>,
}

/// A source's I/O and epoch cuts, without timely.
pub trait Reader: 'static {
    /// Checked first at every activation, before flow control: `true` to
    /// stop at once (the streams close without a last cut).
    fn halt(&mut self) -> bool {
        false
    }

    /// Reads what there is for `epoch` into `emit`; says when to come back.
    fn step(&mut self, epoch: Epoch, emit: &mut Emit) -> Next;
}

/// How the shell runs a reader.
pub struct Shell {
    /// The first epoch of this run.
    pub first_epoch: Epoch,
    /// The reader is not asked while this many epochs are uncommitted.
    pub max_epochs_in_flight: u64,
    /// Where a reader that could not be opened reports why.
    pub fault: Fault,
}

/// Builds the operator for `reader` (or, if it could not be opened, one that
/// raises the fault and closes its streams) as step `step_id`.
pub fn source<'scope, R: Reader, E: std::fmt::Display>(
    scope: Scope<'scope, Epoch>,
    step_id: &str,
    shell: Shell,
    reader: Result<R, E>,
    committed: ProbeHandle<Epoch>,
) -> SourceStreams<'scope> {
    let mut builder = OperatorBuilder::new(step_id.to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (chunks_out, chunks) = builder.new_output();
    let (facts_out, facts) = builder.new_output();
    let (pos_out, positions) = builder.new_output();
    let mut chunks_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Chunk>>>::from(chunks_out);
    let mut facts_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<FileFact>>>::from(facts_out);
    let mut pos_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<SourcePos>>>::from(pos_out);
    let step_id = step_id.to_string();
    builder.build(move |mut caps| {
        // One capability per output: [chunks, facts, positions].
        for cap in caps.iter_mut() {
            cap.downgrade(&shell.first_epoch);
        }
        let mut reader = match reader {
            Ok(r) => Some(r),
            Err(e) => {
                shell.fault.raise(format!("{step_id}: {e}"));
                caps.clear();
                None
            }
        };
        let mut caps = (!caps.is_empty()).then_some(caps);
        move |_frontiers| {
            let (Some(c), Some(reader)) = (caps.as_mut(), reader.as_mut()) else {
                return;
            };
            if reader.halt() {
                caps = None;
                return;
            }
            let epoch = *c[0].time();
            let done = committed.with_frontier(|f| f.first().copied());
            if done.is_some_and(|d| epoch >= d + shell.max_epochs_in_flight) {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            let mut emit = Emit::default();
            let next = reader.step(epoch, &mut emit);
            if !emit.chunks.is_empty() {
                chunks_out
                    .activate()
                    .session(&c[0])
                    .give_iterator(emit.chunks.into_iter());
            }
            if !emit.facts.is_empty() {
                facts_out
                    .activate()
                    .session(&c[1])
                    .give_iterator(emit.facts.into_iter());
            }
            if let Some(pos) = emit.cut {
                pos_out.activate().session(&c[2]).give(pos);
                for cap in c.iter_mut() {
                    cap.downgrade(&(epoch + 1));
                }
            }
            match next {
                Next::Now => activator.activate(),
                Next::After(d) => activator.activate_after(d),
                Next::Never => {}
                Next::Finished => caps = None,
            }
        }
    });
    (chunks, facts, positions)
}

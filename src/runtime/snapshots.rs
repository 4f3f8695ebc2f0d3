//! `checkpoint_state`: persists operator snapshots, one file per worker and epoch.
//!
//! **In:** the [`Snapshot`]s of every stateful operator on this worker (pipeline
//! pact). **Out:** one [`StateSaved`] per epoch that had snapshots, once the
//! file is durable (temporary name, fsync, rename), for the coordinator to
//! reference from the epoch's checkpoint. One file per worker and epoch keeps
//! it to one fsync however many stateful operators there are.

use std::path::PathBuf;

use millrace_operators::epochs::EpochStash;
use millrace_operators::{Epoch, Snapshot};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

use crate::runtime::checkpoint::{write_state, StateRef};
use crate::runtime::Fault;

/// A worker's snapshots of an epoch are durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSaved {
    /// Where each operator's snapshot is.
    pub refs: Vec<StateRef>,
}

/// The snapshot persistence operator. See the module docs.
pub trait PersistSnapshots<'scope> {
    /// Writes each epoch's snapshots of this worker to the lake's checkpoint folder.
    fn persist_snapshots(
        self,
        step_id: &str,
        lake: PathBuf,
        fault: Fault,
    ) -> Stream<'scope, Epoch, Vec<StateSaved>>;
}

impl<'scope> PersistSnapshots<'scope> for Stream<'scope, Epoch, Vec<Snapshot>> {
    fn persist_snapshots(
        self,
        step_id: &str,
        lake: PathBuf,
        fault: Fault,
    ) -> Stream<'scope, Epoch, Vec<StateSaved>> {
        let worker = self.scope().index();
        let step = step_id.to_string();
        self.unary_frontier::<CapacityContainerBuilder<Vec<StateSaved>>, _, _, _>(
            Pipeline,
            step_id,
            move |_, _| {
                let mut stash = EpochStash::new(1);
                let mut failed = false;
                move |(input, frontier), output| {
                    stash.ingest(input);
                    while !failed {
                        let Some((epoch, _, snapshots)) = stash.peek_ready(frontier) else {
                            break;
                        };
                        match write_state(&lake, epoch, worker, snapshots) {
                            Ok((file, len, checksum)) => {
                                let refs = snapshots
                                    .iter()
                                    .map(|s| StateRef {
                                        step_id: s.step_id.clone(),
                                        worker,
                                        epoch: s.epoch,
                                        file: file.clone(),
                                        len,
                                        checksum,
                                    })
                                    .collect();
                                let (_, caps, _) = stash.next_ready(frontier).expect("peeked");
                                output.session(&caps[0]).give(StateSaved { refs });
                            }
                            Err(e) => {
                                failed = true;
                                fault.raise(format!(
                                    "{step}: cannot write the state of epoch {epoch} under {}: {e}",
                                    lake.display()
                                ));
                            }
                        }
                    }
                }
            },
        )
    }
}

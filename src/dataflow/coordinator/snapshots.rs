//! `checkpoint_state`: persists operator snapshots, one file per worker and epoch.
//!
//! **In:** the [`Snapshot`]s of every stateful operator on this worker (pipeline
//! pact). **Out:** one [`StateSaved`] per epoch that had snapshots, once the
//! file is durable (temporary name, fsync, rename), for the coordinator to
//! reference from the epoch's checkpoint. One file per worker and epoch keeps
//! it to one fsync however many stateful operators there are; the writing
//! happens behind the dataflow on a writer thread (`write_behind`).

use std::path::PathBuf;

use millrace_operators::{Epoch, Snapshot};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use crate::core::fault::Fault;
use crate::core::write_behind::WriteBehind;
use crate::dataflow::coordinator::checkpoint::{write_state, StateRef};

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
        self.write_behind(step_id, fault, move |epoch, snapshots| {
            let (file, len, checksum) =
                write_state(&lake, epoch, worker, &snapshots).map_err(|error| StateWriteError {
                    epoch,
                    lake: lake.clone(),
                    error,
                })?;
            for s in &snapshots {
                metrics::gauge!(crate::core::metrics::STATE_BYTES, "step" => s.step_id.clone(), "worker" => worker.to_string())
                    .set(s.bytes.len() as f64);
            }
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
            Ok::<_, StateWriteError>(vec![StateSaved { refs }])
        })
    }
}

/// An epoch's operator state could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the state of epoch {epoch} under {}: {error}", lake.display())]
pub struct StateWriteError {
    epoch: Epoch,
    lake: PathBuf,
    error: std::io::Error,
}

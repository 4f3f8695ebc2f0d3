//! `write_behind`: hands whole epochs to a writer thread and emits its results in epoch order.
//!
//! **In:** any stream, pipeline pact (each worker writes its own data).
//! **Out:** what the writer returns for each epoch, at that epoch, once it has
//! finished — so the output frontier passes an epoch only when its writes are
//! durable. The writer runs on its own thread: encoding and fsyncs overlap
//! with the dataflow instead of stalling the worker. A writer error is raised
//! on the run's [`Fault`] and nothing after it is emitted (the operator keeps
//! the epoch's capability, so nothing downstream commits past it).
//! **State:** the epochs buffered until the frontier passes them, and the
//! capabilities of epochs handed over but not yet written. Flow control lives
//! upstream: the source waits while too many epochs are uncommitted.

use std::collections::BTreeMap;

use millrace_operators::epochs::EpochStash;
use millrace_operators::Epoch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::core::fault::Fault;

/// The write-behind operator. See the module docs.
pub trait WriteBehind<'scope, D> {
    /// Runs `write(epoch, data)` on a writer thread for every epoch, in order.
    fn write_behind<O, E, W>(
        self,
        step_id: &str,
        fault: Fault,
        write: W,
    ) -> Stream<'scope, Epoch, Vec<O>>
    where
        O: Clone + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        W: FnMut(Epoch, Vec<D>) -> Result<Vec<O>, E> + Send + 'static;
}

impl<'scope, D: Clone + Send + 'static> WriteBehind<'scope, D> for Stream<'scope, Epoch, Vec<D>> {
    fn write_behind<O, E, W>(
        self,
        step_id: &str,
        fault: Fault,
        mut write: W,
    ) -> Stream<'scope, Epoch, Vec<O>>
    where
        O: Clone + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        W: FnMut(Epoch, Vec<D>) -> Result<Vec<O>, E> + Send + 'static,
    {
        let scope = self.scope();
        let worker = scope.index();
        let step = step_id.to_string();
        self.unary_frontier::<CapacityContainerBuilder<Vec<O>>, _, _, _>(
            Pipeline,
            step_id,
            move |_, info| {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let (jobs, job_rx) = std::sync::mpsc::channel::<(Epoch, Vec<D>)>();
                let (done_tx, done) = std::sync::mpsc::channel::<(Epoch, Result<Vec<O>, E>)>();
                std::thread::Builder::new()
                    .name(format!("millrace-{step}-w{worker}"))
                    .spawn(move || {
                        for (epoch, data) in job_rx {
                            let result = write(epoch, data);
                            let failed = result.is_err();
                            let sent = done_tx.send((epoch, result));
                            let _ = activator.activate();
                            if sent.is_err() || failed {
                                return;
                            }
                        }
                    })
                    .expect("the writer thread starts");
                let mut stash = EpochStash::new(1);
                let mut inflight: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
                let mut failed = false;
                move |(input, frontier), output| {
                    stash.ingest(input);
                    while let Ok((epoch, result)) = done.try_recv() {
                        match result {
                            Ok(out) => {
                                let cap = inflight
                                    .remove(&epoch)
                                    .expect("every job keeps its capability");
                                output.session(&cap).give_iterator(out.into_iter());
                            }
                            Err(e) => {
                                failed = true;
                                fault.raise(format!("{step}: {e}"));
                            }
                        }
                    }
                    while !failed {
                        let Some((epoch, mut caps, data)) = stash.next_ready(frontier) else {
                            break;
                        };
                        inflight.insert(epoch, caps.pop().expect("one output"));
                        if jobs.send((epoch, data)).is_err() {
                            failed = true;
                            fault.raise(format!("{step}: the writer thread stopped"));
                        }
                    }
                }
            },
        )
    }
}

//! The core layer: what every other layer builds on, importing none of them.
//!
//! It owns faults and the test hooks that crash or hold a run
//! ([`fault`]), the one durable way files are written and read, on a local
//! disk or in an object store ([`storage`]), where
//! sources stand ([`position`]), what sinks report ([`commit`]), the writer
//! thread sinks hand epochs to ([`write_behind`]), the runtime async clients
//! run on ([`blocking`]) and the metric names ([`metrics`]).
//!
//! Layers, each importing only the ones before it (`tests/layers.rs` checks):
//! `core` → `connectors` → `topology` → `dataflow` → `runtime` → the
//! commands on top (`cli`, `http`, `report`, `gen`, `svg`).

pub mod blocking;
pub mod commit;
pub mod fault;
pub mod metrics;
pub mod position;
pub mod storage;
pub mod write_behind;

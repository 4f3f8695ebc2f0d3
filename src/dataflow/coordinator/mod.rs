//! The coordinator: worker 0's operator that completes epochs, and the
//! state files it keeps.
//!
//! [`ledger`] is the operator: it gathers every worker's tallies, positions,
//! commits and saved states per epoch, judges the monitors, writes the
//! checkpoint ([`checkpoint`]), publishes the epoch's parts, appends the file
//! manifest ([`manifest`]) and publishes model versions to the registry
//! ([`registry`]); [`snapshots`] is the per-worker operator that saves
//! operator state for the checkpoint.

pub mod checkpoint;
pub mod ledger;
pub mod manifest;
pub mod registry;
pub mod snapshots;

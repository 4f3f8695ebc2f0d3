//! Connectors: where records come from and where results go.
//!
//! One file per connector. A source is a timely operator that owns its I/O and
//! cuts epochs; a sink buffers an epoch and commits it once the frontier has
//! passed it, then reports a [`lake::Commit`] downstream.

pub mod alerts;
pub mod csv;
pub mod email;
pub mod kafka;
pub mod kafka_alerts;
pub mod kafka_sink;
pub mod lake;
pub mod landing;
pub mod notify;
pub mod webhook;

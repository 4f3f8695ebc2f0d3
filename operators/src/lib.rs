//! millrace's dataflow operators and the algorithms inside them.
//!
//! Everything in this crate is pure computation over timely streams: no files,
//! sockets or clocks are touched here (processing time, where an operator needs
//! it, is carried on the data by the sources). Connectors and the runtime live
//! in the `millrace` crate.
//!
//! The pipeline, in dataflow order:
//!
//! | step        | trait / fn                     | in                | out                                  |
//! |-------------|--------------------------------|-------------------|--------------------------------------|
//! | parse       | [`parse::Parse::parse`]        | [`Chunk`]s        | [`Parsed`] (records or rejects)      |
//! | clean       | [`clean::Clean::clean`]        | [`Parsed`]        | clean [`Record`]s, [`Reject`]s, tallies |
//! | featurize   | [`featurize::Featurize::featurize`] | [`Record`]s | [`Example`]s                         |
//! | score       | [`score::Score::score`]        | [`Example`]s      | [`Scored`] rows, [`EvalPartial`]s    |
//!
//! Timestamps are micro-batch epochs ([`Epoch`]); every operator keeps the
//! records of one epoch together and, where it is keyed, exchanges them on a
//! stable hash of the key ([`hash`]), never on `RandomState`.
#![deny(missing_docs)]

pub mod arena;
pub mod clean;
pub mod detect;
pub mod epochs;
pub mod featurize;
pub mod hash;
pub mod labels;
pub mod learn;
pub mod ledger;
pub mod monitor;
pub mod parse;
pub mod record;
pub mod schema;
pub mod score;

pub use epochs::Snapshot;
pub use learn::eval::EvalPartial;
pub use ledger::{LedgerCounts, Tally};
pub use record::{Chunk, Example, Parsed, Pos, Reason, Record, Reject, Scored};

/// The timely timestamp of every millrace dataflow: the micro-batch epoch.
pub type Epoch = u64;

//! millrace: a streaming machine-learning pipeline engine on timely dataflow.
//!
//! A topology file ([`topology`]) declares a source, a schema, cleaning rules,
//! features, an online model and a lake; [`runtime::run`] builds it into one
//! timely dataflow per worker ([`dataflow`]) out of the operators of
//! `millrace-operators` and the [`connectors`], and runs it.
#![deny(missing_docs)]

pub mod cli;
pub mod connectors;
pub mod core;
pub mod dataflow;
pub mod gen;
pub mod http;
pub mod report;
pub mod runtime;
pub mod svg;
pub mod topology;

//! The integration tests: one binary, one module per area, shared support in `support/`.

// Test code states its expectations with unwrap; a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

mod alerts;
mod archive;
mod browser;
mod cli;
mod decode_fuzz;
mod dynamodb;
mod faults;
mod golden;
mod hardening;
mod kafka;
mod kinesis;
mod outputs;
mod security;
mod semantics;
mod service;
mod store;
mod views;

//! Sinks: where summaries and dead letters go — the store (embedded) and, when configured, the
//! summary and dead-letter streams.

pub mod dynamodb;
pub mod kafka;
pub mod kinesis;
pub mod store;
pub mod stream;

//! Sinks: where summaries and dead letters go. The embedded store is the only one so far.

pub mod store;

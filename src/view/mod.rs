//! Continuous views (CONTRACT §9): SQL over the telemetry stream, kept per event-time window
//! with the same watermark, lateness and restatement as the built-in summary.
//!
//! [`plan`] reads and checks a view's SQL; [`batch`] is its answer computed in batch by SQL
//! alone, the independent check of the live one.

pub mod batch;
pub mod plan;

//! Continuous views (CONTRACT §9): SQL over the telemetry stream, kept per event-time window
//! with the same watermark, lateness and restatement as the built-in summary.
//!
//! [`plan`] reads and checks a view's SQL; [`engine`] keeps it window by window (TUMBLE and HOP
//! so far; driven by `stampede aggregate --view`, not yet by the service); [`batch`] is its
//! answer computed in batch by SQL alone, the independent check of the engine.

pub mod batch;
pub mod engine;
pub mod plan;

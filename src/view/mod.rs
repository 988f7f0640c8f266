//! Continuous views (CONTRACT §9): SQL over the telemetry stream, kept per event-time window
//! with the same watermark, lateness and restatement as the built-in summary.
//!
//! [`plan`] reads and checks a view's SQL; [`compile`] plans it with DataFusion once, and
//! merges partial results into rows; [`engine`] keeps its windows over one partition's records
//! (TUMBLE, HOP and SESSION); [`step`] is the partition task's step that keeps every view of the
//! [`registry`]; [`batch`] is its answer computed in batch by SQL alone, the independent check
//! of the engine.

pub mod batch;
pub mod compile;
pub mod engine;
pub mod json;
pub mod plan;
pub mod registry;
pub mod step;

/// The example views of the repository's `queries/views/` (file name, SQL), compiled in:
/// `stampede demo` keeps them.
pub const EXAMPLES: [(&str, &str); 4] = [
    (
        "fleet-5min.sql",
        include_str!("../../queries/views/fleet-5min.sql"),
    ),
    ("rides.sql", include_str!("../../queries/views/rides.sql")),
    (
        "summary.sql",
        include_str!("../../queries/views/summary.sql"),
    ),
    (
        "weak-cells.sql",
        include_str!("../../queries/views/weak-cells.sql"),
    ),
];

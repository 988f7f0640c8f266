//! Stampede: real-time analytics for the Wild Rydes unicorn fleet.
//!
//! Telemetry flows one way through these modules (see `DESIGN.md`):
//!
//! ```text
//! source ──► decode ──► window ──► summaries ──► aggregate (batch) / sinks (service)
//! ```
//!
//! * [`record`] — the wire format: [`record::Telemetry`], [`record::Summary`], reject reasons.
//! * [`time`] — `StatusTime` parsing and formatting.
//! * [`decode`] — bytes → telemetry, with every validation rule.
//! * [`window`] — the event-time window engine, one per source partition.
//! * [`source`] — where records come from (files so far).
//! * [`aggregate`] — `stampede aggregate`, the batch path.
//! * [`produce`] — `stampede produce`, the simulated fleet.
//! * [`cli`] — the command line.

pub mod aggregate;
pub mod cli;
pub mod decode;
pub mod produce;
pub mod record;
pub mod source;
pub mod time;
pub mod window;

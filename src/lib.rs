//! Stampede: real-time analytics for the Wild Rydes unicorn fleet.
//!
//! Telemetry flows one way through these modules (see `DESIGN.md`):
//!
//! ```text
//! source ──► decode ──► window ──► summaries ──► aggregate (batch) / store, hub ──► web
//! ```
//!
//! * [`record`] — the wire format: [`record::Telemetry`], [`record::Summary`], reject reasons.
//! * [`time`] — `StatusTime` parsing and formatting.
//! * [`decode`] — bytes → telemetry, with every validation rule.
//! * [`window`] — the event-time window engine, one per source partition.
//! * [`source`] — where records come from: a file, a Kafka consumer group.
//! * [`kafka`] — Kafka client settings, addresses and logging shared by source, sink and CLI.
//! * [`kinesis`] — Kinesis addresses, client and shard listing shared by source, sink and CLI;
//!   [`aws`] — SDK errors in words.
//! * [`aggregate`] — `stampede aggregate`, the batch path.
//! * [`produce`] — `stampede produce`, the simulated fleet.
//! * [`pipeline`] — the engine task of one partition (decode, window, dead letters).
//! * [`sink`] — the embedded store, and the summary and dead-letter streams.
//! * [`consume`] — `stampede consume`, the workshop's stream reader.
//! * [`hub`] — live fleet state and WebSocket fan-out.
//! * [`web`] — HTTP ingest, API, `/ws`, metrics and the dashboard.
//! * [`config`] — the TOML configuration and its environment overrides.
//! * [`app`] — assembly and ordered shutdown; [`demo`] — the in-process fleet.
//! * [`metrics`] — every metric in one place.
//! * [`cli`] — the command line.

pub mod aggregate;
pub mod app;
pub mod aws;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod consume;
pub mod decode;
pub mod demo;
pub mod hub;
pub mod kafka;
pub mod kinesis;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod produce;
pub mod record;
pub mod source;
pub mod time;
pub mod web;
pub mod window;

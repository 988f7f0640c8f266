//! Stampede: real-time analytics for the Wild Rydes unicorn fleet.
//!
//! Telemetry flows one way through these modules (see `DESIGN.md`), and each depends only on
//! those before it; only [`app`] knows them all:
//!
//! ```text
//! source ──► decode ──► window (pipeline) ──► output::Fanout ──► store | summary stream |
//!                                                                dead-letter stream | archive |
//!                                                                alerts | hub ──► web
//! ```
//!
//! Records and time
//! * [`record`] — the wire format: [`record::Telemetry`], [`record::Summary`],
//!   [`record::DeadLetter`], reject reasons.
//! * [`time`] — `StatusTime` parsing and formatting.
//!
//! Sources
//! * [`source`] — where records come from: a file, a Kafka consumer group, Kinesis shards;
//!   [`source::durable`] is the partition lifecycle the stream sources share.
//! * [`kafka`], [`kinesis`] — client plumbing shared by sources, outputs and commands;
//!   [`aws`] — SDK errors in words; [`backoff`] — the one retry schedule.
//!
//! Engine
//! * [`decode`] — bytes → telemetry, with every validation rule.
//! * [`window`] — the event-time window engine, one per source partition.
//! * [`pipeline`] — the engine task of one partition: decode, window, hand results to the outputs.
//! * [`alert`] — alert rules with hysteresis, evaluated per record beside the window engine.
//!
//! Outputs
//! * [`output`] — the fan-out and every output after the engine: the store (embedded or
//!   DynamoDB), the summary and dead-letter streams (Kafka or Kinesis).
//! * [`hub`] — live fleet state and WebSocket fan-out (the output never waited for).
//! * [`archive`] — the raw archive (directory or S3, NDJSON or Parquet, exactly once) and
//!   [`query`], ad-hoc SQL over it and the store (DataFusion).
//!
//! Web
//! * [`web`] — HTTP ingest, API, `/ws`, metrics and the dashboard.
//! * [`metrics`] — every metric in one place.
//!
//! Commands and assembly
//! * [`config`] — the TOML configuration and its environment overrides.
//! * [`app`] — assembly and ordered shutdown (`serve`); [`demo`] — the in-process fleet.
//! * [`aggregate`] — `stampede aggregate`, the batch path; [`produce`] — `stampede produce`,
//!   the simulated fleet; [`consume`] — `stampede consume`, the workshop's stream reader.
//! * [`cli`] — the command line.

pub mod setting;
pub mod time;

pub mod record;

pub mod backoff;
pub mod metrics;

pub mod clients;

pub mod decode;
pub mod window;

pub mod alert;
pub mod hub;
pub mod output;
pub mod pipeline;
pub mod source;

pub mod query;
pub mod web;

pub mod config;

pub mod app;
pub mod commands;

pub mod cli;

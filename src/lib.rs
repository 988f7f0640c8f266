//! Stampede: real-time analytics for the Wild Rydes unicorn fleet.
//!
//! Telemetry flows one way (see `DESIGN.md`):
//!
//! ```text
//! source ──► partition task (pipeline): decode ─► window ─► alert rules ──► output::Fanout ──►
//!      store | summary stream | dead-letter stream | archive | notify | hub ──► web (WebSocket)
//! ```
//!
//! The modules are listed bottom-up, in dependency order: each imports only modules listed
//! before it, between files and between folders (`../shared/tools/modcycles.py [--top] src`,
//! run by `scripts/test`, holds it so). Only [`app`] knows every part; the commands sit above.
//!
//! Ground
//! * [`setting`] — a setting a part refuses as it starts; [`time`] — `StatusTime`.
//! * [`record`] — the wire format of CONTRACT §1–2: telemetry, summaries, dead letters, reject
//!   reasons, source kinds.
//! * [`backoff`] — the one retry schedule; [`metrics`] — every metric in one place.
//! * [`clients`] — technology plumbing shared by sources, outputs and commands: Kafka, Kinesis,
//!   DynamoDB, AWS, HTTP(S) and TLS clients, secrets compared in constant time.
//!
//! The pure core
//! * [`decode`] — bytes → telemetry, with every validation rule.
//! * [`window`] — the event-time window engine (the built-in summary), one per partition.
//! * [`alert`] — alert rules and their evaluation: record → state changes.
//! * [`view`] — continuous views (CONTRACT §9): their SQL read and checked, the engine that keeps
//!   them window by window (TUMBLE and HOP; `stampede aggregate --view`, not yet `serve`), and
//!   their answer computed in batch by SQL alone, the independent check.
//!
//! After the core
//! * [`hub`] — live fleet state and WebSocket frames (fed by the fan-out, never waited for).
//! * [`output`] — the fan-out and every output, each with its own `build()`: the store
//!   (embedded or DynamoDB), the summary and dead-letter streams (Kafka or Kinesis), the
//!   archive (directory or S3), notifications (SNS, SMTP).
//! * [`pipeline`] — the partition task: decode → window → rules → fan-out.
//! * [`source`] — where records come from: HTTP, a file, a Kafka consumer group, Kinesis shards;
//!   one start and stop for all; [`source::durable`] is the partition lifecycle the stream
//!   sources share.
//! * [`query`] — DataFusion over the archive and the store.
//! * [`web`] — HTTP ingest, API, `/ws`, metrics and the dashboard.
//!
//! Assembly and commands
//! * [`config`] — the TOML configuration and its environment overrides, above the parts it
//!   configures (they never import it).
//! * [`app`] — `serve`: assembly and ordered shutdown.
//! * [`commands`] — every command, with its flags: aggregate, produce, consume, demo, query,
//!   serve, subscribe; [`cli`] — the top-level command line.

pub mod setting;
pub mod time;

pub mod record;

pub mod backoff;
pub mod metrics;

pub mod clients;

pub mod decode;
pub mod window;

pub mod alert;
pub mod view;

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

//! Sources: where telemetry comes from. Each hands raw payloads, tagged with their partition
//! and position, to decoding and a window engine per partition. The stream sources (Kafka,
//! Kinesis) share one partition lifecycle, [`durable`]: each only reads, commits and keeps its
//! ownership.

pub mod durable;
pub mod file;
pub mod kafka;
pub mod kinesis;

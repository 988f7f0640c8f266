//! Sources: where telemetry comes from. Each hands raw payloads, tagged with their partition
//! and position, to decoding and a window engine per partition.

pub mod file;
pub mod kafka;
pub mod kinesis;

//! Technology plumbing shared by sources, outputs and commands: how to reach Kafka, Kinesis,
//! DynamoDB and the rest of AWS, HTTP(S) servers, and how to compare secrets. Nothing here knows
//! about telemetry, windows or outputs; everything above may use it.

pub mod aws;
pub mod dynamodb;
pub mod http;
pub mod kafka;
pub mod kinesis;
pub mod tls;
pub mod token;

/// This process among the instances that share a stream, a group or a table:
/// `HOST-PID-STARTMS` (the start time tells a restart with the same process number apart).
pub fn instance_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "stampede".into());
        format!("{host}-{}-{}", std::process::id(), crate::time::now_ms())
    })
    .clone()
}

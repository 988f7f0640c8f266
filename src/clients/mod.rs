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

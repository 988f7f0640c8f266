//! What the AWS parts (the Kinesis source, outputs and commands, the DynamoDB store and leases)
//! share: SDK errors in words.

// The SDK crates re-export the same smithy types: these serve DynamoDB errors too.
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// An SDK error in words: the service's code and message, or the chain of causes.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

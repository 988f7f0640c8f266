//! What the AWS parts (the Kinesis source, outputs and commands, the DynamoDB store and leases)
//! share: SDK errors in words, and waiting for a DynamoDB table to become ACTIVE.

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

/// Waits until DynamoDB says `table` is ACTIVE (after a `CreateTable`, or one under way
/// elsewhere): true once it is, false if it is not within `within`.
pub async fn table_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    within: std::time::Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .ok()
            .and_then(|d| d.table)
            .and_then(|t| t.table_status);
        if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The AWS settings (region, credential chain, endpoints), resolved once for every AWS part of
/// a service and only when one is configured.
#[derive(Default)]
pub struct Aws(tokio::sync::OnceCell<aws_config::SdkConfig>);

/// How long one AWS call may take, at most (a `GetRecords` of 10 MB on a slow link included).
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long connecting to an AWS endpoint may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Aws {
    /// Nothing resolved yet.
    pub fn new() -> Aws {
        Aws::default()
    }

    /// The settings, resolved the first time they are asked for. Every call gives up after
    /// [`ATTEMPT_TIMEOUT`] (connecting after [`CONNECT_TIMEOUT`]) and is retried as the SDK
    /// retries: a peer that accepts and never answers must not hold a shard reader or an
    /// alert channel for ever. (DynamoDB's calls have a shorter limit of their own.)
    pub async fn config(&self) -> &aws_config::SdkConfig {
        self.0
            .get_or_init(|| {
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .connect_timeout(CONNECT_TIMEOUT)
                            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                            .build(),
                    )
                    .load()
            })
            .await
    }
}

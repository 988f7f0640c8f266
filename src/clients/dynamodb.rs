//! DynamoDB plumbing shared by the store's tables, the subscription table and the Kinesis
//! lease table: the client (calls that give up), errors in words with whether a retry can help,
//! and making sure a table exists.

use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;

/// A call that has not answered in this long is abandoned and retried (DynamoDB answers in
/// milliseconds; a hung connection must not stall the store output for ever).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A DynamoDB failure, in words, with whether retrying can help.
#[derive(Debug, thiserror::Error)]
#[error("dynamodb: {message}")]
pub struct DynamoError {
    /// What failed.
    pub message: String,
    /// A missing table or refused credentials will not fix themselves.
    pub permanent: bool,
}

/// A failed call as a [`DynamoError`]: `what` was being done.
pub fn dynamo_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    what: &str,
    e: &SdkError<E, R>,
) -> DynamoError {
    let code = e.code().unwrap_or("");
    let permanent = matches!(
        code,
        "ResourceNotFoundException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "ValidationException"
    );
    let detail = crate::clients::aws::describe(e);
    DynamoError {
        message: format!("{what}: {detail}"),
        permanent,
    }
}

/// A DynamoDB client by the SDK's conventions, whose calls give up after 10 s (a hung
/// connection must not stall an output for ever).
pub fn client(config: &aws_config::SdkConfig) -> Client {
    Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .timeout_config(
                aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build(),
    )
}

/// Whether `table` answers a `DescribeTable`: why not, naming it (for `/readyz`).
///
/// # Errors
/// The call failed, in words.
pub async fn answers(client: &Client, table: &str) -> Result<(), String> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "DynamoDB table {table}: {}",
                crate::clients::aws::describe(&e)
            )
        })
}

/// Checks that `table` exists; a missing one is created (with the partition key and sort key
/// `keys`) when `create` is set, else an error that says how to create it.
///
/// # Errors
/// The table is missing and may not be created, or DynamoDB cannot be reached.
pub async fn ensure_table(
    client: &Client,
    table: &str,
    keys: ((&str, ScalarAttributeType), (&str, ScalarAttributeType)),
    create: bool,
) -> Result<(), DynamoError> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            if create {
                return create_table(client, table, keys.0, keys.1).await;
            }
            let ((hash, h), (range, r)) = keys;
            Err(DynamoError {
                message: format!(
                    "table {table} does not exist: create it (partition key {hash} {}, sort key {range} {}) or set [store] create_tables = true",
                    h.as_str(),
                    r.as_str()
                ),
                permanent: true,
            })
        }
        Err(e) => Err(dynamo_error(&format!("cannot describe table {table}"), &e)),
    }
}

/// Creates `table` (on demand) with the partition key `hash` and the sort key `range` (an
/// existing one is fine) and waits until it is active.
///
/// # Errors
/// DynamoDB refused, or the table did not become active within a minute.
pub async fn create_table(
    client: &Client,
    table: &str,
    (hash, hash_type): (&str, ScalarAttributeType),
    (range, range_type): (&str, ScalarAttributeType),
) -> Result<(), DynamoError> {
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let built = (|| {
        Ok::<_, aws_sdk_dynamodb::error::BuildError>((
            attribute(hash, hash_type)?,
            attribute(range, range_type)?,
            key(hash, KeyType::Hash)?,
            key(range, KeyType::Range)?,
        ))
    })()
    .map_err(|e| DynamoError {
        message: format!("table definition: {e}"),
        permanent: true,
    })?;
    let result = client
        .create_table()
        .table_name(table)
        .attribute_definitions(built.0)
        .attribute_definitions(built.1)
        .key_schema(built.2)
        .key_schema(built.3)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match result {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(dynamo_error(&format!("cannot create table {table}"), &e)),
    }
    if crate::clients::aws::table_active(client, table, Duration::from_secs(60)).await {
        tracing::info!(table, "created a DynamoDB table");
        return Ok(());
    }
    Err(DynamoError {
        message: format!("table {table} did not become ACTIVE within a minute"),
        permanent: false,
    })
}

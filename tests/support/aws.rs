//! The AWS emulators of the tests, started by `scripts/test`: kinesalite and dynalite
//! (`scripts/components/aws`, at `STAMPEDE_TEST_KINESIS` and `STAMPEDE_TEST_DYNAMODB`) and moto
//! (`scripts/components/moto`, SNS at `STAMPEDE_TEST_SNS`, S3 at `STAMPEDE_TEST_S3`, else the
//! same moto). The environment a `stampede` process needs to reach them, and the clients the
//! tests use themselves. Fails loudly when an emulator a test needs is not there: these tests
//! never skip.

use std::sync::Arc;

use aws_config::SdkConfig;

/// The region of every emulator.
pub const REGION: &str = "us-east-1";

/// The fake access key id (and secret) the emulators accept.
const KEY: &str = "test";

/// One AWS service and the emulator that plays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aws {
    /// kinesalite.
    Kinesis,
    /// dynalite.
    DynamoDb,
    /// moto.
    Sns,
    /// moto.
    S3,
}

impl Aws {
    /// The emulator's URL, `http://HOST:PORT`; fails saying how to start it when it is not set.
    pub fn endpoint(self) -> String {
        let (name, vars, how): (&str, &[&str], &str) = match self {
            Aws::Kinesis => (
                "Kinesis",
                &["STAMPEDE_TEST_KINESIS"],
                "scripts/components/aws",
            ),
            Aws::DynamoDb => (
                "DynamoDB",
                &["STAMPEDE_TEST_DYNAMODB"],
                "scripts/components/aws",
            ),
            Aws::Sns => ("SNS", &["STAMPEDE_TEST_SNS"], "scripts/components/moto"),
            Aws::S3 => (
                "S3",
                &["STAMPEDE_TEST_S3", "STAMPEDE_TEST_SNS"],
                "scripts/components/moto",
            ),
        };
        vars.iter()
            .find_map(|v| std::env::var(v).ok())
            .unwrap_or_else(|| {
                panic!(
                    "no {name} emulator for the tests: run ./scripts/test, or set {}=http://HOST:PORT ({how})",
                    vars[0]
                )
            })
    }

    /// The SDK's service-specific endpoint variable.
    pub fn endpoint_var(self) -> &'static str {
        match self {
            Aws::Kinesis => "AWS_ENDPOINT_URL_KINESIS",
            Aws::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
            Aws::Sns => "AWS_ENDPOINT_URL_SNS",
            Aws::S3 => "AWS_ENDPOINT_URL_S3",
        }
    }
}

/// What a `stampede` process needs to reach the emulators of `services` (and only them): the
/// region, fake credentials and each one's endpoint variable (`AWS_ENDPOINT_URL_KINESIS`, …).
/// Fails loudly when one of them is missing. A test adds its own settings (a table, a topic) to
/// the list.
pub fn env(services: &[Aws]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", KEY.to_owned()),
    ];
    env.extend(services.iter().map(|s| (s.endpoint_var(), s.endpoint())));
    env
}

/// The SDK's settings for an emulator (or a proxy in front of one) at `endpoint`: its region
/// and the fake credentials.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            KEY, KEY, None, None, "tests",
        ))
        .load()
        .await
}

/// An SDK client made by `new` (`aws_sdk_kinesis::Client::new`, …) against `endpoint`.
pub async fn client_at<C>(endpoint: &str, new: impl FnOnce(&SdkConfig) -> C) -> C {
    new(&sdk_config(endpoint).await)
}

/// A Kinesis client of the emulator.
pub async fn kinesis() -> aws_sdk_kinesis::Client {
    client_at(&Aws::Kinesis.endpoint(), aws_sdk_kinesis::Client::new).await
}

/// A DynamoDB client of the emulator.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    client_at(&Aws::DynamoDb.endpoint(), aws_sdk_dynamodb::Client::new).await
}

/// An SNS client of the emulator.
pub async fn sns() -> aws_sdk_sns::Client {
    client_at(&Aws::Sns.endpoint(), aws_sdk_sns::Client::new).await
}

/// `bucket` of the S3 emulator through `object_store`, the client DataFusion uses, over the real
/// S3 API.
pub fn s3_bucket(bucket: &str) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(REGION)
            .with_endpoint(Aws::S3.endpoint())
            .with_allow_http(true)
            .with_access_key_id(KEY)
            .with_secret_access_key(KEY)
            .build()
            .unwrap(),
    )
}

//! S3 for the tests: moto in server mode (the same one as SNS, `scripts/components/moto`), at
//! `STAMPEDE_TEST_S3`, else `STAMPEDE_TEST_SNS`. Objects are read back with `object_store`, the
//! client DataFusion uses, over the real S3 API. Fails loudly when moto is not there.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

pub fn endpoint() -> String {
    std::env::var("STAMPEDE_TEST_S3")
        .or_else(|_| std::env::var("STAMPEDE_TEST_SNS"))
        .unwrap_or_else(|_| {
            panic!("no S3 emulator for the tests: run ./scripts/test, or set STAMPEDE_TEST_S3=http://HOST:PORT (scripts/components/moto)")
        })
}

/// What the service needs to reach moto's S3.
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_S3", endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
}

/// Creates `bucket` (`PUT /bucket`, path style).
pub async fn create_bucket(bucket: &str) {
    let addr: std::net::SocketAddr = endpoint().trim_start_matches("http://").parse().unwrap();
    let (status, body) =
        crate::support::service::request(addr, hyper::Method::PUT, &format!("/{bucket}"), "", None)
            .await;
    assert!(
        status.is_success(),
        "create bucket {bucket}: {status} {}",
        String::from_utf8_lossy(&body)
    );
}

fn store(bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_endpoint(endpoint())
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    )
}

/// Every object of `bucket` and its bytes, by key.
pub async fn objects(bucket: &str) -> Vec<(String, bytes::Bytes)> {
    use futures_util::TryStreamExt;
    let store = store(bucket);
    let listed: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await.unwrap();
    let mut out = Vec::new();
    for meta in listed {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((meta.location.to_string(), bytes));
    }
    out.sort();
    out
}

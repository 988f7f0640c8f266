//! S3 for the tests: moto in server mode (the same one as SNS; see `support::aws`). Buckets
//! created, objects read back with `object_store`, the client DataFusion uses, over the real S3
//! API.

use object_store::ObjectStoreExt;

/// Creates `bucket` (`PUT /bucket`, path style).
pub async fn create_bucket(bucket: &str) {
    let addr: std::net::SocketAddr = crate::support::aws::Aws::S3
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (status, body) =
        crate::support::service::request(addr, hyper::Method::PUT, &format!("/{bucket}"), "", None)
            .await;
    assert!(
        status.is_success(),
        "create bucket {bucket}: {status} {}",
        String::from_utf8_lossy(&body)
    );
}

/// Every object of `bucket` and its bytes, by key.
pub async fn objects(bucket: &str) -> Vec<(String, bytes::Bytes)> {
    use futures_util::TryStreamExt;
    let store = crate::support::aws::s3_bucket(bucket);
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

/// How often each line (record) is in `objects`.
pub fn lines(objects: &[(String, bytes::Bytes)]) -> std::collections::BTreeMap<Vec<u8>, u32> {
    let mut counts = std::collections::BTreeMap::new();
    for (_, body) in objects {
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            *counts.entry(line.to_vec()).or_insert(0u32) += 1;
        }
    }
    counts
}

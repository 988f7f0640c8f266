//! Where archive objects go: a directory or an S3 bucket. Both write an object only if none has
//! its name, and both make it visible whole or not at all.
//!
//! * **Directory**: the bytes go to a file under `.stampede-tmp/` in the archive (hidden, so
//!   readers that glob the archive skip it), are flushed to disk, then hard-linked to their name
//!   — which fails, replacing nothing, if the name exists — and the directory is flushed too.
//! * **S3** (through `object_store`, DataFusion's own client): one `PutObject` with
//!   `If-None-Match: *`; a 412 means the object is there. Objects are at most
//!   `archive.buffer_bytes` (≤ 1 GiB, Parquet smaller still), well inside the 5 GiB a single
//!   `PutObject` takes, so no multipart upload is needed. Region, credentials (the whole AWS
//!   chain, refreshed) and endpoint (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`) follow the
//!   AWS SDK conventions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::output::{Classify, ErrorKind};

/// The hidden directory a directory archive stages files in.
pub const STAGING: &str = ".stampede-tmp";

/// A staged file this old was left by a run that stopped while writing it.
const STALE_STAGED: std::time::Duration = std::time::Duration::from_secs(3_600);

/// An archive's destination.
#[derive(Clone, Debug)]
pub enum Target {
    /// A directory.
    Dir(PathBuf),
    /// An S3 bucket, keys under `prefix` (prepended as is, as Firehose does).
    S3 {
        /// The client.
        store: Arc<dyn ObjectStore>,
        /// The bucket, for messages.
        bucket: String,
        /// Prepended to every key.
        prefix: String,
    },
}

/// A failed archive write or read.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The file system refused.
    #[error("{path}: {error}")]
    Io {
        /// Where.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// S3 refused.
    #[error("{}", describe(.0))]
    S3(object_store::Error),
}

impl From<object_store::Error> for TargetError {
    fn from(e: object_store::Error) -> Self {
        TargetError::S3(e)
    }
}

/// An S3 error in words: the service's `Code: Message` when its XML body says them (the client
/// repeats the whole body, twice), else the client's first line.
pub fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(
            text[start..end]
                .trim_start_matches("<![CDATA[")
                .trim_end_matches("]]>")
                .to_owned(),
        )
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect(),
    }
}

impl Classify for TargetError {
    fn kind(&self) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match self {
            TargetError::Io { error, .. } => match error.kind() {
                Io::PermissionDenied | Io::ReadOnlyFilesystem | Io::StorageFull => {
                    ErrorKind::Permanent
                }
                _ => ErrorKind::Transient,
            },
            TargetError::S3(e) => match e {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotImplemented { .. } => ErrorKind::Permanent,
                // A missing bucket answers 404 to a PUT.
                object_store::Error::NotFound { .. } => ErrorKind::Permanent,
                _ => ErrorKind::Transient,
            },
        }
    }
}

fn io(path: &Path, error: std::io::Error) -> TargetError {
    TargetError::Io {
        path: path.display().to_string(),
        error,
    }
}

impl Target {
    /// An S3 archive: `bucket`, objects under `prefix`, reached with `aws`'s settings.
    ///
    /// # Errors
    /// The S3 client cannot be made.
    pub fn s3(
        aws: &aws_config::SdkConfig,
        bucket: &str,
        prefix: &str,
    ) -> Result<Target, object_store::Error> {
        Ok(Target::S3 {
            store: s3_store(aws, bucket)?,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// Where it is, for logs: the directory, or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Target::Dir(dir) => dir.display().to_string(),
            Target::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// Writes `bytes` as `key` unless an object has that name: whether it was written.
    ///
    /// # Errors
    /// The write failed; nothing is visible under `key` then.
    pub async fn put_new(&self, key: &str, body: PutPayload) -> Result<bool, TargetError> {
        match self {
            Target::Dir(root) => {
                let root = root.clone();
                let key = key.to_owned();
                tokio::task::spawn_blocking(move || put_new_file(&root, &key, &body))
                    .await
                    .map_err(|e| TargetError::Io {
                        path: "archive writer".into(),
                        error: std::io::Error::other(e),
                    })?
            }
            Target::S3 { store, prefix, .. } => {
                let location = Key::from(format!("{prefix}{key}"));
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                match store.put_opts(&location, body, options).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// The object `key`, whole.
    ///
    /// # Errors
    /// It cannot be read.
    pub async fn get(&self, key: &str) -> Result<Bytes, TargetError> {
        match self {
            Target::Dir(root) => {
                let path = root.join(key);
                tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| io(&path, e))
            }
            Target::S3 { store, prefix, .. } => {
                let location = Key::from(format!("{prefix}{key}"));
                Ok(store.get(&location).await?.bytes().await?)
            }
        }
    }

    /// Checks at start that objects can be written: the directory is created (and stale staged
    /// files of a crashed run removed); the bucket is listed.
    ///
    /// # Errors
    /// The directory cannot be created, or the bucket cannot be reached.
    pub async fn prepare(&self) -> Result<(), TargetError> {
        match self {
            Target::Dir(root) => {
                let staging = root.join(STAGING);
                tokio::fs::create_dir_all(&staging)
                    .await
                    .map_err(|e| io(&staging, e))?;
                let mut entries = tokio::fs::read_dir(&staging)
                    .await
                    .map_err(|e| io(&staging, e))?;
                // Files staged by a run that did not finish them: never linked, never visible.
                // Only old ones: another instance on this host may be writing into the same
                // archive now (a write takes seconds).
                while let Ok(Some(entry)) = entries.next_entry().await {
                    let stale = entry
                        .metadata()
                        .await
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_STAGED);
                    if stale {
                        let _ = tokio::fs::remove_file(entry.path()).await;
                    }
                }
                Ok(())
            }
            Target::S3 { store, prefix, .. } => {
                use futures_util::StreamExt;
                let location = Key::from(prefix.trim_end_matches('/'));
                let mut listing = store.list(Some(&location));
                match listing.next().await {
                    Some(Err(e)) => Err(e.into()),
                    _ => Ok(()),
                }
            }
        }
    }
}

static STAGED: AtomicU64 = AtomicU64::new(0);

fn put_new_file(root: &Path, key: &str, body: &PutPayload) -> Result<bool, TargetError> {
    let dest = root.join(key);
    let dir = dest.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let staging = root.join(STAGING);
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
    let staged = staging.join(format!(
        "{}-{}",
        std::process::id(),
        STAGED.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&staged).map_err(|e| io(&staged, e))?;
        for piece in body.iter() {
            file.write_all(piece).map_err(|e| io(&staged, e))?;
        }
        file.sync_all().map_err(|e| io(&staged, e))?;
        match std::fs::hard_link(&staged, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io(&dest, e)),
        }
        // The new name is durable once its directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
        Ok(true)
    })();
    let _ = std::fs::remove_file(&staged);
    result
}

/// An S3 client for `bucket` with the AWS settings of `aws`: its region (default `us-east-1`),
/// its credential chain (asked again as credentials expire), and the endpoint
/// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS's (path-style requests, and plain
/// HTTP allowed, for an emulator).
///
/// # Errors
/// The client cannot be built from these settings.
pub fn s3_store(
    aws: &aws_config::SdkConfig,
    bucket: &str,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(aws.region().map_or("us-east-1", |r| r.as_ref()));
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| aws.endpoint_url().map(str::to_owned));
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false);
    }
    if let Some(provider) = aws.credentials_provider() {
        builder = builder.with_credentials(Arc::new(SdkCredentials(provider)));
    }
    Ok(Arc::new(builder.build()?))
}

/// The AWS SDK's credential chain, as `object_store` asks for credentials.
#[derive(Debug)]
struct SdkCredentials(aws_sdk_dynamodb::config::SharedCredentialsProvider);

#[async_trait::async_trait]
impl object_store::CredentialProvider for SdkCredentials {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        use aws_sdk_dynamodb::config::ProvideCredentials;
        let c = self.0.provide_credentials().await.map_err(|e| {
            object_store::Error::Unauthenticated {
                path: String::new(),
                source: Box::new(e),
            }
        })?;
        Ok(Arc::new(object_store::aws::AwsCredential {
            key_id: c.access_key_id().to_owned(),
            secret_key: c.secret_access_key().to_owned(),
            token: c.session_token().map(str::to_owned),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_object_is_written_once_and_never_replaced() {
        let root = std::env::temp_dir().join(format!("stampede-target-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let target = Target::Dir(root.clone());
        target.prepare().await.unwrap();
        let key = "2018/03/18/03/wildrydes-1-x";
        assert!(target
            .put_new(key, PutPayload::from_static(b"first\n"))
            .await
            .unwrap());
        assert!(!target
            .put_new(key, PutPayload::from_static(b"second\n"))
            .await
            .unwrap());
        assert_eq!(
            target.get(key).await.unwrap(),
            Bytes::from_static(b"first\n")
        );
        // Nothing is left staged.
        assert_eq!(std::fs::read_dir(root.join(STAGING)).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }
}

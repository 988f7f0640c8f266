//! The archive's objects as DataFusion reads them: found by listing the archive (a directory or
//! an S3 prefix), NDJSON and Parquet apart, staging files and markers skipped.

use super::QueryError;
use crate::output::archive::target::{Target, STAGING};

/// The archive's objects: NDJSON ones and Parquet ones, as URLs DataFusion reads.
pub(super) async fn archive_files(
    target: &Target,
) -> Result<(Vec<String>, Vec<String>), QueryError> {
    let mut json = Vec::new();
    let mut parquet = Vec::new();
    let mut sort = |url: String| {
        if url.ends_with(".parquet") {
            parquet.push(url);
        } else {
            json.push(url);
        }
    };
    match target {
        Target::Dir(root) => {
            let root = root.clone();
            let files = tokio::task::spawn_blocking(move || walk(&root))
                .await
                .map_err(|e| QueryError::Source(e.to_string()))??;
            files.into_iter().for_each(&mut sort);
        }
        Target::S3 {
            store,
            bucket,
            prefix,
        } => {
            use futures_util::TryStreamExt;
            let at = object_store::path::Path::from(prefix.trim_end_matches('/'));
            let listed: Vec<object_store::ObjectMeta> = store
                .list((!prefix.is_empty()).then_some(&at))
                .try_collect()
                .await
                .map_err(|e| {
                    let why = crate::output::archive::target::describe(&e);
                    QueryError::Source(format!("cannot list s3://{bucket}/{prefix}: {why}"))
                })?;
            for meta in listed {
                let key = meta.location.as_ref();
                if !key.split('/').any(hidden) {
                    sort(format!("s3://{bucket}/{key}"));
                }
            }
        }
    }
    json.sort();
    parquet.sort();
    Ok((json, parquet))
}

/// Names that readers of a data lake skip: staging (`.stampede-tmp`), markers (`_SUCCESS`).
fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Every file under `root`, skipping hidden names, as absolute paths.
fn walk(root: &std::path::Path) -> Result<Vec<String>, QueryError> {
    let root = std::fs::canonicalize(root).map_err(|e| {
        QueryError::Source(format!("cannot read the archive {}: {e}", root.display()))
    })?;
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| QueryError::Source(format!("{}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if hidden(name) || name == STAGING {
                continue;
            }
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => out.push(path.display().to_string()),
                _ => {}
            }
        }
    }
    Ok(out)
}

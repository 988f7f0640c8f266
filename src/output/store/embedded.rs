//! The embedded store (redb): summaries upserted by (`Name`, `StatusTime`) keeping the highest
//! `Revision`, and dead letters with their reason, origin and raw bytes, bounded by count.
//!
//! The database only: the store output (`store.rs`) writes to it, one transaction per batch of
//! whatever is queued (one fsync per batch, not per summary); readers (the API) open their own
//! read transactions.
//!
//! redb because it is a pure-Rust, actively maintained, ACID embedded database with a stable
//! file format, no C toolchain and a small build; summaries are tiny and few (one per unicorn
//! per minute), so a B-tree with two tables is all this needs.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;

use crate::record::{DeadLetter, DeadLetterView, Origin, Summary, SummaryQuery};
use crate::time::{format_status_time, Millis};

/// (Name, window start) → summary JSON.
/// redb's page cache. Its default, 1 GiB, is filled by a store of a few million summaries and
/// never given back (after a flood of a million names the process kept ~170 MiB of it); reads
/// that miss it come from the operating system's file cache, which the kernel sizes.
pub const CACHE_BYTES: usize = 64 << 20;

const SUMMARIES: TableDefinition<(&str, i64), &str> = TableDefinition::new("summaries");
/// (window start, Name) → (): newest-first listing across unicorns.
const BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("summaries_by_time");
/// Sequence → (metadata JSON, raw bytes).
const DEAD_LETTERS: TableDefinition<u64, (&str, &[u8])> = TableDefinition::new("dead_letters");

#[derive(Serialize, serde::Deserialize)]
struct DeadLetterMeta {
    reason: String,
    field: Option<String>,
    origin: Origin,
    at: Millis,
}

/// A store failure; the message says what failed. Retrying may help with I/O errors.
#[derive(Debug, thiserror::Error)]
#[error("embedded store: {0}")]
pub struct StoreError(String);

impl StoreError {
    /// A failure of the store's tables, in words.
    pub fn new(e: impl std::fmt::Display) -> StoreError {
        StoreError(e.to_string())
    }
}

/// The local database's errors are I/O: worth retrying (a full disk frees up, a lock goes).
impl crate::output::Classify for StoreError {
    fn kind(&self) -> crate::output::ErrorKind {
        crate::output::ErrorKind::Transient
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A damaged store file, said with what to do.
fn damaged(path: &Path, why: &str) -> StoreError {
    StoreError(format!(
        "{} is damaged ({why}); nothing was changed. `stampede store check --repair` repairs what \
         can be repaired (keeping a copy of the file as it is), or move the file away to start \
         afresh (a Kafka or Kinesis source re-reads from its last commit)",
        path.display()
    ))
}

/// `f`, with a panic in it (redb asserts on some damaged files) caught and said in words
/// rather than printed. The process's panic hook is silenced meanwhile: call it before the
/// service's tasks run.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the database could not be read".to_owned())
    })
}

/// What [`check`] found of a store file.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    /// Whole.
    Whole,
    /// Not closed cleanly (a crash, SIGKILL): redb's recovery on open, as the service's open
    /// does, made it whole.
    Recovered,
    /// Its pages failed the integrity check, and it was repaired.
    Repaired,
    /// It cannot be repaired: why.
    Lost(String),
}

/// Checks the store file at `path` page by page (redb's integrity check), repairing it in
/// place when it can: run it on a copy to change nothing. The summaries and dead letters a
/// whole or repaired file holds are counted.
///
/// # Errors
/// The file is in use by a running service, or cannot be read at all.
pub fn check(path: &Path) -> Result<(Health, Option<(u64, u64)>), StoreError> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Ok((Health::Lost("the file is empty".into()), None));
    }
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::clone(&repaired);
    let opened = quietly(|| {
        redb::Builder::new()
            .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::Relaxed))
            .open(path)
    });
    let mut db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoreError(format!(
                "{} is in use by a running Stampede: stop it first",
                path.display()
            )))
        }
        Ok(Err(e)) => return Ok((Health::Lost(e.to_string()), None)),
        Err(why) => return Ok((Health::Lost(why), None)),
    };
    let health = match quietly(|| db.check_integrity()) {
        Ok(Ok(true)) if repaired.load(std::sync::atomic::Ordering::Relaxed) => Health::Recovered,
        Ok(Ok(true)) => Health::Whole,
        Ok(Ok(false)) => Health::Repaired,
        Ok(Err(e)) => return Ok((Health::Lost(e.to_string()), None)),
        Err(why) => return Ok((Health::Lost(why), None)),
    };
    let counts = quietly(|| -> Result<(u64, u64), StoreError> {
        let r = db.begin_read().map_err(err)?;
        let summaries = match r.open_table(SUMMARIES) {
            Ok(t) => t.len().map_err(err)?,
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(err(e)),
        };
        let dead = match r.open_table(DEAD_LETTERS) {
            Ok(t) => t.len().map_err(err)?,
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(err(e)),
        };
        Ok((summaries, dead))
    });
    match counts {
        Ok(Ok(counts)) => Ok((health, Some(counts))),
        Ok(Err(e)) => Ok((Health::Lost(e.to_string()), None)),
        Err(why) => Ok((Health::Lost(why), None)),
    }
}

/// The embedded database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: DbFile,
    views: DbFile,
    retention: u64,
}

/// One database file, opened again after an I/O error.
///
/// redb refuses every call after a write failed on I/O (a full disk, say) until the database is
/// opened again, when its recovery makes the file whole as of the last commit. Everything that
/// uses the file goes through this handle, so a reopen reaches every user; a call that fails
/// asks for one ([`DbFile::recover`]), and so does the readiness probe, so that a store that was
/// idle when space came back is writable again without waiting for its next write.
#[derive(Clone)]
pub struct DbFile {
    inner: Arc<FileInner>,
}

struct FileInner {
    path: std::path::PathBuf,
    /// `None` while it could not be opened again: why.
    db: std::sync::RwLock<Result<Arc<Database>, String>>,
}

impl DbFile {
    /// Opens (or creates) the database file `path`; a damaged one is refused, said in words.
    ///
    /// # Errors
    /// It cannot be opened, or is damaged.
    pub fn open(path: &Path) -> Result<DbFile, StoreError> {
        let db = open_file(path)?;
        Ok(DbFile {
            inner: Arc::new(FileInner {
                path: path.to_owned(),
                db: std::sync::RwLock::new(Ok(Arc::new(db))),
            }),
        })
    }

    /// The database, or why it is closed (an I/O error it is being opened again after).
    ///
    /// # Errors
    /// The file could not be opened again yet.
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        match &*self
            .inner
            .db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Ok(db) => Ok(Arc::clone(db)),
            Err(why) => Err(StoreError(why.clone())),
        }
    }

    /// `result`, after asking for a reopen when it failed.
    ///
    /// # Errors
    /// `result`'s.
    pub fn recovering<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.recover();
        }
        result
    }

    /// Opens the file again if the database refuses calls after an I/O error (or could not be
    /// opened again last time). Waits up to a second for the calls under way to end; a file that
    /// still cannot be opened (the disk is still full) stays closed, with the reason, until the
    /// next try.
    pub fn recover(&self) {
        let mut slot = self
            .inner
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(db) = &*slot {
            let failed = matches!(
                db.begin_write(),
                Err(redb::TransactionError::Storage(
                    redb::StorageError::PreviousIo | redb::StorageError::Io(_)
                ))
            );
            if !failed {
                return;
            }
            tracing::debug!(file = %self.inner.path.display(), "embedded store: a write failed on I/O; opening the file again");
            // redb holds the file locked until the last handle is gone.
            let mut old = std::mem::replace(
                &mut *slot,
                Err(format!(
                    "{}: an earlier write failed on I/O; opening the file again",
                    self.inner.path.display()
                )),
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while let Ok(db) = old {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(db) if std::time::Instant::now() < deadline => {
                        old = Ok(db);
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(db) => {
                        // In use: the next try reopens it.
                        *slot = Ok(db);
                        return;
                    }
                }
            }
        }
        // Not through `open_file`: the file was whole when it was opened, and a reopen that fails
        // (its recovery cannot write to a full disk) is the I/O error again, not damage. Nor
        // through `quietly`, which swaps the process's panic hook: the service is running.
        let path = self.inner.path.clone();
        let reopened = std::panic::catch_unwind(move || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
        });
        *slot = match reopened {
            Ok(Ok(db)) => {
                tracing::debug!(file = %self.inner.path.display(), "embedded store: opened again after an I/O error");
                Ok(Arc::new(db))
            }
            Ok(Err(e)) => Err(format!(
                "{}: cannot be opened again after an I/O error: {e}",
                self.inner.path.display()
            )),
            Err(_) => Err(format!(
                "{}: cannot be opened again after an I/O error (`stampede store check` says why)",
                self.inner.path.display()
            )),
        };
    }

    /// Whether a write transaction can be started; when not, after trying to open the file
    /// again.
    pub fn writable(&self) -> bool {
        let ok = || {
            self.get()
                .is_ok_and(|db| db.begin_write().is_ok_and(|w| w.abort().is_ok()))
        };
        ok() || {
            self.recover();
            ok()
        }
    }
}

/// The views' database file, beside `stampede.redb`.
pub const VIEWS_FILE: &str = "stampede-views.redb";

/// Opens (or creates) the database file `path`; a damaged one is refused, said in words.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    // An existing file is never started afresh: an empty one was emptied.
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(damaged(path, "the file is empty"));
    }
    let opened = quietly(|| {
        redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError(format!(
            "cannot open {}: another Stampede uses this store.path: stop it or choose another path",
            path.display()
        ))),
        Ok(Err(e @ redb::DatabaseError::Storage(redb::StorageError::Io(_)))) => {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                // The file can be read and written: what it holds is not a database.
                Ok(_) => Err(damaged(path, &e.to_string())),
                Err(io) => Err(StoreError(format!("cannot open {}: {io}", path.display()))),
            }
        }
        Ok(Err(e)) => Err(damaged(path, &e.to_string())),
        Err(why) => Err(damaged(path, &why)),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`, with a page cache of [`CACHE_BYTES`].
    ///
    /// # Errors
    /// The directory or database cannot be created or opened (another process holding it, say).
    pub fn open(dir: &Path, dead_letter_retention: u64) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let db = DbFile::open(&dir.join("stampede.redb"))?;
        // The views' tables have a file of their own: a minute of view windows, written while it
        // closes, never holds up the summaries' transactions.
        let views = DbFile::open(&dir.join(VIEWS_FILE))?;
        let w = db.get()?.begin_write().map_err(err)?;
        {
            w.open_table(SUMMARIES).map_err(err)?;
            w.open_table(BY_TIME).map_err(err)?;
            w.open_table(DEAD_LETTERS).map_err(err)?;
        }
        w.commit().map_err(err)?;
        Ok(EmbeddedStore {
            db,
            views,
            retention: dead_letter_retention,
        })
    }

    /// The database, for other tables kept in the same file (alert subscriptions).
    pub fn database(&self) -> DbFile {
        self.db.clone()
    }

    /// The views' database (its own file, [`VIEWS_FILE`]).
    pub fn views_database(&self) -> DbFile {
        self.views.clone()
    }

    /// Upserts summaries (a lower `Revision` never replaces a higher one) and appends dead
    /// letters, in one transaction.
    ///
    /// # Errors
    /// The transaction failed; nothing of it was written.
    pub fn write(
        &self,
        summaries: &[impl std::borrow::Borrow<Summary>],
        dead_letters: &[DeadLetter],
    ) -> Result<usize, StoreError> {
        let written = self.write_once(summaries, dead_letters);
        self.db.recovering(written)
    }

    fn write_once(
        &self,
        summaries: &[impl std::borrow::Borrow<Summary>],
        dead_letters: &[DeadLetter],
    ) -> Result<usize, StoreError> {
        let w = self.db.get()?.begin_write().map_err(err)?;
        let mut written = 0;
        {
            let mut table = w.open_table(SUMMARIES).map_err(err)?;
            let mut by_time = w.open_table(BY_TIME).map_err(err)?;
            let mut json = String::with_capacity(256);
            // In key order: a minute's close of a big fleet is a summary per unicorn, and in the
            // order they closed each would land on another page of both tables (measured: a
            // million took the best part of a minute). Sorted, the writes walk both in order.
            // The sort is stable, so revisions of one window keep their order; the store's
            // writer hands them over sorted already, which the sort finds in one pass.
            let mut ordered: Vec<&Summary> = summaries.iter().map(|s| s.borrow()).collect();
            ordered.sort_by(|a, b| (&a.name, a.window_start).cmp(&(&b.name, b.window_start)));
            for s in ordered {
                let key = (s.name.as_str(), s.window_start);
                json.clear();
                s.write_json(&mut json);
                // One walk down the tree: insert, and put the old row back in the rare case it
                // was the newer revision (a restatement that overtook a replayed one).
                let old = table.insert(key, json.as_str()).map_err(err)?;
                let newer_old = old.and_then(|old| {
                    let text = old.value();
                    serde_json::from_str::<Summary>(text)
                        .is_ok_and(|o| o.revision > s.revision)
                        .then(|| text.to_owned())
                });
                if let Some(old) = newer_old {
                    table.insert(key, old.as_str()).map_err(err)?;
                    continue;
                }
                by_time
                    .insert((s.window_start, s.name.as_str()), ())
                    .map_err(err)?;
                written += 1;
            }
            let mut dl = w.open_table(DEAD_LETTERS).map_err(err)?;
            let first = dl.last().map_err(err)?.map_or(0, |(k, _)| k.value() + 1);
            for (seq, d) in (first..).zip(dead_letters) {
                let meta = DeadLetterMeta {
                    reason: d.reason.to_string(),
                    field: d.field.map(|f| f.as_str().to_owned()),
                    origin: Origin {
                        source: d.source.as_str().to_owned(),
                        partition: d.partition.clone(),
                        offset: d.position,
                    },
                    at: d.at,
                };
                let meta = serde_json::to_string(&meta).map_err(err)?;
                dl.insert(seq, (meta.as_str(), d.raw.as_slice()))
                    .map_err(err)?;
            }
            let excess = dl.len().map_err(err)?.saturating_sub(self.retention);
            for _ in 0..excess {
                dl.pop_first().map_err(err)?;
            }
        }
        w.commit().map_err(err)?;
        Ok(written)
    }

    /// Stored summaries, newest first.
    ///
    /// # Errors
    /// The read failed.
    pub fn summaries(&self, q: &SummaryQuery) -> Result<Vec<Summary>, StoreError> {
        let r = self.db.get()?.begin_read().map_err(err)?;
        let table = r.open_table(SUMMARIES).map_err(err)?;
        let from = q.from.unwrap_or(Millis::MIN);
        let to = q.to.unwrap_or(Millis::MAX);
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        if let Some(name) = &q.name {
            for entry in table
                .range((name.as_str(), from)..=(name.as_str(), to))
                .map_err(err)?
                .rev()
            {
                let (_, v) = entry.map_err(err)?;
                out.push(serde_json::from_str(v.value()).map_err(err)?);
                if out.len() >= q.limit {
                    break;
                }
            }
        } else {
            let by_time = r.open_table(BY_TIME).map_err(err)?;
            // Bounded on both sides: walking down from the newest to skip those after `to` read
            // the whole index for `?to=1970-01-01`.
            let window = (from, "")..(to.saturating_add(1), "");
            for entry in by_time.range(window).map_err(err)?.rev() {
                let (k, _) = entry.map_err(err)?;
                let (start, name) = k.value();
                if let Some(v) = table.get((name, start)).map_err(err)? {
                    out.push(serde_json::from_str(v.value()).map_err(err)?);
                }
                if out.len() >= q.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The newest dead letters, newest first.
    ///
    /// # Errors
    /// The read failed.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterView>, StoreError> {
        let r = self.db.get()?.begin_read().map_err(err)?;
        let table = r.open_table(DEAD_LETTERS).map_err(err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(err)?.rev().take(limit) {
            let (k, v) = entry.map_err(err)?;
            let (meta, raw) = v.value();
            let meta: DeadLetterMeta = serde_json::from_str(meta).map_err(err)?;
            out.push(DeadLetterView {
                id: k.value(),
                reason: meta.reason,
                field: meta.field,
                origin: meta.origin,
                received: format_status_time(meta.at),
                raw: String::from_utf8_lossy(raw).into_owned(),
            });
        }
        Ok(out)
    }

    /// Whether both files can be written (for `/readyz`): why not, naming the file. A file
    /// that cannot is opened again first if an I/O error closed it.
    ///
    /// # Errors
    /// A file cannot be written, in words.
    pub fn writable(&self) -> Result<(), String> {
        let why = [&self.db, &self.views].into_iter().find_map(|f| {
            if f.writable() {
                return None;
            }
            Some(match f.get() {
                Err(e) => e.to_string(),
                Ok(db) => match db.begin_write() {
                    Err(e) => format!("{}: {e}", f.inner.path.display()),
                    Ok(w) => {
                        let _ = w.abort();
                        format!("{}: cannot be written", f.inner.path.display())
                    }
                },
            })
        });
        why.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RejectReason;

    fn summary(name: &str, start: Millis, revision: u64, records: u64) -> Summary {
        Summary {
            name: name.into(),
            window_start: start,
            window_end: start + 60_000,
            distance: 1.5,
            min_magic_points: 1,
            max_magic_points: 2,
            min_health_points: 3,
            max_health_points: 4,
            records,
            revision,
        }
    }

    #[test]
    fn upserts_keep_the_highest_revision_and_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("stampede-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = EmbeddedStore::open(&dir, 3).unwrap();
            store
                .write(&[summary("a", 0, 1, 10), summary("b", 60_000, 0, 5)], &[])
                .unwrap();
            store
                .write(&[summary("a", 0, 0, 9), summary("a", 60_000, 0, 1)], &[])
                .unwrap();
            let dl = |n| DeadLetter {
                reason: RejectReason::MalformedJson,
                field: None,
                source: crate::record::SourceKind::Http,
                partition: "0".into(),
                position: n,
                at: 0,
                raw: format!("bad {n}").into_bytes(),
            };
            store
                .write(&[] as &[Summary], &[dl(1), dl(2), dl(3), dl(4), dl(5)])
                .unwrap();
        }
        let store = EmbeddedStore::open(&dir, 3).unwrap();
        let all = store
            .summaries(&SummaryQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let keys: Vec<_> = all
            .iter()
            .map(|s| (s.name.as_str(), s.window_start, s.revision, s.records))
            .collect();
        assert_eq!(
            keys,
            vec![("b", 60_000, 0, 5), ("a", 60_000, 0, 1), ("a", 0, 1, 10)]
        );
        let a = store
            .summaries(&SummaryQuery {
                name: Some("a".into()),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].window_start, 60_000);
        let ranged = store
            .summaries(&SummaryQuery {
                from: Some(1),
                to: Some(60_000),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ranged.len(), 2);
        for (name, from, to) in [
            (None, None, -1),
            (None, Some(5), 4),
            (Some("a"), Some(5), 4),
        ] {
            let none = store
                .summaries(&SummaryQuery {
                    name: name.map(Into::into),
                    from,
                    to: Some(to),
                    limit: 10,
                })
                .unwrap();
            assert!(none.is_empty(), "{name:?} {from:?}..={to}");
        }
        let dead = store.dead_letters(10).unwrap();
        let raws: Vec<_> = dead.iter().map(|d| d.raw.as_str()).collect();
        assert_eq!(
            raws,
            vec!["bad 5", "bad 4", "bad 3"],
            "retention keeps the newest 3"
        );
        assert_eq!(store.writable(), Ok(()));
        std::fs::remove_dir_all(&dir).ok();
    }
}

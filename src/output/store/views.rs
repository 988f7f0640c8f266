//! Views' tables (CONTRACT §9): each view's rows, the partial rows of each partition they were
//! merged from, and the views defined at run time — in the embedded store ([`embedded`]) or in
//! DynamoDB, a table per view ([`dynamodb`]).
//!
//! Written by the views output alone, once per batch of what was queued; read by the API,
//! `stampede query` and `stampede views verify`. The calls block: the DynamoDB tables are driven
//! on the runtime they were opened on, so call them from a blocking thread.

pub mod dynamodb;
pub mod embedded;

use std::sync::Arc;

use crate::time::Millis;

/// A view table's failure, in words.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ViewsError {
    /// What failed.
    pub message: String,
    /// Another writer (a second instance merging the same window) changed a row since it was
    /// read: read it again and merge anew.
    pub conflict: bool,
}

impl ViewsError {
    /// A failure, in words.
    pub fn new(message: impl std::fmt::Display) -> ViewsError {
        ViewsError {
            message: message.to_string(),
            conflict: false,
        }
    }
}

impl From<super::embedded::StoreError> for ViewsError {
    fn from(e: super::embedded::StoreError) -> Self {
        ViewsError::new(e)
    }
}

impl From<crate::clients::dynamodb::DynamoError> for ViewsError {
    fn from(e: crate::clients::dynamodb::DynamoError) -> Self {
        ViewsError::new(e)
    }
}

/// One window and key of a view, as stored.
#[derive(Debug, Default)]
pub struct Stored {
    /// Its row's JSON, if it has one.
    pub row: Option<String>,
    /// Each partition's partial row (Arrow IPC).
    pub partials: Vec<(String, Vec<u8>)>,
    /// How many times it was written (0: never); a write names the version it read.
    pub version: u64,
}

/// What a batch changes of one window and key.
#[derive(Debug)]
pub struct Change {
    /// The view.
    pub view: Arc<str>,
    /// The window's start.
    pub start: Millis,
    /// The key (the `GROUP BY` values other than the window's, as JSON).
    pub key: String,
    /// Each partition's partial: written, or removed when `None`.
    pub partials: Vec<(Arc<str>, Option<Vec<u8>>)>,
    /// The row: `None` leaves it, `Some(None)` deletes it, `Some(Some(json))` writes it.
    pub row: Option<Option<String>>,
    /// The version this change was merged from: the write fails as a conflict if another
    /// writer wrote since (DynamoDB; the embedded store has one writer).
    pub version: u64,
}

/// A view defined, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Def {
    /// Its name.
    pub name: String,
    /// Its statement.
    pub sql: String,
    /// When it was defined (epoch ms).
    pub created: Millis,
    /// From a file of `views.dir`.
    pub from_file: bool,
}

/// (view, window start, key): one slot of a view.
pub type SlotRef<'a> = (&'a str, Millis, &'a str);

/// The views' tables of the configured store.
#[derive(Clone)]
pub enum ViewTables {
    /// In the embedded database.
    Embedded(embedded::Redb),
    /// A DynamoDB table per view, and the definitions' table.
    DynamoDb(dynamodb::Dynamo),
}

impl ViewTables {
    /// The tables in the embedded store's views file, created when missing (and moved there
    /// from the summaries' file, where an earlier version kept them).
    ///
    /// # Errors
    /// The database could not be written.
    pub fn embedded(store: &super::embedded::EmbeddedStore) -> Result<ViewTables, ViewsError> {
        let tables = embedded::Redb::open(store.views_database())?;
        tables.take_from(&*store.database().get()?)?;
        Ok(ViewTables::Embedded(tables))
    }

    /// `f` on these tables on a blocking thread (their calls block), from async code.
    ///
    /// # Errors
    /// What `f` returns, or the thread's panic in words.
    pub async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ViewTables) -> Result<T, ViewsError> + Send + 'static,
    ) -> Result<T, ViewsError> {
        let tables = self.clone();
        tokio::task::spawn_blocking(move || f(&tables))
            .await
            .map_err(ViewsError::new)?
    }

    /// Makes sure a view's table exists before its first row (DynamoDB: `stampede-view-{name}`,
    /// created when the store may create tables).
    ///
    /// # Errors
    /// The table is missing and may not be created, or the store cannot be reached.
    pub fn prepare(&self, view: &str) -> Result<(), ViewsError> {
        match self {
            ViewTables::Embedded(_) => Ok(()),
            ViewTables::DynamoDb(d) => d.prepare(view),
        }
    }

    /// What is stored of each slot, in order.
    ///
    /// # Errors
    /// The read failed.
    pub fn load(&self, slots: &[SlotRef<'_>]) -> Result<Vec<Stored>, ViewsError> {
        match self {
            ViewTables::Embedded(r) => r.load(slots),
            ViewTables::DynamoDb(d) => d.load(slots),
        }
    }

    /// Applies `changes`, and drops the partials of windows that started before each
    /// `(view, start)` of `forget` (no partition can restate them any more).
    ///
    /// # Errors
    /// The write failed (retry it: every change is idempotent by content), or — DynamoDB —
    /// another writer changed a slot since it was read (`conflict`: read again, merge anew).
    pub fn write(
        &self,
        changes: &[Change],
        forget: &[(Arc<str>, Millis)],
    ) -> Result<(), ViewsError> {
        match self {
            ViewTables::Embedded(r) => r.write(changes, forget),
            ViewTables::DynamoDb(d) => d.write(changes, forget),
        }
    }

    /// The newest window start of `view` with anything stored (a row or a partial); `None`
    /// when nothing is. DynamoDB, which other instances write too, says `Millis::MAX`: it
    /// cannot tell.
    ///
    /// # Errors
    /// The read failed.
    pub fn newest_start(&self, view: &str) -> Result<Option<Millis>, ViewsError> {
        match self {
            ViewTables::Embedded(r) => r.newest_start(view),
            ViewTables::DynamoDb(_) => Ok(Some(Millis::MAX)),
        }
    }

    /// `view`'s rows of windows starting in `from..to`, newest window first, at most `limit`.
    ///
    /// # Errors
    /// The read failed.
    pub fn rows(
        &self,
        view: &str,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> Result<Vec<String>, ViewsError> {
        match self {
            ViewTables::Embedded(r) => r.rows(view, from, to, limit),
            ViewTables::DynamoDb(d) => d.rows(view, from, to, limit),
        }
    }

    /// The views defined, stored, oldest first.
    ///
    /// # Errors
    /// The read failed.
    pub fn defs(&self) -> Result<Vec<Def>, ViewsError> {
        let mut defs = match self {
            ViewTables::Embedded(r) => r.defs()?,
            ViewTables::DynamoDb(d) => d.defs()?,
        };
        defs.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(defs)
    }

    /// Stores `def` (its table prepared); when `clear`, first removes every row and partial of
    /// a view of that name (its SQL changed: what was computed before answers another question).
    ///
    /// # Errors
    /// The write failed.
    pub fn put_def(&self, def: &Def, clear: bool) -> Result<(), ViewsError> {
        match self {
            ViewTables::Embedded(r) => r.put_def(def, clear),
            ViewTables::DynamoDb(d) => d.put_def(def, clear),
        }
    }

    /// Forgets the view `name`: its definition, rows and partials (DynamoDB: its table).
    ///
    /// # Errors
    /// The write failed.
    pub fn delete(&self, name: &str) -> Result<(), ViewsError> {
        match self {
            ViewTables::Embedded(r) => r.delete(name),
            ViewTables::DynamoDb(d) => d.delete(name),
        }
    }
}

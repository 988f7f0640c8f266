//! Views' tables in the embedded store (CONTRACT §9): each view's rows, the partial rows of
//! each partition they were merged from, and the views defined at run time.
//!
//! - `view_rows`: (view, window start, key) → the row as JSON, `revision` included. In window
//!   order, so that the newest windows are a reverse range scan.
//! - `view_partials`: (view, window start, key, partition) → one partial row in Arrow IPC.
//!   Kept so that a window restated after a restart, or by another partition than the last,
//!   merges with what every partition said of it, not only with what this process saw.
//! - `view_defs`: name → (SQL, when defined, whether from `views.dir`).
//!
//! Written by the views output alone (one writer per store file: [`Change::version`] is not
//! checked), one transaction per batch of what was queued.

use std::sync::Arc;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Change, Def, SlotRef, Stored, ViewsError};
use crate::output::store::embedded::{DbFile, StoreError};
use crate::time::Millis;

const ROWS: TableDefinition<(&str, i64, &str), &str> = TableDefinition::new("view_rows");
const PARTIALS: TableDefinition<(&str, i64, &str, &str), &[u8]> =
    TableDefinition::new("view_partials");
const DEFS: TableDefinition<&str, (&str, i64, bool)> = TableDefinition::new("view_defs");

/// Changes written per transaction at most.
pub const CHANGES_PER_TRANSACTION: usize = 16_384;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(e)
}

/// The views' tables of one embedded store.
#[derive(Clone)]
pub struct Redb {
    db: DbFile,
}

impl Redb {
    /// The tables in `db`, created when missing.
    ///
    /// # Errors
    /// The database could not be written.
    pub fn open(db: DbFile) -> Result<Redb, StoreError> {
        let w = db.get()?.begin_write().map_err(err)?;
        {
            w.open_table(ROWS).map_err(err)?;
            w.open_table(PARTIALS).map_err(err)?;
            w.open_table(DEFS).map_err(err)?;
        }
        w.commit().map_err(err)?;
        Ok(Redb { db })
    }

    /// Moves the views' tables an earlier version kept in the summaries' database `old` into
    /// these (when these hold no view yet), in one transaction each way: the copy is committed
    /// before the old tables are deleted, so a crash between leaves them in both, and the next
    /// start, finding views here, only deletes the old ones.
    ///
    /// # Errors
    /// A database could not be read or written.
    pub fn take_from(&self, old: &Database) -> Result<(), StoreError> {
        let r = old.begin_read().map_err(err)?;
        let old_defs = match r.open_table(DEFS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        let empty_here = {
            let here = self.db.get()?.begin_read().map_err(err)?;
            let defs = here.open_table(DEFS).map_err(err)?;
            defs.is_empty().map_err(err)?
        };
        if empty_here && !old_defs.is_empty().map_err(err)? {
            let w = self.db.get()?.begin_write().map_err(err)?;
            {
                let mut defs = w.open_table(DEFS).map_err(err)?;
                for entry in old_defs.iter().map_err(err)? {
                    let (k, v) = entry.map_err(err)?;
                    defs.insert(k.value(), v.value()).map_err(err)?;
                }
                let mut rows = w.open_table(ROWS).map_err(err)?;
                for entry in r.open_table(ROWS).map_err(err)?.iter().map_err(err)? {
                    let (k, v) = entry.map_err(err)?;
                    rows.insert(k.value(), v.value()).map_err(err)?;
                }
                let mut partials = w.open_table(PARTIALS).map_err(err)?;
                for entry in r.open_table(PARTIALS).map_err(err)?.iter().map_err(err)? {
                    let (k, v) = entry.map_err(err)?;
                    partials.insert(k.value(), v.value()).map_err(err)?;
                }
            }
            w.commit().map_err(err)?;
            tracing::info!("views moved to their own file");
        }
        drop(old_defs);
        drop(r);
        let w = old.begin_write().map_err(err)?;
        w.delete_table(DEFS).map_err(err)?;
        w.delete_table(ROWS).map_err(err)?;
        w.delete_table(PARTIALS).map_err(err)?;
        w.commit().map_err(err)
    }

    /// What is stored of each slot, in order, read in one transaction.
    ///
    /// # Errors
    /// The read failed.
    pub fn load(&self, slots: &[SlotRef<'_>]) -> Result<Vec<Stored>, ViewsError> {
        let r = self.db.get()?.begin_read().map_err(err)?;
        let rows = r.open_table(ROWS).map_err(err)?;
        let partials = r.open_table(PARTIALS).map_err(err)?;
        let mut out = Vec::with_capacity(slots.len());
        for &(view, start, key) in slots {
            let row = rows
                .get((view, start, key))
                .map_err(err)?
                .map(|v| v.value().to_owned());
            let mut stored = Stored {
                row,
                ..Stored::default()
            };
            for entry in partials.range((view, start, key, "")..).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                let (v_view, v_start, v_key, partition) = k.value();
                if v_view != view || v_start != start || v_key != key {
                    break;
                }
                stored
                    .partials
                    .push((partition.to_owned(), v.value().to_vec()));
            }
            out.push(stored);
        }
        Ok(out)
    }

    /// Applies `changes`, in transactions of at most [`CHANGES_PER_TRANSACTION`] (the summaries'
    /// writer, which shares the database, gets its turn between them while a minute of
    /// windows closes; each change is idempotent by content, so a crash between two loses
    /// nothing a replay does not redo), and drops the partials of windows that started
    /// before each `(view, start)` of `forget` (no partition can restate them any more).
    ///
    /// # Errors
    /// A transaction failed: nothing of it was written (those before it were; writing the same
    /// changes again is harmless).
    pub fn write(
        &self,
        changes: &[Change],
        forget: &[(Arc<str>, Millis)],
    ) -> Result<(), ViewsError> {
        let mut chunks = changes.chunks(CHANGES_PER_TRANSACTION).peekable();
        if chunks.peek().is_none() {
            return self.db.recovering(self.write_one(&[], forget));
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let written = self.write_one(chunk, if last { forget } else { &[] });
            self.db.recovering(written)?;
        }
        Ok(())
    }

    fn write_one(
        &self,
        changes: &[Change],
        forget: &[(Arc<str>, Millis)],
    ) -> Result<(), ViewsError> {
        let w = self.db.get()?.begin_write().map_err(err)?;
        {
            let mut rows = w.open_table(ROWS).map_err(err)?;
            let mut partials = w.open_table(PARTIALS).map_err(err)?;
            for c in changes {
                for (partition, partial) in &c.partials {
                    let k = (&*c.view, c.start, c.key.as_str(), &**partition);
                    match partial {
                        Some(bytes) => {
                            partials.insert(k, bytes.as_slice()).map_err(err)?;
                        }
                        None => {
                            partials.remove(k).map_err(err)?;
                        }
                    }
                }
                match &c.row {
                    None => {}
                    Some(Some(json)) => {
                        rows.insert((&*c.view, c.start, c.key.as_str()), json.as_str())
                            .map_err(err)?;
                    }
                    Some(None) => {
                        rows.remove((&*c.view, c.start, c.key.as_str()))
                            .map_err(err)?;
                    }
                }
            }
            for (view, before) in forget {
                partials
                    .retain_in(
                        (&**view, Millis::MIN, "", "")..(&**view, *before, "", ""),
                        |_, _| false,
                    )
                    .map_err(err)?;
            }
        }
        Ok(w.commit().map_err(err)?)
    }

    /// The newest window start of `view` with a row or a partial stored.
    ///
    /// # Errors
    /// The read failed.
    pub fn newest_start(&self, view: &str) -> Result<Option<Millis>, ViewsError> {
        let r = self.db.get()?.begin_read().map_err(err)?;
        let rows = r.open_table(ROWS).map_err(err)?;
        let partials = r.open_table(PARTIALS).map_err(err)?;
        let row = rows
            .range((view, Millis::MIN, "")..=(view, Millis::MAX, "\u{10FFFF}"))
            .map_err(err)?
            .next_back()
            .transpose()
            .map_err(err)?
            .map(|(k, _)| k.value().1);
        let partial = partials
            .range((view, Millis::MIN, "", "")..=(view, Millis::MAX, "\u{10FFFF}", "\u{10FFFF}"))
            .map_err(err)?
            .next_back()
            .transpose()
            .map_err(err)?
            .map(|(k, _)| k.value().1);
        Ok(row.max(partial))
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
        let r = self.db.get()?.begin_read().map_err(err)?;
        let rows = r.open_table(ROWS).map_err(err)?;
        let mut out = Vec::new();
        for entry in rows
            .range((view, from, "")..(view, to, ""))
            .map_err(err)?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (_, v) = entry.map_err(err)?;
            out.push(v.value().to_owned());
        }
        Ok(out)
    }

    /// The views defined, stored.
    ///
    /// # Errors
    /// The read failed.
    pub fn defs(&self) -> Result<Vec<Def>, ViewsError> {
        let r = self.db.get()?.begin_read().map_err(err)?;
        let defs = r.open_table(DEFS).map_err(err)?;
        let mut out = Vec::new();
        for entry in defs.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            let (sql, created, from_file) = v.value();
            out.push(Def {
                name: k.value().to_owned(),
                sql: sql.to_owned(),
                created,
                from_file,
            });
        }
        Ok(out)
    }

    /// Stores `def`; when `clear`, first removes every row and partial of a view of that name
    /// (its SQL changed: what was computed before answers another question).
    ///
    /// # Errors
    /// The transaction failed.
    pub fn put_def(&self, def: &Def, clear: bool) -> Result<(), ViewsError> {
        let w = self.db.get()?.begin_write().map_err(err)?;
        {
            if clear {
                clear_view(&w, &def.name)?;
            }
            let mut defs = w.open_table(DEFS).map_err(err)?;
            defs.insert(
                def.name.as_str(),
                (def.sql.as_str(), def.created, def.from_file),
            )
            .map_err(err)?;
        }
        Ok(w.commit().map_err(err)?)
    }

    /// Forgets the view `name`: its definition, rows and partials.
    ///
    /// # Errors
    /// The transaction failed.
    pub fn delete(&self, name: &str) -> Result<(), ViewsError> {
        let w = self.db.get()?.begin_write().map_err(err)?;
        {
            clear_view(&w, name)?;
            let mut defs = w.open_table(DEFS).map_err(err)?;
            defs.remove(name).map_err(err)?;
        }
        Ok(w.commit().map_err(err)?)
    }
}

fn clear_view(w: &redb::WriteTransaction, name: &str) -> Result<(), StoreError> {
    let mut rows = w.open_table(ROWS).map_err(err)?;
    rows.retain_in(
        (name, Millis::MIN, "")..=(name, Millis::MAX, "\u{10FFFF}"),
        |_, _| false,
    )
    .map_err(err)?;
    let mut partials = w.open_table(PARTIALS).map_err(err)?;
    partials
        .retain_in(
            (name, Millis::MIN, "", "")..=(name, Millis::MAX, "\u{10FFFF}", "\u{10FFFF}"),
            |_, _| false,
        )
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &std::path::Path, name: &str) -> DbFile {
        DbFile::open(&dir.join(name)).unwrap()
    }

    /// An earlier version kept the views' tables in the summaries' file: they move to the
    /// views' file once, and a second start moves nothing over what is there.
    #[test]
    fn views_kept_with_the_summaries_move_to_their_own_file() {
        let dir = std::env::temp_dir().join(format!("stampede-views-move-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = database(&dir, "old.redb");
        let before = Redb::open(old.clone()).unwrap();
        let def = Def {
            name: "summary".into(),
            sql: "CREATE VIEW summary AS SELECT 1".into(),
            created: 7,
            from_file: false,
        };
        before.put_def(&def, false).unwrap();
        let change = Change {
            view: "summary".into(),
            start: 60_000,
            key: "[\"Shadowfax\"]".into(),
            partials: vec![("0".into(), Some(vec![1, 2, 3]))],
            row: Some(Some("{\"n\":1,\"revision\":0}".into())),
            version: 0,
        };
        before.write(&[change], &[]).unwrap();
        let here = Redb::open(database(&dir, "views.redb")).unwrap();
        here.take_from(&old.get().unwrap()).unwrap();
        assert_eq!(here.defs().unwrap(), vec![def.clone()]);
        assert_eq!(
            here.rows("summary", 0, Millis::MAX, 10).unwrap(),
            vec!["{\"n\":1,\"revision\":0}".to_owned()]
        );
        let stored = here
            .load(&[("summary", 60_000, "[\"Shadowfax\"]")])
            .unwrap();
        assert_eq!(stored[0].partials, vec![("0".to_owned(), vec![1, 2, 3])]);
        let r = old.get().unwrap().begin_read().unwrap();
        assert!(matches!(
            r.open_table(DEFS),
            Err(redb::TableError::TableDoesNotExist(_))
        ));
        drop(r);
        // Nothing left to move: what is here stays.
        here.take_from(&old.get().unwrap()).unwrap();
        assert_eq!(here.defs().unwrap(), vec![def]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Subscriptions in the embedded store: redb table `subscriptions`, e-mail address →
//! subscription JSON.

use redb::{ReadableTable, TableDefinition};

use crate::output::store::embedded::DbFile;

use super::{parse, Subscription};

/// E-mail address → subscription JSON.
const SUBSCRIPTIONS: TableDefinition<&str, &str> = TableDefinition::new("subscriptions");

/// Creates the table if it is missing.
pub(super) async fn create(db: &DbFile) -> anyhow::Result<()> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let w = db.get()?.begin_write()?;
        w.open_table(SUBSCRIPTIONS)?;
        w.commit()?;
        anyhow::Ok(())
    })
    .await?
}

/// Every subscription in the table.
pub(super) async fn load(db: &DbFile) -> anyhow::Result<Vec<Subscription>> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let r = db.get()?.begin_read()?;
        let table = r.open_table(SUBSCRIPTIONS)?;
        let mut all = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            all.extend(parse(v.value()));
        }
        anyhow::Ok(all)
    })
    .await?
}

/// Writes `email`'s subscription (`json`).
pub(super) async fn put(db: &DbFile, email: &str, json: &str) -> anyhow::Result<()> {
    let (db, email, json) = (db.clone(), email.to_owned(), json.to_owned());
    tokio::task::spawn_blocking(move || {
        let w = db.get()?.begin_write()?;
        {
            let mut t = w.open_table(SUBSCRIPTIONS)?;
            t.insert(email.as_str(), json.as_str())?;
        }
        w.commit()?;
        anyhow::Ok(())
    })
    .await?
}

/// Removes `email`'s subscription.
pub(super) async fn delete(db: &DbFile, email: &str) -> anyhow::Result<()> {
    let (db, email) = (db.clone(), email.to_owned());
    tokio::task::spawn_blocking(move || {
        let w = db.get()?.begin_write()?;
        {
            let mut t = w.open_table(SUBSCRIPTIONS)?;
            t.remove(email.as_str())?;
        }
        w.commit()?;
        anyhow::Ok(())
    })
    .await?
}

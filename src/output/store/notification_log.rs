//! The notification log: which alert changes (by `AlertId`) were sent, kept in the store, as
//! Alertmanager keeps its notification log, so that whoever is about to send a change learns
//! first whether it went already.
//!
//! The checkpoint's alert state says which changes were notified as of the last commit; the log
//! covers what a checkpoint cannot: a change sent after the last commit by an instance that then
//! lost its partition without a hand-off (paused past its Kafka session or Kinesis lease, or a
//! lease stolen), and sent again by whoever re-reads the records — or by the paused instance
//! itself when it wakes still holding it.
//!
//! Before a round is sent, each of its changes is *claimed*: written as `sending` by this
//! instance, on condition that nobody else has (or that their claim is older than
//! [`STALE_CLAIM_MS`]: an instance that died between its claim and its send). Claims are made
//! in the order of the changes' names, stopping at the first another instance holds, so that
//! two instances never hold part of each other's round. A change already `sent` is dropped from
//! the round; one another instance is sending keeps the round waiting until it is sent or its
//! claim is stale. The claims are renewed before each channel; after the round went through
//! every channel, its changes are marked `sent`. What is left is the time between a send and
//! its mark (a crash there sends it again once the claim is stale): milliseconds when every
//! channel answers, longer while a later channel fails and the round waits for it.
//!
//! A change is named by its `AlertId` and its state (`low-health/A/2026-01-01 00:00:01.000/firing`:
//! a record can resolve what a record of the same `StatusTime` fired).
//!
//! - Embedded store: table `notifications` in the store's file, change → (sent, when). One
//!   instance per file, so the claim is only a record.
//! - DynamoDB: `store.notification_table`, partition key `Name` (the unicorn: changes spread
//!   over partitions), sort key `Change`; claims are conditional writes. Items carry `Expires`
//!   (epoch seconds, [`KEEP_MS`] on): turn on the table's TTL on it to have them removed.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType};
use redb::{ReadableTable, TableDefinition};

use crate::alert::Change;
use crate::clients::dynamodb::{dynamo_error, DynamoError};
use crate::output::store::embedded::{DbFile, StoreError};
use crate::time::{now_ms, Millis};

/// A claim older than this is taken over: its instance died before sending (a live one renews
/// its claims at every try of a round).
pub const STALE_CLAIM_MS: Millis = 120_000;

/// Entries are kept this long: far longer than any replay reaches back.
pub const KEEP_MS: Millis = 7 * 24 * 3_600_000;

/// Change (`AlertId/state`) → (sent, when claimed or sent).
const NOTIFICATIONS: TableDefinition<&str, (bool, i64)> = TableDefinition::new("notifications");

/// What the log says of a change about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This instance may send it.
    Mine,
    /// It was sent: drop it.
    Sent,
    /// Another instance is sending it now: wait.
    Held,
}

/// A failure of the log, in words; retried like a channel's.
#[derive(Debug, thiserror::Error)]
#[error("notification log: {message}")]
pub struct LogError {
    /// In words.
    pub message: String,
    /// Retrying will not help (a table missing, access denied).
    pub permanent: bool,
}

impl From<StoreError> for LogError {
    fn from(e: StoreError) -> LogError {
        LogError {
            message: e.to_string(),
            permanent: false,
        }
    }
}

impl From<DynamoError> for LogError {
    fn from(e: DynamoError) -> LogError {
        LogError {
            message: e.message,
            permanent: e.permanent,
        }
    }
}

/// The log of the store the service uses.
#[derive(Clone)]
pub struct NotificationLog {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Embedded {
        db: DbFile,
        /// When entries past [`KEEP_MS`] were last removed.
        swept: Arc<std::sync::atomic::AtomicI64>,
    },
    DynamoDb {
        client: aws_sdk_dynamodb::Client,
        table: String,
        /// This instance, in claims.
        owner: String,
    },
}

impl NotificationLog {
    /// The log in the embedded store's file, its table created when missing.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn embedded(db: DbFile) -> Result<NotificationLog, LogError> {
        let w = db
            .get()?
            .begin_write()
            .map_err(|e| StoreError::new(e.to_string()))?;
        w.open_table(NOTIFICATIONS).map_err(StoreError::new)?;
        w.commit().map_err(StoreError::new)?;
        Ok(NotificationLog {
            backend: Backend::Embedded {
                db,
                swept: Arc::default(),
            },
        })
    }

    /// The log in DynamoDB table `table` (created when missing if `create`), claiming as
    /// `owner` (this instance, unique among those sharing the table).
    ///
    /// # Errors
    /// The table is missing (and may not be created), or DynamoDB cannot be reached.
    pub async fn dynamodb(
        config: &aws_config::SdkConfig,
        table: &str,
        create: bool,
        owner: String,
    ) -> Result<NotificationLog, LogError> {
        let client = crate::clients::dynamodb::client(config);
        let keys = (
            ("Name", ScalarAttributeType::S),
            ("Change", ScalarAttributeType::S),
        );
        crate::clients::dynamodb::ensure_table(&client, table, keys, create).await?;
        Ok(NotificationLog {
            backend: Backend::DynamoDb {
                client,
                table: table.to_owned(),
                owner,
            },
        })
    }

    /// Claims each of `changes` for sending (or renews this instance's claim); says, in
    /// order, which may be sent, which were sent already, and which another instance is
    /// sending.
    ///
    /// # Errors
    /// The log cannot be read or written: nothing may be sent.
    pub async fn claim(&self, changes: &[Change]) -> Result<Vec<Claim>, LogError> {
        let now = now_ms();
        match &self.backend {
            Backend::Embedded { db, .. } => {
                let (db, ids) = (db.clone(), ids(changes));
                run_blocking(move || claim_embedded(&db, &ids, now)).await
            }
            Backend::DynamoDb {
                client,
                table,
                owner,
            } => {
                // One at a time, in the order of their names, stopping at the first another
                // instance holds: two instances claiming the same changes then never hold one
                // each and wait for each other for ever; whoever gets the first gets them all.
                let mut order: Vec<(String, usize)> = changes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (id(c), i))
                    .collect();
                order.sort_unstable();
                let mut claims = vec![Claim::Held; changes.len()];
                for (_, i) in order {
                    let claim = claim_dynamodb(client, table, owner, &changes[i], now).await?;
                    claims[i] = claim;
                    if claim == Claim::Held {
                        break;
                    }
                }
                Ok(claims)
            }
        }
    }

    /// Marks `changes` sent (they went through every channel).
    ///
    /// # Errors
    /// The log cannot be written; marking again is harmless.
    pub async fn sent(&self, changes: &[Change]) -> Result<(), LogError> {
        let now = now_ms();
        match &self.backend {
            Backend::Embedded { db, swept } => {
                let (db, ids, swept) = (db.clone(), ids(changes), Arc::clone(swept));
                run_blocking(move || mark_embedded(&db, &ids, now, &swept)).await
            }
            Backend::DynamoDb {
                client,
                table,
                owner,
            } => {
                for chunk in changes.chunks(16) {
                    let calls = chunk
                        .iter()
                        .map(|c| mark_dynamodb(client, table, owner, c, now));
                    for marked in futures_util::future::join_all(calls).await {
                        marked?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn ids(changes: &[Change]) -> Vec<String> {
    changes.iter().map(id).collect()
}

/// The change's key in the log: its `AlertId` and its state (a record can resolve what a record
/// of the same `StatusTime` fired).
fn id(c: &Change) -> String {
    format!("{}/{}", c.alert_id(), c.state.as_str())
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LogError {
        message: e.to_string(),
        permanent: false,
    })?
}

fn claim_embedded(db: &DbFile, ids: &[String], now: Millis) -> Result<Vec<Claim>, LogError> {
    let claimed = (|| {
        let w = db.get()?.begin_write().map_err(StoreError::new)?;
        let mut claims = Vec::with_capacity(ids.len());
        {
            let mut table = w.open_table(NOTIFICATIONS).map_err(StoreError::new)?;
            for id in ids {
                let sent = table
                    .get(id.as_str())
                    .map_err(StoreError::new)?
                    .is_some_and(|v| v.value().0);
                if sent {
                    claims.push(Claim::Sent);
                } else {
                    // One instance per file: a claim found is this store's own, from before a
                    // restart or from an earlier try.
                    table
                        .insert(id.as_str(), (false, now))
                        .map_err(StoreError::new)?;
                    claims.push(Claim::Mine);
                }
            }
        }
        w.commit().map_err(StoreError::new)?;
        Ok::<_, StoreError>(claims)
    })();
    Ok(db.recovering(claimed)?)
}

fn mark_embedded(
    db: &DbFile,
    ids: &[String],
    now: Millis,
    swept: &std::sync::atomic::AtomicI64,
) -> Result<(), LogError> {
    use std::sync::atomic::Ordering::Relaxed;
    let sweep = now.saturating_sub(swept.load(Relaxed)) >= 3_600_000;
    let marked = (|| {
        let w = db.get()?.begin_write().map_err(StoreError::new)?;
        {
            let mut table = w.open_table(NOTIFICATIONS).map_err(StoreError::new)?;
            for id in ids {
                table
                    .insert(id.as_str(), (true, now))
                    .map_err(StoreError::new)?;
            }
            if sweep {
                let old = now - KEEP_MS;
                table
                    .retain(|_, (_, at)| at >= old)
                    .map_err(StoreError::new)?;
            }
        }
        w.commit().map_err(StoreError::new)?;
        Ok::<_, StoreError>(())
    })();
    db.recovering(marked)?;
    if sweep {
        swept.store(now, Relaxed);
    }
    Ok(())
}

fn key(c: &Change, id: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("Name".to_owned(), AttributeValue::S(c.name.to_string())),
        ("Change".to_owned(), AttributeValue::S(id)),
    ])
}

async fn claim_dynamodb(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    owner: &str,
    c: &Change,
    now: Millis,
) -> Result<Claim, LogError> {
    let id = id(c);
    let n = |v: i64| AttributeValue::N(v.to_string());
    let claimed = client
        .update_item()
        .table_name(table)
        .set_key(Some(key(c, id.clone())))
        .update_expression("SET #s = :sending, #o = :me, #at = :now, #exp = :exp")
        .condition_expression(
            "attribute_not_exists(#s) OR (#s = :sending AND (#o = :me OR #at < :stale))",
        )
        .expression_attribute_names("#s", "State")
        .expression_attribute_names("#o", "Owner")
        .expression_attribute_names("#at", "At")
        .expression_attribute_names("#exp", "Expires")
        .expression_attribute_values(":sending", AttributeValue::S("sending".into()))
        .expression_attribute_values(":me", AttributeValue::S(owner.to_owned()))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":stale", n(now - STALE_CLAIM_MS))
        .expression_attribute_values(":exp", n((now + KEEP_MS) / 1_000))
        .send()
        .await;
    match claimed {
        Ok(_) => Ok(Claim::Mine),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            let item = client
                .get_item()
                .table_name(table)
                .set_key(Some(key(c, id)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo_error(&format!("cannot read {table}"), &e))?;
            let sent = item
                .item()
                .and_then(|i| i.get("State"))
                .and_then(|s| s.as_s().ok())
                .is_some_and(|s| s == "sent");
            Ok(if sent { Claim::Sent } else { Claim::Held })
        }
        Err(e) => Err(dynamo_error(&format!("cannot write {table}"), &e).into()),
    }
}

async fn mark_dynamodb(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    owner: &str,
    c: &Change,
    now: Millis,
) -> Result<(), LogError> {
    client
        .update_item()
        .table_name(table)
        .set_key(Some(key(c, id(c))))
        .update_expression("SET #s = :sent, #o = :me, #at = :now, #exp = :exp")
        .expression_attribute_names("#s", "State")
        .expression_attribute_names("#o", "Owner")
        .expression_attribute_names("#at", "At")
        .expression_attribute_names("#exp", "Expires")
        .expression_attribute_values(":sent", AttributeValue::S("sent".into()))
        .expression_attribute_values(":me", AttributeValue::S(owner.to_owned()))
        .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
        .expression_attribute_values(
            ":exp",
            AttributeValue::N(((now + KEEP_MS) / 1_000).to_string()),
        )
        .send()
        .await
        .map_err(|e| dynamo_error(&format!("cannot write {table}"), &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Direction, Measure, State, Value};

    fn change(name: &str, at: Millis) -> Change {
        Change {
            rule: "low-health".into(),
            name: name.into(),
            state: State::Firing,
            field: Measure::HealthPoints,
            value: Value::Int(99),
            threshold: 100.0,
            direction: Direction::Below,
            clear: 105.0,
            status_time: at,
        }
    }

    #[tokio::test]
    async fn a_change_marked_sent_is_never_claimed_again_even_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("stampede-nlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stampede.redb");
        let (a, b) = (change("A", 1_000), change("B", 2_000));
        {
            let log = NotificationLog::embedded(DbFile::open(&path).unwrap()).unwrap();
            assert_eq!(
                log.claim(&[a.clone(), b.clone()]).await.unwrap(),
                [Claim::Mine, Claim::Mine]
            );
            log.sent(std::slice::from_ref(&a)).await.unwrap();
            assert_eq!(
                log.claim(&[a.clone(), b.clone()]).await.unwrap(),
                [Claim::Sent, Claim::Mine],
                "a claimed change not yet sent is still this store's to send"
            );
        }
        let log = NotificationLog::embedded(DbFile::open(&path).unwrap()).unwrap();
        assert_eq!(
            log.claim(&[a, b]).await.unwrap(),
            [Claim::Sent, Claim::Mine]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The DynamoDB summary store (`[store] kind = "dynamodb"`): summaries in `UnicornSensorData`
//! (`Name` S partition key, `StatusTime` S sort key, the other summary fields as attributes),
//! written behind the window engines and read by `/api/summaries`.
//!
//! # The write path, and why a lower `Revision` never replaces a higher one
//!
//! `BatchWriteItem` cannot carry a condition, and a plain overwrite is not safe: after a crash
//! the next owner of a partition replays and re-emits windows (revision 0 first) that the dead
//! owner may already have restated and stored (revision 1) past its last checkpoint. So every
//! batch goes through two steps:
//!
//! 1. the batch is collapsed to the highest revision per key, and the stored revisions of those
//!    keys are read with strongly consistent `BatchGetItem` calls (100 keys each, unprocessed keys
//!    retried); items whose stored revision is higher are dropped here, costing nothing more;
//! 2. each remaining item is written with a conditional `PutItem`
//!    (`attribute_not_exists(#n) OR #r <= :r`), up to [`WRITES_IN_FLIGHT`] at a time. The
//!    condition is the guarantee: it holds against any other writer (a second instance, a zombie
//!    owner), which a read-then-batch-write could not promise. A failed condition means a higher
//!    revision is already stored: the item is dropped, correctly.
//!
//! The read in step 1 keeps replays cheap (most re-emitted windows are already stored exactly).
//! Throttling and transient errors are retried by the SDK's standard retry policy, then the
//! store output retries the whole batch with exponential backoff capped at 5 s (the writes are
//! idempotent and conditional); nothing is dropped. The price is one item per write request:
//! against dynalite (one Node.js process, where each request costs the same) that is 0.7–1.0×
//! the throughput of `BatchWriteItem` run by run, about 0.85× at the median (`scripts/bench-aws`);
//! DynamoDB itself serves the parallel requests side by side.

use crate::backoff::Backoff;
use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ScalarAttributeType};
use aws_sdk_dynamodb::Client;

pub use crate::clients::dynamodb::DynamoError;
use crate::clients::dynamodb::{client, dynamo_error, ensure_table};

use crate::record::{Summary, SummaryQuery};
use crate::time::{format_status_time, parse_status_time, Millis};

/// Conditional writes in flight at once.
pub const WRITES_IN_FLIGHT: usize = 64;
/// Keys per `BatchGetItem`.
const GET_BATCH: usize = 100;

impl crate::output::Classify for DynamoError {
    fn kind(&self) -> crate::output::ErrorKind {
        if self.permanent {
            crate::output::ErrorKind::Permanent
        } else {
            crate::output::ErrorKind::Transient
        }
    }
}

/// What one call to [`DynamoStore::write`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Items written.
    pub written: usize,
    /// Items skipped because a higher revision is stored.
    pub skipped: usize,
    /// Requests made (reads and writes).
    pub requests: usize,
}

/// The summary table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// Connects with the SDK's conventions (region, credential chain, `AWS_ENDPOINT_URL`) and
    /// checks that `table` exists, creating it when `create` is set.
    ///
    /// # Errors
    /// The table is missing (and may not be created), or DynamoDB cannot be reached.
    pub async fn open(table: &str, create: bool) -> Result<DynamoStore, DynamoError> {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        DynamoStore::with_config(&config, table, create).await
    }

    /// As [`DynamoStore::open`], with the SDK settings given.
    ///
    /// # Errors
    /// As [`DynamoStore::open`].
    pub async fn with_config(
        config: &aws_config::SdkConfig,
        table: &str,
        create: bool,
    ) -> Result<DynamoStore, DynamoError> {
        let store = DynamoStore {
            client: client(config),
            table: table.to_owned(),
        };
        let keys = (
            ("Name", ScalarAttributeType::S),
            ("StatusTime", ScalarAttributeType::S),
        );
        ensure_table(&store.client, table, keys, create).await?;
        Ok(store)
    }

    /// Whether the table answers: why not, naming it.
    ///
    /// # Errors
    /// `DescribeTable` failed, in words.
    pub async fn writable(&self) -> Result<(), String> {
        crate::clients::dynamodb::answers(&self.client, &self.table).await
    }

    /// Writes `summaries` as the module docs describe.
    ///
    /// # Errors
    /// A request failed after the SDK's retries; nothing is known to be lost — the caller
    /// retries the whole batch (writes are idempotent and conditional).
    pub async fn write(&self, summaries: &[Summary]) -> Result<WriteStats, DynamoError> {
        let mut stats = WriteStats::default();
        let mut newest: HashMap<(&str, Millis), &Summary> = HashMap::new();
        for s in summaries {
            let key = (s.name.as_str(), s.window_start);
            if newest
                .get(&key)
                .is_none_or(|old| old.revision <= s.revision)
            {
                newest.insert(key, s);
            }
        }
        let items: Vec<&Summary> = newest.into_values().collect();
        let stored = self.stored_revisions(&items, &mut stats).await?;
        let mut to_write = Vec::with_capacity(items.len());
        for s in items {
            match stored.get(&(s.name.clone(), s.window_start)) {
                Some(&r) if r > s.revision => stats.skipped += 1,
                Some(&r) if r == s.revision => stats.skipped += 1,
                _ => to_write.push(s),
            }
        }
        use futures_util::StreamExt as _;
        let mut results = futures_util::stream::iter(to_write.iter().map(|s| self.put(s)))
            .buffer_unordered(WRITES_IN_FLIGHT);
        while let Some(r) = results.next().await {
            stats.requests += 1;
            match r? {
                true => stats.written += 1,
                false => stats.skipped += 1,
            }
        }
        Ok(stats)
    }

    /// One conditional put; `false` when a higher revision is stored.
    async fn put(&self, s: &Summary) -> Result<bool, DynamoError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(s)))
            .condition_expression("attribute_not_exists(#n) OR #r <= :r")
            .expression_attribute_names("#n", "Name")
            .expression_attribute_names("#r", "Revision")
            .expression_attribute_values(":r", AttributeValue::N(s.revision.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(dynamo_error(&format!("cannot write to {}", self.table), &e)),
        }
    }

    /// The stored revision of each of `items` that is stored.
    async fn stored_revisions(
        &self,
        items: &[&Summary],
        stats: &mut WriteStats,
    ) -> Result<HashMap<(String, Millis), u64>, DynamoError> {
        let mut out = HashMap::new();
        for chunk in items.chunks(GET_BATCH) {
            let mut keys = KeysAndAttributes::builder()
                .consistent_read(true)
                .projection_expression("#n, #t, #r")
                .expression_attribute_names("#n", "Name")
                .expression_attribute_names("#t", "StatusTime")
                .expression_attribute_names("#r", "Revision");
            for s in chunk {
                keys = keys.keys(HashMap::from([
                    ("Name".to_owned(), AttributeValue::S(s.name.clone())),
                    (
                        "StatusTime".to_owned(),
                        AttributeValue::S(format_status_time(s.window_start)),
                    ),
                ]));
            }
            let mut request = HashMap::from([(
                self.table.clone(),
                keys.build().map_err(|e| DynamoError {
                    message: format!("batch get: {e}"),
                    permanent: true,
                })?,
            )]);
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            while !request.is_empty() {
                stats.requests += 1;
                let asked: usize = request.values().map(|k| k.keys.len()).sum();
                let response = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(request))
                    .send()
                    .await
                    .map_err(|e| dynamo_error("cannot read stored revisions", &e))?;
                for row in response
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    if let Some((key, revision)) = revision_of(&row) {
                        out.insert(key, revision);
                    }
                }
                request = response.unprocessed_keys.unwrap_or_default();
                if request.values().map(|k| k.keys.len()).sum::<usize>() < asked {
                    // Some were read: the table is serving, so the rest goes again soon.
                    backoff.reset();
                }
                if !request.is_empty() {
                    backoff.wait().await;
                }
            }
        }
        Ok(out)
    }

    /// Stored summaries, newest first: a `Query` for one unicorn, a `Scan` otherwise.
    ///
    /// # Errors
    /// The read failed.
    pub async fn summaries(&self, q: &SummaryQuery) -> Result<Vec<Summary>, DynamoError> {
        let from = format_status_time(q.from.unwrap_or(0));
        let to = format_status_time(q.to.unwrap_or(253_402_300_799_000));
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let rows = if let Some(name) = &q.name {
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("#n = :n AND #t BETWEEN :from AND :to")
                    .expression_attribute_names("#n", "Name")
                    .expression_attribute_names("#t", "StatusTime")
                    .expression_attribute_values(":n", AttributeValue::S(name.clone()))
                    .expression_attribute_values(":from", AttributeValue::S(from.clone()))
                    .expression_attribute_values(":to", AttributeValue::S(to.clone()))
                    .scan_index_forward(false)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| dynamo_error("query", &e))?;
                start = page.last_evaluated_key;
                page.items.unwrap_or_default()
            } else {
                let page = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| dynamo_error("scan", &e))?;
                start = page.last_evaluated_key;
                page.items.unwrap_or_default()
            };
            out.extend(rows.iter().filter_map(summary_of).filter(|s| {
                q.from.is_none_or(|f| s.window_start >= f)
                    && q.to.is_none_or(|t| s.window_start <= t)
            }));
            if start.is_none() || (q.name.is_some() && out.len() >= q.limit) {
                break;
            }
        }
        out.sort_by(|a, b| (b.window_start, &b.name).cmp(&(a.window_start, &a.name)));
        out.truncate(q.limit);
        Ok(out)
    }
}

/// A summary as a DynamoDB item.
fn item(s: &Summary) -> HashMap<String, AttributeValue> {
    let n = |v: String| AttributeValue::N(v);
    HashMap::from([
        ("Name".to_owned(), AttributeValue::S(s.name.clone())),
        (
            "StatusTime".to_owned(),
            AttributeValue::S(format_status_time(s.window_start)),
        ),
        (
            "WindowEnd".to_owned(),
            AttributeValue::S(format_status_time(s.window_end)),
        ),
        ("Distance".to_owned(), n(format!("{:?}", s.distance))),
        (
            "MinMagicPoints".to_owned(),
            n(s.min_magic_points.to_string()),
        ),
        (
            "MaxMagicPoints".to_owned(),
            n(s.max_magic_points.to_string()),
        ),
        (
            "MinHealthPoints".to_owned(),
            n(s.min_health_points.to_string()),
        ),
        (
            "MaxHealthPoints".to_owned(),
            n(s.max_health_points.to_string()),
        ),
        ("Records".to_owned(), n(s.records.to_string())),
        ("Revision".to_owned(), n(s.revision.to_string())),
    ])
}

fn text<'a>(row: &'a HashMap<String, AttributeValue>, key: &str) -> Option<&'a str> {
    match row.get(key)? {
        AttributeValue::S(s) | AttributeValue::N(s) => Some(s),
        _ => None,
    }
}

fn revision_of(row: &HashMap<String, AttributeValue>) -> Option<((String, Millis), u64)> {
    let name = text(row, "Name")?.to_owned();
    let start = parse_status_time(text(row, "StatusTime")?.as_bytes()).ok()?;
    Some(((name, start), text(row, "Revision")?.parse().ok()?))
}

/// An item read back as a summary (`None` for an item another program wrote differently).
fn summary_of(row: &HashMap<String, AttributeValue>) -> Option<Summary> {
    let num = |k: &str| text(row, k)?.parse::<i64>().ok();
    let time = |k: &str| parse_status_time(text(row, k)?.as_bytes()).ok();
    Some(Summary {
        name: text(row, "Name")?.to_owned(),
        window_start: time("StatusTime")?,
        window_end: time("WindowEnd")?,
        distance: text(row, "Distance")?.parse().ok()?,
        min_magic_points: num("MinMagicPoints")?,
        max_magic_points: num("MaxMagicPoints")?,
        min_health_points: num("MinHealthPoints")?,
        max_health_points: num("MaxHealthPoints")?,
        records: text(row, "Records")?.parse().ok()?,
        revision: text(row, "Revision")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_the_same_summary() {
        let s = Summary {
            name: "Shadowfax".into(),
            window_start: 1_521_343_200_000,
            window_end: 1_521_343_260_000,
            distance: 1798.4000000000003,
            min_magic_points: 170,
            max_magic_points: 172,
            min_health_points: -146,
            max_health_points: 149,
            records: 60,
            revision: 2,
        };
        assert_eq!(summary_of(&item(&s)), Some(s.clone()));
        assert_eq!(
            revision_of(&item(&s)),
            Some((("Shadowfax".to_owned(), s.window_start), 2))
        );
    }
}

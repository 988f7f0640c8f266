//! The DynamoDB dead-letter table (`store.dead_letter_table`, default `stampede-dead-letters`):
//! where a service whose store is DynamoDB keeps the records it rejected, so that it keeps no
//! local state at all (a second instance on the same host collides with nothing).
//!
//! One item per rejected record: partition key `Day` (S, the UTC date of the rejection, so one
//! day's dead letters spread no wider than a partition and the newest are one `Query` away),
//! sort key `Id` (S, `<rejection time in ms, 13 digits>#<source>:<partition>@<position>`: time
//! order, unique per record and rejection), and `Reason`, `Field`, `Source`, `Partition`,
//! `Position`, `At` (N, epoch ms) and `Raw` (B). Written with `BatchWriteItem`, 25 items a call,
//! unprocessed items sent again; a replay after a crash may add a record's dead letter twice (at
//! least once, as the dead-letter streams). Old items are best expired with DynamoDB's TTL on an
//! attribute of your choice; Stampede does not delete them.

use crate::backoff::Backoff;
use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, ScalarAttributeType, WriteRequest};
use aws_sdk_dynamodb::Client;

use crate::clients::dynamodb::{client, dynamo_error, ensure_table, DynamoError};
use crate::record::{DeadLetter, DeadLetterView, Origin};
use crate::time::{format_status_time, Millis};

/// Items per `BatchWriteItem`, as DynamoDB allows.
const WRITE_BATCH: usize = 25;
/// How many days back a listing looks for dead letters.
const LOOKBACK_DAYS: i64 = 31;
const DAY_MS: Millis = 86_400_000;

/// The dead-letter table.
#[derive(Clone)]
pub struct DeadLetterTable {
    client: Client,
    table: String,
}

impl DeadLetterTable {
    /// Checks that `table` exists, creating it when `create` is set.
    ///
    /// # Errors
    /// The table is missing (and may not be created), or DynamoDB cannot be reached.
    pub async fn open(
        config: &aws_config::SdkConfig,
        table: &str,
        create: bool,
    ) -> Result<DeadLetterTable, DynamoError> {
        let this = DeadLetterTable {
            client: client(config),
            table: table.to_owned(),
        };
        let keys = (
            ("Day", ScalarAttributeType::S),
            ("Id", ScalarAttributeType::S),
        );
        ensure_table(&this.client, table, keys, create).await?;
        Ok(this)
    }

    /// Writes `dead` (retrying unprocessed items); the number written.
    ///
    /// # Errors
    /// A call failed after the SDK's retries; the caller sends the whole batch again.
    pub async fn write(&self, dead: &[DeadLetter]) -> Result<usize, DynamoError> {
        for chunk in dead.chunks(WRITE_BATCH) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .filter_map(|d| {
                    let put = PutRequest::builder().set_item(Some(item(d))).build().ok()?;
                    Some(WriteRequest::builder().put_request(put).build())
                })
                .collect();
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut requests))
                    .send()
                    .await
                    .map_err(|e| dynamo_error("batch write of dead letters", &e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if !requests.is_empty() {
                    backoff.wait().await;
                }
            }
        }
        Ok(dead.len())
    }

    /// The newest `limit` dead letters, newest first: a `Query` per day, back from today.
    ///
    /// # Errors
    /// The read failed.
    pub async fn newest(&self, limit: usize) -> Result<Vec<DeadLetterView>, DynamoError> {
        let today = crate::time::now_ms().div_euclid(DAY_MS);
        let mut out = Vec::new();
        for day in (today - LOOKBACK_DAYS..=today).rev() {
            let mut start = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("#d = :d")
                    .expression_attribute_names("#d", "Day")
                    .expression_attribute_values(":d", AttributeValue::S(day_key(day * DAY_MS)))
                    .scan_index_forward(false)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| dynamo_error("query of dead letters", &e))?;
                out.extend(page.items.unwrap_or_default().iter().filter_map(view_of));
                start = page.last_evaluated_key;
                if out.len() >= limit {
                    out.truncate(limit);
                    return Ok(out);
                }
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether the table answers: why not, naming it.
    ///
    /// # Errors
    /// `DescribeTable` failed, in words.
    pub async fn writable(&self) -> Result<(), String> {
        crate::clients::dynamodb::answers(&self.client, &self.table).await
    }
}

/// `YYYY-MM-DD` of `at`.
fn day_key(at: Millis) -> String {
    format_status_time(at)[..10].to_owned()
}

fn item(d: &DeadLetter) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let mut item = HashMap::from([
        ("Day".to_owned(), AttributeValue::S(day_key(d.at))),
        (
            "Id".to_owned(),
            AttributeValue::S(format!("{:013}#{}", d.at.max(0), d.origin())),
        ),
        ("Reason".to_owned(), s(d.reason.as_str())),
        ("Source".to_owned(), s(d.source.as_str())),
        ("Partition".to_owned(), s(&d.partition)),
        (
            "Position".to_owned(),
            AttributeValue::N(d.position.to_string()),
        ),
        ("At".to_owned(), AttributeValue::N(d.at.to_string())),
        (
            "Raw".to_owned(),
            AttributeValue::B(Blob::new(d.raw.clone())),
        ),
    ]);
    if let Some(field) = d.field {
        item.insert("Field".to_owned(), s(field.as_str()));
    }
    item
}

fn view_of(item: &HashMap<String, AttributeValue>) -> Option<DeadLetterView> {
    let s = |k: &str| item.get(k)?.as_s().ok().cloned();
    let n = |k: &str| item.get(k)?.as_n().ok()?.parse::<i64>().ok();
    let at = n("At")?;
    Some(DeadLetterView {
        id: u64::try_from(at).unwrap_or_default(),
        reason: s("Reason")?,
        field: s("Field"),
        origin: Origin {
            source: s("Source")?,
            partition: s("Partition")?,
            offset: u64::try_from(n("Position")?).unwrap_or_default(),
        },
        received: format_status_time(at),
        raw: String::from_utf8_lossy(item.get("Raw")?.as_b().ok()?.as_ref()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_the_dead_letter_they_were() {
        let d = DeadLetter {
            reason: crate::record::RejectReason::OutOfRange,
            field: Some(crate::record::Field::Latitude),
            source: crate::record::SourceKind::Kinesis,
            partition: "shardId-000000000001".into(),
            position: 42,
            at: 1_521_343_207_123,
            raw: b"{\"Latitude\":91}".to_vec(),
        };
        let item = item(&d);
        assert_eq!(item["Day"].as_s().unwrap(), "2018-03-18");
        assert_eq!(
            item["Id"].as_s().unwrap(),
            "1521343207123#kinesis:shardId-000000000001@42"
        );
        let view = view_of(&item).unwrap();
        assert_eq!(
            (
                view.reason.as_str(),
                view.field.as_deref(),
                view.raw.as_str()
            ),
            ("out_of_range", Some("Latitude"), "{\"Latitude\":91}")
        );
        assert_eq!(
            (view.origin.partition.as_str(), view.origin.offset),
            ("shardId-000000000001", 42)
        );
        assert_eq!(view.received, "2018-03-18 03:20:07.123");
    }
}

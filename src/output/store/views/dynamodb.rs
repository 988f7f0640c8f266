//! Views' tables in DynamoDB (CONTRACT §9), for `store.kind = "dynamodb"`:
//!
//! - a table per view, `stampede-view-{name}`: partition key `Key` (S: the `GROUP BY` values
//!   other than the window's, as a JSON array), sort key `WindowStart` (S, the workshop's time
//!   format). An item holds the row (`Row`: its JSON, `revision` included, and `Revision` N),
//!   each partition's partial state (`P:{partition}`, B: one Arrow IPC row) and `Version` (N);
//! - the definitions made at run time (or by a file) in `stampede-views`: partition key `List`
//!   (always `views`), sort key `Name`, with `Sql`, `Created` and `FromFile`.
//!
//! Several instances may merge the same window (a fleet-wide view whose partitions two instances
//! read): every write is an `UpdateItem` conditional on the `Version` it was merged from, so a
//! writer that lost the race gets a conflict and merges again from what is stored — a row is
//! never made from a stale set of partials. Reads of what is stored are strongly consistent
//! `BatchGetItem`s, 100 keys at a time. The partials of windows no partition can restate any
//! more are removed by a `Scan`, once an hour of windows at most.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, ScalarAttributeType, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures_util::StreamExt as _;

use super::{Change, Def, SlotRef, Stored, ViewsError};
use crate::backoff::Backoff;
use crate::clients::dynamodb::{client, dynamo_error, ensure_table, DynamoError};
use crate::output::store::dynamodb::WRITES_IN_FLIGHT;
use crate::time::{format_status_time, Millis};

/// The definitions' table.
pub const DEFS_TABLE: &str = "stampede-views";
/// The partition every definition is in.
const LIST: &str = "views";
/// Keys per `BatchGetItem`.
const GET_BATCH: usize = 100;
/// Deletes per `BatchWriteItem`.
const DELETE_BATCH: usize = 25;
/// The prefix of a partition's partial attribute.
const PARTIAL: &str = "P:";
/// Window starts are kept in `WindowStart`'s text within these (years 1970–9999).
const EARLIEST: Millis = 0;
const LATEST: Millis = 253_402_300_799_000;

/// The table of view `name`.
pub fn table_of(name: &str) -> String {
    format!("stampede-view-{name}")
}

/// The views' DynamoDB tables, driven on the runtime they were opened on (the calls block).
#[derive(Clone)]
pub struct Dynamo {
    client: Client,
    runtime: tokio::runtime::Handle,
    create: bool,
}

impl Dynamo {
    /// Checks the definitions' table (creating it when `create`); a view's table is made by
    /// [`Dynamo::prepare`].
    ///
    /// # Errors
    /// The table is missing and may not be created, or DynamoDB cannot be reached.
    pub async fn open(config: &aws_config::SdkConfig, create: bool) -> Result<Dynamo, DynamoError> {
        let client = client(config);
        let keys = (
            ("List", ScalarAttributeType::S),
            ("Name", ScalarAttributeType::S),
        );
        ensure_table(&client, DEFS_TABLE, keys, create).await?;
        Ok(Dynamo {
            client,
            runtime: tokio::runtime::Handle::current(),
            create,
        })
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// Makes sure `view`'s table exists.
    ///
    /// # Errors
    /// As [`ensure_table`].
    pub fn prepare(&self, view: &str) -> Result<(), ViewsError> {
        let keys = (
            ("Key", ScalarAttributeType::S),
            ("WindowStart", ScalarAttributeType::S),
        );
        Ok(self.block_on(ensure_table(
            &self.client,
            &table_of(view),
            keys,
            self.create,
        ))?)
    }

    /// What is stored of each slot, in order.
    ///
    /// # Errors
    /// A read failed.
    pub fn load(&self, slots: &[SlotRef<'_>]) -> Result<Vec<Stored>, ViewsError> {
        self.block_on(async {
            let mut found: HashMap<(&str, String, String), HashMap<String, AttributeValue>> =
                HashMap::new();
            let mut by_view: HashMap<&str, Vec<(String, &str)>> = HashMap::new();
            let mut seen = HashSet::new();
            for &(view, start, key) in slots {
                if seen.insert((view, start, key)) {
                    by_view
                        .entry(view)
                        .or_default()
                        .push((format_status_time(start), key));
                }
            }
            for (view, keys) in by_view {
                let table = table_of(view);
                for chunk in keys.chunks(GET_BATCH) {
                    for item in self.get_batch(&table, chunk).await? {
                        if let (Some(key), Some(start)) =
                            (text(&item, "Key"), text(&item, "WindowStart"))
                        {
                            found.insert((view, start.to_owned(), key.to_owned()), item);
                        }
                    }
                }
            }
            Ok(slots
                .iter()
                .map(|&(view, start, key)| {
                    found
                        .get(&(view, format_status_time(start), key.to_owned()))
                        .map(stored_of)
                        .unwrap_or_default()
                })
                .collect())
        })
    }

    /// One `BatchGetItem` of up to 100 keys of `table`, unprocessed keys asked again.
    async fn get_batch(
        &self,
        table: &str,
        keys: &[(String, &str)],
    ) -> Result<Vec<HashMap<String, AttributeValue>>, ViewsError> {
        let mut ask = KeysAndAttributes::builder().consistent_read(true);
        for (start, key) in keys {
            ask = ask.keys(slot_key(key, start));
        }
        let ask = ask.build().map_err(ViewsError::new)?;
        let mut request = HashMap::from([(table.to_owned(), ask)]);
        let mut out = Vec::new();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        while !request.is_empty() {
            let response = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(|e| dynamo_error(&format!("cannot read {table}"), &e))?;
            out.extend(
                response
                    .responses
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default(),
            );
            request = response.unprocessed_keys.unwrap_or_default();
            request.retain(|_, k| !k.keys.is_empty());
            if !request.is_empty() {
                backoff.wait().await;
            }
        }
        Ok(out)
    }

    /// Applies `changes`, each conditional on the version it was merged from, up to
    /// [`WRITES_IN_FLIGHT`] at a time; then drops the partials of `forget`'s windows.
    ///
    /// # Errors
    /// A write failed, or another writer changed a slot meanwhile (`conflict`). Changes are
    /// idempotent by content: the caller reads again and retries.
    pub fn write(
        &self,
        changes: &[Change],
        forget: &[(std::sync::Arc<str>, Millis)],
    ) -> Result<(), ViewsError> {
        self.block_on(async {
            let mut results = futures_util::stream::iter(changes.iter().map(|c| self.update(c)))
                .buffer_unordered(WRITES_IN_FLIGHT);
            let mut conflicts = 0usize;
            let mut failed = None;
            while let Some(r) = results.next().await {
                match r {
                    Ok(true) => {}
                    Ok(false) => conflicts += 1,
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if conflicts > 0 {
                return Err(ViewsError {
                    message: format!("{conflicts} view rows were written by another instance meanwhile: merging them again"),
                    conflict: true,
                });
            }
            for (view, before) in forget {
                self.forget(view, *before).await?;
            }
            Ok(())
        })
    }

    /// One change as a conditional `UpdateItem`; `false` when another writer wrote since.
    async fn update(&self, c: &Change) -> Result<bool, ViewsError> {
        let table = table_of(&c.view);
        let mut request = self
            .client
            .update_item()
            .table_name(&table)
            .set_key(Some(slot_key(&c.key, &format_status_time(c.start))))
            .expression_attribute_names("#ver", "Version")
            .expression_attribute_values(":ver", AttributeValue::N((c.version + 1).to_string()));
        let mut sets = vec!["#ver = :ver".to_owned()];
        let mut removes = Vec::new();
        // A partition written twice in one batch: its last partial stands.
        let mut last: HashMap<&str, Option<&Vec<u8>>> = HashMap::new();
        for (partition, partial) in &c.partials {
            last.insert(partition, partial.as_ref());
        }
        for (i, (partition, partial)) in last.into_iter().enumerate() {
            request = request
                .expression_attribute_names(format!("#p{i}"), format!("{PARTIAL}{partition}"));
            match partial {
                Some(bytes) => {
                    sets.push(format!("#p{i} = :p{i}"));
                    request = request.expression_attribute_values(
                        format!(":p{i}"),
                        AttributeValue::B(Blob::new(bytes.clone())),
                    );
                }
                None => removes.push(format!("#p{i}")),
            }
        }
        match &c.row {
            None => {}
            Some(row) => {
                request = request
                    .expression_attribute_names("#row", "Row")
                    .expression_attribute_names("#rev", "Revision");
                match row {
                    Some(json) => {
                        sets.push("#row = :row".into());
                        sets.push("#rev = :rev".into());
                        request = request
                            .expression_attribute_values(":row", AttributeValue::S(json.clone()))
                            .expression_attribute_values(
                                ":rev",
                                AttributeValue::N(revision_of(json).to_string()),
                            );
                    }
                    None => removes.extend(["#row".to_owned(), "#rev".to_owned()]),
                }
            }
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        request = request.update_expression(expression);
        request = if c.version == 0 {
            request.condition_expression("attribute_not_exists(#ver)")
        } else {
            request
                .condition_expression("#ver = :prev")
                .expression_attribute_values(":prev", AttributeValue::N(c.version.to_string()))
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(dynamo_error(&format!("cannot write to {table}"), &e).into()),
        }
    }

    /// Removes the partials of `view`'s windows that started before `before`.
    async fn forget(&self, view: &str, before: Millis) -> Result<(), ViewsError> {
        let table = table_of(view);
        let before = format_status_time(before.clamp(EARLIEST, LATEST));
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&table)
                .filter_expression("#ws < :before")
                .expression_attribute_names("#ws", "WindowStart")
                .expression_attribute_values(":before", AttributeValue::S(before.clone()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| dynamo_error(&format!("cannot scan {table}"), &e))?;
            for item in page.items() {
                let partials: Vec<&String> =
                    item.keys().filter(|k| k.starts_with(PARTIAL)).collect();
                let (Some(key), Some(ws)) = (text(item, "Key"), text(item, "WindowStart")) else {
                    continue;
                };
                if partials.is_empty() {
                    continue;
                }
                let version = text(item, "Version")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let mut request = self
                    .client
                    .update_item()
                    .table_name(&table)
                    .set_key(Some(slot_key(key, ws)))
                    .expression_attribute_names("#ver", "Version")
                    .expression_attribute_values(
                        ":ver",
                        AttributeValue::N((version + 1).to_string()),
                    )
                    .expression_attribute_values(":prev", AttributeValue::N(version.to_string()))
                    .condition_expression("#ver = :prev");
                let mut names = Vec::new();
                for (i, p) in partials.iter().enumerate() {
                    request = request.expression_attribute_names(format!("#p{i}"), p.as_str());
                    names.push(format!("#p{i}"));
                }
                let result = request
                    .update_expression(format!("SET #ver = :ver REMOVE {}", names.join(", ")))
                    .send()
                    .await;
                match result {
                    // Written meanwhile: its partials go the next time.
                    Ok(_) => {}
                    Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
                    Err(e) => {
                        return Err(dynamo_error(&format!("cannot write to {table}"), &e).into())
                    }
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }

    /// `view`'s rows of windows starting in `from..to`, newest window first, at most `limit`: a
    /// `Scan` of its table.
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
        let table = table_of(view);
        let from = format_status_time(from.clamp(EARLIEST, LATEST));
        let to = format_status_time(to.clamp(EARLIEST, LATEST));
        self.block_on(async {
            let mut rows: Vec<(String, String, String)> = Vec::new();
            let mut start = None;
            loop {
                let page = self
                    .client
                    .scan()
                    .table_name(&table)
                    .consistent_read(true)
                    .filter_expression("attribute_exists(#row) AND #ws >= :from AND #ws < :to")
                    .projection_expression("#k, #ws, #row")
                    .expression_attribute_names("#k", "Key")
                    .expression_attribute_names("#ws", "WindowStart")
                    .expression_attribute_names("#row", "Row")
                    .expression_attribute_values(":from", AttributeValue::S(from.clone()))
                    .expression_attribute_values(":to", AttributeValue::S(to.clone()))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| dynamo_error(&format!("cannot scan {table}"), &e))?;
                for item in page.items() {
                    if let (Some(k), Some(ws), Some(row)) = (
                        text(item, "Key"),
                        text(item, "WindowStart"),
                        text(item, "Row"),
                    ) {
                        rows.push((ws.to_owned(), k.to_owned(), row.to_owned()));
                    }
                }
                start = page.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
            rows.sort_unstable_by(|a, b| (&b.0, &b.1).cmp(&(&a.0, &a.1)));
            Ok(rows
                .into_iter()
                .take(limit)
                .map(|(_, _, row)| row)
                .collect())
        })
    }

    /// The views defined, stored.
    ///
    /// # Errors
    /// The read failed.
    pub fn defs(&self) -> Result<Vec<Def>, ViewsError> {
        self.block_on(async {
            let mut out = Vec::new();
            let mut start = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(DEFS_TABLE)
                    .key_condition_expression("#l = :l")
                    .expression_attribute_names("#l", "List")
                    .expression_attribute_values(":l", AttributeValue::S(LIST.into()))
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| dynamo_error(&format!("cannot read {DEFS_TABLE}"), &e))?;
                out.extend(page.items().iter().filter_map(def_of));
                start = page.last_evaluated_key;
                if start.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    /// Stores `def` after making its table; when `clear`, first deletes every item of the
    /// table.
    ///
    /// # Errors
    /// A call failed.
    pub fn put_def(&self, def: &Def, clear: bool) -> Result<(), ViewsError> {
        if clear {
            self.block_on(self.clear(&table_of(&def.name)))?;
        }
        self.prepare(&def.name)?;
        self.block_on(async {
            self.client
                .put_item()
                .table_name(DEFS_TABLE)
                .item("List", AttributeValue::S(LIST.into()))
                .item("Name", AttributeValue::S(def.name.clone()))
                .item("Sql", AttributeValue::S(def.sql.clone()))
                .item("Created", AttributeValue::N(def.created.to_string()))
                .item("FromFile", AttributeValue::Bool(def.from_file))
                .send()
                .await
                .map_err(|e| dynamo_error(&format!("cannot write to {DEFS_TABLE}"), &e))?;
            Ok(())
        })
    }

    /// Deletes every item of `table` (a missing table has none).
    async fn clear(&self, table: &str) -> Result<(), ViewsError> {
        let mut start = None;
        loop {
            let page = match self
                .client
                .scan()
                .table_name(table)
                .projection_expression("#k, #ws")
                .expression_attribute_names("#k", "Key")
                .expression_attribute_names("#ws", "WindowStart")
                .set_exclusive_start_key(start)
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(()),
                Err(e) => return Err(dynamo_error(&format!("cannot scan {table}"), &e).into()),
            };
            for chunk in page.items().chunks(DELETE_BATCH) {
                let mut requests: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
                for item in chunk {
                    let (Some(k), Some(ws)) = (text(item, "Key"), text(item, "WindowStart")) else {
                        continue;
                    };
                    let delete = DeleteRequest::builder()
                        .set_key(Some(slot_key(k, ws)))
                        .build()
                        .map_err(ViewsError::new)?;
                    requests.push(WriteRequest::builder().delete_request(delete).build());
                }
                self.delete_batch(table, requests).await?;
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }

    /// One `BatchWriteItem` of deletes, unprocessed ones sent again.
    async fn delete_batch(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<(), ViewsError> {
        let mut pending = HashMap::from([(table.to_owned(), requests)]);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        while pending.values().any(|r| !r.is_empty()) {
            let response = self
                .client
                .batch_write_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|e| dynamo_error(&format!("cannot delete from {table}"), &e))?;
            pending = response.unprocessed_items.unwrap_or_default();
            if pending.values().any(|r| !r.is_empty()) {
                backoff.wait().await;
            }
        }
        Ok(())
    }

    /// Forgets view `name`: its definition, and its table (waiting until it is gone, so that a
    /// view of the same name can be made again at once).
    ///
    /// # Errors
    /// A call failed, or the table was still being deleted after a minute.
    pub fn delete(&self, name: &str) -> Result<(), ViewsError> {
        let table = table_of(name);
        self.block_on(async {
            self.client
                .delete_item()
                .table_name(DEFS_TABLE)
                .key("List", AttributeValue::S(LIST.into()))
                .key("Name", AttributeValue::S(name.to_owned()))
                .send()
                .await
                .map_err(|e| dynamo_error(&format!("cannot write to {DEFS_TABLE}"), &e))?;
            match self.client.delete_table().table_name(&table).send().await {
                Ok(_) => {}
                Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(()),
                Err(e) => {
                    return Err(dynamo_error(&format!("cannot delete table {table}"), &e).into())
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                match self.client.describe_table().table_name(&table).send().await {
                    Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(()),
                    _ if tokio::time::Instant::now() >= deadline => {
                        return Err(ViewsError::new(format!(
                            "table {table} was still being deleted after a minute"
                        )))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        })
    }
}

fn slot_key(key: &str, start: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("Key".to_owned(), AttributeValue::S(key.to_owned())),
        (
            "WindowStart".to_owned(),
            AttributeValue::S(start.to_owned()),
        ),
    ])
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    match item.get(name)? {
        AttributeValue::S(s) | AttributeValue::N(s) => Some(s),
        _ => None,
    }
}

/// An item as what is stored of its slot.
fn stored_of(item: &HashMap<String, AttributeValue>) -> Stored {
    let mut partials: Vec<(String, Vec<u8>)> = item
        .iter()
        .filter_map(|(name, value)| match value {
            AttributeValue::B(bytes) => Some((
                name.strip_prefix(PARTIAL)?.to_owned(),
                bytes.as_ref().to_vec(),
            )),
            _ => None,
        })
        .collect();
    partials.sort();
    Stored {
        row: text(item, "Row").map(str::to_owned),
        partials,
        version: text(item, "Version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

fn def_of(item: &HashMap<String, AttributeValue>) -> Option<Def> {
    Some(Def {
        name: text(item, "Name")?.to_owned(),
        sql: text(item, "Sql")?.to_owned(),
        created: text(item, "Created")?.parse().ok()?,
        from_file: matches!(item.get("FromFile"), Some(AttributeValue::Bool(true))),
    })
}

/// The `revision` a row's JSON ends with (0 if it says none).
fn revision_of(json: &str) -> u64 {
    json.rfind("\"revision\":")
        .and_then(|at| json[at + 11..].trim_end_matches('}').parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_reads_back_as_its_row_partials_and_version() {
        let mut item = slot_key("[\"Shadowfax\"]", "2018-03-18 03:20:00.000");
        item.insert(
            "Row".into(),
            AttributeValue::S("{\"n\":3,\"revision\":2}".into()),
        );
        item.insert("Version".into(), AttributeValue::N("7".into()));
        item.insert("P:1".into(), AttributeValue::B(Blob::new(vec![1u8])));
        item.insert("P:0".into(), AttributeValue::B(Blob::new(vec![0u8])));
        let stored = stored_of(&item);
        assert_eq!(stored.row.as_deref(), Some("{\"n\":3,\"revision\":2}"));
        assert_eq!(stored.version, 7);
        assert_eq!(
            stored.partials,
            vec![("0".to_owned(), vec![0u8]), ("1".to_owned(), vec![1u8])]
        );
        assert_eq!(revision_of("{\"n\":3,\"revision\":12}"), 12);
    }
}

//! Shard leases in DynamoDB (`stampede-leases`), as the Kinesis Client Library keeps them: one
//! item per shard with its owner, a counter bumped at every renewal, and the checkpoint (the
//! sequence number to read after, with the engine's checkpoint text). Every change is a
//! conditional write on the counter the writer last saw, so two instances can never both believe
//! they own a shard for long: the loser's next renewal or checkpoint fails its condition.
//!
//! Expiry is judged the KCL way, without trusting clocks: a lease whose counter has not moved for
//! the lease duration, as this instance observed it, is expired and may be taken.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;

/// The checkpoint of a shard read to its end (after a reshard): its children may start.
pub const SHARD_END: &str = "SHARD_END";

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard: String,
    /// The owning instance, empty when free.
    pub owner: String,
    /// Bumped by every renewal, take-over and checkpoint.
    pub counter: u64,
    /// Sequence number to read after (`None` or `-`: from the start of the shard; `-` with a
    /// checkpoint), or [`SHARD_END`].
    pub sequence: Option<String>,
    /// The engine's checkpoint text, positions counted from the record after `sequence`.
    pub engine: Option<String>,
    /// The shard's parents, which must be read to their end first.
    pub parents: Vec<String>,
    /// Of a shard read to its end and handed off: where its tail starts ("read after S", `-`
    /// for the start of the shard), to be read again with `engine` by a child after a split.
    pub tail: Option<String>,
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else changed the lease first: we do not (or no longer) own it.
    #[error("lease of {0} changed hands")]
    Lost(String),
    /// DynamoDB refused or could not be reached.
    #[error("lease table: {0}")]
    Table(String),
}

/// The lease table.
#[derive(Clone)]
pub struct Leases {
    client: Client,
    table: String,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn table_error<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(what: &str, e: &E) -> LeaseError {
    LeaseError::Table(format!(
        "{what}: {} {}",
        e.code().unwrap_or("error"),
        e.message().unwrap_or("")
    ))
}

impl Leases {
    /// Opens the lease table, creating it when `create` is set.
    ///
    /// # Errors
    /// The table is missing (and may not be created) or unreachable.
    pub async fn open(client: Client, table: &str, create: bool) -> Result<Leases, LeaseError> {
        let leases = Leases {
            client,
            table: table.to_owned(),
        };
        match leases
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
        {
            Ok(_) => return Ok(leases),
            Err(e)
                if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                    == Some("ResourceNotFoundException") =>
            {
                if !create {
                    return Err(LeaseError::Table(format!(
                        "table {table} does not exist: create it (partition key ShardId S) or set [store] create_tables = true"
                    )));
                }
            }
            Err(e) => return Err(table_error(&format!("cannot describe {table}"), &e)),
        }
        let built = AttributeDefinition::builder()
            .attribute_name("ShardId")
            .attribute_type(ScalarAttributeType::S)
            .build()
            .and_then(|a| {
                KeySchemaElement::builder()
                    .attribute_name("ShardId")
                    .key_type(KeyType::Hash)
                    .build()
                    .map(|k| (a, k))
            })
            .map_err(|e| LeaseError::Table(e.to_string()))?;
        let created = leases
            .client
            .create_table()
            .table_name(table)
            .attribute_definitions(built.0)
            .key_schema(built.1)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        if let Err(e) = created {
            if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                != Some("ResourceInUseException")
            {
                return Err(table_error(&format!("cannot create {table}"), &e));
            }
        }
        let within = std::time::Duration::from_secs(30);
        if crate::clients::aws::table_active(&leases.client, table, within).await {
            return Ok(leases);
        }
        Err(LeaseError::Table(format!(
            "{table} did not become ACTIVE within 30 s"
        )))
    }

    /// Every lease.
    ///
    /// # Errors
    /// The table could not be read.
    pub async fn all(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| table_error("scan", &e))?;
            out.extend(page.items.unwrap_or_default().iter().filter_map(lease_of));
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Creates a free lease for a shard that has none.
    ///
    /// # Errors
    /// The table could not be written (an existing lease is not an error).
    pub async fn create(&self, shard: &str, parents: &[String]) -> Result<(), LeaseError> {
        let mut item = HashMap::from([
            ("ShardId".to_owned(), s(shard)),
            ("Owner".to_owned(), s("")),
            ("Counter".to_owned(), n(0)),
        ]);
        if !parents.is_empty() {
            item.insert("Parents".to_owned(), AttributeValue::Ss(parents.to_vec()));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(ShardId)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                    == Some("ConditionalCheckFailedException") =>
            {
                Ok(())
            }
            Err(e) => Err(table_error("create lease", &e)),
        }
    }

    /// Sets the owner (take-over, renewal, release) if the counter is still `counter`; returns
    /// the new counter.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when the lease changed in between.
    pub async fn own(&self, shard: &str, counter: u64, owner: &str) -> Result<u64, LeaseError> {
        self.update(
            shard,
            counter,
            "SET #o = :o, #c = :next",
            &[(":o", s(owner))],
        )
        .await
    }

    /// Writes a checkpoint if we still own the lease at `counter`; returns the new counter.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when the lease changed hands.
    pub async fn checkpoint(
        &self,
        shard: &str,
        counter: u64,
        owner: &str,
        sequence: &str,
        engine: &str,
    ) -> Result<u64, LeaseError> {
        self.update(
            shard,
            counter,
            "SET #c = :next, #s = :s, #e = :e",
            &[(":s", s(sequence)), (":e", s(engine)), (":me", s(owner))],
        )
        .await
    }

    /// Marks a shard read to its end. With `tail` (its last checkpoint's sequence number, or
    /// `-`), the checkpoint is kept so that a child of a split can re-read the windows still open
    /// at the end; without, the shard's windows were flushed and nothing is inherited.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when the lease changed hands.
    pub async fn finish(
        &self,
        shard: &str,
        counter: u64,
        owner: &str,
        tail: Option<&str>,
    ) -> Result<u64, LeaseError> {
        let mut values = vec![(":s", s(SHARD_END)), (":me", s(owner))];
        let set = match tail {
            Some(t) => {
                values.push((":t", s(t)));
                "SET #c = :next, #s = :s, #t = :t"
            }
            None => "SET #c = :next, #s = :s REMOVE #t",
        };
        self.update(shard, counter, set, &values).await
    }

    async fn update(
        &self,
        shard: &str,
        counter: u64,
        set: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<u64, LeaseError> {
        let mut condition = "#c = :c".to_owned();
        if values.iter().any(|(k, _)| *k == ":me") {
            condition.push_str(" AND #o = :me");
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("ShardId", s(shard))
            .update_expression(set)
            .condition_expression(condition)
            .expression_attribute_names("#c", "Counter")
            .expression_attribute_names("#o", "Owner")
            .expression_attribute_values(":c", n(counter))
            .expression_attribute_values(":next", n(counter + 1));
        for (name, attribute) in [("#s", "Sequence"), ("#e", "Engine"), ("#t", "Tail")] {
            if set.contains(name) {
                request = request.expression_attribute_names(name, attribute);
            }
        }
        for (k, v) in values {
            request = request.expression_attribute_values(*k, v.clone());
        }
        match request.send().await {
            Ok(_) => Ok(counter + 1),
            Err(e)
                if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                    == Some("ConditionalCheckFailedException") =>
            {
                Err(LeaseError::Lost(shard.to_owned()))
            }
            Err(e) => Err(table_error("update lease", &e)),
        }
    }
}

fn lease_of(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let text = |k: &str| match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    let counter = match item.get("Counter")? {
        AttributeValue::N(v) => v.parse().ok()?,
        _ => return None,
    };
    let parents = match item.get("Parents") {
        Some(AttributeValue::Ss(p)) => p.clone(),
        _ => Vec::new(),
    };
    Some(Lease {
        shard: text("ShardId")?,
        owner: text("Owner").unwrap_or_default(),
        counter,
        sequence: text("Sequence"),
        engine: text("Engine"),
        parents,
        tail: text("Tail"),
    })
}

//! Subscriptions in DynamoDB (`store.subscription_table`): partition key `List`, always
//! `subscriptions`, sort key `Email`; one small partition, read whole.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType};

use super::{parse, Subscription};
use crate::clients::aws::describe;

/// The partition every subscription is in.
const LIST: &str = "subscriptions";

/// The subscription table.
#[derive(Clone)]
pub(super) struct Table {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl Table {
    /// Table `table` (created when missing if `create`).
    pub(super) async fn open(
        config: &aws_config::SdkConfig,
        table: &str,
        create: bool,
    ) -> anyhow::Result<Table> {
        let client = crate::clients::dynamodb::client(config);
        let keys = (
            ("List", ScalarAttributeType::S),
            ("Email", ScalarAttributeType::S),
        );
        crate::clients::dynamodb::ensure_table(&client, table, keys, create).await?;
        Ok(Table {
            client,
            table: table.to_owned(),
        })
    }

    /// Every subscription, read consistently.
    pub(super) async fn load(&self) -> anyhow::Result<Vec<Subscription>> {
        let table = &self.table;
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("#l = :l")
                .expression_attribute_names("#l", "List")
                .expression_attribute_values(":l", AttributeValue::S(LIST.into()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{table}: {}", describe(&e)))?;
            for item in page.items() {
                if let Some(Ok(json)) = item.get("Subscription").map(AttributeValue::as_s) {
                    all.extend(parse(json));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(all)
    }

    /// Writes `email`'s subscription (`json`, in `state`).
    pub(super) async fn put(&self, email: &str, state: &str, json: String) -> anyhow::Result<()> {
        let table = &self.table;
        let item = HashMap::from([
            ("List".to_owned(), AttributeValue::S(LIST.into())),
            ("Email".to_owned(), AttributeValue::S(email.to_owned())),
            ("State".to_owned(), AttributeValue::S(state.into())),
            ("Subscription".to_owned(), AttributeValue::S(json)),
        ]);
        self.client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{table}: {}", describe(&e)))?;
        Ok(())
    }

    /// Removes `email`'s subscription.
    pub(super) async fn delete(&self, email: &str) -> anyhow::Result<()> {
        let table = &self.table;
        self.client
            .delete_item()
            .table_name(table)
            .key("List", AttributeValue::S(LIST.into()))
            .key("Email", AttributeValue::S(email.to_owned()))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{table}: {}", describe(&e)))?;
        Ok(())
    }
}

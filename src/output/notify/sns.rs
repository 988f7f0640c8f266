//! The SNS channel (`[alerts.sns] topic_arn`): every change published to the topic with the
//! message attributes of CONTRACT §7, so that subscribers pick what they get with filter
//! policies; and `stampede subscribe/unsubscribe` as SNS e-mail subscriptions.
//!
//! Paced to at most [`MAX_PER_SECOND`] publishes a second (SNS suspends an e-mail endpoint that
//! gets more). A round of up to [`MAX_PER_ROUND`] changes is published one message per change
//! (with its `Value`); a bigger one is grouped into [`MAX_PER_ROUND`] messages, each carrying
//! `AlertId`, `Rule`, `Name` and `State` as `String.Array` (one element per change, in order).

use std::time::Duration;

use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;
use tokio::time::Instant;

use super::message::{self, Round, SendError};
use crate::alert::Change;
use crate::metrics::METRICS;
use crate::output::ErrorKind;

/// Publishes a second to the topic, at most.
pub const MAX_PER_SECOND: u32 = 10;
/// Messages per round, at most: changes beyond it are grouped.
pub const MAX_PER_ROUND: usize = 10;

/// The SNS channel.
pub struct SnsChannel {
    client: Client,
    topic_arn: String,
    /// When the next publish may go.
    next: Instant,
    /// The round under way and how many of its messages are published.
    progress: (u64, usize),
}

impl SnsChannel {
    /// Publishes to `topic_arn` with `client`.
    pub fn new(client: Client, topic_arn: &str) -> SnsChannel {
        SnsChannel {
            client,
            topic_arn: topic_arn.to_owned(),
            next: Instant::now(),
            progress: (0, 0),
        }
    }

    pub(super) async fn send(&mut self, round: &Round) -> Result<(), SendError> {
        if self.progress.0 != round.number {
            self.progress = (round.number, 0);
        }
        let groups = groups(&round.changes);
        for group in groups.iter().skip(self.progress.1) {
            tokio::time::sleep_until(self.next).await;
            self.next = Instant::now() + Duration::from_secs(1) / MAX_PER_SECOND;
            let result = self
                .client
                .publish()
                .topic_arn(&self.topic_arn)
                .subject(message::subject(group))
                .message(message::text(group, ""))
                .set_message_attributes(Some(attributes(group)))
                .send()
                .await;
            match result {
                Ok(_) => METRICS.notification("sns", true, 1),
                Err(e) => {
                    METRICS.notification("sns", false, 1);
                    return Err(classify(&e));
                }
            }
            self.progress.1 += 1;
        }
        Ok(())
    }
}

/// The messages of a round: one per change, or [`MAX_PER_ROUND`] groups of consecutive
/// changes, as even as can be (a group of one is a message of one change).
pub fn groups(changes: &[Change]) -> Vec<&[Change]> {
    let n = changes.len().min(MAX_PER_ROUND);
    if n == 0 {
        return Vec::new();
    }
    let (base, extra) = (changes.len() / n, changes.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let len = base + usize::from(i < extra);
        out.push(&changes[start..start + len]);
        start += len;
    }
    out
}

fn string(v: impl Into<String>) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .unwrap_or_else(|_| unreachable!("data_type is set"))
}

/// The message attributes of one message (CONTRACT §7).
pub fn attributes(group: &[Change]) -> std::collections::HashMap<String, MessageAttributeValue> {
    let mut a = std::collections::HashMap::new();
    if let [c] = group {
        a.insert("AlertId".into(), string(c.alert_id()));
        a.insert("Rule".into(), string(c.rule.as_ref()));
        a.insert("Name".into(), string(c.name.as_str()));
        a.insert("State".into(), string(c.state.as_str()));
        let mut value = String::new();
        c.value.write_json(&mut value);
        a.insert(
            "Value".into(),
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(value)
                .build()
                .unwrap_or_else(|_| unreachable!("data_type is set")),
        );
        return a;
    }
    let array = |f: &dyn Fn(&Change) -> String| {
        let items: Vec<String> = group.iter().map(f).collect();
        MessageAttributeValue::builder()
            .data_type("String.Array")
            .string_value(serde_json::Value::from(items).to_string())
            .build()
            .unwrap_or_else(|_| unreachable!("data_type is set"))
    };
    a.insert("AlertId".into(), array(&Change::alert_id));
    a.insert("Rule".into(), array(&|c| c.rule.to_string()));
    a.insert("Name".into(), array(&|c| c.name.clone()));
    a.insert("State".into(), array(&|c| c.state.as_str().to_owned()));
    a
}

/// Throttling and server errors are retried; the rest (no such topic, access denied, a message
/// SNS calls invalid) need someone to act.
fn classify<E>(e: &aws_sdk_sns::error::SdkError<E>) -> SendError
where
    E: aws_sdk_sns::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
    let code = e.code().unwrap_or("").to_owned();
    let kind = match e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            if status >= 500 || code.contains("Throttl") {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            }
        }
        _ => ErrorKind::Transient,
    };
    SendError {
        kind,
        message: format!("SNS: {}", crate::clients::aws::describe(e)),
    }
}

/// `stampede subscribe` with `[alerts.sns]`: an e-mail subscription to the topic, filtered by
/// a `FilterPolicy` on the message attributes. Returns the subscription ARN (or SNS's `pending
/// confirmation`).
///
/// # Errors
/// SNS refused, in words.
pub async fn subscribe(
    client: &Client,
    topic_arn: &str,
    email: &str,
    names: &[String],
    rules: &[String],
) -> Result<String, String> {
    let mut policy = serde_json::Map::new();
    if !names.is_empty() {
        policy.insert("Name".into(), names.into());
    }
    if !rules.is_empty() {
        policy.insert("Rule".into(), rules.into());
    }
    let mut req = client
        .subscribe()
        .topic_arn(topic_arn)
        .protocol("email")
        .endpoint(email)
        .return_subscription_arn(true);
    if !policy.is_empty() {
        req = req.attributes(
            "FilterPolicy",
            serde_json::Value::Object(policy).to_string(),
        );
    }
    let out = req.send().await.map_err(|e| classify(&e).message)?;
    Ok(out
        .subscription_arn()
        .unwrap_or("pending confirmation")
        .to_owned())
}

/// `stampede unsubscribe` with `[alerts.sns]`: removes every e-mail subscription of `email` to
/// the topic; how many there were.
///
/// # Errors
/// SNS refused, in words.
pub async fn unsubscribe(client: &Client, topic_arn: &str, email: &str) -> Result<usize, String> {
    let mut removed = 0;
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_subscriptions_by_topic()
            .topic_arn(topic_arn)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| classify(&e).message)?;
        for s in page.subscriptions() {
            let arn = s.subscription_arn().unwrap_or("");
            let mine = s.protocol() == Some("email")
                && s.endpoint().is_some_and(|e| e.eq_ignore_ascii_case(email))
                && arn.starts_with("arn:");
            if mine {
                client
                    .unsubscribe()
                    .subscription_arn(arn)
                    .send()
                    .await
                    .map_err(|e| classify(&e).message)?;
                removed += 1;
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pile_of_changes_is_grouped_into_at_most_ten_messages_in_order() {
        let change = |i: usize| Change {
            rule: "low-health".into(),
            name: format!("u{i}"),
            state: crate::alert::State::Firing,
            field: crate::alert::Measure::HealthPoints,
            value: crate::alert::Value::Int(99),
            threshold: 100.0,
            direction: crate::alert::Direction::Below,
            clear: 105.0,
            status_time: 0,
        };
        let few: Vec<Change> = (0..3).map(change).collect();
        assert_eq!(groups(&few).len(), 3);
        let sizes = |n: usize| {
            let v: Vec<Change> = (0..n).map(change).collect();
            groups(&v).iter().map(|g| g.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(25), [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
        assert_eq!(sizes(11), [2, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert!(attributes(groups(&few)[0]).contains_key("Value"));
        let many: Vec<Change> = (0..1_000).map(change).collect();
        let g = groups(&many);
        assert_eq!(g.len(), 10);
        assert_eq!(g.iter().map(|g| g.len()).sum::<usize>(), 1_000);
        let a = attributes(g[0]);
        assert!(!a.contains_key("Value"));
        let names: Vec<String> = serde_json::from_str(a["Name"].string_value().unwrap()).unwrap();
        assert_eq!(names[..2], ["u0", "u1"]);
        assert_eq!(a["Name"].data_type(), "String.Array");
    }
}

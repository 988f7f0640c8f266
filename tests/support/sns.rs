//! SNS for the tests: moto in server mode (see `support::aws`). What the service published is
//! read back from moto's own record of it (`/moto-api/data.json`); filter policies are checked
//! through an HTTP subscriber, which moto delivers to only when the policy matches.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

/// A new topic, `wildrydes-alerts-…`; its ARN.
pub async fn create_topic(sns: &aws_sdk_sns::Client) -> String {
    sns.create_topic()
        .name(crate::support::kafka::unique("wildrydes-alerts"))
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_owned()
}

/// One message published to a topic, as moto recorded it.
#[derive(Debug, Clone)]
pub struct Published {
    pub message: String,
    pub subject: String,
    /// Name → (type, value).
    pub attributes: Value,
}

/// Every message published to `topic_arn` so far, in order.
pub fn published(topic_arn: &str) -> Vec<Published> {
    let (status, body) = crate::support::process::http_get(&format!(
        "{}/moto-api/data.json",
        crate::support::aws::Aws::Sns.endpoint()
    ));
    assert_eq!(status, 200, "{body}");
    let data: Value = serde_json::from_str(&body).unwrap();
    let topics = data["sns"]["Topic"].as_array().cloned().unwrap_or_default();
    let topic = topics
        .iter()
        .find(|t| t["arn"] == topic_arn)
        .unwrap_or_else(|| panic!("topic {topic_arn} not in moto's data"));
    topic["sent_notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| Published {
            message: n[1].as_str().unwrap_or("").to_owned(),
            subject: n[2].as_str().unwrap_or("").to_owned(),
            attributes: n[3].clone(),
        })
        .collect()
}

/// An HTTP endpoint moto delivers notifications to: every body it got, with when.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<(Instant, Value)>>>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        use axum::routing::post;
        let got: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let keep = Arc::clone(&got);
        let app = axum::Router::new().route(
            "/",
            post(move |body: String| {
                let keep = Arc::clone(&keep);
                async move {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    keep.lock().unwrap().push((Instant::now(), v));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { got, url }
    }

    /// The notifications (not the subscription confirmation) received so far.
    pub fn notifications(&self) -> Vec<(Instant, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| v["Type"] == "Notification")
            .cloned()
            .collect()
    }
}

/// The `AlertId`s of each message published to `topic_arn`, in order (a message of one change
/// carries its id as a `String`, a grouped one as a `String.Array`).
pub fn published_id_lists(topic_arn: &str) -> Vec<Vec<String>> {
    published(topic_arn)
        .iter()
        .map(|m| {
            let id = &m.attributes["AlertId"];
            let value = id["Value"].as_str().unwrap_or("");
            if id["Type"] == "String.Array" {
                serde_json::from_str(value).unwrap()
            } else {
                vec![value.to_owned()]
            }
        })
        .collect()
}

/// How often each `AlertId` was published to `topic_arn`.
pub fn published_ids(topic_arn: &str) -> std::collections::BTreeMap<String, usize> {
    let mut ids = std::collections::BTreeMap::new();
    for i in published_id_lists(topic_arn).into_iter().flatten() {
        *ids.entry(i).or_default() += 1;
    }
    ids
}

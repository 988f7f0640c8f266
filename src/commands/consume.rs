//! `stampede consume --from kafka://HOST:PORT/TOPIC | kinesis://STREAM`: the workshop's consumer.
//! Prints every record of every partition (shard) of a stream as indented JSON, from the end by
//! default or from the oldest retained record with `--from-beginning`. It reads without joining
//! a consumer group and commits nothing, so it never disturbs the service's own positions.

use std::io::{self, Write};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use crate::clients::kafka::{client_config, KafkaUrl, Observed};

/// `stampede consume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// kafka://HOST:PORT/TOPIC or kinesis://STREAM.
    #[arg(long, value_name = "SOURCE")]
    pub from: String,
    /// Start at the oldest record instead of the end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records (by default it runs until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

impl Args {
    /// The checked source.
    ///
    /// # Errors
    /// An address that is not a stream, or a source not part of this build.
    pub fn source(&self) -> Result<ConsumeSource, super::UsageError> {
        let scheme = self.from.split("://").next().unwrap_or_default();
        match scheme {
            "kafka" => KafkaUrl::parse(&self.from)
                .map(ConsumeSource::Kafka)
                .map_err(|e| super::UsageError(format!("--from {}: {e}", self.from))),
            "kinesis" => crate::clients::kinesis::parse_url(&self.from)
                .map(ConsumeSource::Kinesis)
                .map_err(|e| super::UsageError(format!("--from {}: {e}", self.from))),
            _ => Err(super::UsageError(format!(
                "--from {}: expected kafka://HOST:PORT/TOPIC or kinesis://STREAM",
                self.from
            ))),
        }
    }
}

/// Runs `stampede consume`: prints every record of the stream as indented JSON.
///
/// # Errors
/// A bad address (usage error), or the stream cannot be read.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let source = args.source()?;
    super::init_tracing("warn");
    let mut stdout = io::stdout().lock();
    consume(&source, args.from_beginning, args.count, &mut stdout)?;
    Ok(())
}

/// How long the metadata request may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `consume` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeSource {
    /// A Kafka topic.
    Kafka(KafkaUrl),
    /// A Kinesis stream, every shard.
    Kinesis(String),
}

/// Why `consume` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// No broker answered.
    #[error("cannot reach the Kafka cluster at {brokers}: {reason}")]
    Unreachable {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// The topic is not there.
    #[error("topic {0:?} does not exist")]
    NoTopic(String),
    /// The client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Standard output failed.
    #[error("cannot write: {0}")]
    Write(#[from] io::Error),
    /// Kinesis failed.
    #[error("kinesis: {0}")]
    Kinesis(String),
}

/// Prints records of `source` to `out` until `count` have been printed (or forever).
///
/// # Errors
/// The source is unreachable or missing, or `out` fails (a closed pipe ends quietly).
pub fn consume(
    source: &ConsumeSource,
    from_beginning: bool,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64, ConsumeError> {
    match source {
        ConsumeSource::Kafka(url) => consume_kafka(url, from_beginning, count, out),
        ConsumeSource::Kinesis(stream) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(consume_kinesis(stream, from_beginning, count, out)),
    }
}

/// Reads every shard round-robin, one `GetRecords` per shard per 200 ms (the service allows
/// five a second per shard); a shard that ends (after a reshard) is dropped.
async fn consume_kinesis(
    stream: &str,
    from_beginning: bool,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64, ConsumeError> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let client = crate::clients::kinesis::client().await;
    let shards = crate::clients::kinesis::list_shards(&client, stream)
        .await
        .map_err(|e| ConsumeError::Kinesis(e.to_string()))?;
    let kind = if from_beginning {
        ShardIteratorType::TrimHorizon
    } else {
        ShardIteratorType::Latest
    };
    let mut iterators = Vec::with_capacity(shards.len());
    for shard in &shards {
        let it = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(kind.clone())
            .send()
            .await
            .map_err(|e| ConsumeError::Kinesis(crate::clients::kinesis::describe(&e)))?;
        iterators.extend(it.shard_iterator);
    }
    announce(stream, shards.len(), "shards", from_beginning, count);
    let limit = count.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    while printed < limit && !iterators.is_empty() {
        let mut next = Vec::with_capacity(iterators.len());
        for iterator in iterators {
            let page = match client.get_records().shard_iterator(&iterator).send().await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %crate::clients::kinesis::describe(&e), "GetRecords failed; retrying");
                    next.push(iterator);
                    continue;
                }
            };
            for record in page.records {
                if printed >= limit {
                    break;
                }
                match write_record(out, record.data.as_ref()) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(printed),
                    other => other?,
                }
                printed += 1;
            }
            next.extend(page.next_shard_iterator);
        }
        iterators = next;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(printed)
}

fn consume_kafka(
    url: &KafkaUrl,
    from_beginning: bool,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64, ConsumeError> {
    let consumer: BaseConsumer<Observed> = client_config(
        &url.brokers,
        &[
            ("group.id", "stampede-consume"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ],
        &toml::Table::new(),
    )
    .create_with_context(Observed::default())?;
    let metadata = consumer
        .fetch_metadata(Some(&url.topic), CONNECT_TIMEOUT)
        .map_err(|e| ConsumeError::Unreachable {
            brokers: url.brokers.clone(),
            reason: e.to_string(),
        })?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == url.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ConsumeError::NoTopic(url.topic.clone()));
    }
    let start = if from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in &partitions {
        tpl.add_partition_offset(&url.topic, p, start)?;
    }
    consumer.assign(&tpl)?;
    announce(
        &url.topic,
        partitions.len(),
        "partitions",
        from_beginning,
        count,
    );
    let limit = count.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    while printed < limit {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "kafka consumer error");
                continue;
            }
        };
        let payload = message.payload().unwrap_or_default();
        let written = write_record(out, payload);
        match written {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            other => other?,
        }
        printed += 1;
    }
    Ok(printed)
}

/// Says on stderr what is being read, from where, and how it ends.
fn announce(name: &str, parts: usize, what: &str, from_beginning: bool, count: Option<u64>) {
    let from = if from_beginning {
        "the beginning"
    } else {
        "the end"
    };
    let until = if count.is_none() {
        "; Ctrl-C to stop"
    } else {
        ""
    };
    eprintln!("reading {name} ({parts} {what}) from {from}{until}");
}

/// One record as indented JSON, or as text when it is not JSON (malformed records are part of
/// the stream too).
fn write_record(out: &mut dyn Write, payload: &[u8]) -> io::Result<()> {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(value) => {
            serde_json::to_writer_pretty(&mut *out, &value)?;
            out.write_all(b"\n")?;
        }
        Err(_) => {
            out.write_all(String::from_utf8_lossy(payload).as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_print_indented_and_non_json_as_text() {
        let mut out = Vec::new();
        write_record(&mut out, br#"{"Name":"Shadowfax","HealthPoints":150}"#).unwrap();
        write_record(&mut out, b"{not json").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n  \"HealthPoints\": 150,\n  \"Name\": \"Shadowfax\"\n}\n{not json\n"
        );
    }
}

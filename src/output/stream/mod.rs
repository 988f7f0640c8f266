//! The stream outputs: summaries (the summary stream) or dead letters (the dead-letter stream)
//! written to a Kafka topic or a Kinesis stream, for other consumers to read.

pub mod kafka;
pub mod kinesis;

use crate::clients::aws::Aws;
use crate::clients::kafka::Observed;
use crate::clients::kinesis::{stream_exists, ShardsError};
use crate::output::{Health, Interest, Outputs};

/// What a stream output carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// Summaries: the summary stream.
    Summaries,
    /// Dead letters: the dead-letter stream.
    DeadLetters,
}

impl Carries {
    /// Its output's name (logs, `/readyz`).
    pub fn name(self) -> &'static str {
        match self {
            Carries::Summaries => "summary_stream",
            Carries::DeadLetters => "dead_letter_stream",
        }
    }

    fn interest(self) -> Interest {
        Interest {
            summaries: self == Carries::Summaries,
            dead_letters: self == Carries::DeadLetters,
            ..Interest::default()
        }
    }
}

/// Where a stream output writes.
pub enum Settings<'a> {
    /// A Kafka topic.
    Kafka {
        /// Bootstrap servers, and the config key that named them.
        brokers: (&'a str, &'a str),
        /// librdkafka pass-through options (`[source.kafka_options]`).
        options: &'a toml::Table,
        /// The topic (created by the broker when missing).
        topic: &'a str,
    },
    /// A Kinesis stream, which must exist.
    Kinesis {
        /// The stream, and the config key that named it.
        stream: (&'a str, &'a str),
        /// When the stream is missing and this is set, the output is skipped with a warning
        /// saying so instead of stopping the start (a default the user never asked for).
        optional: bool,
    },
}

/// Registers a stream output carrying `carries` as `settings` say.
///
/// # Errors
/// A Kafka producer cannot be made (a setting librdkafka refuses is a config error), or a
/// required Kinesis stream is missing.
pub async fn build(
    carries: Carries,
    settings: Settings<'_>,
    aws: &Aws,
    outputs: &mut Outputs,
) -> anyhow::Result<()> {
    match settings {
        Settings::Kafka {
            brokers: (brokers, key),
            options,
            topic,
        } => {
            // Ready while deliveries are acknowledged: a delivery under way for 5 s, or one that
            // failed, says otherwise. The client's connection statistics are no measure for a
            // producer: they come late (one from before the first delivery can be read after
            // it), and a producer with nothing to send may lose its idle connections.
            let observed = Observed::default();
            let health = Health::new(carries.name());
            let topic = kafka::KafkaTopic::new(brokers, options, topic, observed).map_err(|e| {
                crate::clients::kafka::start_error(
                    e,
                    &format!(
                        "cannot create the Kafka producer of the {} ({key})",
                        carries.name()
                    ),
                )
            })?;
            let output = match carries {
                Carries::Summaries => kafka::KafkaStream::new(Some(topic), None, health.clone()),
                Carries::DeadLetters => kafka::KafkaStream::new(None, Some(topic), health.clone()),
            };
            let rx = outputs.add(carries.name(), carries.interest());
            outputs.run(carries.name(), tokio::spawn(output.run(rx)), health);
        }
        Settings::Kinesis {
            stream: (stream, key),
            optional,
        } => {
            let client = aws_sdk_kinesis::Client::new(aws.config().await);
            if !stream_exists(&client, key, stream).await {
                if optional {
                    tracing::warn!(stream, "the default dead-letter stream does not exist: dead letters are kept in the store only (create the stream, or set source.dead_letters = \"\" to silence this)");
                    return Ok(());
                }
                anyhow::bail!("{key}: {}", ShardsError::Missing(stream.to_owned()));
            }
            let health = Health::new(carries.name());
            let output = match carries {
                Carries::Summaries => {
                    kinesis::KinesisStream::new(client, Some(stream), None, health.clone())
                }
                Carries::DeadLetters => {
                    kinesis::KinesisStream::new(client, None, Some(stream), health.clone())
                }
            };
            let rx = outputs.add(carries.name(), carries.interest());
            outputs.run(carries.name(), tokio::spawn(output.run(rx)), health);
        }
    }
    Ok(())
}

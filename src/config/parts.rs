//! The settings each part of the service is built from, read from the sections that configure
//! it: config knows the parts, the parts never know config.

use std::net::SocketAddr;

use super::{ArchiveKind, Config, SourceKind, StoreKind, StreamKind, DEFAULT_DEAD_LETTERS};
use crate::output::{archive, notify, store, stream};
use crate::source;

impl Config {
    /// `[store]` as the store output's settings.
    pub fn store_settings(&self) -> store::Settings {
        let s = &self.store;
        match s.kind {
            StoreKind::DynamoDb => store::Settings::DynamoDb {
                table: s.table.clone(),
                dead_letter_table: s.dead_letter_table.clone(),
                create_tables: s.create_tables,
            },
            StoreKind::Embedded => store::Settings::Embedded {
                path: s.path.clone(),
                dead_letter_retention: s.dead_letter_retention,
            },
        }
    }

    /// `[summary_stream]`, when it names one: Kafka or Kinesis, whatever the source.
    pub fn summary_stream_settings(&self) -> Option<stream::Settings<'_>> {
        let s = &self.summary_stream;
        match s.kind {
            StreamKind::Kafka => Some(stream::Settings::Kafka {
                brokers: (self.summary_brokers(), "summary_stream.brokers"),
                options: &self.source.kafka_options,
                topic: &s.topic,
            }),
            StreamKind::Kinesis => Some(stream::Settings::Kinesis {
                stream: (&s.stream, "summary_stream.stream"),
                optional: false,
            }),
            StreamKind::None => None,
        }
    }

    /// The dead-letter stream of a stream source, on the source's own transport, when
    /// `source.dead_letters` names one. A Kafka topic is created by the broker when missing; a
    /// missing Kinesis stream stops the start when it was configured, and is skipped with a warning
    /// when it is only the default (the user never asked for one, and dead letters are kept in the
    /// store anyway).
    pub fn dead_letter_stream_settings(&self) -> Option<stream::Settings<'_>> {
        let name = self.source.dead_letters.as_str();
        if name.is_empty() {
            return None;
        }
        match self.source.kind {
            SourceKind::Kafka => Some(stream::Settings::Kafka {
                brokers: (&self.source.brokers, "source.brokers"),
                options: &self.source.kafka_options,
                topic: name,
            }),
            SourceKind::Kinesis => Some(stream::Settings::Kinesis {
                stream: (name, "source.dead_letters"),
                optional: name == DEFAULT_DEAD_LETTERS,
            }),
            SourceKind::Http | SourceKind::File => None,
        }
    }

    /// `[alerts]` as the alert output's settings. The links in mails start at
    /// `alerts.smtp.public_url`, else at this service's own address (its port when `web.listen`
    /// asks for any).
    pub fn notify_settings(&self, addr: SocketAddr, tls: bool) -> notify::Settings {
        let a = &self.alerts;
        let public_url = if a.smtp.public_url.is_empty() {
            format!("{}://{addr}", if tls { "https" } else { "http" })
        } else {
            a.smtp.public_url.clone()
        };
        notify::Settings {
            sns_topic: a.sns.topic_arn.clone(),
            smtp: (!a.smtp.server.is_empty()).then(|| notify::SmtpSettings {
                server: a.smtp.server.clone(),
                from: a.smtp.from.clone(),
                public_url,
                max_subscriptions: usize::try_from(a.max_subscriptions).unwrap_or(usize::MAX),
                subscription_table: self.store.subscription_table.clone(),
                create_tables: self.store.create_tables,
            }),
            group_interval: std::time::Duration::from_secs(a.group_interval_secs),
            notification_table: self.store.notification_table.clone(),
            create_tables: self.store.create_tables,
        }
    }

    /// Where `[archive]` writes, unless `archive.kind` is `none`.
    pub fn archive_place(&self) -> Option<archive::Place> {
        let a = &self.archive;
        match a.kind {
            ArchiveKind::None => None,
            ArchiveKind::Dir => Some(archive::Place::Dir(a.path.clone().into())),
            ArchiveKind::S3 => Some(archive::Place::S3 {
                bucket: a.bucket.clone(),
                prefix: a.prefix.clone(),
            }),
        }
    }

    /// `[archive]` as the archive output's settings.
    pub fn archive_settings(&self) -> archive::output::Settings {
        let a = &self.archive;
        archive::output::Settings {
            layout: a.layout,
            format: a.format,
            buffer_bytes: usize::try_from(a.buffer_bytes).unwrap_or(usize::MAX),
            buffer_age: std::time::Duration::from_secs(a.buffer_secs),
        }
    }

    /// `[source]` as the sources' settings.
    pub fn source_settings(&self) -> source::Settings {
        let s = &self.source;
        match s.kind {
            SourceKind::Http => source::Settings::Http,
            SourceKind::File => source::Settings::File(s.path.clone().into()),
            SourceKind::Kafka => source::Settings::Kafka(source::kafka::KafkaSourceConfig {
                brokers: s.brokers.clone(),
                topic: s.topic.clone(),
                group: s.group.clone(),
                options: s.kafka_options.clone(),
                checkpoint_topic: s.checkpoint_topic.clone(),
            }),
            SourceKind::Kinesis => {
                source::Settings::Kinesis(source::kinesis::KinesisSourceConfig {
                    stream: s.stream.clone(),
                    lease_table: s.lease_table.clone(),
                    create_tables: self.store.create_tables,
                })
            }
        }
    }
}

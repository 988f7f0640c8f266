//! The sections of the configuration file, one struct each, with their defaults (the values
//! `stampede print-config` shows).

use std::path::PathBuf;

use serde::Deserialize;

use crate::alert::spec::RuleSpec;
use crate::output::archive::{ArchiveFormat, ArchiveLayout};
use crate::record::SourceKind;

/// Where the raw archive goes (`archive.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// No archive.
    #[default]
    None,
    /// A directory (`archive.path`).
    Dir,
    /// An S3 bucket (`archive.bucket`, `archive.prefix`).
    S3,
}

/// `[archive]` of CONTRACT §8.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// none, dir or s3.
    pub kind: ArchiveKind,
    /// dir: the directory.
    pub path: String,
    /// s3: the bucket.
    pub bucket: String,
    /// s3: the key prefix.
    pub prefix: String,
    /// firehose or hive.
    pub layout: ArchiveLayout,
    /// ndjson or parquet.
    pub format: ArchiveFormat,
    /// An object is written once it holds this many bytes...
    pub buffer_bytes: u64,
    /// ... or its first record has waited this long.
    pub buffer_secs: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            kind: ArchiveKind::None,
            path: "./stampede-archive".into(),
            bucket: String::new(),
            prefix: String::new(),
            layout: ArchiveLayout::Firehose,
            format: ArchiveFormat::Ndjson,
            buffer_bytes: 5 << 20,
            buffer_secs: 60,
        }
    }
}

/// The `[alerts]` section: the rules evaluated per record.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Evaluate rules at all.
    pub enabled: bool,
    /// How far past the threshold a value must come back before an alert resolves, unless a
    /// rule says `clear`.
    #[serde(deserialize_with = "crate::alert::spec::number")]
    pub hysteresis: f64,
    /// The rules; empty keeps the two defaults (`low-health`, `low-magic`).
    pub rules: Vec<RuleSpec>,
    /// At most one round of notifications (one e-mail per subscriber) this often.
    pub group_interval_secs: u64,
    /// Built-in e-mail subscriptions at most.
    pub max_subscriptions: u64,
    /// `[alerts.sns]`: the SNS channel.
    pub sns: AlertsSnsConfig,
    /// `[alerts.smtp]`: the built-in e-mail channel.
    pub smtp: AlertsSmtpConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            hysteresis: 5.0,
            rules: Vec::new(),
            group_interval_secs: 60,
            max_subscriptions: 1_000,
            sns: AlertsSnsConfig::default(),
            smtp: AlertsSmtpConfig::default(),
        }
    }
}

/// `[alerts.sns]` of CONTRACT §7: the SNS channel.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSnsConfig {
    /// The topic every change is published to.
    pub topic_arn: String,
}

/// `[alerts.smtp]` of CONTRACT §7 (see [`AlertsSnsConfig`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSmtpConfig {
    /// `smtp://HOST:PORT` or `smtps://HOST:PORT`.
    pub server: String,
    /// The sender.
    pub from: String,
    /// The base of the links in mails.
    pub public_url: String,
}

impl Default for AlertsSmtpConfig {
    fn default() -> Self {
        AlertsSmtpConfig {
            server: String::new(),
            from: "Stampede <alerts@localhost>".into(),
            public_url: String::new(),
        }
    }
}

/// Where summaries and dead letters are kept (`store.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded database under `store.path`.
    Embedded,
    /// DynamoDB tables; nothing local.
    #[serde(rename = "dynamodb")]
    DynamoDb,
}

/// Where summaries are published (`summary_stream.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// Nowhere.
    None,
    /// A Kafka topic.
    Kafka,
    /// A Kinesis stream.
    Kinesis,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Where telemetry comes from.
    pub kind: SourceKind,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Kafka topic.
    pub topic: String,
    /// Kafka consumer group.
    pub group: String,
    /// Passed through to librdkafka.
    pub kafka_options: toml::Table,
    /// Kinesis stream.
    pub stream: String,
    /// File source path.
    pub path: String,
    /// Kafka topic (or Kinesis stream) for records a stream source rejects; empty for none.
    pub dead_letters: String,
    /// Kafka topic the window engines' checkpoints are kept in.
    pub checkpoint_topic: String,
    /// Kinesis: the DynamoDB table of shard leases and checkpoints.
    pub lease_table: String,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Http,
            brokers: "127.0.0.1:9092".into(),
            topic: "wildrydes".into(),
            group: "stampede".into(),
            kafka_options: toml::Table::new(),
            stream: "wildrydes".into(),
            path: String::new(),
            dead_letters: DEFAULT_DEAD_LETTERS.into(),
            checkpoint_topic: "stampede-checkpoints".into(),
            lease_table: "stampede-leases".into(),
        }
    }
}

/// The dead-letter stream a stream source uses unless told otherwise (CONTRACT §3). A Kinesis
/// stream of this name that does not exist is skipped with a warning; any other is required.
pub const DEFAULT_DEAD_LETTERS: &str = "wildrydes-dlq";

/// `[window]`, in seconds as the file spells it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WindowSection {
    /// `event` or `ingest`.
    pub time: String,
    /// Window length.
    pub size_secs: u64,
    /// Watermark lag behind the newest event time.
    pub out_of_orderness_secs: u64,
    /// How long a closed window still takes late records.
    pub allowed_lateness_secs: u64,
    /// Wall time without records before the watermark follows the clock.
    pub idle_timeout_secs: u64,
    /// Live sources reject a record whose `StatusTime` is further ahead of the wall clock.
    pub max_future_secs: u64,
}

impl Default for WindowSection {
    fn default() -> Self {
        WindowSection {
            time: "event".into(),
            size_secs: 60,
            out_of_orderness_secs: 5,
            allowed_lateness_secs: 60,
            idle_timeout_secs: 10,
            max_future_secs: 300,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Embedded or DynamoDB.
    pub kind: StoreKind,
    /// Directory of the embedded store.
    pub path: PathBuf,
    /// DynamoDB summary table.
    pub table: String,
    /// DynamoDB: create missing tables.
    pub create_tables: bool,
    /// DynamoDB table of dead letters (a DynamoDB store keeps nothing local).
    pub dead_letter_table: String,
    /// DynamoDB table of the built-in alert e-mail subscriptions.
    pub subscription_table: String,
    /// DynamoDB: the alert notification log (partition key `Name` S, sort key `Change` S).
    pub notification_table: String,
    /// How many dead letters the embedded store keeps (the oldest go first).
    pub dead_letter_retention: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Embedded,
            path: PathBuf::from("./stampede-data"),
            table: "UnicornSensorData".into(),
            create_tables: false,
            dead_letter_table: "stampede-dead-letters".into(),
            subscription_table: "stampede-subscriptions".into(),
            notification_table: "stampede-notifications".into(),
            dead_letter_retention: 100_000,
        }
    }
}

/// `[summary_stream]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SummaryStreamConfig {
    /// None, Kafka or Kinesis.
    pub kind: StreamKind,
    /// Kafka topic.
    pub topic: String,
    /// Kafka bootstrap servers; empty: those of `[source]`.
    pub brokers: String,
    /// Kinesis stream.
    pub stream: String,
}

impl Default for SummaryStreamConfig {
    fn default() -> Self {
        SummaryStreamConfig {
            kind: StreamKind::None,
            topic: "wildrydes-summary".into(),
            brokers: String::new(),
            stream: "wildrydes-summary".into(),
        }
    }
}

/// `[web]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address to listen on.
    pub listen: String,
    /// Bearer token for `/ingest` and the admin endpoints; empty for none.
    pub token: String,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// While an output that keeps what is received (store, archive, streams, views) cannot
    /// write: records received since, at most, before sources take no more (ingest 503).
    pub max_unwritten_records: u64,
    /// Raster tile URL template for the dashboard map (`{z}/{x}/{y}`), by default
    /// OpenStreetMap's standard tiles; empty draws no tiles. Where tiles do not load (offline),
    /// the map shows the embedded Natural Earth land outline and a grid.
    pub tile_url: String,
    /// The credit the tiles' licence asks for, shown on the map (plain text).
    pub tile_attribution: String,
    /// Where the credit links to; empty for no link.
    pub tile_attribution_url: String,
    /// Frames a WebSocket client may fall behind before it is resynchronised with a snapshot.
    pub ws_queue_frames: u64,
    /// Bytes of frames a WebSocket client may fall behind before it is resynchronised.
    pub ws_queue_bytes: u64,
    /// WebSocket clients at once; further upgrades get 503.
    pub max_ws_clients: u64,
    /// A unicorn not heard from for this long leaves the live fleet (a `silent` frame).
    pub silent_after_secs: u64,
    /// Bearer token for reads (dashboard data, `/ws`, `/api/*`); empty for open reads.
    pub read_token: String,
    /// Other origins (`scheme://host[:port]`) whose pages may POST and open `/ws`.
    pub allowed_origins: Vec<String>,
    /// Host names served besides loopback ones while bound to loopback (DNS-rebinding guard).
    pub allowed_hosts: Vec<String>,
    /// PEM certificate chain: with `tls_key`, serve HTTPS and WSS.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
}

/// OpenStreetMap's standard raster tiles: the map's default.
pub const OSM_TILES: &str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8080".into(),
            token: String::new(),
            max_body_bytes: 8 * 1024 * 1024,
            max_unwritten_records: 1_000_000,
            tile_url: OSM_TILES.into(),
            tile_attribution: "© OpenStreetMap contributors".into(),
            tile_attribution_url: "https://www.openstreetmap.org/copyright".into(),
            ws_queue_frames: 16_384,
            ws_queue_bytes: 8 << 20,
            max_ws_clients: 10_000,
            silent_after_secs: 30,
            read_token: String::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// `[views]` of CONTRACT §9.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ViewsConfig {
    /// A directory of CREATE VIEW files; "" for none.
    pub dir: String,
}

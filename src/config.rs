//! The configuration of CONTRACT §6: a TOML file, every key overridable by an environment
//! variable `STAMPEDE_<SECTION>_<KEY>`, defaults printed (with a comment on every key) by
//! `stampede print-config`.
//!
//! Config → validate → build: this module only composes the sections and checks them; each
//! component takes its own section. Bad config fails at start with a message naming the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::alert::{Direction, Field, Rule};
use crate::output::archive::{ArchiveFormat, ArchiveLayout};
pub use crate::record::SourceKind;
use crate::time::Millis;
use crate::window::{TimeMode, WindowConfig};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where telemetry comes from.
    pub source: SourceConfig,
    /// Windowing.
    pub window: WindowSection,
    /// Where summaries and dead letters are kept.
    pub store: StoreConfig,
    /// Optional summary stream.
    pub summary_stream: SummaryStreamConfig,
    /// The HTTP and WebSocket server.
    pub web: WebConfig,
    /// Alert rules (CONTRACT §7).
    pub alerts: AlertsConfig,
    /// The raw archive (CONTRACT §8).
    pub archive: ArchiveConfig,
}

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
    #[serde(deserialize_with = "number")]
    pub hysteresis: f64,
    /// The rules; empty keeps the two defaults (`low-health`, `low-magic`).
    pub rules: Vec<RuleConfig>,
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

/// One `[[alerts.rules]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name (in alert ids, mails and filters).
    pub name: String,
    /// `HealthPoints`, `MagicPoints` or `Distance`.
    pub field: String,
    /// Fires below this (give `below` or `above`).
    #[serde(default, deserialize_with = "optional_number")]
    pub below: Option<f64>,
    /// Fires above this.
    #[serde(default, deserialize_with = "optional_number")]
    pub above: Option<f64>,
    /// Resolves at this level; default the threshold ± `alerts.hysteresis`.
    #[serde(default, deserialize_with = "optional_number")]
    pub clear: Option<f64>,
    /// Event time the condition must hold before the rule fires.
    #[serde(default)]
    pub for_secs: u64,
}

/// A TOML number, whole or not.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Whole(i64),
    Float(f64),
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(match Number::deserialize(d)? {
        Number::Whole(n) => n as f64,
        Number::Float(f) => f,
    })
}

fn optional_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    number(d).map(Some)
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

/// The defaults as TOML with a comment on every key: `stampede print-config`.
pub const DEFAULT_TOML: &str = r#"# Stampede configuration. Every key can also be set with an environment variable
# STAMPEDE_<SECTION>_<KEY>, e.g. STAMPEDE_WEB_LISTEN=127.0.0.1:9000.

[source]                        # where telemetry comes from
kind = "http"                   # http (POST /ingest) | kafka | kinesis | file
brokers = "127.0.0.1:9092"      # kafka: bootstrap servers
topic = "wildrydes"             # kafka: telemetry topic
group = "stampede"              # kafka: consumer group
stream = "wildrydes"            # kinesis: telemetry stream
lease_table = "stampede-leases" # kinesis: DynamoDB table of shard leases and checkpoints
path = ""                       # file: NDJSON file to read
dead_letters = "wildrydes-dlq"  # kafka topic / kinesis stream for rejected records (also kept in the store); "" for none
checkpoint_topic = "stampede-checkpoints"  # kafka: where window checkpoints are kept (created, compacted, if missing)
# [source.kafka_options]        # kafka: any librdkafka property, passed through
# "session.timeout.ms" = "6000"

[window]                        # per-minute summaries on event time
time = "event"                  # event (StatusTime) | ingest (arrival time, the workshop's way)
size_secs = 60                  # window length
out_of_orderness_secs = 5       # the watermark trails the newest event time by this much
allowed_lateness_secs = 60      # a closed window still takes (and restates for) records this late
idle_timeout_secs = 10          # without records this long, the watermark follows the wall clock
max_future_secs = 300           # live sources reject records further ahead of the wall clock (too_early)

[store]                         # where summaries, dead letters and alerts are kept
kind = "embedded"               # embedded | dynamodb
path = "./stampede-data"        # embedded: directory of the database
table = "UnicornSensorData"     # dynamodb: summary table
create_tables = false           # create missing DynamoDB tables: summary, dead-letter and kinesis lease tables
dead_letter_table = "stampede-dead-letters"  # dynamodb: rejected records (partition key Day S, sort key Id S)
subscription_table = "stampede-subscriptions"  # dynamodb: alert e-mail subscriptions (partition key List S, sort key Email S)
dead_letter_retention = 100000  # embedded: dead letters kept; the oldest go first

[summary_stream]                # optional: publish summaries to a stream
kind = "none"                   # none | kafka | kinesis
topic = "wildrydes-summary"     # kafka: summary topic, key Name
brokers = ""                    # kafka: bootstrap servers; "" uses those of [source]
stream = "wildrydes-summary"    # kinesis

[web]                           # dashboard, API, ingest and WebSocket
listen = "127.0.0.1:8080"       # address:port; 127.0.0.1 keeps it on this machine
token = ""                      # when set, /ingest and admin endpoints need "Authorization: Bearer <token>"
max_body_bytes = 8388608        # largest request body (413 above)
tile_url = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"  # raster tiles for the map; "" for none (offline: land outline and grid)
tile_attribution = "© OpenStreetMap contributors"           # the credit the tiles' licence asks for, shown on the map
tile_attribution_url = "https://www.openstreetmap.org/copyright"  # where the credit links to; "" for no link
ws_queue_frames = 16384         # frames a browser may fall behind before it gets a fresh snapshot instead
ws_queue_bytes = 8388608        # ... or bytes of frames; each minute sends one summary frame per unicorn
max_ws_clients = 10000          # WebSocket clients at once; further upgrades get 503
silent_after_secs = 30          # a unicorn not heard from this long leaves the live map
read_token = ""                 # when set, reads (dashboard data, /ws, /api/*) need it too
allowed_origins = []            # other origins whose browsers may POST and open /ws, e.g. ["https://ops.example"]
allowed_hosts = []              # Host names accepted besides loopback ones (DNS-rebinding guard)
tls_cert = ""                   # PEM files: serve HTTPS/WSS when both are set
tls_key = ""                    # its PEM private key

[alerts]                        # alert rules, evaluated per record on event time
enabled = true                  # false: no rule is evaluated
hysteresis = 5.0                # an alert resolves this far past its threshold (unless a rule says clear)
# Without [[alerts.rules]] two rules apply: low-health (HealthPoints below 100) and low-magic
# (MagicPoints below 100). Rules given here replace them:
# [[alerts.rules]]
# name = "low-health"           # letters, digits, - and _
# field = "HealthPoints"        # HealthPoints | MagicPoints | Distance
# below = 100                   # or above = N
# clear = 105                   # resolves at or above this; default below + hysteresis
# for_secs = 0                  # the condition must hold this long (event time) to fire
group_interval_secs = 60        # changes that pile up go out together: at most one mail (or SNS round) this often, the first at once
max_subscriptions = 1000        # built-in e-mail subscriptions at most

[alerts.sns]                    # publish every change to an SNS topic (AWS_REGION, AWS_ENDPOINT_URL_SNS)
topic_arn = ""                  # e.g. arn:aws:sns:us-east-1:123456789012:wildrydes-alerts

[alerts.smtp]                   # built-in e-mail subscriptions (stampede subscribe, /api/subscriptions)
server = ""                     # smtp://HOST:PORT (plain) or smtps://HOST:PORT; STAMPEDE_SMTP_USER / STAMPEDE_SMTP_PASSWORD
from = "Stampede <alerts@localhost>"  # the sender
public_url = ""                 # base of the links in mails; default http://<web.listen>

[archive]                       # every accepted record, kept for SQL (stampede query) and other tools
kind = "none"                   # none | dir | s3 (AWS_REGION, AWS_ENDPOINT_URL_S3)
path = "./stampede-archive"     # dir: the directory
bucket = ""                     # s3: the bucket
prefix = ""                     # s3: key prefix, a folder ending in /, e.g. "wildrydes/"
layout = "firehose"             # firehose (YYYY/MM/DD/HH/wildrydes-1-...) | hive (dt=YYYY-MM-DD/hour=HH/...)
format = "ndjson"               # ndjson (the records' bytes as received) | parquet (typed columns, zstd)
buffer_bytes = 5242880          # an object is written at this size...
buffer_secs = 60                # ... or when its oldest record has waited this long
"#;

/// A configuration that cannot work: exit 2 with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML or a key in it is wrong.
    #[error("config{origin}: {message}")]
    Invalid {
        /// " file F" or "".
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment override is wrong.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A setting the part it configures refused as it started.
    #[error(transparent)]
    Setting(#[from] crate::setting::BadSetting),
    /// A value is out of range or unsupported.
    #[error("config key {key}: {message}")]
    Value {
        /// `section.key`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn check_topic(key: &str, topic: &str) -> Result<(), ConfigError> {
    crate::clients::kafka::check_topic(topic).map_err(|m| value_error(key, m))
}

fn value_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key: key.into(),
        message: message.into(),
    }
}

/// The longest `web.silent_after_secs`: state for a unicorn is kept at most this long after it
/// falls silent.
const WEEK_SECS: u64 = 7 * 86_400;

impl Config {
    /// Reads `path` (or the defaults when `None`), applies `STAMPEDE_*` overrides from `env`,
    /// and validates.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, variable or key at fault.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Invalid {
                            origin: format!(" file {}", p.display()),
                            message: e.to_string(),
                        })?;
                (table, format!(" file {}", p.display()))
            }
            None => (toml::Table::new(), String::new()),
        };
        apply_env(&mut table, env)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin,
                    // "unknown variant `x`, expected …" with the key it was found at.
                    message: e.to_string().trim().replace('\n', " "),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values the types cannot.
    ///
    /// # Errors
    /// The first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.window_config()?;
        self.listen_addr()?;
        self.alert_rules()?;
        if self.source.kind == SourceKind::Kinesis {
            crate::clients::kinesis::check_stream(&self.source.stream)
                .map_err(|m| value_error("source.stream", m))?;
            if self.source.lease_table.is_empty() {
                return Err(value_error(
                    "source.lease_table",
                    "the Kinesis source needs a lease table",
                ));
            }
        }
        if self.source.kind == SourceKind::Kafka {
            self.check_kafka_source()?;
        }
        if self.source.kind == SourceKind::File && self.source.path.is_empty() {
            return Err(value_error("source.path", "the file source needs a path"));
        }
        if self.store.kind == StoreKind::DynamoDb && self.store.table.is_empty() {
            return Err(value_error(
                "store.table",
                "the DynamoDB store needs a table name",
            ));
        }
        if self.store.kind == StoreKind::DynamoDb && self.store.dead_letter_table.is_empty() {
            return Err(value_error(
                "store.dead_letter_table",
                "the DynamoDB store needs a table for dead letters",
            ));
        }
        if self.store.kind == StoreKind::DynamoDb
            && !self.alerts.smtp.server.is_empty()
            && self.store.subscription_table.is_empty()
        {
            return Err(value_error(
                "store.subscription_table",
                "alert e-mail subscriptions in a DynamoDB store need a table",
            ));
        }
        self.check_mail_links()?;
        self.check_archive()?;
        if self.summary_stream.kind == StreamKind::Kinesis {
            crate::clients::kinesis::check_stream(&self.summary_stream.stream)
                .map_err(|m| value_error("summary_stream.stream", m))?;
        }
        if self.summary_stream.kind == StreamKind::Kafka {
            check_topic("summary_stream.topic", &self.summary_stream.topic)?;
            if self.summary_brokers().trim().is_empty() {
                return Err(value_error(
                    "summary_stream.brokers",
                    "the Kafka summary stream needs brokers (here or in [source])",
                ));
            }
        }
        if self.web.max_body_bytes < 1024 || self.web.max_body_bytes > 1 << 30 {
            return Err(value_error(
                "web.max_body_bytes",
                "must be between 1024 and 1073741824",
            ));
        }
        if !(1..=65_536).contains(&self.web.ws_queue_frames) {
            return Err(value_error(
                "web.ws_queue_frames",
                "must be between 1 and 65536",
            ));
        }
        if !((64 << 10)..=(1 << 30)).contains(&self.web.ws_queue_bytes) {
            return Err(value_error(
                "web.ws_queue_bytes",
                "must be between 65536 (64 KiB) and 1073741824 (1 GiB)",
            ));
        }
        if !(1..=WEEK_SECS).contains(&self.web.silent_after_secs) {
            return Err(value_error(
                "web.silent_after_secs",
                "must be between 1 and 604800 (a week)",
            ));
        }
        if !(1..=1_000_000).contains(&self.web.max_ws_clients) {
            return Err(value_error(
                "web.max_ws_clients",
                "must be between 1 and 1000000",
            ));
        }
        for origin in &self.web.allowed_origins {
            let ok = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
            });
            if !ok {
                return Err(value_error(
                    "web.allowed_origins",
                    format!("{origin:?} is not an origin: write scheme://host[:port], e.g. \"https://ops.example\", with no path"),
                ));
            }
        }
        if !self.web.tile_url.is_empty() {
            let web_url = |s: &str| s.starts_with("https://") || s.starts_with("http://");
            if !web_url(&self.web.tile_url)
                || !["{z}", "{x}", "{y}"]
                    .iter()
                    .all(|p| self.web.tile_url.contains(p))
            {
                return Err(value_error(
                    "web.tile_url",
                    format!("{:?} is not a tile URL template: write http(s)://host/…{{z}}/{{x}}/{{y}}…, e.g. {OSM_TILES:?}, or \"\" for no tiles", self.web.tile_url),
                ));
            }
            if self.web.tile_attribution.trim().is_empty() {
                return Err(value_error(
                    "web.tile_attribution",
                    "tiles need the credit their licence asks for, e.g. \"© OpenStreetMap contributors\"",
                ));
            }
            if !self.web.tile_attribution_url.is_empty() && !web_url(&self.web.tile_attribution_url)
            {
                return Err(value_error(
                    "web.tile_attribution_url",
                    "must be an http(s):// URL, or \"\" for no link",
                ));
            }
        }
        if self.web.tls_cert.is_empty() != self.web.tls_key.is_empty() {
            return Err(value_error(
                if self.web.tls_cert.is_empty() {
                    "web.tls_cert"
                } else {
                    "web.tls_key"
                },
                "HTTPS needs both web.tls_cert and web.tls_key (PEM files)",
            ));
        }
        if self.store.dead_letter_retention == 0 {
            return Err(value_error(
                "store.dead_letter_retention",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The Kafka brokers of the summary stream: its own, else those of `[source]`.
    pub fn summary_brokers(&self) -> &str {
        if self.summary_stream.brokers.is_empty() {
            &self.source.brokers
        } else {
            &self.summary_stream.brokers
        }
    }

    fn check_kafka_source(&self) -> Result<(), ConfigError> {
        if self.source.brokers.trim().is_empty() {
            return Err(value_error(
                "source.brokers",
                "the Kafka source needs bootstrap servers, e.g. 127.0.0.1:9092",
            ));
        }
        check_topic("source.topic", &self.source.topic)?;
        if self.source.group.is_empty() {
            return Err(value_error(
                "source.group",
                "the Kafka source needs a consumer group",
            ));
        }
        if !self.source.dead_letters.is_empty() {
            check_topic("source.dead_letters", &self.source.dead_letters)?;
        }
        check_topic("source.checkpoint_topic", &self.source.checkpoint_topic)?;
        crate::clients::kafka::check_options(&self.source.kafka_options)
            .map_err(|(key, message)| value_error(&key, message))
    }

    /// The engine's window settings.
    ///
    /// # Errors
    /// A window key out of range.
    pub fn window_config(&self) -> Result<WindowConfig, ConfigError> {
        let w = &self.window;
        let time = match w.time.as_str() {
            "event" => TimeMode::Event,
            "ingest" => TimeMode::Ingest,
            other => {
                return Err(value_error(
                    "window.time",
                    format!("{other:?}: use event or ingest"),
                ))
            }
        };
        let ms = |key: &str, secs: u64| -> Result<Millis, ConfigError> {
            Millis::try_from(secs)
                .ok()
                .and_then(|s| s.checked_mul(1_000))
                .ok_or_else(|| value_error(key, "too large"))
        };
        let cfg = WindowConfig {
            time,
            size_ms: ms("window.size_secs", w.size_secs)?,
            out_of_orderness_ms: ms("window.out_of_orderness_secs", w.out_of_orderness_secs)?,
            allowed_lateness_ms: ms("window.allowed_lateness_secs", w.allowed_lateness_secs)?,
            idle_timeout_ms: Some(ms("window.idle_timeout_secs", w.idle_timeout_secs)?),
            max_future_ms: Some(ms("window.max_future_secs", w.max_future_secs)?),
            forget_after_ms: Some(ms("web.silent_after_secs", self.web.silent_after_secs)?),
        };
        cfg.validate().map_err(|e| {
            value_error(&format!("window.{}", e.key), format!("must be {}", e.rule))
        })?;
        Ok(cfg)
    }

    /// The alert rules: those of `[[alerts.rules]]`, else the two defaults; none when
    /// `alerts.enabled` is false.
    ///
    /// # Errors
    /// The first rule that cannot work, named by its key (`alerts.rules[1].below`, say).
    pub fn alert_rules(&self) -> Result<Vec<Rule>, ConfigError> {
        let a = &self.alerts;
        if !a.hysteresis.is_finite() || a.hysteresis < 0.0 {
            return Err(value_error(
                "alerts.hysteresis",
                "must be a number, 0 or more",
            ));
        }
        if a.group_interval_secs == 0 {
            return Err(value_error(
                "alerts.group_interval_secs",
                "must be at least 1",
            ));
        }
        if a.max_subscriptions == 0 {
            return Err(value_error(
                "alerts.max_subscriptions",
                "must be at least 1",
            ));
        }
        if !a.enabled {
            return Ok(Vec::new());
        }
        if a.rules.is_empty() {
            return Ok(Rule::defaults(a.hysteresis));
        }
        if a.rules.len() > crate::alert::MAX_RULES {
            return Err(value_error(
                "alerts.rules",
                format!("at most {} rules", crate::alert::MAX_RULES),
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(a.rules.len());
        for (i, r) in a.rules.iter().enumerate() {
            let key = |k: &str| format!("alerts.rules[{i}].{k}");
            let name_ok = !r.name.is_empty()
                && r.name.len() <= 64
                && r.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(value_error(
                    &key("name"),
                    format!("{:?}: 1 to 64 letters, digits, '-' or '_'", r.name),
                ));
            }
            if rules.iter().any(|other| *other.name == *r.name) {
                return Err(value_error(
                    &key("name"),
                    format!("{:?} is used twice", r.name),
                ));
            }
            let field = Field::parse(&r.field).ok_or_else(|| {
                value_error(
                    &key("field"),
                    format!("{:?}: use HealthPoints, MagicPoints or Distance", r.field),
                )
            })?;
            let (direction, threshold) = match (r.below, r.above) {
                (Some(t), None) => (Direction::Below, t),
                (None, Some(t)) => (Direction::Above, t),
                _ => {
                    return Err(value_error(
                        &key("below"),
                        "give exactly one of below = N or above = N",
                    ))
                }
            };
            let clear = r.clear.unwrap_or(match direction {
                Direction::Below => threshold + a.hysteresis,
                Direction::Above => threshold - a.hysteresis,
            });
            let clear_ok = match direction {
                Direction::Below => clear >= threshold,
                Direction::Above => clear <= threshold,
            };
            if !threshold.is_finite() || !clear.is_finite() || !clear_ok {
                return Err(value_error(
                    &key("clear"),
                    format!(
                        "{clear} must be on the healthy side of the threshold {threshold} ({} it)",
                        if direction == Direction::Below {
                            "at or above"
                        } else {
                            "at or below"
                        }
                    ),
                ));
            }
            let for_ms = Millis::try_from(r.for_secs)
                .ok()
                .filter(|s| *s <= 86_400)
                .map(|s| s * 1_000)
                .ok_or_else(|| value_error(&key("for_secs"), "from 0 to 86400 (a day)"))?;
            rules.push(Rule {
                name: r.name.as_str().into(),
                field,
                direction,
                threshold,
                clear,
                for_ms,
            });
        }
        Ok(rules)
    }

    /// The links in alert mails must reach this service: `alerts.smtp.public_url` is an
    /// `http(s)://` URL, and is needed when `web.listen` names no host a mail reader could
    /// reach (`0.0.0.0`, `[::]`).
    fn check_archive(&self) -> Result<(), ConfigError> {
        let archive = &self.archive;
        match archive.kind {
            ArchiveKind::None => return Ok(()),
            ArchiveKind::Dir if archive.path.trim().is_empty() => {
                return Err(value_error(
                    "archive.path",
                    "the directory archive needs a path",
                ))
            }
            ArchiveKind::S3 => {
                crate::output::archive::check_bucket(&archive.bucket)
                    .map_err(|m| value_error("archive.bucket", m))?;
                if archive.prefix.starts_with('/')
                    || !(archive.prefix.is_empty() || archive.prefix.ends_with('/'))
                {
                    return Err(value_error(
                        "archive.prefix",
                        format!(
                            "{:?} is not a key prefix: empty, or a folder ending in / that does not start with one, e.g. \"wildrydes/\"",
                            archive.prefix
                        ),
                    ));
                }
            }
            _ => {}
        }
        if !((64 << 10)..=(1 << 30)).contains(&archive.buffer_bytes) {
            return Err(value_error(
                "archive.buffer_bytes",
                "must be between 65536 (64 KiB) and 1073741824 (1 GiB)",
            ));
        }
        if !(1..=900).contains(&archive.buffer_secs) {
            return Err(value_error(
                "archive.buffer_secs",
                "must be between 1 and 900 (Firehose's limits)",
            ));
        }
        Ok(())
    }

    fn check_mail_links(&self) -> Result<(), ConfigError> {
        let smtp = &self.alerts.smtp;
        if smtp.server.is_empty() {
            return Ok(());
        }
        if smtp.public_url.is_empty() {
            if self.listen_addr()?.ip().is_unspecified() {
                return Err(value_error(
                    "alerts.smtp.public_url",
                    format!(
                        "needed with web.listen = {:?}: the links in mails would point at no host; set the URL people reach this service at, e.g. https://stampede.example.com",
                        self.web.listen
                    ),
                ));
            }
        } else if !(smtp.public_url.starts_with("http://")
            || smtp.public_url.starts_with("https://"))
        {
            return Err(value_error(
                "alerts.smtp.public_url",
                format!("{:?} is not an http:// or https:// URL", smtp.public_url),
            ));
        }
        Ok(())
    }

    /// `web.listen` as an address.
    ///
    /// # Errors
    /// Not an `address:port`.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.web.listen.parse().map_err(|_| {
            value_error(
                "web.listen",
                format!(
                    "{:?} is not address:port, e.g. 127.0.0.1:8080",
                    self.web.listen
                ),
            )
        })
    }
}

/// Applies `STAMPEDE_<SECTION>_<KEY>` variables to `table`, typed like the default value.
/// `STAMPEDE_<WORD>_…` variables that are not settings: the log filter, and those of the test,
/// benchmark and component scripts (which pass their environment on to the service).
const NOT_CONFIG: [&str; 8] = [
    "log",
    // STAMPEDE_SMTP_USER and STAMPEDE_SMTP_PASSWORD: the mail server's credentials, kept out of
    // config files.
    "smtp",
    "test",
    "bench",
    "components",
    "tansu",
    "fuzz",
    "screenshot",
];

fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults: toml::Table = DEFAULT_TOML.parse().unwrap_or_default();
    // Every table, nested ones too ([alerts.smtp] is ALERTS_SMTP), as its variable prefix and
    // its path.
    let mut sections: Vec<(String, Vec<String>, &toml::Table)> = Vec::new();
    for (name, value) in &defaults {
        if let Some(t) = value.as_table() {
            sections.push((name.clone(), vec![name.clone()], t));
            for (inner, v) in t {
                if let Some(nested) = v.as_table() {
                    sections.push((
                        format!("{name}_{inner}"),
                        vec![name.clone(), inner.clone()],
                        nested,
                    ));
                }
            }
        }
    }
    // Longest first, so that SUMMARY_STREAM wins over a shorter prefix.
    sections.sort_by_key(|(prefix, _, _)| std::cmp::Reverse(prefix.len()));
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("STAMPEDE_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let found = sections.iter().find_map(|(prefix, path, table)| {
            let key = lower.strip_prefix(prefix.as_str())?.strip_prefix('_')?;
            let default = table.get(key).filter(|v| !v.is_table())?;
            Some((path.clone(), key.to_owned(), default))
        });
        let Some((path, key, default)) = found else {
            // Every other STAMPEDE_ variable names a setting, so a typo or a section this build
            // does not have (STAMPEDE_ARCHIVE_KIND) is refused rather than silently ignored.
            let word = lower.split('_').next().unwrap_or("");
            if NOT_CONFIG.contains(&word) {
                continue;
            }
            let message = if sections
                .iter()
                .any(|(s, _, _)| lower.starts_with(s.as_str()))
            {
                "names no configuration key (see stampede print-config)".to_owned()
            } else {
                format!(
                    "names no configuration section: [{word}] is not one (see stampede print-config)"
                )
            };
            return Err(ConfigError::Env { var, message });
        };
        let typed = match default {
            toml::Value::Integer(_) => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| "expected a whole number"),
            toml::Value::Boolean(_) => value
                .trim()
                .parse::<bool>()
                .map(toml::Value::Boolean)
                .map_err(|_| "expected true or false"),
            toml::Value::Float(_) => value
                .trim()
                .parse::<f64>()
                .map(toml::Value::Float)
                .map_err(|_| "expected a number"),
            // A list: comma-separated, e.g. STAMPEDE_WEB_ALLOWED_HOSTS=stampede.lan,10.0.0.5.
            toml::Value::Array(_) => Ok(toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_owned()))
                    .collect(),
            )),
            _ => Ok(toml::Value::String(value.clone())),
        }
        .map_err(|m| ConfigError::Env {
            var: var.clone(),
            message: format!("{m}, got {value:?}"),
        })?;
        let mut at = &mut *table;
        for part in path {
            let entry = at
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry.as_table_mut() {
                Some(t) => at = t,
                None => return Ok(()),
            }
        }
        at.insert(key, typed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn tile_settings_are_checked_naming_the_key() {
        let key_of = |tweak: &dyn Fn(&mut WebConfig)| {
            let mut c = Config::default();
            tweak(&mut c.web);
            match c.validate() {
                Err(ConfigError::Value { key, .. }) => Some(key),
                _ => None,
            }
        };
        assert_eq!(key_of(&|w| w.tile_url = String::new()), None, "no tiles");
        assert_eq!(
            key_of(&|w| w.tile_url = "https://tiles.example/{z}/{x}.png".into()),
            Some("web.tile_url".into())
        );
        assert_eq!(
            key_of(&|w| w.tile_url = "javascript:alert(1)//{z}/{x}/{y}".into()),
            Some("web.tile_url".into())
        );
        assert_eq!(
            key_of(&|w| w.tile_attribution = " ".into()),
            Some("web.tile_attribution".into())
        );
        assert_eq!(
            key_of(&|w| w.tile_attribution_url = "javascript:alert(1)".into()),
            Some("web.tile_attribution_url".into())
        );
        assert_eq!(
            key_of(&|w| {
                w.tile_url = String::new();
                w.tile_attribution = String::new();
            }),
            None,
            "no credit is needed without tiles"
        );
    }

    #[test]
    fn printed_defaults_are_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        Config::default().validate().unwrap();
    }

    /// CONTRACT §7's `[alerts]` example, as written there, loads: the channels' keys are
    /// accepted before the channels exist.
    #[test]
    fn the_contracts_alerts_section_loads() {
        let text = r#"
[alerts]
enabled = true
hysteresis = 5
group_interval_secs = 60
max_subscriptions = 1000
[[alerts.rules]]             # replaces the two defaults when present
name = "low-health"
field = "HealthPoints"
below = 100
# clear = 105
# for_secs = 0
[alerts.sns]
topic_arn = ""               # e.g. arn:aws:sns:us-east-1:123456789012:wildrydes-alerts
[alerts.smtp]
server = ""                  # smtp://HOST:PORT (plain, tests) or smtps://HOST:PORT; credentials by env
from = "Stampede <alerts@localhost>"
public_url = ""              # base of the links in mails; default http://<web.listen>
"#;
        let path = std::env::temp_dir().join(format!("stampede-c7-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let c = Config::load(Some(&path), Vec::new());
        std::fs::remove_file(&path).ok();
        let c = c.unwrap();
        assert_eq!(c.alerts.group_interval_secs, 60);
        let rules = c.alert_rules().unwrap();
        assert_eq!((&*rules[0].name, rules[0].clear), ("low-health", 105.0));
    }

    #[test]
    fn alert_rules_default_replace_and_name_their_bad_key() {
        let rules = Config::default().alert_rules().unwrap();
        let names: Vec<&str> = rules.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["low-health", "low-magic"]);
        assert_eq!((rules[0].threshold, rules[0].clear), (100.0, 105.0));

        let load = |text: &str| {
            let path =
                std::env::temp_dir().join(format!("stampede-rules-{}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            let c = Config::load(Some(&path), Vec::new());
            std::fs::remove_file(&path).ok();
            c
        };
        let c = load("[alerts]\nhysteresis = 2\n[[alerts.rules]]\nname = \"speeding\"\nfield = \"Distance\"\nabove = 50.5\nfor_secs = 10\n").unwrap();
        let rules = c.alert_rules().unwrap();
        assert_eq!(rules.len(), 1, "given rules replace the defaults");
        assert_eq!(
            (rules[0].threshold, rules[0].clear, rules[0].for_ms),
            (50.5, 48.5, 10_000)
        );
        for (text, key) in [
            ("[[alerts.rules]]\nname = \"x\"\nfield = \"Speed\"\nbelow = 1\n", "alerts.rules[0].field"),
            ("[[alerts.rules]]\nname = \"x\"\nfield = \"Distance\"\n", "alerts.rules[0].below"),
            ("[[alerts.rules]]\nname = \"x\"\nfield = \"Distance\"\nbelow = 5\nclear = 4\n", "alerts.rules[0].clear"),
            ("[[alerts.rules]]\nname = \"a b\"\nfield = \"Distance\"\nbelow = 5\n", "alerts.rules[0].name"),
            ("[[alerts.rules]]\nname = \"a\"\nfield = \"Distance\"\nbelow = 5\n[[alerts.rules]]\nname = \"a\"\nfield = \"Distance\"\nbelow = 5\n", "alerts.rules[1].name"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let off = load("[alerts]\nenabled = false\n").unwrap();
        assert!(off.alert_rules().unwrap().is_empty());
    }

    #[test]
    fn env_overrides_by_type() {
        let c = Config::load(
            None,
            env(&[
                ("STAMPEDE_WEB_LISTEN", "127.0.0.1:9000"),
                ("STAMPEDE_WINDOW_SIZE_SECS", "30"),
                ("STAMPEDE_SUMMARY_STREAM_TOPIC", "x"),
                ("STAMPEDE_STORE_CREATE_TABLES", "true"),
                ("STAMPEDE_ALERTS_SMTP_SERVER", "smtp://127.0.0.1:8025"),
                ("STAMPEDE_ALERTS_GROUP_INTERVAL_SECS", "5"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.web.listen, "127.0.0.1:9000");
        assert_eq!(c.window.size_secs, 30);
        assert_eq!(c.summary_stream.topic, "x");
        assert!(c.store.create_tables);
        // A nested section's keys: [alerts.smtp] server.
        assert_eq!(c.alerts.smtp.server, "smtp://127.0.0.1:8025");
        assert_eq!(c.alerts.group_interval_secs, 5);
    }

    #[test]
    fn errors_name_the_key() {
        let e = |pairs: &[(&str, &str)]| Config::load(None, env(pairs)).unwrap_err().to_string();
        assert!(e(&[("STAMPEDE_WINDOW_SIZE_SECS", "soon")]).contains("STAMPEDE_WINDOW_SIZE_SECS"));
        assert!(e(&[("STAMPEDE_WEB_LISTEN", "everywhere")]).contains("web.listen"));
        assert!(e(&[("STAMPEDE_WINDOW_SIZE_SECS", "0")]).contains("window.size_secs"));
        assert!(e(&[("STAMPEDE_WEB_COLOUR", "red")]).contains("STAMPEDE_WEB_COLOUR"));
        assert!(e(&[("STAMPEDE_ALERTS_SMTP_PORT", "25")]).contains("names no configuration key"));
        let everywhere = [
            ("STAMPEDE_ALERTS_SMTP_SERVER", "smtp://127.0.0.1:25"),
            ("STAMPEDE_WEB_LISTEN", "0.0.0.0:8080"),
        ];
        assert!(e(&everywhere).contains("alerts.smtp.public_url: needed with web.listen"));
        assert!(e(&[
            ("STAMPEDE_ALERTS_SMTP_SERVER", "smtp://127.0.0.1:25"),
            ("STAMPEDE_ALERTS_SMTP_PUBLIC_URL", "stampede.example.com"),
        ])
        .contains("not an http:// or https:// URL"));
        assert!(e(&[("STAMPEDE_ALERTS_SMTP", "x")]).contains("names no configuration key"));
        // A section this build does not have is refused, not ignored; tool variables pass.
        let lake = e(&[("STAMPEDE_LAKE_KIND", "dir")]);
        assert!(lake.contains("STAMPEDE_LAKE_KIND") && lake.contains("[lake]"));
        assert!(e(&[("STAMPEDE_ARCHIVE_KIND", "s3")]).contains("archive.bucket"));
        let s3 = |prefix| {
            e(&[
                ("STAMPEDE_ARCHIVE_KIND", "s3"),
                ("STAMPEDE_ARCHIVE_BUCKET", "lake"),
                ("STAMPEDE_ARCHIVE_PREFIX", prefix),
            ])
        };
        assert!(s3("wildrydes").contains("archive.prefix"));
        assert!(s3("/wildrydes/").contains("archive.prefix"));
        assert!(e(&[
            ("STAMPEDE_ARCHIVE_KIND", "dir"),
            ("STAMPEDE_ARCHIVE_BUFFER_SECS", "0")
        ])
        .contains("archive.buffer_secs"));
        assert!(Config::load(
            None,
            [
                ("STAMPEDE_LOG".to_owned(), "debug".to_owned()),
                (
                    "STAMPEDE_TEST_KAFKA".to_owned(),
                    "127.0.0.1:9092".to_owned()
                ),
            ]
        )
        .is_ok());
        assert!(e(&[("STAMPEDE_SOURCE_KIND", "carrier-pigeon")]).contains("source.kind"));
        let kafka = |k: &str, v: &str| e(&[("STAMPEDE_SOURCE_KIND", "kafka"), (k, v)]);
        assert!(kafka("STAMPEDE_SOURCE_TOPIC", "no spaces").contains("source.topic"));
        assert!(kafka("STAMPEDE_SOURCE_BROKERS", "").contains("source.brokers"));
        assert!(kafka("STAMPEDE_SOURCE_GROUP", "").contains("source.group"));
        assert!(kafka("STAMPEDE_SOURCE_DEAD_LETTERS", "a/b").contains("source.dead_letters"));
        assert!(e(&[
            ("STAMPEDE_SUMMARY_STREAM_KIND", "kafka"),
            ("STAMPEDE_SUMMARY_STREAM_TOPIC", "")
        ])
        .contains("summary_stream.topic"));
        let dir = std::env::temp_dir().join(format!("stampede-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[web]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

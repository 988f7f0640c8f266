//! The configuration of CONTRACT §6: a TOML file, every key overridable by an environment
//! variable `STAMPEDE_<SECTION>_<KEY>`, defaults printed (with a comment on every key) by
//! `stampede print-config`.
//!
//! Config → validate → build: this module only composes the sections and checks them; each
//! component takes its own section. Bad config fails at start with a message naming the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

mod env;
mod parts;
mod sections;

use env::apply_env;
pub use sections::*;

use crate::alert::Rule;
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
    /// Continuous views (CONTRACT §9).
    pub views: ViewsConfig,
}

/// The defaults as TOML with a comment on every key: `stampede print-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

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
        if self.store.kind == StoreKind::DynamoDb
            && self.alerts.enabled
            && self.store.notification_table.is_empty()
        {
            return Err(value_error(
                "store.notification_table",
                "alerts in a DynamoDB store need a table for the notification log",
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
        if !self.web.read_token.is_empty() && self.web.token.is_empty() {
            return Err(value_error(
                "web.read_token",
                "a read token needs an admin token: set web.token too (without it, ingest and the admin endpoints are open to anyone, and a read token would seem to guard what it cannot)",
            ));
        }
        if self.web.max_body_bytes < 1024 || self.web.max_body_bytes > 1 << 30 {
            return Err(value_error(
                "web.max_body_bytes",
                "must be between 1024 and 1073741824",
            ));
        }
        if self.web.max_unwritten_records == 0 {
            return Err(value_error(
                "web.max_unwritten_records",
                "must be at least 1 (records that may wait in memory for an output that cannot write)",
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
        crate::alert::spec::rules(&a.rules, a.hysteresis)
            .map_err(|e| value_error(&e.key, e.message))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A read token alone left ingest open and let its holders call the admin endpoints.
    #[test]
    fn a_read_token_without_an_admin_token_is_refused() {
        let mut c = Config::default();
        c.web.read_token = "reader".into();
        match c.validate() {
            Err(ConfigError::Value { key, .. }) => assert_eq!(key, "web.read_token"),
            other => panic!("{other:?}"),
        }
        c.web.token = "admin".into();
        assert!(c.validate().is_ok());
    }

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

//! Every command beyond `serve`, one file or folder each: `aggregate` (the batch path),
//! `produce` (the simulated fleet), `consume` (the workshop's stream reader), `demo` (the fleet
//! inside the service), `query` (ad-hoc SQL) and `subscribe` (alert e-mail subscriptions).
//! They sit above the service's parts and use them; nothing below imports a command.

pub mod aggregate;
pub mod consume;
pub mod demo;
pub mod produce;
pub mod query;
pub mod serve;
pub mod store;
pub mod subscribe;
pub mod views;

/// A command line that cannot be run as given; the message says what to fix (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    /// A usage error saying `message`.
    pub fn new(message: impl Into<String>) -> UsageError {
        UsageError(message.into())
    }
}

/// Logs to stderr at `default_level`, or as `STAMPEDE_LOG` says (e.g. "debug",
/// "stampede=trace"); `STAMPEDE_LOG_FORMAT=json` for JSON lines.
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STAMPEDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("STAMPEDE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

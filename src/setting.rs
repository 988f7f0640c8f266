//! A setting that cannot work, found by the part it configures as it starts (a certificate that
//! does not load, an option the Kafka client refuses, an SMTP server address that does not
//! parse). `main` treats it as bad configuration: exit status 2, the message naming the key.

/// A setting that cannot work; the message names the key and says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSetting(String);

impl BadSetting {
    /// `key` (as `section.key`) is wrong: `message` says why.
    pub fn key(key: &str, message: impl std::fmt::Display) -> BadSetting {
        BadSetting(format!("config key {key}: {message}"))
    }

    /// A setting is wrong; `message` names it.
    pub fn invalid(message: impl std::fmt::Display) -> BadSetting {
        BadSetting(format!("config: {message}"))
    }
}

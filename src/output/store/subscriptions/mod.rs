//! The built-in e-mail subscriptions of CONTRACT §7, kept in the store — the embedded one
//! (redb table `subscriptions`) or DynamoDB (`store.subscription_table`, partition key `List`,
//! always `subscriptions`, sort key `Email`: one small partition, read whole) — and mirrored in
//! memory (there are at most `alerts.max_subscriptions`). Instances that share a DynamoDB store
//! share them: each reads the table again before every round of mails and when a link's token is
//! not one it knows.
//!
//! Their lifecycle is SNS's: created `pending` with a secret token and a confirmation mail,
//! `confirmed` by following the link in it (a page whose button POSTs), removed by the
//! unsubscribe link every alert mail carries. The token is the only credential the links need.

mod dynamodb;
mod embedded;

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::metrics::METRICS;
use crate::time::{now_ms, Millis};

/// Longest address accepted (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// Names or rules in one filter, at most.
pub const MAX_FILTER: usize = 100;
/// A pending subscription's link works this long (SNS's confirmation tokens: three days);
/// after it, the subscription neither counts toward the limit nor can be confirmed.
pub const PENDING_FOR_MS: Millis = 3 * 86_400_000;
/// A pending subscription may make room for a new one once it is this old.
pub const EVICTABLE_AFTER_MS: Millis = 3_600_000;
/// Another confirmation mail to the same pending address no sooner than this.
pub const RESEND_AFTER_MS: Millis = 60_000;

/// One subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The address.
    pub email: String,
    /// Only these unicorns (empty: all).
    pub names: Vec<String>,
    /// Only these rules (empty: all).
    pub rules: Vec<String>,
    /// Confirmed by following the link in the confirmation mail.
    pub confirmed: bool,
    /// The secret of its links.
    pub token: String,
    /// When it was created (epoch ms).
    pub created: Millis,
}

impl Subscription {
    /// Pending for longer than [`PENDING_FOR_MS`]: as good as absent.
    fn expired(&self, now: Millis) -> bool {
        !self.confirmed && now.saturating_sub(self.created) > PENDING_FOR_MS
    }

    /// `pending` or `confirmed`.
    pub fn state(&self) -> &'static str {
        if self.confirmed {
            "confirmed"
        } else {
            "pending"
        }
    }

    /// Whether this subscriber asked for `change`.
    pub fn wants(&self, change: &crate::alert::Change) -> bool {
        (self.names.is_empty() || self.names.contains(&change.name))
            && (self.rules.is_empty() || self.rules.iter().any(|r| **r == *change.rule))
    }
}

/// Why a subscription request was refused: the HTTP status and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// 400, 409, 429 or 500.
    pub status: u16,
    /// In words.
    pub reason: String,
}

fn refused(status: u16, reason: impl Into<String>) -> Refused {
    Refused {
        status,
        reason: reason.into(),
    }
}

/// Where subscriptions are kept.
#[derive(Clone)]
enum Backend {
    Embedded(crate::output::store::embedded::DbFile),
    DynamoDb(dynamodb::Table),
}

/// The subscriptions of this service.
#[derive(Clone)]
pub struct Subscriptions {
    backend: Backend,
    all: Arc<Mutex<Vec<Subscription>>>,
    max: usize,
}

impl Subscriptions {
    /// The subscriptions kept in the embedded store's database `db`; at most `max` may exist.
    ///
    /// # Errors
    /// The table cannot be read.
    pub async fn embedded(
        db: crate::output::store::embedded::DbFile,
        max: usize,
    ) -> anyhow::Result<Subscriptions> {
        embedded::create(&db).await?;
        Subscriptions::start(Backend::Embedded(db), max).await
    }

    /// The subscriptions kept in DynamoDB table `table` (created when missing if `create`).
    ///
    /// # Errors
    /// The table is missing (and may not be created), or cannot be read.
    pub async fn dynamodb(
        config: &aws_config::SdkConfig,
        table: &str,
        create: bool,
        max: usize,
    ) -> anyhow::Result<Subscriptions> {
        let backend = Backend::DynamoDb(dynamodb::Table::open(config, table, create).await?);
        Subscriptions::start(backend, max).await
    }

    async fn start(backend: Backend, max: usize) -> anyhow::Result<Subscriptions> {
        let s = Subscriptions {
            backend,
            all: Arc::default(),
            max,
        };
        s.refresh().await?;
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        self.all.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self) {
        let all = self.lock();
        let confirmed = all.iter().filter(|s| s.confirmed).count();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        METRICS.subscriptions[0].store((all.len() - confirmed) as i64, relaxed);
        METRICS.subscriptions[1].store(confirmed as i64, relaxed);
    }

    /// Reads every subscription from the store again (another instance sharing it may have
    /// changed them).
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let all = match &self.backend {
            Backend::Embedded(db) => embedded::load(db).await?,
            Backend::DynamoDb(table) => table.load().await?,
        };
        *self.lock() = all;
        self.count();
        Ok(())
    }

    /// Every subscription, by address.
    pub fn list(&self) -> Vec<Subscription> {
        let mut all = self.lock().clone();
        all.sort_by(|a, b| a.email.cmp(&b.email));
        all
    }

    /// The confirmed subscribers.
    pub fn confirmed(&self) -> Vec<Subscription> {
        self.lock()
            .iter()
            .filter(|s| s.confirmed)
            .cloned()
            .collect()
    }

    fn known_token(&self, token: &str) -> Option<Subscription> {
        if token.is_empty() {
            return None;
        }
        let now = now_ms();
        self.lock()
            .iter()
            .find(|s| crate::clients::token::constant_time_eq(s.token.as_bytes(), token.as_bytes()))
            .filter(|s| !s.expired(now))
            .cloned()
    }

    /// The subscription whose links carry `token` (the store is read again when it is not
    /// one this instance knows).
    pub async fn by_token(&self, token: &str) -> Option<Subscription> {
        if let Some(s) = self.known_token(token) {
            return Some(s);
        }
        if token.is_empty() || !matches!(self.backend, Backend::DynamoDb { .. }) {
            return None;
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "cannot read the subscriptions");
        }
        self.known_token(token)
    }

    /// Creates a pending subscription (or renews a pending one's filter and token), checking
    /// the address, the filter against `rules` and the limit. Returns it, to mail its
    /// confirmation.
    ///
    /// # Errors
    /// [`Refused`]: 400 for a bad address, rule or filter, 409 when the address is already
    /// confirmed or the limit is reached, 429 when its confirmation went less than a minute
    /// ago; 500 when the store fails.
    pub async fn subscribe(
        &self,
        email: &str,
        names: Vec<String>,
        rules: Vec<String>,
        known_rules: &[crate::alert::Rule],
    ) -> Result<Subscription, Refused> {
        let email = email.trim();
        check_email(email)?;
        if names.len() > MAX_FILTER || rules.len() > MAX_FILTER {
            return Err(refused(
                400,
                format!("at most {MAX_FILTER} names and {MAX_FILTER} rules in a filter"),
            ));
        }
        if let Some(name) = names.iter().find(|n| !crate::decode::is_valid_name(n)) {
            return Err(refused(
                400,
                format!("names: {name:?} is not a unicorn name (1 to 64 bytes, no control or invisible characters)"),
            ));
        }
        if let Some(rule) = rules
            .iter()
            .find(|r| !known_rules.iter().any(|k| *k.name == ***r))
        {
            let known: Vec<&str> = known_rules.iter().map(|r| &*r.name).collect();
            return Err(refused(
                400,
                format!(
                    "rules: no rule is named {rule:?} (the rules are: {})",
                    known.join(", ")
                ),
            ));
        }
        if matches!(self.backend, Backend::DynamoDb { .. }) {
            self.refresh()
                .await
                .map_err(|e| refused(500, e.to_string()))?;
        }
        // A pending subscription that must make room for this one: strangers who never confirm
        // cannot fill the list for the three days their links live.
        let mut evict = None;
        {
            let all = self.lock();
            let now = now_ms();
            let live = all.iter().filter(|s| !s.expired(now)).count();
            match all.iter().find(|s| s.email.eq_ignore_ascii_case(email)) {
                Some(s) if s.confirmed => {
                    return Err(refused(
                        409,
                        format!(
                            "{email} is already subscribed (DELETE it first to change its filter)"
                        ),
                    ))
                }
                // Not a way to flood someone's mailbox with confirmations.
                Some(s) if now.saturating_sub(s.created) < RESEND_AFTER_MS => {
                    return Err(refused(
                        429,
                        format!(
                            "a confirmation mail went to {email} less than a minute ago: follow its link, or ask again in a minute"
                        ),
                    ))
                }
                Some(_) => {}
                None if live >= self.max => {
                    // Only one pending an hour or more: else a client cycling through
                    // addresses would mail confirmations without end, and push out a real
                    // subscriber's before they could follow the link.
                    let oldest_pending = all
                        .iter()
                        .filter(|s| {
                            !s.confirmed
                                && !s.expired(now)
                                && now.saturating_sub(s.created) >= EVICTABLE_AFTER_MS
                        })
                        .min_by_key(|s| s.created);
                    match oldest_pending {
                        Some(p) => evict = Some(p.email.clone()),
                        None => {
                            return Err(refused(
                                409,
                                format!(
                                    "the limit of {} confirmed subscriptions (alerts.max_subscriptions) is reached",
                                    self.max
                                ),
                            ))
                        }
                    }
                }
                None => {}
            }
        }
        if let Some(pending) = evict {
            // Confirmed meanwhile? Then it stays, and the list is full.
            let still_pending = self
                .lock()
                .iter()
                .any(|s| s.email == pending && !s.confirmed);
            if !still_pending {
                return Err(refused(409, format!("the limit of {} confirmed subscriptions (alerts.max_subscriptions) is reached", self.max)));
            }
            tracing::info!(%pending, "the subscription list is full: the oldest unconfirmed subscription makes room");
            self.delete(&pending)
                .await
                .map_err(|e| refused(500, e.to_string()))?;
        }
        let token = new_token().map_err(|e| refused(500, e))?;
        let s = Subscription {
            email: email.to_owned(),
            names,
            rules,
            confirmed: false,
            token,
            created: now_ms(),
        };
        // Pending ones of another spelling of the address go (one subscription per address).
        let old: Vec<String> = self
            .lock()
            .iter()
            .filter(|x| x.email.eq_ignore_ascii_case(email) && x.email != email)
            .map(|x| x.email.clone())
            .collect();
        for o in old {
            self.delete(&o)
                .await
                .map_err(|e| refused(500, e.to_string()))?;
        }
        self.put(&s)
            .await
            .map_err(|e| refused(500, e.to_string()))?;
        Ok(s)
    }

    /// Confirms the subscription of `token`; `None` when there is none.
    ///
    /// # Errors
    /// The store failed.
    pub async fn confirm(&self, token: &str) -> anyhow::Result<Option<Subscription>> {
        let Some(mut s) = self.by_token(token).await else {
            return Ok(None);
        };
        s.confirmed = true;
        self.put(&s).await?;
        Ok(Some(s))
    }

    /// Removes the subscription of `email`; whether there was one.
    ///
    /// # Errors
    /// The store failed.
    pub async fn remove(&self, email: &str) -> anyhow::Result<bool> {
        if matches!(self.backend, Backend::DynamoDb { .. }) {
            self.refresh().await?;
        }
        let found = self
            .lock()
            .iter()
            .find(|s| s.email.eq_ignore_ascii_case(email.trim()))
            .map(|s| s.email.clone());
        match found {
            Some(email) => {
                self.delete(&email).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn put(&self, s: &Subscription) -> anyhow::Result<()> {
        let json = serde_json::to_string(s)?;
        match &self.backend {
            Backend::Embedded(db) => embedded::put(db, &s.email, &json).await?,
            Backend::DynamoDb(table) => table.put(&s.email, s.state(), json).await?,
        }
        {
            let mut all = self.lock();
            match all.iter_mut().find(|x| x.email == s.email) {
                Some(x) => *x = s.clone(),
                None => all.push(s.clone()),
            }
        }
        self.count();
        Ok(())
    }

    async fn delete(&self, email: &str) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Embedded(db) => embedded::delete(db, email).await?,
            Backend::DynamoDb(table) => table.delete(email).await?,
        }
        self.lock().retain(|x| x.email != email);
        self.count();
        Ok(())
    }
}

/// A stored subscription; one that cannot be read is logged and skipped.
pub(super) fn parse(json: &str) -> Option<Subscription> {
    serde_json::from_str(json)
        .map_err(
            |e| tracing::error!(error = %e, "an unreadable subscription in the store: skipped"),
        )
        .ok()
}

/// A plausible single address: `local@domain`, no spaces, no display name, not too long.
///
/// # Errors
/// 400 with the reason.
pub fn check_email(email: &str) -> Result<(), Refused> {
    let bad = |why: &str| {
        refused(
            400,
            format!("email: {email:?} is not an e-mail address ({why})"),
        )
    };
    if email.is_empty() {
        return Err(refused(400, "email: missing"));
    }
    if email.len() > MAX_EMAIL {
        return Err(bad("too long"));
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
    {
        return Err(bad("one plain address: no spaces, names or lists"));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(bad("no @"));
    };
    if local.is_empty() || domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
        return Err(bad("local part and domain needed"));
    }
    email
        .parse::<lettre::Address>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(())
}

/// 32 random bytes from the TLS library's generator, as hex.
fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| "no secure random numbers from the system".to_owned())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_with_reasons() {
        for good in ["ops@example.com", "a.b+alerts@sub.example.org"] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "missing"),
            ("ops", "no @"),
            ("ops@", "domain needed"),
            ("Ops <ops@example.com>", "no spaces"),
            ("a@b.com,c@d.com", "no spaces, names or lists"),
        ] {
            let e = check_email(bad).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.reason.contains(why), "{bad}: {}", e.reason);
        }
    }

    #[tokio::test]
    async fn the_lifecycle_is_kept_in_the_store() {
        let dir = std::env::temp_dir().join(format!("stampede-subs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::output::store::embedded::EmbeddedStore::open(&dir, 10).unwrap();
        let rules = crate::alert::Rule::defaults(5.0);
        let subs = Subscriptions::embedded(store.database(), 2).await.unwrap();
        let s = subs
            .subscribe("ops@example.com", vec![], vec!["low-health".into()], &rules)
            .await
            .unwrap();
        assert_eq!(s.state(), "pending");
        let unknown = subs
            .subscribe("x@example.com", vec![], vec!["nope".into()], &rules)
            .await
            .unwrap_err();
        assert!(
            unknown.reason.contains("low-health, low-magic"),
            "{unknown}"
        );
        assert_eq!(subs.confirm("wrong").await.unwrap(), None);
        assert!(subs.confirm(&s.token).await.unwrap().unwrap().confirmed);
        let again = subs
            .subscribe("OPS@example.com", vec![], vec![], &rules)
            .await
            .unwrap_err();
        assert_eq!(again.status, 409);
        subs.subscribe("b@example.com", vec![], vec![], &rules)
            .await
            .unwrap();
        // At the limit, a pending one younger than an hour holds its place...
        let full = subs
            .subscribe("c@example.com", vec![], vec![], &rules)
            .await
            .unwrap_err();
        assert!(full.reason.contains("alerts.max_subscriptions"), "{full}");
        // ...and an older one makes room; confirmed ones are kept.
        let mut b = subs
            .list()
            .into_iter()
            .find(|s| s.email == "b@example.com")
            .unwrap();
        b.created -= EVICTABLE_AFTER_MS;
        subs.put(&b).await.unwrap();
        let c = subs
            .subscribe("c@example.com", vec![], vec![], &rules)
            .await
            .unwrap();
        let emails: Vec<String> = subs.list().into_iter().map(|s| s.email).collect();
        assert_eq!(emails.len(), 2);
        assert!(!emails.contains(&"b@example.com".to_owned()), "{emails:?}");
        assert!(subs.confirm(&c.token).await.unwrap().unwrap().confirmed);
        let full = subs
            .subscribe("d@example.com", vec![], vec![], &rules)
            .await
            .unwrap_err();
        assert!(full.reason.contains("alerts.max_subscriptions"), "{full}");
        drop(subs);
        // Read back from the database.
        let subs = Subscriptions::embedded(store.database(), 2).await.unwrap();
        assert_eq!(subs.confirmed().len(), 2);
        assert!(subs.remove("ops@example.com").await.unwrap());
        assert_eq!(subs.list().len(), 1);
        drop((subs, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The built-in e-mail subscriptions of CONTRACT §7, kept in the embedded store (redb table
//! `subscriptions`) and mirrored in memory (there are at most `alerts.max_subscriptions`).
//!
//! Their lifecycle is SNS's: created `pending` with a secret token and a confirmation mail,
//! `confirmed` by following the link in it (a page whose button POSTs), removed by the
//! unsubscribe link every alert mail carries. The token is the only credential the links need.

use std::sync::{Arc, Mutex, PoisonError};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::metrics::METRICS;
use crate::time::{now_ms, Millis};

/// E-mail address → subscription JSON.
const SUBSCRIPTIONS: TableDefinition<&str, &str> = TableDefinition::new("subscriptions");

/// Longest address accepted (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// Names or rules in one filter, at most.
pub const MAX_FILTER: usize = 100;

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
    /// `pending` or `confirmed`.
    pub fn state(&self) -> &'static str {
        if self.confirmed {
            "confirmed"
        } else {
            "pending"
        }
    }

    /// Whether this subscriber asked for `change`.
    pub fn wants(&self, change: &super::Change) -> bool {
        (self.names.is_empty() || self.names.contains(&change.name))
            && (self.rules.is_empty() || self.rules.iter().any(|r| **r == *change.rule))
    }
}

/// Why a subscription request was refused: the HTTP status and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// 400, 404 or 409.
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

/// The subscriptions of this service.
#[derive(Clone)]
pub struct Subscriptions {
    db: Arc<Database>,
    all: Arc<Mutex<Vec<Subscription>>>,
    max: usize,
}

impl Subscriptions {
    /// Reads the subscriptions kept in `db`; at most `max` may exist.
    ///
    /// # Errors
    /// The table cannot be read.
    pub fn open(db: Arc<Database>, max: usize) -> anyhow::Result<Subscriptions> {
        let w = db.begin_write()?;
        w.open_table(SUBSCRIPTIONS)?;
        w.commit()?;
        let r = db.begin_read()?;
        let table = r.open_table(SUBSCRIPTIONS)?;
        let mut all = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            match serde_json::from_str::<Subscription>(v.value()) {
                Ok(s) => all.push(s),
                Err(e) => {
                    tracing::error!(error = %e, "an unreadable subscription in the store: skipped")
                }
            }
        }
        let s = Subscriptions {
            db,
            all: Arc::new(Mutex::new(all)),
            max,
        };
        s.count();
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        self.all.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self) {
        let all = self.lock();
        let confirmed = all.iter().filter(|s| s.confirmed).count();
        METRICS.subscriptions[0].store(
            (all.len() - confirmed) as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        METRICS.subscriptions[1].store(confirmed as i64, std::sync::atomic::Ordering::Relaxed);
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

    /// The subscription whose links carry `token`.
    pub fn by_token(&self, token: &str) -> Option<Subscription> {
        if token.is_empty() {
            return None;
        }
        self.lock()
            .iter()
            .find(|s| crate::web::guard::constant_time_eq(s.token.as_bytes(), token.as_bytes()))
            .cloned()
    }

    /// Creates a pending subscription (or renews a pending one's filter and token), checking
    /// the address, the filter against `rules` and the limit. Returns it, to mail its
    /// confirmation.
    ///
    /// # Errors
    /// [`Refused`]: 400 for a bad address, rule or filter, 409 when the address is already
    /// confirmed or the limit is reached; 500 when the store fails.
    pub fn subscribe(
        &self,
        email: &str,
        names: Vec<String>,
        rules: Vec<String>,
        known_rules: &[super::Rule],
    ) -> Result<Subscription, Refused> {
        let email = email.trim();
        check_email(email)?;
        if names.len() > MAX_FILTER || rules.len() > MAX_FILTER {
            return Err(refused(
                400,
                format!("at most {MAX_FILTER} names and {MAX_FILTER} rules in a filter"),
            ));
        }
        if let Some(name) = names.iter().find(|n| n.is_empty() || n.len() > 256) {
            return Err(refused(
                400,
                format!("names: {name:?} is not a unicorn name (1 to 256 bytes)"),
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
        let mut all = self.lock();
        let existing = all.iter().position(|s| s.email.eq_ignore_ascii_case(email));
        if let Some(i) = existing {
            if all[i].confirmed {
                return Err(refused(
                    409,
                    format!("{email} is already subscribed (DELETE it first to change its filter)"),
                ));
            }
        } else if all.len() >= self.max {
            return Err(refused(
                409,
                format!(
                    "the limit of {} subscriptions (alerts.max_subscriptions) is reached",
                    self.max
                ),
            ));
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
        self.put(&s).map_err(|e| refused(500, e.to_string()))?;
        match existing {
            Some(i) => all[i] = s.clone(),
            None => all.push(s.clone()),
        }
        drop(all);
        self.count();
        Ok(s)
    }

    /// Confirms the subscription of `token`; `None` when there is none.
    ///
    /// # Errors
    /// The store failed.
    pub fn confirm(&self, token: &str) -> anyhow::Result<Option<Subscription>> {
        let Some(mut s) = self.by_token(token) else {
            return Ok(None);
        };
        s.confirmed = true;
        self.put(&s)?;
        if let Some(x) = self.lock().iter_mut().find(|x| x.email == s.email) {
            *x = s.clone();
        }
        self.count();
        Ok(Some(s))
    }

    /// Removes the subscription of `email`; whether there was one.
    ///
    /// # Errors
    /// The store failed.
    pub fn remove(&self, email: &str) -> anyhow::Result<bool> {
        let Some(s) = self
            .lock()
            .iter()
            .find(|s| s.email.eq_ignore_ascii_case(email.trim()))
            .cloned()
        else {
            return Ok(false);
        };
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(SUBSCRIPTIONS)?;
            t.remove(s.email.as_str())?;
        }
        w.commit()?;
        self.lock().retain(|x| x.email != s.email);
        self.count();
        Ok(true)
    }

    fn put(&self, s: &Subscription) -> anyhow::Result<()> {
        let json = serde_json::to_string(s)?;
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(SUBSCRIPTIONS)?;
            t.insert(s.email.as_str(), json.as_str())?;
        }
        w.commit()?;
        Ok(())
    }
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

    #[test]
    fn the_lifecycle_is_kept_in_the_store() {
        let dir = std::env::temp_dir().join(format!("stampede-subs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::output::embedded::Store::open(&dir, 10).unwrap();
        let rules = super::super::Rule::defaults(5.0);
        let subs = Subscriptions::open(store.database(), 2).unwrap();
        let s = subs
            .subscribe("ops@example.com", vec![], vec!["low-health".into()], &rules)
            .unwrap();
        assert_eq!(s.state(), "pending");
        let unknown = subs
            .subscribe("x@example.com", vec![], vec!["nope".into()], &rules)
            .unwrap_err();
        assert!(
            unknown.reason.contains("low-health, low-magic"),
            "{unknown}"
        );
        assert_eq!(subs.confirm("wrong").unwrap(), None);
        assert!(subs.confirm(&s.token).unwrap().unwrap().confirmed);
        let again = subs
            .subscribe("OPS@example.com", vec![], vec![], &rules)
            .unwrap_err();
        assert_eq!(again.status, 409);
        subs.subscribe("b@example.com", vec![], vec![], &rules)
            .unwrap();
        let full = subs
            .subscribe("c@example.com", vec![], vec![], &rules)
            .unwrap_err();
        assert!(full.reason.contains("alerts.max_subscriptions"), "{full}");
        drop(subs);
        // Read back from the database.
        let subs = Subscriptions::open(store.database(), 2).unwrap();
        assert_eq!(subs.confirmed().len(), 1);
        assert!(subs.remove("ops@example.com").unwrap());
        assert_eq!(subs.list().len(), 1);
        drop((subs, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

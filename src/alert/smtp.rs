//! The built-in e-mail channel (`[alerts.smtp]`): one plain-text mail per confirmed subscriber
//! per round, holding the changes that subscriber asked for, with an unsubscribe link
//! (`List-Unsubscribe`, `List-Unsubscribe-Post`: RFC 8058), a `Message-ID` derived from the
//! subscriber and the alert ids (the same mail sent again after a crash has the same one), and
//! `X-Stampede-Alerts` listing the alert ids for programs.

use std::collections::HashSet;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::notify::{self, Round, SendError};
use super::subscriptions::{Subscription, Subscriptions};
use super::Change;
use crate::metrics::METRICS;
use crate::output::ErrorKind;

/// How long one SMTP conversation may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The SMTP channel.
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The base of the links in mails, without a trailing `/`.
    public_url: String,
    subscriptions: Subscriptions,
    /// The round under way and the subscribers it has reached (a retry skips them).
    progress: (u64, HashSet<String>),
}

/// The mail server's settings, checked at start.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: String,
}

impl Mailer {
    /// Reads `alerts.smtp`: `server` (`smtp://HOST:PORT`, plain, or `smtps://HOST:PORT`, TLS
    /// from the first byte; user and password from `STAMPEDE_SMTP_USER` /
    /// `STAMPEDE_SMTP_PASSWORD`), `from`, `public_url`.
    ///
    /// # Errors
    /// A key that cannot be used, named.
    pub fn new(server: &str, from: &str, public_url: &str) -> Result<Mailer, String> {
        let (tls, rest) = if let Some(rest) = server.strip_prefix("smtps://") {
            (true, rest)
        } else if let Some(rest) = server.strip_prefix("smtp://") {
            (false, rest)
        } else {
            return Err(format!(
                "alerts.smtp.server: {server:?} is not smtp://HOST:PORT or smtps://HOST:PORT"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("alerts.smtp.server: bad port in {server:?}"))?,
            ),
            None => (rest, if tls { 465 } else { 25 }),
        };
        if host.is_empty() {
            return Err(format!("alerts.smtp.server: no host in {server:?}"));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(TIMEOUT));
        if tls {
            let params = TlsParameters::new(host.into())
                .map_err(|e| format!("alerts.smtp.server: TLS for {host}: {e}"))?;
            builder = builder.tls(Tls::Wrapper(params));
        }
        if let (Ok(user), Ok(password)) = (
            std::env::var("STAMPEDE_SMTP_USER"),
            std::env::var("STAMPEDE_SMTP_PASSWORD"),
        ) {
            builder = builder.credentials(
                lettre::transport::smtp::authentication::Credentials::new(user, password),
            );
        }
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("alerts.smtp.from: {from:?} is not an address: {e}"))?;
        Ok(Mailer {
            transport: builder.build(),
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The confirmation mail of a new subscription.
    ///
    /// # Errors
    /// The server refused it or could not be reached.
    pub async fn confirmation(&self, s: &Subscription) -> Result<(), SendError> {
        let link = format!(
            "{}/subscriptions/confirm?token={}",
            self.public_url, s.token
        );
        let mut filter = String::new();
        if !s.names.is_empty() {
            filter.push_str(&format!("\nUnicorns: {}", s.names.join(", ")));
        }
        if !s.rules.is_empty() {
            filter.push_str(&format!("\nRules: {}", s.rules.join(", ")));
        }
        if filter.is_empty() {
            filter.push_str("\nEvery unicorn, every rule.");
        }
        let body = format!(
            "You (or someone) subscribed {} to the alerts of the Wild Rydes fleet.\n{filter}\n\nTo confirm, open this link and press the button:\n{link}\n\nIf you did not ask for this, ignore this mail: nothing will be sent.\n",
            s.email
        );
        let mail = self
            .message(&s.email, "Confirm your Stampede alert subscription", body)?
            .message_id(Some(format!("<confirm-{}@stampede>", &s.token[..16])))
            .body_text();
        self.deliver(mail?).await
    }

    fn message(&self, to: &str, subject: &str, body: String) -> Result<Draft, SendError> {
        let to: Mailbox = to.parse().map_err(|e| SendError {
            kind: ErrorKind::Permanent,
            message: format!("bad recipient {to:?}: {e}"),
        })?;
        Ok(Draft {
            builder: Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(subject),
            body,
        })
    }

    async fn deliver(&self, mail: Message) -> Result<(), SendError> {
        match self.transport.send(mail).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SendError {
                kind: if e.is_permanent() {
                    ErrorKind::Permanent
                } else {
                    ErrorKind::Transient
                },
                message: format!("SMTP: {e}"),
            }),
        }
    }

    /// The base of the links in mails.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }
}

/// A mail being built.
struct Draft {
    builder: lettre::message::MessageBuilder,
    body: String,
}

impl Draft {
    fn message_id(mut self, id: Option<String>) -> Draft {
        self.builder = self.builder.message_id(id);
        self
    }

    fn header(mut self, name: &'static str, value: String) -> Draft {
        self.builder = self.builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(name),
            value,
        ));
        self
    }

    fn body_text(self) -> Result<Message, SendError> {
        self.builder
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(self.body)
            .map_err(|e| SendError {
                kind: ErrorKind::Permanent,
                message: format!("cannot build the mail: {e}"),
            })
    }
}

impl SmtpChannel {
    /// The channel, sending through `mailer` to `subscriptions`.
    pub fn new(mailer: Mailer, subscriptions: Subscriptions) -> SmtpChannel {
        SmtpChannel {
            transport: mailer.transport,
            from: mailer.from,
            public_url: mailer.public_url,
            subscriptions,
            progress: (0, HashSet::new()),
        }
    }

    /// One mail per confirmed subscriber who asked for some of the round's changes.
    pub(super) async fn send(&mut self, round: &Round) -> Result<(), SendError> {
        if self.progress.0 != round.number {
            self.progress = (round.number, HashSet::new());
            // Instances sharing a DynamoDB store share the subscriptions: read them again.
            if let Err(e) = self.subscriptions.refresh().await {
                tracing::warn!(error = %e, "cannot read the subscriptions again; mailing those known");
            }
        }
        let mailer = Mailer {
            transport: self.transport.clone(),
            from: self.from.clone(),
            public_url: self.public_url.clone(),
        };
        for s in self.subscriptions.confirmed() {
            if self.progress.1.contains(&s.email) {
                continue;
            }
            let changes: Vec<Change> = round
                .changes
                .iter()
                .filter(|c| s.wants(c))
                .cloned()
                .collect();
            if !changes.is_empty() {
                let mail = alert_mail(&mailer, &s, &changes)?;
                match mailer.deliver(mail).await {
                    Ok(()) => METRICS.notification("smtp", true, 1),
                    Err(e) => {
                        METRICS.notification("smtp", false, 1);
                        return Err(e);
                    }
                }
            }
            self.progress.1.insert(s.email);
        }
        Ok(())
    }
}

/// The mail of `changes` to subscriber `s`.
fn alert_mail(mailer: &Mailer, s: &Subscription, changes: &[Change]) -> Result<Message, SendError> {
    let unsubscribe = format!(
        "{}/subscriptions/unsubscribe?token={}",
        mailer.public_url, s.token
    );
    let dashboard = format!("{}/", mailer.public_url);
    let mut body = notify::text(changes, &dashboard);
    body.push_str(&format!(
        "\nYou get this because {} subscribed to these alerts. To stop them, open:\n{unsubscribe}\n",
        s.email
    ));
    let ids: Vec<String> = changes.iter().map(Change::alert_id).collect();
    // The same subscriber and the same changes give the same Message-ID.
    let digest = md5::compute(format!("{}\n{}", s.email, ids.join("\n")));
    mailer
        .message(&s.email, &notify::subject(changes), body)?
        .message_id(Some(format!("<{digest:x}@stampede>")))
        .header("X-Stampede-Alerts", ids.join(", "))
        .header("List-Unsubscribe", format!("<{unsubscribe}>"))
        .header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into())
        .body_text()
}

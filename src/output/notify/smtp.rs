//! The built-in e-mail channel (`[alerts.smtp]`): one plain-text mail per confirmed subscriber
//! per round, holding the changes that subscriber asked for, with an unsubscribe link
//! (`List-Unsubscribe`, `List-Unsubscribe-Post`: RFC 8058), a `Message-ID` derived from the
//! subscriber and the alert ids (the same mail sent again after a crash has the same one), and
//! `X-Stampede-Alerts` listing the alert ids for programs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::message::{self, Round, SendError};
use crate::alert::Change;
use crate::metrics::METRICS;
use crate::output::store::subscriptions::{Subscription, Subscriptions};
use crate::output::ErrorKind;

/// How long connecting, or one mail, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The SMTP channel.
pub struct SmtpChannel {
    mailer: Mailer,
    subscriptions: Subscriptions,
    /// The connection kept open between mails (and rounds, until the server drops it).
    connection: Option<AsyncSmtpConnection>,
    /// The round under way and the subscribers it has reached (a retry skips them).
    progress: (u64, HashSet<String>),
}

/// The mail server and the sender, checked at start. Connections are made here rather than by
/// lettre's transport so that they set `TCP_NODELAY`: lettre writes a mail's end (`.`) apart
/// from its text, and with Nagle's algorithm that waits for the server's delayed ACK — about
/// 40 ms a mail.
#[derive(Clone)]
pub struct Mailer {
    host: String,
    port: u16,
    /// For `smtps://`: TLS from the first byte.
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<Credentials>,
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
        let tls = if tls {
            Some(Arc::new(crate::clients::tls::client_config().map_err(
                |e| format!("alerts.smtp.server: TLS for {host}: {e}"),
            )?))
        } else {
            None
        };
        let credentials = match (
            std::env::var("STAMPEDE_SMTP_USER"),
            std::env::var("STAMPEDE_SMTP_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) => Some(Credentials::new(user, password)),
            _ => None,
        };
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("alerts.smtp.from: {from:?} is not an address: {e}"))?;
        Ok(Mailer {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            tls,
            credentials,
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// A new connection to the server, greeted (and authenticated when credentials are set).
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let transient = |what: &str, e: &dyn std::fmt::Display| SendError {
            kind: ErrorKind::Transient,
            message: format!("SMTP {}:{}: {what}: {e}", self.host, self.port),
        };
        let tcp =
            tokio::time::timeout(TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
                .await
                .map_err(|e| transient("connect", &e))?
                .map_err(|e| transient("connect", &e))?;
        tcp.set_nodelay(true)
            .map_err(|e| transient("TCP_NODELAY", &e))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name =
                    rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
                        SendError {
                            kind: ErrorKind::Permanent,
                            message: format!("SMTP: {} is no TLS server name: {e}", self.host),
                        }
                    })?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|e| transient("TLS", &e))?
                    .map_err(|e| transient("TLS", &e))?;
                Box::new(TlsStream(tls))
            }
        };
        let hello = ClientId::default();
        let mut conn = tokio::time::timeout(
            TIMEOUT,
            AsyncSmtpConnection::connect_with_transport(stream, &hello),
        )
        .await
        .map_err(|e| transient("greeting", &e))?
        .map_err(|e| smtp_error(&e))?;
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| smtp_error(&e))?;
        }
        Ok(conn)
    }

    /// Sends `mail` on `conn` (connecting when there is none, and once more when the kept one
    /// turns out closed).
    async fn deliver(
        &self,
        conn: &mut Option<AsyncSmtpConnection>,
        mail: &Message,
    ) -> Result<(), SendError> {
        let bytes = mail.formatted();
        for attempt in 0..2 {
            let c = match conn {
                Some(c) if !c.has_broken() => c,
                _ => conn.insert(self.connect().await?),
            };
            match tokio::time::timeout(TIMEOUT, c.send(mail.envelope(), &bytes)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.is_permanent() => return Err(smtp_error(&e)),
                Ok(Err(e)) => {
                    *conn = None;
                    if attempt == 1 {
                        return Err(smtp_error(&e));
                    }
                }
                Err(_) => {
                    *conn = None;
                    return Err(SendError {
                        kind: ErrorKind::Transient,
                        message: format!("SMTP: no answer within {} s", TIMEOUT.as_secs()),
                    });
                }
            }
        }
        Ok(())
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
            .body_text()?;
        let mut conn = None;
        self.deliver(&mut conn, &mail).await?;
        if let Some(mut c) = conn {
            let _ = c.quit().await;
        }
        Ok(())
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
            mailer,
            subscriptions,
            connection: None,
            progress: (0, HashSet::new()),
        }
    }

    /// The mails of a round: to each confirmed subscriber who asked for some of its changes,
    /// those changes, [`MAX_MAIL_CHANGES`] a mail at most (a flood of changes is several mails,
    /// never one a server refuses for its size). A mail the server refuses for good is split in
    /// two and each half sent again, down to one change; one change refused for good (an
    /// address the server does not know, say) is logged and counted, and the round goes on. A
    /// connection that fails fails the round, which is retried without the mails it delivered.
    pub(super) async fn send(&mut self, round: &Round) -> Result<(), SendError> {
        if self.progress.0 != round.number {
            self.progress = (round.number, HashSet::new());
            // Instances sharing a DynamoDB store share the subscriptions: read them again.
            if let Err(e) = self.subscriptions.refresh().await {
                tracing::warn!(error = %e, "cannot read the subscriptions again; mailing those known");
            }
        }
        for s in self.subscriptions.confirmed() {
            let changes: Vec<Change> = round
                .changes
                .iter()
                .filter(|c| s.wants(c))
                .cloned()
                .collect();
            // Pieces still to send, as ranges of `changes`, the next one last.
            let mut pieces: Vec<(usize, usize)> = (0..changes.len())
                .step_by(MAX_MAIL_CHANGES)
                .map(|at| (at, (at + MAX_MAIL_CHANGES).min(changes.len())))
                .rev()
                .collect();
            while let Some((from, to)) = pieces.pop() {
                // Pieces are cut the same way every time, so a retried round skips what went.
                let done = format!("{}\n{from}\n{to}", s.email);
                if self.progress.1.contains(&done) {
                    continue;
                }
                let piece = &changes[from..to];
                let sent = match alert_mail(&self.mailer, &s, piece) {
                    Ok(mail) => self.mailer.deliver(&mut self.connection, &mail).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(()) => METRICS.notification("smtp", true, 1),
                    Err(e) if e.kind == ErrorKind::Permanent && piece.len() > 1 => {
                        METRICS.notification("smtp", false, 1);
                        let half = from + piece.len() / 2;
                        tracing::warn!(email = %s.email, changes = piece.len(), error = %e, "alert mail refused; sending it in two halves");
                        pieces.push((half, to));
                        pieces.push((from, half));
                    }
                    Err(e) if e.kind == ErrorKind::Permanent => {
                        METRICS.notification("smtp", false, 1);
                        tracing::error!(email = %s.email, alert = %piece[0].alert_id(), error = %e, "alert mail refused for good: not sent to this subscriber");
                    }
                    Err(e) => {
                        METRICS.notification("smtp", false, 1);
                        return Err(e);
                    }
                }
                self.progress.1.insert(done);
            }
        }
        Ok(())
    }
}

/// Changes in one alert mail at most (a few hundred kilobytes: far below the 10 MB a server
/// such as Postfix takes).
pub const MAX_MAIL_CHANGES: usize = 1_000;

/// A lettre error as ours: a 5xx reply is permanent, the rest (4xx, the network) transient.
fn smtp_error(e: &lettre::transport::smtp::Error) -> SendError {
    SendError {
        kind: if e.is_permanent() {
            ErrorKind::Permanent
        } else {
            ErrorKind::Transient
        },
        message: format!("SMTP: {e}"),
    }
}

/// A TLS connection as lettre takes a stream.
#[derive(Debug)]
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The mail of `changes` to subscriber `s`.
fn alert_mail(mailer: &Mailer, s: &Subscription, changes: &[Change]) -> Result<Message, SendError> {
    let unsubscribe = format!(
        "{}/subscriptions/unsubscribe?token={}",
        mailer.public_url, s.token
    );
    let dashboard = format!("{}/", mailer.public_url);
    let mut body = message::text(changes, &dashboard);
    body.push_str(&format!(
        "\nYou get this because {} subscribed to these alerts. To stop them, open:\n{unsubscribe}\n",
        s.email
    ));
    let ids: Vec<String> = changes.iter().map(Change::alert_id).collect();
    // In the header, a comma or percent sign of a name is percent-encoded, so that a name
    // holding ", " cannot make a list of ids that were never sent.
    let listed: Vec<String> = ids
        .iter()
        .map(|id| id.replace('%', "%25").replace(',', "%2C"))
        .collect();
    // The same subscriber and the same changes give the same Message-ID.
    let digest = md5::compute(format!("{}\n{}", s.email, ids.join("\n")));
    mailer
        .message(&s.email, &message::subject(changes), body)?
        .message_id(Some(format!("<{digest:x}@stampede>")))
        .header("X-Stampede-Alerts", listed.join(", "))
        .header("List-Unsubscribe", format!("<{unsubscribe}>"))
        .header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into())
        .body_text()
}

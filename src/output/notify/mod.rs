//! The alert output: logs every state change and sends notifications through the configured
//! channels ([`sns`], [`smtp`]), grouped and paced, with the exactly-once
//! discipline of CONTRACT §7.
//!
//! # Exactly one notification per change
//!
//! The engine task of a partition evaluates the rules and sends its changes down the fan-out,
//! followed (at most once a second) by the barrier of a checkpoint that carries the alert state
//! as of its last record. Here, changes from a re-readable partition (Kafka, Kinesis) wait until
//! a barrier has come after them: they are then *ready*, and go out at the next round. The
//! barrier is answered only once the round that sent them is over, so the source commits a
//! checkpoint only after every change before it was notified, and the checkpoint's alert state
//! tells the next owner (after a SIGKILL, or when the partition moves) which changes were
//! notified: it re-reads the records after it and makes exactly the changes that were not.
//!
//! What is left is the time between a round's last send and the commit of the checkpoint that
//! covers it (the commit itself: milliseconds). A crash inside it sends those changes again;
//! the SMTP `Message-ID` and the SNS `AlertId` attribute derive from the alert ids, so that a
//! receiver can tell. Changes of an HTTP or file partition (no checkpoints) are ready at once.
//!
//! # Grouping and pacing
//!
//! A round sends everything ready, at once when the last round is longer than
//! `alerts.group_interval_secs` ago, else when that interval has passed: a thousand unicorns
//! crossing together make one mail per subscriber, not a thousand. A partition that hands off
//! (its last barrier) gets its round at once, so that the next owner is not kept waiting.
//! Channels pace themselves within a round (SNS: at most 10 publishes a second).
//!
//! # A channel that fails
//!
//! A round that a channel fails is retried with backoff, from that channel on (each channel
//! remembers whom it reached), and the output is down on `/readyz` meanwhile. Changes go on
//! being taken, so summaries and the dashboard are not held up by a mail server, until
//! [`MAX_HELD`] changes are held: then the engines wait. The barriers behind unsent changes
//! stay unanswered, so nothing is committed past them: a crash meanwhile loses nothing.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod message;
pub mod smtp;
pub mod sns;

pub use message::{subject, text, truncate, Round, SendError};

use crate::alert::{Change, State};
use crate::backoff::Backoff;
use crate::metrics::METRICS;
use crate::output::store::notification_log::{Claim, NotificationLog};
use crate::output::store::subscriptions::Subscriptions;
use crate::output::store::Stores;
use crate::output::{Barrier, ErrorKind, Health, Item};
use crate::setting::BadSetting;

/// A way of telling people.
pub enum Channel {
    /// An Amazon SNS topic.
    Sns(sns::SnsChannel),
    /// The built-in e-mail subscriptions.
    Smtp(Box<smtp::SmtpChannel>),
}

impl Channel {
    /// The metric label and log name.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Sns(_) => "sns",
            Channel::Smtp(_) => "smtp",
        }
    }

    /// Sends one round. A channel that fails part-way remembers what it has sent, so that a
    /// retry of the same round sends only the rest.
    async fn send(&mut self, round: &Round) -> Result<(), SendError> {
        match self {
            Channel::Sns(c) => c.send(round).await,
            Channel::Smtp(c) => c.send(round).await,
        }
    }
}

/// The alert output's settings.
pub struct NotifySettings {
    /// At most one round this often.
    pub group_interval: Duration,
    /// The channels (none: changes are only logged).
    pub channels: Vec<Channel>,
    /// Which changes were sent, by anyone (none: only the checkpoints say).
    pub log: Option<NotificationLog>,
}

/// The alert output's settings (`[alerts]`, CONTRACT §7).
pub struct Settings {
    /// `alerts.sns.topic_arn`: publish every change to this topic (empty: no SNS).
    pub sns_topic: String,
    /// `[alerts.smtp]`: the built-in e-mail channel, when a server is configured.
    pub smtp: Option<SmtpSettings>,
    /// At most one round of notifications this often.
    pub group_interval: Duration,
    /// The DynamoDB notification log (with a DynamoDB store).
    pub notification_table: String,
    /// Create it when missing.
    pub create_tables: bool,
}

/// The built-in e-mail channel's settings.
pub struct SmtpSettings {
    /// `smtp://HOST:PORT` or `smtps://HOST:PORT`.
    pub server: String,
    /// The sender.
    pub from: String,
    /// The base of the links in mails.
    pub public_url: String,
    /// Subscriptions kept at most.
    pub max_subscriptions: usize,
    /// The DynamoDB subscription table (with a DynamoDB store).
    pub subscription_table: String,
    /// Create the table when missing.
    pub create_tables: bool,
}

/// What the web API needs of the built-in e-mail channel: its subscriptions and a mailer of its
/// own (for confirmation mails).
pub type Mail = (Subscriptions, std::sync::Arc<smtp::Mailer>);

/// Registers the alert output with its channels: SNS when a topic is set, the built-in e-mail
/// when a server is. Returns the built-in channel's subscriptions and mailer, if on.
///
/// # Errors
/// The topic cannot be used, the SMTP settings are wrong (a [`BadSetting`]), or the
/// subscriptions cannot be read.
pub async fn build(
    settings: Settings,
    aws: &crate::clients::aws::Aws,
    stores: &Stores,
    outputs: &mut crate::output::Outputs,
) -> anyhow::Result<Option<Mail>> {
    use anyhow::Context as _;
    let mut channels = Vec::new();
    if !settings.sns_topic.is_empty() {
        let topic = &settings.sns_topic;
        let client = aws_sdk_sns::Client::new(aws.config().await);
        client
            .get_topic_attributes()
            .topic_arn(topic)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "alerts.sns.topic_arn: cannot use topic {topic:?}: {} (AWS_REGION, AWS_ENDPOINT_URL_SNS)",
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                )
            })?;
        channels.push(Channel::Sns(sns::SnsChannel::new(client, topic)));
    }
    let mut mail = None;
    if let Some(s) = &settings.smtp {
        // A bad server or sender is a config error.
        let mailer =
            || smtp::Mailer::new(&s.server, &s.from, &s.public_url).map_err(BadSetting::invalid);
        let subs = match stores {
            Stores::Embedded(store) => {
                Subscriptions::embedded(store.database(), s.max_subscriptions)
                    .await
                    .context("cannot read the alert subscriptions (store.path)")?
            }
            Stores::DynamoDb { .. } => Subscriptions::dynamodb(
                aws.config().await,
                &s.subscription_table,
                s.create_tables,
                s.max_subscriptions,
            )
            .await
            .context(
                "store.subscription_table (store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)",
            )?,
        };
        channels.push(Channel::Smtp(Box::new(smtp::SmtpChannel::new(
            mailer()?,
            subs.clone(),
        ))));
        mail = Some((subs, std::sync::Arc::new(mailer()?)));
        tracing::info!(server = %s.server, links = %s.public_url, "alert e-mail through SMTP");
    }
    let rx = outputs.add(
        "alerts",
        crate::output::Interest {
            alerts: true,
            ..crate::output::Interest::default()
        },
    );
    let log = if channels.is_empty() {
        None
    } else {
        Some(match stores {
            Stores::Embedded(store) => NotificationLog::embedded(store.database())
                .context("cannot open the notification log (store.path)")?,
            Stores::DynamoDb { .. } => NotificationLog::dynamodb(
                aws.config().await,
                &settings.notification_table,
                settings.create_tables,
                crate::clients::instance_name(),
            )
            .await
            .context(
                "store.notification_table (store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)",
            )?,
        })
    };
    let health = Health::new("alerts");
    let notify = NotifySettings {
        group_interval: settings.group_interval,
        channels,
        log,
    };
    outputs.run(
        "alerts",
        spawn(notify, rx, health.clone(), outputs.give_up()),
        health,
    );
    Ok(mail)
}

/// Starts the alert output on its channel `rx`.
pub fn spawn(
    settings: NotifySettings,
    rx: mpsc::Receiver<Item>,
    health: Health,
    give_up: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(settings, rx, health, give_up))
}

/// Changes held (received, not yet notified) before the alert output stops taking more and
/// the engines wait: while a channel is down, the pipeline goes on (summaries, the dashboard)
/// until this many pile up.
pub const MAX_HELD: usize = 100_000;

struct Notifier {
    settings: NotifySettings,
    /// Changes received that no barrier has followed yet.
    waiting: Vec<Change>,
    /// Changes to send in the next round.
    ready: Vec<Change>,
    /// Barriers to answer once the next round is over (only while `ready` is not empty).
    barriers: Vec<Barrier>,
    /// The round being sent (retried while a channel fails), with the barriers it answers.
    in_flight: Option<InFlight>,
    last_round: Option<Instant>,
    rounds: u64,
    /// A hand-off asked for a round now.
    hurry: bool,
    health: Health,
    give_up: CancellationToken,
}

/// A round under way: which channel it has reached, and when to try again after a failure.
struct InFlight {
    round: Round,
    barriers: Vec<Barrier>,
    /// Its changes are claimed in the notification log (those sent already dropped).
    claimed: bool,
    channel: usize,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

async fn run(
    settings: NotifySettings,
    mut rx: mpsc::Receiver<Item>,
    health: Health,
    give_up: CancellationToken,
) {
    let mut n = Notifier {
        settings,
        waiting: Vec::new(),
        ready: Vec::new(),
        barriers: Vec::new(),
        in_flight: None,
        last_round: None,
        rounds: 0,
        hurry: false,
        health,
        give_up,
    };
    loop {
        let due = n.due();
        let retry_at = n.in_flight.as_ref().and_then(|f| f.retry_at);
        let may_start = n.in_flight.is_none() && !n.ready.is_empty();
        // Past MAX_HELD the engines wait — unless nothing could be sent without more (changes
        // that still wait for their barrier).
        let may_take = n.held() < MAX_HELD || (n.in_flight.is_none() && n.ready.is_empty());
        tokio::select! {
            item = rx.recv(), if may_take => match item {
                Some(item) => n.take(item),
                None => break,
            },
            () = tokio::time::sleep_until(due), if may_start => n.start_round(),
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
        }
        n.go_on().await;
        METRICS.alerts_pending.store(n.held() as i64, Relaxed);
    }
    // Shutdown: what was received still goes out (until shutdown gives up).
    n.ready.append(&mut n.waiting);
    loop {
        if n.in_flight.is_none() {
            if n.ready.is_empty() {
                break;
            }
            n.start_round();
        }
        n.attempt().await;
        if let Some(f) = &n.in_flight {
            if n.give_up.is_cancelled() {
                tracing::error!(changes = f.round.changes.len() + n.ready.len(), "stopping with alert notifications unsent: the next start re-reads and sends them");
                // Barriers dropped unanswered: the checkpoints behind them are not committed.
                break;
            }
            let at = f.retry_at.unwrap_or_else(Instant::now);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = n.give_up.cancelled() => {}
            }
        }
    }
    METRICS.alerts_pending.store(0, Relaxed);
}

impl Notifier {
    /// When the next round may go.
    fn due(&self) -> Instant {
        match self.last_round {
            Some(at) => at + self.settings.group_interval,
            None => Instant::now(),
        }
    }

    /// Changes received and not yet notified.
    fn held(&self) -> usize {
        self.waiting.len()
            + self.ready.len()
            + self.in_flight.as_ref().map_or(0, |f| f.round.changes.len())
    }

    fn take(&mut self, item: Item) {
        match item {
            Item::Alerts { changes, covered } => {
                for c in changes.iter() {
                    log(c);
                    METRICS.alert_change(&c.rule, c.state.as_str());
                }
                if covered {
                    self.waiting.extend(changes.iter().cloned());
                } else {
                    self.ready.extend(changes.iter().cloned());
                }
            }
            Item::Barrier(barrier) => {
                self.ready.append(&mut self.waiting);
                self.hurry |= barrier.last && !self.ready.is_empty();
                if !self.ready.is_empty() {
                    self.barriers.push(barrier);
                } else if let Some(f) = &mut self.in_flight {
                    // What came before it is all in the round under way.
                    f.barriers.push(barrier);
                } else {
                    // Nothing to notify before it.
                    barrier.done();
                }
            }
            Item::Summaries(..) | Item::DeadLetters(_) | Item::Records(_) | Item::Views { .. } => {}
        }
    }

    /// Sends what may go now: the round under way when its retry is due, and, after a
    /// hand-off's last barrier, the next one at once.
    async fn go_on(&mut self) {
        loop {
            if self.in_flight.is_none() && self.hurry && !self.ready.is_empty() {
                self.start_round();
            }
            let due = self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.retry_at.is_none_or(|at| at <= Instant::now()));
            if !due {
                return;
            }
            self.attempt().await;
            if self.in_flight.is_some() {
                return;
            }
        }
    }

    /// Makes everything ready the round under way, with the barriers that wait for it.
    fn start_round(&mut self) {
        self.rounds += 1;
        self.hurry = false;
        self.in_flight = Some(InFlight {
            round: Round {
                number: self.rounds,
                changes: std::mem::take(&mut self.ready),
            },
            barriers: std::mem::take(&mut self.barriers),
            claimed: false,
            channel: 0,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            retry_at: None,
        });
    }

    /// Sends the round under way through the channels it has not reached yet: first claims its
    /// changes in the notification log (dropping those sent already, and repeats of one change;
    /// waiting while another instance sends some), renews the claims before each channel, and
    /// last marks them sent there. When a step fails, the round waits for its retry (changes go
    /// on being taken meanwhile); when all are done, the barriers that waited for it are
    /// answered.
    async fn attempt(&mut self) {
        let Some(f) = &mut self.in_flight else {
            return;
        };
        let started = Instant::now();
        let channels = self.settings.channels.len();
        if !f.claimed && self.settings.log.is_some() {
            // A woken instance can hold a change that its re-read made again: once is enough.
            let before = f.round.changes.len();
            let mut seen = std::collections::HashSet::new();
            f.round
                .changes
                .retain(|c| seen.insert((c.alert_id(), c.state.as_str())));
            let repeated = before - f.round.changes.len();
            METRICS
                .alerts_already_sent
                .fetch_add(repeated as u64, Relaxed);
        }
        let mut taken_over = false;
        loop {
            if let Some(log) = self
                .settings
                .log
                .as_ref()
                .filter(|_| f.channel < channels && !f.round.changes.is_empty())
            {
                // Claimed before the first channel, renewed before each next one and at every
                // try: a round held up by a channel keeps its claims fresh.
                match log.claim(&f.round.changes).await {
                    Err(e) => {
                        failed(&self.health, f, "notification log", &e, !e.permanent);
                        return;
                    }
                    Ok(claims) if !f.claimed => {
                        if claims.contains(&Claim::Held) {
                            let held = claims.iter().filter(|c| **c == Claim::Held).count();
                            tracing::info!(
                                held,
                                "alert changes being sent by another instance; waiting for it"
                            );
                            f.retry_at = Some(Instant::now() + f.backoff.next_wait());
                            return;
                        }
                        let before = f.round.changes.len();
                        let mut claims = claims.iter();
                        f.round
                            .changes
                            .retain(|_| claims.next() == Some(&Claim::Mine));
                        let sent = before - f.round.changes.len();
                        if sent > 0 {
                            METRICS.alerts_already_sent.fetch_add(sent as u64, Relaxed);
                            tracing::info!(
                                changes = sent,
                                "alert changes sent already (the notification log says): not sent again"
                            );
                        }
                        f.claimed = true;
                        continue;
                    }
                    Ok(claims) => {
                        if claims.iter().any(|c| *c != Claim::Mine) {
                            // Held up past the claims' age (a pause): another instance took them
                            // over. Its partitions are gone too, so its checkpoints commit
                            // nothing.
                            tracing::warn!(
                                changes = f.round.changes.len(),
                                "another instance took these alert changes over while this one was held up: not sending them further"
                            );
                            taken_over = true;
                            break;
                        }
                    }
                }
            }
            let Some(channel) = self
                .settings
                .channels
                .get_mut(f.channel)
                .filter(|_| !f.round.changes.is_empty())
            else {
                break;
            };
            self.health.busy(true);
            let sent = channel.send(&f.round).await;
            self.health.busy(false);
            match sent {
                Ok(()) => {
                    f.channel += 1;
                    f.backoff.reset();
                }
                Err(e) => {
                    let transient = e.kind == ErrorKind::Transient;
                    failed(&self.health, f, channel.name(), &e, transient);
                    return;
                }
            }
        }
        f.channel = channels;
        if let Some(log) = self.settings.log.as_ref().filter(|_| !taken_over) {
            if !f.round.changes.is_empty() {
                if let Err(e) = log.sent(&f.round.changes).await {
                    failed(&self.health, f, "notification log", &e, !e.permanent);
                    return;
                }
            }
        }
        self.health.set(true);
        tracing::debug!(changes = f.round.changes.len(), took = ?started.elapsed(), "alert round sent");
        for barrier in f.barriers.drain(..) {
            barrier.done();
        }
        self.in_flight = None;
        self.last_round = Some(Instant::now());
    }
}

/// A step of round `f` failed: the output is down with the error (at once when it is
/// permanent), and the round is tried again after its backoff.
fn failed(
    health: &Health,
    f: &mut InFlight,
    step: &str,
    e: &dyn std::fmt::Display,
    transient: bool,
) {
    let kind = if transient {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    };
    health.failed(kind, e);
    if transient {
        tracing::warn!(step, error = %e, retry_in = ?f.backoff.peek(), "alert notification failed; retrying");
        health.down(e);
    }
    f.retry_at = Some(Instant::now() + f.backoff.next_wait());
}

/// Every change goes to the log, channels or not.
fn log(c: &Change) {
    let mut value = String::new();
    c.value.write_json(&mut value);
    let mut at = String::new();
    crate::time::write_status_time(&mut at, c.status_time);
    match c.state {
        State::Firing => {
            tracing::warn!(rule = %c.rule, name = %c.name, field = c.field.as_str(), value = %value, threshold = c.threshold, status_time = %at, "alert firing");
        }
        State::Resolved => {
            tracing::info!(rule = %c.rule, name = %c.name, field = c.field.as_str(), value = %value, threshold = c.threshold, status_time = %at, "alert resolved");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Direction, Measure, Value};

    fn change(name: &str, state: State, value: i64) -> Change {
        Change {
            rule: "low-health".into(),
            name: name.into(),
            state,
            field: Measure::HealthPoints,
            value: Value::Int(value),
            threshold: 100.0,
            direction: Direction::Below,
            clear: 105.0,
            status_time: 0,
        }
    }

    #[test]
    fn subjects_say_what_changed_in_under_100_characters() {
        assert_eq!(
            subject(&[change("Shadowfax", State::Firing, 99)]),
            "FIRING low-health: Shadowfax HealthPoints 99 < 100"
        );
        assert_eq!(
            subject(&[change("Shadowfax", State::Resolved, 106)]),
            "RESOLVED low-health: Shadowfax HealthPoints 106 >= 105"
        );
        let flapping = [
            change("Pegasus", State::Firing, 99),
            change("Pegasus", State::Resolved, 105),
            change("Arion", State::Firing, 90),
        ];
        assert_eq!(subject(&flapping), "2 firing, 1 resolved: Pegasus Arion");
        let many: Vec<Change> = (0..100)
            .map(|i| change(&format!("unicorn-{i}"), State::Firing, 1))
            .collect();
        let s = subject(&many);
        assert!(s.len() < 100 && s.ends_with(" ..."), "{s}");
        let long = change(&"🦄".repeat(40), State::Firing, 1);
        assert!(subject(&[long]).len() < 100);
    }
}

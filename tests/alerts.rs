//! Alerts end to end (CONTRACT §7) against the real SMTP server and SNS emulator the test script
//! starts: subscriptions confirmed through the links in their mails, one mail per change per
//! subscriber, grouping, the unsubscribe links, the API's refusals, SNS attributes and filters,
//! and exactly-once notification across a SIGKILL.
//!
//! The expected changes are derived by hand from the records each test sends (the default
//! rules: below 100 fires, 105 resolves), not from the program.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::aws::{self, Aws};
use crate::support::mail::{await_mails, await_mails_within, mails_to, smtp_server, Mail};
use crate::support::poll::{wait_until, wait_until_within, LONG};
use crate::support::process::stampede;
use crate::support::service::{line, request, request_with, temp_dir, TestApp};

const T: &str = "2026-01-01 00:00:";

pub(crate) fn at(secs: u32) -> String {
    format!("{T}{secs:02}.000")
}

pub(crate) fn unique_address(who: &str) -> String {
    format!("{who}-{}@example.com", crate::support::kafka::unique("m"))
}

async fn ingest(addr: std::net::SocketAddr, lines: &[String]) {
    let body = lines.join("\n");
    let (status, body) = request(addr, Method::POST, "/ingest", body, None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["rejected"], 0, "{v}");
}

/// The path (and query) of a link in a mail, to request it from the service.
fn path_of(link: &str) -> String {
    let rest = link.split_once("://").unwrap().1;
    format!("/{}", rest.split_once('/').unwrap().1)
}

pub(crate) async fn subscribe(addr: std::net::SocketAddr, body: Value) -> (StatusCode, Value) {
    let (status, body) = request(
        addr,
        Method::POST,
        "/api/subscriptions",
        body.to_string(),
        None,
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Follows the confirmation link of `email`'s mail as a person would: the page (a GET changes
/// nothing), then its button (a POST).
pub(crate) async fn confirm_by_mail(addr: std::net::SocketAddr, email: &str) {
    confirm_nth_by_mail(addr, email, 0).await;
}

/// As [`confirm_by_mail`], with the `n`th confirmation mail `email` got (from a second service).
pub(crate) async fn confirm_nth_by_mail(addr: std::net::SocketAddr, email: &str, n: usize) {
    confirm_nth_in(&crate::support::mail::maildir(), addr, email, n).await;
}

/// As [`confirm_by_mail`], with the mail in the Maildir `maildir` (a test's own SMTP server).
pub(crate) async fn confirm_by_mail_in(
    maildir: &std::path::Path,
    addr: std::net::SocketAddr,
    email: &str,
) {
    confirm_nth_in(maildir, addr, email, 0).await;
}

async fn confirm_nth_in(
    maildir: &std::path::Path,
    addr: std::net::SocketAddr,
    email: &str,
    n: usize,
) {
    let confirmations = |m: &[Mail]| -> Vec<Mail> {
        m.iter()
            .filter(|m| m.header("subject").starts_with("Confirm"))
            .cloned()
            .collect()
    };
    let mut mails = Vec::new();
    wait_until("the confirmation mail", || {
        mails = crate::support::mail::mails_in(maildir, email);
        confirmations(&mails).len() > n
    });
    let link = confirmations(&mails)[n].link("/subscriptions/confirm");
    let (status, page) = request(addr, Method::GET, &path_of(&link), Bytes::new(), None).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<form method=\"post\""), "{page}");
    assert_eq!(
        state_of(addr, email).await,
        "pending",
        "a GET confirms nobody"
    );
    let (status, page) = request(addr, Method::POST, &path_of(&link), Bytes::new(), None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&page));
    assert_eq!(state_of(addr, email).await, "confirmed");
}

async fn state_of(addr: std::net::SocketAddr, email: &str) -> String {
    let (_, body) = request(addr, Method::GET, "/api/subscriptions", Bytes::new(), None).await;
    let list: Vec<Value> = serde_json::from_slice(&body).unwrap();
    list.iter()
        .find(|s| s["email"] == email)
        .map_or("absent".into(), |s| s["state"].as_str().unwrap().to_owned())
}

/// The alert ids of the alert mails (not the confirmation) among `mails`, each with how many
/// mails carried it.
pub(crate) fn alert_ids(mails: &[Mail]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for m in mails {
        for id in m.alert_ids() {
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

pub(crate) fn once(ids: &[String]) -> BTreeMap<String, usize> {
    ids.iter().map(|i| (i.clone(), 1)).collect()
}

pub(crate) fn id(rule: &str, name: &str, secs: u32) -> String {
    format!("{rule}/{name}/{}", at(secs))
}

fn smtp_config(config: &mut stampede::config::Config, group_secs: u64) {
    config.alerts.smtp.server = format!("smtp://{}", smtp_server());
    config.alerts.group_interval_secs = group_secs;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_subscribers_get_one_mail_per_change_they_asked_for_and_none_after_unsubscribing()
{
    let app = TestApp::start("alerts-smtp", |c| smtp_config(c, 1)).await;
    let addr = app.addr;
    let all = unique_address("all");
    let health = unique_address("health");
    let only_b = unique_address("b");
    let never = unique_address("never");
    for (email, names, rules) in [
        (&all, vec![], vec![]),
        (&health, vec![], vec!["low-health"]),
        (&only_b, vec!["B"], vec![]),
        (&never, vec![], vec![]),
    ] {
        let (status, v) = subscribe(
            addr,
            serde_json::json!({"email": email, "names": names, "rules": rules}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["state"], "pending");
    }
    for email in [&all, &health, &only_b] {
        confirm_by_mail(addr, email).await;
    }
    // Hand-derived: A's health falls to 99 at :01 (fires), stays inside the band at 103, is
    // back at 105 at :03 (resolves); B's magic falls to 90 at :01 and is back at 106 at :03.
    ingest(
        addr,
        &[
            line("A", &at(0), 1.0, 150, 150),
            line("B", &at(0), 1.0, 150, 150),
            line("A", &at(1), 1.0, 99, 150),
            line("B", &at(1), 1.0, 150, 90),
        ],
    )
    .await;
    ingest(
        addr,
        &[
            line("A", &at(2), 1.0, 103, 150),
            line("A", &at(3), 1.0, 105, 150),
            line("B", &at(3), 1.0, 150, 106),
        ],
    )
    .await;
    let a_fire = id("low-health", "A", 1);
    let a_res = id("low-health", "A", 3);
    let b_fire = id("low-magic", "B", 1);
    let b_res = id("low-magic", "B", 3);
    let want_all = once(&[a_fire.clone(), a_res.clone(), b_fire.clone(), b_res.clone()]);
    let got = await_mails(&all, "every change mailed", |m| alert_ids(m).len() == 4);
    assert_eq!(alert_ids(&got), want_all);
    let got = await_mails(&health, "the health changes", |m| alert_ids(m).len() == 2);
    assert_eq!(alert_ids(&got), once(&[a_fire.clone(), a_res.clone()]));
    let got = await_mails(&only_b, "B's changes", |m| alert_ids(m).len() == 2);
    assert_eq!(alert_ids(&got), once(&[b_fire.clone(), b_res.clone()]));
    // Everything is sent: nothing pending, and no alert mail to the one who never confirmed.
    wait_until("nothing pending", || {
        crate::support::process::metric(&format!("http://{addr}"), "stampede_alerts_pending") == 0
    });
    let unconfirmed = mails_to(&never);
    assert_eq!(unconfirmed.len(), 1, "only the confirmation");
    assert!(unconfirmed[0].alert_ids().is_empty());

    // A readable mail with its unsubscribe headers.
    let mail = mails_to(&health)
        .into_iter()
        .find(|m| m.alert_ids().contains(&a_fire))
        .unwrap();
    assert!(mail.header("subject").contains(" A"), "{mail:?}");
    assert!(
        mail.body.contains("A's HealthPoints is 99"),
        "{}",
        mail.body
    );
    assert!(
        mail.body.contains("below the threshold of 100"),
        "{}",
        mail.body
    );
    assert_eq!(
        mail.header("list-unsubscribe-post"),
        "List-Unsubscribe=One-Click"
    );
    let unsubscribe = mail
        .header("list-unsubscribe")
        .trim_matches(['<', '>'])
        .to_owned();
    assert!(
        unsubscribe.contains("/subscriptions/unsubscribe?token="),
        "{unsubscribe}"
    );
    assert!(
        mail.header("message-id").ends_with("@stampede>"),
        "{mail:?}"
    );

    // The unsubscribe link: its page changes nothing, its button does.
    let (status, _) = request(
        addr,
        Method::GET,
        &path_of(&unsubscribe),
        Bytes::new(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state_of(addr, &health).await, "confirmed");
    let (status, _) = request(
        addr,
        Method::POST,
        &path_of(&unsubscribe),
        Bytes::new(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state_of(addr, &health).await, "absent");
    // RFC 8058 one-click, as a mail provider sends it.
    let b_mail = &mails_to(&only_b)[1];
    let one_click = b_mail
        .header("list-unsubscribe")
        .trim_matches(['<', '>'])
        .to_owned();
    let (status, _, _) = request_with(
        addr,
        Method::POST,
        &path_of(&one_click),
        &[("content-type", "application/x-www-form-urlencoded")],
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state_of(addr, &only_b).await, "absent");

    // A fires again at :05: only the subscriber left gets it.
    ingest(
        addr,
        &[
            line("A", &at(5), 1.0, 90, 150),
            line("B", &at(5), 1.0, 150, 90),
        ],
    )
    .await;
    let a_again = id("low-health", "A", 5);
    let b_again = id("low-magic", "B", 5);
    let got = await_mails(&all, "the new changes", |m| alert_ids(m).len() == 6);
    assert!(
        alert_ids(&got).values().all(|n| *n == 1),
        "{:?}",
        alert_ids(&got)
    );
    assert!(alert_ids(&got).contains_key(&a_again) && alert_ids(&got).contains_key(&b_again));
    wait_until("nothing pending", || {
        crate::support::process::metric(&format!("http://{addr}"), "stampede_alerts_pending") == 0
    });
    assert!(!alert_ids(&mails_to(&health)).contains_key(&a_again));
    assert!(!alert_ids(&mails_to(&only_b)).contains_key(&b_again));

    // The API lists the firing alerts and the changes.
    let (_, body) = request(addr, Method::GET, "/api/alerts", Bytes::new(), None).await;
    let firing: Vec<Value> = serde_json::from_slice(&body).unwrap();
    let firing: BTreeSet<&str> = firing
        .iter()
        .map(|a| a["AlertId"].as_str().unwrap())
        .collect();
    assert_eq!(firing, BTreeSet::from([a_again.as_str(), b_again.as_str()]));
    let (_, body) = request(
        addr,
        Method::GET,
        "/api/alerts?state=all&name=A",
        Bytes::new(),
        None,
    )
    .await;
    let changes: Vec<Value> = serde_json::from_slice(&body).unwrap();
    let changes: Vec<&str> = changes
        .iter()
        .map(|a| a["AlertId"].as_str().unwrap())
        .collect();
    assert_eq!(
        changes,
        [a_again.as_str(), a_res.as_str(), a_fire.as_str()],
        "newest first"
    );
    app.stop().await;
}

/// `stampede subscribe` and `unsubscribe` without `[alerts.sns]`: the running service's
/// built-in subscriptions, through its API with the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_subscribe_uses_the_running_services_subscriptions() {
    let app = TestApp::start("alerts-cli", |c| {
        smtp_config(c, 60);
        c.web.token = "s3cret".into();
    })
    .await;
    let url = format!("http://{}", app.addr);
    let email = unique_address("cli");
    let run = |args: &[&str], token: &str| {
        let out = stampede(args)
            .args(["--url", url.as_str()])
            .env("STAMPEDE_WEB_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["subscribe", "--email", &email], "wrong");
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = run(
        &["subscribe", "--email", &email, "--rule", "low-magic"],
        "s3cret",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("confirmation mail"), "{out}");
    let mails = await_mails(&email, "the confirmation mail", |m| !m.is_empty());
    let link = path_of(&mails[0].link("/subscriptions/confirm"));
    let (status, _) = request(app.addr, Method::POST, &link, Bytes::new(), None).await;
    assert_eq!(status, StatusCode::OK);
    let (code, _, err) = run(&["subscribe", "--email", &email], "s3cret");
    assert_eq!(code, Some(1));
    assert!(err.contains("already subscribed"), "{err}");
    let (code, _, err) = run(&["unsubscribe", "--email", &email], "s3cret");
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["unsubscribe", "--email", &email], "s3cret");
    assert_eq!(code, Some(1));
    assert!(err.contains("no subscription"), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscription_requests_get_clear_reasons() {
    let app = TestApp::start("alerts-bad-subscriptions", |c| {
        smtp_config(c, 60);
        c.alerts.max_subscriptions = 1;
        c.web.token = "s3cret".into();
    })
    .await;
    let addr = app.addr;
    let post = |body: &'static str, token: Option<&'static str>| async move {
        let (status, body) = request(addr, Method::POST, "/api/subscriptions", body, token).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let ok = format!(r#"{{"email":"{}"}}"#, unique_address("first"));
    let ok: &'static str = Box::leak(ok.into_boxed_str());
    let (status, _) = post(ok, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "admin: needs the token");
    for (body, status, reason) in [
        (
            r#"{"email":"not an address"}"#,
            400,
            "not an e-mail address",
        ),
        (
            r#"{"email":"ops@example.com","rules":["nope"]}"#,
            400,
            "no rule is named",
        ),
        (r#"{"mail":"ops@example.com"}"#, 400, "unknown field `mail`"),
        (r#"{"email":"ops@example.com","names":[""]}"#, 400, "names"),
    ] {
        let (got, text) = post(body, Some("s3cret")).await;
        assert_eq!(got.as_u16(), status, "{body}: {text}");
        assert!(text.contains(reason), "{body}: {text}");
    }
    let (status, text) = post(ok, Some("s3cret")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    // Asking again at once mails no second confirmation.
    let (status, text) = post(ok, Some("s3cret")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert!(text.contains("less than a minute ago"), "{text}");
    // A pending subscription younger than an hour holds its place (an older one would make
    // room: see the subscriptions' unit test).
    let (status, text) = post(r#"{"email":"second@example.com"}"#, Some("s3cret")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("alerts.max_subscriptions"), "{text}");
    // A line break in a filter's name would reach the confirmation mail's text.
    let (status, text) = post(
        r#"{"email":"fourth@example.com","names":["Shadowfax\r\nBcc: x@example.com"]}"#,
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("not a unicorn name"), "{text}");
    let (status, _) = request(
        addr,
        Method::DELETE,
        "/api/subscriptions/nobody@example.com",
        Bytes::new(),
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A forged link changes nothing.
    let (status, _) = request(
        addr,
        Method::POST,
        "/subscriptions/confirm?token=forged",
        Bytes::new(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// A thousand unicorns crossing in the same minute, arriving over several requests: the first
/// round goes at once, the rest waits for the group interval; each subscriber gets at most one
/// mail per interval, and every change exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unicorns_crossing_at_once_make_one_mail_per_group_interval() {
    let interval_secs = 3;
    let app = TestApp::start("alerts-storm", |c| smtp_config(c, interval_secs)).await;
    let addr = app.addr;
    let ops = unique_address("storm");
    let (status, _) = subscribe(addr, serde_json::json!({"email": ops})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    confirm_by_mail(addr, &ops).await;
    let started = std::time::Instant::now();
    let mut want = Vec::new();
    for batch in 0..10 {
        let lines: Vec<String> = (0..100)
            .map(|i| {
                let name = format!("u{:04}", batch * 100 + i);
                want.push(id("low-health", &name, 7));
                line(&name, &at(7), 1.0, 42, 150)
            })
            .collect();
        ingest(addr, &lines).await;
    }
    // Longer: a thousand changes, mailed one group interval after another.
    let mails = await_mails_within(LONG, &ops, "a thousand changes mailed", |m| {
        alert_ids(m).len() == 1_000
    });
    let elapsed = started.elapsed().as_secs_f64();
    let alert_mails: Vec<&Mail> = mails.iter().filter(|m| !m.alert_ids().is_empty()).collect();
    assert_eq!(alert_ids(&mails), once(&want), "each change once");
    let allowed = 1 + (elapsed / interval_secs as f64).floor() as usize;
    assert!(
        alert_mails.len() <= allowed,
        "{} mails in {elapsed:.1} s with a {interval_secs} s interval",
        alert_mails.len()
    );
    assert!(alert_mails[0].header("subject").len() < 100);
    app.stop().await;
}

/// Kafka, SIGKILL and restart: the changes mailed before the kill are not mailed again (the
/// checkpoint carries the alert state, though the records of the open window are re-read), and
/// those made but not yet mailed when it died, or made while it was down, are mailed once after.
#[test]
fn a_sigkilled_kafka_instance_mails_every_change_exactly_once() {
    use crate::support::process::metric;
    // Long: what is not sent at once waits, and is pending when the kill comes.
    let k = KafkaAlerts::new("alerts-kill", "30");
    let serve = || k.serve("store");
    let first = serve();
    wait_until_within(LONG, "partitions assigned", || {
        metric(&first.url, "stampede_source_partitions") == 2
    });
    let ops = k.first_change_mailed(&first.url, "kill");
    let send = |p: i32, l: String| k.send(p, l);
    let a_fire = id("low-health", "A", 1);
    let b_fire = id("low-magic", "B", 1);
    // B fires, A resolves; the round that would mail them is 30 s away when the kill comes.
    send(1, line("B", &at(1), 1.0, 150, 90));
    send(0, line("A", &at(10), 1.0, 105, 150));
    wait_until("B's alert and A's resolution made", || {
        metric(&first.url, "stampede_alerts_pending") == 2
    });
    first.kill();
    // While it is down: B resolves, C fires.
    send(1, line("B", &at(12), 1.0, 150, 110));
    send(0, line("C", &at(12), 1.0, 50, 150));
    let second = serve();
    let want = once(&[
        a_fire,
        b_fire,
        id("low-health", "A", 10),
        id("low-magic", "B", 12),
        id("low-health", "C", 12),
    ]);
    let mails = await_mails_within(LONG, &ops, "every change mailed", |m| {
        alert_ids(m).len() == want.len()
    });
    wait_until("nothing pending", || {
        metric(&second.url, "stampede_alerts_pending") == 0
            && metric(&second.url, "stampede_records_in_total") >= 7
    });
    assert_eq!(alert_ids(&mails_to(&ops)), want, "each change exactly once");
    assert!(
        metric(&second.url, "stampede_records_in_total") >= 7,
        "the restart re-read the open window's records"
    );
    drop(mails);
    drop(second);
}

/// Kafka, an instance paused (SIGSTOP) past its session while changes wait for their round:
/// the group drops it, and when it wakes it still holds those changes while its partitions are
/// given back and re-read from the last commit, which makes the same changes again. Each is
/// mailed once: the notification log says which were sent before anything is sent.
#[test]
fn a_kafka_instance_paused_past_its_session_mails_every_change_exactly_once() {
    use crate::support::process::metric;
    let k = KafkaAlerts::new("alerts-pause", "20");
    let archive = k.dir.join("archive");
    let serve = k.serve_with(
        "store",
        &[
            ("STAMPEDE_ARCHIVE_KIND", "dir"),
            ("STAMPEDE_ARCHIVE_PATH", archive.to_str().unwrap()),
            ("STAMPEDE_ARCHIVE_BUFFER_SECS", "1"),
        ],
    );
    wait_until_within(LONG, "partitions assigned", || {
        metric(&serve.url, "stampede_source_partitions") == 2
    });
    let ops = k.first_change_mailed(&serve.url, "pause");
    let send = |p: i32, l: String| k.send(p, l);
    // B fires, A resolves; their round is 20 s away when the pause comes.
    send(1, line("B", &at(1), 1.0, 150, 90));
    send(0, line("A", &at(10), 1.0, 105, 150));
    wait_until("B's alert and A's resolution made", || {
        metric(&serve.url, "stampede_alerts_pending") == 2
    });
    serve.send("-STOP");
    // Past the 6 s session: the broker drops the member.
    std::thread::sleep(std::time::Duration::from_secs(12));
    serve.send("-CONT");
    let want = once(&[
        id("low-health", "A", 1),
        id("low-magic", "B", 1),
        id("low-health", "A", 10),
    ]);
    await_mails_within(LONG, &ops, "every change mailed", |m| {
        alert_ids(m).len() == want.len()
    });
    // The rejoin and the re-read made the two changes again; the log said they were sent.
    wait_until_within(LONG, "the changes made again found sent", || {
        metric(&serve.url, "stampede_source_partitions") == 2
            && metric(&serve.url, "stampede_alerts_already_sent_total") >= 2
            && metric(&serve.url, "stampede_alerts_pending") == 0
    });
    assert_eq!(alert_ids(&mails_to(&ops)), want, "each change exactly once");
    // Every window as `aggregate` computes it, on the summary topic and in the store; every
    // record archived once.
    use crate::support::kafka::{
        assert_same, await_summaries, close_all_windows, expected, keep_newest, read_topic,
        Summaries,
    };
    close_all_windows(&k.brokers, &k.topic, 2, "2026-01-01 02:00:00");
    let partitions = read_topic(&k.brokers, &k.topic);
    let (windows, _) = expected(&partitions, &k.dir);
    assert_same(
        &await_summaries(&k.brokers, &k.summaries, &windows),
        &windows,
    );
    let mut stored = Summaries::new();
    wait_until_within(LONG, "every window stored", || {
        stored = Summaries::new();
        let url = format!("{}/api/summaries?limit=100", serve.url);
        for v in crate::support::process::http_get_json(&url)
            .as_array()
            .unwrap()
        {
            keep_newest(&mut stored, v.clone());
        }
        stored == windows
    });
    assert_same(&stored, &windows);
    let records = crate::archive::accepted(partitions.into_iter().flatten().map(|m| m.payload));
    let total: u32 = records.values().sum();
    wait_until_within(LONG, "every record archived", || {
        crate::archive::archived_lines(&archive)
            .values()
            .sum::<u32>()
            >= total
    });
    assert!(crate::support::process::signal(serve, "-TERM").success());
    crate::archive::assert_exactly_once(&crate::archive::archived_lines(&archive), &records);
}

/// SNS through moto: every change published with the attributes of CONTRACT §7 (one message
/// per change while few; a pile grouped into at most ten, `String.Array`), at most ten a
/// second, and a subscriber's filter policy on `Name` gets only its unicorn's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_publishes_each_change_with_its_attributes_and_filter_policies_select() {
    use crate::support::sns::{published, Published, Receiver};
    let sns = aws::sns().await;
    let topic = crate::support::sns::create_topic(&sns).await;
    let only_a = Receiver::start().await;
    let everything = Receiver::start().await;
    for (r, policy) in [(&only_a, Some(r#"{"Name":["A"]}"#)), (&everything, None)] {
        let mut s = sns
            .subscribe()
            .topic_arn(&topic)
            .protocol("http")
            .endpoint(&r.url);
        if let Some(p) = policy {
            s = s.attributes("FilterPolicy", p);
        }
        s.send().await.unwrap();
    }
    let dir = temp_dir("alerts-sns");
    let mut env = aws::env(&[Aws::Sns]);
    env.push(("STAMPEDE_ALERTS_SNS_TOPIC_ARN", topic.clone()));
    env.push(("STAMPEDE_ALERTS_GROUP_INTERVAL_SECS", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = crate::support::process::start_service_with(&["serve"], &dir, &env);
    let addr: std::net::SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();
    // Three changes: A fires (:01), B fires (:01), A resolves (:03).
    ingest(
        addr,
        &[
            line("A", &at(1), 1.0, 99, 150),
            line("B", &at(1), 1.0, 150, 90),
        ],
    )
    .await;
    ingest(addr, &[line("A", &at(3), 1.0, 106, 150)]).await;
    wait_until("three publishes", || published(&topic).len() == 3);
    let p = published(&topic);
    assert_eq!(p[0].subject, "FIRING low-health: A HealthPoints 99 < 100");
    assert_eq!(
        p[2].subject,
        "RESOLVED low-health: A HealthPoints 106 >= 105"
    );
    let attr = |m: &Published, name: &str| {
        (
            m.attributes[name]["Type"].as_str().unwrap_or("").to_owned(),
            m.attributes[name]["Value"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    let s = |v: &str| ("String".to_owned(), v.to_owned());
    assert_eq!(attr(&p[0], "AlertId"), s(&id("low-health", "A", 1)));
    assert_eq!(attr(&p[0], "Rule"), s("low-health"));
    assert_eq!(attr(&p[0], "Name"), s("A"));
    assert_eq!(attr(&p[0], "State"), s("firing"));
    assert_eq!(attr(&p[0], "Value"), ("Number".to_owned(), "99".to_owned()));
    assert_eq!(attr(&p[1], "AlertId"), s(&id("low-magic", "B", 1)));
    assert_eq!(attr(&p[2], "State"), s("resolved"));
    assert!(
        p[0].message.contains("A's HealthPoints is 99"),
        "{}",
        p[0].message
    );

    // A pile: 25 unicorns at once (A among them) make one round of at most ten messages.
    let mut lines = vec![line("A", &at(20), 1.0, 50, 150)];
    let mut want = vec![id("low-health", "A", 20)];
    for i in 0..24 {
        let name = format!("p{i:02}");
        lines.push(line(&name, &at(20), 1.0, 50, 150));
        want.push(id("low-health", &name, 20));
    }
    ingest(addr, &lines).await;
    // A group's ids are a String.Array; a message of one change has its id as a String.
    let ids = |m: &Published| -> Vec<String> {
        let (kind, value) = attr(m, "AlertId");
        if kind == "String.Array" {
            serde_json::from_str(&value).unwrap()
        } else {
            vec![value]
        }
    };
    wait_until("the pile published", || {
        published(&topic)[3..]
            .iter()
            .map(|m| ids(m).len())
            .sum::<usize>()
            == 25
    });
    let pile = published(&topic)[3..].to_vec();
    assert!(pile.len() <= 10, "{} messages", pile.len());
    for m in &pile {
        assert_eq!(m.attributes["AlertId"]["Type"], "String.Array");
        assert_eq!(m.attributes["Name"]["Type"], "String.Array");
        assert!(m.attributes.get("Value").is_none());
        assert!(m.subject.len() < 100, "{}", m.subject);
    }
    let in_order: Vec<String> = pile.iter().flat_map(ids).collect();
    assert_eq!(in_order, want, "every change once, in order");
    // Paced: at most ten a second reach a subscriber.
    wait_until("every message delivered", || {
        everything.notifications().len() == 3 + pile.len()
    });
    let times: Vec<std::time::Instant> =
        everything.notifications().iter().map(|(t, _)| *t).collect();
    let span = times[times.len() - 1].duration_since(times[3]);
    assert!(
        span.as_secs_f64() >= (pile.len() - 1) as f64 / 10.0 * 0.9,
        "{} messages in {span:?}",
        pile.len()
    );
    // The filter policy: A's messages only (its two changes, and the group holding A).
    let to_a = only_a.notifications();
    let subjects: Vec<&str> = to_a
        .iter()
        .map(|(_, v)| v["Subject"].as_str().unwrap())
        .collect();
    assert_eq!(to_a.len(), 3, "{subjects:?}");
    assert!(subjects[0].contains(": A "), "{subjects:?}");
    assert!(subjects[2].contains(" A "), "{subjects:?}");
    drop(serve);
}

/// `stampede subscribe --email` with `[alerts.sns]`: an e-mail subscription to the topic with
/// the filter as its `FilterPolicy`; `unsubscribe` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_subscribe_makes_an_sns_email_subscription_with_a_filter_policy() {
    let sns = aws::sns().await;
    let topic = crate::support::sns::create_topic(&sns).await;
    let mut env = aws::env(&[Aws::Sns]);
    env.push(("STAMPEDE_ALERTS_SNS_TOPIC_ARN", topic.clone()));
    let run = |args: &[&str]| {
        stampede(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };
    let out = run(&[
        "subscribe",
        "--email",
        "ops@example.com",
        "--name",
        "Shadowfax",
        "--rule",
        "low-health",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let subs = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    let s = &subs.subscriptions()[0];
    assert_eq!(
        (s.protocol(), s.endpoint()),
        (Some("email"), Some("ops@example.com"))
    );
    let attrs = sns
        .get_subscription_attributes()
        .subscription_arn(s.subscription_arn().unwrap())
        .send()
        .await
        .unwrap();
    let policy: Value = serde_json::from_str(&attrs.attributes().unwrap()["FilterPolicy"]).unwrap();
    assert_eq!(
        policy,
        serde_json::json!({"Name": ["Shadowfax"], "Rule": ["low-health"]})
    );
    let bad = run(&["subscribe", "--email", "ops@example.com", "--rule", "nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--rule nope"));
    let out = run(&["unsubscribe", "--email", "ops@example.com"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let subs = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    assert!(subs.subscriptions().is_empty());
}

/// Kafka, a second instance joining: the partition that moves is handed off with the changes
/// waiting for their round mailed first (the hand-off's round), and its alert state goes with
/// it, so every change reaches the subscriber once — whichever instance made it. (Each
/// instance has its own embedded store, so the address subscribes to both.)
#[test]
fn a_kafka_partition_moving_to_a_new_instance_mails_every_change_exactly_once() {
    use crate::support::process::metric;
    // Long: only a hand-off sends what waits before the test ends.
    let k = KafkaAlerts::new("alerts-move", "600");
    let serve = |store: &str| k.serve(store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ops = unique_address("move");
    let subscribe_at = |url: &str, nth: usize| {
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        rt.block_on(async {
            let (status, v) = subscribe(addr, serde_json::json!({"email": ops})).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{v}");
            confirm_nth_by_mail(addr, &ops, nth).await;
        });
    };
    let a = serve("a");
    wait_until_within(LONG, "the first instance owning both partitions", || {
        metric(&a.url, "stampede_source_partitions") == 2
    });
    subscribe_at(&a.url, 0);
    let send = |p: i32, l: String| k.send(p, l);
    send(0, line("U0", &at(1), 1.0, 99, 150));
    send(1, line("U1", &at(1), 1.0, 99, 150));
    // The first round goes at once (U0's change, maybe U1's); the rest waits for the next,
    // ten minutes away.
    await_mails(&ops, "the first round", |m| !alert_ids(m).is_empty());
    send(0, line("U0", &at(5), 1.0, 106, 150));
    send(1, line("U1", &at(5), 1.0, 106, 150));
    wait_until("the recoveries made and waiting", || {
        let mailed = alert_ids(&mails_to(&ops)).len() as u64;
        metric(&a.url, "stampede_alerts_pending") + mailed == 4
    });
    let b = serve("b");
    wait_until_within(LONG, "one partition each", || {
        metric(&a.url, "stampede_source_partitions") == 1
            && metric(&b.url, "stampede_source_partitions") == 1
    });
    subscribe_at(&b.url, 1);
    // The hand-off mailed what was waiting.
    await_mails(&ops, "the recoveries, mailed at the hand-off", |m| {
        alert_ids(m).len() == 4
    });
    // Both fire again, each on whichever instance owns its partition now; the first instance
    // stops (SIGTERM), handing its partition off again with its change mailed.
    send(0, line("U0", &at(9), 1.0, 90, 150));
    send(1, line("U1", &at(9), 1.0, 90, 150));
    wait_until("both changes made", || {
        metric(&a.url, "stampede_alerts_pending") + metric(&b.url, "stampede_alerts_pending") >= 1
            && metric(&a.url, "stampede_records_in_total")
                + metric(&b.url, "stampede_records_in_total")
                >= 6
    });
    assert!(crate::support::process::signal(a, "-TERM").success());
    wait_until_within(LONG, "the second instance owning both", || {
        metric(&b.url, "stampede_source_partitions") == 2
    });
    let want = once(&[
        id("low-health", "U0", 1),
        id("low-health", "U1", 1),
        id("low-health", "U0", 5),
        id("low-health", "U1", 5),
        id("low-health", "U0", 9),
        id("low-health", "U1", 9),
    ]);
    await_mails_within(LONG, &ops, "every change mailed", |m| {
        alert_ids(m).len() == want.len()
    });
    wait_until("nothing pending", || {
        metric(&b.url, "stampede_alerts_pending") == 0
    });
    assert_eq!(alert_ids(&mails_to(&ops)), want, "each change exactly once");
    drop(b);
}

/// A Kafka-fed service mailing through the test SMTP server: a two-partition telemetry topic,
/// its config in `dir`, and how to start an instance (store under `dir/<store>`) with
/// `alerts.group_interval_secs` of `group_secs`.
struct KafkaAlerts {
    brokers: String,
    topic: String,
    summaries: String,
    config: std::path::PathBuf,
    dir: crate::support::service::TempDir,
    group_secs: &'static str,
}

impl KafkaAlerts {
    fn new(name: &str, group_secs: &'static str) -> KafkaAlerts {
        let dir = temp_dir(name);
        let fresh = crate::support::kafka::Fresh::new(&dir, name, 2);
        KafkaAlerts {
            brokers: fresh.brokers,
            topic: fresh.topic,
            summaries: fresh.summaries,
            config: fresh.config,
            dir,
            group_secs,
        }
    }

    fn serve(&self, store: &str) -> crate::support::process::Running {
        self.serve_with(store, &[])
    }

    /// As [`KafkaAlerts::serve`], with more settings.
    fn serve_with(&self, store: &str, env: &[(&str, &str)]) -> crate::support::process::Running {
        let smtp = format!("smtp://{}", smtp_server());
        let mut all = vec![
            ("STAMPEDE_ALERTS_SMTP_SERVER", smtp.as_str()),
            ("STAMPEDE_ALERTS_GROUP_INTERVAL_SECS", self.group_secs),
        ];
        all.extend_from_slice(env);
        crate::support::process::start_service_with(
            &["serve", "--config", self.config.to_str().unwrap()],
            &self.dir.join(store),
            &all,
        )
    }

    fn send(&self, partition: i32, line: String) {
        crate::support::kafka::send_to_partition(&self.brokers, &self.topic, partition, &line);
    }

    /// Subscribes a new address of `who` through the instance at `url` and confirms it; A
    /// (partition 0) and B (partition 1) report in the first minute and are checkpointed, then
    /// A fires, and that first change is mailed at once and its checkpoint committed. Returns
    /// the address.
    fn first_change_mailed(&self, url: &str, who: &str) -> String {
        use crate::support::process::metric;
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        let ops = unique_address(who);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (status, v) = subscribe(addr, serde_json::json!({"email": ops})).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{v}");
            confirm_by_mail(addr, &ops).await;
        });
        // All in the first minute: the window stays open, so a restart re-reads every record.
        let commits = metric(url, "stampede_source_commits_total");
        self.send(0, line("A", &at(0), 1.0, 150, 150));
        self.send(1, line("B", &at(0), 1.0, 150, 150));
        // One checkpoint per partition for these; the next one of partition 0 is after A's
        // change.
        wait_until("both partitions checkpointing", || {
            metric(url, "stampede_source_commits_total") >= commits + 2
        });
        let commits = metric(url, "stampede_source_commits_total");
        self.send(0, line("A", &at(1), 1.0, 99, 150));
        // The first round goes at once; the checkpoint behind it commits once it is mailed.
        await_mails(&ops, "the first change", |m| alert_ids(m).len() == 1);
        wait_until("the checkpoint after it committed", || {
            metric(url, "stampede_source_commits_total") > commits
        });
        ops
    }
}

/// A TCP gate in front of the SMTP server: open, it forwards; shut, it hangs up on every
/// connection at once (as a mail server that is down or restarting).
struct Gate {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    async fn start(upstream: String) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let is_open = std::sync::Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Gate { addr, open }
    }

    fn set(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The mail server goes down: `/readyz` says so, the pipeline goes on (summaries are stored),
/// and once the server is back the waiting change is mailed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_that_is_down_holds_up_no_summary_and_loses_no_change() {
    use crate::support::poll::eventually;
    let gate = Gate::start(smtp_server()).await;
    let server = format!("smtp://{}", gate.addr);
    let app = TestApp::start("alerts-smtp-down", |c| {
        c.alerts.smtp.server = server.clone();
        c.alerts.group_interval_secs = 1;
    })
    .await;
    let addr = app.addr;
    let ops = unique_address("down");
    let (status, _) = subscribe(addr, serde_json::json!({"email": ops})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    confirm_by_mail(addr, &ops).await;
    gate.set(false);
    ingest(addr, &[line("A", &at(1), 1.0, 99, 150)]).await;
    let reason: String = eventually("/readyz to report the mail server", || async {
        let (status, body) = request(addr, Method::GET, "/readyz", Bytes::new(), None).await;
        let v: Value = serde_json::from_slice(&body).ok()?;
        (status == StatusCode::SERVICE_UNAVAILABLE && v["checks"]["alerts"] == false)
            .then(|| v["reasons"]["alerts"].as_str().unwrap_or("").to_owned())
    })
    .await;
    assert!(reason.contains("SMTP"), "{reason}");
    // More changes than the output's queue holds (256 items) keep coming, and are taken.
    let more: Vec<String> = (0..300).map(|i| format!("B{i:03}")).collect();
    for name in &more {
        ingest(addr, &[line(name, &at(2), 1.0, 50, 150)]).await;
    }
    // The next minute closes A's first: its summary is stored although no mail can go.
    ingest(addr, &[line("A", "2026-01-01 00:01:30.000", 1.0, 99, 150)]).await;
    eventually("A's first minute stored", || async {
        let (_, body) = request(
            addr,
            Method::GET,
            "/api/summaries?name=A",
            Bytes::new(),
            None,
        )
        .await;
        let list: Vec<Value> = serde_json::from_slice(&body).ok()?;
        list.iter()
            .any(|s| s["StatusTime"] == "2026-01-01 00:00:00.000")
            .then_some(())
    })
    .await;
    assert!(mails_to(&ops).iter().all(|m| m.alert_ids().is_empty()));
    gate.set(true);
    let want: Vec<String> = std::iter::once(id("low-health", "A", 1))
        .chain(more.iter().map(|n| id("low-health", n, 2)))
        .collect();
    // Longer: the mailer retries the server with a back-off.
    let mails = await_mails_within(
        LONG,
        &ops,
        "the changes mailed once the server is back",
        |m| alert_ids(m).len() == want.len(),
    );
    assert_eq!(alert_ids(&mails), once(&want));
    eventually("/readyz back", || async {
        let (status, _) = request(addr, Method::GET, "/readyz", Bytes::new(), None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    app.stop().await;
}

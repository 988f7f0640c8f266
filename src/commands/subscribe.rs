//! `stampede subscribe` and `stampede unsubscribe` (CONTRACT §7): with `[alerts.sns]`, SNS
//! e-mail subscriptions to the topic (the filter as a `FilterPolicy`); otherwise the built-in
//! subscriptions of a running service, through its API (`web.listen`, or `--url`; the admin
//! token from `web.token`).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};

use std::path::PathBuf;

use crate::config::Config;

/// `stampede subscribe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to notify.
    #[arg(long, value_name = "ADDR")]
    pub email: String,
    /// Only this unicorn's alerts (repeat for several; none: every unicorn).
    #[arg(long = "name", value_name = "UNICORN")]
    pub names: Vec<String>,
    /// Only this rule's alerts (repeat for several; none: every rule).
    #[arg(long = "rule", value_name = "RULE")]
    pub rules: Vec<String>,
    /// The service's configuration, as for `serve`.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The running service (built-in subscriptions), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `stampede unsubscribe`.
#[derive(Debug, clap::Args)]
pub struct UnsubscribeArgs {
    /// The address.
    #[arg(long, value_name = "ADDR")]
    pub email: String,
    /// The service's configuration, as for `serve`.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The running service (built-in subscriptions).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// Runs `stampede subscribe`; prints what was done.
///
/// # Errors
/// Bad configuration, or SNS or the service refused or could not be reached.
pub fn subscribe(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let action = Action::Subscribe {
        email: &args.email,
        names: &args.names,
        rules: &args.rules,
    };
    println!("{}", run(&config, args.url.as_deref(), &action)?);
    Ok(())
}

/// Runs `stampede unsubscribe`; prints what was done.
///
/// # Errors
/// As [`subscribe`].
pub fn unsubscribe(args: &UnsubscribeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let action = Action::Unsubscribe { email: &args.email };
    println!("{}", run(&config, args.url.as_deref(), &action)?);
    Ok(())
}

/// What to do.
pub enum Action<'a> {
    /// Subscribe `email` to the changes of `names` and `rules` (empty: all).
    Subscribe {
        /// The address.
        email: &'a str,
        /// Only these unicorns.
        names: &'a [String],
        /// Only these rules.
        rules: &'a [String],
    },
    /// Remove `email`'s subscriptions.
    Unsubscribe {
        /// The address.
        email: &'a str,
    },
}

/// Runs `action` as `config` says; returns what to print.
///
/// # Errors
/// SNS or the service refused (with its reason), or could not be reached.
pub fn run(config: &Config, url: Option<&str>, action: &Action<'_>) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(config, url, action))
}

/// As [`run`], in a Tokio runtime.
///
/// # Errors
/// As [`run`].
pub async fn run_async(
    config: &Config,
    url: Option<&str>,
    action: &Action<'_>,
) -> anyhow::Result<String> {
    if config.alerts.sns.topic_arn.is_empty() {
        built_in(config, url, action).await
    } else {
        sns(config, action).await
    }
}

async fn sns(config: &Config, action: &Action<'_>) -> anyhow::Result<String> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_sns::Client::new(&aws);
    let topic = &config.alerts.sns.topic_arn;
    match action {
        Action::Subscribe {
            email,
            names,
            rules,
        } => {
            crate::output::store::subscriptions::check_email(email)
                .map_err(|e| anyhow::anyhow!(e.reason))?;
            let known = config.alert_rules()?;
            if let Some(r) = rules
                .iter()
                .find(|r| !known.iter().any(|k| *k.name == ***r))
            {
                anyhow::bail!("--rule {r}: no such rule in this configuration");
            }
            let arn = crate::output::notify::sns::subscribe(&client, topic, email, names, rules)
                .await
                .map_err(anyhow::Error::msg)?;
            Ok(format!(
                "subscribed {email} to {topic} ({arn}); SNS sends a confirmation mail: the subscription starts once its link is followed"
            ))
        }
        Action::Unsubscribe { email } => {
            let n = crate::output::notify::sns::unsubscribe(&client, topic, email)
                .await
                .map_err(anyhow::Error::msg)?;
            if n == 0 {
                anyhow::bail!("{email} has no confirmed e-mail subscription to {topic}");
            }
            Ok(format!("unsubscribed {email} from {topic}"))
        }
    }
}

async fn built_in(
    config: &Config,
    url: Option<&str>,
    action: &Action<'_>,
) -> anyhow::Result<String> {
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let scheme = if config.web.tls_cert.is_empty() {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{}", config.web.listen)
        }
    };
    let (method, uri, body) = match action {
        Action::Subscribe {
            email,
            names,
            rules,
        } => (
            Method::POST,
            format!("{base}/api/subscriptions"),
            serde_json::json!({"email": email, "names": names, "rules": rules}).to_string(),
        ),
        Action::Unsubscribe { email } => (
            Method::DELETE,
            {
                let mut segment = String::new();
                crate::clients::http::percent_encode(&mut segment, email);
                format!("{base}/api/subscriptions/{segment}")
            },
            String::new(),
        ),
    };
    let client =
        crate::clients::http::client(1).map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?;
    let mut req = Request::builder()
        .method(method)
        .uri(&uri)
        .header("content-type", "application/json");
    if !config.web.token.is_empty() {
        req = req.header("authorization", format!("Bearer {}", config.web.token));
    }
    let res = client
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the service at {base} (is `stampede serve` running? --url): {e}"
            )
        })?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    let said = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    if !status.is_success() {
        anyhow::bail!("the service refused ({status}): {said}");
    }
    Ok(match action {
        Action::Subscribe { email, .. } => format!("{email}: {said}"),
        Action::Unsubscribe { email } => format!("unsubscribed {email}"),
    })
}

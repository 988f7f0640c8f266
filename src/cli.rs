//! The command line of CONTRACT §4: the top-level parser and its subcommands. Each command's
//! flags, their checks and its body live with the command in [`crate::commands`]; usage errors
//! say what to fix and exit 2 (see `main`).

use clap::{Parser, Subcommand};

use crate::commands::{aggregate, consume, demo, produce, query, serve, store, subscribe, views};

/// Stampede: live analytics for the Wild Rydes unicorn fleet.
#[derive(Debug, Parser)]
#[command(name = "stampede", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: a simulated fleet, the pipeline, the embedded store under
    /// ./stampede-data and the live dashboard. Ctrl-C flushes and exits.
    Demo(demo::Args),
    /// The service, wired as the configuration says (sources, store, web).
    Serve(serve::Args),
    /// The default configuration as TOML, every key commented.
    PrintConfig,
    /// Batch mode: per-minute summaries of NDJSON telemetry files (or stdin).
    ///
    /// Reads the files in order as one partition through the same decoding and windowing as the
    /// service, flushes every window at the end, and writes the final summary of each window
    /// (its last revision) to stdout as NDJSON ordered by (StatusTime, Name). Rejected records
    /// are counted by reason on stderr.
    Aggregate(aggregate::Args),
    /// The workshop's consumer: prints every record of a stream as indented JSON.
    Consume(consume::Args),
    /// The simulated fleet producer (the workshop's movement and vitals model).
    ///
    /// One record per unicorn per second by default, as NDJSON on stdout, posted to a running
    /// service (--to http://HOST:PORT/ingest) or written to a Kafka topic
    /// (--to kafka://HOST:PORT/TOPIC).
    Produce(produce::Args),
    /// Subscribe an e-mail address to alert notifications.
    ///
    /// With [alerts.sns] in the configuration: an SNS e-mail subscription to the topic, the
    /// filter as a FilterPolicy (SNS mails a confirmation link). Otherwise: the built-in
    /// subscriptions of a running service (web.listen or --url, admin token from web.token),
    /// which mails the confirmation link itself.
    Subscribe(subscribe::Args),
    /// Remove an e-mail address's alert subscription (SNS or built-in, as for subscribe).
    Unsubscribe(subscribe::UnsubscribeArgs),
    /// Ad-hoc SQL over the archive (table wildrydes) and the stored summaries (table summaries).
    ///
    /// wildrydes has the workshop's Athena columns: name, statustime (a timestamp), latitude,
    /// longitude, distance, healthpoints, magicpoints; summaries has name, statustime (window
    /// start), windowend, distance, minmagicpoints, maxmagicpoints, minhealthpoints,
    /// maxhealthpoints, records, revision. Unquoted names are case-insensitive, as in Athena.
    /// Only queries run: nothing can be created, changed or written. The workshop's queries are
    /// in queries/*.sql.
    ///
    /// Example: stampede query "SELECT name, SUM(distance) AS TotalDistance FROM wildrydes
    /// GROUP BY name"
    Query(query::Args),
    /// Continuous views (CONTRACT §9): `views verify` checks the stored rows against the same
    /// question run in batch over the archive.
    Views(views::Args),
    /// The embedded store's file: `store check [--repair]` says whether it is whole and
    /// repairs it (keeping a copy) when it is not.
    Store(store::Args),
}

//! The `stampede` binary as a user runs it: produce piped into aggregate, files and stdin,
//! exit codes and messages.

use std::process::Output;

use crate::support::process::{output_with_stdin, stampede};
use crate::support::reference;
use crate::support::service::temp_dir;

/// `stampede ARGS…` with `stdin` (none: an empty one) piped in, output captured.
fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    output_with_stdin(&mut stampede(args), stdin.unwrap_or_default())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PRODUCE: &[&str] = &[
    "produce",
    "--seed",
    "7",
    "--unicorns",
    "25",
    "--msgs",
    "30000",
    "--rate",
    "max",
    "--start-time",
    "2018-03-18 03:20:00",
    "--faults",
    "malformed=0.01,out-of-order=0.1,late=0.01,too-late=0.005",
    "--error",
    "yes",
];

#[test]
fn produce_piped_into_aggregate_matches_the_reference() {
    let produced = run(PRODUCE, None);
    assert!(produced.status.success(), "{}", stderr(&produced));
    let lines: Vec<&[u8]> = produced
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 30_000, "--msgs is exact");
    // Reproducible: the same seed gives the same bytes.
    assert_eq!(run(PRODUCE, None).stdout, produced.stdout);

    let aggregated = run(&["aggregate"], Some(&produced.stdout));
    assert!(aggregated.status.success(), "{}", stderr(&aggregated));
    let expected = reference::run(lines.iter().copied());
    assert_eq!(
        reference::parse_output(&aggregated.stdout),
        expected.summaries
    );
    // The reject report on stderr counts what the reference counts.
    let report = stderr(&aggregated);
    for (reason, n) in &expected.rejects {
        assert!(
            report.contains(&format!("rejected {reason}: {n}\n")),
            "{reason} {n} missing from:\n{report}"
        );
    }
    assert!(
        expected.rejects.contains_key("too_late")
            && expected.rejects.contains_key("malformed_json")
    );
    assert!(
        expected.summaries.values().any(|s| s.revision > 0),
        "the late faults restated windows"
    );
    // 25 unicorns × 1200 s → every unicorn in every one of the 20 minutes (plus spill-over).
    assert!(expected.summaries.len() >= 25 * 20);
}

#[test]
fn files_are_one_partition_in_order_and_dash_is_stdin() {
    let produced = run(
        &[
            "produce",
            "--seed",
            "3",
            "--unicorns",
            "3",
            "--msgs",
            "900",
            "--rate",
            "max",
            "--start-time",
            "2018-03-18 03:20:30",
        ],
        None,
    );
    let text = produced.stdout;
    let cut = text
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(449)
        .unwrap()
        .0
        + 1;
    let dir = temp_dir("cli-files");
    let (a, b) = (dir.join("a.ndjson"), dir.join("b.ndjson"));
    std::fs::write(&a, &text[..cut]).unwrap();
    std::fs::write(&b, &text[cut..]).unwrap();
    let whole = run(&["aggregate"], Some(&text));
    let split = run(
        &["aggregate", a.to_str().unwrap(), b.to_str().unwrap()],
        None,
    );
    let mixed = run(&["aggregate", a.to_str().unwrap(), "-"], Some(&text[cut..]));
    assert!(whole.status.success() && split.status.success() && mixed.status.success());
    assert_eq!(split.stdout, whole.stdout);
    assert_eq!(mixed.stdout, whole.stdout);
    assert!(
        stderr(&split).contains("900 records from 2 input(s)"),
        "{}",
        stderr(&split)
    );
}

#[test]
fn bad_usage_exits_2_and_says_what_to_fix() {
    for (args, says) in [
        (&["produce", "--rate", "fast"][..], "--rate fast"),
        (&["produce", "--to", "ftp://x"][..], "--to ftp://x"),
        (&["produce", "--faults", "late=7"][..], "--faults"),
        (&["produce", "--start-time", "noon"][..], "--start-time"),
        (&["produce", "--name", ""][..], "--name"),
        (
            &["produce", "--unicorns", "5000001"][..],
            "--unicorns is at most 5000000",
        ),
        (
            &["produce", "--name", "a", "--unicorns", "2"][..],
            "cannot be used with",
        ),
        (&["aggregate", "--window-secs", "0"][..], "--window-secs"),
        (&["frobnicate"][..], "unrecognized subcommand"),
        (
            &["consume", "--from", "kinesis://wild/rydes"][..],
            "not a Kinesis stream name",
        ),
        (
            &["consume", "--from", "kafka://127.0.0.1:9092"][..],
            "no topic",
        ),
        (
            &["produce", "--to", "kafka://broker/t"][..],
            "with its port",
        ),
        (&["consume", "--from", "ftp://x"][..], "expected kafka://"),
    ] {
        let o = run(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_missing_file_is_a_runtime_failure() {
    let o = run(&["aggregate", "/nonexistent/telemetry.ndjson"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot open /nonexistent/telemetry.ndjson"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn empty_input_gives_no_summaries_and_success() {
    let o = run(&["aggregate"], Some(b""));
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("0 records"));
}

use crate::support::process::{interrupt, start_service};

#[test]
fn print_config_prints_the_defaults_and_bad_config_names_the_key() {
    let o = run(&["print-config"], None);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let parsed: stampede::config::Config = toml::from_str(&text).unwrap();
    assert_eq!(parsed, stampede::config::Config::default());
    assert!(
        text.lines()
            .filter(|l| l.contains(" = "))
            .all(|l| l.contains('#')),
        "every key is commented"
    );

    let dir = temp_dir("bad-config");
    let file = dir.join("stampede.toml");
    std::fs::write(&file, "[window]\nsize_secs = 0\n").unwrap();
    let o = run(&["serve", "--config", file.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("window.size_secs"), "{}", stderr(&o));
    std::fs::write(&file, "[web]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let o = run(&["serve", "--config", file.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lisen"), "{}", stderr(&o));
    let o = stampede(["serve"])
        .env("STAMPEDE_WEB_LISTEN", "everywhere")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("web.listen"), "{}", stderr(&o));
}

#[test]
fn the_demo_shows_a_fleet_and_exits_cleanly_on_ctrl_c() {
    let dir = temp_dir("demo");
    let demo = start_service(&["demo"], &dir);
    let url = demo.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let names = rt.block_on(crate::support::poll::eventually(
        "a dozen unicorns",
        || async {
            let v = crate::support::service::get_json(addr, "/api/unicorns").await;
            let names: Vec<String> = v
                .as_array()?
                .iter()
                .map(|u| u["Name"].as_str().unwrap_or_default().to_owned())
                .collect();
            (names.len() == 12).then_some(names)
        },
    ));
    assert!(names.contains(&"Shadowfax".to_owned()));
    // The example views of queries/views/ are kept.
    let views = rt.block_on(crate::support::service::get_json(addr, "/api/views"));
    let mut kept: Vec<&str> = views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, ["fleet_5min", "rides", "summary", "weak_cells"]);
    let status = interrupt(demo);
    assert!(status.success(), "{status}");
    assert!(
        dir.join("stampede.redb").exists(),
        "the store lives under the configured path"
    );
}

#[test]
fn produce_to_http_into_serve_stores_what_aggregate_computes() {
    let args = [
        "--seed",
        "11",
        "--unicorns",
        "20",
        "--msgs",
        "12000",
        "--rate",
        "max",
        "--start-time",
        "2018-03-18 03:20:00",
        "--faults",
        "malformed=0.01,out-of-order=0.05,late=0.01,too-late=0.005",
    ];
    let dir = temp_dir("produce-http");
    let serve = start_service(&["serve"], &dir);
    let target = format!("{}/ingest", serve.url);
    let mut produce_args = vec![
        "produce",
        "--to",
        &target,
        "--connections",
        "1",
        "--batch",
        "500",
        "--quiet",
    ];
    produce_args.extend(args);
    let o = run(&produce_args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("produced 12000 records"),
        "{}",
        stderr(&o)
    );
    assert!(interrupt(serve).success());

    // The same records, written to stdout and aggregated in batch.
    let mut file_args = vec!["produce"];
    file_args.extend(args);
    let produced = run(&file_args, None);
    let aggregated = run(&["aggregate"], Some(&produced.stdout));
    let expected: Vec<serde_json::Value> = aggregated
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();

    let store = stampede::output::store::embedded::EmbeddedStore::open(&dir, 10).unwrap();
    let mut stored: Vec<serde_json::Value> = store
        .summaries(&stampede::record::SummaryQuery {
            limit: 1_000_000,
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    stored.sort_by(|a, b| {
        (a["StatusTime"].as_str(), a["Name"].as_str())
            .cmp(&(b["StatusTime"].as_str(), b["Name"].as_str()))
    });
    assert_eq!(stored.len(), expected.len());
    assert_eq!(
        stored, expected,
        "the service stored exactly what aggregate computes, revisions included"
    );
    let dead = store.dead_letters(1_000).unwrap();
    assert!(
        dead.iter().any(|d| d.reason == "too_late")
            && dead.iter().any(|d| d.reason == "malformed_json")
    );
}

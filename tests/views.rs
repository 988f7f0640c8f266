//! Continuous views (CONTRACT §9): `stampede aggregate --view` over files and `serve` over
//! HTTP, checked against DuckDB — another engine, with the example views' questions written by
//! hand in its own SQL (tests/support/duckdb_views.py) — over the same accepted records.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::process::{aggregate_file, stampede};
use crate::support::service::{request, temp_dir, TestApp};

/// The example views of `queries/views/`.
pub(crate) const EXAMPLES: [&str; 4] = ["summary", "fleet_5min", "rides", "weak_cells"];

pub(crate) fn example(view: &str) -> PathBuf {
    let file = view.replace('_', "-");
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/views/{file}.sql"))
}

/// The test environment's Python, with DuckDB (scripts/components/venv installs it;
/// scripts/test sets STAMPEDE_TEST_PYTHON). Fails, never skips, without it.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("STAMPEDE_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/stampede/venv/bin/python"))
        })
        .filter(|p| p.exists())
        .expect("no Python with DuckDB: run scripts/components/venv (scripts/test does), or set STAMPEDE_TEST_PYTHON")
}

/// DuckDB's rows for `view` over the NDJSON `files`.
pub(crate) fn duckdb(view: &str, files: &[PathBuf]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/duckdb_views.py");
    let out = crate::support::process::succeeds(
        std::process::Command::new(python())
            .arg(script)
            .arg(view)
            .args(files),
    );
    lines(&out.stdout)
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `got` (the view's rows) equal `want` (DuckDB's), whatever the order: the same keys with the
/// same values, sums within a rounding of each other (added in another order).
pub(crate) fn assert_same_rows(view: &str, got: &[Value], want: &[Value]) {
    assert!(
        !want.is_empty(),
        "{view}: DuckDB found no rows: the data asks nothing"
    );
    let key = |v: &Value| -> String {
        let mut parts: Vec<String> = v
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains("window") || ["name", "lat", "lon"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.sort();
        parts.join(",")
    };
    let mut got: Vec<&Value> = got.iter().collect();
    let mut want: Vec<&Value> = want.iter().collect();
    got.sort_by_key(|v| key(v));
    want.sort_by_key(|v| key(v));
    let (got_keys, want_keys): (Vec<String>, Vec<String>) = (
        got.iter().map(|v| key(v)).collect(),
        want.iter().map(|v| key(v)).collect(),
    );
    let missing: Vec<_> = want_keys
        .iter()
        .filter(|k| !got_keys.contains(k))
        .take(5)
        .collect();
    let extra: Vec<_> = got_keys
        .iter()
        .filter(|k| !want_keys.contains(k))
        .take(5)
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{view}: {} rows, DuckDB {}; missing {missing:?}, extra {extra:?}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(&want) {
        for (column, expected) in w.as_object().unwrap() {
            let actual = &g[column];
            let same = match (actual.as_f64(), expected.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                _ => actual == expected,
            };
            assert!(same, "{view}: {column}: {g} vs DuckDB's {w}");
        }
    }
}

/// Twelve unicorns over eight minutes with every kind of fault (malformed, out of order, late,
/// too late), health falling (weak cells), and rides: a third of the fleet silent for 50 s after
/// minute 2, another third for 40 s after minute 5.
fn fleet_with_rides(seed: &str) -> Vec<u8> {
    let out = stampede([
        "produce",
        "--unicorns",
        "12",
        "--msgs",
        "5760",
        "--rate",
        "max",
        "--seed",
        seed,
        "--drift",
        "-0.5",
        "--start-time",
        "2018-03-18 03:20:00",
        "--faults",
        crate::support::kafka::FAULTS,
    ])
    .output()
    .unwrap();
    assert!(out.status.success());
    let mut names: Vec<String> = Vec::new();
    let mut kept = Vec::new();
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        let drop = serde_json::from_str::<Value>(line).ok().is_some_and(|v| {
            let (Some(name), Some(time)) = (v["Name"].as_str(), v["StatusTime"].as_str()) else {
                return false;
            };
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
            let third = names.iter().position(|n| n == name).unwrap_or(0) % 3;
            (third == 0 && ("2018-03-18 03:22:10".."2018-03-18 03:23:00").contains(&time))
                || (third == 1 && ("2018-03-18 03:25:00".."2018-03-18 03:25:40").contains(&time))
        });
        if !drop {
            kept.push(line);
        }
    }
    (kept.join("\n") + "\n").into_bytes()
}

/// The workshop's summary written as a view (`queries/views/summary.sql`) gives the built-in
/// summaries, row for row: the same accepted records, through DataFusion's accumulators
/// instead of the window engine. A fleet with faults (malformed, late, too late) makes sure the
/// view counts exactly the records the summaries accept.
#[test]
fn the_summary_view_over_a_file_equals_the_built_in_summaries() {
    let dir = temp_dir("view-summary");
    let file = dir.join("fleet.ndjson");
    let fleet = stampede([
        "produce",
        "--unicorns",
        "12",
        "--msgs",
        "6000",
        "--rate",
        "max",
        "--seed",
        "21",
        "--start-time",
        "2018-03-18 03:20:00",
        "--faults",
        crate::support::kafka::FAULTS,
    ])
    .output()
    .unwrap();
    assert!(fleet.status.success());
    std::fs::write(&file, &fleet.stdout).unwrap();
    let summaries = aggregate_file(&file).summaries;
    let view = example("summary");
    let out =
        crate::support::process::succeeds(stampede(["aggregate", "--view"]).arg(&view).arg(&file));
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), summaries.len());
    for (row, s) in rows.iter().zip(&summaries) {
        assert_eq!(row["name"], s["Name"], "{row} vs {s}");
        assert_eq!(row["window_start"], s["StatusTime"], "{row} vs {s}");
        assert_eq!(row["window_end"], s["WindowEnd"], "{row} vs {s}");
        for (view_col, summary_col) in [
            ("minmagicpoints", "MinMagicPoints"),
            ("maxmagicpoints", "MaxMagicPoints"),
            ("minhealthpoints", "MinHealthPoints"),
            ("maxhealthpoints", "MaxHealthPoints"),
            ("records", "Records"),
        ] {
            assert_eq!(row[view_col], s[summary_col], "{view_col}: {row} vs {s}");
        }
        // Sums in another order may differ in the last bit.
        let (a, b) = (
            row["distance"].as_f64().unwrap(),
            s["Distance"].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{row} vs {s}");
    }
}

/// A view that may not be computed is refused before any record is read: exit 2, with the
/// file, line, column and construct.
#[test]
fn a_refused_view_exits_2_naming_file_line_column_and_construct() {
    let dir = temp_dir("view-refused");
    let sql = dir.join("ordered.sql");
    std::fs::write(
        &sql,
        "CREATE VIEW v AS\nSELECT name, window_start, COUNT(*) AS n\nFROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)\nGROUP BY name, window_start\nORDER BY n DESC\n",
    )
    .unwrap();
    let out = stampede(["aggregate", "--view"])
        .arg(&sql)
        .arg("-")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5:10: ORDER BY:", sql.display())),
        "{err}"
    );
}

/// Each example view, run by `aggregate --view` over a fleet with rides, gaps and every kind of
/// fault, ends with the rows DuckDB finds over the records the summaries accepted (the file
/// less the lines `--verbose` reports rejected).
#[test]
fn each_example_view_over_a_file_ends_with_duckdbs_rows() {
    let dir = temp_dir("view-duckdb-file");
    let file = dir.join("fleet.ndjson");
    let fleet = fleet_with_rides("31");
    std::fs::write(&file, &fleet).unwrap();
    for view in EXAMPLES {
        let out = crate::support::process::succeeds(
            stampede(["aggregate", "--verbose", "--view"])
                .arg(example(view))
                .arg(&file),
        );
        let rejected: std::collections::HashSet<usize> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains(": rejected: "))
            .filter_map(|l| {
                l.split(": rejected: ")
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert!(!rejected.is_empty(), "the faults were rejected");
        let accepted: Vec<&[u8]> = fleet
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(i, l)| !l.is_empty() && !rejected.contains(&(i + 1)))
            .map(|(_, l)| l)
            .collect();
        let accepted_file = dir.join(format!("accepted-{view}.ndjson"));
        let mut bytes = accepted.join(&b'\n');
        bytes.push(b'\n');
        std::fs::write(&accepted_file, bytes).unwrap();
        assert_same_rows(view, &lines(&out.stdout), &duckdb(view, &[accepted_file]));
    }
}

/// The example views kept by `serve` while a fleet posts to `/ingest`: a WebSocket client that
/// asked for `views=summary` gets its rows as windows close; after a stop (every window
/// flushed) each view's table in `stampede query` holds the rows DuckDB finds over the archive
/// (the accepted records, exactly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_kept_by_the_service_end_with_duckdbs_rows_over_its_archive() {
    // The store and the archive outlive the service (read after it stopped).
    let data = temp_dir("view-duckdb-serve-data");
    let (archive, store) = (data.join("archive"), data.join("store"));
    let views = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/views");
    let app = TestApp::start("view-duckdb-serve", |c| {
        c.store.path = store.clone();
        c.views.dir = views.display().to_string();
        c.archive.kind = stampede::config::ArchiveKind::Dir;
        c.archive.path = archive.display().to_string();
        // Only event time closes windows: the answer cannot depend on this machine's speed.
        c.window.idle_timeout_secs = 3_600;
    })
    .await;
    let listed = crate::support::service::get_json(app.addr, "/api/views").await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fleet_5min", "rides", "summary", "weak_cells"]);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?views=summary", app.addr))
            .await
            .unwrap();
    let fleet = fleet_with_rides("32");
    for chunk in fleet.split(|&b| b == b'\n').collect::<Vec<_>>().chunks(500) {
        let body = chunk.join(&b'\n');
        let (status, _) = request(app.addr, hyper::Method::POST, "/ingest", body, None).await;
        assert_eq!(status, hyper::StatusCode::OK);
    }
    // Minutes closed by event time reach the client as view frames.
    let frame = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "view" {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the feed ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a view frame within 30 s");
    assert_eq!(frame["view"], "summary");
    let row = &frame["rows"][0];
    assert!(
        row["name"].is_string() && row["records"].is_u64() && row["revision"].is_u64(),
        "{row}"
    );
    drop(ws);
    app.stop().await;
    let files: Vec<PathBuf> = walk(&archive);
    assert!(!files.is_empty(), "the archive holds the accepted records");
    for view in EXAMPLES {
        let store_env = [("STAMPEDE_STORE_PATH", store.display().to_string())];
        let rows = stored_rows(&format!("SELECT * FROM {view}"), &store_env);
        assert!(
            rows.iter().all(|r| r["revision"].is_u64()),
            "{view}: rows carry their revision"
        );
        assert_same_rows(view, &rows, &duckdb(view, &files));
    }
    // The service's own check agrees: every stored row equals the batch answer over the archive.
    let verify = |archive: &Path| {
        stampede(["views", "verify", "--archive"])
            .arg(archive)
            .env("STAMPEDE_STORE_PATH", &store)
            .output()
            .unwrap()
    };
    let out = verify(&archive);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for view in EXAMPLES {
        assert!(
            said.contains(&format!("view {view}: ")) && said.contains("0 differences"),
            "{said}"
        );
    }
    // An archive that lost an object no longer matches the stored rows: every difference said.
    let damaged = data.join("damaged");
    for file in &files {
        let to = damaged.join(file.strip_prefix(&archive).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, to).unwrap();
    }
    std::fs::remove_file(walk(&damaged).first().unwrap()).unwrap();
    let out = verify(&damaged);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("view summary: differs: stored")
            || said.contains("stored but not in the batch answer"),
        "{said}"
    );
}

/// Every archived object under `dir` (staging files, named with a leading dot, left out).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Exactly once across SIGKILL, through Kafka: an instance keeping the example views is killed
/// mid-stream (no flush, no hand-off), another starts on the same store and re-reads from the
/// committed checkpoint — from the views' own low water, older than the minute's — and every
/// view's rows end equal to DuckDB's over the records the summaries accept, nothing counted
/// twice or missed.
#[test]
fn kafka_views_survive_sigkill_exactly_once() {
    use crate::support::kafka::{
        broker, close_all_windows, create_topic, read_topic, unique, ServeConfig,
    };
    use crate::support::poll::{wait_until_within, LONG};
    use crate::support::process::{metric, start_service_with};
    let brokers = broker();
    let dir = temp_dir("views-kafka-kill");
    let (telemetry, summaries, dead, group) = (
        unique("views-kill-telemetry"),
        unique("views-kill-summary"),
        unique("views-kill-dlq"),
        unique("views-kill-group"),
    );
    create_topic(&brokers, &telemetry, 4);
    create_topic(&brokers, &summaries, 4);
    create_topic(&brokers, &dead, 1);
    let config = ServeConfig {
        brokers: &brokers,
        topic: &telemetry,
        group: &group,
        summaries: &summaries,
        dead_letters: &dead,
        idle_secs: 3_600,
    }
    .write(&dir);
    let views = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/views");
    let store = dir.join("store");
    let serve = || {
        start_service_with(
            &["serve", "--config", config.to_str().unwrap()],
            &store,
            // Alerts (on by default, and firing here) hold commits until their round: not what
            // this test is about.
            &[
                ("STAMPEDE_VIEWS_DIR", views.to_str().unwrap()),
                ("STAMPEDE_ALERTS_ENABLED", "false"),
            ],
        )
    };
    let to = format!("kafka://{brokers}/{telemetry}");
    let produce = |start: &str, seed: &str| produce_weakening(&to, start, seed, &[]);
    produce("2026-01-01 00:00:00", "41");
    let first = serve();
    wait_until_within(LONG, "the first instance committing", || {
        metric(&first.url, "stampede_source_commits_total") >= 4
    });
    first.kill();
    let second = serve();
    produce("2026-01-01 00:04:10", "42");
    close_all_windows(&brokers, &telemetry, 4, "2026-01-01 02:00:00");
    let partitions: Vec<Vec<Vec<u8>>> = read_topic(&brokers, &telemetry)
        .into_iter()
        .map(|msgs| msgs.into_iter().map(|m| m.payload).collect())
        .collect();
    let accepted = accepted_records(&dir, &partitions);
    assert_views_end_as_duckdb(&second.url, &|view: &str| view.to_owned(), &accepted);
    // The rides (sessions) were open since the first record: the restart re-read from there,
    // which the hour a session may span at most bounds (SESSION_SPAN_MS).
    drop(second);
}

/// A view defined at run time on a service with an archive computes its past from the archive,
/// then continues live (`backfilling` meanwhile): its final rows equal DuckDB's over every
/// accepted record, those before its definition included — a five-minute window that spans the
/// cut merges what the archive and the partitions said of it, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_defined_at_run_time_is_backfilled_from_the_archive() {
    let data = temp_dir("view-backfill-data");
    let (archive, store) = (data.join("archive"), data.join("store"));
    let app = TestApp::start("view-backfill", |c| {
        c.store.path = store.clone();
        c.archive.kind = stampede::config::ArchiveKind::Dir;
        c.archive.path = archive.display().to_string();
        c.archive.buffer_secs = 1;
        c.window.idle_timeout_secs = 3_600;
    })
    .await;
    let fleet = fleet_with_rides("33");
    let records: Vec<&[u8]> = fleet.split(|&b| b == b'\n').collect();
    // The cut falls a minute past the first third: the rest moves event time past it by the
    // lateness, a window and the out-of-orderness, and the backfill runs.
    let (first, second) = records.split_at(records.len() / 3);
    let post = |part: &[&[u8]]| {
        let chunks: Vec<Vec<u8>> = part.chunks(500).map(|c| c.join(&b'\n')).collect();
        let addr = app.addr;
        async move {
            for body in chunks {
                let (status, _) = request(addr, hyper::Method::POST, "/ingest", body, None).await;
                assert_eq!(status, hyper::StatusCode::OK);
            }
        }
    };
    post(first).await;
    let sql = std::fs::read_to_string(example("fleet_5min"))
        .unwrap()
        .replace("CREATE VIEW fleet_5min", "CREATE VIEW fleet_backfilled");
    let (status, body) = request(app.addr, hyper::Method::POST, "/api/views", sql, None).await;
    assert_eq!(
        status,
        hyper::StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let state = |v: &Value| {
        v.as_array().unwrap()[0]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let listed = crate::support::service::get_json(app.addr, "/api/views").await;
    assert_eq!(state(&listed), "backfilling");
    post(second).await;
    crate::support::poll::eventually("the backfill done", || async {
        let listed = crate::support::service::get_json(app.addr, "/api/views").await;
        let s = state(&listed);
        assert_ne!(s, "failed", "{listed}");
        (s == "running").then_some(())
    })
    .await;
    app.stop().await;
    let store_env = [("STAMPEDE_STORE_PATH", store.display().to_string())];
    assert_same_rows(
        "fleet_5min",
        &stored_rows("SELECT * FROM fleet_backfilled", &store_env),
        &duckdb("fleet_5min", &walk(&archive)),
    );
}

/// `POST /api/views` (admin) refuses what a view may not say with 400, naming the line, the
/// column and the construct; a view it takes is kept in the store across a restart, and
/// `DELETE /api/views/{name}` (admin) removes it for good. A view of `views.dir` is the file's
/// to remove (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_defined_over_http_are_checked_kept_across_restarts_and_deleted() {
    use hyper::{Method, StatusCode};
    let token = "views-admin-token";
    let files = temp_dir("views-api-files");
    std::fs::copy(example("summary"), files.join("summary.sql")).unwrap();
    let dir_setting = files.display().to_string();
    let tweak = |c: &mut stampede::config::Config| {
        c.web.token = token.into();
        c.views.dir = dir_setting.clone();
    };
    let app = TestApp::start("views-api", tweak).await;
    let refused = [
        ("CREATE VIEW v AS SELECT w.window_start, COUNT(*) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) w JOIN x ON w.name = x.name GROUP BY w.window_start", "join"),
        ("CREATE VIEW v AS SELECT window_start, COUNT(*) AS n FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)\nGROUP BY window_start\nORDER BY n", "ORDER BY"),
        ("CREATE VIEW v AS SELECT window_start, COUNT(*) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start LIMIT 3", "LIMIT"),
        ("CREATE VIEW v AS SELECT name, COUNT(*) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY name", "GROUP BY"),
        ("CREATE VIEW v AS SELECT window_start, COUNT(DISTINCT name) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start", "DISTINCT aggregate"),
        ("CREATE VIEW v AS SELEC window_start FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)", "syntax"),
    ];
    for (sql, construct) in refused {
        let (status, body) = request(app.addr, Method::POST, "/api/views", sql, Some(token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["construct"], construct, "{v}");
        assert!(
            v["line"].as_u64().unwrap() >= 1 && v["column"].as_u64().unwrap() >= 1,
            "{v}"
        );
        assert!(v["error"].as_str().unwrap().contains(construct), "{v}");
    }
    // A column that does not exist: planned over the stream, refused in its words.
    let (status, body) = request(
        app.addr,
        Method::POST,
        "/api/views",
        "CREATE VIEW v AS SELECT nme, window_start, COUNT(*) AS n FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY nme, window_start",
        Some(token),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let said = String::from_utf8_lossy(&body);
    assert!(
        said.contains("nme") && !said.contains("wildrydes_windowed"),
        "{said}"
    );
    let sql = "CREATE VIEW per_unicorn AS SELECT name, window_start, COUNT(*) AS n FROM TUMBLE(wildrydes, statustime, INTERVAL '2' MINUTE) GROUP BY name, window_start";
    let (status, _) = request(app.addr, Method::POST, "/api/views", sql, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "admin only");
    let (status, body) = request(app.addr, Method::POST, "/api/views", sql, Some(token)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _) = request(app.addr, Method::POST, "/api/views", sql, Some(token)).await;
    assert_eq!(status, StatusCode::CONFLICT, "a name is taken once");
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let app = app.restart(tweak).await;
    let listed = crate::support::service::get_json(app.addr, "/api/views").await;
    assert_eq!(
        names(&listed),
        ["summary", "per_unicorn"],
        "kept across the restart"
    );
    let (status, _) = request(
        app.addr,
        Method::DELETE,
        "/api/views/summary",
        "",
        Some(token),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "a file's view is the file's");
    let (status, _) = request(app.addr, Method::DELETE, "/api/views/per_unicorn", "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = request(
        app.addr,
        Method::DELETE,
        "/api/views/per_unicorn",
        "",
        Some(token),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = request(app.addr, Method::GET, "/api/views/per_unicorn", "", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let app = app.restart(tweak).await;
    let listed = crate::support::service::get_json(app.addr, "/api/views").await;
    assert_eq!(names(&listed), ["summary"], "deleted for good");
    app.stop().await;
}

/// Views on the DynamoDB store (dynalite): each view gets its table `stampede-view-{name}` (key
/// `Key`, `WindowStart`), `stampede query` and `views verify` read them, their rows end equal to
/// DuckDB's over the archive, a view defined at run time is kept (in `stampede-views`) across a
/// restart, and deleting it drops its table. The example views are renamed per run: the
/// emulator outlives the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_on_dynamodb_keep_a_table_each_and_end_with_duckdbs_rows() {
    use crate::support::aws::{self, Aws};
    use crate::support::process::{http_get_json, http_request, signal, start_service_with};
    let data = temp_dir("view-dynamo");
    let (archive, views_dir) = (data.join("archive"), data.join("views"));
    let run = crate::support::kafka::unique("r").replace('-', "_");
    let named = renamed_examples(&views_dir, &run);
    let mut env = aws::env(&[Aws::DynamoDb]);
    env.extend([
        ("STAMPEDE_STORE_KIND", "dynamodb".to_owned()),
        (
            "STAMPEDE_STORE_TABLE",
            crate::support::kafka::unique("UnicornSensorData"),
        ),
        ("STAMPEDE_STORE_CREATE_TABLES", "true".to_owned()),
        ("STAMPEDE_VIEWS_DIR", views_dir.display().to_string()),
        ("STAMPEDE_ARCHIVE_KIND", "dir".to_owned()),
        ("STAMPEDE_ARCHIVE_PATH", archive.display().to_string()),
        ("STAMPEDE_WINDOW_IDLE_TIMEOUT_SECS", "3600".to_owned()),
    ]);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dynamo = aws::dynamodb().await;
    let runtime_view = named("per_minute");
    let serve = start_service_with(&["serve"], &data.join("local-1"), &env_ref);
    // A view defined at run time, before any record: nothing to backfill.
    let (status, body) = http_request(
        "POST",
        &format!("{}/api/views", serve.url),
        format!(
            "CREATE VIEW {runtime_view} AS SELECT window_start, COUNT(*) AS records \
             FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start"
        )
        .as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let fleet = fleet_with_rides("33");
    for chunk in fleet.split(|&b| b == b'\n').collect::<Vec<_>>().chunks(500) {
        let (status, body) = http_request(
            "POST",
            &format!("{}/ingest", serve.url),
            &chunk.join(&b'\n'),
        );
        assert_eq!(status, 200, "{body}");
    }
    // SIGTERM closes every window and stores it.
    assert!(signal(serve, "-TERM").success());

    let files = walk(&archive);
    assert!(!files.is_empty(), "the archive holds the accepted records");
    for view in EXAMPLES {
        let table = format!("stampede-view-{}", named(view));
        let described = dynamo
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{table}: {e:?}"));
        let keys: Vec<(String, String)> = described
            .table()
            .unwrap()
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("Key".to_owned(), "HASH".to_owned()),
                ("WindowStart".to_owned(), "RANGE".to_owned())
            ]
        );
        let rows = stored_rows(&format!("SELECT * FROM {}", named(view)), &env);
        // Every row is an item of the view's table.
        let mut pages = dynamo
            .scan()
            .table_name(&table)
            .filter_expression("attribute_exists(#r)")
            .expression_attribute_names("#r", "Row")
            .select(aws_sdk_dynamodb::types::Select::Count)
            .into_paginator()
            .send();
        let mut items = 0;
        while let Some(page) = pages.next().await {
            items += page.unwrap().count();
        }
        assert_eq!(items as usize, rows.len(), "{table}");
        assert_same_rows(view, &rows, &duckdb(view, &files));
    }
    let mut verify = stampede(["views", "verify", "--archive"]);
    verify
        .arg(&archive)
        .args(EXAMPLES.map(&named))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = verify.output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        said.matches(" 0 differences").count(),
        EXAMPLES.len(),
        "{said}"
    );

    // Another instance, allowed to create nothing, finds the view defined at run time and its
    // rows; deleting it drops its table.
    let mut env2 = env_ref.clone();
    env2.push(("STAMPEDE_STORE_CREATE_TABLES", "false"));
    let serve = start_service_with(&["serve"], &data.join("local-2"), &env2);
    let listed = http_get_json(&format!("{}/api/views", serve.url));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == runtime_view.as_str()),
        "{listed}"
    );
    let rows = http_get_json(&format!("{}/api/views/{runtime_view}", serve.url));
    let counted: u64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["records"].as_u64().unwrap())
        .sum();
    let summary = duckdb("summary", &files);
    let want: u64 = summary.iter().map(|r| r["records"].as_u64().unwrap()).sum();
    assert_eq!(
        counted, want,
        "the run-time view counted every accepted record"
    );
    let (status, body) = http_request(
        "DELETE",
        &format!("{}/api/views/{runtime_view}", serve.url),
        b"",
    );
    assert_eq!(status, 204, "{body}");
    let gone = dynamo
        .describe_table()
        .table_name(format!("stampede-view-{runtime_view}"))
        .send()
        .await;
    assert!(gone.is_err(), "the deleted view's table is gone");
    drop(serve);
    // The emulator outlives the test: what this run made goes.
    drop_views_in_dynamodb(EXAMPLES.map(&named)).await;
}

/// Deletes the DynamoDB tables and definitions of the views `names` (the emulator outlives a
/// test).
pub(crate) async fn drop_views_in_dynamodb(names: impl IntoIterator<Item = String>) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let dynamo = crate::support::aws::dynamodb().await;
    for name in names {
        let table = format!("stampede-view-{name}");
        let _ = dynamo.delete_table().table_name(table).send().await;
        let _ = dynamo
            .delete_item()
            .table_name("stampede-views")
            .key("List", AttributeValue::S("views".into()))
            .key("Name", AttributeValue::S(name))
            .send()
            .await;
    }
}

/// The example views copied into `dir`, each renamed `{view}_{suffix}` (their DynamoDB tables
/// outlive a test); the new name of a view.
pub(crate) fn renamed_examples(dir: &Path, suffix: &str) -> impl Fn(&str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let suffix = suffix.to_owned();
    let named = move |view: &str| format!("{view}_{suffix}");
    for view in EXAMPLES {
        let sql = std::fs::read_to_string(example(view)).unwrap().replace(
            &format!("CREATE VIEW {view} AS"),
            &format!("CREATE VIEW {} AS", named(view)),
        );
        std::fs::write(dir.join(format!("{view}.sql")), sql).unwrap();
    }
    named
}

/// The records each partition (or shard) of `partitions` holds that the service accepts (what
/// `aggregate` rejects left out, and the sentinels that close the windows), in one file of
/// `dir`.
pub(crate) fn accepted_records(dir: &Path, partitions: &[Vec<Vec<u8>>]) -> PathBuf {
    let mut accepted = Vec::new();
    for (i, records) in partitions.iter().enumerate() {
        let file = dir.join(format!("partition-{i}.ndjson"));
        let body: Vec<u8> = records
            .iter()
            .flat_map(|r| r.iter().copied().chain([b'\n']))
            .collect();
        std::fs::write(&file, &body).unwrap();
        let rejected: std::collections::HashSet<usize> = aggregate_file(&file)
            .rejected
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for (n, r) in records.iter().enumerate() {
            let sentinel = String::from_utf8_lossy(r).contains("zz-sentinel");
            if !rejected.contains(&(n + 1)) && !sentinel {
                accepted.extend_from_slice(r);
                accepted.push(b'\n');
            }
        }
    }
    let file = dir.join("accepted.ndjson");
    std::fs::write(&file, accepted).unwrap();
    file
}

/// Each example view's rows on the service at `url` (named by `named`) come to equal DuckDB's
/// over `accepted` and stay so (windows before the sentinels' hour).
pub(crate) fn assert_views_end_as_duckdb(
    url: &str,
    named: &dyn Fn(&str) -> String,
    accepted: &Path,
) {
    use crate::support::poll::{holds_within, LONGEST};
    let before_sentinels = |v: &Value| {
        v["window_start"]
            .as_str()
            .is_some_and(|t| t < "2026-01-01 01:00:00")
            && !v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("zz-sentinel"))
    };
    for view in EXAMPLES {
        let want = duckdb(view, &[accepted.to_owned()]);
        let mut got = Vec::new();
        holds_within(
            Duration::from_secs(LONGEST),
            Duration::from_millis(500),
            || {
                let (status, body) = crate::support::process::http_get(&format!(
                    "{url}/api/views/{}?limit=100000",
                    named(view)
                ));
                assert_eq!(status, 200, "{body}");
                got = serde_json::from_str::<Vec<Value>>(&body)
                    .unwrap()
                    .into_iter()
                    .filter(before_sentinels)
                    .collect();
                got.len() == want.len()
            },
        );
        assert_same_rows(view, &got, &want);
    }
}

/// Forty unicorns with every kind of fault, their health falling (weak cells), sent to `to`.
pub(crate) fn produce_weakening(to: &str, start: &str, seed: &str, env: &[(&str, String)]) {
    crate::support::process::succeeds(
        stampede(["produce", "--rate", "max", "--quiet", "--unicorns", "40"])
            .args(["--msgs", "10000", "--seed", seed, "--drift", "-0.4"])
            .args([
                "--start-time",
                start,
                "--faults",
                crate::support::kafka::FAULTS,
            ])
            .args(["--to", to])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    );
}

/// `stampede query --format json SQL` over the store `env` names (no archive): its rows.
fn stored_rows(sql: &str, env: &[(&str, String)]) -> Vec<Value> {
    let out = crate::support::process::succeeds(
        stampede(["query", "--format", "json", sql])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("STAMPEDE_ARCHIVE_KIND", "none"),
    );
    lines(&out.stdout)
}

//! The raw archive and SQL over it (CONTRACT §8): the workshop's queries in `queries/` against
//! answers computed here from the records themselves (serde_json, not the program), in both
//! formats and layouts; exactly once across a SIGKILL of a Kafka-fed instance; `POST /api/query`
//! and `GET /api/trip` on a running service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::poll::{wait_until, wait_until_within, LONG, LONGEST};
use crate::support::process::{metric, signal, stampede_ok, start_service_with};
use crate::support::service::{request, temp_dir};

/// Every line of every object under `root` (skipping hidden names), counted.
pub(crate) fn archived_lines(root: &Path) -> BTreeMap<Vec<u8>, u32> {
    let mut counts = BTreeMap::new();
    for file in archive_files(root) {
        for line in std::fs::read(&file).unwrap().split(|b| *b == b'\n') {
            if !line.is_empty() {
                *counts.entry(line.to_vec()).or_default() += 1;
            }
        }
    }
    counts
}

/// The objects under `root`, relative paths, sorted.
fn archive_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Whether a record keeps CONTRACT §1's rules that the faults produced here break (JSON cut in
/// the middle, a missing `StatusTime`, a `Distance` as text, a `Latitude` out of range).
fn acceptable(line: &[u8]) -> bool {
    let Ok(Value::Object(r)) = serde_json::from_slice::<Value>(line) else {
        return false;
    };
    let number_in = |key: &str, low: f64, high: f64| {
        r.get(key)
            .and_then(Value::as_f64)
            .is_some_and(|v| (low..=high).contains(&v))
    };
    r.get("Name").is_some_and(Value::is_string)
        && r.get("StatusTime").is_some_and(Value::is_string)
        && number_in("Latitude", -90.0, 90.0)
        && number_in("Longitude", -180.0, 180.0)
        && number_in("Distance", 0.0, f64::MAX)
        && r.get("HealthPoints").is_some_and(Value::is_i64)
        && r.get("MagicPoints").is_some_and(Value::is_i64)
}

/// The records a service must accept from `payloads` (in event order, with no late ones),
/// counted.
pub(crate) fn accepted(payloads: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<Vec<u8>, u32> {
    let mut counts = BTreeMap::new();
    for payload in payloads {
        for line in payload.split(|b| *b == b'\n') {
            if acceptable(line) {
                *counts.entry(line.to_vec()).or_default() += 1;
            }
        }
    }
    counts
}

/// Compares two multisets of records, saying how many are missing and doubled.
pub(crate) fn assert_exactly_once(got: &BTreeMap<Vec<u8>, u32>, want: &BTreeMap<Vec<u8>, u32>) {
    let missing = want
        .iter()
        .filter(|(l, n)| got.get(*l).copied().unwrap_or(0) < **n)
        .count();
    let doubled = got
        .iter()
        .filter(|(l, n)| **n > want.get(*l).copied().unwrap_or(0))
        .count();
    assert!(
        missing == 0 && doubled == 0,
        "{missing} records missing, {doubled} archived too often (of {})",
        want.len()
    );
}

/// Archives `input` (NDJSON) through a file-fed `serve` into `archive` with `env`, and stops it.
fn archive_file(input: &Path, archive: &Path, records: u64, env: &[(&str, &str)]) {
    let dir = archive.parent().unwrap();
    let mut all = vec![
        ("STAMPEDE_SOURCE_KIND", "file"),
        ("STAMPEDE_SOURCE_PATH", input.to_str().unwrap()),
        ("STAMPEDE_ARCHIVE_KIND", "dir"),
        ("STAMPEDE_ARCHIVE_PATH", archive.to_str().unwrap()),
        ("STAMPEDE_ARCHIVE_BUFFER_BYTES", "262144"),
    ];
    all.extend_from_slice(env);
    let serve = start_service_with(&["serve"], &dir.join("store"), &all);
    // Longer: 21,600 records through a debug build, archived as they go.
    wait_until_within(LONG, "the file read", || {
        metric(&serve.url, "stampede_records_in_total") == records
    });
    // A graceful stop writes what is buffered.
    assert!(signal(serve, "-TERM").success());
}

/// A JSON object with its keys in the order written (serde_json's map sorts them).
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = m.next_entry::<String, Value>()? {
                    fields.push(field);
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// `stampede query --format json` of `queries/<file>` over `archive`: one object per row.
fn query_file(archive: &Path, file: &Path) -> Vec<Ordered> {
    let out = stampede_ok(&[
        "query",
        "--archive",
        archive.to_str().unwrap(),
        "--format",
        "json",
        "--file",
        file.to_str().unwrap(),
    ]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A record as the query shows it: Athena's lower-case columns, the record's own values.
fn row_of(r: &Value, columns: &[&str]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| {
            let key = match *c {
                "name" => "Name",
                "statustime" => "StatusTime",
                "latitude" => "Latitude",
                "longitude" => "Longitude",
                "distance" => "Distance",
                "healthpoints" => "HealthPoints",
                "magicpoints" => "MagicPoints",
                other => panic!("unknown column {other}"),
            };
            // Numbers as f64, so that 17 and 17.0 compare equal.
            match &r[key] {
                Value::Number(n) => Value::from(n.as_f64().unwrap()),
                v => v.clone(),
            }
        })
        .collect()
}

fn rows_as(got: &[Ordered], columns: &[&str]) -> Vec<Vec<Value>> {
    got.iter()
        .map(|row| {
            let names: Vec<&str> = row.0.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, columns, "columns and their order");
            row.0
                .iter()
                .map(|(_, v)| match v {
                    Value::Number(n) => Value::from(n.as_f64().unwrap()),
                    v => v.clone(),
                })
                .collect()
        })
        .collect()
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| r.iter().map(Value::to_string).collect::<Vec<_>>());
    rows
}

/// Checks the answer of `queries/<name>` against what the records say.
fn check_query(name: &str, got: &[Ordered], records: &[Value]) {
    const ALL: [&str; 7] = [
        "name",
        "statustime",
        "latitude",
        "longitude",
        "distance",
        "healthpoints",
        "magicpoints",
    ];
    match name {
        "all-records.sql" => {
            let want: Vec<Vec<Value>> = records.iter().map(|r| row_of(r, &ALL)).collect();
            assert_eq!(sorted(rows_as(got, &ALL)), sorted(want), "{name}");
        }
        "total-distance.sql" => {
            let mut want: BTreeMap<String, f64> = BTreeMap::new();
            for r in records {
                *want.entry(r["Name"].as_str().unwrap().into()).or_default() +=
                    r["Distance"].as_f64().unwrap();
            }
            let got: BTreeMap<String, f64> = rows_as(got, &["name", "totaldistance"])
                .into_iter()
                .map(|r| (r[0].as_str().unwrap().into(), r[1].as_f64().unwrap()))
                .collect();
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            );
            for (unicorn, total) in &want {
                // Sums in another order differ in the last bits.
                assert!(
                    (got[unicorn] - total).abs() <= 1e-9 * total,
                    "{unicorn}: {} vs {total}",
                    got[unicorn]
                );
            }
        }
        "trip.sql" => {
            let mut want: Vec<Vec<Value>> = records
                .iter()
                .filter(|r| r["Name"] == "Shadowfax")
                .map(|r| row_of(r, &["statustime", "latitude", "longitude"]))
                .collect();
            // The fixed-width timestamps sort as text.
            want.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
            assert!(!want.is_empty());
            assert_eq!(
                rows_as(got, &["statustime", "latitude", "longitude"]),
                want,
                "{name}"
            );
        }
        "after-time.sql" => {
            let mut want: Vec<Vec<Value>> = records
                .iter()
                .filter(|r| r["StatusTime"].as_str().unwrap() > "2018-03-18 05:00:00.000")
                .map(|r| row_of(r, &ALL))
                .collect();
            want.sort_by(|a, b| {
                (a[1].as_str(), a[0].as_str()).cmp(&(b[1].as_str(), b[0].as_str()))
            });
            assert!(!want.is_empty() && want.len() < records.len());
            assert_eq!(rows_as(got, &ALL), want, "{name}");
        }
        "low-vitals.sql" => {
            let columns = ["name", "statustime", "healthpoints", "magicpoints"];
            let want: Vec<Vec<Value>> = records
                .iter()
                .filter(|r| {
                    r["HealthPoints"].as_i64().unwrap() < 100
                        || r["MagicPoints"].as_i64().unwrap() < 100
                })
                .map(|r| row_of(r, &columns))
                .collect();
            assert!(!want.is_empty());
            assert_eq!(sorted(rows_as(got, &columns)), sorted(want), "{name}");
        }
        other => panic!("queries/{other} has no golden check here: add one"),
    }
}

/// Every file in `queries/` runs over an archive of two hours of the workshop's three unicorns
/// (21,600 records, the workshop's own scale) and answers what the records say — over the
/// NDJSON archive in the Firehose layout, and over the Parquet archive in the Hive layout.
#[test]
fn the_workshop_queries_answer_what_the_records_say_in_every_format_and_layout() {
    let dir = temp_dir("archive-queries");
    let input = dir.join("fleet.ndjson");
    let produced = stampede_ok(&[
        "produce",
        "--unicorns",
        "3",
        "--rate",
        "max",
        "--msgs",
        "21600",
        "--start-time",
        "2018-03-18 03:20:00",
        "--seed",
        "7",
        "--quiet",
    ]);
    std::fs::write(&input, &produced.stdout).unwrap();
    let records: Vec<Value> = String::from_utf8(produced.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 21_600);

    let ndjson = dir.join("ndjson");
    archive_file(&input, &ndjson, 21_600, &[]);
    // Firehose's layout: YYYY/MM/DD/HH/wildrydes-1-YYYY-MM-DD-HH-MM-SS-<uuid>, no extension.
    let files = archive_files(&ndjson);
    assert!(files.len() > 4, "rolled at 256 KiB: {files:?}");
    for f in &files {
        let rel = f
            .strip_prefix(&ndjson)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts[..3], ["2018", "03", "18"], "{rel}");
        assert!(matches!(parts[3], "03" | "04" | "05"), "{rel}");
        let expect = format!("wildrydes-1-2018-03-18-{}-", parts[3]);
        assert!(
            parts[4].starts_with(&expect) && parts[4].len() == expect.len() + 6 + 36,
            "{rel}"
        );
    }
    let parquet = dir.join("parquet");
    archive_file(
        &input,
        &parquet,
        21_600,
        &[
            ("STAMPEDE_ARCHIVE_FORMAT", "parquet"),
            ("STAMPEDE_ARCHIVE_LAYOUT", "hive"),
        ],
    );
    for f in archive_files(&parquet) {
        let rel = f
            .strip_prefix(&parquet)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(rel.starts_with("dt=2018-03-18/hour="), "{rel}");
        assert!(rel.ends_with(".parquet"), "{rel}");
        assert_eq!(&std::fs::read(&f).unwrap()[..4], b"PAR1", "{rel}");
    }
    assert_duckdb_reads_the_records(&parquet, &records);
    // Vitals at the ends of i64 (the decoder takes any): stored as deltas, which wrap, and read
    // back by DuckDB as they were sent.
    let ends = [
        (i64::MIN, i64::MAX),
        (i64::MAX, i64::MIN),
        (0, -1),
        (i64::MIN, 0),
        (-1, 1),
    ];
    let extremes: Vec<Value> = ends
        .iter()
        .enumerate()
        .map(|(i, (health, magic))| {
            serde_json::json!({"Name": "Extreme", "StatusTime": format!("2018-03-18 03:20:0{i}.000"),
                "Latitude": 1.5, "Longitude": -2.5, "Distance": 0.25,
                "HealthPoints": health, "MagicPoints": magic})
        })
        .collect();
    let input = dir.join("extremes.ndjson");
    let text: Vec<String> = extremes.iter().map(Value::to_string).collect();
    std::fs::write(&input, text.join("\n")).unwrap();
    let archive = dir.join("extremes");
    archive_file(
        &input,
        &archive,
        5,
        &[("STAMPEDE_ARCHIVE_FORMAT", "parquet")],
    );
    assert_duckdb_reads_the_records(&archive, &extremes);

    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&queries)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        for archive in [&ndjson, &parquet] {
            let got = query_file(archive, file);
            check_query(name, &got, &records);
        }
    }
}

/// Another engine reads the Parquet objects under `archive` (DuckDB: its own reader of each
/// column's encoding and compression) as exactly `records`, field by field, whatever the order.
fn assert_duckdb_reads_the_records(archive: &Path, records: &[Value]) {
    const READ: &str = "import duckdb, json, sys\n\
        for row in duckdb.sql(\"SELECT Name, strftime(StatusTime, '%Y-%m-%d %H:%M:%S.%g'), \
        Latitude, Longitude, Distance, HealthPoints, MagicPoints \
        FROM read_parquet('\" + sys.argv[1] + \"/**/*.parquet')\").fetchall():\n\
        \x20   print(json.dumps(row))\n";
    let out = crate::support::process::succeeds(
        std::process::Command::new(crate::views::python())
            .args(["-c", READ])
            .arg(archive),
    );
    // Coordinates and distances compared as the f64 they are (`17` and `17.0` alike), vitals
    // as the integers they are.
    let row = |v: Vec<Value>| -> String {
        let v: Vec<Value> = v
            .into_iter()
            .enumerate()
            .map(|(i, x)| match (i, x.as_f64()) {
                (2..=4, Some(f)) => Value::from(f),
                _ => x,
            })
            .collect();
        serde_json::to_string(&v).unwrap()
    };
    let mut got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| row(serde_json::from_str(l).unwrap()))
        .collect();
    let mut want: Vec<String> = records
        .iter()
        .map(|r| {
            row([
                "Name",
                "StatusTime",
                "Latitude",
                "Longitude",
                "Distance",
                "HealthPoints",
                "MagicPoints",
            ]
            .iter()
            .map(|k| r[*k].clone())
            .collect())
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "rows DuckDB read");
    assert!(got == want, "DuckDB reads other rows than the records");
}

/// Kafka, SIGKILL mid-stream and restart: every accepted record is in the archive exactly once
/// (objects written after the last commit are found by the replay, not written again).
#[test]
fn a_sigkilled_kafka_instance_archives_every_record_exactly_once() {
    use crate::support::kafka::{broker, create_topic, read_topic, unique, ServeConfig};
    let brokers = broker();
    let dir = temp_dir("archive-kafka");
    let topic = unique("archive-telemetry");
    let summaries = unique("archive-summary");
    let dead = unique("archive-dlq");
    create_topic(&brokers, &topic, 4);
    create_topic(&brokers, &summaries, 1);
    create_topic(&brokers, &dead, 1);
    let config = ServeConfig {
        brokers: &brokers,
        topic: &topic,
        group: &unique("archive-group"),
        summaries: &summaries,
        dead_letters: &dead,
        idle_secs: 3_600,
    }
    .write(&dir);
    let archive = dir.join("archive");
    let serve = || {
        start_service_with(
            &["serve", "--config", config.to_str().unwrap()],
            &dir.join("store"),
            &[
                ("STAMPEDE_ARCHIVE_KIND", "dir"),
                ("STAMPEDE_ARCHIVE_PATH", archive.to_str().unwrap()),
                // Small objects, written often: many commits and objects to cut through.
                ("STAMPEDE_ARCHIVE_BUFFER_BYTES", "65536"),
                ("STAMPEDE_ARCHIVE_BUFFER_SECS", "2"),
            ],
        )
    };
    let produce = move |brokers: String, topic: String, start: &'static str, seed: u64| {
        crate::support::process::produce_fleet(
            &format!("kafka://{brokers}/{topic}"),
            (40, 10_000),
            start,
            seed,
            "malformed=0.02",
            &[],
        );
    };
    produce(brokers.clone(), topic.clone(), "2026-01-01 00:00:00", 61);
    let first = serve();
    wait_until_within(LONG, "objects written and positions committed", || {
        metric(&first.url, "stampede_archive_objects_total") >= 4
            && metric(&first.url, "stampede_source_commits_total") >= 4
    });
    // The second half is being written while the instance dies.
    let producer = {
        let (b, t) = (brokers.clone(), topic.clone());
        std::thread::spawn(move || produce(b, t, "2026-01-01 00:04:10", 62))
    };
    wait_until_within(LONG, "some of the second half archived", || {
        metric(&first.url, "stampede_archive_records_total") > 10_500
    });
    first.kill();
    producer.join().unwrap();
    let second = serve();
    let want = accepted(
        read_topic(&brokers, &topic)
            .into_iter()
            .flatten()
            .map(|m| m.payload),
    );
    let total: u32 = want.values().sum();
    assert!(total > 19_000, "{total}");
    wait_until_within(LONGEST, "every accepted record archived", || {
        archived_lines(&archive).values().sum::<u32>() >= total
    });
    // Whatever the restart still writes would be a duplicate: stop it, then count.
    let found = metric(&second.url, "stampede_archive_found_total");
    assert!(signal(second, "-TERM").success());
    assert_exactly_once(&archived_lines(&archive), &want);
    eprintln!(
        "archive: {total} records exactly once; the restart found {found} objects already written"
    );
}

/// `serve` over HTTP with a directory archive written every second (and `env`): the service,
/// its address and the archive's directory.
fn serve_archiving(
    name: &str,
    env: &[(&str, &str)],
) -> (
    crate::support::process::Running,
    std::net::SocketAddr,
    PathBuf,
) {
    let dir = temp_dir(name);
    let archive = dir.join("archive");
    let mut all = vec![
        ("STAMPEDE_ARCHIVE_KIND", "dir"),
        ("STAMPEDE_ARCHIVE_PATH", archive.to_str().unwrap()),
        ("STAMPEDE_ARCHIVE_BUFFER_SECS", "1"),
    ];
    all.extend_from_slice(env);
    let serve = start_service_with(&["serve"], &dir.join("store"), &all);
    let addr = serve.url.trim_start_matches("http://").parse().unwrap();
    (serve, addr, archive)
}

/// NDJSON bodies over HTTP, with LF and CRLF line ends, a record with a CR inside it, and an
/// array whose element spans lines: every accepted record is one line of the archive, its
/// bytes as sent but for its line breaks (a trailing CR dropped, the others spaces).
#[test]
fn http_bodies_with_and_without_crs_archive_one_record_a_line() {
    let (serve, addr, archive) = serve_archiving("archive-lines", &[]);
    let line = |name: &str, s: u32| {
        crate::support::service::line(name, &format!("2026-01-01 00:00:{s:02}.000"), 1.5, 150, 150)
    };
    let lf: Vec<String> = (0..4).map(|s| line("Lf", s)).collect();
    let crlf: Vec<String> = (0..4).map(|s| line("Crlf", s)).collect();
    let inner = line("Inner", 5).replacen(',', ",\r", 1);
    let element = line("Element", 6).replacen(',', ",\n", 1);
    let bodies = [
        format!("{}\n", lf.join("\n")),
        format!("{}\r\n", crlf.join("\r\n")),
        format!(
            "{}\n{inner}\n{}",
            lf[0].replace("Lf", "Before"),
            lf[1].replace("Lf", "After")
        ),
        format!("[{element},\n{}]", lf[2].replace("Lf", "Array")),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for body in &bodies {
        let (status, reply) =
            rt.block_on(request(addr, Method::POST, "/ingest", body.clone(), None));
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    // Computed here from what was sent: the rule, not the program's output.
    let mut want = BTreeMap::new();
    let records = lf.iter().chain(&crlf).cloned().chain([
        lf[0].replace("Lf", "Before"),
        inner,
        lf[1].replace("Lf", "After"),
        element,
        lf[2].replace("Lf", "Array"),
    ]);
    for record in records {
        let kept = record.replace(['\r', '\n'], " ");
        *want.entry(kept.into_bytes()).or_insert(0u32) += 1;
    }
    let total: u32 = want.values().sum();
    wait_until("the records archived", || {
        metric(&serve.url, "stampede_archive_records_total") == u64::from(total)
    });
    assert_exactly_once(&archived_lines(&archive), &want);
}

/// `POST /api/query` runs SQL for an admin within the row limit and refuses bad SQL and writes
/// with the reason; `GET /api/trip` returns a unicorn's path from the archive in time order.
#[test]
fn the_service_answers_sql_for_admins_and_trips_for_the_dashboard() {
    let (serve, addr, _) =
        serve_archiving("archive-api", &[("STAMPEDE_WEB_TOKEN", "admin-secret")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Two unicorns, sent out of time order.
    let line = crate::support::service::line;
    let mut lines = Vec::new();
    for s in [5u32, 1, 3, 0, 4, 2] {
        let t = format!("2026-01-01 00:00:{s:02}.000");
        lines.push(line("Shadowfax", &t, 1.5, 150, 150));
        lines.push(line("Rocinante", &t, 2.0, 150, 150));
    }
    rt.block_on(async {
        let (status, body) = request(
            addr,
            Method::POST,
            "/ingest",
            lines.join("\n"),
            Some("admin-secret"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    });
    wait_until("the records archived", || {
        metric(&serve.url, "stampede_archive_records_total") == 12
    });
    let post = |sql: &str, token: Option<&str>| {
        rt.block_on(async {
            let (status, body) =
                request(addr, Method::POST, "/api/query", sql.to_owned(), token).await;
            (
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        })
    };
    let (status, v) = post(
        "SELECT Name, SUM(Distance) AS TotalDistance FROM wildrydes GROUP BY Name ORDER BY Name",
        None,
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, v) = post(
        "SELECT Name, SUM(Distance) AS TotalDistance FROM wildrydes GROUP BY Name ORDER BY Name",
        Some("admin-secret"),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["columns"], serde_json::json!(["name", "totaldistance"]));
    assert_eq!(
        v["rows"],
        serde_json::json!([{"name": "Rocinante", "totaldistance": 12.0}, {"name": "Shadowfax", "totaldistance": 9.0}])
    );
    assert_eq!(v["truncated"], false);
    // The row limit: at most what was asked, and says so.
    let (status, _, body) = rt.block_on(crate::support::service::request_with(
        addr,
        Method::POST,
        "/api/query",
        &[
            ("authorization", "Bearer admin-secret"),
            ("content-type", "application/json"),
        ],
        r#"{"sql": "SELECT * FROM wildrydes", "limit": 5}"#,
    ));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 5);
    assert_eq!(v["truncated"], true);
    let (status, v) = post("SELECT * FROM wildrydes LIMIT 20", Some("admin-secret"));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 12);
    assert_eq!(v["truncated"], false);
    // Bad SQL and writes: 400 with the reason.
    let (status, v) = post("SELECT nope FROM wildrydes", Some("admin-secret"));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    let (status, v) = post(
        "COPY (SELECT * FROM wildrydes) TO '/tmp/stolen.csv'",
        Some("admin-secret"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(!Path::new("/tmp/stolen.csv").exists());
    // The stored summaries are a table too (the windows are still open: none yet).
    let (status, v) = post("SELECT COUNT(*) AS n FROM summaries", Some("admin-secret"));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["rows"][0]["n"], 0);

    // The dashboard's trip: a read, in time order, bounded by from/to.
    let trip = |query: &str| {
        rt.block_on(async {
            let (status, body) =
                request(addr, Method::GET, &format!("/api/trip?{query}"), "", None).await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        })
    };
    let (status, v) = trip("name=Shadowfax&from=2026-01-01%2000:00:01&to=2026-01-01%2000:00:04");
    assert_eq!(status, StatusCode::OK, "{v}");
    let times: Vec<&str> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[2].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2026-01-01 00:00:01.000",
            "2026-01-01 00:00:02.000",
            "2026-01-01 00:00:03.000",
            "2026-01-01 00:00:04.000"
        ]
    );
    // Quotes in a name are data, not SQL.
    let (status, v) = trip("name=x'%20OR%20'1'='1");
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["points"], serde_json::json!([]));
    let (status, _) = trip("name=Shadowfax&from=yesterday");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    drop(serve);
}

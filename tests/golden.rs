//! Golden cases: hand-computed summaries for each corner of the window semantics
//! (see `tests/golden/README.md` for the reasoning), checked against the real aggregate path
//! and against the reference implementation, so that each vouches for the other.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use stampede::commands::aggregate::{aggregate, write_summaries, Input};
use stampede::window::WindowConfig;

use crate::support::process::stampede_ok;
use crate::support::reference;

const CASES: &[&str] = &[
    "out_of_order",
    "late_and_too_late",
    "boundaries",
    "spellings_and_unicode",
    "bad_lines",
];

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected_rejects(dir: &Path, case: &str) -> BTreeMap<String, u64> {
    let path = dir.join(format!("{case}.rejects"));
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(reason, n)| (reason.to_owned(), n.trim().parse().unwrap()))
        .collect()
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for case in CASES {
        let input = read(&dir.join(format!("{case}.input.ndjson")));
        let expected_text = read(&dir.join(format!("{case}.expected.ndjson")));
        let expected: Vec<Value> = serde_json::Deserializer::from_slice(&expected_text)
            .into_iter()
            .map(Result::unwrap)
            .collect();

        let mut rejects: BTreeMap<String, u64> = BTreeMap::new();
        let (summaries, _) = aggregate(
            [Input {
                label: (*case).into(),
                reader: Box::new(std::io::Cursor::new(input.clone())),
            }],
            WindowConfig::default(),
            1,
            &mut |r| *rejects.entry(r.reject.reason.to_string()).or_default() += 1,
        )
        .unwrap();
        let mut out = Vec::new();
        write_summaries(&mut out, &summaries).unwrap();
        let got: Vec<Value> = serde_json::Deserializer::from_slice(&out)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got, expected,
            "case {case}: output differs from the hand-computed summaries"
        );
        assert_eq!(
            rejects,
            expected_rejects(&dir, case),
            "case {case}: reject counts"
        );

        // The reference agrees with the hand computation too.
        let reference = reference::run(input.split(|&b| b == b'\n'));
        assert_eq!(
            reference.summaries,
            reference::parse_output(&expected_text),
            "reference on {case}"
        );
        let reference_rejects: BTreeMap<String, u64> = reference
            .rejects
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        assert_eq!(
            reference_rejects,
            expected_rejects(&dir, case),
            "reference rejects on {case}"
        );
    }
}

/// The reference's alert changes (resolving at `clear`) as the engine's JSON objects.
fn reference_alerts(input: &[u8], clear: i64) -> Vec<Value> {
    reference::run_with_clear(input.split(|&b| b == b'\n'), clear)
        .alerts
        .into_iter()
        .map(|(rule, name, state, value, t)| {
            let time = stampede::time::format_status_time(t);
            serde_json::json!({
                "AlertId": format!("{rule}/{name}/{time}"),
                "Rule": rule,
                "Name": name,
                "State": state,
                "Field": if rule == "low-health" { "HealthPoints" } else { "MagicPoints" },
                "Value": value,
                "Threshold": 100,
                "StatusTime": time,
            })
        })
        .collect()
}

/// A drifting fleet with every fault the producer writes (malformed, out-of-order, late and
/// too-late records), from `stampede produce`.
fn faulty_fleet(unicorns: &str, msgs: &str, seed: &str) -> std::process::Output {
    stampede_ok(&[
        "produce",
        "--unicorns",
        unicorns,
        "--msgs",
        msgs,
        "--rate",
        "max",
        "--quiet",
        "--seed",
        seed,
        "--start-time",
        "2018-03-18 03:20:00",
        "--drift",
        "-0.1",
        "--faults",
        "malformed=0.01,out-of-order=0.05,late=0.02,too-late=0.002",
    ])
}

fn ndjson(bytes: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// The hand-derived alert case (tests/golden/README.md): `stampede aggregate --alerts` prints
/// exactly those changes, and the reference implementation derives the same.
#[test]
fn golden_alert_changes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input_path = dir.join("alerts.input.ndjson");
    let expected = ndjson(&read(&dir.join("alerts.expected.ndjson")));
    let out = stampede_ok(&[
        std::ffi::OsStr::new("aggregate"),
        "--alerts".as_ref(),
        input_path.as_os_str(),
    ]);
    assert_eq!(ndjson(&out.stdout), expected, "aggregate --alerts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alert state changes: 9"), "{stderr}");
    let reference = reference_alerts(&read(&input_path), 105);
    assert_eq!(reference, expected, "reference");
}

/// A drifting fleet (vitals falling a tenth of a point a second on average, so that they cross 100)
/// with the producer's faults (out-of-order, late, too-late and malformed records), under rules
/// without hysteresis so that the random walk around 100 flaps often: the engine's changes
/// equal the reference's, record for record.
#[test]
fn alert_changes_of_a_drifting_fleet_match_the_reference() {
    let out = faulty_fleet("30", "15000", "7");
    let input = out.stdout;
    let (_, changes, _) = stampede::commands::aggregate::aggregate_with_alerts(
        [Input {
            label: "fleet".into(),
            reader: Box::new(std::io::Cursor::new(input.clone())),
        }],
        WindowConfig::default(),
        2,
        stampede::alert::Rule::defaults(0.0).into(),
        &mut |_| {},
    )
    .unwrap();
    let mut got = Vec::new();
    stampede::commands::aggregate::write_changes(&mut got, &changes).unwrap();
    let got = ndjson(&got);
    let want = reference_alerts(&input, 100);
    assert!(
        want.len() > 100,
        "the fleet flaps often: {} changes",
        want.len()
    );
    assert!(
        want.iter().any(|c| c["State"] == "resolved"),
        "some alerts resolve"
    );
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

/// `stampede aggregate` decodes on several threads and answers byte for byte as with one: the
/// summaries, the alert changes, and every rejected line with its number, on each golden input
/// and on a faulty fleet many read chunks long (with lines too large to read, blank lines, CRLF
/// and no final newline), read as two inputs.
#[test]
fn aggregate_answers_the_same_on_one_thread_and_on_several() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let dir = crate::support::service::temp_dir("threads");
    let out = faulty_fleet("300", "60000", "11");
    let mut lines: Vec<Vec<u8>> = out
        .stdout
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    assert!(lines.len() > 60_000);
    // Oversized lines (one many MiB long), a blank one and CRLF endings, at known line numbers.
    let oversized = [1_000, 20_000, 45_000];
    lines[oversized[0]] = vec![b'x'; 64 * 1024 + 1];
    lines[oversized[1]] = vec![b'y'; 5 << 20];
    lines[oversized[2]] = vec![b' '; 100 * 1024];
    lines[30_000] = b"   ".to_vec();
    for line in &mut lines[50_000..50_500] {
        line.push(b'\r');
    }
    let (first, second) = lines.split_at(40_000);
    let fleet1 = dir.join("fleet-1.ndjson");
    let fleet2 = dir.join("fleet-2.ndjson");
    std::fs::write(&fleet1, [first.join(&b'\n'), b"\n".to_vec()].concat()).unwrap();
    // No final newline.
    std::fs::write(&fleet2, second.join(&b'\n').trim_ascii_end()).unwrap();

    let mut runs: Vec<Vec<std::ffi::OsString>> = CASES
        .iter()
        .map(|case| vec![golden.join(format!("{case}.input.ndjson")).into()])
        .collect();
    runs.push(vec![fleet1.clone().into(), fleet2.clone().into()]);
    runs.push(vec![
        "--alerts".into(),
        fleet1.clone().into(),
        fleet2.into(),
    ]);
    for files in runs {
        let with = |threads: &str| {
            let mut args: Vec<std::ffi::OsString> = vec![
                "aggregate".into(),
                "--verbose".into(),
                "--threads".into(),
                threads.into(),
            ];
            args.extend(files.iter().cloned());
            stampede_ok(&args)
        };
        let one = with("1");
        assert!(!one.stdout.is_empty(), "{files:?}: some output");
        for threads in ["2", "3"] {
            let several = with(threads);
            assert!(
                one.stdout == several.stdout,
                "{files:?}: the output differs with {threads} threads"
            );
            assert_eq!(
                String::from_utf8_lossy(&one.stderr),
                String::from_utf8_lossy(&several.stderr),
                "{files:?}: rejects and counts with {threads} threads"
            );
        }
        if files.contains(&fleet1.clone().into()) {
            let stderr = String::from_utf8_lossy(&one.stderr);
            for line in oversized {
                let at = format!("fleet-1.ndjson:{}: rejected: too_large", line + 1);
                let at = if line >= 40_000 {
                    format!("fleet-2.ndjson:{}: rejected: too_large", line - 40_000 + 1)
                } else {
                    at
                };
                assert!(stderr.contains(&at), "{files:?}: {at} in\n{stderr:.2000}");
            }
        }
    }
}

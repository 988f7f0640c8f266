//! Continuous views (CONTRACT §9) as far as they go: `stampede aggregate --view` over files.

use serde_json::Value;

use crate::support::process::{aggregate_file, stampede};
use crate::support::service::temp_dir;

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
    let view = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/views/summary.sql");
    let out = stampede(["aggregate", "--view"])
        .arg(&view)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

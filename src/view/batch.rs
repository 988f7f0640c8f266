//! A view as one batch query over the archive's `wildrydes` table: its windows computed by SQL
//! alone, the way CONTRACT §9 defines a view's final rows (`TUMBLE` as a `GROUP BY` of
//! `date_bin`). The live engine keeps windows incrementally; this is the independent answer it
//! is checked against (`stampede views verify`, and the tests).
//!
//! The view's `SELECT` reads [`WINDOWED`]: here a common table expression over `wildrydes`, a
//! row per record and window it falls in — one for `TUMBLE`, size/slide for `HOP` (numbered by
//! a cross join with their offsets), and for `SESSION` the record's session within its key,
//! found by window functions (a new session where the gap since the key's previous record is
//! larger than the gap).

use super::plan::{ViewDef, Window, WINDOWED};

/// The batch SQL of `view` over a table `wildrydes` with the archive's columns.
pub fn sql(view: &ViewDef) -> String {
    let windowed = match view.window {
        Window::Tumble { size_ms } => hopping(size_ms, size_ms),
        Window::Hop { slide_ms, size_ms } => hopping(slide_ms, size_ms),
        Window::Session { gap_ms } => session(gap_ms, &view.keys, super::engine::SESSION_SPAN_MS),
    };
    format!("WITH {WINDOWED} AS ({windowed}) {}", view.select)
}

/// Event time as epoch milliseconds.
const MS: &str = "CAST(statustime AS BIGINT)";

/// Each record in the size/slide windows of `size_ms` that start every `slide_ms`, aligned to
/// the epoch.
fn hopping(slide_ms: i64, size_ms: i64) -> String {
    let offsets: Vec<String> = (0..size_ms / slide_ms).map(|i| format!("({i})")).collect();
    let start =
        format!("(({MS} - ({MS} % {slide_ms} + {slide_ms}) % {slide_ms}) - __o.i * {slide_ms})");
    format!(
        "SELECT wildrydes.*, to_timestamp_millis({start}) AS window_start, \
         to_timestamp_millis({start} + {size_ms}) AS window_end \
         FROM wildrydes CROSS JOIN (VALUES {}) AS __o(i)",
        offsets.join(", ")
    )
}

/// Each record in its session: per key, a session ends when the key has no record for
/// `gap_ms`; it runs from its first record to its last plus the gap, and never spans two
/// periods of `span_ms` (the engine's cut, `SESSION_SPAN_MS`).
fn session(gap_ms: i64, keys: &[String], span_ms: i64) -> String {
    let span = format!("({MS} - ({MS} % {span_ms} + {span_ms}) % {span_ms})");
    let partition = {
        let mut parts: Vec<String> = keys.to_vec();
        parts.push(span.clone());
        format!("PARTITION BY {}", parts.join(", "))
    };
    let by_key = |extra: &str| {
        let mut parts: Vec<&str> = keys.iter().map(String::as_str).collect();
        parts.push(&span);
        if !extra.is_empty() {
            parts.push(extra);
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("PARTITION BY {}", parts.join(", "))
        }
    };
    format!(
        "SELECT __s.*, \
         to_timestamp_millis(MIN({MS}) OVER ({session})) AS window_start, \
         to_timestamp_millis(MAX({MS}) OVER ({session}) + {gap_ms}) AS window_end \
         FROM (SELECT __n.*, SUM(__new) OVER ({partition} ORDER BY statustime ROWS UNBOUNDED PRECEDING) AS __session \
               FROM (SELECT wildrydes.*, CASE WHEN {MS} - LAG({MS}) OVER ({partition} ORDER BY statustime) <= {gap_ms} THEN 0 ELSE 1 END AS __new \
                     FROM wildrydes) AS __n) AS __s",
        session = by_key("__session"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::output::archive::target::Target;
    use crate::query::{context, row_values, run, Limits, Tables};
    use crate::time::{format_status_time, Millis};
    use crate::view::plan::parse;

    const T0: Millis = 1_521_343_200_000; // 2018-03-18 03:20:00

    /// Three unicorns over 12 minutes: Shadowfax reports every 10 s (one ride at a 30 s gap),
    /// Rocinante too but rests from minute 4 to 6 (two rides), Bucephalus every 40 s (past the
    /// gap: each record a ride of its own).
    fn records() -> Vec<(String, Millis, f64, i64)> {
        let mut out = Vec::new();
        for step in 0..72 {
            let t = T0 + step * 10_000;
            out.push(("Shadowfax".to_owned(), t, 1.5, 150 - step));
            if !(24..36).contains(&step) {
                out.push(("Rocinante".to_owned(), t, 2.0, 140));
            }
            if step % 4 == 0 {
                out.push(("Bucephalus".to_owned(), t, 0.5, 90));
            }
        }
        out
    }

    /// Runs `view_sql` in batch over `records` archived as NDJSON; rows as JSON values.
    async fn rows(view_sql: &str) -> Vec<Vec<serde_json::Value>> {
        let dir = std::env::temp_dir().join(format!(
            "stampede-view-batch-{}-{}",
            std::process::id(),
            crate::time::now_ms()
        ));
        let hour = dir.join("2018/03/18/03");
        std::fs::create_dir_all(&hour).unwrap();
        let mut ndjson = String::new();
        for (name, t, distance, health) in records() {
            ndjson.push_str(&format!(
                "{{\"Name\":\"{name}\",\"StatusTime\":\"{}\",\"Latitude\":1,\"Longitude\":2,\"Distance\":{distance},\"HealthPoints\":{health},\"MagicPoints\":100}}\n",
                format_status_time(t)
            ));
        }
        std::fs::write(hour.join("wildrydes-1-x"), ndjson).unwrap();
        let tables = Tables {
            archive: Some(Target::Dir(dir.clone())),
            summaries: None,
            views: Vec::new(),
        };
        let limits = Limits {
            partitions: 1,
            memory_bytes: None,
        };
        let ctx = context(&tables, limits).await.unwrap();
        let view = parse(view_sql).unwrap();
        let answer = run(&ctx, &sql(&view), None).await.unwrap();
        std::fs::remove_dir_all(&dir).ok();
        row_values(&answer)
    }

    fn text(v: &serde_json::Value) -> String {
        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
    }

    /// The workshop's summary as a view, in batch, equals the summaries computed by hand.
    #[tokio::test]
    async fn a_tumbling_view_groups_records_by_their_minute() {
        let got = rows(
            "CREATE VIEW summary AS SELECT name, window_start, SUM(distance) AS distance, MIN(healthpoints) AS minhealth, COUNT(*) AS records \
             FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY name, window_start",
        )
        .await;
        let mut want: BTreeMap<(String, String), (f64, i64, i64)> = BTreeMap::new();
        for (name, t, distance, health) in records() {
            let start = format_status_time(t - t % 60_000);
            let e = want.entry((name, start)).or_insert((0.0, i64::MAX, 0));
            e.0 += distance;
            e.1 = e.1.min(health);
            e.2 += 1;
        }
        let mut have = BTreeMap::new();
        for r in &got {
            have.insert(
                (text(&r[0]), text(&r[1])),
                (
                    r[2].as_f64().unwrap(),
                    r[3].as_i64().unwrap(),
                    r[4].as_i64().unwrap(),
                ),
            );
        }
        assert_eq!(have.len(), want.len());
        for (key, (d, h, n)) in &want {
            let (gd, gh, gn) = have[key];
            assert!((gd - d).abs() < 1e-9, "{key:?}: {gd} vs {d}");
            assert_eq!((gh, gn), (*h, *n), "{key:?}");
        }
    }

    /// A hopping window counts each record in size/slide windows.
    #[tokio::test]
    async fn a_hopping_view_counts_each_record_in_every_window_it_falls_in() {
        let got = rows(
            "CREATE VIEW fleet AS SELECT window_start, window_end, COUNT(*) AS records \
             FROM HOP(wildrydes, statustime, INTERVAL '1' MINUTE, INTERVAL '3' MINUTE) GROUP BY window_start, window_end",
        )
        .await;
        let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (_, t, _, _) in records() {
            for back in 0..3 {
                let start = t - t % 60_000 - back * 60_000;
                *want
                    .entry((
                        format_status_time(start),
                        format_status_time(start + 180_000),
                    ))
                    .or_default() += 1;
            }
        }
        let have: BTreeMap<(String, String), i64> = got
            .iter()
            .map(|r| ((text(&r[0]), text(&r[1])), r[2].as_i64().unwrap()))
            .collect();
        assert_eq!(have, want);
    }

    /// A session is a unicorn's ride: it ends when the unicorn is silent for the gap.
    #[tokio::test]
    async fn a_session_view_finds_each_unicorns_rides() {
        let got = rows(
            "CREATE VIEW rides AS SELECT name, window_start, window_end, COUNT(*) AS records \
             FROM SESSION(wildrydes, statustime, INTERVAL '30' SECOND) GROUP BY name, window_start, window_end",
        )
        .await;
        let mut by_name: BTreeMap<String, Vec<Millis>> = BTreeMap::new();
        for (name, t, _, _) in records() {
            by_name.entry(name).or_default().push(t);
        }
        let mut want = BTreeMap::new();
        for (name, mut times) in by_name {
            times.sort_unstable();
            let mut first = times[0];
            let mut count = 0;
            for (i, t) in times.iter().enumerate() {
                if i > 0 && t - times[i - 1] > 30_000 {
                    let last = times[i - 1];
                    want.insert(
                        (
                            name.clone(),
                            format_status_time(first),
                            format_status_time(last + 30_000),
                        ),
                        count,
                    );
                    first = *t;
                    count = 0;
                }
                count += 1;
            }
            let last = *times.last().unwrap();
            want.insert(
                (
                    name,
                    format_status_time(first),
                    format_status_time(last + 30_000),
                ),
                count,
            );
        }
        let have: BTreeMap<(String, String, String), i64> = got
            .iter()
            .map(|r| {
                (
                    (text(&r[0]), text(&r[1]), text(&r[2])),
                    r[3].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(have, want);
        assert_eq!(
            have.keys().filter(|k| k.0 == "Rocinante").count(),
            2,
            "two rides"
        );
    }
}

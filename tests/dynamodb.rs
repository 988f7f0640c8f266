//! The DynamoDB store against dynalite (a DynamoDB emulator that validates like AWS), started by
//! `scripts/components/aws`; its address is in `STAMPEDE_TEST_DYNAMODB`.

use stampede::output::store::dynamodb::DynamoStore;
use stampede::record::Summary;
use stampede::record::SummaryQuery;

use crate::support::aws::{self, Aws};

fn summary(name: &str, minute: i64, revision: u64, records: u64) -> Summary {
    let start = 1_521_343_200_000 + minute * 60_000;
    Summary {
        name: name.into(),
        window_start: start,
        window_end: start + 60_000,
        distance: 29.9 * records as f64,
        min_magic_points: 140,
        max_magic_points: 150,
        min_health_points: 130,
        max_health_points: 151,
        records,
        revision,
    }
}

#[tokio::test]
async fn a_lower_revision_never_replaces_a_higher_one_and_reads_come_back_newest_first() {
    let cfg = aws::sdk_config(&Aws::DynamoDb.endpoint()).await;
    let table = crate::support::kafka::unique("UnicornSensorData");
    let missing = DynamoStore::with_config(&cfg, &table, false).await;
    let err = missing
        .err()
        .expect("a missing table is an error")
        .to_string();
    assert!(
        err.contains(&table) && err.contains("create_tables"),
        "{err}"
    );

    let store = DynamoStore::with_config(&cfg, &table, true).await.unwrap();
    let first: Vec<Summary> = (0..60).map(|m| summary("Shadowfax", m, 1, 60)).collect();
    let stats = store.write(&first).await.unwrap();
    assert_eq!((stats.written, stats.skipped), (60, 0));
    // A replay re-emits revision 0 of every window: nothing is written.
    let replay: Vec<Summary> = (0..60).map(|m| summary("Shadowfax", m, 0, 59)).collect();
    let stats = store.write(&replay).await.unwrap();
    assert_eq!((stats.written, stats.skipped), (0, 60));
    // Within one batch, the highest revision of a key wins whatever the order.
    let mixed = vec![summary("Arion", 0, 3, 10), summary("Arion", 0, 2, 9)];
    assert_eq!(store.write(&mixed).await.unwrap().written, 1);

    let q = SummaryQuery {
        name: Some("Shadowfax".into()),
        limit: 5,
        ..SummaryQuery::default()
    };
    let got = store.summaries(&q).await.unwrap();
    let want: Vec<Summary> = (55..60)
        .rev()
        .map(|m| summary("Shadowfax", m, 1, 60))
        .collect();
    assert_eq!(got, want);
    let all = store
        .summaries(&SummaryQuery {
            limit: 1_000,
            ..SummaryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 61);
    assert!(all.contains(&summary("Arion", 0, 3, 10)));
}

/// The settings of a `stampede serve` whose store is `table` on the emulator.
fn serve_env(table: &str, create: bool) -> Vec<(&'static str, String)> {
    let mut env = aws::env(&[Aws::DynamoDb]);
    env.extend([
        ("STAMPEDE_STORE_KIND", "dynamodb".into()),
        ("STAMPEDE_STORE_TABLE", table.into()),
        ("STAMPEDE_STORE_CREATE_TABLES", create.to_string()),
    ]);
    env
}

#[test]
fn serve_with_the_dynamodb_store_stores_what_aggregate_computes() {
    use crate::support::process::{
        aggregate_ordered, http_get_json, ingest_ordered_then_stop, start_service_with, summary_key,
    };
    let dir = crate::support::service::temp_dir("dynamo-serve");
    let table = crate::support::kafka::unique("UnicornSensorData");
    let want = aggregate_ordered(9, &dir);
    // Stopping flushes every window to DynamoDB.
    ingest_ordered_then_stop(9, &dir.join("store-1"), &serve_env(&table, true));

    // Another instance, with no table creation allowed, reads them back from DynamoDB.
    let env = serve_env(&table, false);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reader = start_service_with(&["serve"], &dir.join("store-2"), &env);
    let got = http_get_json(&format!("{}/api/summaries?limit=10000", reader.url));
    let got: std::collections::BTreeMap<_, _> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (summary_key(v), v.clone()))
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    drop(reader);
}

#[test]
fn a_missing_table_is_a_clear_error_naming_it() {
    let table = crate::support::kafka::unique("NoSuchTable");
    let dir = crate::support::service::temp_dir("dynamo-missing");
    let out = crate::support::process::stampede(["serve"])
        .envs(serve_env(&table, false))
        .env("STAMPEDE_WEB_LISTEN", "127.0.0.1:0")
        .env("STAMPEDE_STORE_PATH", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&table) && stderr.contains("create_tables"),
        "{stderr}"
    );
}

/// Two writers of one view window (two instances merging a fleet-wide view): a write names the
/// version it merged from, so the one that read before the other wrote gets a conflict instead
/// of replacing a row merged from more partials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_row_merged_from_a_stale_read_is_refused_as_a_conflict() {
    use stampede::output::store::views::{dynamodb::Dynamo, Change, ViewTables};
    use std::sync::Arc;
    let cfg = aws::sdk_config(&Aws::DynamoDb.endpoint()).await;
    let tables = ViewTables::DynamoDb(Dynamo::open(&cfg, true).await.unwrap());
    let view: Arc<str> = crate::support::kafka::unique("v").replace('-', "_").into();
    let change = |partition: &str, row: &str, version: u64| Change {
        view: Arc::clone(&view),
        start: 1_521_343_200_000,
        key: "[\"Shadowfax\"]".into(),
        partials: vec![(partition.into(), Some(partition.as_bytes().to_vec()))],
        row: Some(Some(row.into())),
        version,
    };
    let (first, stale) = (
        change("0", "{\"n\":1,\"revision\":0}", 0),
        change("1", "{\"n\":1,\"revision\":0}", 0),
    );
    let name = view.to_string();
    let result = tables
        .off_runtime(move |t| {
            t.prepare(&name)?;
            t.write(&[first], &[])?;
            // Read before the first write by the other instance: version 0.
            Ok(t.write(&[stale], &[]))
        })
        .await
        .unwrap();
    let err = result.expect_err("a stale write is refused");
    assert!(err.conflict, "{err}");
    let (merged, name) = (change("1", "{\"n\":2,\"revision\":1}", 1), view.to_string());
    let stored = tables
        .off_runtime(move |t| {
            let read = t.load(&[(&name, 1_521_343_200_000, "[\"Shadowfax\"]")])?;
            assert_eq!(read[0].version, 1);
            assert_eq!(read[0].partials.len(), 1);
            t.write(&[merged], &[])?;
            t.load(&[(&name, 1_521_343_200_000, "[\"Shadowfax\"]")])
        })
        .await
        .unwrap();
    assert_eq!(stored[0].version, 2);
    assert_eq!(stored[0].row.as_deref(), Some("{\"n\":2,\"revision\":1}"));
    let partitions: Vec<&str> = stored[0].partials.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(partitions, ["0", "1"]);
    let name = view.to_string();
    tables.off_runtime(move |t| t.delete(&name)).await.unwrap();
}

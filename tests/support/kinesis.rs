//! Kinesis for the tests, on kinesalite (see `support::aws` for the emulators, their
//! environment and clients): streams created, read back shard by shard, and closed.

use crate::support::process::summary_key;

/// Creates `stream` with `shards` shards and waits until it is active.
pub fn create_stream(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) {
    rt.block_on(
        c.create_stream()
            .stream_name(stream)
            .shard_count(shards)
            .send(),
    )
    .unwrap();
    await_active(rt, c, stream, "created");
}

/// Waits until `stream` is active again after it was `changed` (created, split, merged).
pub fn await_active(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
    changed: &str,
) {
    crate::support::poll::wait_until(&format!("stream {stream} active, {changed}"), || {
        let d = rt
            .block_on(c.describe_stream_summary().stream_name(stream).send())
            .unwrap();
        d.stream_description_summary.map(|s| s.stream_status)
            == Some(aws_sdk_kinesis::types::StreamStatus::Active)
    });
}

/// Every record of every shard of `stream`, from the beginning.
pub fn read_all(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<Vec<u8>> {
    read_shards(rt, c, stream).into_iter().flatten().collect()
}

/// Every record of `stream`, one list per shard in sequence order.
pub fn read_shards(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<Vec<Vec<u8>>> {
    let shards = rt
        .block_on(stampede::clients::kinesis::list_shards(c, stream))
        .unwrap();
    let mut out = Vec::new();
    for shard in shards {
        let mut records = Vec::new();
        let mut it = rt
            .block_on(
                c.get_shard_iterator()
                    .stream_name(stream)
                    .shard_id(shard.shard_id())
                    .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                    .send(),
            )
            .unwrap()
            .shard_iterator;
        while let Some(i) = it {
            let page = rt
                .block_on(c.get_records().shard_iterator(i).send())
                .unwrap();
            let empty = page.records.is_empty();
            records.extend(page.records.into_iter().map(|r| r.data.into_inner()));
            it = if empty {
                None
            } else {
                page.next_shard_iterator
            };
        }
        out.push(records);
    }
    out
}

/// A record an hour later on every shard, so that every earlier window becomes final.
pub fn close_all_windows(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str) {
    let shards = rt
        .block_on(stampede::clients::kinesis::list_shards(c, stream))
        .unwrap();
    for (i, shard) in shards.iter().enumerate() {
        let start = shard
            .hash_key_range()
            .map(|r| r.starting_hash_key().to_owned())
            .unwrap();
        let record = format!(
            r#"{{"Name":"zz-sentinel-{i}","StatusTime":"2026-01-01 02:00:00","Latitude":40.7,"Longitude":-73.9,"Distance":1.0,"HealthPoints":100,"MagicPoints":100}}"#
        );
        rt.block_on(
            c.put_record()
                .stream_name(stream)
                .partition_key("sentinel")
                .explicit_hash_key(start)
                .data(aws_sdk_kinesis::primitives::Blob::new(record))
                .send(),
        )
        .unwrap();
    }
}

pub fn http_get_summaries(url: &str) -> crate::support::kafka::Summaries {
    let list = crate::support::process::http_get_json(&format!("{url}/api/summaries?limit=100000"));
    list.as_array()
        .unwrap()
        .iter()
        .filter(|v| !v["Name"].as_str().unwrap_or("").starts_with("zz-sentinel"))
        .map(|v| (summary_key(v), v.clone()))
        .collect()
}

//! The raw archive (CONTRACT §8): every accepted telemetry record, kept in a directory or an S3
//! bucket under hourly prefixes, as NDJSON (the bytes as received) or Parquet — the workshop's
//! Firehose delivery, exactly once. [`output`] is the output of the fan-out that writes it,
//! [`target`] where objects go, [`columns`] the Parquet encoding; `query` reads it back.
//!
//! # Exactly once
//!
//! With a Kafka or Kinesis source every accepted record is in the archive once, whatever
//! crashes, restarts and partition moves happen. Three rules give it:
//!
//! 1. **Names are deterministic.** An object is named by its partition and the source's own id
//!    of its first record (the Kafka offset, the Kinesis sequence number), hashed into the
//!    Firehose-style name's UUID, under the hour of its first record's `StatusTime` — never the
//!    local clock. An object is written only if no object has that name (`If-None-Match: *` on
//!    S3, a hard link that refuses to replace on a directory), and is never visible half
//!    written.
//! 2. **Checkpoints fall between objects.** A partition's objects always end at one of its
//!    barriers: when a barrier arrives with the buffer due (size or age) or last, the objects
//!    hold everything before it; when the buffer comes due between barriers, they hold the
//!    records before the newest barrier held back (the rest stays buffered). Only that barrier,
//!    or one arriving with nothing buffered, is answered
//!    [`Answer::Durable`](crate::output::Answer); the barriers held before it fell inside the
//!    objects and are answered `Skip`, so their checkpoints are never committed. A committed
//!    checkpoint therefore never cuts an object in two, and a busy partition still commits once
//!    per object.
//! 3. **A replay meets its own objects.** A resumed partition archives nothing up to its
//!    checkpoint's last record (`pipeline`). After it, it buffers the same records in the same
//!    order per hour as the run that crashed, so its first object in an hour has the same name
//!    as that run's: the write finds it there, counts the records it holds, and drops as many
//!    of its own (carrying the rest of the count over to records still to come). Until the
//!    replay has passed every object found, its barriers are skipped too.
//!
//! A partition whose buffer is due with no barrier held (a quiet one, whose checkpoint does not
//! change) writes anyway after a grace period; one whose buffer reaches four times
//! `buffer_bytes` with none held, too: nothing is lost, the next checkpoint commits. HTTP ingest and the file source keep no checkpoints:
//! their objects are named by the run, written at size or age and when the service stops; a
//! crash loses what was buffered (at most `buffer_secs`), as it loses open windows.

pub mod columns;
pub mod lines;
pub mod output;
pub mod target;

use serde::Deserialize;

/// How archive objects are laid out under hourly prefixes (`archive.layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveLayout {
    /// `YYYY/MM/DD/HH/wildrydes-1-…`, as Firehose writes.
    #[default]
    Firehose,
    /// `dt=YYYY-MM-DD/hour=HH/…`, partitions Athena, Spark and DataFusion prune on.
    Hive,
}

/// What archive objects hold (`archive.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFormat {
    /// The records' bytes as received, one per line.
    #[default]
    Ndjson,
    /// Typed columns (names and times zstd-compressed).
    Parquet,
}

/// Checks an S3 bucket name (the rules S3 enforces for new buckets).
///
/// # Errors
/// What is wrong with it.
pub fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends_ok = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && ok_chars && ends_ok {
        Ok(())
    } else if bucket.is_empty() {
        Err("the S3 archive needs a bucket".into())
    } else {
        Err(format!(
            "{bucket:?} is not an S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit"
        ))
    }
}

/// The Firehose-style UUID of the object whose first record is `id` in `partition` of `source`:
/// an RFC 9562 version 8 UUID from the MD5 of the three, the same on every replay.
pub fn object_uuid(source: &str, partition: &str, id: &str) -> String {
    let mut input = Vec::with_capacity(source.len() + partition.len() + id.len() + 2);
    input.extend_from_slice(source.as_bytes());
    input.push(0);
    input.extend_from_slice(partition.as_bytes());
    input.push(0);
    input.extend_from_slice(id.as_bytes());
    let mut b = md5::compute(&input).0;
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The key of an object (below the archive's root or prefix) whose first record has `StatusTime`
/// `first` and whose UUID is `uuid`.
pub fn object_key(
    layout: ArchiveLayout,
    format: ArchiveFormat,
    first: crate::time::Millis,
    uuid: &str,
) -> String {
    // "YYYY-MM-DD HH:MM:SS.mmm"
    let t = crate::time::format_status_time(first);
    let (y, mo, d, h, mi, s) = (
        &t[0..4],
        &t[5..7],
        &t[8..10],
        &t[11..13],
        &t[14..16],
        &t[17..19],
    );
    let dir = match layout {
        ArchiveLayout::Firehose => format!("{y}/{mo}/{d}/{h}"),
        ArchiveLayout::Hive => format!("dt={y}-{mo}-{d}/hour={h}"),
    };
    let ext = match format {
        ArchiveFormat::Ndjson => "",
        ArchiveFormat::Parquet => ".parquet",
    };
    format!("{dir}/wildrydes-1-{y}-{mo}-{d}-{h}-{mi}-{s}-{uuid}{ext}")
}

/// Where the archive writes (`archive.kind`, `path`, `bucket`, `prefix`).
pub enum Place {
    /// A directory.
    Dir(std::path::PathBuf),
    /// An S3 bucket, objects under `prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
}

/// Registers the archive output (CONTRACT §8) writing to `place`; returns where it writes (for
/// queries). Fails at start when the directory cannot be made or the bucket reached.
///
/// # Errors
/// The directory or bucket cannot be written; the message names the key.
pub async fn build(
    place: Place,
    settings: output::Settings,
    aws: &crate::clients::aws::Aws,
    outputs: &mut crate::output::Outputs,
) -> anyhow::Result<target::Target> {
    use anyhow::Context as _;
    let (target, key) = match place {
        Place::Dir(path) => (target::Target::Dir(path), "archive.path"),
        Place::S3 { bucket, prefix } => {
            let target = target::Target::s3(aws.config().await, &bucket, &prefix).context(
                "cannot make an S3 client (archive.bucket; AWS_REGION, AWS_ENDPOINT_URL_S3)",
            )?;
            (target, "archive.bucket")
        }
    };
    target
        .prepare()
        .await
        .with_context(|| format!("cannot write the archive at {} ({key})", target.describe()))?;
    let rx = outputs.add(
        "archive",
        crate::output::Interest {
            records: true,
            // Parquet takes each record's fields as the engine decoded them.
            fields: settings.format == ArchiveFormat::Parquet,
            ..crate::output::Interest::default()
        },
    );
    let health = crate::output::Health::new("archive");
    tracing::info!(target = %target.describe(), layout = ?settings.layout, format = ?settings.format, "archive: on");
    let archive =
        output::ArchiveOutput::new(target.clone(), settings, health.clone(), outputs.give_up());
    outputs.run("archive", tokio::spawn(archive.run(rx)), health);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_firehose_and_hive_and_depend_only_on_the_first_record() {
        let t = crate::time::parse_status_time(b"2017-09-21 16:50:17.250").unwrap();
        let uuid = object_uuid("kafka", "wildrydes/0", "42");
        assert_eq!(uuid, object_uuid("kafka", "wildrydes/0", "42"));
        assert_ne!(uuid, object_uuid("kafka", "wildrydes/1", "42"));
        assert_ne!(uuid, object_uuid("kafka", "wildrydes/0", "43"));
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "8", "version 8: {uuid}");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"), "{uuid}");
        assert_eq!(
            object_key(ArchiveLayout::Firehose, ArchiveFormat::Ndjson, t, &uuid),
            format!("2017/09/21/16/wildrydes-1-2017-09-21-16-50-17-{uuid}")
        );
        assert_eq!(
            object_key(ArchiveLayout::Hive, ArchiveFormat::Parquet, t, &uuid),
            format!("dt=2017-09-21/hour=16/wildrydes-1-2017-09-21-16-50-17-{uuid}.parquet")
        );
    }

    #[test]
    fn bucket_names_are_checked() {
        assert!(check_bucket("wildrydes-data-me").is_ok());
        assert!(check_bucket("").unwrap_err().contains("needs a bucket"));
        assert!(check_bucket("Wild").is_err());
        assert!(check_bucket("ab").is_err());
        assert!(check_bucket("-ab").is_err());
    }
}

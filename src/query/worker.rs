//! Queries on a running service run in a worker process of their own: the `stampede` binary
//! started again with [`WORKER_ARG`], its data segment capped (`ulimit -d`), fed the question on
//! stdin and answering with Arrow IPC on stdout.
//!
//! A query is the one thing a client can make the service compute at will, and DataFusion
//! cannot bound all it does: a scalar function may allocate any size (`repeat`, `lpad`, `||`),
//! and an allocation that fails aborts a Rust process, as does a stack overflow in a deeply
//! nested plan. In a worker, either ends the worker alone; the service answers that the query
//! was stopped and goes on. The worker is killed when the query runs past its time, when its
//! answer grows past [`MAX_ANSWER_BYTES`], and when the client that asked goes away (the request
//! is dropped, and with it the child): nothing keeps running for nobody.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Serialize};

use super::{context, run, Answer, Limits, QueryError, Tables};
use crate::output::archive::target::Target;
use crate::record::Summary;

/// The first argument that makes the binary a query worker instead of the command line.
pub const WORKER_ARG: &str = "__query-worker";

/// The largest answer (Arrow IPC bytes) a query on the service may give; past it the worker is
/// stopped and the client told to ask for less.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The worker's data segment beyond the query's memory limit: its runtime, the archive's
/// listing, the summaries, the answer, and what scalar functions allocate.
const HEADROOM_BYTES: usize = 512 << 20;

/// What the service sends the worker.
#[derive(Serialize, Deserialize)]
struct Request {
    sql: String,
    max_rows: usize,
    memory_bytes: usize,
    archive: Option<Place>,
    /// Summaries follow the request line, one JSON object a line, when set.
    summaries: Option<usize>,
    /// Views' tables: each one's statement and how many rows follow (after the summaries).
    views: Vec<(String, usize)>,
}

/// The archive, as the worker finds it again.
#[derive(Serialize, Deserialize)]
enum Place {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// How a worker that ran to its end says it failed (exit status 2, this on stderr).
#[derive(Serialize, Deserialize)]
enum Failed {
    Sql(String),
    Source(String),
}

/// The worker's first line on stdout, before the Arrow IPC stream.
#[derive(Serialize, Deserialize)]
struct Header {
    truncated: bool,
}

/// Runs `sql` over `tables` in a worker process with one thread, `memory_bytes` for its
/// operators, at most `max_rows` rows and within `timeout`: what `POST /api/query` and the trip
/// do. The worker is killed if this future is dropped.
///
/// # Errors
/// As [`run`]; [`QueryError::Timeout`]; [`QueryError::TooLarge`] for an answer past
/// [`MAX_ANSWER_BYTES`]; [`QueryError::Stopped`] when the worker died (out of memory, a stack
/// overflow).
pub async fn run_isolated(
    tables: Tables,
    sql: String,
    max_rows: usize,
    timeout: Duration,
    memory_bytes: usize,
) -> Result<Answer, QueryError> {
    let source = |what: &str, e: &dyn std::fmt::Display| QueryError::Source(format!("{what}: {e}"));
    let archive = match tables.archive {
        None => None,
        Some(Target::Dir(path)) => Some(Place::Dir(path)),
        Some(Target::S3 { bucket, prefix, .. }) => Some(Place::S3 { bucket, prefix }),
    };
    let request = Request {
        sql,
        max_rows,
        memory_bytes,
        archive,
        summaries: tables.summaries.as_ref().map(Vec::len),
        views: tables
            .views
            .iter()
            .map(|v| (v.sql.clone(), v.rows.len()))
            .collect(),
    };
    let mut input = serde_json::to_vec(&request).map_err(|e| source("query request", &e))?;
    input.push(b'\n');
    for s in tables.summaries.iter().flatten() {
        serde_json::to_writer(&mut input, s).map_err(|e| source("query request", &e))?;
        input.push(b'\n');
    }
    for row in tables.views.iter().flat_map(|v| &v.rows) {
        // One line each: the rows are JSON, which escapes line ends in its strings.
        input.extend_from_slice(row.as_bytes());
        input.push(b'\n');
    }

    let exe = worker_exe()?;
    let limit_kib = (memory_bytes.saturating_add(HEADROOM_BYTES)) >> 10;
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("ulimit -d {limit_kib} && exec \"$0\" {WORKER_ARG}"))
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            source(
                &format!("cannot start a query worker ({})", exe.display()),
                &e,
            )
        })?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(QueryError::Source("the query worker has no pipes".into()));
    };
    // Killed when this future is dropped (the client went away), times out, or answers too much.
    let worker = Worker(Arc::new(Mutex::new(child)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let watched = Arc::clone(&worker.0);
    std::thread::Builder::new()
        .name("stampede-query".into())
        .spawn(move || {
            // A worker that stops reading (it failed early) is no error here: its status says why.
            let feeder = std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
            let errors = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = (&mut stderr).take(64 << 10).read_to_string(&mut text);
                // The rest is drained, never left to fill the pipe and stall the worker.
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                text
            });
            let mut out = Vec::new();
            let read = stdout
                .take(MAX_ANSWER_BYTES as u64 + 1)
                .read_to_end(&mut out);
            if out.len() > MAX_ANSWER_BYTES {
                kill(&watched);
            }
            let _ = feeder.join();
            let errors = errors.join().unwrap_or_default();
            // Its stdout is closed: it has ended, or is ending. Polled, so that the lock is never
            // held while waiting (a kill takes it).
            let status = loop {
                match lock(&watched).try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let _ = tx.send((read.and(status), out, errors));
        })
        .map_err(|e| source("cannot start a query thread", &e))?;
    let (status, out, errors) = match tokio::time::timeout(timeout, rx).await {
        Err(_) => return Err(QueryError::Timeout(timeout)),
        Ok(Err(_)) => return Err(QueryError::Source("the query thread failed".into())),
        Ok(Ok((status, out, errors))) => (status, out, errors),
    };
    drop(worker);
    let status = status.map_err(|e| source("the query worker", &e))?;
    if out.len() > MAX_ANSWER_BYTES {
        return Err(QueryError::TooLarge(MAX_ANSWER_BYTES));
    }
    match status.code() {
        Some(0) => decode_answer(&out),
        Some(2) => Err(match serde_json::from_str::<Failed>(errors.trim()) {
            Ok(Failed::Sql(m)) => QueryError::Sql(m),
            Ok(Failed::Source(m)) => QueryError::Source(m),
            Err(_) => QueryError::Stopped(format!("the query worker failed: {}", errors.trim())),
        }),
        _ => {
            tracing::warn!(%status, "a query worker died");
            Err(QueryError::Stopped(format!(
                "the query was stopped: it needed more than the {} MiB a query may use, or nested too deep ({status})",
                (memory_bytes + HEADROOM_BYTES) >> 20
            )))
        }
    }
}

/// A running worker, killed when dropped (a worker that has ended is unaffected).
struct Worker(Arc<Mutex<Child>>);

impl Drop for Worker {
    fn drop(&mut self) {
        kill(&self.0);
    }
}

fn lock(child: &Mutex<Child>) -> MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(PoisonError::into_inner)
}

fn kill(child: &Mutex<Child>) {
    let _ = lock(child).kill();
}

/// The worker's stdout as an answer.
fn decode_answer(out: &[u8]) -> Result<Answer, QueryError> {
    let bad =
        |e: &dyn std::fmt::Display| QueryError::Source(format!("the query worker's answer: {e}"));
    let newline = out
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad(&"no header"))?;
    let header: Header = serde_json::from_slice(&out[..newline]).map_err(|e| bad(&e))?;
    let reader = StreamReader::try_new(&out[newline + 1..], None).map_err(|e| bad(&e))?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
    Ok(Answer {
        schema,
        batches,
        truncated: header.truncated,
    })
}

/// The binary to run as the worker: this one; a test harness that embeds the service runs the
/// `stampede` binary Cargo built beside it.
fn worker_exe() -> Result<PathBuf, QueryError> {
    let me = std::env::current_exe()
        .map_err(|e| QueryError::Source(format!("cannot find this program: {e}")))?;
    // A test harness, as Cargo builds one into target/*/deps/: the stampede binary it tests is
    // one directory up. Anything else is the service itself, run again as itself:
    // /proc/PID/exe (this process's, not the shell's that execs it) still opens it when its file
    // was replaced by a deploy meanwhile.
    let in_deps = me
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|d| d == "deps");
    if !in_deps {
        let proc_exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
        return Ok(if proc_exe.exists() { proc_exe } else { me });
    }
    me.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("stampede"))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            QueryError::Source(format!(
                "no stampede binary beside the test harness {} to run the query in",
                me.display()
            ))
        })
}

/// The worker: reads a request on stdin, answers on stdout. Exit status 0 with an answer, 2
/// with what failed, as JSON, on stderr; anything else (killed, out of memory) the service reports.
pub fn serve_stdio() -> ExitCode {
    match work() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let failed = match e {
                QueryError::Sql(m) => Failed::Sql(m),
                other => Failed::Source(other.to_string()),
            };
            eprintln!("{}", serde_json::to_string(&failed).unwrap_or_default());
            ExitCode::from(2)
        }
    }
}

fn work() -> Result<(), QueryError> {
    let source = |e: &dyn std::fmt::Display| QueryError::Source(e.to_string());
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| source(&e))?;
    let mut lines = input.split(|&b| b == b'\n');
    let request: Request = serde_json::from_slice(lines.next().unwrap_or_default())
        .map_err(|e| source(&format!("bad request: {e}")))?;
    let summaries = match request.summaries {
        None => None,
        Some(n) => {
            let mut all = Vec::with_capacity(n);
            for line in lines.by_ref().take(n) {
                all.push(serde_json::from_slice::<Summary>(line).map_err(|e| source(&e))?);
            }
            Some(all)
        }
    };
    let mut views = Vec::with_capacity(request.views.len());
    for (sql, n) in request.views {
        let rows = lines
            .by_ref()
            .take(n)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        views.push(crate::query::ViewRows { sql, rows });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| source(&e))?;
    let answer = runtime.block_on(async {
        let archive = match request.archive {
            None => None,
            Some(Place::Dir(path)) => Some(Target::Dir(path)),
            Some(Place::S3 { bucket, prefix }) => {
                let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                Some(Target::s3(&aws, &bucket, &prefix).map_err(|e| source(&e))?)
            }
        };
        let limits = Limits {
            partitions: 1,
            memory_bytes: Some(request.memory_bytes),
        };
        let tables = Tables {
            archive,
            summaries,
            views,
        };
        let ctx = context(&tables, limits).await?;
        run(&ctx, &request.sql, Some(request.max_rows)).await
    })?;
    let mut out = std::io::stdout().lock();
    let header = serde_json::to_string(&Header {
        truncated: answer.truncated,
    })
    .map_err(|e| source(&e))?;
    writeln!(out, "{header}").map_err(|e| source(&e))?;
    let mut writer = StreamWriter::try_new(&mut out, &answer.schema).map_err(|e| source(&e))?;
    for batch in &answer.batches {
        writer.write(batch).map_err(|e| source(&e))?;
    }
    writer.finish().map_err(|e| source(&e))?;
    Ok(())
}

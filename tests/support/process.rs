//! The `stampede` binary as a running service: start it on a free port, read the URL it prints,
//! stop it with a signal or kill it.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::poll::wait_until;

/// `stampede ARGS…`, the binary under test, as a command to add to (environment, stdin,
/// `output()` or `spawn()`): the one way the tests run it.
pub fn stampede<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_stampede"));
    command.args(args);
    command
}

/// Runs `command` with `stdin` written to its standard input (then closed) while its output and
/// errors are captured.
pub fn output_with_stdin(command: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stampede");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A thread of its own: the child may fill its output pipes before it has read all of it.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// A `stampede serve` or `demo` process; killed on drop if still running.
pub struct Running {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// SIGKILL: no flush, no hand-off, no last commit.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Starts `stampede ARGS` with the store in `dir` on a free port and reads the URL it prints.
pub fn start_service(args: &[&str], dir: &std::path::Path) -> Running {
    start_service_with(args, dir, &[])
}

/// As [`start_service`], with more environment variables (`STAMPEDE_*` config overrides).
pub fn start_service_with(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> Running {
    let mut child = stampede(args)
        .env("STAMPEDE_WEB_LISTEN", "127.0.0.1:0")
        .env("STAMPEDE_STORE_PATH", dir)
        .env(
            "STAMPEDE_LOG",
            std::env::var("STAMPEDE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run stampede");
    // Read on a thread of its own: a service that hangs before saying where it listens fails
    // the test in a minute, not never.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let Ok(first) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("stampede {args:?} printed no URL within 60 s");
    };
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .trim_end_matches('/')
        .to_owned();
    Running { child, url }
}

/// SIGINT (as Ctrl-C) and the exit status.
pub fn interrupt(running: Running) -> std::process::ExitStatus {
    signal(running, "-INT")
}

impl Running {
    /// Sends `sig` (as `kill` spells it: `-STOP`, `-CONT`) and goes on.
    pub fn send(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
}

/// Sends `sig` (as `kill` spells it) and waits for the exit status (for the default
/// [`TIMEOUT`](crate::support::poll::TIMEOUT), 30 s).
pub fn signal(mut running: Running, sig: &str) -> std::process::ExitStatus {
    running.send(sig);
    let mut status = None;
    wait_until(&format!("an exit after {sig}"), || {
        status = running.child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// `GET url` over a plain HTTP/1.0 connection: status and body.
pub fn http_get(url: &str) -> (u16, String) {
    http_request("GET", url, b"")
}

/// `POST url` with `body` (NDJSON) over a plain HTTP/1.0 connection: status and body.
pub fn http_post(url: &str, body: &[u8]) -> (u16, String) {
    http_request("POST", url, body)
}

/// `METHOD url` with `body` over a plain HTTP/1.0 connection: status and body.
pub fn http_request(method: &str, url: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// `GET url`, parsed as JSON.
pub fn http_get_json(url: &str) -> serde_json::Value {
    let (status, body) = http_get(url);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The counter or gauge `name` of the service at `url` (0 when absent).
pub fn metric(url: &str, name: &str) -> u64 {
    http_get(&format!("{url}/metrics"))
        .1
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// `stampede produce` of 4,000 records of 20 unicorns (out-of-order and late ones included)
/// from a fixed start, to `to` (`-` for stdout). One connection, so that HTTP batches arrive in
/// the order `aggregate` reads the same records from a file.
pub fn produce_ordered(seed: u64, to: &str) -> std::process::Output {
    stampede([
        "produce",
        "--unicorns",
        "20",
        "--msgs",
        "4000",
        "--rate",
        "max",
    ])
    .args([
        "--seed",
        &seed.to_string(),
        "--start-time",
        "2018-03-18 03:20:00",
    ])
    .args(["--quiet", "--faults", "out-of-order=0.05,late=0.01"])
    .args(["--connections", "1", "--to", to])
    .output()
    .unwrap()
}

/// What `stampede aggregate` computes from [`produce_ordered`]`(seed, "-")`, by (Name, StatusTime).
pub fn aggregate_ordered(
    seed: u64,
    dir: &std::path::Path,
) -> std::collections::BTreeMap<(String, String), serde_json::Value> {
    let file = dir.join("fleet.ndjson");
    std::fs::write(&file, produce_ordered(seed, "-").stdout).unwrap();
    aggregate_file(&file)
        .summaries
        .into_iter()
        .map(|v| (summary_key(&v), v))
        .collect()
}

/// What `stampede aggregate --verbose FILE` said.
pub struct Aggregated {
    /// Its summaries, in order.
    pub summaries: Vec<serde_json::Value>,
    /// Its rejections: (line number, reason).
    pub rejected: Vec<(usize, String)>,
}

/// Runs `stampede ARGS…`, which must succeed; its output.
pub fn stampede_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    succeeds(&mut stampede(args))
}

/// Runs `command` to its end; it must succeed (else its standard error is the failure).
pub fn succeeds(command: &mut Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `stampede aggregate --verbose FILE`, which must succeed.
pub fn aggregate_file(file: &std::path::Path) -> Aggregated {
    let out = stampede_ok(&[
        std::ffi::OsStr::new("aggregate"),
        "--verbose".as_ref(),
        file.as_os_str(),
    ]);
    let summaries = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // "FILE:LINE: rejected: REASON[ (FIELD)]"
    let label = format!("{}:", file.display());
    let rejected = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (n, why) = line.strip_prefix(&label)?.split_once(": rejected: ")?;
            let reason = why.split([' ', ':']).next()?.to_owned();
            Some((n.parse().unwrap(), reason))
        })
        .collect();
    Aggregated {
        summaries,
        rejected,
    }
}

/// `stampede produce` of (unicorns, msgs) at full speed from event time `start` to `to`, with
/// `faults` (none when empty) and the environment `env`; it must succeed.
pub fn produce_fleet(
    to: &str,
    (unicorns, msgs): (u32, u64),
    start: &str,
    seed: u64,
    faults: &str,
    env: &[(&str, String)],
) {
    let mut command = stampede(["produce", "--rate", "max", "--quiet", "--start-time", start]);
    command
        .args([
            "--unicorns",
            &unicorns.to_string(),
            "--msgs",
            &msgs.to_string(),
        ])
        .args(["--seed", &seed.to_string(), "--to", to])
        .envs(env.iter().map(|(k, v)| (k, v)));
    if !faults.is_empty() {
        command.args(["--faults", faults]);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `serve` with `env` and its store in `store`, sends it [`produce_ordered`]`(seed)`
/// over HTTP and stops it with SIGTERM (which flushes every window); both must succeed.
pub fn ingest_ordered_then_stop(seed: u64, store: &std::path::Path, env: &[(&str, String)]) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = start_service_with(&["serve"], store, &env);
    let sent = produce_ordered(seed, &format!("{}/ingest", serve.url));
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(signal(serve, "-TERM").success());
}

/// (Name, StatusTime) of a summary.
pub fn summary_key(v: &serde_json::Value) -> (String, String) {
    (
        v["Name"].as_str().unwrap().to_owned(),
        v["StatusTime"].as_str().unwrap().to_owned(),
    )
}

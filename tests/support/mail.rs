//! The mailbox of the real SMTP server the test script starts (aiosmtpd writing a Maildir):
//! the mails a recipient got, parsed enough to read their headers, text and links.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// `HOST:PORT` of the SMTP server (`STAMPEDE_TEST_SMTP`, set by `scripts/test`).
pub fn smtp_server() -> String {
    std::env::var("STAMPEDE_TEST_SMTP").expect(
        "STAMPEDE_TEST_SMTP is not set: run the tests through scripts/test, which starts the SMTP server (scripts/components/mail)",
    )
}

/// The Maildir the server writes (`STAMPEDE_TEST_MAILDIR`).
pub fn maildir() -> PathBuf {
    std::env::var("STAMPEDE_TEST_MAILDIR")
        .expect("STAMPEDE_TEST_MAILDIR is not set: run the tests through scripts/test")
        .into()
}

/// One received mail.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Header names lower case, values unfolded; repeated headers joined by "\n".
    pub headers: BTreeMap<String, String>,
    /// The text, transfer-decoded.
    pub body: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// The alert ids of `X-Stampede-Alerts`.
    pub fn alert_ids(&self) -> Vec<String> {
        let h = self.header("x-stampede-alerts");
        if h.is_empty() {
            return Vec::new();
        }
        h.split(", ").map(|s| s.trim().to_owned()).collect()
    }

    /// The first link in the text that contains `part`.
    pub fn link(&self, part: &str) -> String {
        self.body
            .split_whitespace()
            .find(|w| w.starts_with("http") && w.contains(part))
            .unwrap_or_else(|| panic!("no link with {part:?} in:\n{}", self.body))
            .to_owned()
    }
}

/// Every mail sent to `to` so far, oldest first (by the server's file order is not kept, so by
/// arrival: the Maildir's file modification time, then name).
pub fn mails_to(to: &str) -> Vec<Mail> {
    mails_in(&maildir(), to)
}

/// As [`mails_to`], in the Maildir `maildir`.
pub fn mails_in(maildir: &std::path::Path, to: &str) -> Vec<Mail> {
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(dir) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in dir.flatten() {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            files.push((modified, entry.path()));
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|(_, path)| std::fs::read(path).ok())
        .map(|raw| parse(&String::from_utf8_lossy(&raw)))
        .filter(|m| {
            m.header("to")
                .to_ascii_lowercase()
                .contains(&to.to_ascii_lowercase())
        })
        .collect()
}

/// Polls the mailbox of `to` until `done` holds for its mails (at most the default
/// [`TIMEOUT`](crate::support::poll::TIMEOUT)).
pub fn await_mails(to: &str, what: &str, done: impl Fn(&[Mail]) -> bool) -> Vec<Mail> {
    await_mails_within(crate::support::poll::TIMEOUT.as_secs(), to, what, done)
}

/// As [`await_mails`], for at most `secs` seconds.
pub fn await_mails_within(
    secs: u64,
    to: &str,
    what: &str,
    done: impl Fn(&[Mail]) -> bool,
) -> Vec<Mail> {
    let mut mails = Vec::new();
    crate::support::poll::wait_until_within(secs, what, || {
        mails = mails_to(to);
        done(&mails)
    });
    mails
}

fn parse(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(name) = &last {
                let v = headers.get_mut(name).unwrap();
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_owned();
            headers
                .entry(name.clone())
                .and_modify(|v| {
                    v.push('\n');
                    v.push_str(&value);
                })
                .or_insert(value);
            last = Some(name);
        }
    }
    let encoding = headers
        .get("content-transfer-encoding")
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "quoted-printable" => quoted_printable(body),
        "" | "7bit" | "8bit" => body.to_owned(),
        other => panic!("a mail in an encoding the test does not read: {other}"),
    };
    Mail { headers, body }
}

fn quoted_printable(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.replace("=\n", "").into_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() + 1 {
            if let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An SMTP server of a test's own (aiosmtpd from the test venv, as `scripts/components/mail`
/// starts the shared one) that takes messages of at most `max_bytes`, writing a Maildir in
/// `dir`; stopped when dropped.
pub struct PrivateSmtp {
    /// `HOST:PORT`.
    pub addr: String,
    /// Its Maildir.
    pub maildir: PathBuf,
    child: std::process::Child,
}

impl PrivateSmtp {
    /// Starts it and waits until it answers.
    pub fn start(dir: &std::path::Path, max_bytes: u64) -> PrivateSmtp {
        let venv = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/components/venv"),
        )
        .output()
        .expect("scripts/components/venv runs");
        assert!(venv.status.success(), "the test venv: {venv:?}");
        let bin = PathBuf::from(String::from_utf8_lossy(&venv.stdout).trim());
        let maildir = dir.join("maildir");
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(bin.join("python"))
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-s",
                &max_bytes.to_string(),
                "-l",
                &addr,
            ])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        crate::support::poll::wait_until("the private SMTP server answering", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        PrivateSmtp {
            addr,
            maildir,
            child,
        }
    }
}

impl Drop for PrivateSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

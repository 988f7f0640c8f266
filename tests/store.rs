//! A damaged embedded store (issue: faults beyond SIGKILL): the service refuses it with a
//! message naming the file and what to do (exit 1, never a panic, never a fresh start over
//! it), and `stampede store check [--repair]` tells a whole file, one a crash left (recovered
//! on open), and one beyond repair apart.

use std::path::Path;

use crate::support::process::{ingest_ordered_then_stop, produce_ordered, stampede, start_service};
use crate::support::service::temp_dir;

/// A store holding the summaries of a short fleet, stopped cleanly.
fn stored(name: &str) -> crate::support::service::TempDir {
    let dir = temp_dir(name);
    ingest_ordered_then_stop(3, &dir, &[]);
    dir
}

fn serve_refuses(dir: &Path) -> String {
    let out = stampede(["serve"])
        .env("STAMPEDE_WEB_LISTEN", "127.0.0.1:0")
        .env("STAMPEDE_STORE_PATH", dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&dir.join("stampede.redb").display().to_string())
            && stderr.contains("is damaged")
            && stderr.contains("stampede store check --repair"),
        "{stderr}"
    );
    stderr
}

fn check(dir: &Path, repair: bool) -> (Option<i32>, String) {
    let mut command = stampede(["store", "check"]);
    if repair {
        command.arg("--repair");
    }
    let out = command.env("STAMPEDE_STORE_PATH", dir).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_whole_store_checks_whole_with_what_it_holds() {
    let dir = stored("store-whole");
    let (code, said) = check(&dir, false);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("whole (") && said.contains(" summaries"),
        "{said}"
    );
    let (code, said) = check(&dir, true);
    assert_eq!(code, Some(0), "{said}");
    assert!(!said.contains("kept as it was"), "nothing to keep: {said}");
}

#[test]
fn a_truncated_overwritten_or_emptied_store_is_refused_and_said_beyond_repair() {
    let dir = stored("store-damaged");
    let file = dir.join("stampede.redb");
    let whole = std::fs::read(&file).unwrap();
    let damages: [(&str, Vec<u8>); 3] = [
        ("truncated", whole[..4096].to_vec()),
        (
            "overwritten",
            (0..whole.len()).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("emptied", Vec::new()),
    ];
    for (what, bytes) in damages {
        std::fs::write(&file, &bytes).unwrap();
        serve_refuses(&dir);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            bytes,
            "{what}: the service changed nothing"
        );
        let (code, said) = check(&dir, false);
        assert_eq!(code, Some(1), "{what}: {said}");
        assert!(said.contains("damaged beyond repair"), "{what}: {said}");
        assert!(!said.contains("panicked"), "{what}: {said}");
        // --repair keeps the file as it was before it tries.
        let (code, said) = check(&dir, true);
        assert_eq!(code, Some(1), "{what}: {said}");
        let kept: Vec<_> = std::fs::read_dir(&*dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("stampede.redb.damaged-")
            })
            .collect();
        assert!(
            kept.iter()
                .any(|e| std::fs::read(e.path()).unwrap() == bytes),
            "{what}: a copy of the damaged file is kept: {said}"
        );
        for e in kept {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// SIGKILL while summaries are written leaves a file redb recovers on open: `check` says so
/// (exit 0), and the service starts on it with what it had stored.
#[test]
fn a_store_left_by_sigkill_is_recovered_not_refused() {
    let dir = temp_dir("store-sigkill");
    let serve = start_service(&["serve"], &dir);
    let sent = produce_ordered(4, &format!("{}/ingest", serve.url));
    assert!(sent.status.success());
    serve.kill();
    let (code, said) = check(&dir, false);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("whole"), "{said}");
    let again = start_service(&["serve"], &dir);
    let status = crate::support::process::signal(again, "-TERM");
    assert!(status.success());
}

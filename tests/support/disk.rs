//! A small filesystem of its own for a test: a tmpfs mounted on a directory, that can be grown
//! while the service runs, as an operator frees or adds space. Mounting needs root (CAP_SYS_ADMIN),
//! as CI and the development machine have; without it the test fails, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; unmounted when dropped.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount` spells it: `2m`) on `path`, created if missing.
    pub fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            path,
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    /// Grows (or shrinks) it to `size`, keeping what it holds.
    pub fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.path);
    }
}

fn mount(args: &[&str], path: &Path) {
    let out = Command::new("mount").args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?} {}: {} (this test needs root to mount a small tmpfs)",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

//! The views a service keeps: those of `views.dir`, read at start, and those made at run time
//! (`POST /api/views`). Shared by the partitions (each keeps every view over its records), the
//! views output (which merges their partials into rows), the API and the hub.
//!
//! A change bumps a version number; a partition compares it with its own once per batch (one
//! atomic load) and takes up the new list only when it moved.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::path::{Path, PathBuf};

use super::compile::ViewPlan;
use super::plan::{parse, ViewDef};
use crate::time::Millis;

/// At most this many views (each costs every partition a pass over its records).
pub const MAX_VIEWS: usize = 64;

/// One view as the service keeps it.
pub struct LiveView {
    /// Its plan.
    pub plan: Arc<ViewPlan>,
    /// Defined by a file of `views.dir` (not deleted through the API).
    pub from_file: bool,
    /// When it was defined (epoch ms).
    pub created: Millis,
    /// Rows written (first emissions and restatements).
    pub rows: AtomicU64,
    /// Records dropped because their window was final.
    pub dropped_late: AtomicU64,
    /// Computing its past from the archive (CONTRACT §9 backfill).
    pub backfilling: AtomicBool,
    /// Why it stopped, if it failed on the records (an expression that errs at run time).
    pub failed: RwLock<Option<String>>,
    /// A view backfilled from the archive: the partitions count only records from this event
    /// time on, the backfill those before (`i64::MIN`: the partitions count everything).
    pub cut: AtomicI64,
}

impl LiveView {
    /// A view to keep.
    pub fn new(plan: ViewPlan, from_file: bool, created: Millis) -> LiveView {
        LiveView {
            plan: Arc::new(plan),
            from_file,
            created,
            rows: AtomicU64::new(0),
            dropped_late: AtomicU64::new(0),
            backfilling: AtomicBool::new(false),
            failed: RwLock::new(None),
            cut: AtomicI64::new(Millis::MIN),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.plan.view().name
    }

    /// `running`, `backfilling` or `failed`.
    pub fn state(&self) -> &'static str {
        if self.failure().is_some() {
            "failed"
        } else if self.backfilling.load(Ordering::Relaxed) {
            "backfilling"
        } else {
            "running"
        }
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.read().ok().and_then(|f| f.clone())
    }

    /// Marks it failed (the first reason stays).
    pub fn fail(&self, why: String) {
        if let Ok(mut failed) = self.failed.write() {
            if failed.is_none() {
                tracing::error!(view = self.name(), error = %why, "view failed: it is no longer computed (DELETE and define it again once fixed)");
                *failed = Some(why);
            }
        }
    }
}

/// Why a view cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// One by that name exists.
    #[error("a view named {0:?} exists: DELETE /api/views/{0} first")]
    Exists(String),
    /// [`MAX_VIEWS`] are kept.
    #[error("{MAX_VIEWS} views are kept already: delete one first")]
    Full,
}

/// The views a service keeps; see the module docs.
pub struct Registry {
    views: RwLock<Arc<[Arc<LiveView>]>>,
    version: AtomicU64,
    /// The newest event time of a record any partition accepted (`i64::MIN` before any).
    newest: AtomicI64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            views: RwLock::new(Arc::from(Vec::new())),
            version: AtomicU64::new(0),
            newest: AtomicI64::new(Millis::MIN),
        }
    }
}

impl Registry {
    /// A partition accepted records up to event time `t`.
    pub fn saw(&self, t: Millis) {
        self.newest.fetch_max(t, Ordering::Relaxed);
    }

    /// The newest event time of a record any partition accepted.
    pub fn newest(&self) -> Millis {
        self.newest.load(Ordering::Relaxed)
    }

    /// The views, in order of definition.
    pub fn list(&self) -> Arc<[Arc<LiveView>]> {
        self.views
            .read()
            .map(|v| Arc::clone(&v))
            .unwrap_or_else(|_| Arc::from(Vec::new()))
    }

    /// Bumped by every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The view named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LiveView>> {
        self.list().iter().find(|v| v.name() == name).cloned()
    }

    /// Adds `view`.
    ///
    /// # Errors
    /// Its name is taken, or [`MAX_VIEWS`] are kept.
    pub fn add(&self, view: Arc<LiveView>) -> Result<(), AddError> {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        if views.iter().any(|v| v.name() == view.name()) {
            return Err(AddError::Exists(view.name().to_owned()));
        }
        if views.len() >= MAX_VIEWS {
            return Err(AddError::Full);
        }
        let mut next = views.to_vec();
        next.push(view);
        *views = next.into();
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes the view named `name`; returns it.
    pub fn remove(&self, name: &str) -> Option<Arc<LiveView>> {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        let gone = views.iter().find(|v| v.name() == name).cloned()?;
        let next: Vec<_> = views.iter().filter(|v| v.name() != name).cloned().collect();
        *views = next.into();
        self.version.fetch_add(1, Ordering::AcqRel);
        Some(gone)
    }
}

/// Every `.sql` file of `dir` read and checked, in order of file name.
///
/// # Errors
/// The directory cannot be read, a file is not text, a view is refused (naming the file, the
/// line, the column and the construct), or two files define the same name.
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, ViewDef)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql") && p.is_file())
        .collect();
    files.sort();
    let mut out: Vec<(PathBuf, ViewDef)> = Vec::new();
    for file in files {
        let sql = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let def = parse(&sql).map_err(|r| {
            format!(
                "{}:{}:{}: {}: {}",
                file.display(),
                r.line,
                r.column,
                r.construct,
                r.message
            )
        })?;
        if let Some((other, _)) = out.iter().find(|(_, d)| d.name == def.name) {
            return Err(format!(
                "{}: view {:?} is defined by {} too",
                file.display(),
                def.name,
                other.display()
            ));
        }
        out.push((file, def));
    }
    if out.len() > MAX_VIEWS {
        return Err(format!(
            "{}: {} views, at most {MAX_VIEWS}",
            dir.display(),
            out.len()
        ));
    }
    Ok(out)
}

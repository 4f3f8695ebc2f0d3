//! `running`: a marker that a run is in progress on a lake, so the next run
//! knows whether the previous one finished cleanly.
//!
//! [`claim`] reads `<lake>/_run/running.json` if it is there — the previous
//! run was killed, crashed or stopped on a fault — and writes a fresh one
//! (process id, start time); [`release`] removes it when a run returns
//! normally. The `restart` monitor turns a found marker into an alert.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runtime::RunError;

#[derive(Serialize, Deserialize)]
struct Marker {
    pid: u32,
    started_ms: i64,
}

fn path(lake: &Path) -> PathBuf {
    lake.join("_run").join("running.json")
}

/// Marks the lake as in use; returns why the previous run did not finish cleanly, if it did not.
pub fn claim(lake: &Path) -> Result<Option<String>, RunError> {
    let p = path(lake);
    let previous = crate::core::storage::read(&p).ok().map(|bytes| {
        match serde_json::from_slice::<Marker>(&bytes) {
            Ok(m) => format!(
                "the previous run (process {}, started at {} ms since the Unix epoch) did not finish cleanly; resumed from the last checkpoint",
                m.pid, m.started_ms
            ),
            Err(_) => "the previous run did not finish cleanly; resumed from the last checkpoint".to_string(),
        }
    });
    let marker = Marker {
        pid: std::process::id(),
        started_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    };
    let write = || -> std::io::Result<()> {
        crate::core::storage::write_atomic(&p, &serde_json::to_vec(&marker).expect("serializes"))
    };
    write().map_err(|e| RunError::External(format!("cannot write {}: {e}", p.display())))?;
    Ok(previous)
}

/// The run finished normally: removes the marker.
pub fn release(lake: &Path) {
    let _ = crate::core::storage::remove_file(&path(lake));
}

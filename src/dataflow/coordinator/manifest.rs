//! The landing manifest: which files have been processed, so each landed file
//! is picked up exactly once, also across restarts.
//!
//! `<lake>/_manifest/landing.jsonl` holds one [`FileFact`] per line. A file is
//! appended (and the manifest fsynced) only once every sink has committed the
//! epoch in which the file ended. A torn last line — a crash mid-append — is
//! ignored with a warning: its file was not recorded, so it will be read again.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::connectors::landing::{FileFact, Processed};

/// The manifest file of a lake.
pub fn path(lake: &Path) -> PathBuf {
    lake.join("_manifest").join("landing.jsonl")
}

/// Reads every recorded file of the lake's manifest.
pub fn load(lake: &Path) -> std::io::Result<Vec<FileFact>> {
    let p = path(lake);
    let text = match crate::core::storage::read(&p) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut facts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<FileFact>(line) {
            Ok(f) => facts.push(f),
            Err(e) => {
                warn!(manifest = %p.display(), line = i + 1, %e, "Ignoring an unreadable manifest line (a torn write?).")
            }
        }
    }
    Ok(facts)
}

/// The processed-file index the landing source checks against.
pub fn processed(facts: &[FileFact]) -> Processed {
    let mut p = Processed::new();
    for f in facts {
        p.entry(f.name.clone())
            .or_default()
            .push((f.size_bytes, f.content_hash));
    }
    p
}

/// Appends `facts` durably.
pub fn append(lake: &Path, facts: &[FileFact]) -> std::io::Result<()> {
    if facts.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for f in facts {
        text.push_str(&serde_json::to_string(f).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    crate::core::storage::append_durable(&path(lake), &text)
}

/// Replaces the manifest with `facts` (atomically).
pub fn rewrite(lake: &Path, facts: &[FileFact]) -> std::io::Result<()> {
    let mut text = String::new();
    for f in facts {
        text.push_str(&serde_json::to_string(f).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    crate::core::storage::write_atomic(&path(lake), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(name: &str, size: u64) -> FileFact {
        FileFact {
            name: name.into(),
            size_bytes: size,
            rows: 1,
            content_hash: size * 7,
            arrived_ms: 0,
            last_epoch: 0,
            worker: 0,
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = std::env::temp_dir().join(format!("millrace-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        append(&dir, &[fact("a.csv", 10), fact("b.csv", 20)]).unwrap();
        append(&dir, &[fact("a.csv", 11)]).unwrap();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path(&dir))
            .unwrap();
        f.write_all(b"{\"name\":\"c.cs").unwrap();
        append(&dir, &[fact("d.csv", 5)]).unwrap();
        let facts = load(&dir).unwrap();
        assert_eq!(
            facts.len(),
            4,
            "the torn line is skipped, the next append is intact"
        );
        let p = processed(&facts);
        assert_eq!(p["a.csv"], [(10, 70), (11, 77)]);
        assert!(!p.contains_key("c.csv"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Durable files: the one way anything the engine keeps is written.
//!
//! Every file the engine persists — lake parts, checkpoints and their state
//! files, the file manifest, the model registry, reports, generated inputs —
//! is written here, so all of them have the same durability:
//!
//! - [`write_atomic`] / [`write_atomic_with`]: the bytes go to a hidden
//!   temporary name in the target's folder, are fsynced, renamed over the
//!   target, and the folder is fsynced. A reader sees the old file or the new
//!   one, never a torn one, and after a crash the new one is there or it is
//!   not (a leftover `.NAME.tmp` is ignored by every reader).
//! - [`publish`]: renames hidden pending files to their visible names (the
//!   lake's second phase), idempotently — a name already published is
//!   skipped, so recovery can redo a publication that was cut short.
//! - [`append_durable`]: appends to a log (the manifest, `alerts.jsonl`)
//!   and fsyncs; a torn last line is mended by starting on a fresh line.
//!
//! In: paths and bytes. Out: `std::io::Result`s whose errors name the path.
//! No state. A crash hook between the fsync and the rename lets the recovery
//! tests crash exactly there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An I/O error that names the path it happened on.
fn at(path: &Path, what: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

/// Fsyncs a folder so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| at(dir, "sync the folder", e))
}

/// The hidden temporary name `path` is written under before it is renamed in.
pub fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().to_string());
    path.with_file_name(format!(".{name}.tmp"))
}

/// The folder of `path` (`.` for a bare name), created if missing.
fn folder(path: &Path) -> std::io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| at(&dir, "create", e))?;
    Ok(dir)
}

/// Writes `bytes` to `path` atomically and durably (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, || {}, |f| f.write_all(bytes)).map(|_| ())
}

/// Writes `path` atomically and durably with `write`, which fills the
/// temporary file; `crash` runs after its fsync, before the rename (a named
/// crash point). Returns what `write` returned and the file's length.
pub fn write_atomic_with<T>(
    path: &Path,
    crash: impl FnOnce(),
    write: impl FnOnce(&mut File) -> std::io::Result<T>,
) -> std::io::Result<(T, u64)> {
    let dir = folder(path)?;
    let tmp = temporary(path);
    let mut f = File::create(&tmp).map_err(|e| at(&tmp, "create", e))?;
    let out = write(&mut f).map_err(|e| at(&tmp, "write", e))?;
    f.flush().map_err(|e| at(&tmp, "write", e))?;
    f.sync_all().map_err(|e| at(&tmp, "sync", e))?;
    let len = f.metadata().map_err(|e| at(&tmp, "read", e))?.len();
    drop(f);
    crash();
    std::fs::rename(&tmp, path).map_err(|e| at(path, "rename into place", e))?;
    sync_dir(&dir)?;
    Ok((out, len))
}

/// Renames each `(pending, visible)` pair (paths relative to `root`) and
/// fsyncs the folders; a pair whose pending file is gone and whose visible
/// one exists was published before and is skipped.
pub fn publish(root: &Path, parts: &[(String, String)]) -> std::io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for (pending, visible) in parts {
        let (from, to) = (root.join(pending), root.join(visible));
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                dirs.insert(to.parent().unwrap_or(root).to_path_buf());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
            Err(e) => return Err(at(&from, "publish", e)),
        }
    }
    for d in dirs {
        sync_dir(&d)?;
    }
    Ok(())
}

/// Appends `text` (whole lines) to the log at `path` and fsyncs it; if an
/// earlier append was torn mid-line, the new lines start on a fresh one.
pub fn append_durable(path: &Path, text: &str) -> std::io::Result<()> {
    folder(path)?;
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| at(path, "open", e))?;
    let len = f.metadata().map_err(|e| at(path, "read", e))?.len();
    let mut text = std::borrow::Cow::Borrowed(text);
    if len > 0 {
        let mut last = [0u8];
        f.seek(SeekFrom::Start(len - 1))
            .and_then(|_| f.read_exact(&mut last))
            .map_err(|e| at(path, "read", e))?;
        if last[0] != b'\n' {
            text = format!("\n{text}").into();
        }
    }
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| at(path, "append to", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("millrace-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let d = scratch("atomic");
        let p = d.join("a/b/file.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!temporary(&p).exists());
        // A crash before the rename leaves the old file and a temporary nobody reads.
        let crashed = std::panic::catch_unwind(|| {
            write_atomic_with(&p, || panic!("crash"), |f| f.write_all(b"three")).unwrap();
        });
        assert!(crashed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn publishing_twice_is_publishing_once() {
        let d = scratch("publish");
        std::fs::create_dir_all(d.join("t")).unwrap();
        std::fs::write(d.join("t/.p.pending"), b"x").unwrap();
        let parts = vec![("t/.p.pending".to_string(), "t/p".to_string())];
        publish(&d, &parts).unwrap();
        publish(&d, &parts).unwrap();
        assert_eq!(std::fs::read(d.join("t/p")).unwrap(), b"x");
        // A part that is neither pending nor visible is an error naming it.
        let missing = vec![("t/.q.pending".to_string(), "t/q".to_string())];
        let e = publish(&d, &missing).unwrap_err();
        assert!(e.to_string().contains(".q.pending"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_append_after_a_torn_line_starts_a_fresh_one() {
        let d = scratch("append");
        let p = d.join("log.jsonl");
        append_durable(&p, "a\n").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"tor")
            .unwrap();
        append_durable(&p, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\ntor\nb\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! The storage layer: the one way anything the engine keeps is written and
//! read, on a local disk or in an object store.
//!
//! **Locations.** Every function takes a `Path` whose text is a local path or
//! an object-store URL (`az://`, `abfss://`, `s3://`; see [`location`]), so a
//! lake is one value that callers `join` as they always have, and each call
//! goes to the local file system or to the store. [`parse`] turns what a user
//! wrote into that form and refuses any other scheme by name; a URL that got
//! past it unparsed is refused by every write here (never a folder `gs:`).
//!
//! **Local** (the default, and the fast path: no client, no runtime):
//! - [`write_atomic`] / [`write_atomic_with`]: the bytes go to a hidden
//!   temporary name in the target's folder, are fsynced, renamed over the
//!   target, and the folder is fsynced. A reader sees the old file or the new
//!   one, never a torn one, and after a crash the new one is there or it is
//!   not (a leftover `.NAME.tmp` is ignored by every reader).
//! - [`write_create`]: the same, but the temporary file is hard-linked to the
//!   target, which fails if the target exists: a create-only write.
//! - [`publish`]: renames hidden pending files to their visible names (the
//!   lake's second phase), idempotently — a name already published is
//!   skipped, so recovery can redo a publication that was cut short.
//! - [`append_durable`]: appends to a log (the manifest, `alerts.jsonl`)
//!   and fsyncs; a torn last line is mended by starting on a fresh line.
//!
//! **Object stores** (the `remote` module): a put is atomic by itself (readers see the
//! whole object or none), so [`write_atomic`] is one put; [`write_create`] is
//! a conditional put (`PutMode::Create`, `If-None-Match: *`), which is what
//! makes an epoch's commit record (its checkpoint) the single point where a
//! second writer of the same lake is refused; [`publish`] copies a pending
//! object to its visible name and deletes the pending one (there is no
//! rename; a cut-short publication leaves both, and is redone the same way);
//! [`append_durable`] rewrites the log with the new lines (one writer per
//! lake holds it, see `runtime::lock`). Folders do not exist there:
//! [`create_dir_all`] does nothing and [`list`] lists a key prefix.
//!
//! In: paths and bytes. Out: `std::io::Result`s whose errors name the path
//! or URL. A crash hook before the visible step (the rename, the put) lets
//! the recovery tests crash exactly there.

pub mod location;
mod remote;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use location::{guard, Remote};
pub use location::{Location, LocationError};

/// Parses a location a user wrote (`--lake`, `[lake] path`) into the form the
/// engine carries (a local path, or the normalised URL as a path).
pub fn parse(text: &str) -> Result<PathBuf, LocationError> {
    Location::parse(text).map(|l| l.to_path())
}

/// The object-store location `path` stands for, if it is one.
fn remote_of(path: &Path) -> Option<Remote> {
    match Location::of(path) {
        Location::Remote(r) => Some(r),
        Location::Local(_) => None,
    }
}

/// Whether `path` is in an object store.
pub fn is_remote(path: &Path) -> bool {
    remote_of(path).is_some()
}

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
    guard(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| at(&dir, "create", e))?;
    Ok(dir)
}

/// Creates a local folder and its parents; nothing to do in an object store.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    if is_remote(path) {
        return Ok(());
    }
    guard(path)?;
    std::fs::create_dir_all(path).map_err(|e| at(path, "create", e))
}

/// Writes `bytes` to `path` atomically and durably (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(r) = remote_of(path) {
        return remote::put(&r, bytes.to_vec(), false);
    }
    write_atomic_with(path, || {}, |f| f.write_all(bytes)).map(|_| ())
}

/// Writes `path` atomically and durably with `write`, which fills the
/// temporary file (or, in an object store, the buffer that is put); `crash`
/// runs when the bytes are durable, before they become visible (a named
/// crash point). Returns what `write` returned and the length.
pub fn write_atomic_with<T>(
    path: &Path,
    crash: impl FnOnce(),
    write: impl FnOnce(&mut (dyn Write + Send)) -> std::io::Result<T>,
) -> std::io::Result<(T, u64)> {
    if let Some(r) = remote_of(path) {
        let mut buf = Vec::new();
        let out = write(&mut buf).map_err(|e| at(path, "write", e))?;
        let len = buf.len() as u64;
        crash();
        remote::put(&r, buf, false)?;
        return Ok((out, len));
    }
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

/// Writes `bytes` to `path` only if nothing is there yet: durably, and
/// failing with `ErrorKind::AlreadyExists` (the file or object left as it
/// was) when something is. `crash` runs before the bytes become visible.
pub fn write_create(path: &Path, bytes: &[u8], crash: impl FnOnce()) -> std::io::Result<()> {
    if let Some(r) = remote_of(path) {
        crash();
        return remote::put(&r, bytes.to_vec(), true);
    }
    let dir = folder(path)?;
    let tmp = temporary(path);
    let mut f = File::create(&tmp).map_err(|e| at(&tmp, "create", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| at(&tmp, "write", e))?;
    drop(f);
    crash();
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(&dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(std::io::Error::new(
            e.kind(),
            format!("cannot create {}: it exists already", path.display()),
        )),
        Err(e) => Err(at(path, "create", e)),
    }
}

/// The bytes of the file or object at `path` (`ErrorKind::NotFound` when there is none).
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    match remote_of(path) {
        Some(r) => remote::get(&r),
        None => std::fs::read(path),
    }
}

/// The size and modification time (ms since the Unix epoch) of the file or
/// object at `path`, or `None` when there is none.
pub fn stat(path: &Path) -> std::io::Result<Option<(u64, i64)>> {
    if let Some(r) = remote_of(path) {
        return remote::stat(&r);
    }
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.len(), modified_ms(&m)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at(path, "look up", e)),
    }
}

/// A file's modification time, ms since the Unix epoch (0 if the platform has none).
pub fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// The files directly in the folder (or key prefix) `dir`: names, sizes and
/// modification times (ms since the Unix epoch). `None` when a local folder
/// does not exist (a key prefix always exists; it may hold nothing).
pub fn files(dir: &Path) -> std::io::Result<Option<Vec<(String, u64, i64)>>> {
    if let Some(r) = remote_of(dir) {
        return remote::files(&r).map(Some);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(dir, "list", e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| at(dir, "list", e))?;
        let meta = match e.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(at(&e.path(), "read", err)),
        };
        out.push((
            e.file_name().to_string_lossy().to_string(),
            meta.len(),
            modified_ms(&meta),
        ));
    }
    out.sort();
    Ok(Some(out))
}

/// Whether a file or object is at `path`.
pub fn exists(path: &Path) -> std::io::Result<bool> {
    match remote_of(path) {
        Some(r) => remote::head(&r).map(|s| s.is_some()),
        None => Ok(path.is_file()),
    }
}

/// Removes the file or object at `path`; `false` when there was none.
pub fn remove_file(path: &Path) -> std::io::Result<bool> {
    if let Some(r) = remote_of(path) {
        return remote::delete(&r);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(at(path, "remove", e)),
    }
}

/// The files under the folder (or key prefix) `dir`: their paths relative to
/// it (`/`-separated) and sizes; all of them, or those directly in it. A
/// folder that does not exist has none.
pub fn list(dir: &Path, recursive: bool) -> std::io::Result<Vec<(String, u64)>> {
    if let Some(r) = remote_of(dir) {
        return remote::list(&r, recursive);
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(at(&d, "list", e)),
        };
        for e in entries {
            let e = e.map_err(|e| at(&d, "list", e))?;
            let name = e.file_name().to_string_lossy().to_string();
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = match e.metadata() {
                Ok(m) => m,
                // Renamed or removed since the folder was read (another
                // writer's temporary file, published meanwhile): not there.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(at(&e.path(), "read", err)),
            };
            if meta.is_dir() {
                if recursive {
                    stack.push((e.path(), sub));
                }
            } else {
                out.push((sub, meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Makes each `(pending, visible)` pair (relative to `root`) visible: a
/// rename and folder fsyncs locally, a copy and a delete in an object store.
/// A pair whose pending file is gone and whose visible one exists was
/// published before and is skipped.
pub fn publish(root: &Path, parts: &[(String, String)]) -> std::io::Result<()> {
    if is_remote(root) {
        for (pending, visible) in parts {
            let (from, to) = (root.join(pending), root.join(visible));
            let (Some(f), Some(t)) = (remote_of(&from), remote_of(&to)) else {
                unreachable!("a path under a remote root is remote")
            };
            match remote::copy(&f, &t) {
                Ok(()) => {
                    remote::delete(&f)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && exists(&to)? => {}
                Err(e) => return Err(at(&from, "publish", e)),
            }
        }
        return Ok(());
    }
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

/// Appends `text` (whole lines) to the log at `path` durably; if an earlier
/// append was torn mid-line, the new lines start on a fresh one.
pub fn append_durable(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(r) = remote_of(path) {
        let mut log = match remote::get(&r) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if log.last().is_some_and(|b| *b != b'\n') {
            log.push(b'\n');
        }
        log.extend_from_slice(text.as_bytes());
        return remote::put(&r, log, false);
    }
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

    #[test]
    fn a_create_only_write_refuses_an_existing_file_and_leaves_it_as_it_was() {
        let d = scratch("create");
        let p = d.join("c/0001.ckpt");
        write_create(&p, b"first", || {}).unwrap();
        let e = write_create(&p, b"second", || {}).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("0001.ckpt"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert!(!temporary(&p).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn listing_gives_relative_paths_and_sizes_and_nothing_for_a_missing_folder() {
        let d = scratch("list");
        write_atomic(&d.join("t/date=x/part-1.parquet"), b"abc").unwrap();
        write_atomic(&d.join("top"), b"z").unwrap();
        assert_eq!(
            list(&d, true).unwrap(),
            vec![
                ("t/date=x/part-1.parquet".to_string(), 3),
                ("top".to_string(), 1)
            ]
        );
        assert_eq!(list(&d, false).unwrap(), vec![("top".to_string(), 1)]);
        assert!(list(&d.join("missing"), true).unwrap().is_empty());
        assert!(remove_file(&d.join("top")).unwrap());
        assert!(!remove_file(&d.join("top")).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_url_of_another_scheme_is_never_written_as_a_local_folder() {
        let e = write_atomic(Path::new("gs://bucket/lake/x.json"), b"x").unwrap_err();
        assert!(e.to_string().contains("`gs://`"), "{e}");
        assert!(create_dir_all(Path::new("gs://bucket/lake")).is_err());
        assert!(!Path::new("gs:").exists());
    }
}

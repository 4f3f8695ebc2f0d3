//! `lock`: one writer per lake.
//!
//! A job that changes a lake holds `<lake>/_lock` for as long as it runs: an
//! exclusive advisory lock of the operating system (`flock` on Linux, taken
//! with [`File::try_lock`]) on that file, taken **before** anything in the
//! lake is read for recovery or written. The kernel releases it when the
//! process ends, however it ends (a clean exit, a fault, `kill -9`, a crash of
//! the machine), so a lock can never outlive its job.
//!
//! **Who holds it.** `millrace run` (for the whole run, recovery included) and
//! the commands that rewrite the model registry (`models promote`,
//! `models rollback`, for the moment of the rewrite). Read-only commands
//! (`report`, `models list`/`show`, `tap`) never take it and work while a job runs.
//!
//! **Cluster jobs.** Only process 0 holds the lock. It is the only process that
//! changes the lake outside the dataflow (recovery runs there, before timely
//! starts) and the only one that commits (checkpoints, publication, manifest,
//! registry, pruning). The other processes only write hidden parts and state
//! files, from inside the dataflow, which cannot start without their process 0:
//! a second job's process 1 waits for a process 0 that was refused. A process
//! of a killed job that lingers a moment before noticing it lost its peers can
//! at worst rewrite a part or state file of an uncommitted epoch under the same
//! name and with the same bytes as the replay (names and contents are a
//! function of epoch, worker and input), through a temporary name and a rename.
//!
//! **Who holds it, for people.** The holder writes one JSON line into the lock
//! file after taking the lock ([`Holder`]: pid, host, start time, command). A
//! refused job names it and exits with [`EXIT_LOCKED`] having changed nothing.
//! A job that ends normally empties the file before the OS lock goes away, so
//! details found in a lock that can be taken belong to a job that did not end
//! normally: it is a stale lock, taken over with a warning naming the old
//! holder, and recovery then rolls the lake back to its last checkpoint.
//!
//! **Object-store lakes** have no `flock`: the lock is then a local file
//! named after the lake's URL under `${XDG_CACHE_HOME:-~/.cache}/millrace/locks/`,
//! which keeps two jobs on one machine apart with the same messages. Jobs on
//! different machines are kept apart by the commit records instead: a
//! checkpoint is created with a create-only put, so of two jobs committing
//! the same epoch the second is refused and stops before publishing it.
//!
//! The lock file is never deleted (deleting it while a job holds it would let a
//! second job lock a new file of the same name). The lock works on local file
//! systems and on network file systems that support `flock` across clients.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// The exit code of a command refused because another job holds the lake
/// (`EX_TEMPFAIL` of `sysexits.h`: try again later).
pub const EXIT_LOCKED: u8 = 75;

/// How long a refused job waits for the holder's details to appear (the holder
/// writes them right after taking the lock; this covers a contender that looks
/// in between).
const DETAILS_WAIT: Duration = Duration::from_secs(5);

/// The lock file of a lake.
pub fn path(lake: &Path) -> PathBuf {
    folder(lake).join("_lock")
}

/// The local folder the lock file of `lake` is in: the lake itself, or for
/// an object-store lake a folder of the local cache named after its URL.
fn folder(lake: &Path) -> PathBuf {
    if !crate::core::storage::is_remote(lake) {
        return lake.to_path_buf();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let url = lake.display().to_string();
    cache.join("millrace").join("locks").join(format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(url.as_bytes())
    ))
}

/// Who holds (or held) a lake's lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When it took the lock, ms since the Unix epoch.
    pub started_ms: i64,
    /// What it runs (`run`, `models promote`, …).
    pub command: String,
}

impl Holder {
    /// This process, now.
    fn me(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            host: host_name(),
            started_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            command: command.to_string(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {}, started {} (`millrace {}`)",
            self.pid,
            self.host,
            utc(self.started_ms),
            self.command
        )
    }
}

/// Why a lake could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lake (the user's to resolve: wait or stop it).
    #[error(
        "the lake {lake} is in use by another millrace job ({holder}); nothing was changed. \
         Wait for that job to finish or stop it, then start again. (The lock, {lock}, is \
         released by the operating system when its process ends: it never needs deleting.)",
        lake = .lake.display(),
        holder = .holder.as_ref().map_or_else(|| "its details are not readable".to_string(), ToString::to_string),
        lock = path(.lake).display()
    )]
    Held {
        /// The lake.
        lake: PathBuf,
        /// Its holder, when its details could be read.
        holder: Option<Holder>,
    },
    /// The lock file cannot be created, read, written or locked (external:
    /// permissions, a read-only or lock-less file system).
    #[error("cannot lock the lake {}: {source}", path(.lake).display())]
    Io {
        /// The lake.
        lake: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A held lake lock; dropping it releases the lake.
#[derive(Debug)]
pub struct LakeLock {
    file: File,
    holder: Holder,
    taken_over: Option<Holder>,
}

impl LakeLock {
    /// This process's details, as written in the lock file.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The job whose stale lock this one took over, if it was one.
    pub fn taken_over(&self) -> Option<&Holder> {
        self.taken_over.as_ref()
    }
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        // Emptied: the next holder must not mistake a clean end for a stale lock.
        // (The OS lock itself goes when the file is closed.)
        let _ = self.file.set_len(0);
        let _ = self.file.sync_data();
    }
}

/// Takes the lake's lock for `command` (creating the lake folder if needed),
/// or says who holds it. A stale lock (its process is gone) is taken over.
pub fn acquire(lake: &Path, command: &str) -> Result<LakeLock, LockError> {
    let io = |source| LockError::Io {
        lake: lake.to_path_buf(),
        source,
    };
    crate::core::storage::create_dir_all(lake).map_err(io)?;
    std::fs::create_dir_all(folder(lake)).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path(lake))
        .map_err(io)?;
    let waiting = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return take(file, lake, command).map_err(io),
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file).map_err(io)?;
                if holder.is_some() || waiting.elapsed() > DETAILS_WAIT {
                    return Err(LockError::Held {
                        lake: lake.to_path_buf(),
                        holder,
                    });
                }
                // Locked but not yet described: the holder is starting (or ending).
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

/// With the OS lock held: notes a stale holder, then writes this process's details.
fn take(mut file: File, lake: &Path, command: &str) -> std::io::Result<LakeLock> {
    let taken_over = read_holder(&mut file)?;
    if let Some(old) = &taken_over {
        warn!(
            lake = %lake.display(),
            pid = old.pid,
            host = %old.host,
            started = %utc(old.started_ms),
            command = %old.command,
            "Took over the lock of a job that did not end normally (its process is gone); recovering from the last checkpoint."
        );
    }
    let holder = Holder::me(command);
    let mut line = serde_json::to_vec(&holder).map_err(std::io::Error::other)?;
    line.push(b'\n');
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&line)?;
    file.sync_data()?;
    Ok(LakeLock {
        file,
        holder,
        taken_over,
    })
}

/// The holder described in the lock file, if it holds a whole description.
fn read_holder(file: &mut File) -> std::io::Result<Option<Holder>> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    // Not UTF-8 (a damaged file): no usable description.
    if file.read_to_string(&mut text).is_err() {
        return Ok(None);
    }
    Ok(serde_json::from_str(text.trim()).ok())
}

/// The host name (Linux), or `unknown`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = millrace_operators::parse::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("millrace-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_details() {
        let l = lake("held");
        let first = acquire(&l, "run").unwrap();
        assert_eq!(first.holder().pid, std::process::id());
        assert!(first.taken_over().is_none());
        // flock is per open file: a second open in the same process contends like another process.
        let err = acquire(&l, "models promote").unwrap_err();
        match &err {
            LockError::Held { holder, .. } => assert_eq!(holder.as_ref(), Some(first.holder())),
            other => panic!("expected Held, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {} on host ", std::process::id()))
                && text.contains("(`millrace run`)")
                && text.contains("nothing was changed"),
            "{text}"
        );
        // Released cleanly: the file is emptied and the next one is not a takeover.
        drop(first);
        assert_eq!(std::fs::read(path(&l)).unwrap().len(), 0);
        let second = acquire(&l, "run").unwrap();
        assert!(second.taken_over().is_none());
        drop(second);
        std::fs::remove_dir_all(&l).unwrap();
    }

    #[test]
    fn a_stale_lock_is_taken_over_and_its_holder_reported() {
        let l = lake("stale");
        std::fs::create_dir_all(&l).unwrap();
        let old = Holder {
            pid: 4_000_000,
            host: "gone".into(),
            started_ms: 1_767_225_600_000,
            command: "run".into(),
        };
        // What a killed job leaves: its details, and no OS lock.
        std::fs::write(path(&l), serde_json::to_vec(&old).unwrap()).unwrap();
        let taken = acquire(&l, "run").unwrap();
        assert_eq!(taken.taken_over(), Some(&old));
        let now: Holder = serde_json::from_slice(&std::fs::read(path(&l)).unwrap()).unwrap();
        assert_eq!(&now, taken.holder());
        assert_eq!(
            old.to_string(),
            "pid 4000000 on host gone, started 2026-01-01 00:00:00 UTC (`millrace run`)"
        );
        drop(taken);
        std::fs::remove_dir_all(&l).unwrap();
    }

    #[test]
    fn a_locked_file_without_details_is_reported_as_held() {
        let l = lake("bare");
        std::fs::create_dir_all(&l).unwrap();
        let f = File::create(path(&l)).unwrap();
        f.try_lock().unwrap();
        let started = Instant::now();
        match acquire(&l, "run") {
            Err(LockError::Held { holder: None, .. }) => {}
            other => panic!("expected Held without details, got {other:?}"),
        }
        assert!(started.elapsed() >= DETAILS_WAIT);
        drop(f);
        std::fs::remove_dir_all(&l).unwrap();
    }
}

//! `progress`: how far a `--once` run over a landing folder has got.
//!
//! The coordinator updates [`Progress`] as epochs commit (files finished,
//! records, bytes consumed — finished files plus every worker's offset in the
//! file it is reading); a reporter thread shows it on stderr: a bar redrawn
//! in place on a terminal, a log line every 5 s otherwise (CI logs, files):
//!
//! ```text
//! [##########----------]  52%  1/2 files  521,331 records  298,410 rec/s  ETA 2s
//! ```

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connectors::landing::FileFormat;
use crate::connectors::landing::{format_of, is_candidate_name, Processed};

/// Shared counters.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files read to their end.
    pub files_done: AtomicU64,
    /// Lines committed.
    pub records: AtomicU64,
    /// Bytes consumed.
    pub bytes_done: AtomicU64,
    /// Files to read.
    pub files_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
}

impl Progress {
    /// What a `--once` run will read from `folder`: the candidate files the manifest does not list.
    pub fn for_folder(folder: &Path, format: FileFormat, processed: &Processed) -> Progress {
        let (mut files, mut bytes) = (0, 0);
        if let Ok(rd) = std::fs::read_dir(folder) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let Ok(meta) = e.metadata() else { continue };
                if !meta.is_file()
                    || !is_candidate_name(&name)
                    || format_of(&name, format).is_none()
                {
                    continue;
                }
                if processed
                    .get(&name)
                    .is_some_and(|v| v.iter().any(|(size, _)| *size == meta.len()))
                {
                    continue;
                }
                files += 1;
                bytes += meta.len();
            }
        }
        Progress {
            files_total: files,
            bytes_total: bytes,
            ..Progress::default()
        }
    }

    fn line(&self, started: Instant) -> String {
        let (files, records, bytes) = (
            self.files_done.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
            self.bytes_done
                .load(Ordering::Relaxed)
                .min(self.bytes_total),
        );
        let frac = if self.bytes_total > 0 {
            bytes as f64 / self.bytes_total as f64
        } else {
            0.0
        };
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            records as f64 / secs
        } else {
            0.0
        };
        let eta = if frac > 0.01 {
            format!("ETA {:.0}s", secs * (1.0 - frac) / frac)
        } else {
            "ETA -".to_string()
        };
        let filled = (frac * 20.0).round() as usize;
        format!(
            "[{}{}] {:>3.0}%  {files}/{} files  {} records  {} rec/s  {eta}",
            "#".repeat(filled),
            "-".repeat(20 - filled.min(20)),
            frac * 100.0,
            self.files_total,
            thousands(records),
            thousands(rate as u64),
        )
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Shows `progress` until `done` is set; returns the thread.
pub fn report(progress: Arc<Progress>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut last_log = Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if tty {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{}\x1b[K", progress.line(started));
                let _ = err.flush();
            } else if last_log.elapsed() >= Duration::from_secs(5) {
                last_log = Instant::now();
                tracing::info!(progress = %progress.line(started), "Progress.");
            }
        }
        if tty {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "\r{}\x1b[K", progress.line(started));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_files_records_rate_and_eta() {
        let p = Progress {
            files_total: 2,
            bytes_total: 1000,
            ..Progress::default()
        };
        p.files_done.store(1, Ordering::Relaxed);
        p.records.store(1_234_567, Ordering::Relaxed);
        p.bytes_done.store(500, Ordering::Relaxed);
        let l = p.line(Instant::now() - Duration::from_secs(2));
        assert!(
            l.starts_with("[##########----------]  50%  1/2 files  1,234,567 records"),
            "{l}"
        );
        assert!(l.contains("ETA 2s"), "{l}");
    }
}

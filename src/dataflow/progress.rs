//! `progress`: how far a `--once` run over a landing folder has got.
//!
//! The coordinator updates [`Progress`] as epochs commit (files finished,
//! records, bytes consumed — finished files plus every worker's offset in the
//! file it is reading); a reporter thread shows it on stderr: an
//! `indicatif` bar redrawn in place on a terminal, a log line every 5 s
//! otherwise (CI logs, files), both reading:
//!
//! ```text
//! [##########----------]  52%  1/2 files  521,331 records  298,410 rec/s  ETA 2s
//! ```

use std::io::IsTerminal;
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
        let listed = crate::core::storage::files(folder).ok().flatten();
        for (name, size, _) in listed.unwrap_or_default() {
            if !is_candidate_name(&name) || format_of(&name, format).is_none() {
                continue;
            }
            if processed
                .get(&name)
                .is_some_and(|v| v.iter().any(|(s, _)| *s == size))
            {
                continue;
            }
            files += 1;
            bytes += size;
        }
        Progress {
            files_total: files,
            bytes_total: bytes,
            ..Progress::default()
        }
    }

    /// Bytes consumed (at most the total).
    fn bytes(&self) -> u64 {
        self.bytes_done
            .load(Ordering::Relaxed)
            .min(self.bytes_total)
    }

    /// Files, records and their rate since `started`.
    fn counts(&self, started: Instant) -> String {
        let (files, records) = (
            self.files_done.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        );
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            records as f64 / secs
        } else {
            0.0
        };
        format!(
            "{files}/{} files  {} records  {} rec/s",
            self.files_total,
            thousands(records),
            thousands(rate as u64),
        )
    }

    /// The log line: the bar's text, for logs that are not a terminal.
    fn line(&self, started: Instant) -> String {
        let frac = if self.bytes_total > 0 {
            self.bytes() as f64 / self.bytes_total as f64
        } else {
            0.0
        };
        let secs = started.elapsed().as_secs_f64();
        let eta = if frac > 0.01 {
            format!("ETA {:.0}s", secs * (1.0 - frac) / frac)
        } else {
            "ETA -".to_string()
        };
        let filled = ((frac * 20.0).round() as usize).min(20);
        format!(
            "[{}{}] {:>3.0}%  {}  {eta}",
            "#".repeat(filled),
            "-".repeat(20 - filled),
            frac * 100.0,
            self.counts(started),
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
        if std::io::stderr().is_terminal() {
            bar(&progress, &done, started);
        } else {
            log(&progress, &done, started);
        }
    })
}

/// On a terminal: an `indicatif` bar over the bytes to read, redrawn in place.
fn bar(progress: &Progress, done: &AtomicBool, started: Instant) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(
        Some(progress.bytes_total.max(1)),
        ProgressDrawTarget::stderr_with_hz(5),
    );
    bar.set_style(
        ProgressStyle::with_template("[{bar:20}] {percent:>3}%  {msg}  ETA {eta}")
            .expect("the template is valid")
            .progress_chars("##-"),
    );
    loop {
        bar.set_position(progress.bytes());
        bar.set_message(progress.counts(started));
        if done.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish();
}

/// Elsewhere (CI logs, files): a log line every 5 s.
fn log(progress: &Progress, done: &AtomicBool, started: Instant) {
    let mut last_log = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            tracing::info!(progress = %progress.line(started), "Progress.");
        }
    }
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

//! What the benches share: each mode runs in a child process of the bench
//! binary (so its peak memory is its own) and reports one JSON line.
// Each bench uses the part it needs.
#![allow(dead_code)]

use std::process::Command;

/// Runs this bench binary once per mode with `MILLRACE_BENCH_MODE` and `env`,
/// and returns each child's last stdout line parsed as JSON.
pub fn run_modes<'a>(modes: &[&'a str], env: &[(&str, &str)]) -> Vec<(&'a str, serde_json::Value)> {
    modes
        .iter()
        .map(|&mode| {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.env("MILLRACE_BENCH_MODE", mode);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{mode} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .to_string();
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{mode}: {e}: {line}"));
            (mode, v)
        })
        .collect()
}

/// This process's peak resident memory in KiB.
pub fn peak_rss_kb() -> u64 {
    millrace::runtime::peak_rss_bytes() / 1024
}

/// Marks a landed file as written a minute ago, so the landing source takes it at once.
pub fn settle(path: &std::path::Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

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

/// CPU time (user + system, every thread) a process has used so far, in
/// seconds (Linux: `/proc/<pid>/stat`); `pid` is a number or `self`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may hold spaces, in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 if that fails).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The number after `name` on the bench's command line (`--rows 20000`), or `default`.
pub fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

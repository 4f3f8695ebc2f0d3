//! Hostile values: numbers that overflow the engine's arithmetic and event
//! times no stream can have. Each case runs the quickstart (monitors on) on a
//! small landed file and asserts that the run ends, what the ledger says and
//! why each bad row was rejected.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs the quickstart over `dir`'s landing folder; a run that has not ended
/// after `DEADLINE` (far above the second these runs take) is killed and the
/// test fails: a hang is the bug these cases are about.
fn run_bounded(dir: &Path) -> String {
    const DEADLINE: Duration = Duration::from_secs(300);
    let q = quickstart();
    let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(once_args(&q, "lake", &[]))
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the run did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A clean 100-row file of the reference stream with `edits` applied:
/// (data row index, column name, new text).
fn landed(dir: &Path, edits: &[(usize, &str, &str)]) {
    gen(dir, "tx.csv", 100, 3, &["--no-faults"]);
    let path = dir.join("landing/tx.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let cols: Vec<usize> = edits.iter().map(|(_, c, _)| col(c)).collect();
    for ((row, _, value), c) in edits.iter().zip(cols) {
        let mut fields: Vec<String> = lines[row + 1].split(',').map(str::to_string).collect();
        fields[c] = value.to_string();
        lines[row + 1] = fields.join(",");
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    settle(dir);
}

#[test]
fn numbers_that_overflow_are_rejected_and_the_model_stays_finite() {
    let dir = scratch("hostile-huge");
    landed(
        &dir,
        &[
            (10, "f0", "1e200"),
            (20, "amount", "1e308"),
            (30, "f1", "-1e101"),
            (40, "f2", "1e99"),
        ],
    );
    let out = run_bounded(&dir);
    assert!(
        out.contains("ledger: in 100 = clean 97 + rejected 3 + duplicate 0"),
        "{out}"
    );
    assert_eq!(
        counts(&dir.join("lake"), "rejected", "reason"),
        [("out_of_range".to_string(), 3)].into()
    );
    // The row at 1e99 is clean; every score is a number.
    let scored = scored(&dir.join("lake"));
    assert_eq!(scored.len(), 97);
    assert!(scored.iter().all(|r| r.4.is_finite()), "{scored:?}");
    let model = out.lines().find(|l| l.starts_with("model")).unwrap();
    assert!(!model.contains("NaN"), "{model}");
}

#[test]
fn implausible_event_times_are_rejected_as_bad_time() {
    let dir = scratch("hostile-time");
    let (max, min) = (i64::MAX.to_string(), i64::MIN.to_string());
    landed(
        &dir,
        &[
            (5, "event_time", "0"),
            (15, "event_time", "-1"),
            (25, "event_time", &max),
            (35, "event_time", &min),
            // Microseconds where milliseconds are declared: year 57970.
            (45, "event_time", "1767225600050000"),
            // Seconds where milliseconds are declared: January 1970.
            (55, "event_time", "1767225600"),
        ],
    );
    let out = run_bounded(&dir);
    assert!(
        out.contains("ledger: in 100 = clean 94 + rejected 6 + duplicate 0"),
        "{out}"
    );
    let lake = dir.join("lake");
    assert_eq!(
        counts(&lake, "rejected", "reason"),
        [("bad_time".to_string(), 6)].into()
    );
    // Only the stream's own days (it starts at midnight, 2026-01-01, a
    // little out of order): nothing a Parquet reader cannot take.
    for table in ["clean", "scored"] {
        for f in table_files(&lake, table) {
            let p = f.display().to_string();
            assert!(
                p.contains("date=2026-01-01") || p.contains("date=2025-12-31"),
                "{p}"
            );
        }
    }
}

#[test]
fn the_event_time_range_is_the_topology_s_to_set() {
    let dir = scratch("hostile-time-range");
    landed(&dir, &[(5, "event_time", "1767225600")]);
    // Who replays 1970 on purpose says so.
    let text = std::fs::read_to_string(quickstart()).unwrap().replace(
        r#"event_time = { field = "event_time", format = "epoch_ms" }"#,
        r#"event_time = { field = "event_time", format = "epoch_ms", max_age_ms = 3153600000000 }"#,
    );
    std::fs::write(dir.join("old.toml"), text).unwrap();
    let out = run_once(&dir, "old.toml", "lake", &[]);
    assert!(
        out.contains("ledger: in 100 = clean 100 + rejected 0 + duplicate 0"),
        "{out}"
    );
}

#[test]
fn a_stop_signal_stops_a_job_stuck_in_an_epoch_and_the_lake_stays_whole() {
    let dir = scratch("hostile-stop");
    gen(&dir, "tx.csv", 60_000, 5, &[]);
    settle(&dir);
    let q = quickstart();
    // The committer is held after the second committed epoch, as an epoch
    // that never ends would hold it.
    let gate = dir.join("hold");
    let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(once_args(&q, "lake", &[]))
        .current_dir(&dir)
        .env(
            "FAILPOINTS",
            format!("after_commit=2*off->return({})", gate.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reached = gate.with_extension("reached");
    let started = Instant::now();
    while !reached.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the job never reached its third commit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    // The grace period is 10 s; a minute means it did not stop at all.
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "the job ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("did not stop within 10 s"), "{stderr}");
    // The next run resumes from the last committed epoch and ends with
    // the lake of a run that was never stopped.
    let resumed = run_once(&dir, &q, "lake", &[]);
    assert!(resumed.contains("resumed"), "{resumed}");
    run_once(&dir, &q, "lake-ref", &[]);
    assert_same_lake(&dir.join("lake-ref"), &dir.join("lake"), "after a stop");
}

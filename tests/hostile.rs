//! The hostile-input corpus: inputs a hostile or unlucky user
//! lands, each run with the release binary over a small landing folder, each
//! asserting the ledger, the rejected reasons and that the run ends.
//!
//! Shared helpers first; every case is a `#[test]` of its own, named after
//! what it lands.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use common::*;

/// The quickstart topology's CSV header.
const HEADER: &str = "event_time,account,category,amount,f0,f1,f2,f3,f4,f5,label\n";

/// The edit of the quickstart topology for epochs of 100 records.
const EPOCH_100: (&str, &str) = ("records_per_epoch = 10000", "records_per_epoch = 100");

/// Data row `i` of a quickstart-shaped CSV: unique, valid, one second apart.
fn row(i: u64) -> String {
    format!(
        "{},acct-{:03},grocery,{}.5,0.1,0.2,-0.3,0.4,0.5,0.6,{}\n",
        1_767_225_600_000 + i * 1000,
        i % 37,
        i % 50,
        i % 2
    )
}

/// A header and rows `0..n`.
fn csv(n: u64) -> String {
    let mut s = HEADER.to_string();
    (0..n).for_each(|i| s.push_str(&row(i)));
    s
}

/// Writes `dir/landing/name` and marks it settled.
fn land(dir: &Path, name: &str, bytes: &[u8]) {
    let p = dir.join("landing").join(name);
    std::fs::write(&p, bytes).unwrap();
    set_old(&p);
}

/// Marks one file as written a minute ago.
fn set_old(p: &Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// The quickstart topology with `edits` (`from` → `to`) and `append`ed, written into `dir`.
fn topology(dir: &Path, edits: &[(&str, &str)], append: &str) -> String {
    let mut t = std::fs::read_to_string(repo().join("topologies/quickstart.toml")).unwrap();
    for (from, to) in edits {
        assert!(t.contains(from), "quickstart.toml has no `{from}`");
        t = t.replacen(from, to, 1);
    }
    t.push_str(append);
    let p = dir.join("topology.toml");
    std::fs::write(&p, t).unwrap();
    p.display().to_string()
}

/// Runs `--once` over `dir/landing` into `dir/lake`; returns stdout and stderr.
fn run(dir: &Path, topology: &str) -> (String, String) {
    let out = millrace_raw(dir, &once_args(topology, "lake", &[]));
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "the run failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The summary's ledger: `(in, clean, rejected, duplicate)`.
fn ledger(out: &str) -> (u64, u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("ledger:"))
        .unwrap_or_else(|| panic!("no ledger line in:\n{out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

/// Rejected rows by reason, from the lake.
fn reasons(dir: &Path) -> BTreeMap<String, u64> {
    counts(&dir.join("lake"), "rejected", "reason")
}

/// `(source, line)` of every scored row, sorted.
fn scored_lines(dir: &Path) -> Vec<(String, u64)> {
    scored(&dir.join("lake"))
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect()
}

/// Starts a `--once` run held at the wait point `point` until `gate` exists.
fn start_held(dir: &Path, topology: &str, point: &str, gate: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(once_args(topology, "lake", &[]))
        .current_dir(dir)
        .env("FAILPOINTS", format!("{point}=return({})", gate.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the held run announces `gate.reached` (or fails if it exits first).
fn wait_reached(child: &mut Child, gate: &Path) {
    let reached = gate.with_extension("reached");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !reached.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before its wait point");
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached its wait point"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The manifest's file names.
fn manifest_names(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("lake/_manifest/landing.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------------------
// Calendar dates.

#[test]
fn impossible_calendar_dates_and_offsets_are_bad_time() {
    let dir = scratch("hostile-dates");
    let t = topology(
        &dir,
        &[(r#"format = "epoch_ms""#, r#"format = "rfc3339""#)],
        "",
    );
    let mut text = HEADER.to_string();
    for (i, time) in [
        "2026-02-28T10:00:00Z",
        "2024-02-29T10:00:00Z",
        "2026-02-31T10:00:00Z",
        "2023-02-29T10:00:00Z",
        "2026-04-31T10:00:00Z",
        "2026-03-01T10:00:00+25:00",
        "2026-03-01T10:00:00+23:59",
        "2026-03-01 10:00:00",
    ]
    .iter()
    .enumerate()
    {
        let r = row(i as u64);
        text.push_str(&format!("{time}{}", &r[r.find(',').unwrap()..]));
    }
    land(&dir, "dates.csv", text.as_bytes());
    let (out, _) = run(&dir, &t);
    assert_eq!(ledger(&out), (8, 3, 5, 0), "{out}");
    assert_eq!(reasons(&dir), BTreeMap::from([("bad_time".to_string(), 5)]));
}

// ---------------------------------------------------------------------------
// Headers.

#[test]
fn a_header_lacking_or_repeating_a_declared_column_rejects_the_file() {
    let dir = scratch("hostile-header");
    let lacking: String = csv(100)
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(4); // f0
            f.join(",") + "\n"
        })
        .collect();
    land(&dir, "a-lacking.csv", lacking.as_bytes());
    let twice: String = csv(50)
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}\n", if i == 0 { "amount" } else { "3.5" }))
        .collect();
    land(&dir, "b-twice.csv", twice.as_bytes());
    land(
        &dir,
        "c-fine.csv",
        csv(20).replace("acct-", "other-").as_bytes(),
    );
    let (out, err) = run(&dir, &quickstart());
    assert_eq!(ledger(&out), (170, 20, 150, 0), "{out}");
    assert_eq!(
        reasons(&dir),
        BTreeMap::from([("bad_header".to_string(), 150)])
    );
    let details = counts(&dir.join("lake"), "rejected", "detail");
    assert!(
        details.keys().any(|d| d.contains("no column `f0`")),
        "{details:?}"
    );
    assert!(
        details
            .keys()
            .any(|d| d.contains("`amount` more than once")),
        "{details:?}"
    );
    assert_eq!(
        err.matches("bad_header").count(),
        2,
        "one warning per file:\n{err}"
    );
}

#[test]
fn an_optional_column_may_be_absent_from_the_header() {
    let dir = scratch("hostile-optional");
    let t = topology(
        &dir,
        &[(
            r#"name = "category""#,
            "name = \"category\"\noptional = true",
        )],
        "",
    );
    let text: String = csv(30).replace(",grocery,", ",").replace(",category,", ",");
    land(&dir, "a.csv", text.as_bytes());
    let (out, _) = run(&dir, &t);
    assert_eq!(ledger(&out), (30, 30, 0, 0), "{out}");
}

// ---------------------------------------------------------------------------
// Files that change while read, files landed again.

#[test]
fn a_file_truncated_while_read_stops_the_run_and_resumes_when_landed_again() {
    let dir = scratch("hostile-truncated");
    let t = topology(&dir, &[EPOCH_100], "");
    let full = csv(1000);
    land(&dir, "big.csv", full.as_bytes());
    let gate = dir.join("gate");
    let mut child = start_held(&dir, &t, "landing_between_chunks", &gate);
    wait_reached(&mut child, &gate);
    // Cut it in the middle of a line, as a writer that starts over would.
    let cut = HEADER.len() + (0..500).map(|i| row(i).len()).sum::<usize>() + 7;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("landing/big.csv"))
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(
        !out.status.success(),
        "a changed file must stop the run:\n{stdout}"
    );
    assert!(
        stderr.contains("`big.csv` changed while being read"),
        "{stderr}"
    );
    assert!(!manifest_names(&dir).contains(&"big.csv".to_string()));
    // The whole file lands again: the next run reads every record exactly once.
    land(&dir, "big.csv", full.as_bytes());
    run(&dir, &t);
    let lines = scored_lines(&dir);
    let expected: Vec<(String, u64)> = (2..1002).map(|l| ("big.csv".to_string(), l)).collect();
    assert_eq!(lines, expected);
    assert_eq!(manifest_names(&dir), ["big.csv"]);
    assert_eq!(metrics_sum(&dir.join("lake"), "input"), 1000);
}

#[test]
fn a_file_rewritten_while_read_is_retried_once_settled() {
    let dir = scratch("hostile-retry");
    let t = topology(
        &dir,
        &[
            (
                "settle_ms = 1000",
                "settle_ms = 1000\non_change = \"retry\"",
            ),
            EPOCH_100,
        ],
        "",
    );
    let full = csv(600);
    land(&dir, "big.csv", full.as_bytes());
    let gate = dir.join("gate");
    let mut child = start_held(&dir, &t, "landing_between_chunks", &gate);
    wait_reached(&mut child, &gate);
    // Truncated and written again whole while the source reads it.
    let p = dir.join("landing/big.csv");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(10)
        .unwrap();
    std::fs::write(&p, full.as_bytes()).unwrap();
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("changed while being read; reading on"),
        "{stderr}"
    );
    assert_eq!(ledger(&stdout), (600, 600, 0, 0), "{stdout}");
    let lines = scored_lines(&dir);
    assert_eq!(lines.len(), 600);
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "no line twice");
}

#[test]
fn a_file_landed_again_is_known_by_its_content() {
    let dir = scratch("hostile-relanded");
    land(&dir, "a.csv", csv(40).as_bytes());
    let (out, _) = run(&dir, &quickstart());
    assert_eq!(ledger(&out).0, 40);
    // Same name, same content (touched): skipped.
    land(&dir, "a.csv", csv(40).as_bytes());
    let (out, _) = run(&dir, &quickstart());
    assert_eq!(ledger(&out).0, 0, "{out}");
    // Another name, same content: read, with a warning naming the first.
    land(&dir, "b.csv", csv(40).as_bytes());
    let (out, err) = run(&dir, &quickstart());
    assert_eq!(ledger(&out).0, 40, "{out}");
    assert!(
        err.contains("same content as one read before") && err.contains("a.csv"),
        "{err}"
    );
    std::fs::remove_file(dir.join("landing/b.csv")).unwrap();
    // Same name, new content: a new file, read in full.
    land(&dir, "a.csv", csv(45).replace("acct-", "new-").as_bytes());
    let (out, _) = run(&dir, &quickstart());
    assert_eq!(ledger(&out).0, 45, "{out}");
}

#[test]
fn a_gzipped_file_resumes_from_a_checkpoint_in_its_decompressed_stream() {
    let dir = scratch("hostile-gzip-resume");
    let t = topology(
        &dir,
        &[
            EPOCH_100,
            ("max_epochs_in_flight = 4", "max_epochs_in_flight = 2"),
        ],
        "",
    );
    land(&dir, "big.csv.gz", &gzip(csv(1000).as_bytes()));
    let gate = dir.join("gate");
    let mut child = start_held(&dir, &t, "after_commit", &gate);
    wait_reached(&mut child, &gate);
    child.kill().unwrap();
    child.wait().unwrap();
    let ckpt = std::fs::read_to_string(newest_checkpoint(&dir.join("lake"))).unwrap();
    assert!(
        ckpt.contains("big.csv.gz"),
        "the checkpoint is inside the file: {ckpt}"
    );
    run(&dir, &t);
    let expected: Vec<(String, u64)> = (2..1002).map(|l| ("big.csv.gz".to_string(), l)).collect();
    assert_eq!(scored_lines(&dir), expected);
}

// ---------------------------------------------------------------------------
// RFC 4180 records that span lines.

#[test]
fn quoted_newlines_separators_and_quotes_make_one_record() {
    let dir = scratch("hostile-rfc4180");
    let mut text = HEADER.to_string();
    for i in 0..100u64 {
        let r = row(i);
        let key = format!("acct-{:03}", i % 37);
        text.push_str(&match i % 10 {
            3 => r.replacen(&key, &format!("\"acct\nwith\r\nnewlines-{i}\""), 1),
            5 => r.replacen(",grocery,", ",\"grocery\",", 1),
            7 => r.replacen(&key, &format!("\"acct, \"\"quoted\"\"\n-{i}\""), 1),
            _ => r,
        });
    }
    land(&dir, "q.csv", text.as_bytes());
    let (out, _) = run(&dir, &quickstart());
    assert_eq!(ledger(&out), (100, 100, 0, 0), "{out}");
    let keys: Vec<String> = scored(&dir.join("lake")).into_iter().map(|r| r.2).collect();
    assert!(
        keys.contains(&"acct\nwith\r\nnewlines-3".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"acct, \"quoted\"\n-7".to_string()),
        "{keys:?}"
    );
    // A record's line is where it starts: 10 records span 3 lines, 10 span 2.
    let lines: Vec<u64> = scored_lines(&dir).into_iter().map(|l| l.1).collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[4], 2 + 4 + 2, "the record after the first 3-line one");
    assert_eq!(*lines.last().unwrap(), 2 + 99 + 2 * 10 + 10);
}

#[test]
fn an_unterminated_quote_is_one_reject_and_the_run_ends() {
    let dir = scratch("hostile-unterminated");
    let mut text = csv(10);
    text.push_str("1767225700000,\"acct-open,grocery,1,0,0,0,0,0,0,1\n");
    (10..20).for_each(|i| text.push_str(&row(i)));
    land(&dir, "u.csv", text.as_bytes());
    let (out, _) = run(&dir, &quickstart());
    assert_eq!(ledger(&out), (11, 10, 1, 0), "{out}");
    assert_eq!(
        reasons(&dir),
        BTreeMap::from([("field_count".to_string(), 1)])
    );
}

// ---------------------------------------------------------------------------
// Files not read, gzip, bytes that are not UTF-8.

#[test]
fn files_not_read_are_logged_gzip_is_read_and_raw_bytes_are_kept() {
    let dir = scratch("hostile-files");
    land(&dir, "notes.txt", b"not data\n");
    land(&dir, "a.csv.gz", &gzip(csv(30).as_bytes()));
    land(&dir, "b.jsonl.gz", &gzip(b"{\"event_time\": 1767225700000, \"account\": \"j\", \"category\": \"fuel\", \"amount\": 1, \"f0\": 0, \"f1\": 0, \"f2\": 0, \"f3\": 0, \"f4\": 0, \"f5\": 0, \"label\": 0}\n"));
    let mut bad = HEADER.as_bytes().to_vec();
    bad.extend_from_slice(row(100).as_bytes());
    let raw = b"1767225900000,acct-\xff\xfe,grocery,1.5,0.1,0.2,0.3,0.4,0.5,0.6,0".to_vec();
    bad.extend_from_slice(&raw);
    bad.extend_from_slice(b"\r\n");
    land(&dir, "c.csv", &bad);
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"d-\xff.csv");
        let p: PathBuf = dir.join("landing").join(name);
        std::fs::write(&p, csv(5)).unwrap();
        set_old(&p);
    }
    let (out, err) = run(&dir, &quickstart());
    assert_eq!(ledger(&out), (33, 32, 1, 0), "{out}");
    assert_eq!(
        reasons(&dir),
        BTreeMap::from([("bad_encoding".to_string(), 1)])
    );
    assert!(
        err.contains("notes.txt") && err.contains("unsupported_extension"),
        "{err}"
    );
    #[cfg(unix)]
    assert!(err.contains("unreadable_name"), "{err}");
    let mut kept = Vec::new();
    for (_, b) in read_table(&dir.join("lake"), "rejected") {
        let col = b
            .column_by_name("raw_bytes")
            .unwrap()
            .as_binary::<i32>()
            .clone();
        kept.extend(
            (0..b.num_rows())
                .filter(|i| !col.is_null(*i))
                .map(|i| col.value(i).to_vec()),
        );
    }
    assert_eq!(kept, [raw]);
    let mut names = manifest_names(&dir);
    names.sort();
    assert_eq!(names, ["a.csv.gz", "b.jsonl.gz", "c.csv"]);
}

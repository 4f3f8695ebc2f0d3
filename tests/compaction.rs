//! Compaction: small parts merged into one file per partition (or per target
//! size), swapped in so that no reader sees a row twice or misses one, and a
//! compacted lake that runs resume on as on any other.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const TABLES: [&str; 4] = ["clean", "scored", "rejected", "metrics"];

/// The quickstart with `records_per_epoch` and `tail` appended (a `[lake.compaction]` section, say).
fn quickstart_with(dir: &Path, name: &str, per_epoch: usize, tail: &str) -> String {
    let text = std::fs::read_to_string(quickstart()).unwrap().replace(
        "records_per_epoch = 10000",
        &format!("records_per_epoch = {per_epoch}"),
    );
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n{tail}\n")).unwrap();
    path.display().to_string()
}

/// Every visible Parquet file under a table, as a reader that globs `**/*.parquet` sees them.
fn globbed(lake: &Path, table: &str) -> Vec<PathBuf> {
    millrace::core::storage::list(&lake.join(table), true)
        .unwrap()
        .into_iter()
        .filter(|(rel, _)| {
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            name.ends_with(".parquet")
                && !name.starts_with('.')
                && !dir.split('/').any(|c| c.starts_with('_'))
        })
        .map(|(rel, _)| lake.join(table).join(rel))
        .collect()
}

/// Files a reader reads, per partition folder.
fn per_partition(lake: &Path, table: &str) -> BTreeMap<PathBuf, usize> {
    let mut out = BTreeMap::new();
    for f in table_files(lake, table) {
        *out.entry(f.parent().unwrap().to_path_buf()).or_insert(0) += 1;
    }
    out
}

/// `millrace files LAKE TABLE --rows`: the total it prints.
fn files_total(dir: &Path, lake: &str, table: &str) -> Result<u64, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["files", lake, table, "--rows"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("total\t"))
        .and_then(|n| n.parse().ok())
        .ok_or(text)
}

/// Lines in several files over the hours of the generated stream, in small
/// epochs (many parts per partition), and the reference lake of a run that
/// never compacts.
fn input(name: &str, seed: u64, rows: u64, per_epoch: usize) -> (Scratch, String) {
    let dir = scratch(name);
    for (i, f) in ["tx-a.csv", "tx-b.csv", "tx-c.csv"].iter().enumerate() {
        gen(&dir, f, rows, seed + i as u64, &[]);
    }
    settle(&dir);
    let plain = quickstart_with(&dir, "plain.toml", per_epoch, "");
    run_once(&dir, &plain, "reference", &[]);
    (dir, plain)
}

#[test]
fn compacting_leaves_one_file_per_partition_with_every_row_once_and_runs_resume_on_it() {
    for (seed, rows, per_epoch) in [(11, 12_000, 2_000), (23, 20_000, 3_000)] {
        let (dir, plain) = input(&format!("compact-{seed}"), seed, rows, per_epoch);
        let reference = dir.join("reference");
        copy_dir(&reference, &dir.join("lake"));
        let lake = dir.join("lake");
        let before: Vec<usize> = TABLES.iter().map(|t| table_files(&lake, t).len()).collect();
        let out = millrace(&dir, &["compact", "lake"]);
        assert!(out.contains("partitions compacted"), "{out}");
        assert_same_lake(&reference, &lake, "compacted");
        for (t, before) in TABLES.iter().zip(before) {
            assert_eq!(rows_of(&lake, t), rows_of(&reference, t), "{t}");
            let files = per_partition(&lake, t);
            assert!(
                files.values().all(|n| *n == 1),
                "seed {seed}: {t}: more than one file in a partition: {files:?}"
            );
            assert!(
                files.len() < before,
                "{t}: {} partitions, {before} parts before",
                files.len()
            );
            assert_eq!(
                files_total(&dir, "lake", t).unwrap(),
                rows_of(&reference, t) as u64,
                "{t}: millrace files"
            );
        }
        // The replaced parts stay for the grace period; once it is over they
        // go, and a reader that globs sees what the lake's readers see.
        assert!(globbed(&lake, "scored").len() > table_files(&lake, "scored").len());
        let swept = millrace(&dir, &["compact", "lake", "--grace-ms", "0"]);
        assert!(swept.contains("0 partitions compacted"), "{swept}");
        for t in TABLES {
            assert_eq!(globbed(&lake, t), table_files(&lake, t), "{t}");
        }
        // A run on the compacted lake resumes from its checkpoint (whose parts
        // were compacted away) and ends where a run that never compacted does.
        gen(&dir, "tx-d.csv", rows, seed + 7, &[]);
        settle(&dir);
        let resumed = run_once(&dir, &plain, "lake", &[]);
        assert!(
            resumed.contains("resumed from the checkpoint of epoch"),
            "{resumed}"
        );
        run_once(&dir, &plain, "reference", &[]);
        assert_same_lake(&reference, &lake, "a run after compaction");
        let report = dir.join("report.html");
        millrace(&dir, &["report", "lake", "-o", report.to_str().unwrap()]);
        assert!(std::fs::read_to_string(&report).unwrap().contains("<svg"));
    }
}

fn rows_of(lake: &Path, table: &str) -> usize {
    rows(lake, table)
}

#[test]
fn a_once_run_with_compaction_configured_compacts_at_its_end_to_the_target_size() {
    let (dir, _) = input("compact-once", 5, 15_000, 1_500);
    // A target smaller than a partition's parts: several files per partition,
    // each of about the target, none of them rewritten to one file.
    let small = quickstart_with(
        &dir,
        "small.toml",
        1_500,
        "[lake.compaction]\ntarget_file_mb = 0.05\ngrace_ms = 0",
    );
    let out = run_once(&dir, &small, "lake", &[]);
    let (lake, reference) = (dir.join("lake"), dir.join("reference"));
    assert_same_lake(&reference, &lake, "compacted at the end of the run");
    let target = (0.05 * 1024.0 * 1024.0) as u64;
    let parts = per_partition(&reference, "clean");
    let compacted = per_partition(&lake, "clean");
    assert!(
        compacted.values().sum::<usize>() < parts.values().sum::<usize>(),
        "{out}\n{compacted:?}"
    );
    for f in table_files(&lake, "clean") {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let size = std::fs::metadata(&f).unwrap().len();
        // A compacted file holds runs of parts of at most the target; one part
        // over the target is left as it was.
        assert!(
            name.starts_with("part-") || size < 2 * target,
            "{name}: {size} bytes"
        );
    }
    // Grace 0: nothing replaced is left for readers that glob.
    for t in TABLES {
        assert_eq!(globbed(&lake, t), table_files(&lake, t), "{t}");
    }
}

/// Waits until the reader has finished `n` more reads.
fn reads_past(reads: &AtomicUsize, n: usize) {
    let goal = reads.load(Ordering::SeqCst) + n;
    let deadline = Instant::now() + Duration::from_secs(180);
    while reads.load(Ordering::SeqCst) < goal {
        assert!(Instant::now() < deadline, "the reader stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_reader_counting_rows_while_compaction_runs_never_sees_a_duplicate_or_a_gap() {
    let (dir, _) = input("compact-readers", 31, 10_000, 1_000);
    let lake = dir.join("lake");
    copy_dir(&dir.join("reference"), &lake);
    let expected = rows(&lake, "scored") as u64;
    // The reader: `millrace files --rows` processes, one after another.
    let (stop, reads, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let reader = {
        let (stop, reads, seen, dir) =
            (stop.clone(), reads.clone(), seen.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let total = files_total(&dir, "lake", "scored");
                seen.lock().unwrap().push(total);
                reads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The compactor is held after writing its first file (not yet committed)
    // and after committing it; the reader reads at both points and after.
    let (before, after) = (dir.join("gate-before"), dir.join("gate-after"));
    let mut compactor = spawn_held_compactor(&dir, &["lake", "--table", "scored"], &before, &after);
    reads_past(&reads, 3);
    held(&mut compactor, &before);
    reads_past(&reads, 3);
    std::fs::write(&before, "").unwrap();
    held(&mut compactor, &after);
    reads_past(&reads, 3);
    std::fs::write(&after, "").unwrap();
    let out = compactor.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reads_past(&reads, 3);
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 12);
    for total in seen.iter() {
        assert_eq!(total, &Ok(expected), "a reader saw a duplicate or a gap");
    }
    assert!(
        per_partition(&lake, "scored").values().all(|n| *n == 1),
        "{:?}",
        per_partition(&lake, "scored")
    );
    assert_eq!(rows(&lake, "scored") as u64, expected);
}

#[test]
fn a_compactor_killed_before_its_commit_changes_nothing_and_the_next_pass_finishes() {
    let (dir, _) = input("compact-crash", 43, 10_000, 1_000);
    let (lake, reference) = (dir.join("lake"), dir.join("reference"));
    copy_dir(&reference, &lake);
    let crashed = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["compact", "lake"])
        .env("FAILPOINTS", "compaction_before_record=return")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        !crashed.status.success()
            && String::from_utf8_lossy(&crashed.stderr)
                .contains("crash point `compaction_before_record` hit"),
        "{crashed:?}"
    );
    // Its file is there, uncommitted: readers do not count it.
    let orphans = |lake: &Path| {
        globbed(lake, "clean")
            .into_iter()
            .chain(globbed(lake, "scored"))
            .filter(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("compact-")
            })
            .filter(|f| {
                !table_files(lake, "clean").contains(f) && !table_files(lake, "scored").contains(f)
            })
            .count()
    };
    assert_eq!(orphans(&lake), 1);
    assert_same_lake(&reference, &lake, "after a crashed compaction");
    millrace(&dir, &["compact", "lake"]);
    assert_same_lake(&reference, &lake, "compacted after the crash");
    // The next pass deletes the file a newer commit superseded.
    millrace(&dir, &["compact", "lake"]);
    assert_eq!(orphans(&lake), 0);
    assert_same_lake(&reference, &lake, "swept");
}

#[test]
fn a_continuous_run_compacts_its_closed_partitions_in_the_background() {
    let (dir, _) = input("compact-live", 59, 12_000, 1_000);
    let live = quickstart_with(
        &dir,
        "live.toml",
        1_000,
        "[lake.compaction]\ninterval_ms = 50\ngrace_ms = 60000",
    );
    let job = LiveJob::start(
        &dir,
        &[&live, "--landing", "landing", "--lake", "lake"],
        &[],
    );
    // Wait for the state: every landed line in the ledger, and a compaction committed.
    let lake = dir.join("lake");
    let committed = |lake: &Path| {
        millrace::core::storage::list(&lake.join("scored"), true)
            .unwrap()
            .iter()
            .any(|(rel, _)| rel.contains("_compactions/") && rel.ends_with(".json"))
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let expected = metrics_sum(&dir.join("reference"), "input");
    while !(committed(&lake) && metrics_sum(&lake, "input") == expected) {
        assert!(
            Instant::now() < deadline,
            "no compaction:\n{}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, _, err) = job.stop();
    assert!(ok, "{err}");
    assert_same_lake(&dir.join("reference"), &lake, "compacted in the background");
    // The newest partition of each table is still open: left as it was.
    let newest = per_partition(&lake, "scored")
        .into_iter()
        .next_back()
        .unwrap();
    let plain = per_partition(&dir.join("reference"), "scored");
    assert_eq!(plain.values().next_back(), Some(&newest.1));
}

/// The series topology's partitions (monthly as shipped, daily here) hold
/// one file per table each after compaction.
#[test]
fn the_series_topology_sits_in_one_file_per_table_per_partition() {
    let dir = scratch("compact-series");
    let mut text = String::from("timestamp,value\n");
    // 22,695 five-minute rows from 2014-04-01: 79 days.
    let start = 1_396_310_400i64;
    let mut s = 7u64;
    for i in 0..22_695i64 {
        let t = start + i * 300;
        let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        let (y, m, d) = millrace_operators::parse::civil_from_days(days);
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = 50.0 + (s >> 40) as f64 / (1u64 << 24) as f64;
        text.push_str(&format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{v}\n",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ));
    }
    std::fs::write(dir.join("landing/cpu.csv"), &text).unwrap();
    settle(&dir);
    let shipped = repo().join("topologies/series_anomaly.toml");
    let shipped = std::fs::read_to_string(shipped).unwrap();
    for (name, partition, folders) in [("month", "month", 3), ("day", "day", 79)] {
        let topology = dir.join(format!("{name}.toml"));
        let t = shipped
            .replace(
                "partition = \"month\"",
                &format!("partition = \"{partition}\""),
            )
            .replace("records_per_epoch = 10000", "records_per_epoch = 1000")
            + "\n[lake.compaction]\ngrace_ms = 0\n";
        std::fs::write(&topology, t).unwrap();
        let lake = format!("lake-{name}");
        run_once(&dir, topology.to_str().unwrap(), &lake, &[]);
        let lake = dir.join(lake);
        assert_eq!(rows(&lake, "clean"), 22_695);
        for t in ["clean", "scored", "metrics"] {
            let files = per_partition(&lake, t);
            assert!(files.values().all(|n| *n == 1), "{name}: {t}: {files:?}");
            if t != "metrics" {
                assert_eq!(files.len(), folders, "{name}: {t}");
            }
            assert_eq!(globbed(&lake, t).len(), files.len(), "{name}: {t}");
        }
    }
}

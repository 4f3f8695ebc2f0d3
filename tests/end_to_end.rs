//! End to end on embedded defaults: generated files land in a folder, the
//! quickstart topology runs with `--once`, and the lake is read back.

mod common;

use std::io::Write;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;
use common::*;

/// Runs the quickstart over `dir` (lake `lake` unless `extra` names one) and returns stdout.
fn run_once(dir: &std::path::Path, extra: &[&str]) -> String {
    let q = quickstart();
    let mut args = vec!["run", q.as_str(), "--once", "--landing", "landing"];
    if !extra.contains(&"--lake") {
        args.extend(["--lake", "lake"]);
    }
    args.extend_from_slice(extra);
    millrace(dir, &args)
}

#[test]
fn ledger_matches_the_generators_ground_truth() {
    let dir = scratch("ledger");
    let truth = gen(&dir, "tx-0001.csv", 60_000, 11, &[]);
    let out = run_once(&dir, &[]);
    let lake = dir.join("lake");

    let emitted = truth_u64(&truth, "rows_emitted");
    let (malformed, invalid, dups) = (
        truth_u64(&truth, "malformed"),
        truth_u64(&truth, "invalid"),
        truth_u64(&truth, "duplicates"),
    );
    assert!(
        malformed > 50 && invalid > 50 && dups > 20,
        "the stream has faults: {truth}"
    );
    let clean = emitted - malformed - invalid - dups;

    // The ledger, as the metrics table records it per epoch.
    assert_eq!(metrics_sum(&lake, "input"), emitted);
    assert_eq!(metrics_sum(&lake, "clean"), clean);
    assert_eq!(metrics_sum(&lake, "duplicate"), dups);
    assert_eq!(metrics_sum(&lake, "malformed"), malformed);
    assert_eq!(metrics_sum(&lake, "invalid"), invalid);
    // The tables hold exactly those rows.
    assert_eq!(rows(&lake, "scored") as u64, clean);
    assert_eq!(rows(&lake, "clean") as u64, clean);
    let classes = counts(&lake, "rejected", "class");
    assert_eq!(classes.get("malformed").copied(), Some(malformed));
    assert_eq!(classes.get("invalid").copied(), Some(invalid));
    // The run prints the same ledger.
    assert!(
        out.contains(&format!(
            "ledger: in {emitted} = clean {clean} + rejected {} + duplicate {dups}",
            malformed + invalid
        )),
        "{out}"
    );
    // Missing values were imputed and flagged.
    let imputed: usize = read_table(&lake, "clean")
        .iter()
        .map(|(_, b)| {
            let l = b.column_by_name("imputed").unwrap().as_list::<i32>();
            (0..b.num_rows())
                .filter(|i| !l.value(*i).is_empty())
                .count()
        })
        .sum();
    let missing = truth_u64(&truth, "missing_rows");
    assert!(
        imputed as u64 <= missing && imputed as u64 >= missing * 95 / 100,
        "imputed {imputed} of {missing} rows with a missing value"
    );
    // Every reject keeps its raw text, source file and line.
    for (_, b) in read_table(&lake, "rejected") {
        let raw = b.column_by_name("raw").unwrap().as_string::<i32>();
        let src = b.column_by_name("source").unwrap().as_string::<i32>();
        assert!(
            (0..b.num_rows()).all(|i| !raw.value(i).is_empty() && src.value(i) == "tx-0001.csv")
        );
    }
    // Model quality on this small stream is well above chance.
    let auc: f64 = out
        .split("ROC AUC ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(auc > 0.75, "{out}");
}

#[test]
fn lake_is_hive_partitioned_by_event_hour_with_no_temporary_files() {
    let dir = scratch("layout");
    gen(&dir, "tx.csv", 20_000, 3, &["--rate", "2"]); // 20k rows over ~2.8 hours of event time
    run_once(&dir, &[]);
    let lake = dir.join("lake");
    assert!(temp_files(&lake).is_empty());
    let mut hours = std::collections::BTreeSet::new();
    for table in ["clean", "scored", "rejected", "metrics"] {
        let files = table_files(&lake, table);
        assert!(!files.is_empty(), "{table} has files");
        for f in &files {
            let rel = f.strip_prefix(&lake).unwrap().to_string_lossy().to_string();
            let parts: Vec<&str> = rel.split('/').collect();
            assert_eq!(parts.len(), 4, "{rel}");
            assert_eq!(parts[0], table);
            assert!(
                parts[1].starts_with("date=") && parts[1].len() == 15,
                "{rel}"
            );
            assert!(
                parts[2].starts_with("hour=") && parts[2].len() == 7,
                "{rel}"
            );
            assert!(
                parts[3].starts_with("part-") && parts[3].ends_with(".parquet"),
                "{rel}"
            );
        }
    }
    // Each scored row sits in the partition of its event time.
    for (path, b) in read_table(&lake, "scored") {
        let t = b
            .column_by_name("event_time")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let rel = path
            .strip_prefix(&lake)
            .unwrap()
            .to_string_lossy()
            .to_string();
        for i in 0..b.num_rows() {
            let expected = millrace::connectors::lake::partition_of(t.value(i));
            assert!(
                rel.starts_with(&format!("scored/{expected}/")),
                "{rel} holds a row of {expected}"
            );
            hours.insert(expected);
        }
    }
    assert!(
        hours.len() >= 3,
        "the stream spans several hours: {hours:?}"
    );
}

#[test]
fn files_are_processed_exactly_once_and_new_ones_alone() {
    let dir = scratch("once");
    let t1 = gen(&dir, "a.csv", 15_000, 1, &[]);
    let out1 = run_once(&dir, &[]);
    assert!(out1.contains("run: 1 file(s)"), "{out1}");
    let lake = dir.join("lake");
    let scored1 = rows(&lake, "scored");
    let files1 = table_files(&lake, "scored").len();

    // A second run over the same folder finds nothing new.
    let out2 = run_once(&dir, &[]);
    assert!(
        out2.contains("run: 0 file(s)") && out2.contains("ledger: in 0 ="),
        "{out2}"
    );
    assert_eq!(rows(&lake, "scored"), scored1);
    assert_eq!(table_files(&lake, "scored").len(), files1);

    // A file added afterwards is processed alone.
    let t2 = gen(&dir, "b.jsonl", 8_000, 2, &["--format", "jsonl"]);
    let out3 = run_once(&dir, &[]);
    assert!(out3.contains("run: 1 file(s)"), "{out3}");
    assert!(
        out3.contains(&format!("ledger: in {} =", truth_u64(&t2, "rows_emitted"))),
        "{out3}"
    );
    let expected = |t: &serde_json::Value| {
        truth_u64(t, "rows_emitted")
            - truth_u64(t, "malformed")
            - truth_u64(t, "invalid")
            - truth_u64(t, "duplicates")
    };
    assert_eq!(rows(&lake, "scored") as u64, expected(&t1) + expected(&t2));
    let sources = counts(&lake, "scored", "source");
    assert_eq!(sources.keys().collect::<Vec<_>>(), ["a.csv", "b.jsonl"]);

    // The manifest lists both files once.
    let manifest = std::fs::read_to_string(lake.join("_manifest/landing.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 2, "{manifest}");

    // A changed file (same name, new content) is a new file.
    gen(&dir, "a.csv", 1_000, 9, &[]);
    let out4 = run_once(&dir, &[]);
    assert!(out4.contains("run: 1 file(s)"), "{out4}");
}

#[test]
fn files_still_being_written_are_not_read() {
    let dir = scratch("partial");
    gen(&dir, "ready.csv", 2_000, 4, &["--no-faults"]);
    // Temporary names are never read.
    std::fs::write(
        dir.join("landing/.hidden.csv.tmp"),
        "event_time,account\n1,a\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("landing/upload.csv.part"),
        "event_time,account\n1,a\n",
    )
    .unwrap();
    std::fs::write(dir.join("landing/_SUCCESS"), "").unwrap();
    // A file written in place is read only once it has stopped changing: a writer
    // appends in bursts with pauses shorter than the settle interval.
    let path = dir.join("landing/slow.csv");
    let content = std::fs::read_to_string(dir.join("landing/ready.csv")).unwrap();
    let lines: Vec<&str> = content.lines().collect();
    let header = lines[0].to_string();
    let body: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.replace("acct-", "slow-"))
        .collect();
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{header}").unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in body.chunks(250) {
            for l in chunk {
                writeln!(f, "{l}").unwrap();
            }
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let out = run_once(&dir, &[]);
    writer.join().unwrap();
    assert!(out.contains("run: 2 file(s)"), "{out}");
    assert!(
        out.contains("ledger: in 4000 = clean 4000 + rejected 0 + duplicate 0"),
        "{out}"
    );
    assert_eq!(
        counts(&dir.join("lake"), "scored", "source").get("slow.csv"),
        Some(&2000)
    );
}

#[test]
fn two_workers_give_the_same_ledger_and_score_every_record_once() {
    let dir = scratch("workers");
    gen(&dir, "w1.csv", 12_000, 5, &[]);
    gen(&dir, "w2.csv", 12_000, 6, &[]);
    gen(&dir, "w3.jsonl", 12_000, 7, &["--format", "jsonl"]);
    let one = run_once(&dir, &["--lake", "lake1"]);
    let two = run_once(&dir, &["--workers", "2", "--lake", "lake2"]);
    let ledger = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("ledger:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(ledger(&one), ledger(&two));
    let keys = |lake: &str| {
        scored(&dir.join(lake))
            .into_iter()
            .map(|r| (r.0, r.1, r.2, r.3))
            .collect::<Vec<_>>()
    };
    let (k1, k2) = (keys("lake1"), keys("lake2"));
    assert_eq!(k1, k2, "the same records are scored, each exactly once");
    let mut dedup = k2.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), k2.len());
}

#[test]
fn runs_are_deterministic() {
    let dir = scratch("determinism");
    gen(&dir, "d1.csv", 10_000, 8, &[]);
    gen(&dir, "d2.csv", 10_000, 9, &[]);
    run_once(&dir, &["--workers", "2", "--lake", "lake1"]);
    run_once(&dir, &["--workers", "2", "--lake", "lake2"]);
    assert_eq!(
        scored(&dir.join("lake1")),
        scored(&dir.join("lake2")),
        "same input and workers: same scores, bit for bit"
    );
}

#[test]
fn bad_topologies_name_file_line_and_key() {
    let dir = scratch("config");
    let text = std::fs::read_to_string(quickstart())
        .unwrap()
        .replace("min = 0.0 ", "minimum = 0.0 ");
    std::fs::write(dir.join("bad.toml"), &text).unwrap();
    let out = millrace_raw(&dir, &["validate", "bad.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.starts_with("minimum")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "bad.toml:{line}: schema.numeric[0].minimum: unknown field `minimum`"
        )),
        "{err}"
    );

    let text = std::fs::read_to_string(quickstart())
        .unwrap()
        .replace("field = \"f3\"", "field = \"f33\"");
    std::fs::write(dir.join("bad2.toml"), &text).unwrap();
    let err =
        String::from_utf8_lossy(&millrace_raw(&dir, &["validate", "bad2.toml"]).stderr).to_string();
    let line = text.lines().position(|l| l.contains("f33")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "bad2.toml:{line}: features[7].field: `f33` is not a numeric field"
        )),
        "{err}"
    );

    let ok = millrace(&repo(), &["validate", "topologies/quickstart.toml"]);
    assert!(
        ok.contains("topology `quickstart`: ok") && ok.contains("featurize  10 dense"),
        "{ok}"
    );
}

#[test]
fn gen_matches_the_reference_generator_byte_for_byte() {
    // A cross-check against the project's shared reference generator: a
    // clone without `../shared` beside it has nothing to check against.
    let script = repo().join("../shared/data/gen_transactions.py");
    if !script.exists() {
        eprintln!(
            "skipped: the reference generator is not at {} (a clone without ../shared)",
            script.display()
        );
        return;
    }
    let dir = scratch("gen");
    for (fmt, extra) in [
        ("csv", vec![]),
        ("jsonl", vec!["--no-faults"]),
        ("jsonl", vec![]),
    ] {
        let mut args = vec!["--rows", "30000", "--seed", "13", "--format", fmt];
        args.extend(extra.iter().copied());
        let py = std::process::Command::new("python3")
            .arg(&script)
            .args(&args)
            .arg("--truth")
            .arg(dir.join("py-truth.json"))
            .output()
            .unwrap();
        assert!(py.status.success());
        let mut ours = vec!["gen", "--truth", "rs-truth.json"];
        ours.extend(args.iter().copied());
        let rs = millrace_raw(&dir, &ours);
        assert!(rs.status.success());
        assert!(py.stdout == rs.stdout, "{fmt} {extra:?}: rows differ");
        assert_eq!(
            std::fs::read(dir.join("py-truth.json")).unwrap(),
            std::fs::read(dir.join("rs-truth.json")).unwrap()
        );
    }
}

#[test]
fn without_once_the_source_keeps_polling_and_stops_cleanly_on_sigint() {
    let dir = scratch("polling");
    let text = std::fs::read_to_string(quickstart())
        .unwrap()
        .replace("poll_interval_ms = 1000", "poll_interval_ms = 100")
        .replace("settle_ms = 1000", "settle_ms = 200");
    std::fs::write(dir.join("poll.toml"), text).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["run", "poll.toml"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lake = dir.join("lake");
    let wait_for = |rows: usize| {
        let start = std::time::Instant::now();
        while counts_or_empty(&lake) != rows {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "waited for {rows} scored rows, have {}",
                counts_or_empty(&lake)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let t1 = gen(&dir, "p1.csv", 5_000, 21, &["--no-faults"]);
    wait_for(5_000);
    let t2 = gen(&dir, "p2.csv", 3_000, 22, &["--no-faults"]);
    wait_for(8_000);
    assert_eq!(
        truth_u64(&t1, "rows_emitted") + truth_u64(&t2, "rows_emitted"),
        8_000
    );
    // Both files are in the manifest before the run stops.
    let manifest = lake.join("_manifest/landing.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&manifest).map_or(0, |m| m.lines().count()) < 2 {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("run: 2 file(s)") && stdout.contains("ledger: in 8000 = clean 8000"),
        "{stdout}"
    );
}

fn counts_or_empty(lake: &std::path::Path) -> usize {
    if lake.join("scored").exists() {
        rows(lake, "scored")
    } else {
        0
    }
}

#[test]
fn every_shipped_topology_validates() {
    let mut checked = 0;
    for e in std::fs::read_dir(repo().join("topologies")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p.display().to_string();
            let out = millrace(&repo(), &["validate", &name]);
            assert!(out.contains(": ok"), "{name}: {out}");
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} topologies");
}

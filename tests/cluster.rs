//! The cluster job: several processes over TCP (timely's cluster mode, here on
//! loopback through `--local-cluster`), one shared model refreshed across all
//! workers, and what happens when a process dies.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(dir: &Path, lake: &str, extra: &[&str]) -> String {
    let q = quickstart();
    let mut args = vec!["run", &q, "--once", "--landing", "landing", "--lake", lake];
    args.extend_from_slice(extra);
    millrace(dir, &args)
}

fn ledger_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("ledger:"))
        .unwrap_or_else(|| panic!("no ledger in:\n{out}"))
}

/// `model (...): accuracy A  log loss L  ROC AUC U` → (A, U).
fn quality(out: &str) -> (f64, f64) {
    let l = out
        .lines()
        .find(|l| l.starts_with("model ("))
        .unwrap_or_else(|| panic!("no model line in:\n{out}"));
    let num = |key: &str| -> f64 {
        l[l.find(key).unwrap() + key.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("accuracy "), num("ROC AUC "))
}

#[test]
fn two_processes_of_two_workers_score_every_record_once_with_one_shared_model() {
    let dir = scratch("cluster");
    let truth = gen(&dir, "tx-a.csv", 120_000, 41, &[]);
    let truth_b = gen(&dir, "tx-b.csv", 80_000, 42, &[]);
    settle(&dir);
    let one = run(&dir, "lake-1", &[]);
    let cluster = run(&dir, "lake-c", &["--workers", "2", "--local-cluster", "2"]);
    assert!(cluster.contains("4 worker(s) in 2 processes"), "{cluster}");
    // The same ledger as one worker, and it matches the generator's truth.
    assert_eq!(ledger_line(&one), ledger_line(&cluster));
    let input = truth_u64(&truth, "rows_emitted") + truth_u64(&truth_b, "rows_emitted");
    assert!(
        ledger_line(&cluster).contains(&format!("in {input} ")),
        "{cluster}"
    );
    // Every clean record scored exactly once (by source and line; by key and event time).
    let (a, c) = (scored(&dir.join("lake-1")), scored(&dir.join("lake-c")));
    assert_eq!(a.len(), c.len());
    let ids = |v: &[ScoredRow]| v.iter().map(|r| (r.0.clone(), r.1)).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&c));
    let mut keys: Vec<(String, String, i64)> =
        c.iter().map(|r| (r.0.clone(), r.2.clone(), r.3)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), c.len());
    // One shared model, refreshed: versions go up, and 4 threads in one process
    // give the very same scores as 2 processes of 2 threads.
    assert!(
        c.iter().map(|r| r.6).max().unwrap() > 5,
        "the model was refreshed"
    );
    let four = run(&dir, "lake-4", &["--workers", "4"]);
    assert_eq!(ledger_line(&four), ledger_line(&cluster));
    assert_eq!(scored(&dir.join("lake-4")), c);
}

#[test]
fn a_process_that_dies_stops_the_job_and_a_restart_completes_it() {
    let dir = scratch("cluster-kill");
    gen(&dir, "tx-a.csv", 300_000, 43, &[]);
    gen(&dir, "tx-b.csv", 300_000, 44, &[]);
    settle(&dir);
    let one = run(&dir, "lake-1", &[]);
    let q = quickstart();
    let mut job = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "run",
            &q,
            "--once",
            "--landing",
            "landing",
            "--lake",
            "lake-c",
            "--workers",
            "1",
            "--local-cluster",
            "2",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill process 1 once the job has committed something.
    let start = Instant::now();
    while !dir.join("lake-c/_checkpoints").is_dir()
        || std::fs::read_dir(dir.join("lake-c/_checkpoints"))
            .unwrap()
            .count()
            < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only this job's process 1 (a child of the job's launcher): the other
    // tests of this file run local clusters of their own at the same time.
    let killed = Command::new("pkill")
        .args([
            "-9",
            "-P",
            &job.id().to_string(),
            "-f",
            "--",
            "--process 1 ",
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "process 1 was found and killed");
    let status = job.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "the job must fail when a process dies");
    assert!(
        err.contains("process 1 of the local cluster failed"),
        "{err}"
    );
    assert!(
        err.contains("lost the connection to another process"),
        "{err}"
    );
    // Restarted, the job resumes from its checkpoint and ends with one worker's ledger.
    let again = run(&dir, "lake-c", &["--workers", "1", "--local-cluster", "2"]);
    assert!(
        again.contains("resumed from the checkpoint of epoch"),
        "{again}"
    );
    assert!(again.contains("engine restarted"), "{again}");
    let (a, c) = (scored(&dir.join("lake-1")), scored(&dir.join("lake-c")));
    let ids = |v: &[ScoredRow]| v.iter().map(|r| (r.0.clone(), r.1)).collect::<Vec<_>>();
    assert_eq!(
        ids(&a),
        ids(&c),
        "every record scored exactly once across the failure"
    );
    assert_eq!(
        metrics_sum(&dir.join("lake-1"), "input"),
        metrics_sum(&dir.join("lake-c"), "input")
    );
    assert!(one.contains("ledger: in "), "{one}");
}

#[test]
fn a_fault_on_one_process_stops_every_process() {
    // The landed file changes under its reader (`on_change = "fail"`): the
    // process reading it raises a fault. The other process must not wait for
    // it forever: the job ends, with the fault and the lost connection.
    let dir = scratch("cluster-fault");
    gen(&dir, "tx.csv", 100_000, 45, &[]);
    settle(&dir);
    let gate = dir.join("gate");
    let q = quickstart();
    let mut job = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "run",
            &q,
            "--once",
            "--landing",
            "landing",
            "--lake",
            "lake",
        ])
        .args(["--workers", "1", "--local-cluster", "2"])
        .env(
            "FAILPOINTS",
            format!("landing_between_chunks=return({})", gate.display()),
        )
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is held between two chunks of the file; cut the file short.
    let reached = gate.with_extension("reached");
    let start = Instant::now();
    while !reached.exists() {
        assert!(job.try_wait().unwrap().is_none(), "the job ended first");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the reader never reached its wait point"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let file = dir.join("landing/tx.csv");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::write(&gate, b"").unwrap();
    // Both processes end (a hang here is the bug this test is for).
    let start = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = job.kill();
            panic!("the job did not stop after a fault on one of its processes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("tx.csv") && err.contains("changed"), "{err}");
    assert!(
        err.contains("lost the connection to another process"),
        "{err}"
    );
}

#[test]
fn four_workers_learn_as_well_as_one() {
    // The bar: on the same 1M-record stream, 4 workers (2 processes × 2)
    // within 0.5 points of accuracy and 0.005 of AUC of one worker.
    let dir = scratch("cluster-quality");
    gen(&dir, "tx.csv", 1_000_000, 7, &[]);
    settle(&dir);
    let (acc1, auc1) = quality(&run(&dir, "lake-1", &[]));
    let (acc4, auc4) = quality(&run(
        &dir,
        "lake-4",
        &["--workers", "2", "--local-cluster", "2"],
    ));
    assert!((acc1 - acc4).abs() < 0.005, "accuracy {acc1} vs {acc4}");
    assert!((auc1 - auc4).abs() < 0.005, "AUC {auc1} vs {auc4}");

    // The non-linear learner: the workers' Hoeffding trees make one forest
    // (every worker scores with the same published trees, averaged).
    let text = std::fs::read_to_string(quickstart()).unwrap().replace(
        "kind = \"logistic_regression\"",
        "kind = \"hoeffding_tree\"",
    );
    std::fs::write(dir.join("tree.toml"), text).unwrap();
    let tree = |lake: &str, extra: &[&str]| run_once(&dir, "tree.toml", lake, extra);
    let (acc1, auc1) = quality(&tree("lake-t1", &[]));
    let (acc4, auc4) = quality(&tree(
        "lake-t4",
        &["--workers", "2", "--local-cluster", "2"],
    ));
    assert!(
        (acc1 - acc4).abs() < 0.005,
        "tree accuracy {acc1} vs {acc4}"
    );
    assert!((auc1 - auc4).abs() < 0.01, "tree AUC {auc1} vs {auc4}");
    let versions = scored(&dir.join("lake-t4"))
        .iter()
        .map(|r| r.6)
        .max()
        .unwrap();
    assert!(
        versions > 50,
        "the forest was refreshed: {versions} versions"
    );
}

//! Delayed labels (`[source.labels]`): labels that come after their records,
//! on their own landing folder, joined by transaction id.
//!
//! - Labels known at their record's own time score every record exactly as
//!   labels inline do (the same bits).
//! - Labels 10,000 records late: every prediction and every label line is
//!   accounted for (learned, expired, orphaned, still waiting), expired
//!   predictions are exactly those whose label never came, and once the
//!   delay has played out the model is as good as with labels inline.
//! - A crash mid-run resumes to the same lake: the label source's position
//!   and the predictions waiting for labels are in the checkpoint.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, TimestampMillisecondType};
use common::*;

/// The delayed-label topology; without `time`, labels are learned as soon as they meet their prediction.
fn topology(dir: &Path, with_time: bool) -> String {
    let text = std::fs::read_to_string(repo().join("topologies/late_labels.toml")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| with_time || !l.starts_with("time = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.join(if with_time { "late.toml" } else { "late0.toml" });
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Generates the same stream twice: inline labels in `inline/`, and records in
/// `landing/` with their labels in `labels/`.
fn streams(dir: &Path, rows: u64, extra: &[&str], split: &[&str]) {
    let rows = rows.to_string();
    let mut a = vec![
        "gen",
        "--rows",
        &rows,
        "--seed",
        "11",
        "--out",
        "inline/tx-0001.csv",
    ];
    a.extend_from_slice(extra);
    millrace(dir, &a);
    let mut b = vec![
        "gen",
        "--rows",
        &rows,
        "--seed",
        "11",
        "--out",
        "landing/tx-0001.csv",
        "--labels-out",
        "labels/labels-0001.csv",
    ];
    b.extend_from_slice(extra);
    b.extend_from_slice(split);
    millrace(dir, &b);
    for folder in ["inline", "landing", "labels"] {
        settle_folder(dir, folder);
    }
}

/// One row of a `scored` table.
struct Row {
    key: String,
    t: i64,
    score: f64,
    /// The inline label, if the record carried one.
    label: Option<bool>,
    /// The record id, if the schema declares one.
    id: Option<String>,
}

fn rows_of(lake: &Path) -> Vec<Row> {
    let mut v = Vec::new();
    for (_, b) in read_table(lake, "scored") {
        let key = b.column_by_name("key").unwrap().as_string::<i32>().clone();
        let t = b
            .column_by_name("event_time")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let s = b
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        let y = b
            .column_by_name("label")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let id = b.column_by_name("id").map(|c| c.as_string::<i32>().clone());
        for i in 0..b.num_rows() {
            v.push(Row {
                key: key.value(i).to_string(),
                t: t.value(i),
                score: s.value(i),
                label: (!y.is_null(i)).then(|| y.value(i) == 1),
                id: id.as_ref().map(|c| c.value(i).to_string()),
            });
        }
    }
    v
}

/// (key, event time, score bits), sorted.
fn scores(lake: &Path) -> Vec<(String, i64, u64)> {
    let mut v: Vec<_> = rows_of(lake)
        .into_iter()
        .map(|r| (r.key, r.t, r.score.to_bits()))
        .collect();
    v.sort();
    v
}

/// A topology run with `--once` into `lake`.
fn run(dir: &Path, topology: &str, lake: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", topology, "--once", "--lake", lake];
    args.extend_from_slice(extra);
    millrace(dir, &args)
}

/// The quickstart over the inline-labelled copy of the stream.
fn run_inline(dir: &Path) -> String {
    run(dir, &quickstart(), "lake-inline", &["--landing", "inline"])
}

/// Exact ROC AUC and accuracy at 0.5 of (score, label) pairs.
fn auc_accuracy(mut pairs: Vec<(f64, bool)>) -> (f64, f64) {
    let correct = pairs.iter().filter(|(p, y)| (*p > 0.5) == *y).count();
    let accuracy = correct as f64 / pairs.len() as f64;
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut pos, mut i) = (0.0, 0u64, 0);
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0;
        for p in &pairs[i..j] {
            if p.1 {
                rank_sum += mid;
                pos += 1;
            }
        }
        i = j;
    }
    let neg = pairs.len() as u64 - pos;
    let auc = (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64;
    (auc, accuracy)
}

#[test]
fn labels_known_at_their_records_time_score_exactly_as_inline() {
    let dir = scratch("labels-exact");
    streams(&dir, 60_000, &["--no-faults"], &[]);
    let inline = run_inline(&dir);
    let late = run(&dir, &topology(&dir, false), "lake-late", &[]);
    let (a, b) = (
        scores(&dir.join("lake-inline")),
        scores(&dir.join("lake-late")),
    );
    assert_eq!(a.len(), 60_000);
    assert!(a == b, "scores differ between inline and late labels");
    let model = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("model (prequential"))
            .unwrap()
            .to_string()
    };
    assert_eq!(model(&inline), model(&late));
    assert_eq!(late_counts(&late), [60_000, 0, 0, 0, 0, 0], "{late}");
    assert!(
        late.contains("ledger: in 120000 = clean 60000 + rejected 0 + duplicate 0 + labels 60000"),
        "{late}"
    );
}

#[test]
fn labels_ten_thousand_records_late_are_all_accounted_for() {
    let dir = scratch("labels-late");
    streams(
        &dir,
        200_000,
        &[],
        &["--label-delay", "10000", "--label-missing", "0.01"],
    );
    let inline = run_inline(&dir);
    let late = run(&dir, &topology(&dir, true), "lake-late", &[]);
    assert!(!late.contains("UNBALANCED"), "{late}");
    let clean = figure(&late, "ledger:", "+ rejected");
    let accepted: u64 = late
        .lines()
        .find(|l| l.starts_with("ledger:"))
        .unwrap()
        .rsplit("labels ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let [learned, expired, orphaned, waiting, due, early] = late_counts(&late);
    // Every prediction (no record carries its label inline) and every label line.
    assert_eq!(learned + due + expired + waiting, clean, "{late}");
    assert_eq!(learned + due + orphaned + early, accepted, "{late}");
    assert!(expired > 0 && orphaned > 0, "{late}");

    // The predictions that can never be learned are exactly those whose label never came.
    let text = std::fs::read_to_string(dir.join("labels/labels-0001.csv")).unwrap();
    let labelled: HashMap<&str, bool> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            let id = f.next()?;
            match f.next()? {
                "0" => Some((id, false)),
                "1" => Some((id, true)),
                _ => None, // rejected as invalid_label
            }
        })
        .collect();
    let late_scored = rows_of(&dir.join("lake-late"));
    let ids: Vec<&str> = late_scored
        .iter()
        .map(|r| r.id.as_deref().expect("an id column"))
        .collect();
    let never = ids.iter().filter(|id| !labelled.contains_key(*id)).count() as u64;
    assert_eq!(expired + waiting, never, "{late}");
    let scored: HashSet<&str> = ids.iter().copied().collect();
    let orphans = labelled.keys().filter(|id| !scored.contains(*id)).count() as u64;
    assert_eq!(orphaned + early, orphans, "{late}");

    // Once the delay has played out, the model is as good as with labels
    // inline: the same records (the last 60,000 by event time, labelled in
    // both) evaluated with each run's own scores.
    let mut inline_rows: Vec<Row> = rows_of(&dir.join("lake-inline"))
        .into_iter()
        .filter(|r| r.label.is_some())
        .collect();
    inline_rows.sort_by(|a, b| (a.t, &a.key).cmp(&(b.t, &b.key)));
    let late_rows: HashMap<(i64, &str), (f64, bool)> = late_scored
        .iter()
        .filter_map(|r| {
            let y = labelled.get(r.id.as_deref()?)?;
            Some(((r.t, r.key.as_str()), (r.score, *y)))
        })
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in inline_rows.iter().rev() {
        let y = r.label.expect("filtered");
        if let Some((s2, y2)) = late_rows.get(&(r.t, r.key.as_str())) {
            assert_eq!(y, *y2, "the same record has the same label");
            a.push((r.score, y));
            b.push((*s2, *y2));
            if a.len() == 60_000 {
                break;
            }
        }
    }
    assert_eq!(a.len(), 60_000);
    let ((auc_a, acc_a), (auc_b, acc_b)) = (auc_accuracy(a), auc_accuracy(b));
    assert!(
        (auc_a - auc_b).abs() < 0.005,
        "AUC inline {auc_a:.5} vs late {auc_b:.5}\n{inline}\n{late}"
    );
    assert!(
        (acc_a - acc_b).abs() < 0.005,
        "accuracy inline {acc_a:.5} vs late {acc_b:.5}"
    );

    // The metrics table carries the same counts, epoch by epoch, and the report charts them.
    let lake = dir.join("lake-late");
    assert_eq!(metrics_sum(&lake, "label_lines"), accepted);
    assert_eq!(metrics_sum(&lake, "labels_learned"), learned);
    millrace(&dir, &["report", "lake-late", "-o", "late.html"]);
    let page = std::fs::read_to_string(dir.join("late.html")).unwrap();
    assert!(page.contains(r#"<svg id="late-labels""#) && page.contains("predictions expired"));
    assert_eq!(metrics_sum(&lake, "predictions_expired"), expired);
    assert_eq!(metrics_sum(&lake, "labels_orphaned"), orphaned);

    // Two workers: labels meet their predictions across workers; everything is still accounted for.
    let two = run(&dir, &topology(&dir, true), "lake-2", &["--workers", "2"]);
    let [learned2, expired2, _, waiting2, due2, _] = late_counts(&two);
    assert_eq!(learned2 + due2 + expired2 + waiting2, clean, "{two}");
    assert_eq!(expired2, expired, "{two}");
    assert!(learned2.abs_diff(learned) < 50, "{learned2} vs {learned}");
}

#[test]
fn a_crash_resumes_with_the_predictions_still_waiting() {
    let dir = scratch("labels-crash");
    streams(
        &dir,
        120_000,
        &[],
        &["--label-delay", "10000", "--label-missing", "0.01"],
    );
    let t = topology(&dir, true);
    let whole = run(&dir, &t, "lake-a", &[]);
    let crashed = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["run", &t, "--once", "--lake", "lake-b"])
        .current_dir(&dir)
        .env("FAILPOINTS", "before_checkpoint=7*off->return")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the run should have crashed");
    let resumed = run(&dir, &t, "lake-b", &[]);
    assert!(
        resumed.contains("resumed from the checkpoint of epoch"),
        "{resumed}"
    );
    for table in ["scored", "clean", "rejected"] {
        assert_eq!(
            table_rows(&dir.join("lake-a"), table),
            table_rows(&dir.join("lake-b"), table),
            "{table} differs after the crash"
        );
    }
    let counts = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("late labels:"))
            .map(|l| l.split(';').nth(1).unwrap().to_string())
    };
    // What was waiting at the end is the same (the run's totals count only its own part).
    assert_eq!(counts(&whole), counts(&resumed), "{whole}\n{resumed}");
    for table in ["labels_learned", "predictions_expired", "labels_orphaned"] {
        assert_eq!(
            metrics_sum(&dir.join("lake-a"), table),
            metrics_sum(&dir.join("lake-b"), table),
            "{table}"
        );
    }
}

#[test]
fn without_a_label_folder_a_once_run_finishes_and_counts_every_prediction() {
    let dir = scratch("labels-none");
    // Records without the id column: the header lacks a declared column, so
    // every record of the file is rejected as `bad_header`, with the reason.
    gen(&dir, "tx-0001.csv", 20_000, 3, &[]);
    settle(&dir);
    let t = topology(&dir, true);
    let out = run(&dir, &t, "lake", &[]);
    assert!(
        out.contains("= clean 0 + rejected 20000 + duplicate 24"),
        "{out}"
    );
    assert!(out.contains("(bad_header 20000)"), "{out}");
    // Records with ids, but their labels never landed (no `labels/` folder).
    std::fs::remove_dir_all(dir.join("landing")).unwrap();
    millrace(
        &dir,
        &[
            "gen",
            "--rows",
            "20000",
            "--seed",
            "3",
            "--out",
            "landing/tx-0001.csv",
            "--labels-out",
            "elsewhere/labels.csv",
        ],
    );
    settle(&dir);
    assert!(!dir.join("labels").exists());
    let out = run(&dir, &t, "lake-2", &[]);
    let clean = figure(&out, "ledger:", "+ rejected");
    let [learned, expired, _, waiting, due, _] = late_counts(&out);
    assert_eq!((learned, due), (0, 0), "{out}");
    assert_eq!(expired + waiting, clean, "{out}");
}

//! End-to-end throughput of the quickstart topology beside a hand-written loop.
//!
//! `cargo bench --bench quickstart [-- --rows N --repeat R]` generates N rows (default
//! 1,000,000, seed 7, with faults, 10,000 accounts) into a landing folder, then
//! runs, each in a child process of this binary so peak memory is measured
//! alone:
//!
//! * `loop`   — a hand-written single-threaded loop doing the same work: parse
//!   the CSV, reject malformed and invalid lines, drop exact duplicates, impute
//!   running means, per-account features, standardise, predict then learn, and
//!   write the same `clean`, `scored` and `rejected` Parquet tables per 10,000
//!   lines into the same Hive partitions. It uses the same learning algorithms
//!   (scaler, SGD, dedup window) but none of the engine's machinery: no
//!   dataflow, no schema interpretation, no record structs;
//! * `engine` — `millrace run topologies/quickstart.toml --once` in-process with
//!   1 worker, checkpointing every epoch (the default); `engine-nockpt` the
//!   same with checkpoints off (the cost of checkpointing is the ratio of the
//!   two); `engine-nomon` with the monitors off (the cost of monitoring);
//!   `engine-2w` with 2 workers.
//!
//! Every mode runs `R` times (default 3), in interleaved rounds; the run with
//! the median records/s is reported. It prints records/s and peak RSS for each, the ratio to the loop, and checks
//! that the loop and the engine scored the same records with the same AUC.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use millrace::connectors::lake::Compression;
use millrace::connectors::lake::{
    clean_table, part_name, partition_of, rejected_table, scored_table, write_part,
};
use millrace::topology::Topology;
use millrace_operators::clean::Dedup;
use millrace_operators::hash::{line_hash, FxBuild};
use millrace_operators::learn::logistic::ModelSpec;
use millrace_operators::learn::{EvalPartial, LogisticRegression, StandardScaler};

use millrace::gen::CATEGORIES;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = common::arg(&args, "--rows", 1_000_000);
    let repeat: usize = common::arg(&args, "--repeat", 3) as usize;
    let files: u64 = common::arg(&args, "--files", 1);
    match std::env::var("MILLRACE_BENCH_MODE").ok().as_deref() {
        Some(mode) => child(
            mode,
            Path::new(&std::env::var("MILLRACE_BENCH_DIR").unwrap()),
        ),
        None => parent(rows, repeat.max(1), files.max(1)),
    }
}

fn parent(rows: u64, repeat: usize, files: u64) {
    let dir = std::env::temp_dir().join(format!("millrace-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("landing")).unwrap();
    // One file (seed 7), or `files` files of rows/files each (seeds 7, 8, …): files
    // are spread over workers, so several let two workers read in parallel.
    let (mut emitted, mut duplicates) = (0, 0);
    for k in 0..files {
        let opts = millrace::gen::GenOptions {
            rows: rows / files,
            seed: 7 + k,
            ..Default::default()
        };
        let path = if files == 1 {
            dir.join("landing/tx.csv")
        } else {
            dir.join(format!("landing/tx-{k:02}.csv"))
        };
        let truth = millrace::gen::generate(
            &opts,
            std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
        )
        .unwrap();
        emitted += truth.rows_emitted;
        duplicates += truth.duplicates;
        common::settle(&path);
    }
    println!(
        "quickstart bench: {emitted} lines ({rows} rows + {duplicates} duplicates) in {files} file(s), seed 7, 10,000 accounts, 2 cores"
    );
    let modes = [
        "loop",
        "engine",
        "engine-nockpt",
        "engine-nomon",
        "engine-2w",
    ];
    // Rounds of every mode in turn, so slow spells of this shared machine hit
    // all modes alike; each mode's run with the median records/s is reported.
    let mut rounds: Vec<Vec<(&str, serde_json::Value)>> = Vec::new();
    for _ in 0..repeat {
        for mode in modes {
            let _ = std::fs::remove_dir_all(dir.join(format!("lake-{mode}")));
        }
        rounds.push(common::run_modes(
            &modes,
            &[("MILLRACE_BENCH_DIR", dir.to_str().unwrap())],
        ));
    }
    let results: Vec<(&str, serde_json::Value)> = (0..modes.len())
        .map(|m| {
            let mut runs: Vec<&(&str, serde_json::Value)> = rounds.iter().map(|r| &r[m]).collect();
            runs.sort_by(|a, b| {
                let rate = |v: &serde_json::Value| v["records_per_s"].as_f64().unwrap();
                rate(&a.1).total_cmp(&rate(&b.1))
            });
            runs[runs.len() / 2].clone()
        })
        .collect();
    println!("median of {repeat} interleaved rounds per mode");
    let base = results[0].1["records_per_s"].as_f64().unwrap();
    println!(
        "{:<10} {:>10} {:>14} {:>14} {:>12} {:>9}  AUC (scored, labelled)",
        "mode", "lines", "seconds", "records/s", "peak MB", "ratio"
    );
    for (mode, v) in &results {
        let rps = v["records_per_s"].as_f64().unwrap();
        println!(
            "{:<10} {:>10} {:>14.3} {:>14.0} {:>12.1} {:>9.3}  {:.5} ({})",
            mode,
            v["lines"],
            v["seconds"].as_f64().unwrap(),
            rps,
            v["peak_kb"].as_f64().unwrap() / 1024.0,
            rps / base,
            v["auc"].as_f64().unwrap(),
            v["labelled"]
        );
    }
    assert_eq!(
        results[0].1["labelled"], results[1].1["labelled"],
        "loop and engine score the same records"
    );
    let (a, b) = (
        results[0].1["auc"].as_f64().unwrap(),
        results[1].1["auc"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-9,
        "loop and engine (1 worker) agree on AUC: {a} vs {b}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn child(mode: &str, dir: &Path) {
    let started = Instant::now();
    let lake = dir.join(format!("lake-{mode}"));
    let (lines, eval) = match mode {
        "loop" => {
            // Every file, in name order: the order one worker reads them in.
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("landing"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            paths.sort();
            hand_loop(&paths, &lake)
        }
        _ => {
            let mut plan = Topology::load(
                &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml"),
            )
            .unwrap();
            plan.source
                .landing_mut()
                .as_mut()
                .expect("the quickstart reads a landing folder")
                .path = dir.join("landing");
            plan.topology.lake.path = lake;
            plan.topology.checkpoint.enabled = mode != "engine-nockpt";
            if mode == "engine-nomon" {
                plan.topology.monitors.clear();
                plan.watched = None;
            }
            let workers = if mode == "engine-2w" { 2 } else { 1 };
            let s = millrace::runtime::run(
                Arc::new(plan),
                &millrace::runtime::RunOptions {
                    workers,
                    once: true,
                    ..Default::default()
                },
            )
            .unwrap();
            (s.ledger.input, s.eval)
        }
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"mode": mode, "lines": lines, "seconds": secs, "records_per_s": lines as f64 / secs,
            "peak_kb": common::peak_rss_kb(), "auc": eval.auc, "labelled": eval.n})
    );
}

#[derive(Default)]
struct Batch {
    // clean + scored
    time: Vec<i64>,
    account: Vec<String>,
    nums: Vec<[f64; 7]>,
    missing: Vec<u8>,
    category: Vec<u8>,
    label: Vec<i32>,
    line: Vec<u64>,
    score: Vec<f64>,
    // rejected
    rejects: Vec<RejectRow>,
}

/// A row of the `rejected` table: reason, malformed, detail, raw text, event time, line.
type RejectRow = (&'static str, bool, String, String, Option<i64>, u64);

/// The hand-written loop: the quickstart's work without the engine.
fn hand_loop(
    paths: &[PathBuf],
    lake: &Path,
) -> (u64, millrace_operators::learn::eval::EvalMetrics) {
    let plan = Topology::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml"),
    )
    .unwrap();
    let schema = plan.schema.clone();
    let mut line = String::new();
    let mut dedup = Dedup::new(100_000);
    let (mut imp_n, mut imp_m) = ([0u64; 7], [0f64; 7]);
    let mut accounts: HashMap<String, (u64, f64), FxBuild> = HashMap::default();
    let mut scaler = StandardScaler::new(vec![true; 10]);
    let mut model = LogisticRegression::new(&ModelSpec::default(), 10, 10);
    let mut eval = EvalPartial::default();
    let mut batch = Batch::default();
    let (mut lines, mut epoch) = (0u64, 0u64);
    let mut x = [0f64; 10];
    let mut xs = Vec::with_capacity(10);
    let formats = (clean_table(), scored_table(), rejected_table());
    let arrows = (
        (formats.0.arrow_schema)(&schema),
        (formats.1.arrow_schema)(&schema),
        (formats.2.arrow_schema)(&schema),
    );
    for path in paths {
        let source = path.file_name().unwrap().to_string_lossy().to_string();
        let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
        let arrived = std::fs::metadata(path)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        reader.read_line(&mut line).unwrap(); // header
        let (mut lineno, mut in_epoch) = (1u64, 0u64);
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            lineno += 1;
            lines += 1;
            in_epoch += 1;
            let l = line.trim_end_matches(['\n', '\r']);
            if !dedup.is_duplicate(line_hash(l.as_bytes())) {
                let f: Vec<&str> = l.split(',').collect();
                let parsed = (|| {
                    if f.len() != 11 {
                        return Err((
                            "field_count",
                            true,
                            format!("expected 11 fields, found {}", f.len()),
                            None,
                        ));
                    }
                    let t: i64 = f[0].parse().map_err(|_| {
                        (
                            "bad_time",
                            true,
                            format!("`event_time`: cannot read `{}`", f[0]),
                            None,
                        )
                    })?;
                    let mut v = [0f64; 7];
                    let mut missing = 0u8;
                    for j in 0..7 {
                        if f[3 + j].is_empty() {
                            missing |= 1 << j;
                        } else {
                            v[j] = f[3 + j].parse().map_err(|_| {
                                (
                                    "bad_number",
                                    true,
                                    format!("cannot read `{}` as a number", f[3 + j]),
                                    Some(t),
                                )
                            })?;
                        }
                    }
                    let y: f64 = f[10]
                        .parse()
                        .map_err(|_| ("bad_label", true, String::new(), Some(t)))?;
                    if y != 0.0 && y != 1.0 {
                        return Err((
                            "invalid_label",
                            false,
                            format!("label: expected 0 or 1, found `{}`", f[10]),
                            Some(t),
                        ));
                    }
                    if missing & 1 == 0 && v[0] < 0.0 {
                        return Err((
                            "out_of_range",
                            false,
                            format!("`amount` = {} is outside [0, +inf]", v[0]),
                            Some(t),
                        ));
                    }
                    let cat = CATEGORIES.iter().position(|c| *c == f[2]).ok_or((
                        "unknown_category",
                        false,
                        String::new(),
                        Some(t),
                    ))?;
                    Ok((t, v, missing, cat as u8, y))
                })();
                match parsed {
                    Err((reason, malformed, detail, t)) => {
                        batch
                            .rejects
                            .push((reason, malformed, detail, l.to_string(), t, lineno))
                    }
                    Ok((t, mut v, missing, cat, y)) => {
                        for j in 0..7 {
                            if missing & (1 << j) != 0 {
                                v[j] = imp_m[j];
                            } else {
                                imp_n[j] += 1;
                                imp_m[j] += (v[j] - imp_m[j]) / imp_n[j] as f64;
                            }
                        }
                        let st = accounts.entry(f[1].to_string()).or_default();
                        st.0 += 1;
                        st.1 += (v[0] - st.1) / st.0 as f64;
                        x[0] = st.0 as f64;
                        x[1] = st.1;
                        x[2] = if st.1 > 0.0 { v[0] / st.1 } else { 0.0 };
                        x[3] = v[0].ln_1p();
                        x[4..].copy_from_slice(&v[1..]);
                        let sparse = [u32::from(cat)];
                        scaler.transform(&x, &mut xs);
                        let p = model.predict(&xs, &sparse);
                        eval.observe(p, y > 0.5, 0.5);
                        scaler.learn(&x);
                        scaler.transform(&x, &mut xs);
                        model.learn(&xs, &sparse, y);
                        batch.time.push(t);
                        batch.account.push(f[1].to_string());
                        batch.nums.push(v);
                        batch.missing.push(missing);
                        batch.category.push(cat);
                        batch.label.push(y as i32);
                        batch.line.push(lineno);
                        batch.score.push(p);
                    }
                }
            }
            // An epoch ends after 10,000 lines or at the end of a file, as in the engine.
            if in_epoch == 10_000 {
                flush(&mut batch, lake, epoch, arrived, &source, &arrows);
                epoch += 1;
                in_epoch = 0;
            }
        }
        if in_epoch > 0 {
            flush(&mut batch, lake, epoch, arrived, &source, &arrows);
            epoch += 1;
        }
    }
    (lines, eval.metrics())
}

type Arrows = (
    arrow::datatypes::SchemaRef,
    arrow::datatypes::SchemaRef,
    arrow::datatypes::SchemaRef,
);

fn ts(n: usize) -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC")
}

fn lineage(
    rows: &[usize],
    lines: &dyn Fn(usize) -> u64,
    epoch: u64,
    arrived: i64,
    source: &str,
) -> [ArrayRef; 4] {
    let n = rows.len();
    let (mut s, mut l, mut a, mut e) = (
        StringBuilder::new(),
        UInt64Builder::with_capacity(n),
        ts(n),
        UInt64Builder::with_capacity(n),
    );
    for &i in rows {
        s.append_value(source);
        l.append_value(lines(i));
        a.append_value(arrived);
        e.append_value(epoch);
    }
    [
        Arc::new(s.finish()),
        Arc::new(l.finish()),
        Arc::new(a.finish()),
        Arc::new(e.finish()),
    ]
}

fn flush(b: &mut Batch, lake: &Path, epoch: u64, arrived: i64, source: &str, arrows: &Arrows) {
    const NAMES: [&str; 7] = ["amount", "f0", "f1", "f2", "f3", "f4", "f5"];
    let mut parts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, t) in b.time.iter().enumerate() {
        parts.entry(partition_of(*t)).or_default().push(i);
    }
    for (part, rows) in &parts {
        let n = rows.len();
        let (mut time, mut acct, mut cat, mut label, mut score, mut version) = (
            ts(n),
            StringBuilder::new(),
            StringBuilder::new(),
            Int32Builder::with_capacity(n),
            Float64Builder::with_capacity(n),
            UInt64Builder::with_capacity(n),
        );
        let mut nums: Vec<Float64Builder> =
            (0..7).map(|_| Float64Builder::with_capacity(n)).collect();
        let mut imputed = ListBuilder::new(StringBuilder::new());
        for &i in rows {
            time.append_value(b.time[i]);
            acct.append_value(&b.account[i]);
            for (j, nb) in nums.iter_mut().enumerate() {
                nb.append_value(b.nums[i][j]);
                if b.missing[i] & (1 << j) != 0 {
                    imputed.values().append_value(NAMES[j]);
                }
            }
            imputed.append(true);
            cat.append_value(CATEGORIES[b.category[i] as usize]);
            label.append_value(b.label[i]);
            score.append_value(b.score[i]);
            version.append_value(1);
        }
        let (time, acct, label) = (
            Arc::new(time.finish()) as ArrayRef,
            Arc::new(acct.finish()) as ArrayRef,
            Arc::new(label.finish()) as ArrayRef,
        );
        let lin = lineage(rows, &|i| b.line[i], epoch, arrived, source);
        let mut clean: Vec<ArrayRef> = vec![time.clone(), acct.clone()];
        clean.extend(
            nums.into_iter()
                .map(|mut nb| Arc::new(nb.finish()) as ArrayRef),
        );
        clean.extend([
            Arc::new(cat.finish()) as ArrayRef,
            label.clone(),
            Arc::new(imputed.finish()),
        ]);
        clean.extend(lin.iter().cloned());
        let mut scored: Vec<ArrayRef> = vec![
            acct,
            time,
            Arc::new(score.finish()),
            label,
            Arc::new(version.finish()),
        ];
        scored.extend(lin);
        let name = part_name(epoch, 0);
        write_part(
            &lake.join("clean").join(part),
            &name,
            &RecordBatch::try_new(arrows.0.clone(), clean).unwrap(),
            Compression::Snappy,
        )
        .unwrap();
        write_part(
            &lake.join("scored").join(part),
            &name,
            &RecordBatch::try_new(arrows.1.clone(), scored).unwrap(),
            Compression::Snappy,
        )
        .unwrap();
    }
    let mut rparts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in b.rejects.iter().enumerate() {
        rparts
            .entry(partition_of(r.4.unwrap_or(arrived)))
            .or_default()
            .push(i);
    }
    for (part, rows) in &rparts {
        let n = rows.len();
        let (mut reason, mut class, mut detail, mut raw, mut time) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            ts(n),
        );
        for &i in rows {
            let r = &b.rejects[i];
            reason.append_value(r.0);
            class.append_value(if r.1 { "malformed" } else { "invalid" });
            detail.append_value(&r.2);
            raw.append_value(&r.3);
            time.append_option(r.4);
        }
        // `raw_bytes`: the loop keeps no exact bytes (the engine's are null for UTF-8 lines too).
        let mut raw_bytes = arrow::array::BinaryBuilder::new();
        for _ in 0..n {
            raw_bytes.append_null();
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(reason.finish()),
            Arc::new(class.finish()),
            Arc::new(detail.finish()),
            Arc::new(raw.finish()),
            Arc::new(time.finish()),
            Arc::new(raw_bytes.finish()),
        ];
        cols.extend(lineage(rows, &|i| b.rejects[i].5, epoch, arrived, source));
        write_part(
            &lake.join("rejected").join(part),
            &part_name(epoch, 0),
            &RecordBatch::try_new(arrows.2.clone(), cols).unwrap(),
            Compression::Snappy,
        )
        .unwrap();
    }
    *b = Batch::default();
}

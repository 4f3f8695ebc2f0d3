//! Throughput of the same rows at event-time spacings from 10 ms to 1 day.
//!
//! `cargo bench --bench sparse [-- --rows N --repeat R]` (default 5 rounds) generates the
//! reference stream (N rows, default 50,000, seed 7, with faults) four times,
//! identical but for the event-time spacing of its rows — 10 ms, 1 s, 30 min
//! and 1 day — each ending near now, and runs the quickstart topology on each
//! (1 worker, checkpoints every epoch, every monitor on), each in a child
//! process. A monitor's 10-second windows are then 1,000 records each at
//! 10 ms, and one record with 8,639 empty windows after it at 1 day: the bench
//! shows what the windowed computations (monitors, the metrics table, the
//! report's charts) cost when event time is sparse. It prints records/s per
//! spacing and the ratio to the densest, which should stay within 2×.
//!
//! The lake writes the `metrics` table only (alerts go to `alerts.jsonl`):
//! the `clean`, `scored`, `rejected` and `alerts` tables are partitioned by
//! the hour of event time, so at 1 day apart each of their rows is a Parquet
//! file of its own — a cost of the lake's layout, not of windowing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use millrace::connectors::lake::Table;
use millrace::topology::Topology;

/// The spacings, as (name, ms between rows).
const SPACINGS: [(&str, f64); 4] = [
    ("10ms", 10.0),
    ("1s", 1_000.0),
    ("30min", 1_800_000.0),
    ("1day", 86_400_000.0),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows = common::arg(&args, "--rows", 50_000);
    let repeat = common::arg(&args, "--repeat", 5).max(1) as usize;
    match std::env::var("MILLRACE_BENCH_MODE").ok().as_deref() {
        Some(mode) => child(
            mode,
            Path::new(&std::env::var("MILLRACE_BENCH_DIR").unwrap()),
        ),
        None => parent(rows, repeat),
    }
}

fn parent(rows: u64, repeat: usize) {
    let dir = std::env::temp_dir().join(format!("millrace-sparse-{}", std::process::id()));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (name, spacing) in SPACINGS {
        let landing = dir.join(format!("landing-{name}"));
        std::fs::create_dir_all(&landing).unwrap();
        let span = (rows as f64 * spacing) as i64;
        let opts = millrace::gen::GenOptions {
            rows,
            seed: 7,
            rate: 1000.0 / spacing,
            start_ms: now_ms - span - 86_400_000,
            ..Default::default()
        };
        let path = landing.join("tx.csv");
        millrace::gen::generate(
            &opts,
            std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
        )
        .unwrap();
        common::settle(&path);
    }
    // The quickstart, with an event-time range that admits a stream of
    // `rows` days (at 1 day apart it reaches back far).
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies/quickstart.toml"),
    )
    .unwrap();
    let from = r#"event_time = { field = "event_time", format = "epoch_ms" }"#;
    assert!(
        text.contains(from),
        "the quickstart declares its event time"
    );
    let max_age_ms = (rows as i64 + 10) * 86_400_000;
    let text = text.replace(
        from,
        &format!(
            r#"event_time = {{ field = "event_time", format = "epoch_ms", max_age_ms = {max_age_ms} }}"#
        ),
    );
    std::fs::write(dir.join("topology.toml"), text).unwrap();
    println!(
        "sparse bench: {rows} rows (seed 7, with faults) at 4 event-time spacings, quickstart topology, 1 worker, lake table metrics"
    );
    let modes: Vec<&str> = SPACINGS.iter().map(|(n, _)| *n).collect();
    let mut rounds = Vec::new();
    for _ in 0..repeat {
        for mode in &modes {
            let _ = std::fs::remove_dir_all(dir.join(format!("lake-{mode}")));
        }
        rounds.push(common::run_modes(
            &modes,
            &[("MILLRACE_BENCH_DIR", dir.to_str().unwrap())],
        ));
    }
    let rate = |v: &serde_json::Value| v["records_per_s"].as_f64().unwrap();
    let medians: Vec<serde_json::Value> = (0..modes.len())
        .map(|m| {
            let mut runs: Vec<serde_json::Value> = rounds.iter().map(|r| r[m].1.clone()).collect();
            runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
            runs[runs.len() / 2].clone()
        })
        .collect();
    println!("median of {repeat} interleaved rounds per spacing");
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>8} {:>8} {:>10} {:>8}",
        "spacing", "lines", "seconds", "records/s", "ratio", "alerts", "windows", "peak MB"
    );
    let base = rate(&medians[0]);
    for (mode, v) in modes.iter().zip(&medians) {
        println!(
            "{:<8} {:>10} {:>10.3} {:>12.0} {:>8.3} {:>8} {:>10} {:>8.1}",
            mode,
            v["lines"],
            v["seconds"].as_f64().unwrap(),
            rate(v),
            rate(v) / base,
            v["alerts"],
            v["windows"],
            v["peak_kb"].as_f64().unwrap() / 1024.0,
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn child(mode: &str, dir: &Path) {
    let spacing = SPACINGS
        .iter()
        .find(|(n, _)| *n == mode)
        .map(|s| s.1)
        .unwrap();
    let started = Instant::now();
    let mut plan = Topology::load(&dir.join("topology.toml")).unwrap();
    plan.source
        .landing_mut()
        .as_mut()
        .expect("the quickstart reads a landing folder")
        .path = dir.join(format!("landing-{mode}"));
    plan.topology.lake.path = dir.join(format!("lake-{mode}"));
    plan.topology.lake.tables = vec![Table::Metrics];
    let s = millrace::runtime::run(
        Arc::new(plan),
        &millrace::runtime::RunOptions {
            workers: 1,
            once: true,
            ..Default::default()
        },
    )
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let lines = s.ledger.input;
    println!(
        "{}",
        serde_json::json!({"mode": mode, "lines": lines, "seconds": secs,
            "records_per_s": lines as f64 / secs, "alerts": s.alerts.len(),
            "peak_kb": common::peak_rss_kb(),
            "windows": (lines as f64 * spacing / 10_000.0).ceil() as u64})
    );
}

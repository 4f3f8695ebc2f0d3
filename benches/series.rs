//! Throughput of the series topology against a hand-written loop doing the same work.
//!
//! `cargo bench --bench series [-- --series N --repeat R]` writes N series of
//! the generated labelled corpus (`detect::corpus`, seed 3; default 60 series,
//! 1-minute to daily spacing, with gaps and missing readings) as
//! `timestamp,value` CSV files — shifted in time to end a day ago — and
//! scores them two ways, each in a child process, R rounds (default 3),
//! interleaved:
//!
//! - `engine`: `topologies/series_anomaly.toml` as shipped (1 worker,
//!   checkpoint every epoch, the `clean`, `scored`, `rejected` and `metrics`
//!   tables in monthly partitions, the scored CSV per input file);
//! - `loop`: a single-threaded loop that reads each file, parses the time and
//!   the value, scores it with the same detector and writes the same scored
//!   CSV: the practical limit.
//!
//! It prints the median records/s of each, their ratio and the lake's file
//! count per table.

mod common;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use millrace::topology::Topology;
use millrace_operators::detect::corpus;
use millrace_operators::detect::series::SeriesDetector;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match std::env::var("MILLRACE_BENCH_MODE").ok().as_deref() {
        Some(mode) => child(
            mode,
            Path::new(&std::env::var("MILLRACE_BENCH_DIR").unwrap()),
        ),
        None => parent(
            common::arg(&args, "--series", 60) as usize,
            common::arg(&args, "--repeat", 3).max(1) as usize,
        ),
    }
}

/// `YYYY-MM-DD HH:MM:SS` of ms since the epoch (UTC).
fn datetime(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let secs = ms.rem_euclid(86_400_000) / 1000;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn parent(count: usize, repeat: usize) {
    let dir = std::env::temp_dir().join(format!("millrace-series-bench-{}", std::process::id()));
    let landing = dir.join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut rows = 0;
    for s in corpus::corpus(3, count) {
        let shift = now_ms - 86_400_000 - s.timestamps_ms.last().copied().unwrap_or(0);
        let path = landing.join(format!("{}.csv", s.name));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(out, "timestamp,value").unwrap();
        for (t, v) in s.timestamps_ms.iter().zip(&s.values) {
            let v = if v.is_finite() {
                format!("{v:.4}")
            } else {
                String::new()
            };
            writeln!(out, "{},{v}", datetime(t + shift)).unwrap();
        }
        drop(out);
        common::settle(&path);
        rows += s.values.len();
    }
    println!(
        "series bench: {count} series of the labelled corpus (seed 3), {rows} rows, 1 worker; median of {repeat} interleaved rounds"
    );
    let modes = ["engine", "loop"];
    let mut rounds = Vec::new();
    for _ in 0..repeat {
        for m in modes {
            let _ = std::fs::remove_dir_all(dir.join(format!("out-{m}")));
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
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>8} {:>8}",
        "mode", "rows", "seconds", "records/s", "ratio", "peak MB"
    );
    let base = rate(&medians[1]);
    for (mode, v) in modes.iter().zip(&medians) {
        println!(
            "{:<8} {:>10} {:>10.3} {:>12.0} {:>8.3} {:>8.1}",
            mode,
            v["rows"],
            v["seconds"].as_f64().unwrap(),
            rate(v),
            rate(v) / base,
            v["peak_kb"].as_f64().unwrap() / 1024.0
        );
    }
    println!("lake files per table: {}", medians[0]["files"]);
    if std::env::var_os("MILLRACE_BENCH_KEEP").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn child(mode: &str, dir: &Path) {
    let out = dir.join(format!("out-{mode}"));
    let started = Instant::now();
    let (rows, files) = match mode {
        "engine" => {
            let mut plan = Topology::load(
                &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies/series_anomaly.toml"),
            )
            .unwrap();
            plan.source
                .landing_mut()
                .as_mut()
                .expect("the series topology reads a landing folder")
                .path = dir.join("landing");
            plan.topology.lake.path = out.clone();
            let s = millrace::runtime::run(
                Arc::new(plan),
                &millrace::runtime::RunOptions {
                    workers: 1,
                    once: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut files = serde_json::Map::new();
            for table in ["clean", "scored", "rejected", "metrics"] {
                files.insert(table.into(), count_parquet(&out.join(table)).into());
            }
            (s.ledger.input, serde_json::Value::Object(files))
        }
        _ => (
            hand_written(&dir.join("landing"), &out),
            serde_json::Value::Null,
        ),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"mode": mode, "rows": rows, "seconds": secs,
            "records_per_s": rows as f64 / secs, "files": files, "peak_kb": common::peak_rss_kb()})
    );
}

/// The loop: per file, parse `timestamp,value`, score, write `timestamp,value,anomaly_score`.
fn hand_written(landing: &Path, out: &Path) -> u64 {
    std::fs::create_dir_all(out).unwrap();
    let mut names: Vec<PathBuf> = std::fs::read_dir(landing)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut rows = 0;
    for path in names {
        let mut d = SeriesDetector::default();
        let input = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(out.join(path.file_name().unwrap())).unwrap(),
        );
        writeln!(w, "timestamp,value,anomaly_score").unwrap();
        for line in input.lines().skip(1) {
            let line = line.unwrap();
            let (t, v) = line.split_once(',').unwrap();
            let ms = parse_datetime(t);
            let score = v.parse::<f64>().map_or(0.0, |x| d.update(ms, x));
            writeln!(w, "{t},{v},{score}").unwrap();
            rows += 1;
        }
        w.flush().unwrap();
        w.get_ref().sync_all().unwrap();
    }
    rows
}

/// ms of `YYYY-MM-DD HH:MM:SS` (UTC); the bench's own files are well formed.
fn parse_datetime(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400_000 + n(11, 13) * 3_600_000 + n(14, 16) * 60_000 + n(17, 19) * 1000
}

fn count_parquet(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
}

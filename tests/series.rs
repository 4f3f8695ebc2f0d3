//! The univariate series topology: one anomaly score per input row, in input
//! order, computed without look-ahead, written once even across a crash.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn topology() -> String {
    repo()
        .join("topologies/series_anomaly.toml")
        .display()
        .to_string()
}

/// A series of `n` five-minute rows: noise around 50, a spike at `spike`, a
/// level shift from `shift`, and an unreadable value at `bad`.
fn series(n: usize, spike: usize, shift: usize, bad: usize, seed: u64) -> String {
    let mut s = seed | 1;
    let mut noise = || {
        // Sum of uniforms: roughly normal, deterministic.
        (0..12)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64
            })
            .sum::<f64>()
            - 6.0
    };
    let start = 1_396_310_400i64; // 2014-04-01 00:00:00 UTC
    let mut out = String::from("timestamp,value\n");
    for i in 0..n {
        let t = start + i as i64 * 300;
        let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        let (y, m, d) = millrace_operators::parse::civil_from_days(days);
        let stamp = format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        let mut v = 50.0 + 2.0 * noise();
        if i == spike {
            v = 95.0;
        }
        if i >= shift {
            v += 15.0;
        }
        if i == bad {
            out.push_str(&format!("{stamp},n/a\n"));
        } else {
            out.push_str(&format!("{stamp},{v}\n"));
        }
    }
    out
}

/// (timestamp, value, score) rows of an output file, header checked.
fn scores(path: &Path) -> Vec<(String, String, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

fn run(dir: &Path, extra: &[&str]) -> String {
    let t = topology();
    let mut args = vec![
        "run",
        &t,
        "--once",
        "--landing",
        "landing",
        "--lake",
        "lake",
    ];
    args.extend_from_slice(extra);
    millrace(dir, &args)
}

#[test]
fn every_row_gets_a_score_in_input_order_without_look_ahead() {
    let dir = scratch("series");
    let a = series(6000, 3000, 4500, 5000, 1);
    let b = series(3000, 1000, 2000, usize::MAX, 2);
    std::fs::write(dir.join("landing/cpu.csv"), &a).unwrap();
    std::fs::write(dir.join("landing/latency.csv"), &b).unwrap();
    // The first 2,999 rows of `a` alone: their scores must be the same as in the whole file.
    let prefix: String = a.lines().take(3000).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("landing/cpu-prefix.csv"), &prefix).unwrap();
    settle(&dir);
    let out = run(&dir, &["--workers", "2"]);
    assert!(
        out.contains("ledger: in 11999 = clean 11998 + rejected 1 + duplicate 0"),
        "{out}"
    );
    let out_dir = dir.join("lake/series_scores");
    for (name, input) in [("cpu.csv", &a), ("latency.csv", &b)] {
        let rows = scores(&out_dir.join(name));
        let inputs: Vec<&str> = input.lines().skip(1).collect();
        assert_eq!(
            rows.len(),
            inputs.len(),
            "{name}: one output row per input row"
        );
        for (r, i) in rows.iter().zip(&inputs) {
            assert!(
                i.starts_with(&r.0),
                "{name}: rows out of order: {r:?} for {i}"
            );
            assert!((0.0..=1.0).contains(&r.2), "{name}: {r:?}");
        }
    }
    let cpu = scores(&out_dir.join("cpu.csv"));
    // The spike is the top score, and the row after it (back to normal) is low.
    let top = cpu
        .iter()
        .enumerate()
        .max_by(|x, y| x.1 .2.total_cmp(&y.1 .2))
        .unwrap()
        .0;
    assert_eq!(top, 3000, "{:?}", cpu[top]);
    assert!(cpu[3001].2 < 0.5, "{:?}", cpu[3001]);
    // The level shift raises the scores right after it.
    assert!(
        cpu[4500..4510].iter().any(|r| r.2 > 0.5),
        "{:?}",
        &cpu[4495..4510]
    );
    // Quiet before the spike (after warm-up).
    let noisy = cpu[100..3000].iter().filter(|r| r.2 > 0.5).count();
    assert!(noisy <= 3, "{noisy} false alarms");
    // The unreadable row keeps its place, scored 0; its reason is in `rejected`.
    assert_eq!((cpu[5000].1.as_str(), cpu[5000].2), ("", 0.0));
    assert_eq!(rows(&dir.join("lake"), "rejected"), 1);
    // No look-ahead.
    let p = scores(&out_dir.join("cpu-prefix.csv"));
    assert_eq!(p[..], cpu[..2999]);
}

#[test]
fn a_crash_mid_run_writes_every_row_once() {
    let dir = scratch("series-crash");
    std::fs::write(dir.join("landing/a.csv"), series(9000, 7000, 8000, 100, 5)).unwrap();
    std::fs::write(dir.join("landing/b.csv"), series(7000, 3000, 5000, 200, 6)).unwrap();
    settle(&dir);
    // Small epochs, so the crash lands mid-file.
    let small = std::fs::read_to_string(topology())
        .unwrap()
        .replace("records_per_epoch = 10000", "records_per_epoch = 1000");
    std::fs::write(dir.join("series.toml"), small).unwrap();
    let args = |lake: &str| {
        [
            "run",
            "series.toml",
            "--once",
            "--landing",
            "landing",
            "--lake",
            lake,
        ]
        .map(String::from)
        .to_vec()
    };
    let a = args("lake-a");
    millrace(&dir, &a.iter().map(String::as_str).collect::<Vec<_>>());
    for point in [
        "before_checkpoint",
        "checkpoint_before_rename",
        "before_publish",
    ] {
        let lake = format!("lake-{point}");
        let crashed = Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args(args(&lake))
            .current_dir(&dir)
            .env("FAILPOINTS", format!("{point}=6*off->return"))
            .output()
            .unwrap();
        assert!(!crashed.status.success(), "{point}: should have crashed");
        let out = millrace(
            &dir,
            &args(&lake).iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(
            out.contains("resumed from the checkpoint"),
            "{point}: {out}"
        );
        for f in ["a.csv", "b.csv"] {
            assert_eq!(
                std::fs::read_to_string(dir.join(&lake).join("series_scores").join(f)).unwrap(),
                std::fs::read_to_string(dir.join("lake-a/series_scores").join(f)).unwrap(),
                "{point}: {f} differs from the uninterrupted run"
            );
        }
    }
}

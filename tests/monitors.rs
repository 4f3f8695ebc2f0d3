//! Monitors and alerts: the quickstart's rules on generated streams with known
//! faults (the webhook and email channels are tested in `channels.rs`).

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Alerts in the lake's JSON-lines file: (rule, state, window start, window end).
fn alerts(lake: &Path) -> Vec<(String, String, i64, i64)> {
    let text = std::fs::read_to_string(lake.join("alerts.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["rule_id"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
                v["window_start_ms"].as_i64().unwrap(),
                v["window_end_ms"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn first(alerts: &[(String, String, i64, i64)], rule: &str, state: &str) -> Option<(i64, i64)> {
    alerts
        .iter()
        .find(|a| a.0 == rule && a.1 == state)
        .map(|a| (a.2, a.3))
}

#[test]
fn the_quickstart_alerts_on_the_spike_the_gap_and_the_drift_and_resolves() {
    let dir = scratch("monitors");
    let truth = gen(&dir, "tx.csv", 300_000, 7, &[]);
    settle(&dir);
    let out = millrace(
        &dir,
        &[
            "run",
            &quickstart(),
            "--once",
            "--landing",
            "landing",
            "--lake",
            "lake",
        ],
    );
    let lake = dir.join("lake");
    let all = alerts(&lake);
    let window = 10_000;
    // The volume/amount spike: an alert whose window overlaps the spike, firing within two windows of it.
    let spike = truth["spike_ms"][0].as_i64().unwrap();
    let fired = first(&all, "amount_spike", "firing").or(first(&all, "volume", "firing"));
    let (start, _) = fired.unwrap_or_else(|| panic!("no spike alert:\n{out}"));
    assert!(
        (spike - window..=spike + 2 * window).contains(&start),
        "spike at {spike}, alert window at {start}:\n{out}"
    );
    assert!(
        first(&all, "amount_spike", "resolved").is_some()
            || first(&all, "volume", "resolved").is_some(),
        "{out}"
    );
    // The silent gap: stale input while it lasts, resolved after it.
    let (gap_start, gap_end) = (
        truth["gap_ms"][0].as_i64().unwrap(),
        truth["gap_ms"][1].as_i64().unwrap(),
    );
    let (s, _) = first(&all, "stale_input", "firing")
        .unwrap_or_else(|| panic!("no staleness alert:\n{out}"));
    assert!(
        (gap_start..=gap_end).contains(&s),
        "gap {gap_start}..{gap_end}, alert at {s}:\n{out}"
    );
    let (r, _) = first(&all, "stale_input", "resolved").expect("the staleness alert resolves");
    assert!(r >= gap_end && r <= gap_end + 5 * window, "{out}");
    // The concept drift: the model ranks labels worse. It fires within two
    // windows of the drift point, and resolves once the model has re-learnt.
    let drift = truth["drift_at_ms"].as_i64().unwrap();
    let d = all
        .iter()
        .filter(|a| a.0 == "model_error" && a.1 == "firing")
        .map(|a| a.2)
        .find(|s| *s >= drift)
        .unwrap_or_else(|| panic!("no concept drift alert after the drift at {drift}:\n{out}"));
    assert!(
        d <= drift + 2 * window,
        "drift at {drift}, alert at {d}:\n{out}"
    );
    assert!(
        all.iter()
            .any(|a| a.0 == "model_error" && a.1 == "resolved" && a.2 > d),
        "{out}"
    );
    // The lake's alerts table holds the same alerts.
    assert_eq!(rows(&lake, "alerts"), all.len());
    assert!(out.contains("alerts:"), "{out}");
}

/// Alerts in the lake's JSON-lines file with their messages: (rule, state, window start, message).
fn messages(lake: &Path) -> Vec<(String, String, i64, String)> {
    let text = std::fs::read_to_string(lake.join("alerts.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["rule_id"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
                v["window_start_ms"].as_i64().unwrap(),
                v["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The first firing alert of any of `rules` whose window starts in `from..=to`.
fn fired_in(
    all: &[(String, String, i64, String)],
    rules: &[&str],
    from: i64,
    to: i64,
) -> Option<(String, i64, String)> {
    all.iter()
        .find(|a| rules.contains(&a.0.as_str()) && a.1 == "firing" && (from..=to).contains(&a.2))
        .map(|a| (a.0.clone(), a.2, a.3.clone()))
}

/// An alert as [`messages`] reads it: rule, state, epoch, message.
type AlertRow = (String, String, i64, String);

/// Runs the quickstart on `rows` generated rows of `seed` (with `extra`
/// generator flags); returns the truth, the alerts and the run's output.
fn quickstart_alerts(
    name: &str,
    rows: u64,
    seed: u64,
    extra: &[&str],
) -> (serde_json::Value, Vec<AlertRow>, String) {
    let dir = scratch(name);
    let truth = gen(&dir, "tx.csv", rows, seed, extra);
    settle(&dir);
    let out = run_once(&dir, &quickstart(), "lake", &[]);
    let all = messages(&dir.join("lake"));
    (truth, all, out)
}

#[test]
fn every_spike_gap_and_drift_is_alerted_within_two_windows_at_200k_and_1m_rows() {
    // The generator's faults: a volume ×5 / amount ×20 spike at 30% of the
    // rows, a 60 s silent gap at 45%, the concept drift at 60%. At 200,000
    // rows the spike comes after 7 windows, fewer than a full baseline (10):
    // the spike rules still fire in the spike's window and say so.
    let window = 10_000;
    for (rows, seed) in [
        (200_000, 31),
        (200_000, 32),
        (200_000, 33),
        (1_000_000, 34),
        (1_000_000, 35),
    ] {
        let (truth, all, out) =
            quickstart_alerts(&format!("monitors-{rows}-{seed}"), rows, seed, &[]);
        let at = |k: &str, i: usize| truth[k][i].as_i64().unwrap();
        let context = || format!("{rows} rows, seed {seed}:\n{all:#?}\n{out}");
        let spike = at("spike_ms", 0);
        for rule in ["volume", "amount_spike"] {
            let (_, _, message) = fired_in(&all, &[rule], spike - window, spike + 2 * window)
                .unwrap_or_else(|| {
                    panic!("no {rule} alert for the spike at {spike}: {}", context())
                });
            if rows == 200_000 {
                assert!(message.contains("a rise; baseline: "), "{message}");
            }
        }
        let gap = at("gap_ms", 0);
        let (rule, _, message) = fired_in(
            &all,
            &["volume", "stale_input"],
            gap - window,
            gap + 2 * window,
        )
        .unwrap_or_else(|| panic!("no alert for the gap at {gap}: {}", context()));
        assert!(
            rule == "stale_input" || message.contains("a fall"),
            "{message}"
        );
        // The staleness rule itself fires once the gap passes its 30 s threshold.
        assert!(
            fired_in(&all, &["stale_input"], gap, at("gap_ms", 1)).is_some(),
            "{}",
            context()
        );
        let drift = truth["drift_at_ms"].as_i64().unwrap();
        let (_, _, message) = fired_in(&all, &["model_error"], drift, drift + 2 * window)
            .unwrap_or_else(|| {
                panic!(
                    "no concept drift alert for the drift at {drift}: {}",
                    context()
                )
            });
        assert!(message.starts_with("concept drift"), "{message}");
    }
}

#[test]
fn streams_without_faults_raise_only_the_concept_drift_and_without_drift_nothing() {
    // `--no-faults` removes every injected fault but keeps the concept drift
    // (the reference generator's meaning); `--drift-at 2` moves the drift past
    // the end. With the drift, only the concept-drift rule fires, after it;
    // without, nothing fires at all.
    let window = 10_000;
    for (rows, seed) in [(200_000, 36), (200_000, 37), (1_000_000, 38)] {
        let (truth, all, out) = quickstart_alerts(
            &format!("monitors-drift-{rows}-{seed}"),
            rows,
            seed,
            &["--no-faults"],
        );
        let drift = truth["drift_at_ms"].as_i64().unwrap();
        assert!(
            all.iter().all(|a| a.0 == "model_error" && a.2 >= drift),
            "{rows} rows, seed {seed}: {all:#?}\n{out}"
        );
        assert!(
            fired_in(&all, &["model_error"], drift, drift + 2 * window).is_some(),
            "{rows} rows, seed {seed}: {all:#?}\n{out}"
        );
    }
    for (rows, seed) in [(200_000, 39), (1_000_000, 40), (1_000_000, 41)] {
        let (_, all, out) = quickstart_alerts(
            &format!("monitors-quiet-{rows}-{seed}"),
            rows,
            seed,
            &["--no-faults", "--drift-at", "2"],
        );
        assert!(
            all.is_empty(),
            "{rows} rows, seed {seed}: false alarms: {all:#?}\n{out}"
        );
    }
}

#[test]
fn a_live_job_whose_input_stops_raises_idle_source_and_resolves_when_it_resumes() {
    let dir = scratch("monitors-idle");
    gen(&dir, "a.csv", 20_000, 3, &[]);
    settle(&dir);
    let topology = std::fs::read_to_string(quickstart()).unwrap()
        + "\n[[monitors]]\nid = \"idle\"\nkind = \"idle_source\"\nthreshold = 1500\nresolve_after = 1\n";
    std::fs::write(dir.join("idle.toml"), topology).unwrap();
    let mut job = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["run", "idle.toml", "--landing", "landing", "--lake", "lake"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |state: &str| {
        let start = Instant::now();
        loop {
            let all = alerts(&dir.join("lake"));
            if all.iter().any(|a| a.0 == "idle" && a.1 == state) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "no idle {state} alert: {all:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The first file is read, then nothing comes: the rule fires (processing time, no epoch needed).
    wait_for("firing");
    // More input: it resolves.
    gen(&dir, "b.csv", 5_000, 4, &[]);
    settle(&dir);
    wait_for("resolved");
    std::process::Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status()
        .unwrap();
    let mut out = String::new();
    job.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(job.wait().unwrap().success(), "{out}");
    // The lake's table has them too, committed with the epochs that followed.
    let table = counts(&dir.join("lake"), "alerts", "rule_id");
    assert!(
        table.get("idle").is_some_and(|n| *n >= 1),
        "{table:?}\n{out}"
    );
}

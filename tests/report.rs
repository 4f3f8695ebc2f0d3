//! The report page, the live view and the Grafana board: content checked
//! against the lake, pages opened in a real headless browser (Chromium;
//! `.ci/test` installs it and sets `MILLRACE_CHROMIUM`), counters scraped from
//! `/metrics` while a job runs and compared with its ledger.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

/// Sum of a metric's samples in a Prometheus exposition (all label sets).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn artifacts() -> PathBuf {
    let d = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Opens `url` in headless Chromium: the DOM after rendering, and a screenshot saved as an artifact.
fn browse(url: &str, shot: &str) -> String {
    let chromium = std::env::var("MILLRACE_CHROMIUM").unwrap_or_else(|_| {
        panic!("MILLRACE_CHROMIUM is not set: run the suite with .ci/test, which installs Chromium")
    });
    let profile =
        std::env::temp_dir().join(format!("millrace-chromium-{}-{shot}", std::process::id()));
    let base = |extra: &[&str]| {
        let mut c = Command::new(&chromium);
        c.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url);
        c.output().expect("chromium runs")
    };
    let dom = base(&["--dump-dom", "--virtual-time-budget=3000"]);
    let stderr = String::from_utf8_lossy(&dom.stderr).to_string();
    assert!(dom.status.success(), "chromium failed on {url}: {stderr}");
    // No page errors: nothing logged from the page's console, no failed loads.
    for bad in ["CONSOLE", "Uncaught", "net::ERR_"] {
        let hits: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(bad) && !l.contains("dbus"))
            .collect();
        assert!(hits.is_empty(), "{url}: {hits:?}");
    }
    let png = artifacts().join(format!("{shot}.png"));
    let _ = std::fs::remove_file(&png);
    let s = base(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1600,2400",
    ]);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 30_000,
        "{url}: a {size}-byte screenshot is a blank page"
    );
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&dom.stdout).to_string()
}

/// The `data-name`/`data-value` pairs of a bar chart in the page.
fn bars(html: &str, chart: &str) -> BTreeMap<String, f64> {
    let start = html
        .find(&format!(r#"<svg id="{chart}""#))
        .unwrap_or_else(|| panic!("no chart {chart}"));
    let svg = &html[start..start + html[start..].find("</svg>").unwrap()];
    svg.split(r#"class="bar" data-name=""#)
        .skip(1)
        .map(|s| {
            let (name, rest) = s.split_once('"').unwrap();
            let v = rest
                .split("data-value=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (name.to_string(), v.parse().unwrap())
        })
        .collect()
}

const CHARTS: [&str; 9] = [
    "records-per-minute",
    "ledger",
    "rejects",
    "quality",
    "log-loss",
    "score-drift",
    "alerts",
    "latency",
    "top-keys",
];

#[test]
fn the_report_shows_the_lake_and_renders_in_a_browser() {
    let dir = scratch("report");
    gen(&dir, "tx.csv", 200_000, 7, &[]);
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
    // The --once run wrote the quickstart's report.
    assert!(out.contains("report: lake/report.html"), "{out}");
    let written = std::fs::read_to_string(dir.join("lake/report.html")).unwrap();
    let cli = millrace(&dir, &["report", "lake", "-o", "r.html", "--title", "t"]);
    assert!(cli.contains("report: r.html"));
    let html = std::fs::read_to_string(dir.join("r.html")).unwrap();
    assert!(html.contains("<title>t</title>"), "--title names the page");
    for id in CHARTS {
        assert!(
            html.contains(&format!(r#"<svg id="{id}""#)),
            "chart {id} missing"
        );
        assert!(
            written.contains(&format!(r#"<svg id="{id}""#)),
            "chart {id} missing from the run's report"
        );
    }
    // The numbers are the lake's.
    let lake = dir.join("lake");
    let kpi = |id: &str| -> u64 {
        let s = html.split(&format!(r#"id="kpi-{id}">"#)).nth(1).unwrap();
        s.split('<').next().unwrap().parse().unwrap()
    };
    assert_eq!(kpi("input"), metrics_sum(&lake, "input"));
    assert_eq!(kpi("clean") as usize, rows(&lake, "scored"));
    assert_eq!(kpi("rejected") as usize, rows(&lake, "rejected"));
    assert_eq!(kpi("alerts") as usize, rows(&lake, "alerts"));
    let reasons = bars(&html, "rejects");
    let by_reason = counts(&lake, "rejected", "reason");
    assert_eq!(
        reasons.len(),
        by_reason.len(),
        "{reasons:?} vs {by_reason:?}"
    );
    for (r, n) in &by_reason {
        assert_eq!(reasons[r], *n as f64, "{r}");
    }
    let top = bars(&html, "top-keys");
    assert_eq!(top.len(), 10);
    let keys = counts(&lake, "scored", "key");
    let mut want: Vec<u64> = keys.values().copied().collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    let mut got: Vec<u64> = top.values().map(|v| *v as u64).collect();
    got.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(got, want[..10]);
    for series in [
        "accuracy",
        "ROC AUC",
        "clean",
        "rejected",
        "duplicate",
        "p50",
        "p99",
    ] {
        assert!(
            html.contains(&format!(r#"data-name="{series}""#)),
            "series {series}"
        );
    }
    assert!(html.contains("class=\"mark\""), "model versions are marked");
    for rule in counts(&lake, "alerts", "rule_id").keys() {
        assert!(
            html.contains(&format!(r#"data-rule="{rule}"#)),
            "alert rule {rule} on the timeline"
        );
    }
    assert!(
        html.contains("(PSI "),
        "drift measures in the score chart's title"
    );
    // In a real browser: every chart is in the rendered DOM, nothing fails.
    let dom = browse(
        &format!("file://{}", dir.join("r.html").display()),
        "report",
    );
    for id in CHARTS {
        assert!(dom.contains(&format!(r#"id="{id}""#)), "{id} not rendered");
    }
}

#[test]
fn the_live_view_serves_metrics_that_agree_with_the_ledger() {
    let dir = scratch("live");
    let truth = gen(&dir, "tx.csv", 150_000, 9, &[]);
    settle(&dir);
    let addr = free_addr();
    let mut job = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "run",
            &quickstart(),
            "--landing",
            "landing",
            "--lake",
            "lake",
            "--http-addr",
            &addr,
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let input = truth_u64(&truth, "rows_emitted") as f64;
    let start = Instant::now();
    let mut scraped = String::new();
    // The job keeps polling the folder: wait until the file is committed.
    while metric(&scraped, "millrace_epochs_committed_total") < 1.0
        || metric(&scraped, "millrace_records_clean_total")
            + metric(&scraped, "millrace_records_rejected_total")
            + metric(&scraped, "millrace_records_duplicate_total")
            < input
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job did not commit the file:\n{scraped}"
        );
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let _ = write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            scraped.clear();
            let _ = s.read_to_string(&mut scraped);
        }
    }
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_string()));
    let (status, dataflow) = get(&addr, "/dataflow");
    assert_eq!(status, 200);
    assert!(
        dataflow.contains(r#"<svg id="dataflow""#) && dataflow.contains(r#"data-step="score""#),
        "{dataflow}"
    );
    let (status, page) = get(&addr, "/");
    assert_eq!(status, 200);
    for id in CHARTS {
        assert!(
            page.contains(&format!(r#"<svg id="{id}""#)),
            "live chart {id}"
        );
    }
    assert_eq!(get(&addr, "/nope").0, 404);
    // `millrace tap`: sampled records leaving a step of the running job.
    let tapped = millrace(
        &dir,
        &[
            "tap",
            &quickstart(),
            "score",
            "--addr",
            &addr,
            "--limit",
            "5",
        ],
    );
    let lines: Vec<serde_json::Value> = tapped
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{tapped}");
    assert!(
        lines.iter().all(|v| v["score"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p))
            && v["record"]["key"].is_string()),
        "{tapped}"
    );
    let rejected = millrace(
        &dir,
        &[
            "tap",
            &quickstart(),
            "rejected",
            "--addr",
            &addr,
            "--limit",
            "2",
        ],
    );
    assert!(
        rejected.lines().all(|l| l.contains("\"reason\"")),
        "{rejected}"
    );
    let bad = millrace_raw(&dir, &["tap", &quickstart(), "nope", "--addr", &addr]);
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("no step `nope`")
    );
    let dom = browse(&format!("http://{addr}/"), "live");
    assert!(dom.contains(r#"id="quality""#));
    let (_, metrics) = get(&addr, "/metrics");
    // Stop the job (Ctrl-C) and compare its final ledger with the counters.
    Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status()
        .unwrap();
    let mut out = String::new();
    job.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(job.wait().unwrap().success(), "{out}");
    let ledger = out
        .lines()
        .find(|l| l.starts_with("ledger:"))
        .unwrap_or_else(|| panic!("{out}"));
    let n = |key: &str| -> f64 {
        ledger
            .split(key)
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(metric(&metrics, "millrace_records_in_total"), n("in "));
    assert_eq!(
        metric(&metrics, "millrace_records_clean_total"),
        n("clean ")
    );
    assert_eq!(
        metric(&metrics, "millrace_records_rejected_total"),
        n("rejected ")
    );
    assert_eq!(
        metric(&metrics, "millrace_records_duplicate_total"),
        n("duplicate ")
    );
    assert!(metric(&metrics, "millrace_end_to_end_latency_seconds_count") > 0.0);
    assert!(metric(&metrics, "millrace_model_auc_ratio") > 0.5);
    assert!(
        metric(&metrics, "millrace_state_bytes") > 0.0,
        "state sizes are exported"
    );
}

#[test]
fn the_grafana_board_is_generated_from_the_exported_names() {
    let board = millrace::core::metrics::grafana_dashboard();
    let shipped = std::fs::read_to_string(repo().join("grafana/millrace.json")).unwrap();
    assert_eq!(shipped.trim(), board.trim(), "grafana/millrace.json is stale: regenerate it with `millrace grafana > grafana/millrace.json`");
    let v: serde_json::Value = serde_json::from_str(&board).unwrap();
    let exported: Vec<&str> = millrace::core::metrics::ALL.iter().map(|m| m.0).collect();
    let mut used = 0;
    for p in v["panels"].as_array().unwrap() {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("millrace_") {
                    let base = word.strip_suffix("_bucket").unwrap_or(word);
                    assert!(
                        exported.contains(&base),
                        "`{word}` in `{expr}` is not a metric millrace exports"
                    );
                    used += 1;
                }
            }
        }
    }
    assert!(used >= 15, "{used}");
}

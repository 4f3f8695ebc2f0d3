//! The live view locked down: real HTTP over TCP to a running job.
//!
//! - `POST /promote` needs the bearer token (401 without or with a wrong one,
//!   202 with it, and the challenger is then promoted at the next epoch; 403
//!   when no token is configured); `/tap` needs it when there is one.
//! - A forged `Host` (DNS rebinding) is refused on every path, a foreign
//!   `Origin` on the protected ones even with the token; no CORS headers.
//! - Idle and trickling clients do not hold up `/healthz`, and are dropped.
//! - A huge request head or body is refused without the job's memory growing.
//! - The token appears nowhere: the job's output, `validate`, alerts.jsonl,
//!   any file of the lake, `/metrics`.
//!
//! Every wait is for a state (a committed file, an answer, a closed socket),
//! under a generous deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const TOKEN_ENV: &str = "MILLRACE_TEST_LIVE_TOKEN";
const TOKEN: &str = "t0k3n-4a7c1e9f2b8d6035-live-view";

/// The champion/challenger topology with no promotion rule (only a request
/// promotes), and `runtime` lines added to its `[runtime]`.
fn challenger_topology(dir: &Path, runtime: &str) -> String {
    let mut text =
        std::fs::read_to_string(repo().join("topologies/champion_challenger.toml")).unwrap();
    let at = text.find("\n[promotion]").unwrap();
    let end = at + text[at..].find("\n[lake]").unwrap();
    text.replace_range(at..end, "");
    assert!(text.trim_end().ends_with("max_epochs_in_flight = 4"));
    text.push_str(runtime);
    text.push('\n');
    let n = std::fs::read_dir(dir).unwrap().count();
    let path = dir.join(format!("cc-{n}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Files of the landing folder the job has committed.
fn files_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("lake/_manifest/landing.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn wait_files(dir: &Path, n: usize, job: &LiveJob) {
    let start = Instant::now();
    while files_done(dir) < n {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "file {n} was not committed:\n{}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> (usize, Vec<String>) {
    let (mut seen, mut hits) = (0, Vec::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                seen += 1;
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    (seen, hits)
}

#[test]
fn promote_needs_the_token_and_then_promotes_at_the_next_epoch_and_the_token_never_shows() {
    let dir = scratch("live-promote");
    let t = challenger_topology(
        &dir,
        &format!("http_token_env = \"{TOKEN_ENV}\"\nhttp_allowed_hosts = [\"millrace.test\"]"),
    );
    let env = [(TOKEN_ENV, TOKEN)];
    gen(&dir, "tx-0001.csv", 30_000, 9, &[]);
    settle(&dir);
    // Debug logs on: whatever the job logs, the token must not be in it.
    let job = LiveJob::start(
        &dir,
        &[&t, "--lake", "lake"],
        &[(TOKEN_ENV, TOKEN), ("MILLRACE_LOG", "debug")],
    );
    let addr = job.addr.clone();
    wait_files(&dir, 1, &job);

    // Refused: no token, a wrong one, the right one from a foreign page.
    let (status, head, body) = http_request(&addr, "POST", "/promote", &[]);
    assert_eq!(status, 401, "{head}\n{body}");
    assert!(head
        .to_ascii_lowercase()
        .contains("www-authenticate: bearer"));
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let wrong = bearer("t0k3n-4a7c1e9f2b8d6035-live-viex");
    let (status, _, body) = http_request(&addr, "POST", "/promote", &[("Authorization", &wrong)]);
    assert_eq!(status, 401, "{body}");
    let right = bearer(TOKEN);
    let (status, _, body) = http_request(
        &addr,
        "POST",
        "/promote",
        &[
            ("Authorization", &right),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
    );
    assert_eq!(status, 403, "a foreign origin, even with the token: {body}");
    // The command without the token: refused, and it says why.
    let no_token = millrace_env_raw(
        &dir,
        &["models", "promote-challenger", "--addr", &addr],
        &env,
    );
    assert!(!no_token.status.success());
    let said = String::from_utf8_lossy(&no_token.stderr);
    assert!(
        said.contains("401") && said.contains("--http-token-env"),
        "{said}"
    );
    // `/tap` returns raw records: the token here too.
    let (status, _, _) = http_request(&addr, "GET", "/tap/clean", &[]);
    assert_eq!(status, 401);
    let (status, _, body) = http_request(&addr, "GET", "/tap/clean", &[("Authorization", &right)]);
    assert_eq!(status, 200);
    assert!(body.lines().count() > 0, "samples of the first file");
    // `millrace tap` takes the topology's http_token_env.
    let tapped = millrace_env(
        &dir,
        &["tap", &t, "clean", "--addr", &addr, "--limit", "3"],
        &env,
    );
    assert_eq!(tapped.lines().count(), 3, "{tapped}");
    // An allowed host from the topology is answered.
    let (status, _, _) = http_request(
        &addr,
        "GET",
        "/healthz",
        &[(
            "Host",
            &format!("millrace.test:{}", addr.rsplit(':').next().unwrap()),
        )],
    );
    assert_eq!(status, 200);

    // None of the refused requests promoted anything: this file's epochs run with the champion.
    gen(&dir, "tx-0002.csv", 30_000, 10, &[]);
    settle(&dir);
    wait_files(&dir, 2, &job);

    // The right token: accepted, and the next file's first epoch swaps the two.
    let said = millrace_env(
        &dir,
        &[
            "models",
            "promote-challenger",
            "--addr",
            &addr,
            "--http-token-env",
            TOKEN_ENV,
        ],
        &env,
    );
    assert!(said.contains("next epoch"), "{said}");
    gen(&dir, "tx-0003.csv", 30_000, 11, &[]);
    settle(&dir);
    wait_files(&dir, 3, &job);
    let (status, _, metrics) = http_request(&addr, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("millrace_records_clean_total"),
        "{metrics}"
    );
    let (ok, out, err) = job.stop();
    assert!(ok, "{out}\n{err}");

    // Exactly one promotion (the refused requests would have made one during
    // the second file), published as the registry's champion.
    let promotions: Vec<&str> = out.lines().filter(|l| l.starts_with("promoted:")).collect();
    assert_eq!(promotions.len(), 1, "{out}");
    let version: u64 = promotions[0]
        .rsplit("version ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let registry: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("lake/models/champion_challenger/registry.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(registry["pinned"].as_u64(), Some(version), "{registry}");
    assert!(
        err.contains("Promotion of the challenger requested over HTTP."),
        "the job's log is captured: {err}"
    );

    // The token, nowhere.
    let validate = millrace_env(&dir, &["validate", &t], &env);
    let lake = dir.join("lake");
    let alerts = std::fs::read_to_string(lake.join("alerts.jsonl")).unwrap_or_default();
    for (what, text) in [
        ("stdout", &out),
        ("stderr", &err),
        ("validate", &validate),
        ("alerts.jsonl", &alerts),
        ("/metrics", &metrics),
        ("tap", &tapped),
    ] {
        assert!(!text.contains(TOKEN), "the token is in {what}");
    }
    let (seen, hits) = files_containing(&lake, TOKEN.as_bytes());
    assert!(seen > 20, "the lake has its files: {seen}");
    assert!(hits.is_empty(), "the token is in {hits:?}");
}

#[test]
fn without_a_token_promote_is_disabled_and_forged_hosts_and_origins_are_refused() {
    let dir = scratch("live-hosts");
    let t = challenger_topology(&dir, "");
    let job = LiveJob::start(&dir, &[&t, "--lake", "lake"], &[]);
    let addr = job.addr.clone();
    let port = addr.rsplit(':').next().unwrap().to_string();

    // No token configured: POST /promote is off, whatever is sent, and the answer says how to enable it.
    for auth in [None, Some(bearer(TOKEN))] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (status, _, body) = http_request(&addr, "POST", "/promote", &headers);
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("http_token_env"), "{body}");
    }
    let cli = millrace_raw(&dir, &["models", "promote-challenger", "--addr", &addr]);
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("403"));
    // `/tap` is open without a token (on loopback).
    assert_eq!(http_request(&addr, "GET", "/tap/clean", &[]).0, 200);

    // DNS rebinding: a page on attacker.example resolving to 127.0.0.1.
    for path in [
        "/tap/clean",
        "/",
        "/metrics",
        "/healthz",
        "/dataflow",
        "/nope",
    ] {
        for host in ["attacker.example", &format!("attacker.example:{port}")] {
            let (status, _, body) = http_request(&addr, "GET", path, &[("Host", host)]);
            assert_eq!(status, 421, "{path} for {host}: {body}");
            assert!(body.contains("http_allowed_hosts"), "{body}");
            assert!(!body.contains("attacker"), "the forged name is not echoed");
        }
    }
    let (status, _, _) = http_request(&addr, "POST", "/promote", &[("Host", "attacker.example")]);
    assert_eq!(status, 421);
    // An absolute request URI naming another host is refused too.
    let (status, _, _) = http_exchange(
        &addr,
        format!("GET http://attacker.example/tap/clean HTTP/1.1\r\nHost: {addr}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 421);
    // No Host at all (HTTP/1.0).
    let (status, _, _) = http_exchange(&addr, b"GET /tap/clean HTTP/1.0\r\n\r\n");
    assert_eq!(status, 400);
    // Our own names are answered.
    for host in [
        addr.clone(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(
            http_request(&addr, "GET", "/healthz", &[("Host", &host)]).0,
            200,
            "{host}"
        );
    }

    // A foreign page's request to a protected endpoint: refused; from our own origin: served.
    let (status, _, _) = http_request(
        &addr,
        "GET",
        "/tap/clean",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(status, 403);
    let (status, _, _) = http_request(&addr, "GET", "/tap/clean", &[("Origin", "null")]);
    assert_eq!(status, 403);
    let own = format!("http://{addr}");
    assert_eq!(
        http_request(&addr, "GET", "/tap/clean", &[("Origin", &own)]).0,
        200
    );
    // No CORS, anywhere.
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/tap/clean"),
        ("POST", "/promote"),
        ("OPTIONS", "/promote"),
    ] {
        let (_, head, _) = http_request(&addr, method, path, &[("Origin", "http://evil.example")]);
        assert!(
            !head.to_ascii_lowercase().contains("access-control-"),
            "{method} {path}: {head}"
        );
    }
    let (ok, out, err) = job.stop();
    assert!(ok, "{out}\n{err}");
}

#[test]
fn idle_and_trickling_clients_do_not_hold_up_healthz_and_are_dropped() {
    let dir = scratch("live-slow");
    let job = LiveJob::start(&dir, &[&quickstart(), "--lake", "lake"], &[]);
    let addr = job.addr.clone();
    // Four connections that never send a byte.
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // One that sends its request a byte at a time (bounded: at most 60 s).
    let slow_addr = addr.clone();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&slow_addr).unwrap();
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {slow_addr}\r\nX-Slow: {}",
            "a".repeat(600)
        );
        for (i, b) in request.bytes().enumerate() {
            if s.write_all(&[b]).is_err() {
                return i; // the server closed it
            }
            if i == 8 {
                started_tx.send(()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        request.len()
    });
    started_rx.recv().unwrap();

    // While all of them are held open, /healthz answers.
    let asked = Instant::now();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let took = asked.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    // … and they still were open: nothing waited for them to go.
    for c in &idle {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match (&*c).read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!(
                "an idle connection was closed before /healthz answered ({took:?}): {other:?}"
            ),
        }
        c.set_nonblocking(false).unwrap();
    }
    assert!(
        !trickler.is_finished(),
        "the trickling client is still sending"
    );

    // The server drops them once the head is overdue (10 s), not never.
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut b = Vec::new();
        let closed = c.read_to_end(&mut b);
        assert!(
            closed.is_ok(),
            "an idle connection was not closed by the server: {closed:?}"
        );
    }
    let sent = trickler.join().unwrap();
    assert!(
        sent < 600,
        "the trickling client was cut off after {sent} bytes"
    );
    assert_eq!(http_request(&addr, "GET", "/healthz", &[]).0, 200);
    let (ok, out, err) = job.stop();
    assert!(ok, "{out}\n{err}");
}

/// Streams `head` then `filler` bytes (in 64 KiB writes, up to `total`) until
/// the server stops reading; returns the status it answered (0: closed without one).
fn stream_huge(addr: &str, head: &str, total: usize) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (http_status(&String::from_utf8_lossy(&out)), sent)
}

#[test]
fn a_huge_request_is_refused_at_once_without_growing_the_jobs_memory() {
    let dir = scratch("live-huge");
    let job = LiveJob::start(&dir, &[&quickstart(), "--lake", "lake"], &[]);
    let addr = job.addr.clone();
    let pid = job.pid();
    let (rss, peak) = (proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM"));
    const TOTAL: usize = 64 << 20;
    // A 64 MB request line, a 64 MB header, a 64 MB body.
    let (line, sent_line) = stream_huge(&addr, "GET /", TOTAL);
    let (header, sent_header) = stream_huge(
        &addr,
        &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Big: "),
        TOTAL,
    );
    let (body, _) = stream_huge(
        &addr,
        &format!("POST /promote HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {TOTAL}\r\n\r\n"),
        TOTAL,
    );
    assert!([431, 414, 400, 0].contains(&line), "request line: {line}");
    assert!([431, 400, 0].contains(&header), "header: {header}");
    assert!([413, 403, 0].contains(&body), "body: {body}");
    // Refused early: the server stopped reading long before the end.
    assert!(
        sent_line < TOTAL && sent_header < TOTAL,
        "{sent_line} {sent_header}"
    );
    let (rss2, peak2) = (proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM"));
    assert!(
        rss2 < rss + 32 * 1024 && peak2 < peak + 32 * 1024,
        "memory grew: VmRSS {rss} -> {rss2} kB, VmHWM {peak} -> {peak2} kB"
    );
    assert_eq!(http_request(&addr, "GET", "/healthz", &[]).0, 200);
    let (ok, out, err) = job.stop();
    assert!(ok, "{out}\n{err}");
}

#[test]
fn a_wildcard_address_is_served_with_one_warning_and_a_bad_token_stops_the_run() {
    let dir = scratch("live-wildcard");
    let port = free_addr().rsplit(':').next().unwrap().to_string();
    let env = [(TOKEN_ENV, TOKEN)];
    let job = LiveJob::start_at(
        &dir,
        &[
            &quickstart(),
            "--lake",
            "lake",
            "--http-token-env",
            TOKEN_ENV,
        ],
        &env,
        &format!("0.0.0.0:{port}"),
    );
    let (status, _, _) = http_request(&job.addr, "GET", "/tap/clean", &[]);
    assert_eq!(status, 401);
    let (ok, out, err) = job.stop();
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        err.matches("reachable from the network").count(),
        1,
        "{err}"
    );
    assert!(!err.contains(TOKEN) && !out.contains(TOKEN));

    // A token variable that is unset, or too short: the run does not start.
    let addr = free_addr();
    let run = [
        "run",
        &quickstart(),
        "--lake",
        "lake",
        "--http-addr",
        &addr,
        "--http-token-env",
        TOKEN_ENV,
    ];
    let unset = millrace_raw(&dir, &run);
    assert!(!unset.status.success());
    let said = String::from_utf8_lossy(&unset.stderr);
    assert!(
        said.contains(TOKEN_ENV) && said.contains("is not set"),
        "{said}"
    );
    let short = millrace_env_raw(&dir, &run, &[(TOKEN_ENV, "short-secret")]);
    assert!(!short.status.success());
    let said = String::from_utf8_lossy(&short.stderr);
    assert!(
        said.contains("fewer than 16") && !said.contains("short-secret"),
        "{said}"
    );
}

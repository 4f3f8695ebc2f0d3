//! The command line's client of a running job's live view: `millrace tap`
//! and `millrace models promote-challenger`.

use anyhow::{bail, Context};

/// `millrace tap`: polls the job's `/tap/<step>` and prints new samples until `limit`.
pub fn tap(
    topology: &std::path::Path,
    step: &str,
    addr: Option<String>,
    limit: usize,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let plan = super::load(topology)?;
    let addr = addr.or(plan.topology.runtime.http_addr.clone()).context(
        "the topology has no `[runtime] http_addr` and no --addr was given: where is the job?",
    )?;
    if !crate::dataflow::tap::STEPS.contains(&step) {
        bail!(
            "no step `{step}` to tap; steps: {}",
            crate::dataflow::tap::STEPS.join(", ")
        );
    }
    let (mut after, mut shown) = (0u64, 0usize);
    let started = std::time::Instant::now();
    while shown < limit {
        let mut s = std::net::TcpStream::connect(&addr)
            .with_context(|| format!("cannot reach the job's live view at {addr}"))?;
        write!(
            s,
            "GET /tap/{step}?after={after} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let body = out.split_once("\r\n\r\n").map_or("", |x| x.1);
        if !out.starts_with("HTTP/1.1 200") {
            bail!("{addr}: {}", body.trim());
        }
        for line in body.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).context("a tap line is not JSON")?;
            after = after.max(v["seq"].as_u64().unwrap_or(0));
            println!("{}", v["record"]);
            shown += 1;
            if shown >= limit {
                break;
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(600) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    Ok(())
}

/// `millrace models promote-challenger`: `POST /promote` to the job's live view.
pub fn promote_challenger(addr: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr)
        .with_context(|| format!("cannot reach the job's live view at {addr}"))?;
    write!(
        s,
        "POST /promote HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).trim();
    anyhow::ensure!(out.starts_with("HTTP/1.1 202"), "{addr}: {body}");
    println!("{body}");
    Ok(())
}

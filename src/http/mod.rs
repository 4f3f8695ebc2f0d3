//! `http`: the live view of a running job, on `--http-addr` (127.0.0.1 by default).
//!
//! | path | what |
//! |---|---|
//! | `/` | the report page, rendered from the lake at each request (so it follows the committed epochs), refreshing itself every 10 s |
//! | `/metrics` | Prometheus text exposition of every `millrace_*` metric |
//! | `/healthz` | `ok` while the job runs, `503` with the fault once it has one |
//! | `/dataflow` | the topology's dataflow as a graph (SVG) and as text |
//! | `/tap/<step>?after=N` | sampled records leaving `clean`, `rejected` or `score`, as JSON lines (see `tap`) |
//! | `POST /promote` | promote the challenger at the next epoch (`millrace models promote-challenger`) |
//!
//! A plain HTTP/1.1 server on one thread: the views are read-mostly and
//! small, and a scrape must never slow the dataflow.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use crate::core::fault::Fault;
use crate::svg::esc;

/// What the server shows.
pub struct LiveView {
    /// The lake the report reads.
    pub lake: PathBuf,
    /// The pipeline's name.
    pub name: String,
    /// `validate`'s description of the dataflow.
    pub dataflow: String,
    /// The run's fault, for `/healthz`.
    pub fault: Fault,
    /// Sampled records per step, for `/tap/<step>`.
    pub taps: Arc<crate::dataflow::tap::Taps>,
    /// `POST /promote` sets it: the challenger is promoted at the next epoch (`None`: no challenger).
    pub promote: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Binds `addr` and serves on a background thread; returns the bound address.
pub fn serve(addr: &str, view: LiveView) -> Result<String, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("--http-addr {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let view = Arc::new(view);
    std::thread::Builder::new()
        .name("millrace-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = handle(stream, &view) {
                    tracing::debug!(%e, "HTTP request failed.");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(bound)
}

fn handle(mut stream: TcpStream, view: &LiveView) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let post = request.starts_with("POST ");
    let (status, kind, body) = match path {
        "/promote" if !post => (
            "405 Method Not Allowed",
            "text/plain",
            "POST to promote the challenger\n".to_string(),
        ),
        "/promote" => match &view.promote {
            Some(flag) => {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("Promotion of the challenger requested over HTTP.");
                (
                    "202 Accepted",
                    "text/plain",
                    "the challenger becomes the champion at the next epoch\n".to_string(),
                )
            }
            None => (
                "409 Conflict",
                "text/plain",
                "this topology has no [challenger]\n".to_string(),
            ),
        },
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            crate::core::metrics::render(),
        ),
        "/healthz" => match view.fault.message() {
            None => ("200 OK", "text/plain", "ok\n".to_string()),
            Some(m) => (
                "503 Service Unavailable",
                "text/plain",
                format!("failed: {m}\n"),
            ),
        },
        "/dataflow" => ("200 OK", "text/html; charset=utf-8", dataflow_page(view)),
        p if p.starts_with("/tap/") => {
            let after = request
                .split_whitespace()
                .nth(1)
                .and_then(|u| u.split_once("?after="))
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(0);
            match view.taps.since(&p[5..], after, 200) {
                Some(lines) => (
                    "200 OK",
                    "application/x-ndjson",
                    lines
                        .iter()
                        .map(|(n, l)| format!("{{\"seq\":{n},\"record\":{l}}}\n"))
                        .collect(),
                ),
                None => (
                    "404 Not Found",
                    "text/plain",
                    format!(
                        "no step `{}` to tap; steps: {}\n",
                        &p[5..],
                        crate::dataflow::tap::STEPS.join(", ")
                    ),
                ),
            }
        }
        "/" => match crate::report::load(&view.lake) {
            Ok(data) => {
                let html =
                    crate::report::render(&data, &format!("millrace · {} (live)", view.name));
                let html = html.replacen(
                    "<head>",
                    "<head><meta http-equiv=\"refresh\" content=\"10\">",
                    1,
                );
                ("200 OK", "text/html; charset=utf-8", html)
            }
            Err(e) => (
                "500 Internal Server Error",
                "text/plain",
                format!("cannot read the lake: {e}\n"),
            ),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The dataflow as boxes and arrows, beside `validate`'s text.
fn dataflow_page(view: &LiveView) -> String {
    // The steps are the lines of the description that name one: `  name   what`.
    let steps: Vec<(String, String)> = view
        .dataflow
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| {
            let l = l.trim();
            let (name, rest) = l.split_once(char::is_whitespace)?;
            Some((name.to_string(), rest.trim().to_string()))
        })
        .collect();
    let (w, h) = (190.0, 44.0);
    let mut svg = format!(
        r##"<svg id="dataflow" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12"><title>dataflow of {}</title><defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>"##,
        w + 80.0,
        steps.len() as f64 * (h + 24.0) + 20.0,
        esc(&view.name)
    );
    for (i, (name, what)) in steps.iter().enumerate() {
        let y = 10.0 + i as f64 * (h + 24.0);
        svg.push_str(&format!(
            r##"<g class="step" data-step="{n}"><rect x="20" y="{y}" width="{w}" height="{h}" rx="6" fill="#E8F1FA" stroke="#0072B2"/><text x="30" y="{:.0}" font-weight="bold">{n}</text><text x="30" y="{:.0}" fill="#444">{}</text></g>"##,
            y + 18.0,
            y + 35.0,
            esc(&what.chars().take(28).collect::<String>()),
            n = esc(name)
        ));
        if i + 1 < steps.len() {
            svg.push_str(&format!(
                r##"<line x1="{x}" y1="{:.0}" x2="{x}" y2="{:.0}" stroke="#555" marker-end="url(#arrow)"/>"##,
                y + h,
                y + h + 22.0,
                x = 20.0 + w / 2.0
            ));
        }
    }
    svg.push_str("</svg>");
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>dataflow · {n}</title></head><body style="font-family:sans-serif"><h1>Dataflow of {n}</h1><div style="display:flex;gap:32px">{svg}<pre>{}</pre></div></body></html>"#,
        esc(&view.dataflow),
        n = esc(&view.name)
    )
}

//! The alert channels against real servers: the webhook over plain HTTP on
//! loopback and over HTTPS with a CA made in the test, and email through a
//! real SMTP server (aiosmtpd, from the test venv: `MILLRACE_TEST_PYTHON`) —
//! in clear to a local relay, with STARTTLS required, with implicit TLS, and
//! refusing to authenticate to a relay that offers no STARTTLS. Every test
//! that sets a secret checks it never reaches the run's output or the alerts
//! file, nor, where it must not, the server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;

/// What the channels' code logs at its most verbose, so a secret that any of
/// it logs would show in the run's stderr.
const VERBOSE: &str = "warn,millrace=debug,ureq=trace,ureq_proto=trace,rustls=trace,lettre=trace";

/// Alerts in the lake's JSON-lines file: (rule, state).
fn alerts(lake: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(lake.join("alerts.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["rule_id"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The quickstart topology with `section` added, written into `dir`.
fn with_channel(dir: &Path, section: &str) -> String {
    let text = std::fs::read_to_string(quickstart())
        .unwrap()
        .replace("[runtime]", &format!("{section}\n\n[runtime]"));
    std::fs::write(dir.join("alerting.toml"), text).unwrap();
    "alerting.toml".into()
}

/// Runs `millrace run TOPOLOGY --once --lake lake` in `dir` with `env` set.
fn run_with(dir: &Path, topology: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    command
        .args(["run", topology, "--once", "--lake", "lake"])
        .current_dir(dir);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// Asserts `secret` is nowhere in the run's stdout and stderr or the lake's alerts file.
fn assert_never_shown(secret: &str, out: &Output, lake: &Path) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let jsonl = std::fs::read_to_string(lake.join("alerts.jsonl")).unwrap_or_default();
    assert!(!jsonl.is_empty(), "the run wrote no alerts");
    for (what, text) in [
        ("stdout", &*stdout),
        ("stderr", &*stderr),
        ("alerts.jsonl", &*jsonl),
    ] {
        assert!(!text.contains(secret), "the secret is in the run's {what}");
    }
}

/// A CA made for one test, and a server certificate it signed for `127.0.0.1` and `localhost`.
struct TestCa {
    /// The CA's certificate (what `ca_file` names).
    ca: PathBuf,
    /// The server's certificate and key, as PEM files.
    cert: PathBuf,
    key: PathBuf,
    /// The same, for a rustls server.
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn test_ca(dir: &Path, name: &str) -> TestCa {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("millrace test CA {name}"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let path = |file: &str| dir.join(format!("{name}-{file}"));
    std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(path("server.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(path("server.key"), leaf_key.serialize_pem()).unwrap();
    TestCa {
        ca: path("ca.pem"),
        cert: path("server.pem"),
        key: path("server.key"),
        cert_der: leaf_cert.der().clone(),
        key_der: leaf_key.serialize_der(),
    }
}

/// One request the test endpoint took: its `Authorization` header (if any) and body.
#[derive(Clone, Debug)]
struct Posted {
    authorization: Option<String>,
    body: String,
}

/// The test endpoint: its address, the requests it answered with 200, how
/// many requests it read, and how many TLS handshakes failed.
struct Endpoint {
    addr: String,
    posted: Arc<Mutex<Vec<Posted>>>,
    requests: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
}

/// Reads one HTTP request from `stream` and answers it: 500 for the first `fail` requests, then 200.
fn answer(
    stream: &mut (impl Read + Write),
    fail: usize,
    posted: &Mutex<Vec<Posted>>,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
    let (mut len, mut authorization) = (0, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        // Header names are case-insensitive.
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.trim().parse().unwrap(),
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
    if n <= fail {
        stream.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
    } else {
        posted.lock().unwrap().push(Posted {
            authorization,
            body: String::from_utf8_lossy(&body).to_string(),
        });
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    }
    stream.flush()
}

/// A tiny HTTP endpoint on loopback, over TLS when given a server certificate.
fn endpoint(fail: usize, tls: Option<&TestCa>) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tls = tls.map(|ca| {
        // ring, as the channels use (see `webhook`).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ca.key_der.clone().into());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ca.cert_der.clone()], key)
                .unwrap(),
        )
    });
    let e = Endpoint {
        addr,
        posted: Default::default(),
        requests: Default::default(),
        failed_handshakes: Default::default(),
    };
    let (posted, requests, failed) = (
        e.posted.clone(),
        e.requests.clone(),
        e.failed_handshakes.clone(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            match &tls {
                None => {
                    let mut tcp = tcp;
                    let _ = answer(&mut tcp, fail, &posted, &requests);
                }
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    if s.conn.complete_io(&mut s.sock).is_err() {
                        failed.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    if answer(&mut s, fail, &posted, &requests).is_ok() {
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    }
                }
            }
        }
    });
    e
}

#[test]
fn webhook_retries_then_delivers_and_a_dead_endpoint_does_not_stop_the_run() {
    let dir = scratch("webhook");
    gen(&dir, "tx.csv", 100_000, 7, &[]);
    settle(&dir);
    let hook = endpoint(2, None);
    let topo = with_channel(
        &dir,
        &format!(
            "[alerts.webhook]\nurl = \"http://{}/hooks/millrace\"\nmax_attempts = 5\nbearer_token_env = \"TEST_HOOK_TOKEN\"",
            hook.addr
        ),
    );
    let out = run_with(&dir, &topo, &[("TEST_HOOK_TOKEN", "s3cret")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_until("a webhook delivered", 20, || {
        let got = hook.posted.lock().unwrap().clone();
        (!got.is_empty(), got)
    });
    assert_eq!(
        got[0].authorization.as_deref(),
        Some("Bearer s3cret"),
        "{got:?}"
    );
    let payload: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert!(
        payload.as_array().is_some_and(|a| a
            .iter()
            .all(|x| x["rule_id"].is_string() && x["state"].is_string())),
        "{payload}"
    );
    assert!(
        hook.requests.load(Ordering::SeqCst) >= 3,
        "two failures were retried"
    );
    assert_never_shown("s3cret", &out, &dir.join("lake"));

    // An endpoint that is down: the run completes; the failure is counted and logged.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir2 = scratch("webhook-down");
    gen(&dir2, "tx.csv", 100_000, 7, &[]);
    settle(&dir2);
    let topo = with_channel(
        &dir2,
        &format!(
            "[alerts.webhook]\nurl = \"http://{closed}/\"\nmax_attempts = 2\ntimeout_ms = 500"
        ),
    );
    let out = millrace_raw(&dir2, &["run", &topo, "--once", "--lake", "lake"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Alert delivery failed for good"),
        "{stderr}"
    );
    assert!(
        !alerts(&dir2.join("lake")).is_empty(),
        "the alerts are still in the lake"
    );
}

#[test]
fn webhook_over_https_trusts_the_ca_in_ca_file_and_no_other() {
    let dir = scratch("webhook-https");
    gen(&dir, "tx.csv", 100_000, 7, &[]);
    settle(&dir);
    let ca = test_ca(&dir, "hook");
    let hook = endpoint(0, Some(&ca));
    let token = format!("tok-{}-Zr71q", std::process::id());
    let section = |ca_file: &str| {
        format!(
            "[alerts.webhook]\nurl = \"https://{}/hooks/millrace\"\nmax_attempts = 2\ntimeout_ms = 2000\nbearer_token_env = \"TEST_HOOK_TOKEN\"\n{ca_file}",
            hook.addr
        )
    };
    let topo = with_channel(&dir, &section(&format!("ca_file = {:?}", ca.ca)));
    let env = [
        ("TEST_HOOK_TOKEN", token.as_str()),
        ("MILLRACE_LOG", VERBOSE),
    ];
    let out = run_with(&dir, &topo, &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The run waits for its deliveries before it exits.
    let got = hook.posted.lock().unwrap().clone();
    assert!(!got.is_empty(), "nothing was delivered over TLS:\n{stderr}");
    assert!(
        !stderr.contains("Alert delivery failed"),
        "a delivery over TLS failed:\n{stderr}"
    );
    let bearer = format!("Bearer {token}");
    assert!(
        got.iter()
            .all(|p| p.authorization.as_deref() == Some(bearer.as_str())),
        "the token goes with every POST"
    );
    let firing: Vec<serde_json::Value> = got
        .iter()
        .flat_map(|p| serde_json::from_str::<Vec<serde_json::Value>>(&p.body).unwrap())
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(
        firing.iter().any(|a| a["rule_id"] == "stale_input"),
        "{firing:?}"
    );
    assert_eq!(hook.failed_handshakes.load(Ordering::SeqCst), 0);
    assert_never_shown(&token, &out, &dir.join("lake"));
    // Nor in the HTTP library's hex dump of the wire, which its trace level
    // would write (the `log` crate is capped at debug for that).
    assert!(
        !stderr.lines().any(|l| l.contains("TRACE ureq_proto")),
        "the wire is dumped in the log"
    );

    // Without the CA the endpoint's certificate is not trusted: no request is
    // made, the deliveries fail, and the run goes on.
    let before = hook.requests.load(Ordering::SeqCst);
    let dir2 = scratch("webhook-https-unknown-ca");
    gen(&dir2, "tx.csv", 100_000, 7, &[]);
    settle(&dir2);
    let topo = with_channel(&dir2, &section(""));
    let out = run_with(&dir2, &topo, &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Alert delivery failed for good"))
        .collect();
    assert!(!failed.is_empty(), "{stderr}");
    assert!(
        failed.iter().all(|l| l.contains("UnknownIssuer")),
        "{failed:#?}"
    );
    assert_eq!(
        hook.requests.load(Ordering::SeqCst),
        before,
        "a request went to an endpoint whose certificate was not verified"
    );
    assert!(hook.failed_handshakes.load(Ordering::SeqCst) >= 2);
    assert_never_shown(&token, &out, &dir2.join("lake"));
}

#[test]
fn webhook_config_refuses_a_token_over_clear_http_to_another_host() {
    let dir = scratch("webhook-config");
    let validate = |section: &str| {
        let topo = with_channel(&dir, section);
        let out = millrace_raw(&dir, &["validate", &topo]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let token = "bearer_token_env = \"TEST_HOOK_TOKEN\"";
    let (ok, out) = validate(&format!(
        "[alerts.webhook]\nurl = \"http://hooks.example.com/millrace\"\n{token}"
    ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("alerts.webhook") && out.contains("allow_insecure_http = true"),
        "{out}"
    );
    // Saying so explicitly takes it; loopback and https need nothing.
    for (url, extra) in [
        (
            "http://hooks.example.com/millrace",
            "allow_insecure_http = true",
        ),
        ("http://127.0.0.1:9000/millrace", ""),
        ("http://localhost:9000/millrace", ""),
        ("https://hooks.example.com/millrace", ""),
    ] {
        let (ok, out) = validate(&format!(
            "[alerts.webhook]\nurl = \"{url}\"\n{token}\n{extra}"
        ));
        assert!(ok, "{url}: {out}");
    }
    let (ok, out) = validate("[alerts.webhook]\nurl = \"ftp://hooks.example.com/\"");
    assert!(!ok, "{out}");
    assert!(
        out.contains("alerts.webhook.url") && out.contains("https:// or http://"),
        "{out}"
    );
    let (ok, out) = validate(
        "[alerts.webhook]\nurl = \"https://hooks.example.com/\"\nca_file = \"missing-ca.pem\"",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("ca_file") && out.contains("missing-ca.pem"),
        "{out}"
    );
}

/// A real SMTP server (aiosmtpd) that writes down what it received:
/// `received.jsonl` has every chunk of bytes from a client, with whether it
/// came inside TLS, and when connections open and close; `auth.jsonl` every
/// AUTH attempt; `messages.jsonl` every message taken, parsed.
const SMTP_SERVER: &str = r#"
import argparse, json, os, socket, ssl, threading
from email import message_from_bytes, policy
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--implicit", action="store_true")
p.add_argument("--user")
p.add_argument("--password")
a = p.parse_args()
lock = threading.Lock()

def record(name, obj):
    with lock, open(os.path.join(a.out, name), "a") as f:
        f.write(json.dumps(obj) + "\n")

def encrypted(smtp):
    t = smtp.transport
    return smtp._original_transport is not None or (
        t is not None and t.get_extra_info("ssl_object") is not None)

class Recording(SMTP):
    def connection_made(self, transport):
        if self._original_transport is None:  # not the STARTTLS upgrade
            record("received.jsonl", {"event": "open"})
        super().connection_made(transport)

    def data_received(self, data):
        record("received.jsonl",
               {"event": "data", "tls": encrypted(self), "data": data.decode("latin-1")})
        super().data_received(data)

    def connection_lost(self, error):
        record("received.jsonl", {"event": "closed"})
        super().connection_lost(error)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        m = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        record("messages.jsonl", {
            "headers": {k.lower(): str(v) for k, v in m.items()},
            "body": m.get_content(),
            "tls": encrypted(server),
            "authenticated": bool(session.authenticated),
        })
        return "250 Message accepted"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == a.user
          and auth_data.password.decode() == a.password)
    record("auth.jsonl", {"mechanism": mechanism, "tls": encrypted(server), "ok": ok})
    return AuthResult(success=ok, handled=False)

class Recorder(Controller):
    def factory(self):
        return Recording(self.handler, **self.SMTP_kwargs)

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
kwargs = {}
if a.cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    if a.implicit:
        kwargs["ssl_context"] = ctx
    else:
        kwargs.update(tls_context=ctx, require_starttls=True)
if a.user:
    # Without TLS the server takes AUTH in clear: refusing is the client's job.
    # (aiosmtpd counts only STARTTLS as TLS for AUTH; implicit TLS is TLS too.)
    kwargs.update(authenticator=authenticator, auth_require_tls=bool(a.cert) and not a.implicit)
controller = Recorder(Handler(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
with open(os.path.join(a.out, "port.tmp"), "w") as f:
    f.write(str(port))
os.rename(os.path.join(a.out, "port.tmp"), os.path.join(a.out, "port"))
threading.Event().wait()
"#;

/// The SMTP server, stopped when dropped.
struct Smtp {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    /// Starts the server; `tls` is the certificate (and whether TLS is implicit), `auth` the login it takes.
    fn start(dir: &Path, tls: Option<(&TestCa, bool)>, auth: Option<(&str, &str)>) -> Smtp {
        let python = std::env::var("MILLRACE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = dir.join("smtp");
        std::fs::create_dir_all(&out).unwrap();
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SMTP_SERVER).unwrap();
        let mut command = Command::new(&python);
        command.arg(&script).arg(&out);
        if let Some((ca, implicit)) = tls {
            command
                .arg("--cert")
                .arg(&ca.cert)
                .arg("--key")
                .arg(&ca.key);
            if implicit {
                command.arg("--implicit");
            }
        }
        if let Some((user, password)) = auth {
            command.args(["--user", user, "--password", password]);
        }
        let log = std::fs::File::create(dir.join("smtp.log")).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {python} ({e}); run the suite with .ci/test, which makes a venv with aiosmtpd")
            });
        let mut server = Smtp {
            child,
            out,
            port: 0,
        };
        let port = wait_until("the SMTP server listens", 30, || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the SMTP server exited ({status}); is aiosmtpd installed (.ci/test installs it)?\n{}",
                    std::fs::read_to_string(dir.join("smtp.log")).unwrap_or_default()
                );
            }
            let port = std::fs::read_to_string(server.out.join("port")).ok();
            (port.is_some(), port)
        });
        server.port = port.unwrap().trim().parse().unwrap();
        server
    }

    fn records(&self, file: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.out.join(file))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// What the server received, once every connection to it has closed.
    fn received(&self) -> Vec<serde_json::Value> {
        wait_until("every SMTP connection closes", 30, || {
            let r = self.records("received.jsonl");
            let count = |e: &str| r.iter().filter(|x| x["event"] == e).count();
            (count("open") == count("closed"), r)
        })
    }
}

/// The bytes a server received, as text: (in clear, inside TLS).
fn split_by_tls(received: &[serde_json::Value]) -> (String, String) {
    let mut clear = String::new();
    let mut tls = String::new();
    for r in received.iter().filter(|r| r["event"] == "data") {
        let data = r["data"].as_str().unwrap();
        if r["tls"] == true {
            &mut tls
        } else {
            &mut clear
        }
        .push_str(data);
    }
    (clear, tls)
}

/// Every form in which a password can go over SMTP AUTH: as is, and base64 in PLAIN and LOGIN.
fn password_forms(user: &str, password: &str) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        password.to_string(),
        b64(&format!("\0{user}\0{password}")),
        b64(password),
    ]
}

#[test]
fn email_is_delivered_through_a_real_smtp_server() {
    // A local relay without TLS, named explicitly: `tls = "none"`.
    let dir = scratch("email");
    let server = Smtp::start(&dir, None, None);
    gen(&dir, "tx.csv", 100_000, 7, &[]);
    settle(&dir);
    let topo = with_channel(&dir, &format!("[alerts.email]\nrelay = \"127.0.0.1:{}\"\nfrom = \"millrace@example.com\"\nto = [\"oncall@example.com\"]\ntls = \"none\"", server.port));
    millrace(&dir, &["run", &topo, "--once", "--lake", "lake"]);
    let messages = wait_until("the email with the firing alerts", 20, || {
        let m = server.records("messages.jsonl");
        (
            m.iter()
                .any(|m| m["body"].as_str().unwrap().contains("Firing")),
            m,
        )
    });
    assert!(
        messages
            .iter()
            .all(|m| m["headers"]["to"] == "oncall@example.com"
                && m["headers"]["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with("[millrace]")),
        "{messages:#?}"
    );
    assert!(
        messages.iter().any(|m| {
            let body = m["body"].as_str().unwrap();
            body.contains("Firing") && body.contains("stale_input")
        }),
        "{messages:#?}"
    );
}

/// Runs the quickstart with an email channel to `server` under the SMTP credentials `user`/`password`.
fn email_run(dir: &Path, server: &Smtp, extra: &str, user: &str, password: &str) -> Output {
    gen(dir, "tx.csv", 100_000, 7, &[]);
    settle(dir);
    let topo = with_channel(
        dir,
        &format!(
            "[alerts.email]\nrelay = \"127.0.0.1:{}\"\nfrom = \"millrace@example.com\"\nto = [\"oncall@example.com\", \"Second Line <second@example.com>\"]\nmax_attempts = 2\n{extra}",
            server.port
        ),
    );
    run_with(
        dir,
        &topo,
        &[
            ("MILLRACE_SMTP_USERNAME", user),
            ("MILLRACE_SMTP_PASSWORD", password),
            ("MILLRACE_LOG", VERBOSE),
        ],
    )
}

/// Asserts the server took the alerts by authenticated, encrypted mail with a Date and a Message-ID.
fn assert_delivered_inside_tls(server: &Smtp, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("Alert delivery failed"),
        "a delivery failed:\n{stderr}"
    );
    // The run waits for its deliveries before it exits.
    let messages = server.records("messages.jsonl");
    assert!(!messages.is_empty(), "no email arrived:\n{stderr}");
    for m in &messages {
        let h = &m["headers"];
        assert!(m["tls"] == true && m["authenticated"] == true, "{m:#}");
        assert!(
            h["date"].is_string()
                && h["message-id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with('<') && id.contains('@')),
            "{m:#}"
        );
        assert_eq!(h["from"], "millrace@example.com", "{m:#}");
        assert_eq!(
            h["to"], "oncall@example.com, Second Line <second@example.com>",
            "{m:#}"
        );
    }
    let ids: std::collections::BTreeSet<&str> = messages
        .iter()
        .map(|m| m["headers"]["message-id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        messages.len(),
        "each message has its own Message-ID"
    );
    assert!(
        messages.iter().any(|m| {
            let body = m["body"].as_str().unwrap();
            body.contains("Firing") && body.contains("stale_input")
        }),
        "{messages:#?}"
    );
    let auth = server.records("auth.jsonl");
    assert!(!auth.is_empty());
    assert!(
        auth.iter().all(|a| a["tls"] == true && a["ok"] == true),
        "{auth:#?}"
    );
}

#[test]
fn email_with_starttls_authenticates_only_inside_tls() {
    let dir = scratch("email-starttls");
    let ca = test_ca(&dir, "smtp");
    let (user, password) = ("alerts", format!("pw-{}-Kq8vX2", std::process::id()));
    let server = Smtp::start(&dir, Some((&ca, false)), Some((user, &password)));
    // The default `tls` is "starttls".
    let out = email_run(
        &dir,
        &server,
        &format!("ca_file = {:?}", ca.ca),
        user,
        &password,
    );
    assert_delivered_inside_tls(&server, &out);
    // On the wire in clear: the greeting's answer and STARTTLS, never AUTH or the password.
    let (clear, tls) = split_by_tls(&server.received());
    assert!(clear.contains("STARTTLS"), "{clear}");
    assert!(!clear.to_ascii_uppercase().contains("AUTH"), "{clear}");
    assert!(tls.contains("AUTH "), "AUTH went inside TLS");
    for secret in password_forms(user, &password) {
        assert!(!clear.contains(&secret), "the password went in clear");
    }
    assert_never_shown(&password, &out, &dir.join("lake"));
}

#[test]
fn email_with_implicit_tls_is_encrypted_from_the_first_byte() {
    let dir = scratch("email-implicit");
    let ca = test_ca(&dir, "smtps");
    let (user, password) = ("alerts", format!("pw-{}-Wn3c", std::process::id()));
    let server = Smtp::start(&dir, Some((&ca, true)), Some((user, &password)));
    let out = email_run(
        &dir,
        &server,
        &format!("tls = \"implicit\"\nca_file = {:?}", ca.ca),
        user,
        &password,
    );
    assert_delivered_inside_tls(&server, &out);
    let (clear, _) = split_by_tls(&server.received());
    assert_eq!(clear, "", "nothing in clear");
    assert_never_shown(&password, &out, &dir.join("lake"));
}

#[test]
fn email_refuses_to_authenticate_to_a_relay_without_starttls() {
    // The relay offers AUTH in clear and no STARTTLS; with credentials and
    // the default `tls`, nothing is sent but the greeting: the deliveries fail.
    let dir = scratch("email-no-starttls");
    let (user, password) = ("alerts", format!("pw-{}-Hd5m", std::process::id()));
    let server = Smtp::start(&dir, None, Some((user, &password)));
    let out = email_run(&dir, &server, "", user, &password);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Alert delivery failed for good") && l.contains("channel=\"email\""))
        .collect();
    assert!(!failed.is_empty(), "{stderr}");
    assert!(failed.iter().all(|l| l.contains("STARTTLS")), "{failed:#?}");
    let received = server.received();
    let (clear, tls) = split_by_tls(&received);
    assert!(
        clear.contains("EHLO"),
        "the client did connect: {received:#?}"
    );
    assert_eq!(tls, "");
    assert!(!clear.to_ascii_uppercase().contains("AUTH"), "{clear}");
    assert!(!clear.contains("MAIL FROM"), "{clear}");
    for secret in password_forms(user, &password) {
        assert!(!clear.contains(&secret), "the password reached the server");
    }
    assert!(server.records("auth.jsonl").is_empty());
    assert!(server.records("messages.jsonl").is_empty());
    assert_never_shown(&password, &out, &dir.join("lake"));
}

#[test]
fn email_config_is_checked() {
    let dir = scratch("email-config");
    let validate = |section: &str, env: &[(&str, &str)]| {
        let topo = with_channel(&dir, section);
        let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
        command.args(["validate", &topo]).current_dir(&dir);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let email = "[alerts.email]\nrelay = \"smtp.example.com\"\nfrom = \"millrace@example.com\"\nto = [\"oncall@example.com\"]";
    assert!(validate(email, &[]).0);
    let (ok, out) = validate(&format!("{email}\ntls = \"opportunistic\""), &[]);
    assert!(!ok && out.contains("tls"), "{out}");
    let (ok, out) = validate(email, &[("MILLRACE_SMTP_USERNAME", "alerts")]);
    assert!(!ok && out.contains("MILLRACE_SMTP_PASSWORD"), "{out}");
    let (ok, out) = validate(&format!("{email}\nca_file = \"missing-ca.pem\""), &[]);
    assert!(
        !ok && out.contains("ca_file") && out.contains("missing-ca.pem"),
        "{out}"
    );
}

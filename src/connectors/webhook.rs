//! `webhook`: alerts as HTTP POSTs of JSON.
//!
//! Each batch of alerts (one epoch's) is POSTed as a JSON array to `url`,
//! with `Authorization: Bearer <token>` when `bearer_token_env` names an
//! environment variable that is set (the token is never logged). Delivery runs
//! on the channel's own thread behind a bounded queue, so a slow or dead
//! endpoint never blocks the dataflow: a failed POST (connection refused,
//! timeout, non-2xx) is retried with exponential backoff up to `max_attempts`
//! times; then it is counted (`millrace_alert_deliveries_total{outcome="failed"}`)
//! and logged with the alerts it carried. Plain `http://` only: put a local
//! TLS-terminating proxy in front of an `https://` endpoint.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use millrace_operators::monitor::Alert;
use serde::{Deserialize, Serialize};

use crate::connectors::notify::Delivery;

/// `[alerts.webhook]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://host:port/path`.
    pub url: String,
    /// Connect and read timeout per attempt.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts before a delivery counts as failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The environment variable holding a bearer token, if the endpoint needs one.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
}

fn default_timeout() -> u64 {
    5_000
}

fn default_attempts() -> u32 {
    5
}

/// Splits `http://host:port/path` into (host:port, path).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("`{url}`: only http:// URLs are supported (use a local TLS proxy for https)")
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("`{url}`: no host"));
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// A webhook channel.
pub struct Webhook {
    spec: WebhookSpec,
    host: String,
    path: String,
}

impl Webhook {
    /// Checks the URL.
    pub fn new(spec: WebhookSpec) -> Result<Webhook, String> {
        let (host, path) = split_url(&spec.url)?;
        Ok(Webhook { spec, host, path })
    }

    fn post(&self, body: &str) -> Result<(), String> {
        let timeout = Duration::from_millis(self.spec.timeout_ms.max(1));
        let addr = self
            .host
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let auth = self
            .spec
            .bearer_token_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: millrace\r\n{auth}Connection: close\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        let _ = s.read_to_end(&mut response);
        let status_line = String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let code: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP status in `{status_line}`"))?;
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP {code}"))
        }
    }
}

impl Delivery for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn attempts(&self) -> u32 {
        self.spec.max_attempts.max(1)
    }

    fn deliver(&mut self, alerts: &[Alert]) -> Result<(), String> {
        let body = serde_json::to_string(alerts).map_err(|e| e.to_string())?;
        self.post(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/a/b").unwrap(),
            ("127.0.0.1:9000".into(), "/a/b".into())
        );
        assert_eq!(
            split_url("http://example").unwrap(),
            ("example:80".into(), "/".into())
        );
        assert!(split_url("https://x").unwrap_err().contains("only http://"));
    }
}

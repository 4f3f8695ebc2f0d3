//! `webhook`: alerts as HTTP POSTs of JSON, over TLS or plain HTTP.
//!
//! Goes in: one batch of alerts at a time (an epoch's, handed over by the
//! notifier in `notify`, which runs this channel on a thread of its own behind
//! a bounded queue, so a slow or dead endpoint never blocks the dataflow).
//! Comes out: one `POST` of the batch as a JSON array to `url`
//! (`Content-Type: application/json`). A 2xx answer delivers the batch;
//! anything else — no connection, a failed TLS handshake, a timeout, a non-2xx
//! status, a redirect — is a failed attempt, which the notifier retries with
//! exponential backoff (0.2 s, doubling, at most 10 s apart) up to
//! `max_attempts` times; then the batch is counted
//! (`millrace_alert_deliveries_total{channel="webhook",outcome="failed"}`)
//! and logged with the alerts it carried (they are in the lake either way).
//! No state: nothing is checkpointed, so an attempt that timed out after the
//! endpoint took it is retried, and an endpoint may see a batch twice.
//!
//! Keys of `[alerts.webhook]` (checked when the topology is loaded):
//! - `url`: `https://host[:port]/path` or `http://host[:port]/path`. Any other
//!   scheme is a config error, and so are credentials in the URL (it is shown
//!   in the run's summary; put a token in `bearer_token_env`).
//! - `timeout_ms` (5,000): the whole of one attempt — resolving, connecting,
//!   the TLS handshake, sending, and the response's status.
//! - `max_attempts` (5): attempts per batch.
//! - `bearer_token_env`: the environment variable holding a token, sent as
//!   `Authorization: Bearer <token>` when it is set. The token is never
//!   logged and never in an error or a metric.
//! - `ca_file`: a PEM file of extra root certificates to trust (a private
//!   CA), added to the default trust: the Mozilla roots (webpki), compiled in,
//!   so a container without a system CA bundle verifies the same way. A
//!   relative path is to the working directory. The file is read, and every
//!   certificate in it checked, when the topology is loaded.
//! - `allow_insecure_http` (false): see below.
//!
//! Guarantees: an `https://` endpoint's certificate chain and host name are
//! always verified (there is no key to turn that off). A token never crosses
//! the network in clear: a topology with `bearer_token_env` and a plain
//! `http://` URL whose host is not loopback (`localhost`, `127.0.0.0/8`,
//! `::1`) is refused unless it says `allow_insecure_http = true`; loopback
//! HTTP stays allowed for local relays and tests. Redirects are not followed
//! and proxy variables in the environment are not used, so the token goes
//! to the configured host and nowhere else. It is in no log at any level:
//! ureq's protocol layer hex-dumps the wire at trace level through the `log`
//! crate, which this crate caps at debug (`log/max_level_debug`).
//!
//! The client is `ureq` (3, rustls with the ring provider): it is blocking,
//! which is what a channel with a thread of its own needs, and small.
//! `reqwest`'s blocking client would start a tokio runtime per client and
//! bring hyper, h2 and tower for one POST per epoch.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use millrace_operators::monitor::Alert;
use serde::{Deserialize, Serialize};
use ureq::http::{HeaderValue, Uri};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

use crate::connectors::notify::Delivery;

/// `[alerts.webhook]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `https://host[:port]/path` or `http://host[:port]/path`.
    pub url: String,
    /// The time one attempt may take, from resolving the host to the response's status.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts before a delivery counts as failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The environment variable holding a bearer token, if the endpoint needs one.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// A PEM file of extra root certificates to trust (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Send the bearer token over plain `http://` to a host that is not loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_timeout() -> u64 {
    5_000
}

fn default_attempts() -> u32 {
    5
}

/// Why the webhook channel cannot be built or a POST did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The user's: `[alerts.webhook]` cannot work as written (`key` is the key path).
    #[error("{message}")]
    Config {
        /// The key path, e.g. `alerts.webhook.ca_file`.
        key: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// External: the endpoint could not be reached, or the TLS handshake or
    /// the exchange failed (retried).
    #[error("the POST failed: {0}")]
    Transport(#[source] ureq::Error),
    /// External: the endpoint answered, but not with a 2xx (retried).
    #[error("the endpoint answered HTTP {0}")]
    Status(u16),
    /// Internal: the alerts could not be encoded as JSON (a bug).
    #[error("cannot encode the alerts as JSON (a bug): {0}")]
    Encode(#[source] serde_json::Error),
}

impl WebhookError {
    /// The key path of a config error.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            WebhookError::Config { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn config(key: &'static str, message: impl Into<String>) -> WebhookError {
    WebhookError::Config {
        key,
        message: message.into(),
    }
}

/// Whether `host` (as in a URL, IPv6 in brackets) is this machine's loopback.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads a PEM file of root certificates (a `ca_file`): at least one, each
/// one a certificate rustls takes as a trust anchor. The error says why not.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("`{shown}` is not valid PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "`{shown}` holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)"
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store.add(c.der().to_vec().into()).map_err(|e| {
            format!(
                "certificate {} in `{shown}` is not usable as a root: {e}",
                i + 1
            )
        })?;
    }
    Ok(certs)
}

/// A webhook channel.
pub struct Webhook {
    spec: WebhookSpec,
    agent: ureq::Agent,
    /// `Authorization: Bearer …`, marked sensitive; `None` without a token.
    authorization: Option<HeaderValue>,
    /// Whether the missing token has been said.
    warned: bool,
}

impl Webhook {
    /// Checks the URL, the token's transport and the CA file, and builds the client.
    pub fn new(spec: WebhookSpec) -> Result<Webhook, WebhookError> {
        const URL: &str = "alerts.webhook.url";
        let (scheme, rest) = spec.url.split_once("://").unwrap_or_default();
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(config(
                    URL,
                    format!("expected an https:// or http:// URL, got `{}`", spec.url),
                ))
            }
        };
        // Before anything shows the URL: credentials in it would be shown too.
        if rest
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .contains('@')
        {
            return Err(config(
                URL,
                "expected no credentials in the URL (it is shown in the run's summary); \
                 put a token in the environment variable named by `bearer_token_env`",
            ));
        }
        let uri: Uri = spec
            .url
            .parse()
            .map_err(|e| config(URL, format!("`{}` is not a URL: {e}", spec.url)))?;
        let host = uri.host().unwrap_or_default();
        if host.is_empty() {
            return Err(config(URL, format!("`{}` names no host", spec.url)));
        }
        if spec.bearer_token_env.is_some()
            && !https
            && !is_loopback(host)
            && !spec.allow_insecure_http
        {
            return Err(config(
                "alerts.webhook.bearer_token_env",
                format!(
                    "the bearer token would cross the network in clear: `url` is plain http:// \
                     to `{host}`, which is not loopback; use https://, or set \
                     `allow_insecure_http = true` to send it in clear anyway"
                ),
            ));
        }
        // The default trust is the Mozilla roots; a CA file adds its own.
        let roots = match &spec.ca_file {
            None => RootCerts::WebPki,
            Some(path) => {
                let extra = read_ca_file(path)
                    .map_err(|m| config("alerts.webhook.ca_file", format!("`ca_file`: {m}")))?;
                let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()));
                RootCerts::Specific(Arc::new(mozilla.chain(extra).collect()))
            }
        };
        let authorization = spec
            .bearer_token_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .map(|token| {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        config(
                            "alerts.webhook.bearer_token_env",
                            "the bearer token holds characters an HTTP header cannot carry",
                        )
                    })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(spec.timeout_ms.max(1))))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent("millrace")
            .tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::Rustls)
                    .root_certs(roots)
                    .build(),
            )
            .build()
            .new_agent();
        Ok(Webhook {
            spec,
            agent,
            authorization,
            warned: false,
        })
    }

    fn post(&mut self, body: &str) -> Result<(), WebhookError> {
        let mut request = self
            .agent
            .post(&self.spec.url)
            .header("Content-Type", "application/json");
        match &self.authorization {
            Some(value) => request = request.header("Authorization", value.clone()),
            None if !self.warned => {
                if let Some(var) = &self.spec.bearer_token_env {
                    tracing::warn!(
                        variable = %var,
                        "The environment variable named by alerts.webhook.bearer_token_env is not set; posting alerts without a token."
                    );
                }
                self.warned = true;
            }
            None => {}
        }
        let response = request.send(body).map_err(WebhookError::Transport)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(WebhookError::Status(status))
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

    type Error = WebhookError;

    fn deliver(&mut self, alerts: &[Alert]) -> Result<(), WebhookError> {
        let body = serde_json::to_string(alerts).map_err(WebhookError::Encode)?;
        self.post(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> WebhookSpec {
        WebhookSpec {
            url: url.into(),
            timeout_ms: 1_000,
            max_attempts: 1,
            bearer_token_env: None,
            ca_file: None,
            allow_insecure_http: false,
        }
    }

    fn refused(spec: WebhookSpec) -> (Option<&'static str>, String) {
        let e = Webhook::new(spec).err().expect("refused");
        (e.key(), e.to_string())
    }

    #[test]
    fn https_and_http_urls_are_taken_and_other_schemes_refused() {
        assert!(Webhook::new(spec("https://hooks.example.com/a/b")).is_ok());
        assert!(Webhook::new(spec("http://127.0.0.1:9000/a")).is_ok());
        assert!(Webhook::new(spec("HTTPS://example.com")).is_ok());
        for url in [
            "ftp://example.com/",
            "example.com/hook",
            "file:///etc/passwd",
        ] {
            let (key, message) = refused(spec(url));
            assert_eq!(key, Some("alerts.webhook.url"), "{url}");
            assert!(message.contains("https:// or http://"), "{url}: {message}");
        }
        for url in [
            "https://user:pw@example.com/",
            "https://user:pw@exa mple.com/",
        ] {
            let (key, message) = refused(spec(url));
            assert_eq!(key, Some("alerts.webhook.url"));
            assert!(!message.contains("pw"), "{message}");
        }
    }

    #[test]
    fn a_token_goes_over_plain_http_only_to_loopback_or_when_allowed() {
        let with_token = |url: &str, allow: bool| WebhookSpec {
            bearer_token_env: Some("MILLRACE_TEST_UNSET_TOKEN".into()),
            allow_insecure_http: allow,
            ..spec(url)
        };
        for url in [
            "http://127.0.0.1:9000/",
            "http://127.1.2.3/",
            "http://localhost:8080/",
            "http://[::1]:8080/",
            "https://example.com/",
        ] {
            assert!(Webhook::new(with_token(url, false)).is_ok(), "{url}");
        }
        for url in ["http://example.com/", "http://10.0.0.1/", "http://[::2]/"] {
            let (key, message) = refused(with_token(url, false));
            assert_eq!(key, Some("alerts.webhook.bearer_token_env"), "{url}");
            assert!(message.contains("allow_insecure_http = true"), "{message}");
            assert!(Webhook::new(with_token(url, true)).is_ok(), "{url}");
        }
        // Without a token there is nothing to protect.
        assert!(Webhook::new(spec("http://example.com/")).is_ok());
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("millrace-webhook-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let with_ca = |name: &str| WebhookSpec {
            ca_file: Some(dir.join(name)),
            ..spec("https://example.com/")
        };
        let (key, message) = refused(with_ca("missing.pem"));
        assert_eq!(key, Some("alerts.webhook.ca_file"));
        assert!(message.contains("cannot read"), "{message}");
        std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
        let (_, message) = refused(with_ca("empty.pem"));
        assert!(message.contains("holds no certificate"), "{message}");
        std::fs::write(
            dir.join("garbage.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let (_, message) = refused(with_ca("garbage.pem"));
        assert!(message.contains("not usable as a root"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

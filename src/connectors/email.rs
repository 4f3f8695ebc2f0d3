//! `email`: alerts by email over SMTP, with STARTTLS by default.
//!
//! Goes in: one batch of alerts at a time (an epoch's, handed over by the
//! notifier in `notify`, which runs this channel on a thread of its own behind
//! a bounded queue). Comes out: one plain-text message per batch, to every
//! recipient, through the relay: a subject that counts the firing and the
//! resolved alerts, a line per alert, and the `Date` and `Message-ID` headers
//! a mail system expects. Each delivery is a connection of its own (the relay
//! is contacted once per epoch with alerts at most). A delivery that fails —
//! the relay unreachable, no STARTTLS, a certificate that does not verify,
//! AUTH or a recipient refused — is a failed attempt, retried, counted and
//! logged by the notifier (see `notify`). No state: nothing is checkpointed.
//!
//! Keys of `[alerts.email]` (checked when the topology is loaded):
//! - `relay`: `host:port` (IPv6 as `[addr]:port`), or `host` alone for the
//!   usual port of the `tls` mode: 587, 465 or 25.
//! - `from`, `to`: the sender and the recipients (at least one), as
//!   addresses or `Name <address>`.
//! - `max_attempts` (5): attempts per batch.
//! - `tls` (`"starttls"`): how the connection is protected.
//!   - `"starttls"`: plain SMTP upgraded with STARTTLS, which is required: a
//!     relay that does not offer it fails the delivery; nothing is ever sent
//!     in clear after the greeting and `EHLO`.
//!   - `"implicit"`: TLS from the first byte (SMTPS, usually port 465).
//!   - `"none"`: plain SMTP, for a local MTA that relays onwards. With
//!     credentials set, **they are sent in clear** (said in a warning at the
//!     first delivery). Only this explicit key does that: the default never
//!     falls back to clear text.
//! - `ca_file`: a PEM file of extra root certificates to trust (a private
//!   CA), added to the default trust, the Mozilla roots (webpki) compiled in,
//!   as for the webhook. A relative path is to the working directory.
//!
//! Credentials come only from the environment: `AUTH` (PLAIN or LOGIN, the
//! relay's choice) when `MILLRACE_SMTP_USERNAME` and `MILLRACE_SMTP_PASSWORD`
//! are both set, never from the topology; one without the other is a config
//! error. They are never logged and never in an error. With `tls` other than
//! `"none"` they are sent only inside TLS, after the certificate and the
//! relay's host name are verified; a relay that offers no `AUTH` mechanism
//! then fails the delivery rather than taking the mail unauthenticated.
//!
//! Built on `lettre` (blocking `SmtpTransport`, rustls with the ring
//! provider), which writes the SMTP dialogue, the MIME encoding, dot-stuffing
//! and the headers.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use millrace_operators::monitor::{Alert, AlertState};
use serde::{Deserialize, Serialize};

use crate::connectors::notify::Delivery;

/// `[alerts.email]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// The SMTP relay, `host:port` or `host`.
    pub relay: String,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// Attempts before a delivery counts as failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// How the connection to the relay is protected.
    #[serde(default)]
    pub tls: SmtpTls,
    /// A PEM file of extra root certificates to trust (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_attempts() -> u32 {
    5
}

/// `[alerts.email] tls`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required (the default).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// Plain SMTP: everything in clear, credentials included.
    None,
}

impl SmtpTls {
    /// The port a relay given without one listens on.
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        }
    }
}

/// Why the email channel cannot be built or a message did not go out.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The user's: `[alerts.email]` or the SMTP credentials in the environment
    /// cannot work as written (`key` is the key path).
    #[error("{message}")]
    Config {
        /// The key path, e.g. `alerts.email.to[1]`.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// External: the relay could not be reached, did not offer STARTTLS, failed
    /// the TLS handshake or refused AUTH, the sender or a recipient (retried).
    #[error("SMTP delivery failed: {0}")]
    Smtp(#[source] lettre::transport::smtp::Error),
    /// Internal: the message could not be built from checked addresses (a bug).
    #[error("cannot build the alert message (a bug): {0}")]
    Message(#[source] lettre::error::Error),
}

impl EmailError {
    /// The key path of a config error.
    pub fn key(&self) -> Option<&str> {
        match self {
            EmailError::Config { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn config(key: impl Into<String>, message: impl Into<String>) -> EmailError {
    EmailError::Config {
        key: key.into(),
        message: message.into(),
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]` into the host and the port, if given.
fn split_relay(relay: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = relay.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{relay}`: `[` without `]`"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("`{relay}`: expected `:port` after `]`")),
            },
        }
    } else {
        match relay.matches(':').count() {
            0 => (relay, None),
            1 => relay
                .split_once(':')
                .map(|(h, p)| (h, Some(p)))
                .unwrap_or_default(),
            _ => return Err(format!("`{relay}`: write an IPv6 relay as `[addr]:port`")),
        }
    };
    if host.is_empty() {
        return Err(format!("`{relay}`: expected `host:port`"));
    }
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("`{relay}`: `{p}` is not a port")),
        })
        .transpose()?;
    Ok((host.to_string(), port))
}

/// The SMTP credentials from the environment, if both are set.
fn credentials() -> Result<Option<Credentials>, EmailError> {
    let user = std::env::var("MILLRACE_SMTP_USERNAME").ok();
    let pass = std::env::var("MILLRACE_SMTP_PASSWORD").ok();
    match (user, pass) {
        (Some(user), Some(pass)) => Ok(Some(Credentials::new(user, pass))),
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(config(
            "alerts.email",
            "expected both MILLRACE_SMTP_USERNAME and MILLRACE_SMTP_PASSWORD in the \
             environment, or neither; only one is set",
        )),
    }
}

/// An email channel.
pub struct Email {
    spec: EmailSpec,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: SmtpTransport,
    /// Whether credentials go out over plain SMTP (`tls = "none"`), and it has been said.
    clear_credentials: bool,
    warned: bool,
}

impl Email {
    /// Checks the relay, the addresses, the CA file and the credentials, and builds the transport.
    pub fn new(spec: EmailSpec) -> Result<Email, EmailError> {
        if spec.to.is_empty() {
            return Err(config(
                "alerts.email.to",
                "expected at least one recipient in `to`",
            ));
        }
        let mailbox = |key: String, a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| config(key, format!("`{a}` is not an email address: {e}")))
        };
        let from = mailbox("alerts.email.from".into(), &spec.from)?;
        let to = spec
            .to
            .iter()
            .enumerate()
            .map(|(i, a)| mailbox(format!("alerts.email.to[{i}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let (host, port) = split_relay(&spec.relay)
            .map_err(|m| config("alerts.email.relay", format!("`relay` {m}")))?;
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(path) = &spec.ca_file {
            let key = "alerts.email.ca_file";
            let certs = crate::connectors::webhook::read_ca_file(path)
                .map_err(|m| config(key, format!("`ca_file`: {m}")))?;
            for c in certs {
                let cert = Certificate::from_der(c.der().to_vec())
                    .map_err(|e| config(key, format!("`ca_file`: {e}")))?;
                tls = tls.add_root_certificate(cert);
            }
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| config("alerts.email", format!("cannot set up TLS: {e}")))?;
        let credentials = credentials()?;
        let clear_credentials = credentials.is_some() && spec.tls == SmtpTls::None;
        let mut transport = SmtpTransport::builder_dangerous(host)
            .port(port.unwrap_or(spec.tls.default_port()))
            .timeout(Some(Duration::from_secs(30)))
            .tls(match spec.tls {
                SmtpTls::Starttls => Tls::Required(tls),
                SmtpTls::Implicit => Tls::Wrapper(tls),
                SmtpTls::None => Tls::None,
            });
        if let Some(c) = credentials {
            transport = transport.credentials(c);
        }
        Ok(Email {
            from,
            to,
            transport: transport.build(),
            clear_credentials,
            warned: false,
            spec,
        })
    }

    fn send(&mut self, subject: &str, body: String) -> Result<(), EmailError> {
        if self.clear_credentials && !self.warned {
            tracing::warn!(
                relay = %self.spec.relay,
                "alerts.email.tls is \"none\": the SMTP credentials are sent to the relay in clear."
            );
            self.warned = true;
        }
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.body(body).map_err(EmailError::Message)?;
        self.transport.send(&message).map_err(EmailError::Smtp)?;
        Ok(())
    }
}

impl Delivery for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn attempts(&self) -> u32 {
        self.spec.max_attempts.max(1)
    }

    type Error = EmailError;

    fn deliver(&mut self, alerts: &[Alert]) -> Result<(), EmailError> {
        let firing = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count();
        let subject = format!(
            "[millrace] {} alert(s): {firing} firing, {} resolved",
            alerts.len(),
            alerts.len() - firing
        );
        let body: Vec<String> = alerts
            .iter()
            .map(|a| {
                format!(
                    "{:?} {:?} {} (epoch {}, window {}..{} ms)",
                    a.severity, a.state, a.message, a.epoch, a.window_start_ms, a.window_end_ms
                )
            })
            .collect();
        self.send(&subject, body.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(to: &str) -> EmailSpec {
        EmailSpec {
            relay: "127.0.0.1:25".into(),
            from: "a@b.example".into(),
            to: vec![to.into()],
            max_attempts: 1,
            tls: SmtpTls::default(),
            ca_file: None,
        }
    }

    #[test]
    fn addresses_are_checked() {
        assert!(Email::new(spec("x@y.example")).is_ok());
        assert!(Email::new(spec("On call <x@y.example>")).is_ok());
        let e = Email::new(spec("x@y>\r\nRCPT TO:<evil@z")).err().unwrap();
        assert_eq!(e.key(), Some("alerts.email.to[0]"));
        let e = Email::new(EmailSpec {
            to: vec![],
            ..spec("x@y")
        })
        .err()
        .unwrap();
        assert_eq!(e.key(), Some("alerts.email.to"));
    }

    #[test]
    fn relays() {
        let ok = |r: &str| split_relay(r).unwrap();
        assert_eq!(
            ok("smtp.example.com:587"),
            ("smtp.example.com".into(), Some(587))
        );
        assert_eq!(ok("smtp.example.com"), ("smtp.example.com".into(), None));
        assert_eq!(ok("[::1]:2525"), ("::1".into(), Some(2525)));
        assert_eq!(ok("[::1]"), ("::1".into(), None));
        for bad in ["", ":25", "host:0", "host:x", "::1:25", "[::1", "[::1]25"] {
            assert!(split_relay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn starttls_is_the_default_and_the_modes_are_named() {
        #[derive(Deserialize)]
        struct T {
            email: EmailSpec,
        }
        let parse = |extra: &str| {
            toml::from_str::<T>(&format!(
                "[email]\nrelay = \"r:25\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n{extra}"
            ))
            .map(|t| t.email.tls)
        };
        assert_eq!(parse("").unwrap(), SmtpTls::Starttls);
        assert_eq!(parse("tls = \"implicit\"").unwrap(), SmtpTls::Implicit);
        assert_eq!(parse("tls = \"none\"").unwrap(), SmtpTls::None);
        assert!(parse("tls = \"opportunistic\"").is_err());
    }
}

//! `email`: alerts by email over SMTP.
//!
//! One message per batch (an epoch's alerts) to every recipient, through the
//! relay in the topology (`host:port`, plain SMTP; `AUTH PLAIN` when
//! `MILLRACE_SMTP_USERNAME` and `MILLRACE_SMTP_PASSWORD` are set in the
//! environment — never in the topology, never logged). Delivery, retries and
//! failure accounting are the notifier's (see `notify`). STARTTLS is not
//! supported: relay through a local MTA for TLS.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use millrace_operators::monitor::Alert;
use serde::{Deserialize, Serialize};

use crate::connectors::notify::Delivery;

/// `[alerts.email]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// The SMTP relay, `host:port`.
    pub relay: String,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// Attempts before a delivery counts as failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_attempts() -> u32 {
    5
}

/// An email channel.
pub struct Email {
    spec: EmailSpec,
}

impl Email {
    /// Checks the addresses.
    pub fn new(spec: EmailSpec) -> Result<Email, String> {
        if spec.to.is_empty() {
            return Err("expected at least one recipient in `to`".into());
        }
        for a in std::iter::once(&spec.from).chain(&spec.to) {
            if !a.contains('@') || a.contains(['\r', '\n', '<', '>']) {
                return Err(format!("`{a}` is not an email address"));
            }
        }
        Ok(Email { spec })
    }

    fn send(&self, subject: &str, body: &str) -> Result<(), String> {
        let addr = self
            .spec
            .relay
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut w = stream;
        let expect = |reader: &mut BufReader<TcpStream>, code: &str| -> Result<(), String> {
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).map_err(|e| e.to_string())?;
                if !line.starts_with(code) {
                    return Err(format!("SMTP: expected {code}, got `{}`", line.trim_end()));
                }
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(());
                }
            }
        };
        let cmd = |w: &mut TcpStream, line: &str| {
            w.write_all(format!("{line}\r\n").as_bytes())
                .map_err(|e| e.to_string())
        };
        expect(&mut reader, "220")?;
        cmd(&mut w, "EHLO millrace")?;
        expect(&mut reader, "250")?;
        if let (Ok(user), Ok(pass)) = (
            std::env::var("MILLRACE_SMTP_USERNAME"),
            std::env::var("MILLRACE_SMTP_PASSWORD"),
        ) {
            cmd(
                &mut w,
                &format!(
                    "AUTH PLAIN {}",
                    base64(format!("\0{user}\0{pass}").as_bytes())
                ),
            )?;
            expect(&mut reader, "235")?;
        }
        cmd(&mut w, &format!("MAIL FROM:<{}>", self.spec.from))?;
        expect(&mut reader, "250")?;
        for to in &self.spec.to {
            cmd(&mut w, &format!("RCPT TO:<{to}>"))?;
            expect(&mut reader, "25")?;
        }
        cmd(&mut w, "DATA")?;
        expect(&mut reader, "354")?;
        let mut message = format!(
            "From: {}\r\nTo: {}\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
            self.spec.from,
            self.spec.to.join(", ")
        );
        for line in body.lines() {
            // Dot-stuffing: a line starting with '.' gets another.
            if line.starts_with('.') {
                message.push('.');
            }
            message.push_str(line);
            message.push_str("\r\n");
        }
        message.push_str(".\r\n");
        w.write_all(message.as_bytes()).map_err(|e| e.to_string())?;
        expect(&mut reader, "250")?;
        let _ = cmd(&mut w, "QUIT");
        Ok(())
    }
}

/// Standard base64 (for `AUTH PLAIN`).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

impl Delivery for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn attempts(&self) -> u32 {
        self.spec.max_attempts.max(1)
    }

    fn deliver(&mut self, alerts: &[Alert]) -> Result<(), String> {
        let firing = alerts
            .iter()
            .filter(|a| a.state == millrace_operators::monitor::AlertState::Firing)
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
        self.send(&subject, &body.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }

    #[test]
    fn addresses_are_checked() {
        let spec = |to: &str| EmailSpec {
            relay: "127.0.0.1:25".into(),
            from: "a@b".into(),
            to: vec![to.into()],
            max_attempts: 1,
        };
        assert!(Email::new(spec("x@y")).is_ok());
        assert!(Email::new(spec("x@y>\r\nRCPT TO:<evil@z")).is_err());
    }
}

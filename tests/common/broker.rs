//! A real Apache Kafka broker for the Kafka tests and benches: a single-node
//! KRaft broker started through `.ci/kafka/broker` (the script CI uses too)
//! on a free loopback port, in a folder of its own, stopped on drop (also when
//! the test panics). `.ci/test` installs the broker's jars once; without them
//! the script resolves them from Maven Central on first use.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running broker; stopped (and its folder removed unless the test failed) on drop.
pub struct Broker {
    /// The bootstrap address, `127.0.0.1:PORT`.
    pub addr: String,
    /// The broker's folder: config, data, `logs/server.log`.
    pub dir: PathBuf,
    running: bool,
}

/// `.ci/kafka/broker`, found from the package root.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/kafka/broker")
}

fn broker(args: &[&str]) -> Result<String, String> {
    let out = Command::new(script())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {} ({e}); it needs bash", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`broker {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Broker {
    /// Starts a fresh broker named `name` (its folder is under the temp dir).
    pub fn start(name: &str) -> Broker {
        let dir =
            std::env::temp_dir().join(format!("millrace-kafka-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Broker::start_in(&dir)
    }

    /// Starts a fresh broker named `name` with a second listener at
    /// `127.0.0.1:sasl_port` taking SASL/PLAIN logins of `users`
    /// (`NAME:PASSWORD`) and ACLs enforced there ([`Broker::allow`]); `addr`
    /// stays the plaintext listener, whose clients are super users.
    pub fn start_sasl(name: &str, sasl_port: u16, users: &[&str]) -> Broker {
        Broker::start_secured(name, sasl_port, users, None)
    }

    /// As [`Broker::start_sasl`], but the SASL listener is SASL_SSL, and a
    /// third at `127.0.0.1:ssl_port` is SSL taking client certificates
    /// (mutual TLS). The certificates are in [`Broker::tls`]: `ca.pem` (what
    /// clients trust), `client.pem` (CN=millrace-client), `client.key`
    /// (encrypted with the password in `client.key.password`).
    pub fn start_tls(name: &str, sasl_port: u16, ssl_port: u16, users: &[&str]) -> Broker {
        Broker::start_secured(name, sasl_port, users, Some(ssl_port))
    }

    fn start_secured(name: &str, sasl_port: u16, users: &[&str], ssl_port: Option<u16>) -> Broker {
        let dir =
            std::env::temp_dir().join(format!("millrace-kafka-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let port = sasl_port.to_string();
        let ssl = ssl_port.map(|p| p.to_string());
        let mut extra = vec!["--sasl-port", port.as_str()];
        for u in users {
            extra.extend(["--sasl-user", u]);
        }
        if let Some(ssl) = &ssl {
            extra.extend(["--tls", "--ssl-port", ssl.as_str()]);
        }
        Broker::start_with(&dir, &extra)
    }

    /// The folder of the TLS listeners' certificates (see [`Broker::start_tls`]).
    pub fn tls(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// Starts a broker in `dir` (a new folder is formatted; an old one keeps its data and port).
    pub fn start_in(dir: &Path) -> Broker {
        Broker::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Broker {
        let mut args = vec!["start", "--dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let addr = broker(&args).unwrap_or_else(|e| {
            panic!("cannot start Apache Kafka (run the suite with .ci/test, which installs Java, Maven and the broker): {e}")
        });
        assert!(
            addr.starts_with("127.0.0.1:"),
            "unexpected bootstrap address `{addr}`"
        );
        Broker {
            addr,
            dir: dir.to_path_buf(),
            running: true,
        }
    }

    /// The broker's process id (from the script's pid file), while it runs.
    pub fn pid(&self) -> Option<String> {
        let pid = std::fs::read_to_string(self.dir.join("broker.pid")).ok()?;
        Some(pid.trim().to_string()).filter(|p| !p.is_empty())
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 30 s); its data stays.
    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            if let Err(e) = broker(&["stop", "--dir", self.dir.to_str().unwrap()]) {
                eprintln!("{e}");
            }
        }
    }

    /// Starts the stopped broker again on the same folder and port.
    pub fn restart(&mut self) {
        assert!(!self.running, "restart a stopped broker");
        let addr = broker(&["start", "--dir", self.dir.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("cannot restart the broker: {e}"));
        assert_eq!(addr, self.addr, "a restarted broker keeps its port");
        self.running = true;
    }

    /// Creates `topic` with `partitions` (Kafka's own TopicCommand); `extra`
    /// goes to it as is, e.g. `["--config", "max.message.bytes=128"]`.
    pub fn create_topic(&self, topic: &str, partitions: u32, extra: &[&str]) {
        let partitions = partitions.to_string();
        let mut args = vec![
            "topic",
            "--bootstrap",
            &self.addr,
            "create",
            topic,
            "--partitions",
            &partitions,
        ];
        args.extend_from_slice(extra);
        broker(&args).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sets a topic's config (Kafka's own ConfigCommand).
    pub fn set_topic_config(&self, topic: &str, key_value: &str) {
        broker(&[
            "run",
            "org.apache.kafka.tools.ConfigCommand",
            "--bootstrap-server",
            &self.addr,
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            topic,
            "--add-config",
            key_value,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Adds an ACL (Kafka's own AclCommand): `args` after `--add`, e.g.
    /// `["--allow-principal", "User:alice", "--operation", "Read", "--topic", "tx"]`.
    pub fn allow(&self, args: &[&str]) {
        let mut all = vec![
            "run",
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            &self.addr,
            "--add",
        ];
        all.extend_from_slice(args);
        broker(&all).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/server.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("broker folder kept: {}", self.dir.display());
        } else if std::env::var_os("MILLRACE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

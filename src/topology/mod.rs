//! The topology file: what a user writes to describe a pipeline.
//!
//! A topology is TOML. It is read in two passes: serde with
//! `deny_unknown_fields` everywhere (through `serde_path_to_error`, so an
//! error knows its key path), then the cross-field checks of [`Topology::check`]
//! (a feature reading a field the schema does not declare, say). Either way an
//! error names the file, the line, the key path and what was expected; the line
//! is found by walking the key path through a spanned parse of the file.

use crate::connectors::lake::LakeSpec;
use crate::connectors::landing::{FileFormat, LandingSpec, OnChange};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use millrace_operators::clean::CleanSpec;
use millrace_operators::featurize::{FeatureSpec, Features};
use millrace_operators::learn::logistic::{ModelKind, ModelSpec};
use millrace_operators::schema::{Schema, SchemaError, SchemaSpec};
use serde::{Deserialize, Serialize};

/// A whole topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The pipeline's name (lower snake case); labels its metrics and model.
    pub name: String,
    /// A sentence for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
    /// Where records come from.
    pub source: SourceSpec,
    /// The declared shape of the records.
    pub schema: SchemaSpec,
    /// Cleaning rules beyond the schema's (deduplication).
    #[serde(default)]
    pub clean: CleanSpec,
    /// Features, in the order the model sees them.
    #[serde(default)]
    pub features: Vec<FeatureSpec>,
    /// The online model.
    #[serde(default)]
    pub model: ModelSpec,
    /// The Parquet lake the results are written to.
    pub lake: LakeSpec,
    /// Other outputs.
    #[serde(default)]
    pub sink: SinkSpec,
    /// Epochs and flow control.
    #[serde(default)]
    pub runtime: RuntimeSpec,
    /// Checkpoints (exactly-once recovery).
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// Windowed anomaly rules over the data, the model and the pipeline.
    #[serde(default)]
    pub monitors: Vec<millrace_operators::monitor::MonitorSpec>,
    /// Where alerts go, and event-time lateness for the monitors' windows.
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// `[report]`: the HTML report written at the end of every `--once` run.
    #[serde(default)]
    pub report: Option<ReportSpec>,
    /// `[challenger]`: a second model (the keys of `[model]`) scoring in shadow beside the champion.
    #[serde(default)]
    pub challenger: Option<ModelSpec>,
    /// `[promotion]`: when the challenger replaces the champion (needs `[challenger]`).
    #[serde(default)]
    pub promotion: Option<millrace_operators::arena::PromoteRule>,
}

/// `[report]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// The page, relative to the lake (default `report.html`).
    #[serde(default = "default_report_path")]
    pub path: PathBuf,
}

fn default_report_path() -> PathBuf {
    PathBuf::from("report.html")
}

/// `[alerts]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// A JSON-lines file every alert is appended to (relative paths: to the lake).
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// How far behind the latest event time a monitor window may still receive records.
    #[serde(default = "default_lateness")]
    pub allowed_lateness_ms: i64,
    /// `[alerts.webhook]`: POST alerts as JSON.
    #[serde(default)]
    pub webhook: Option<crate::connectors::webhook::WebhookSpec>,
    /// `[alerts.email]`: email alerts over SMTP.
    #[serde(default)]
    pub email: Option<crate::connectors::email::EmailSpec>,
    /// `[alerts.kafka]`: alerts to a Kafka topic.
    #[serde(default)]
    pub kafka: Option<crate::connectors::kafka_alerts::KafkaAlertsSpec>,
    /// At most this many alerts per rule per hour go to the channels (webhook,
    /// email, Kafka); the rest are counted and logged, and stay in the lake
    /// table and the JSON-lines file.
    #[serde(default = "default_rate")]
    pub max_per_rule_per_hour: u32,
}

fn default_rate() -> u32 {
    20
}

fn default_lateness() -> i64 {
    5_000
}

impl Default for AlertsSpec {
    fn default() -> Self {
        AlertsSpec {
            jsonl: None,
            allowed_lateness_ms: default_lateness(),
            webhook: None,
            email: None,
            kafka: None,
            max_per_rule_per_hour: default_rate(),
        }
    }
}

/// `[checkpoint]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Checkpoint every epoch (the default). Off: parts are visible at once and a
    /// crash is recovered only at file granularity, with operator state lost.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How many checkpoints to keep.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn yes() -> bool {
    true
}

fn default_keep() -> usize {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            enabled: true,
            keep: default_keep(),
        }
    }
}

impl Topology {
    /// A fingerprint of what shapes operator state (schema, cleaning, features,
    /// model): a checkpoint only resumes under the same fingerprint.
    pub fn state_fingerprint(&self) -> String {
        // How often versions are made and published, and where the model starts,
        // do not shape the state: leave them out.
        let shaping = |m: &ModelSpec| ModelSpec {
            refresh_records: None,
            refresh_event_seconds: None,
            publish_every_versions: None,
            warm_start: None,
            registry: None,
            keep_versions: None,
            ..m.clone()
        };
        let mut parts =
            serde_json::json!([self.schema, self.clean, self.features, shaping(&self.model)]);
        if let (Some(l), Some(all)) = (&self.source.labels, parts.as_array_mut()) {
            // Predictions waiting for labels are state.
            all.push(serde_json::json!({"labels": l.horizon_ms}));
        }
        if let (Some(c), Some(all)) = (&self.challenger, parts.as_array_mut()) {
            all.push(serde_json::json!({"challenger": shaping(c)}));
        }
        format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(parts.to_string().as_bytes())
        )
    }
}

/// `[source]`: exactly one of its sub-tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `[source.landing]`: files dropped into a folder.
    #[serde(default)]
    pub landing: Option<LandingSpec>,
    /// `[source.kafka]`: one or more Kafka topics.
    #[serde(default)]
    pub kafka: Option<crate::connectors::kafka::KafkaSourceSpec>,
    /// `[source.labels]`: labels arriving later than their records, on their own.
    #[serde(default)]
    pub labels: Option<LabelSourceSpec>,
}

/// `[source.labels]`: a second source of label lines (`id,label[,time]`) — a
/// landing folder (`path`) or Kafka topics (`[source.labels.kafka]`) —
/// joined to the scored records by the record id (`[schema] id`). A
/// prediction waits for its label up to `horizon_ms` of event time, then
/// expires (counted); a label that finds no prediction within the horizon is
/// counted as orphaned. Without `time`, a label is learned as soon as it
/// meets its prediction; with it, once the scored stream's event time
/// reaches it (so a replay learns in the order the labels became known).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSourceSpec {
    /// The folder label files land in.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `[source.labels.kafka]`: label messages on Kafka topics instead of a folder
    /// (their offsets are checkpointed and committed to their own group).
    #[serde(default)]
    pub kafka: Option<crate::connectors::kafka::KafkaSourceSpec>,
    /// How files are encoded: `csv`, `jsonl`, or `auto` (by file extension).
    #[serde(default)]
    pub format: FileFormat,
    /// How often to look for new files when not running `--once`.
    #[serde(default = "crate::connectors::landing::default_poll")]
    pub poll_interval_ms: u64,
    /// A file is complete once unchanged for this long.
    #[serde(default = "crate::connectors::landing::default_settle")]
    pub settle_ms: u64,
    /// The id field of a label line (default: `[schema] id`).
    #[serde(default)]
    pub id: Option<String>,
    /// The label field of a label line (default: `[schema.label] field`).
    #[serde(default)]
    pub label: Option<String>,
    /// When the label became known, in the event-time format of `[schema]`.
    #[serde(default)]
    pub time: Option<String>,
    /// Event time (ms) a prediction waits for its label, and a label for its
    /// prediction. A prediction expires once the records *and* the labels
    /// have passed its time plus this (so labels read behind the records do
    /// not expire predictions whose labels are on their way).
    #[serde(default = "default_horizon")]
    pub horizon_ms: i64,
    /// Predictions a worker keeps for their labels at most (a label stream
    /// that stops would otherwise keep them all); beyond it the oldest expire.
    #[serde(default = "default_max_waiting")]
    pub max_waiting: usize,
}

fn default_max_waiting() -> usize {
    millrace_operators::labels::DEFAULT_MAX_WAITING
}

fn default_horizon() -> i64 {
    24 * 3600 * 1000
}

impl LabelSourceSpec {
    /// The landing-folder settings of the label source, if it is a folder.
    pub fn landing(&self) -> Option<LandingSpec> {
        Some(LandingSpec {
            path: self.path.clone()?,
            format: self.format,
            poll_interval_ms: self.poll_interval_ms,
            settle_ms: self.settle_ms,
            on_change: OnChange::default(),
        })
    }
}

/// `[sink]`: outputs besides the lake.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// `[sink.kafka]`: scored records to a Kafka topic.
    #[serde(default)]
    pub kafka: Option<crate::connectors::kafka_sink::KafkaSinkSpec>,
    /// `[sink.csv]`: scored rows as CSV, one file per input, in input order.
    #[serde(default)]
    pub csv: Option<crate::connectors::csv::CsvSinkSpec>,
}

/// `[runtime]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// A source cuts an epoch after this many lines (per worker).
    #[serde(default = "default_epoch_records")]
    pub records_per_epoch: u64,
    /// A source waits while this many of its epochs are not yet committed by the sinks.
    #[serde(default = "default_in_flight")]
    pub max_epochs_in_flight: u64,
    /// Serve the live view here (`--http-addr` overrides); `millrace tap` finds the job through it.
    #[serde(default)]
    pub http_addr: Option<String>,
    /// The NAME of the environment variable that holds the live view's bearer
    /// token (`--http-token-env` overrides); the token itself is never in the
    /// topology. With a token, `POST /promote` and `/tap` need it; without one,
    /// `POST /promote` is disabled.
    #[serde(default)]
    pub http_token_env: Option<String>,
    /// Host names (`name` or `name:port`) the live view answers to besides the
    /// bound address, `localhost`, `127.0.0.1` and `[::1]` (e.g. a reverse
    /// proxy's name, or the machine's address when bound to 0.0.0.0).
    #[serde(default)]
    pub http_allowed_hosts: Vec<String>,
}

/// Whether `name` can be an environment variable's name as the token keys
/// take it: ASCII letters, digits and `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What is wrong with an `http_allowed_hosts` entry (`host` or `host:port`,
/// a name, an IPv4 address or a bracketed IPv6 address), if anything.
fn host_entry_problem(entry: &str) -> Option<&'static str> {
    let bad = "expected a host name or address, optionally with `:port` (e.g. \"millrace.internal\", \"10.0.0.5:9898\", \"[fd00::5]:9898\"), with no scheme, path or wildcard";
    let (host, port) = match entry.strip_prefix('[') {
        Some(v6) => {
            let Some((addr, rest)) = v6.split_once(']') else {
                return Some(bad);
            };
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Some(bad);
            }
            match rest {
                "" => return None,
                r => ("v6", r.strip_prefix(':').unwrap_or("not a port")),
            }
        }
        None => entry.split_once(':').unwrap_or((entry, "0")),
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !name_ok || port.parse::<u16>().is_err() {
        return Some(bad);
    }
    None
}

fn default_epoch_records() -> u64 {
    10_000
}

fn default_in_flight() -> u64 {
    4
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            records_per_epoch: default_epoch_records(),
            max_epochs_in_flight: default_in_flight(),
            http_addr: None,
            http_token_env: None,
            http_allowed_hosts: Vec::new(),
        }
    }
}

/// The checks a Kafka source's settings need wherever they appear (`at`:
/// `source.kafka` or `source.labels.kafka`).
fn check_kafka_source(
    k: &crate::connectors::kafka::KafkaSourceSpec,
    at: &str,
) -> Result<(), SchemaError> {
    let e = |key: &str, message: &str| SchemaError {
        path: format!("{at}.{key}"),
        message: message.to_string(),
    };
    if k.topics.is_empty() {
        return Err(e("topics", "expected at least one topic"));
    }
    if k.format == crate::connectors::kafka::KafkaFormat::Csv && k.columns.is_empty() {
        return Err(e(
            "columns",
            "CSV payloads need `columns = [...]` (messages carry no header)",
        ));
    }
    crate::connectors::kafka::check_options(
        &k.librdkafka_options,
        &crate::connectors::kafka::CONSUMER_OWNED,
    )
    .map_err(|(key, message)| e(&format!("librdkafka_options.{key}"), &message))
}

/// A topology that cannot be used, located in its file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the topology: {message}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        message: String,
    },
    /// The file was read and something in it is wrong (the user's fault).
    #[error("{file}:{line}: {path}: {message}", line = line.map_or("?".to_string(), |l| l.to_string()))]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line, when it could be located.
        line: Option<usize>,
        /// The key path, e.g. `schema.numeric[2].min`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// A topology checked and compiled into what the dataflow needs.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The topology as written (with command-line overrides applied).
    pub topology: Topology,
    /// The records' source.
    pub source: RecordSource,
    /// Delayed labels: their source and the schema label lines are parsed with
    /// (the id is its key, the label time its event time).
    pub labels: Option<(LabelSourceSpec, Arc<Schema>)>,
    /// The series the monitors watch (`None` without monitors).
    pub watched: Option<millrace_operators::monitor::Watched>,
    /// The compiled schema.
    pub schema: Arc<Schema>,
    /// The compiled features.
    pub features: Arc<Features>,
}

/// The records' source of a compiled topology: exactly one.
#[derive(Clone, Debug)]
pub enum RecordSource {
    /// `[source.landing]`.
    Landing(LandingSpec),
    /// `[source.kafka]`.
    Kafka(crate::connectors::kafka::KafkaSourceSpec),
}

impl RecordSource {
    /// The landing folder, if the source is one.
    pub fn landing(&self) -> Option<&LandingSpec> {
        match self {
            RecordSource::Landing(l) => Some(l),
            RecordSource::Kafka(_) => None,
        }
    }

    /// The landing folder, to override its settings.
    pub fn landing_mut(&mut self) -> Option<&mut LandingSpec> {
        match self {
            RecordSource::Landing(l) => Some(l),
            RecordSource::Kafka(_) => None,
        }
    }

    /// The Kafka source, if the source is one.
    pub fn kafka(&self) -> Option<&crate::connectors::kafka::KafkaSourceSpec> {
        match self {
            RecordSource::Kafka(k) => Some(k),
            RecordSource::Landing(_) => None,
        }
    }

    /// The Kafka source, to override its settings.
    pub fn kafka_mut(&mut self) -> Option<&mut crate::connectors::kafka::KafkaSourceSpec> {
        match self {
            RecordSource::Kafka(k) => Some(k),
            RecordSource::Landing(_) => None,
        }
    }

    /// The source's step id (`landing` or `kafka`): keys its metrics.
    pub fn step_id(&self) -> &'static str {
        match self {
            RecordSource::Landing(_) => "landing",
            RecordSource::Kafka(_) => "kafka",
        }
    }

    /// The connector that reads it.
    pub fn connector(&self) -> &dyn crate::connectors::Source {
        match self {
            RecordSource::Landing(l) => l,
            RecordSource::Kafka(k) => k,
        }
    }
}

impl Compiled {
    /// The sinks the dataflow writes the records to (the lake's tables and
    /// `[sink.csv]`; the Kafka sink is prepared by the runtime, which talks
    /// to the broker first).
    pub fn sinks(&self) -> Vec<Arc<dyn crate::connectors::Sink + Send + Sync>> {
        let mut out = self.topology.lake.sinks();
        if let Some(csv) = &self.topology.sink.csv {
            out.insert(0, Arc::new(csv.clone()));
        }
        out
    }

    /// The delayed labels' connector, if the topology has them.
    pub fn label_source(&self) -> Option<Box<dyn crate::connectors::Source>> {
        let (spec, _) = self.labels.as_ref()?;
        match (spec.landing(), &spec.kafka) {
            (Some(l), _) => Some(Box::new(l)),
            (None, Some(k)) => Some(Box::new(k.clone())),
            (None, None) => None,
        }
    }
}

impl Topology {
    /// Reads, parses and checks a topology file.
    pub fn load(path: &Path) -> Result<Compiled, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Topology::parse(&file, &text)
    }

    /// Parses and checks topology `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Compiled, ConfigError> {
        let invalid = |path: String, span: Option<std::ops::Range<usize>>, message: String| {
            let line = span
                .map(|s| line_of(text, s.start))
                .or_else(|| locate(text, &path));
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                path,
                message,
            }
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid("(syntax)".into(), e.span(), one_line(e.message())))?;
        let topology: Topology = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let path = if path == "." {
                "(top level)".to_string()
            } else {
                path
            };
            invalid(path, inner.span(), one_line(inner.message()))
        })?;
        topology
            .check()
            .map_err(|e| invalid(e.path, None, e.message))
    }

    /// Cross-field checks; compiles schema and features.
    // `!(x > 0.0)` on purpose throughout: a NaN must fail these checks too.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn check(mut self) -> Result<Compiled, SchemaError> {
        let e = |path: &str, message: &str| SchemaError {
            path: path.into(),
            message: message.into(),
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(e(
                "name",
                "expected a lower_snake_case name, e.g. `fraud_scoring`",
            ));
        }
        let (landing, kafka) = (self.source.landing.clone(), self.source.kafka.clone());
        let source = match (&landing, &kafka) {
            (None, None) => return Err(e("source", "expected a source: `[source.landing]` with `path = \"landing\"`, or `[source.kafka]`")),
            (Some(_), Some(_)) => return Err(e("source", "expected one source, found both `landing` and `kafka`")),
            (Some(l), None) => RecordSource::Landing(l.clone()),
            (None, Some(k)) => RecordSource::Kafka(k.clone()),
        };
        if let Some(k) = &kafka {
            check_kafka_source(k, "source.kafka")?;
        }
        if let Some(k) = &self.sink.kafka {
            if k.brokers.is_none() && kafka.is_none() {
                return Err(e(
                    "sink.kafka.brokers",
                    "expected `brokers` (there is no Kafka source to take them from)",
                ));
            }
            if let Err((key, message)) = crate::connectors::kafka::check_options(
                &k.librdkafka_options,
                &crate::connectors::kafka_sink::PRODUCER_OWNED,
            ) {
                return Err(SchemaError {
                    path: format!("sink.kafka.librdkafka_options.{key}"),
                    message,
                });
            }
        }
        if let Some(w) = &self.alerts.webhook {
            crate::connectors::webhook::Webhook::new(w.clone())
                .map_err(|m| e(m.key().unwrap_or("alerts.webhook"), &m.to_string()))?;
        }
        if let Some(m) = &self.alerts.email {
            crate::connectors::email::Email::new(m.clone())
                .map_err(|err| e(err.key().unwrap_or("alerts.email"), &err.to_string()))?;
        }
        if let Some(k) = &self.alerts.kafka {
            if k.brokers.is_none() && kafka.is_none() {
                return Err(e(
                    "alerts.kafka.brokers",
                    "expected `brokers` (there is no Kafka source to take them from)",
                ));
            }
        }
        if self.runtime.records_per_epoch == 0 {
            return Err(e(
                "runtime.records_per_epoch",
                "expected a positive number of records",
            ));
        }
        if self.runtime.max_epochs_in_flight == 0 {
            return Err(e("runtime.max_epochs_in_flight", "expected at least 1"));
        }
        // The value is not quoted back: someone may have pasted the token itself.
        if let Some(name) = &self.runtime.http_token_env {
            if !is_env_name(name) {
                return Err(e(
                    "runtime.http_token_env",
                    "expected the NAME of an environment variable that holds the token (ASCII letters, digits and `_`, e.g. \"MILLRACE_HTTP_TOKEN\"), never the token itself",
                ));
            }
        }
        for (i, host) in self.runtime.http_allowed_hosts.iter().enumerate() {
            if let Some(problem) = host_entry_problem(host) {
                return Err(e(&format!("runtime.http_allowed_hosts[{i}]"), problem));
            }
        }
        let m = &self.model;
        if m.alpha.is_some_and(|a| !(a > 0.0)) {
            return Err(e("model.alpha", "expected a positive α"));
        }
        if m.beta.is_some_and(|b| !(b >= 0.0)) {
            return Err(e("model.beta", "expected β ≥ 0"));
        }
        if !(m.l1 >= 0.0) {
            return Err(e("model.l1", "expected a penalty ≥ 0"));
        }
        if m.refresh_records == Some(0) {
            return Err(e("model.refresh_records", "expected at least 1 record"));
        }
        if m.refresh_event_seconds.is_some_and(|s| !(s > 0.0)) {
            return Err(e(
                "model.refresh_event_seconds",
                "expected a positive number of seconds",
            ));
        }
        let ftrl_only = [
            ("alpha", m.alpha.is_some()),
            ("beta", m.beta.is_some()),
            ("l1", m.l1 != 0.0),
        ];
        if m.kind != ModelKind::Ftrl {
            if let Some((key, _)) = ftrl_only.iter().find(|(_, set)| *set) {
                return Err(e(
                    &format!("model.{key}"),
                    "only `kind = \"ftrl\"` takes this",
                ));
            }
        }
        if !(self.model.learning_rate > 0.0) {
            return Err(e(
                "model.learning_rate",
                "expected a positive learning rate",
            ));
        }
        if self.model.l2 < 0.0 {
            return Err(e("model.l2", "expected a penalty ≥ 0"));
        }
        if !(0.0..=1.0).contains(&self.model.threshold) {
            return Err(e("model.threshold", "expected a probability in [0, 1]"));
        }
        for (section, m) in std::iter::once(("model", &self.model))
            .chain(self.challenger.as_ref().map(|c| ("challenger", c)))
        {
            if m.trees == Some(0) {
                return Err(e(&format!("{section}.trees"), "expected at least 1 tree"));
            }
            if m.max_features == Some(0) {
                return Err(e(
                    &format!("{section}.max_features"),
                    "expected at least 1 input per leaf",
                ));
            }
            if m.max_size_mb.is_some_and(|mb| !(mb > 0.0)) {
                return Err(e(
                    &format!("{section}.max_size_mb"),
                    "expected a size in MiB > 0",
                ));
            }
            if m.lambda.is_some_and(|l| !(l > 0.0 && l <= 100.0)) {
                return Err(e(
                    &format!("{section}.lambda"),
                    "expected a Poisson rate in (0, 100]",
                ));
            }
            if m.tie_threshold
                .is_some_and(|t| !(t >= 0.0 && t.is_finite()))
            {
                return Err(e(
                    &format!("{section}.tie_threshold"),
                    "expected a bound ≥ 0",
                ));
            }
            // Keys of one kind of learner only: (key, set, taken).
            let forest = m.kind == ModelKind::AdaptiveRandomForest;
            let tree = forest || m.kind == ModelKind::HoeffdingTree;
            let trees = "`kind = \"hoeffding_tree\"` or `\"adaptive_random_forest\"`";
            let forests = "`kind = \"adaptive_random_forest\"`";
            let keys = [
                ("grace_period", m.grace_period.is_some(), tree, trees),
                (
                    "split_confidence",
                    m.split_confidence.is_some(),
                    tree,
                    trees,
                ),
                ("tie_threshold", m.tie_threshold.is_some(), tree, trees),
                ("max_depth", m.max_depth.is_some(), tree, trees),
                ("max_size_mb", m.max_size_mb.is_some(), tree, trees),
                ("leaf_prediction", m.leaf_prediction.is_some(), tree, trees),
                ("trees", m.trees.is_some(), forest, forests),
                ("max_features", m.max_features.is_some(), forest, forests),
                ("lambda", m.lambda.is_some(), forest, forests),
                ("seed", m.seed.is_some(), forest, forests),
            ];
            if let Some((key, .., takers)) = keys.iter().find(|(_, set, taken, _)| *set && !*taken)
            {
                return Err(e(
                    &format!("{section}.{key}"),
                    &format!("only {takers} takes this"),
                ));
            }
        }
        if self.checkpoint.keep == 0 {
            return Err(e(
                "checkpoint.keep",
                "expected at least 1 checkpoint to keep",
            ));
        }
        if self.lake.tables.is_empty() {
            return Err(e("lake.tables", "expected at least one table"));
        }
        let lake = self.lake.path.to_string_lossy().to_string();
        self.lake.path =
            crate::core::storage::parse(&lake).map_err(|err| e("lake.path", &err.to_string()))?;
        if let Some(registry) = self.model.registry.as_mut() {
            let text = registry.to_string_lossy().to_string();
            *registry = crate::core::storage::parse(&text)
                .map_err(|err| e("model.registry", &err.to_string()))?;
        }
        if self.sink.csv.is_some() && crate::core::storage::is_remote(&self.lake.path) {
            return Err(e(
                "sink.csv",
                "the CSV sink writes local files and cannot write under an object-store lake; use a local lake or drop `[sink.csv]`",
            ));
        }
        let schema = Arc::new(Schema::new(&self.schema)?);
        let learns = self.model.kind != ModelKind::Feature;
        let regression = schema
            .label
            .as_ref()
            .is_some_and(|l| l.kind == millrace_operators::schema::LabelKind::Regression);
        match (self.model.kind, regression) {
            (ModelKind::LinearRegression, false) if schema.label.is_some() => {
                return Err(e(
                    "model.kind",
                    "`linear_regression` predicts a number: declare the label with `kind = \"regression\"`",
                ))
            }
            (
                ModelKind::LogisticRegression
                | ModelKind::Ftrl
                | ModelKind::HoeffdingTree
                | ModelKind::AdaptiveRandomForest,
                true,
            ) => {
                return Err(e(
                    "model.kind",
                    "this learner is a binary classifier; a `regression` label needs `kind = \"linear_regression\"`",
                ))
            }
            _ => {}
        }
        if let Some(c) = &self.challenger {
            let classifier = matches!(
                c.kind,
                ModelKind::LogisticRegression
                    | ModelKind::Ftrl
                    | ModelKind::HoeffdingTree
                    | ModelKind::AdaptiveRandomForest
            );
            if c.kind == ModelKind::Feature || classifier == regression || !learns {
                return Err(e(
                    "challenger.kind",
                    "expected a learner of the champion's kind of label (a classifier for a binary label, `linear_regression` for a regression one) beside a learning `[model]`",
                ));
            }
            if c.warm_start.is_some() {
                return Err(e(
                    "challenger.warm_start",
                    "a challenger starts from zero; warm-start the champion with `[model] warm_start`",
                ));
            }
        }
        if self.promotion.is_some() && self.challenger.is_none() {
            return Err(e("promotion", "expected a `[challenger]` to promote"));
        }
        if let Some(p) = &self.promotion {
            if p.margin.is_nan() || p.margin < 0.0 || p.window_records == 0 {
                return Err(e(
                    "promotion",
                    "expected `margin` ≥ 0 and `window_records` ≥ 1",
                ));
            }
        }
        if self.model.feature.is_some() && learns {
            return Err(e(
                "model.feature",
                "only `kind = \"feature\"` models read a feature as the score",
            ));
        }
        if learns && schema.label.is_none() && !self.features.is_empty() {
            return Err(e(
                "schema.label",
                "the model learns from labels: declare `label = { field = \"...\" }`",
            ));
        }
        let features = Arc::new(Features::new(schema.clone(), &self.features)?);
        if features.dense_len() + features.sparse_len() == 0 {
            return Err(e(
                "features",
                "expected at least one `[[features]]` entry for the model",
            ));
        }
        if !learns {
            let Some(name) = &self.model.feature else {
                return Err(e(
                    "model.feature",
                    "expected the dense feature whose value is the score",
                ));
            };
            if !features.dense_names.contains(name) {
                return Err(SchemaError {
                    path: "model.feature".into(),
                    message: format!(
                        "`{name}` is not a dense feature (declared: {})",
                        features.dense_names.join(", ")
                    ),
                });
            }
        }
        let watched = if self.monitors.is_empty() {
            None
        } else {
            Some(millrace_operators::monitor::Watched::new(
                &schema,
                &self.monitors,
            )?)
        };
        let labels = match &self.source.labels {
            None => None,
            Some(l) => {
                if schema.id.is_empty() {
                    return Err(e(
                        "schema.id",
                        "`[source.labels]` joins labels to records by id: expected `id = \"...\"` naming the record id field",
                    ));
                }
                let Some(label) = &schema.label else {
                    return Err(e(
                        "schema.label",
                        "`[source.labels]` needs the label declared: `label = { field = \"...\" }`",
                    ));
                };
                if l.horizon_ms <= 0 {
                    return Err(e(
                        "source.labels.horizon_ms",
                        "expected a positive number of milliseconds",
                    ));
                }
                if l.max_waiting == 0 {
                    return Err(e(
                        "source.labels.max_waiting",
                        "expected at least 1 prediction",
                    ));
                }
                match (&l.path, &l.kafka) {
                    (None, None) => {
                        return Err(e(
                            "source.labels",
                            "expected where labels come from: `path = \"labels\"` (a folder) or `[source.labels.kafka]`",
                        ))
                    }
                    (Some(_), Some(_)) => {
                        return Err(e(
                            "source.labels",
                            "expected one label source, found both `path` and `kafka`",
                        ))
                    }
                    (Some(path), None) => {
                        if landing.as_ref().is_some_and(|s| s.path == *path) {
                            return Err(e(
                                "source.labels.path",
                                "expected a folder of its own, not the records' landing folder",
                            ));
                        }
                    }
                    (None, Some(k)) => {
                        check_kafka_source(k, "source.labels.kafka")?;
                        if let Some(t) = kafka.as_ref().and_then(|r| {
                            k.topics.iter().find(|t| r.topics.contains(t))
                        }) {
                            return Err(e(
                                "source.labels.kafka.topics",
                                &format!("expected topics of their own, but `{t}` is also a record topic"),
                            ));
                        }
                    }
                }
                let id = l.id.clone().unwrap_or_else(|| schema.id.clone());
                let field = l.label.clone().unwrap_or_else(|| label.field.clone());
                if id == field || l.time.as_ref().is_some_and(|t| *t == id || *t == field) {
                    return Err(e(
                        "source.labels",
                        "expected distinct `id`, `label` and `time` fields",
                    ));
                }
                let ls = Schema {
                    event_time: millrace_operators::schema::EventTimeSpec {
                        field: l.time.clone().unwrap_or_default(),
                        ..schema.event_time.clone()
                    },
                    key: id,
                    id: String::new(),
                    label: Some(millrace_operators::schema::LabelSpec {
                        field,
                        ..label.clone()
                    }),
                    numeric: Vec::new(),
                    categorical: Vec::new(),
                };
                Some((l.clone(), Arc::new(ls)))
            }
        };
        Ok(Compiled {
            source,
            labels,
            watched,
            topology: self,
            schema,
            features,
        })
    }
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', " ")
}

/// 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Finds the line of a key path such as `features[1].field` (or its nearest
/// existing ancestor) in `text`.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table: &DeTable = doc.get_ref();
    let mut value: Option<&toml::Spanned<DeValue>> = None;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !name.is_empty() {
            // A key that is not there (yet) is placed at its nearest ancestor.
            let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name) else {
                break;
            };
            best = Some(k.span().start);
            value = Some(v);
        }
        if let Some(i) = index {
            if let Some(DeValue::Array(a)) = value.map(|v| v.get_ref()) {
                let item = a.get(i)?;
                best = Some(item.span().start);
                value = Some(item);
            }
        }
        match value.map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => table = t,
            _ => {
                if part != path.split('.').next_back().unwrap_or_default() {
                    break;
                }
            }
        }
    }
    best.map(|offset| line_of(text, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "t"

[source.landing]
path = "landing"

[schema]
key = "account"
event_time = { field = "event_time" }
label = { field = "label" }

[[schema.numeric]]
name = "amount"
min = 0.0

[[features]]
kind = "log1p"
field = "amount"

[lake]
path = "lake"
"#;

    fn error(text: &str) -> (Option<usize>, String, String) {
        match Topology::parse("t.toml", text) {
            Err(ConfigError::Invalid {
                line,
                path,
                message,
                ..
            }) => (line, path, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn good_topology_compiles() {
        let c = Topology::parse("t.toml", GOOD).unwrap();
        assert_eq!(c.features.dense_names, ["amount"]);
        assert_eq!(c.topology.lake.tables.len(), 4);
        assert_eq!(c.topology.runtime.records_per_epoch, 10_000);
    }

    #[test]
    fn delayed_labels_need_an_id_and_a_folder_of_their_own() {
        let labels = GOOD.replace(
            "[schema]",
            "[source.labels]\npath = \"labels\"\ntime = \"labelled_at\"\n\n[schema]",
        );
        let (line, path, message) = error(&labels);
        assert_eq!((line, path.as_str()), (Some(10), "schema.id"), "{message}");
        assert!(message.contains("expected `id"), "{message}");
        let ok = Topology::parse(
            "t.toml",
            &labels.replace("key = \"account\"", "key = \"account\"\nid = \"tx_id\""),
        )
        .unwrap();
        let (spec, schema) = ok.labels.expect("labels compiled");
        assert_eq!(
            (schema.key.as_str(), schema.event_time.field.as_str()),
            ("tx_id", "labelled_at")
        );
        assert_eq!(spec.horizon_ms, 24 * 3600 * 1000);
        let (_, path, _) = error(&labels.replace("path = \"labels\"", "path = \"landing\""));
        assert_eq!(path, "schema.id", "the id is checked first");
    }

    #[test]
    fn forest_settings_are_checked_by_key() {
        let forest =
            |extra: &str| format!("{GOOD}\n[model]\nkind = \"adaptive_random_forest\"\n{extra}\n");
        let ok = Topology::parse(
            "t.toml",
            &forest("trees = 3\nmax_features = 1\nlambda = 1.0"),
        )
        .unwrap();
        assert_eq!(ok.topology.model.trees, Some(3));
        for (extra, key) in [
            ("trees = 0", "model.trees"),
            ("max_features = 0", "model.max_features"),
            ("lambda = 0.0", "model.lambda"),
            ("lambda = nan", "model.lambda"),
            ("max_size_mb = 0.0", "model.max_size_mb"),
            ("tie_threshold = -1.0", "model.tie_threshold"),
            ("leaf_prediction = \"linear\"", "model.leaf_prediction"),
        ] {
            let (line, path, message) = error(&forest(extra));
            assert_eq!(path, key, "{extra}: {message}");
            assert_eq!(
                line,
                Some(GOOD.lines().count() + 4),
                "{extra}: the key's own line"
            );
        }
    }

    #[test]
    fn tree_keys_are_refused_for_other_learners() {
        for (kind, extra, key) in [
            (
                "logistic_regression",
                "grace_period = 10",
                "model.grace_period",
            ),
            (
                "ftrl",
                "leaf_prediction = \"logistic\"",
                "model.leaf_prediction",
            ),
            ("hoeffding_tree", "trees = 3", "model.trees"),
        ] {
            let text = format!("{GOOD}\n[model]\nkind = \"{kind}\"\n{extra}\n");
            let (line, path, message) = error(&text);
            assert_eq!(path, key, "{kind}: {message}");
            assert!(message.contains("only `kind"), "{message}");
            assert_eq!(line, Some(GOOD.lines().count() + 4));
        }
        let ok = format!(
            "{GOOD}\n[model]\nkind = \"hoeffding_tree\"\nleaf_prediction = \"logistic\"\ntie_threshold = 0.0\n"
        );
        Topology::parse("t.toml", &ok).unwrap();
    }

    #[test]
    fn labels_come_from_one_folder_or_kafka() {
        let with = |source: &str| {
            GOOD.replace(
                "[schema]",
                &format!("[source.labels]\n{source}\n\n[schema]"),
            )
            .replace("key = \"account\"", "key = \"account\"\nid = \"tx_id\"")
        };
        let kafka = "[source.labels.kafka]\nbrokers = \"127.0.0.1:9092\"\ntopics = [\"labels\"]\ngroup_id = \"g\"";
        let ok = Topology::parse("t.toml", &with(kafka)).unwrap();
        let (spec, _) = ok.labels.expect("labels compiled");
        assert_eq!(
            spec.kafka.as_ref().expect("a Kafka label source").topics,
            ["labels"]
        );
        assert!(spec.landing().is_none());

        let (line, path, message) = error(&with("horizon_ms = 1000"));
        assert_eq!(
            (line, path.as_str()),
            (Some(6), "source.labels"),
            "{message}"
        );
        assert!(message.contains("`[source.labels.kafka]`"), "{message}");
        let (_, path, message) = error(&with(&format!("path = \"labels\"\n{kafka}")));
        assert_eq!(path, "source.labels", "{message}");
        assert!(message.contains("found both"), "{message}");
        let (_, path, _) = error(&with(&kafka.replace("[\"labels\"]", "[]")));
        assert_eq!(path, "source.labels.kafka.topics");
        let (_, path, _) = error(&with(&format!("{kafka}\nformat = \"csv\"")));
        assert_eq!(path, "source.labels.kafka.columns");
        let (_, path, _) = error(&with(&format!(
            "{kafka}\n[source.labels.kafka.librdkafka_options]\n\"sasl.password\" = \"x\""
        )));
        assert_eq!(path, "source.labels.kafka.librdkafka_options.sasl.password");
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let (line, path, message) = error(&GOOD.replace("min = 0.0", "min = 0.0\nmaxx = 3"));
        assert_eq!(line, Some(14));
        assert_eq!(path, "schema.numeric[0].maxx");
        assert!(
            message.contains("unknown field `maxx`") && message.contains("expected one of"),
            "{message}"
        );
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let (line, path, message) = error(&GOOD.replace("min = 0.0", "min = \"zero\""));
        assert_eq!((line, path.as_str()), (Some(13), "schema.numeric[0].min"));
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn semantic_error_is_located() {
        let (line, path, message) = error(&GOOD.replace("field = \"amount\"", "field = \"amt\""));
        assert_eq!((line, path.as_str()), (Some(17), "features[0].field"));
        assert!(
            message.contains("`amt` is not a numeric field")
                && message.contains("declared: amount"),
            "{message}"
        );
    }

    #[test]
    fn missing_section_and_syntax_errors() {
        let (_, path, message) = error(&GOOD.replace("[lake]\npath = \"lake\"\n", ""));
        assert_eq!(path, "(top level)");
        assert!(message.contains("missing field `lake`"), "{message}");
        let (line, path, _) = error(&GOOD.replace("path = \"lake\"", "path = \"lake"));
        assert_eq!((line, path.as_str()), (Some(20), "(syntax)"));
        let (_, path, _) = error(&GOOD.replace("[source.landing]\npath = \"landing\"", "[source]"));
        assert_eq!(path, "source");
    }

    #[test]
    fn display_names_file_line_and_path() {
        let e = Topology::parse(
            "topologies/x.toml",
            &GOOD.replace("min = 0.0", "min = \"zero\""),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("topologies/x.toml:13: schema.numeric[0].min: "),
            "{e}"
        );
    }

    #[test]
    fn the_live_view_keys_name_a_variable_and_hosts() {
        let with = |runtime: &str| format!("{GOOD}\n[runtime]\n{runtime}\n");
        let ok = Topology::parse(
            "t.toml",
            &with("http_token_env = \"MILLRACE_HTTP_TOKEN\"\nhttp_allowed_hosts = [\"millrace.internal\", \"10.0.0.5:9898\", \"[fd00::5]:9898\", \"[::1]\"]"),
        )
        .unwrap();
        assert_eq!(
            ok.topology.runtime.http_token_env.as_deref(),
            Some("MILLRACE_HTTP_TOKEN")
        );
        assert_eq!(ok.topology.runtime.http_allowed_hosts.len(), 4);
        // A pasted token is refused, and not quoted back.
        let (_, path, message) = error(&with("http_token_env = \"s3cr3t-t0ken/value+\""));
        assert_eq!(path, "runtime.http_token_env");
        assert!(!message.contains("s3cr3t"), "{message}");
        for bad in [
            "http://millrace.internal",
            "millrace.internal/report",
            "*.example",
            "",
            "host:notaport",
            "[fd00::5",
            "[fd00::5]9898",
            "a b",
        ] {
            let (_, path, _) = error(&with(&format!("http_allowed_hosts = [\"ok\", \"{bad}\"]")));
            assert_eq!(path, "runtime.http_allowed_hosts[1]", "{bad}");
        }
    }
}

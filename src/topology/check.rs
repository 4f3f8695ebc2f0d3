//! The cross-field checks of a parsed [`Topology`]: what serde cannot say
//! (one source, positive sizes, keys only some learners take, labels joined
//! by an id the schema declares). [`Topology::check`] runs them section by
//! section and compiles the schema, the features and the monitors' watch
//! list, so nothing downstream re-validates.
//!
//! `!(x > 0.0)` on purpose throughout: a NaN must fail these checks too.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::sync::Arc;

use millrace_operators::featurize::Features;
use millrace_operators::learn::logistic::{ModelKind, ModelSpec};
use millrace_operators::monitor::Watched;
use millrace_operators::schema::{EventTimeSpec, LabelKind, LabelSpec, Schema, SchemaError};

use super::{Compiled, LabelSourceSpec, RecordSource, Topology};
use crate::connectors::kafka::{check_options, KafkaFormat, KafkaSourceSpec, CONSUMER_OWNED};
use crate::connectors::landing::LandingSpec;

/// The error at key path `path`.
fn err(path: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.into(),
        message: message.into(),
    }
}

impl Topology {
    /// Cross-field checks; compiles schema and features.
    pub fn check(mut self) -> Result<Compiled, SchemaError> {
        self.check_name()?;
        let source = self.check_source()?;
        self.check_sinks_and_alerts()?;
        self.check_runtime()?;
        check_ftrl_keys(&self.model)?;
        for (section, m) in std::iter::once(("model", &self.model))
            .chain(self.challenger.as_ref().map(|c| ("challenger", c)))
        {
            check_learner_keys(section, m)?;
        }
        if self.checkpoint.keep == 0 {
            return Err(err(
                "checkpoint.keep",
                "expected at least 1 checkpoint to keep",
            ));
        }
        if self.lake.tables.is_empty() {
            return Err(err("lake.tables", "expected at least one table"));
        }
        if let Some(c) = &self.lake.compaction {
            if !(c.target_file_mb > 0.0 && c.target_file_mb.is_finite()) {
                return Err(err(
                    "lake.compaction.target_file_mb",
                    "expected a size in MiB > 0",
                ));
            }
            if c.interval_ms == 0 {
                return Err(err(
                    "lake.compaction.interval_ms",
                    "expected an interval > 0",
                ));
            }
        }
        self.check_locations()?;
        let schema = Arc::new(Schema::new(&self.schema)?);
        self.check_learners(&schema)?;
        let features = self.check_features(&schema)?;
        let watched = if self.monitors.is_empty() {
            None
        } else {
            Some(Watched::new(&schema, &self.monitors)?)
        };
        let labels = match &self.source.labels {
            None => None,
            Some(l) => Some(self.check_labels(l, &schema)?),
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

    /// The lake, the registry and the landing folder: a local path or an
    /// object-store URL (normalised here); the CSV sink needs a local lake.
    fn check_locations(&mut self) -> Result<(), SchemaError> {
        use crate::core::storage::{is_remote, parse};
        let lake = self.lake.path.to_string_lossy().to_string();
        self.lake.path = parse(&lake).map_err(|e| err("lake.path", e.to_string()))?;
        if let Some(registry) = self.model.registry.as_mut() {
            let text = registry.to_string_lossy().to_string();
            *registry = parse(&text).map_err(|e| err("model.registry", e.to_string()))?;
        }
        if let Some(l) = self.source.landing.as_mut() {
            let text = l.path.to_string_lossy().to_string();
            l.path = parse(&text).map_err(|e| err("source.landing.path", e.to_string()))?;
        }
        if self.sink.csv.is_some() && is_remote(&self.lake.path) {
            return Err(err(
                "sink.csv",
                "the CSV sink writes local files and cannot write under an object-store lake; use a local lake or drop `[sink.csv]`",
            ));
        }
        Ok(())
    }

    fn check_name(&self) -> Result<(), SchemaError> {
        let snake = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if self.name.is_empty() || !self.name.chars().all(snake) {
            return Err(err(
                "name",
                "expected a lower_snake_case name, e.g. `fraud_scoring`",
            ));
        }
        Ok(())
    }

    /// Exactly one source of records.
    fn check_source(&self) -> Result<RecordSource, SchemaError> {
        match (&self.source.landing, &self.source.kafka) {
            (None, None) => Err(err("source", "expected a source: `[source.landing]` with `path = \"landing\"`, or `[source.kafka]`")),
            (Some(_), Some(_)) => Err(err("source", "expected one source, found both `landing` and `kafka`")),
            (Some(l), None) => Ok(RecordSource::Landing(l.clone())),
            (None, Some(k)) => {
                check_kafka_source(k, "source.kafka")?;
                Ok(RecordSource::Kafka(k.clone()))
            }
        }
    }

    /// The Kafka sink and the alert channels: built once here, so a bad
    /// address or option is the topology's error.
    fn check_sinks_and_alerts(&self) -> Result<(), SchemaError> {
        let no_source_brokers = self.source.kafka.is_none();
        if let Some(k) = &self.sink.kafka {
            if k.brokers.is_none() && no_source_brokers {
                return Err(err(
                    "sink.kafka.brokers",
                    "expected `brokers` (there is no Kafka source to take them from)",
                ));
            }
            check_options(
                &k.librdkafka_options,
                &crate::connectors::kafka_sink::PRODUCER_OWNED,
            )
            .map_err(|(key, message)| {
                err(format!("sink.kafka.librdkafka_options.{key}"), message)
            })?;
        }
        if let Some(w) = &self.alerts.webhook {
            crate::connectors::webhook::Webhook::new(w.clone())
                .map_err(|m| err(m.key().unwrap_or("alerts.webhook"), m.to_string()))?;
        }
        if let Some(m) = &self.alerts.email {
            crate::connectors::email::Email::new(m.clone())
                .map_err(|e| err(e.key().unwrap_or("alerts.email"), e.to_string()))?;
        }
        if let Some(k) = &self.alerts.kafka {
            if k.brokers.is_none() && no_source_brokers {
                return Err(err(
                    "alerts.kafka.brokers",
                    "expected `brokers` (there is no Kafka source to take them from)",
                ));
            }
        }
        Ok(())
    }

    fn check_runtime(&self) -> Result<(), SchemaError> {
        let r = &self.runtime;
        if r.records_per_epoch == 0 {
            return Err(err(
                "runtime.records_per_epoch",
                "expected a positive number of records",
            ));
        }
        if r.max_epochs_in_flight == 0 {
            return Err(err("runtime.max_epochs_in_flight", "expected at least 1"));
        }
        // The value is not quoted back: someone may have pasted the token itself.
        if r.http_token_env.as_ref().is_some_and(|n| !is_env_name(n)) {
            return Err(err(
                "runtime.http_token_env",
                "expected the NAME of an environment variable that holds the token (ASCII letters, digits and `_`, e.g. \"MILLRACE_HTTP_TOKEN\"), never the token itself",
            ));
        }
        for (i, host) in r.http_allowed_hosts.iter().enumerate() {
            if let Some(problem) = host_entry_problem(host) {
                return Err(err(format!("runtime.http_allowed_hosts[{i}]"), problem));
            }
        }
        Ok(())
    }

    /// The learners against the label: a classifier for a binary label,
    /// `linear_regression` for a regression one; the challenger beside a
    /// learning champion; a promotion rule only with a challenger.
    fn check_learners(&self, schema: &Schema) -> Result<(), SchemaError> {
        let learns = self.model.kind != ModelKind::Feature;
        let regression = schema
            .label
            .as_ref()
            .is_some_and(|l| l.kind == LabelKind::Regression);
        let classifier = |kind: ModelKind| {
            matches!(
                kind,
                ModelKind::LogisticRegression
                    | ModelKind::Ftrl
                    | ModelKind::HoeffdingTree
                    | ModelKind::AdaptiveRandomForest
            )
        };
        if self.model.kind == ModelKind::LinearRegression && !regression && schema.label.is_some() {
            return Err(err(
                "model.kind",
                "`linear_regression` predicts a number: declare the label with `kind = \"regression\"`",
            ));
        }
        if classifier(self.model.kind) && regression {
            return Err(err(
                "model.kind",
                "this learner is a binary classifier; a `regression` label needs `kind = \"linear_regression\"`",
            ));
        }
        if let Some(c) = &self.challenger {
            if c.kind == ModelKind::Feature || classifier(c.kind) == regression || !learns {
                return Err(err(
                    "challenger.kind",
                    "expected a learner of the champion's kind of label (a classifier for a binary label, `linear_regression` for a regression one) beside a learning `[model]`",
                ));
            }
            if c.warm_start.is_some() {
                return Err(err(
                    "challenger.warm_start",
                    "a challenger starts from zero; warm-start the champion with `[model] warm_start`",
                ));
            }
        }
        if let Some(p) = &self.promotion {
            if self.challenger.is_none() {
                return Err(err("promotion", "expected a `[challenger]` to promote"));
            }
            if p.margin.is_nan() || p.margin < 0.0 || p.window_records == 0 {
                return Err(err(
                    "promotion",
                    "expected `margin` ≥ 0 and `window_records` ≥ 1",
                ));
            }
        }
        if self.model.feature.is_some() && learns {
            return Err(err(
                "model.feature",
                "only `kind = \"feature\"` models read a feature as the score",
            ));
        }
        if learns && schema.label.is_none() && !self.features.is_empty() {
            return Err(err(
                "schema.label",
                "the model learns from labels: declare `label = { field = \"...\" }`",
            ));
        }
        Ok(())
    }

    /// Compiles the features; a `feature` model needs the dense one it reads.
    fn check_features(&self, schema: &Arc<Schema>) -> Result<Arc<Features>, SchemaError> {
        let features = Arc::new(Features::new(schema.clone(), &self.features)?);
        if features.dense_len() + features.sparse_len() == 0 {
            return Err(err(
                "features",
                "expected at least one `[[features]]` entry for the model",
            ));
        }
        if self.model.kind == ModelKind::Feature {
            let Some(name) = &self.model.feature else {
                return Err(err(
                    "model.feature",
                    "expected the dense feature whose value is the score",
                ));
            };
            if !features.dense_names.contains(name) {
                return Err(err(
                    "model.feature",
                    format!(
                        "`{name}` is not a dense feature (declared: {})",
                        features.dense_names.join(", ")
                    ),
                ));
            }
        }
        Ok(features)
    }

    /// Delayed labels: joined by the schema's id, from a folder or topics of
    /// their own; returns them with the schema their lines are read with.
    fn check_labels(
        &self,
        l: &LabelSourceSpec,
        schema: &Schema,
    ) -> Result<(LabelSourceSpec, Arc<Schema>), SchemaError> {
        if schema.id.is_empty() {
            return Err(err(
                "schema.id",
                "`[source.labels]` joins labels to records by id: expected `id = \"...\"` naming the record id field",
            ));
        }
        let Some(label) = &schema.label else {
            return Err(err(
                "schema.label",
                "`[source.labels]` needs the label declared: `label = { field = \"...\" }`",
            ));
        };
        if l.horizon_ms <= 0 {
            return Err(err(
                "source.labels.horizon_ms",
                "expected a positive number of milliseconds",
            ));
        }
        if l.max_waiting == 0 {
            return Err(err(
                "source.labels.max_waiting",
                "expected at least 1 prediction",
            ));
        }
        self.check_label_source(l)?;
        let id = l.id.clone().unwrap_or_else(|| schema.id.clone());
        let field = l.label.clone().unwrap_or_else(|| label.field.clone());
        if id == field || l.time.as_ref().is_some_and(|t| *t == id || *t == field) {
            return Err(err(
                "source.labels",
                "expected distinct `id`, `label` and `time` fields",
            ));
        }
        let labels_schema = Schema {
            event_time: EventTimeSpec {
                field: l.time.clone().unwrap_or_default(),
                ..schema.event_time.clone()
            },
            key: id,
            id: String::new(),
            label: Some(LabelSpec {
                field,
                ..label.clone()
            }),
            numeric: Vec::new(),
            categorical: Vec::new(),
        };
        Ok((l.clone(), Arc::new(labels_schema)))
    }

    /// One label source, apart from the records'.
    fn check_label_source(&self, l: &LabelSourceSpec) -> Result<(), SchemaError> {
        match (&l.path, &l.kafka) {
            (None, None) => Err(err(
                "source.labels",
                "expected where labels come from: `path = \"labels\"` (a folder) or `[source.labels.kafka]`",
            )),
            (Some(_), Some(_)) => Err(err(
                "source.labels",
                "expected one label source, found both `path` and `kafka`",
            )),
            (Some(path), None) => {
                let records: Option<&LandingSpec> = self.source.landing.as_ref();
                if records.is_some_and(|s| s.path == *path) {
                    return Err(err(
                        "source.labels.path",
                        "expected a folder of its own, not the records' landing folder",
                    ));
                }
                Ok(())
            }
            (None, Some(k)) => {
                check_kafka_source(k, "source.labels.kafka")?;
                let records = self.source.kafka.as_ref();
                if let Some(t) = records.and_then(|r| k.topics.iter().find(|t| r.topics.contains(t))) {
                    return Err(err(
                        "source.labels.kafka.topics",
                        format!("expected topics of their own, but `{t}` is also a record topic"),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The keys only `kind = "ftrl"` takes, and the model's rates and penalties.
fn check_ftrl_keys(m: &ModelSpec) -> Result<(), SchemaError> {
    if m.alpha.is_some_and(|a| !(a > 0.0)) {
        return Err(err("model.alpha", "expected a positive α"));
    }
    if m.beta.is_some_and(|b| !(b >= 0.0)) {
        return Err(err("model.beta", "expected β ≥ 0"));
    }
    if !(m.l1 >= 0.0) {
        return Err(err("model.l1", "expected a penalty ≥ 0"));
    }
    if m.refresh_records == Some(0) {
        return Err(err("model.refresh_records", "expected at least 1 record"));
    }
    if m.refresh_event_seconds.is_some_and(|s| !(s > 0.0)) {
        return Err(err(
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
            return Err(err(
                format!("model.{key}"),
                "only `kind = \"ftrl\"` takes this",
            ));
        }
    }
    if !(m.learning_rate > 0.0) {
        return Err(err(
            "model.learning_rate",
            "expected a positive learning rate",
        ));
    }
    if m.l2 < 0.0 {
        return Err(err("model.l2", "expected a penalty ≥ 0"));
    }
    if !(0.0..=1.0).contains(&m.threshold) {
        return Err(err("model.threshold", "expected a probability in [0, 1]"));
    }
    Ok(())
}

/// The tree and forest keys of `[model]` or `[challenger]` (`section`):
/// their ranges, and only on the learners that take them.
fn check_learner_keys(section: &str, m: &ModelSpec) -> Result<(), SchemaError> {
    let at = |key: &str| format!("{section}.{key}");
    if m.trees == Some(0) {
        return Err(err(at("trees"), "expected at least 1 tree"));
    }
    if m.max_features == Some(0) {
        return Err(err(
            at("max_features"),
            "expected at least 1 input per leaf",
        ));
    }
    if m.max_size_mb.is_some_and(|mb| !(mb > 0.0)) {
        return Err(err(at("max_size_mb"), "expected a size in MiB > 0"));
    }
    if m.lambda.is_some_and(|l| !(l > 0.0 && l <= 100.0)) {
        return Err(err(at("lambda"), "expected a Poisson rate in (0, 100]"));
    }
    if m.tie_threshold
        .is_some_and(|t| !(t >= 0.0 && t.is_finite()))
    {
        return Err(err(at("tie_threshold"), "expected a bound ≥ 0"));
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
    match keys.iter().find(|(_, set, taken, _)| *set && !*taken) {
        Some((key, .., takers)) => Err(err(at(key), format!("only {takers} takes this"))),
        None => Ok(()),
    }
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
pub(super) fn host_entry_problem(entry: &str) -> Option<&'static str> {
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

/// The checks a Kafka source's settings need wherever they appear (`at`:
/// `source.kafka` or `source.labels.kafka`).
fn check_kafka_source(k: &KafkaSourceSpec, at: &str) -> Result<(), SchemaError> {
    if k.topics.is_empty() {
        return Err(err(format!("{at}.topics"), "expected at least one topic"));
    }
    if k.format == KafkaFormat::Csv && k.columns.is_empty() {
        return Err(err(
            format!("{at}.columns"),
            "CSV payloads need `columns = [...]` (messages carry no header)",
        ));
    }
    check_options(&k.librdkafka_options, &CONSUMER_OWNED)
        .map_err(|(key, message)| err(format!("{at}.librdkafka_options.{key}"), message))
}

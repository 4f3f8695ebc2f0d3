//! Metric names, in one place, and the Prometheus recorder.
//!
//! Names follow `millrace_<what>_<unit>`, counters end in `_total`, and labels
//! are bounded: step ids, tables, reject reasons, Kafka topics and partitions
//! — never a record key. Operators count per batch or per epoch, never per
//! record. [`install`] sets up the process-wide Prometheus recorder once;
//! [`render`] returns the text exposition.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Lines read by a source (label `step`).
pub const RECORDS_IN: &str = "millrace_records_in_total";
/// Bytes read by a source (label `step`).
pub const BYTES_IN: &str = "millrace_bytes_in_total";
/// Lines that became clean records.
pub const RECORDS_CLEAN: &str = "millrace_records_clean_total";
/// Lines rejected (label `reason`).
pub const RECORDS_REJECTED: &str = "millrace_records_rejected_total";
/// Lines dropped as exact duplicates.
pub const RECORDS_DUPLICATE: &str = "millrace_records_duplicate_total";
/// Rows committed by a sink (label `sink`: a lake table or `kafka`).
pub const RECORDS_OUT: &str = "millrace_records_out_total";
/// Bytes committed by a sink (label `sink`).
pub const BYTES_OUT: &str = "millrace_bytes_out_total";
/// Epochs completed (checkpointed when checkpoints are on).
pub const EPOCHS_COMMITTED: &str = "millrace_epochs_committed_total";
/// Wall time from one completed epoch to the next.
pub const EPOCH_COMMIT_SECONDS: &str = "millrace_epoch_commit_seconds";
/// Records a Kafka partition holds beyond the consumer's position (labels `topic`, `partition`).
pub const KAFKA_LAG: &str = "millrace_kafka_consumer_lag_records";
/// Kafka client errors that librdkafka retries (labels `step`, `kind`).
pub const KAFKA_ERRORS: &str = "millrace_kafka_errors_total";
/// Alerts raised (labels `rule`, `state`).
pub const ALERTS: &str = "millrace_alerts_total";
/// Alert deliveries by channel and outcome (`delivered`, `retried`, `failed`, `dropped`).
pub const ALERT_DELIVERIES: &str = "millrace_alert_deliveries_total";
/// Kafka records produced again after a queue-full back-off (label `step`).
pub const KAFKA_RETRIES: &str = "millrace_kafka_produce_retries_total";

/// End-to-end latency from arrival to the commit of the epoch, one sample per
/// group of records that arrived together (a landed file, a fetched batch).
pub const LATENCY_SECONDS: &str = "millrace_end_to_end_latency_seconds";
/// The latest completed epoch's 99th-percentile end-to-end latency (exact, over its records).
pub const LATENCY_P99_SECONDS: &str = "millrace_end_to_end_latency_p99_seconds";
/// Bytes of an operator's checkpointed state (labels `step`, `worker`).
pub const STATE_BYTES: &str = "millrace_state_bytes";
/// Alerts kept from the channels by `[alerts] max_per_rule_per_hour` (label `rule`).
pub const ALERTS_RATE_LIMITED: &str = "millrace_alerts_rate_limited_total";
/// Alert rules currently firing.
pub const ALERTS_FIRING: &str = "millrace_alerts_firing";
/// Files of a landing folder that are not read, counted once each (label
/// `reason`: `unsupported_extension`, `unreadable_name`).
pub const LANDING_FILES_SKIPPED: &str = "millrace_landing_files_skipped_total";

/// Every metric millrace exports, with its Prometheus type.
pub const ALL: [(&str, &str); 23] = [
    (RECORDS_IN, "counter"),
    (BYTES_IN, "counter"),
    (RECORDS_CLEAN, "counter"),
    (RECORDS_REJECTED, "counter"),
    (RECORDS_DUPLICATE, "counter"),
    (RECORDS_OUT, "counter"),
    (BYTES_OUT, "counter"),
    (EPOCHS_COMMITTED, "counter"),
    (EPOCH_COMMIT_SECONDS, "histogram"),
    (KAFKA_LAG, "gauge"),
    (KAFKA_ERRORS, "counter"),
    (ALERTS, "counter"),
    (ALERT_DELIVERIES, "counter"),
    (KAFKA_RETRIES, "counter"),
    (LATENCY_SECONDS, "histogram"),
    (ALERTS_FIRING, "gauge"),
    (LATENCY_P99_SECONDS, "gauge"),
    (MODEL_ACCURACY, "gauge"),
    (MODEL_AUC, "gauge"),
    (MODEL_VERSION, "gauge"),
    (ALERTS_RATE_LIMITED, "counter"),
    (STATE_BYTES, "gauge"),
    (LANDING_FILES_SKIPPED, "counter"),
];

/// A Grafana dashboard over the metrics in [`ALL`]: throughput, ledger, rejects by reason,
/// sinks, epoch commit time, end-to-end latency, model quality, Kafka lag and
/// alerts. Every query names only metrics this module defines (tested).
pub fn grafana_dashboard() -> String {
    let panel = |id: usize, title: &str, unit: &str, exprs: &[(&str, &str)], x: usize, y: usize| {
        serde_json::json!({
            "id": id,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": exprs.iter().enumerate().map(|(i, (expr, legend))| serde_json::json!({
                "refId": ((b'A' + i as u8) as char).to_string(),
                "expr": expr,
                "legendFormat": legend,
            })).collect::<Vec<_>>(),
        })
    };
    let panels = vec![
        panel(1, "Records in / clean / out per second", "ops", &[
            (&format!("sum(rate({RECORDS_IN}[1m]))"), "in"),
            (&format!("sum(rate({RECORDS_CLEAN}[1m]))"), "clean"),
            (&format!("sum by (sink) (rate({RECORDS_OUT}[1m]))"), "out: {{sink}}"),
        ], 0, 0),
        panel(2, "Rejected and duplicate lines per second", "ops", &[
            (&format!("sum by (reason) (rate({RECORDS_REJECTED}[1m]))"), "{{reason}}"),
            (&format!("sum(rate({RECORDS_DUPLICATE}[1m]))"), "duplicate"),
        ], 12, 0),
        panel(3, "End-to-end latency (arrival to commit)", "s", &[
            (&format!("histogram_quantile(0.5, sum by (le) (rate({LATENCY_SECONDS}_bucket[5m])))"), "p50"),
            (&format!("histogram_quantile(0.99, sum by (le) (rate({LATENCY_SECONDS}_bucket[5m])))"), "p99"),
            (LATENCY_P99_SECONDS, "p99, latest epoch"),
        ], 0, 8),
        panel(4, "Epoch commit time", "s", &[
            (&format!("histogram_quantile(0.99, sum by (le) (rate({EPOCH_COMMIT_SECONDS}_bucket[5m])))"), "p99"),
            (&format!("rate({EPOCHS_COMMITTED}[1m])"), "epochs / s"),
        ], 12, 8),
        panel(5, "Model quality (prequential, latest epoch)", "percentunit", &[
            (MODEL_ACCURACY, "accuracy"),
            (MODEL_AUC, "ROC AUC"),
        ], 0, 16),
        panel(6, "Alerts", "short", &[
            (ALERTS_FIRING, "firing"),
            (&format!("sum by (rule, state) (increase({ALERTS}[5m]))"), "{{rule}} {{state}}"),
            (&format!("sum by (channel, outcome) (increase({ALERT_DELIVERIES}[5m]))"), "{{channel}} {{outcome}}"),
        ], 12, 16),
        panel(7, "Kafka consumer lag", "short", &[
            (&format!("sum by (topic, partition) ({KAFKA_LAG})"), "{{topic}}/{{partition}}"),
            (&format!("sum(rate({KAFKA_ERRORS}[1m]))"), "errors / s"),
            (&format!("sum(rate({KAFKA_RETRIES}[1m]))"), "produce retries / s"),
        ], 0, 24),
        panel(9, "Model version", "short", &[(MODEL_VERSION, "version")], 0, 32),
        panel(10, "Operator state (checkpointed)", "bytes", &[
            (&format!("sum by (step) ({STATE_BYTES})"), "{{step}}"),
        ], 12, 32),
        panel(8, "Bytes in / out per second", "Bps", &[
            (&format!("sum(rate({BYTES_IN}[1m]))"), "in"),
            (&format!("sum by (sink) (rate({BYTES_OUT}[1m]))"), "out: {{sink}}"),
        ], 12, 24),
    ];
    serde_json::to_string_pretty(&serde_json::json!({
        "title": "millrace",
        "uid": "millrace",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }))
    .expect("serializes")
}

/// Prequential accuracy of the latest epoch.
pub const MODEL_ACCURACY: &str = "millrace_model_accuracy_ratio";
/// Exact ROC AUC of the latest epoch.
pub const MODEL_AUC: &str = "millrace_model_auc_ratio";
/// The model version that scored the latest epoch.
pub const MODEL_VERSION: &str = "millrace_model_version";

/// Source and sink errors and retries, process-wide: the `errors` monitor reads its growth per epoch.
pub static IO_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one source or sink error or retry for the `errors` monitor (the labelled counters are kept separately).
pub fn io_error() {
    IO_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls are no-ops).
pub fn install() {
    HANDLE.get_or_init(|| {
        let seconds = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            3600.0,
        ];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .ok()?
            .install_recorder()
            .ok()?;
        describe();
        Some(handle)
    });
}

/// The Prometheus text exposition of every metric so far.
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RECORDS_IN, Unit::Count, "Lines read by a source.");
    describe_counter!(BYTES_IN, Unit::Bytes, "Bytes read by a source.");
    describe_counter!(
        RECORDS_CLEAN,
        Unit::Count,
        "Lines that became clean records."
    );
    describe_counter!(RECORDS_REJECTED, Unit::Count, "Lines rejected, by reason.");
    describe_counter!(
        RECORDS_DUPLICATE,
        Unit::Count,
        "Lines dropped as exact duplicates."
    );
    describe_counter!(RECORDS_OUT, Unit::Count, "Rows committed by a sink.");
    describe_counter!(BYTES_OUT, Unit::Bytes, "Bytes committed by a sink.");
    describe_counter!(EPOCHS_COMMITTED, Unit::Count, "Epochs completed.");
    describe_histogram!(
        EPOCH_COMMIT_SECONDS,
        Unit::Seconds,
        "Wall time between completed epochs."
    );
    describe_gauge!(
        KAFKA_LAG,
        Unit::Count,
        "Records in a Kafka partition beyond the consumer's position."
    );
    describe_counter!(
        KAFKA_ERRORS,
        Unit::Count,
        "Kafka client errors (retried by librdkafka)."
    );
    describe_counter!(ALERTS, Unit::Count, "Alerts raised, by rule and state.");
    describe_histogram!(
        LATENCY_SECONDS,
        Unit::Seconds,
        "End-to-end latency of records, arrival to commit."
    );
    describe_gauge!(ALERTS_FIRING, Unit::Count, "Alert rules currently firing.");
    describe_counter!(
        ALERTS_RATE_LIMITED,
        Unit::Count,
        "Alerts kept from the channels by the per-rule rate limit."
    );
    describe_gauge!(
        STATE_BYTES,
        Unit::Bytes,
        "Bytes of an operator's checkpointed state."
    );
    describe_gauge!(MODEL_ACCURACY, "Prequential accuracy of the latest epoch.");
    describe_gauge!(MODEL_AUC, "Exact ROC AUC of the latest epoch.");
    describe_gauge!(
        MODEL_VERSION,
        "The model version that scored the latest epoch."
    );
    describe_gauge!(
        LATENCY_P99_SECONDS,
        Unit::Seconds,
        "99th-percentile end-to-end latency of the latest epoch's records."
    );
    describe_counter!(
        ALERT_DELIVERIES,
        Unit::Count,
        "Alert deliveries by channel and outcome."
    );
    describe_counter!(
        KAFKA_RETRIES,
        Unit::Count,
        "Kafka produce attempts retried after a full queue."
    );
}

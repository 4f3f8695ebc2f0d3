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
/// Alert rules currently firing.
pub const ALERTS_FIRING: &str = "millrace_alerts_firing";

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

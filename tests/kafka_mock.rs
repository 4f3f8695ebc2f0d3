//! Kafka faults with librdkafka's built-in mock cluster: a broker that goes
//! down mid-stream and comes back, and nothing is lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use millrace::runtime::{run, RunOptions};
use millrace::topology::Topology;
use rdkafka::mocking::MockCluster;

#[test]
fn a_broker_down_for_seconds_mid_stream_loses_nothing() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    mock.create_topic("tx", 3, 1).unwrap();
    let dir = scratch("kafka-mock");
    let mut buf = Vec::new();
    let opts = millrace::gen::GenOptions {
        rows: 60_000,
        seed: 71,
        format: millrace::gen::GenFormat::Jsonl,
        ..Default::default()
    };
    let truth = millrace::gen::generate(&opts, &mut buf).unwrap();
    let produced =
        millrace::connectors::kafka_sink::produce_lines(&brokers, "tx", 3, &buf, false).unwrap();
    assert_eq!(produced, truth.rows_emitted);

    let text = std::fs::read_to_string(repo().join("topologies/fraud_kafka.toml"))
        .unwrap()
        .replace("topics = [\"transactions\"]", "topics = [\"tx\"]");
    let mut plan = Topology::parse("fraud_kafka.toml", &text).unwrap();
    plan.source.kafka_mut().unwrap().brokers = brokers.clone();
    // The mock cluster serves no admin requests: no Kafka sink or alert topic here.
    plan.topology.sink.kafka = None;
    plan.topology.alerts.kafka = None;
    plan.topology.runtime.records_per_epoch = 3_000;
    plan.topology.lake.path = dir.join("lake");
    let plan = Arc::new(plan);

    let engine = std::thread::spawn(move || {
        run(
            plan,
            &RunOptions {
                workers: 2,
                once: true,
                ..Default::default()
            },
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    mock.broker_up(1).unwrap();
    let summary = engine
        .join()
        .unwrap()
        .expect("the run completes once the broker is back");

    let clean = truth.rows_emitted - truth.malformed - truth.invalid - truth.duplicates;
    assert_eq!(
        summary.ledger.input, truth.rows_emitted,
        "every produced record was read"
    );
    assert_eq!(summary.ledger.clean, clean);
    assert_eq!(rows(&dir.join("lake"), "scored") as u64, clean);
    let metrics = millrace::core::metrics::render();
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("millrace_kafka_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        errors > 0.0,
        "the outage was noticed and counted:\n{metrics}"
    );
    assert!(
        metrics.contains("millrace_kafka_consumer_lag_records"),
        "{metrics}"
    );
    // The `errors` monitor turned the outage into an alert.
    assert!(
        summary.alerts.iter().any(|a| a.rule_id == "kafka_errors"),
        "{:#?}",
        summary.alerts
    );
}

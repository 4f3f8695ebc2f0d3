//! Kafka faults with librdkafka's built-in mock cluster: a broker that goes
//! down mid-stream and comes back, and nothing is lost.

mod common;

use std::sync::Arc;

use common::*;
use millrace::runtime::{run, RunOptions};
use millrace::topology::Topology;
use rdkafka::mocking::MockCluster;

/// Kafka errors the engine has counted (all kinds), from its metrics.
fn kafka_errors_counted() -> bool {
    millrace::core::metrics::render()
        .lines()
        .filter(|l| l.starts_with("millrace_kafka_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        > 0.0
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "holds the run at a crash point: needs --features millrace/failpoints, as .ci/test builds"
)]
fn a_broker_down_mid_stream_loses_nothing() {
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
    let options = &mut plan.source.kafka_mut().unwrap().librdkafka_options;
    options.insert("queued.min.messages".into(), "500".into());
    options.insert("queued.max.messages.kbytes".into(), "64".into());
    options.insert("max.partition.fetch.bytes".into(), "16384".into());
    plan.topology.lake.path = dir.join("lake");
    let plan = Arc::new(plan);

    // Hold the run at its third commit (the committer waits at the gate,
    // so the source stops a few epochs later), take the broker down while
    // it is provably mid-stream, let the run go on, and bring the broker
    // back once the engine has seen the outage. The prefetch is kept small,
    // so that what is left of the topic can only come from the broker.
    let gate = dir.join("gate");
    #[cfg(feature = "failpoints")]
    fail::cfg(
        "after_commit",
        &format!("2*off->return({})", gate.display()),
    )
    .unwrap();
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
    let held = || gate.with_extension("reached").exists();
    wait_until("the run is held at its third commit", 120, || {
        (held() || engine.is_finished(), ())
    });
    if !held() {
        panic!(
            "the run ended before its third commit: {:?}",
            engine.join().unwrap().map(|s| s.ledger)
        );
    }
    mock.broker_down(1).unwrap();
    std::fs::write(&gate, "").unwrap();
    wait_until("the engine counts the outage as Kafka errors", 120, || {
        (kafka_errors_counted() || engine.is_finished(), ())
    });
    mock.broker_up(1).unwrap();
    assert!(
        kafka_errors_counted(),
        "the outage was noticed and counted:\n{}",
        millrace::core::metrics::render()
    );
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
    #[cfg(feature = "failpoints")]
    fail::remove("after_commit");
    let metrics = millrace::core::metrics::render();
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

//! `kafka_alerts`: alerts to a Kafka topic.
//!
//! Each alert is one JSON record keyed by its rule id (so one rule's
//! lifecycle stays in order in one partition), produced by an idempotent
//! producer and flushed per batch. It runs as an alert channel (see
//! `notify`): after the epoch's checkpoint, on its own thread, with retries;
//! a broker that is down never blocks the dataflow.

// The errors of this module are built once, when a run starts or stops (a
// client, a topic, the marker topic), never per record: their size (librdkafka's
// error and the brokers and topic named in the message) costs nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use millrace_operators::monitor::Alert;
use rdkafka::producer::{BaseProducer, BaseRecord};
use serde::{Deserialize, Serialize};

use crate::connectors::kafka::client_config;
use crate::connectors::kafka_sink::KafkaSinkError;
use crate::connectors::notify::Delivery;

/// `[alerts.kafka]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaAlertsSpec {
    /// Bootstrap servers (default: the Kafka source's; `--brokers` overrides).
    #[serde(default)]
    pub brokers: Option<String>,
    /// The topic alerts go to.
    pub topic: String,
    /// Attempts before a batch counts as failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_attempts() -> u32 {
    5
}

/// A Kafka alert channel.
pub struct KafkaAlerts {
    topic: String,
    attempts: u32,
    producer: BaseProducer,
}

impl KafkaAlerts {
    /// A producer for `brokers`.
    pub fn new(spec: &KafkaAlertsSpec, brokers: &str) -> Result<KafkaAlerts, KafkaSinkError> {
        crate::connectors::kafka_sink::ensure_topic(brokers, &spec.topic, 1)?;
        let mut c = client_config(brokers, &BTreeMap::new());
        c.set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000");
        let producer = c.create().map_err(|error| KafkaSinkError::Client {
            what: "producer for alerts",
            brokers: brokers.to_string(),
            error,
        })?;
        Ok(KafkaAlerts {
            topic: spec.topic.clone(),
            attempts: spec.max_attempts.max(1),
            producer,
        })
    }
}

impl Delivery for KafkaAlerts {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn attempts(&self) -> u32 {
        self.attempts
    }

    type Error = KafkaSinkError;

    fn deliver(&mut self, alerts: &[Alert]) -> Result<(), KafkaSinkError> {
        let produce = |error| KafkaSinkError::Produce {
            topic: self.topic.clone(),
            error,
        };
        for a in alerts {
            // An alert is plain data: it always encodes.
            let payload = serde_json::to_string(a).expect("alerts encode as JSON");
            self.producer
                .send(
                    BaseRecord::to(&self.topic)
                        .key(a.rule_id.as_str())
                        .payload(payload.as_str()),
                )
                .map_err(|(e, _)| produce(e))?;
        }
        super::kafka_sink::settle(&self.producer, Duration::from_secs(10)).map_err(produce)
    }
}

//! `kafka`: the Kafka source.
//!
//! **Partitioning:** every partition of the configured topics is assigned
//! explicitly — sorted by (topic, partition), partition *i* to worker
//! *i mod workers* — never by a consumer group's rebalancing, so the same
//! partitions always land on the same workers and a checkpoint restores into
//! the same layout.
//! **Start:** the checkpointed offsets if the run resumes one; else the group's
//! committed offsets; else `earliest` or `latest` as configured.
//! **Out:** [`Chunk`]s per partition (the payloads as lines, each with its
//! offset as its position, so a reject names topic, partition and offset), and
//! at every epoch cut a [`SourcePos`] carrying the next offset of each of this
//! worker's partitions, for the checkpoint and the group commit.
//! **Epochs:** an epoch takes up to `records_per_epoch × workers /
//! partitions` records from each partition in order, `partitions` counting
//! the source's partitions on every worker: `records_per_epoch` per worker on
//! average, as a landing folder's epoch, but spread over the partitions of
//! the whole job. So a second Kafka source (the delayed labels, often on
//! fewer partitions) keeps pace with the records: with a quota per worker's
//! own partitions, two workers would read the records' four partitions
//! twice as fast as one worker reads the labels' one, the labels would fall
//! further behind every epoch, and the model would score with ever staler
//! weights (measured: AUC 0.58 against 0.81). (A quota of
//! `records_per_epoch` for the whole job keeps the pace too, but halves each
//! of two workers' epochs: 2 workers' Kafka → Kafka fell from 113k to 78k
//! records/s, more transactions and checkpoints.) With `--once` the source
//! waits for each quota to fill (or the partition to reach its end), so epochs
//! are a function of the offsets alone and a replay cuts the same epochs; live,
//! an epoch is also cut once `epoch_interval_ms` has passed, so an idle
//! partition never holds the others back.
//! **`--once`:** drains: a partition is done at the end it had when first
//! fetched (the fetch's high watermark), or earlier where the broker signals
//! its end (read_committed: the last stable offset; a transactional topic's
//! last offset is a commit marker no reader is given), and the source
//! finishes when all are done.
//! **Offsets** are committed back to the group only after the epoch holding
//! them is checkpointed (the coordinator does it), so consumer lag is visible
//! to ordinary Kafka tooling and never runs ahead of the lake.
//! **Security** (TLS, SASL, their secrets) comes from the environment, never
//! from the topology file, and is never logged: `MILLRACE_KAFKA_<KEY>` sets
//! librdkafka's `security.protocol`, `sasl.*` or `ssl.*` key `<key>` (upper
//! case, `_` for `.`: `MILLRACE_KAFKA_SSL_CA_LOCATION` is `ssl.ca.location`)
//! on every Kafka client of the job — the source's, the sinks', the marker
//! reader's, the alerts' — so that none connects with other settings than
//! the rest. A topology's `librdkafka_options` may not set them.
//! librdkafka is built with OpenSSL (vendored): `SSL` and `SASL_SSL` with
//! `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, and client certificates. The
//! broker's certificate and host name are verified, against
//! `ssl.ca.location` when given, else the CA certificates found in the
//! system's usual places.

// The errors of this module are built once, when a run starts or stops (a
// client, a topic, the marker topic), never per record: their size (librdkafka's
// error and the brokers and topic named in the message) costs nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_operators::hash::bytes_hash;
use millrace_operators::record::{Chunk, Format};
use millrace_operators::Epoch;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use timely::dataflow::{ProbeHandle, Scope};
use tracing::{info, warn};

use super::source::{source, Emit, Next, Reader, Shell};
use crate::connectors::landing::{SourcePos, SourceStreams};
use crate::core::fault::Fault;

/// `[source.kafka]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Bootstrap servers, `host:port[,host:port]` (override with `--brokers`).
    pub brokers: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// The consumer group whose committed offsets are used and updated.
    pub group_id: String,
    /// Payload encoding: `jsonl` (one JSON object per message) or `csv` (one line, with `columns`).
    #[serde(default = "jsonl")]
    pub format: KafkaFormat,
    /// Column names for `csv` payloads.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Where to start without a checkpoint or committed offsets.
    #[serde(default)]
    pub start: StartFrom,
    /// Live: cut an epoch at the latest this long after it started.
    #[serde(default = "default_interval")]
    pub epoch_interval_ms: u64,
    /// librdkafka settings applied after millrace's own (the ones millrace owns are refused).
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn jsonl() -> KafkaFormat {
    KafkaFormat::Jsonl
}

fn default_interval() -> u64 {
    1_000
}

/// Kafka payload encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFormat {
    /// One JSON object per message.
    Jsonl,
    /// One CSV line per message, columns named by `columns`.
    Csv,
}

/// Where a partition starts when nothing else says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages produced after the start.
    Latest,
}

/// librdkafka keys millrace sets itself on consumers.
pub const CONSUMER_OWNED: [&str; 8] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "isolation.level",
    "auto.offset.reset",
    "metadata.broker.list",
];

/// Whether a librdkafka key names a secret (which must come from the environment).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k == "sasl.username"
        || k.ends_with(".key.pem")
        || k == "ssl.key.pem"
}

/// Whether a librdkafka key belongs to the connection's security, which
/// every client of the job takes from the environment ([`security_env`]).
pub fn is_security_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "security.protocol" || k.starts_with("sasl.") || k.starts_with("ssl.")
}

/// The environment variable that sets librdkafka's security key `key`.
pub fn security_var(key: &str) -> String {
    format!(
        "MILLRACE_KAFKA_{}",
        key.to_ascii_uppercase().replace('.', "_")
    )
}

/// The security settings in the environment, as librdkafka keys and values:
/// `MILLRACE_KAFKA_SECURITY_PROTOCOL`, `MILLRACE_KAFKA_SASL_*`,
/// `MILLRACE_KAFKA_SSL_*`.
pub fn security_env() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            let rest = k.strip_prefix("MILLRACE_KAFKA_")?;
            if rest != "SECURITY_PROTOCOL"
                && !rest.starts_with("SASL_")
                && !rest.starts_with("SSL_")
            {
                return None;
            }
            Some((
                rest.to_ascii_lowercase().replace('_', "."),
                v.into_string().ok()?,
            ))
        })
        .collect();
    out.sort();
    out
}

/// Checks user librdkafka options: no key millrace owns, no secret, no key
/// of the connection's security (those come from the environment).
pub fn check_options(
    options: &BTreeMap<String, String>,
    owned: &[&str],
) -> Result<(), (String, String)> {
    for key in options.keys() {
        if owned.contains(&key.as_str()) {
            return Err((
                key.clone(),
                format!("`{key}` is set by millrace and cannot be overridden"),
            ));
        }
        if is_secret_key(key) {
            // Every secret librdkafka has is a `sasl.*` or `ssl.*` key, which
            // the environment sets; any other is named without a variable.
            let var = if is_security_key(key) {
                format!(" ({})", security_var(key))
            } else {
                String::new()
            };
            return Err((
                key.clone(),
                format!(
                    "`{key}` is a secret: set it in the environment{var}, never in the topology"
                ),
            ));
        }
        if is_security_key(key) {
            return Err((
                key.clone(),
                format!(
                    "`{key}` is the connection's security, which every Kafka client of the job shares: set it in the environment ({})",
                    security_var(key)
                ),
            ));
        }
    }
    Ok(())
}

/// A client configuration: brokers, security from the environment, then the user's options.
pub fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.set("socket.timeout.ms", "10000");
    for (key, v) in security_env() {
        c.set(key, v);
    }
    for (k, v) in options {
        c.set(k, v);
    }
    c
}

/// The name a partition's records carry as their source.
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// One partition and where this run starts reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset of the first message to read (`None`: per `start`).
    pub offset: Option<i64>,
}

/// What can go wrong reaching Kafka for a source: each says which brokers,
/// topic or group.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// librdkafka refused the client configuration.
    #[error("cannot create a Kafka client for {brokers}: {error}")]
    Client {
        /// `brokers`.
        brokers: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// The brokers did not answer for a topic's metadata.
    #[error("cannot reach Kafka at {brokers} to read topic `{topic}`: {error}")]
    Unreachable {
        /// `brokers`.
        brokers: String,
        /// The topic.
        topic: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// The topic is not there, or has no partitions.
    #[error("topic `{topic}` does not exist at {brokers} (millrace does not create the topics it reads)")]
    NoTopic {
        /// The topic.
        topic: String,
        /// `brokers`.
        brokers: String,
    },
    /// The brokers would not let the client in: a refused login or a failed TLS handshake.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The principal may not read the topic.
    #[error("not authorised to read topic `{topic}` at {brokers} (check the ACLs of the job's principal: MILLRACE_KAFKA_SASL_USERNAME, or its client certificate's subject)")]
    NotAuthorised {
        /// The topic.
        topic: String,
        /// `brokers`.
        brokers: String,
    },
    /// Another error in the topic's metadata.
    #[error("topic `{topic}` at {brokers}: {code}")]
    Topic {
        /// The topic.
        topic: String,
        /// `brokers`.
        brokers: String,
        /// The broker's error code.
        code: rdkafka::error::RDKafkaErrorCode,
    },
    /// The group's committed offsets could not be read.
    #[error("cannot read the committed offsets of group `{group}` at {brokers}: {error}")]
    Committed {
        /// `group_id`.
        group: String,
        /// `brokers`.
        brokers: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// The consumer could not be assigned its partitions.
    #[error("cannot assign partitions: {0}")]
    Assign(KafkaError),
    /// A partition's queue could not be split off the consumer.
    #[error("cannot read partition {topic}/{partition}")]
    Queue {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
}

/// Lists the topics' partitions, assigns them to `workers` workers and resolves
/// their start offsets (checkpoint, then the group's commits, then `start`).
pub fn plan(
    spec: &KafkaSourceSpec,
    workers: usize,
    checkpointed: &BTreeMap<String, i64>,
) -> Result<Vec<Vec<Assigned>>, KafkaSourceError> {
    // The first calls to the brokers: a refused login or a failed TLS
    // handshake shows here, and only in the client's error callback (the
    // call itself fails as a transport failure), so the callback's reason is
    // kept for the error.
    let consumer: BaseConsumer<LoginWatch> = consumer_config(spec)
        .create_with_context(LoginWatch::new(&spec.brokers))
        .map_err(|error| KafkaSourceError::Client {
            brokers: spec.brokers.clone(),
            error,
        })?;
    let mut partitions = Vec::new();
    for topic in &spec.topics {
        let listed = topic_partitions(&consumer, spec, topic).map_err(|e| match e {
            KafkaSourceError::Unreachable {
                brokers,
                topic,
                error,
            } => match refusal(&consumer) {
                Some(refused) => refused.into(),
                None => KafkaSourceError::Unreachable {
                    brokers,
                    topic,
                    error,
                },
            },
            e => e,
        })?;
        for p in listed {
            partitions.push((topic.clone(), p));
        }
    }
    partitions.sort();
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &partitions {
        tpl.add_partition(t, *p);
    }
    let committed = retry_coordinator(|| {
        consumer.committed_offsets(tpl.clone(), Timeout::After(Duration::from_secs(10)))
    })
    .map_err(|error| KafkaSourceError::Committed {
        group: spec.group_id.clone(),
        brokers: spec.brokers.clone(),
        error,
    })?;
    let mut out = vec![Vec::new(); workers.max(1)];
    for (i, (topic, partition)) in partitions.into_iter().enumerate() {
        let name = source_name(&topic, partition);
        let offset = checkpointed.get(&name).copied().or_else(|| {
            match committed
                .find_partition(&topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            }
        });
        out[i % workers.max(1)].push(Assigned {
            topic,
            partition,
            offset,
        });
    }
    dispose(consumer);
    Ok(out)
}

/// The brokers would not let a client in (any client of the job: the
/// source's, the Kafka sink's, the alerts'), with what to check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The brokers refused the login (SASL credentials).
    #[error("Kafka at {brokers} refused the login (MILLRACE_KAFKA_SASL_USERNAME / MILLRACE_KAFKA_SASL_PASSWORD, mechanism MILLRACE_KAFKA_SASL_MECHANISM): {reason}")]
    Login {
        /// `brokers`.
        brokers: String,
        /// What the brokers said.
        reason: String,
    },
    /// The TLS handshake with the brokers failed (their certificate, or ours).
    #[error("TLS with Kafka at {brokers} failed (the CA in MILLRACE_KAFKA_SSL_CA_LOCATION, else the system's; a client certificate in MILLRACE_KAFKA_SSL_CERTIFICATE_LOCATION and MILLRACE_KAFKA_SSL_KEY_LOCATION): {reason}")]
    Tls {
        /// `brokers`.
        brokers: String,
        /// What librdkafka said.
        reason: String,
    },
}

/// A client context that keeps the reason of a refused login or a failed
/// TLS handshake (librdkafka reports them only to the error callback) and
/// logs every error as the default context does.
pub struct LoginWatch {
    /// The client's bootstrap servers, for the error.
    brokers: String,
    /// The first refusal seen.
    refused: std::sync::Mutex<Option<Refused>>,
}

impl LoginWatch {
    /// A context for a client of `brokers`.
    pub fn new(brokers: &str) -> Self {
        LoginWatch {
            brokers: brokers.to_string(),
            refused: std::sync::Mutex::new(None),
        }
    }

    /// Why the brokers refused the client, if they did (the first reason).
    pub fn refused(&self) -> Option<Refused> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }
}

impl rdkafka::ClientContext for LoginWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::error::RDKafkaErrorCode as Code;
        let (brokers, reason_) = (self.brokers.clone(), reason.to_string());
        let refused = match error.rdkafka_error_code() {
            Some(Code::Authentication | Code::SaslAuthenticationFailed) => Some(Refused::Login {
                brokers,
                reason: reason_,
            }),
            Some(Code::SSL) => Some(Refused::Tls {
                brokers,
                reason: reason_,
            }),
            _ => None,
        };
        if let Some(refused) = refused {
            if let Ok(mut r) = self.refused.lock() {
                r.get_or_insert(refused);
            }
        }
        tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for LoginWatch {}

/// Why the brokers refused `consumer` (login or TLS), if they did: its
/// error events are served (a poll) and looked at.
pub fn refusal(consumer: &BaseConsumer<LoginWatch>) -> Option<Refused> {
    for _ in 0..5 {
        if let Some(r) = consumer.context().refused() {
            return Some(r);
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer.context().refused()
}

/// Drops a client the run is done with on a thread of its own. librdkafka's
/// destroy waits for the client's threads to wind down, 100–150 ms for one
/// that has talked to the brokers, and a run's start made several
/// short-lived clients one after another (partition metadata and committed
/// offsets, topic checks, the marker topic's readers): half a second before
/// the first record was read.
pub fn dispose<C: Send + 'static>(client: C) {
    // Should the thread not start, the client is dropped here, as before.
    let _ = std::thread::Builder::new()
        .name("millrace-kafka-close".into())
        .spawn(move || drop(client));
}

/// `FAILPOINTS=kafka_fetch_after_assign=return`: holds a reader just after
/// its assignment until the first fetch has answered for every partition
/// (its high watermark is known) and records wait in the queues — the
/// moment a loaded machine may take to get there — and says how many wait
/// on each partition's queue and on the consumer's own (on stderr). Each
/// partition's queue also holds the assignment's version barrier.
#[cfg(feature = "failpoints")]
fn hold_until_fetched(consumer: &BaseConsumer, parts: &[Part]) {
    use rdkafka::bindings::{
        rd_kafka_queue_destroy, rd_kafka_queue_get_consumer, rd_kafka_queue_length,
    };
    let hold: Option<()> = fail::eval("kafka_fetch_after_assign", |_| ());
    if hold.is_none() {
        return;
    }
    // SAFETY: the client pointer is valid while `consumer` lives; the queue
    // reference taken here is released below, once.
    let own = unsafe { rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
    if own.is_null() {
        return;
    }
    // SAFETY: the queues are live: `own` until destroyed below, the
    // partitions' while `parts` lives.
    let waiting = || unsafe {
        (
            parts
                .iter()
                .map(|p| rd_kafka_queue_length(p.batches.queue))
                .sum::<usize>(),
            rd_kafka_queue_length(own),
        )
    };
    let fetched = || {
        let (split, own) = waiting();
        parts
            .iter()
            .all(|p| cached_high_watermark(consumer, &p.topic, p.partition).is_some())
            && split + own > 2 * parts.len()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fetched() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (split, own_n) = waiting();
    eprintln!(
        "millrace: wait point `kafka_fetch_after_assign`: {split} records and barriers wait on the partitions' queues, {own_n} on the consumer's"
    );
    // SAFETY: our reference, released once.
    unsafe { rd_kafka_queue_destroy(own) };
}

/// The partitions of `topic`, from the brokers' metadata.
fn topic_partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    spec: &KafkaSourceSpec,
    topic: &str,
) -> Result<Vec<i32>, KafkaSourceError> {
    use rdkafka::error::RDKafkaErrorCode as Code;
    let (brokers, topic_) = (spec.brokers.clone(), topic.to_string());
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|error| KafkaSourceError::Unreachable {
            brokers: brokers.clone(),
            topic: topic_.clone(),
            error,
        })?;
    let no_topic = || KafkaSourceError::NoTopic {
        topic: topic_.clone(),
        brokers: brokers.clone(),
    };
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(no_topic)?;
    if let Some(err) = t.error() {
        return Err(match Code::from(err) {
            Code::UnknownTopicOrPartition | Code::UnknownTopic => no_topic(),
            Code::TopicAuthorizationFailed => KafkaSourceError::NotAuthorised {
                topic: topic_,
                brokers,
            },
            code => KafkaSourceError::Topic {
                topic: topic_,
                brokers,
                code,
            },
        });
    }
    if t.partitions().is_empty() {
        return Err(no_topic());
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

fn consumer_config(spec: &KafkaSourceSpec) -> ClientConfig {
    let mut c = client_config(&spec.brokers, &BTreeMap::new());
    c.set("group.id", &spec.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // Bound what librdkafka prefetches (its defaults are 100,000 messages
        // per partition and 64 MB per consumer): epochs hold back the source
        // anyway, so a deep prefetch only costs memory.
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "16384")
        // Past those bounds librdkafka postpones a partition's next fetch by
        // this long (1 s by default), and a source that drains its queues
        // faster than that waits for data: measured on one worker's
        // Kafka → Kafka, 83k records/s with the default, 123k with 10 ms.
        .set("fetch.queue.backoff.ms", "10")
        .set(
            "auto.offset.reset",
            match spec.start {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        );
    for (k, v) in &spec.librdkafka_options {
        c.set(k, v);
    }
    c
}

/// How long a group call is retried while the group's coordinator is not ready.
const COORDINATOR_WAIT: Duration = Duration::from_secs(30);

/// Runs a consumer-group call, retrying (100 ms doubling to 2 s, for up to
/// [`COORDINATOR_WAIT`]) while the broker says the group's coordinator is
/// moving or still loading — as Kafka does for a while after it starts, and
/// for a group's first call while `__consumer_offsets` is being created.
fn retry_coordinator<T>(mut call: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    use rdkafka::error::RDKafkaErrorCode as Code;
    let deadline = Instant::now() + COORDINATOR_WAIT;
    let mut pause = Duration::from_millis(100);
    loop {
        match call() {
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            Code::NotCoordinator
                                | Code::CoordinatorNotAvailable
                                | Code::CoordinatorLoadInProgress
                                | Code::RequestTimedOut
                                | Code::OperationTimedOut
                        )
                    ) =>
            {
                warn!(%e, "Kafka group coordinator not ready; retrying.");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Commits `offsets` (source name → next offset) to the group.
pub fn commit_offsets(
    consumer: &BaseConsumer,
    offsets: &BTreeMap<String, i64>,
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (name, next) in offsets {
        let (topic, partition) = name
            .rsplit_once('/')
            .expect("source names are topic/partition");
        tpl.add_partition_offset(
            topic,
            partition.parse().expect("numeric partition"),
            Offset::Offset(*next),
        )?;
    }
    retry_coordinator(|| consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync))
}

/// A consumer for committing the group's offsets (the coordinator's).
pub fn committer(spec: &KafkaSourceSpec) -> Result<BaseConsumer, KafkaSourceError> {
    consumer_config(spec)
        .create()
        .map_err(|error| KafkaSourceError::Client {
            brokers: spec.brokers.clone(),
            error,
        })
}

/// The high watermark from the last fetch response (no broker request).
///
/// Taken from the fetch rather than asked for with ListOffsets: the fetch's is
/// the one every broker gets right (a ListOffsets answer can lag, and some
/// Kafka-protocol brokers answer it wrongly).
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic is a
    // NUL-terminated string that outlives the call; the out-pointers are locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Settings of one Kafka source instance.
pub struct KafkaSource {
    /// `[source.kafka]`.
    pub spec: KafkaSourceSpec,
    /// This worker's partitions and start offsets.
    pub assigned: Vec<Assigned>,
    /// Drain and finish.
    pub once: bool,
    /// Records per epoch and worker, on average (see the module docs).
    pub records_per_epoch: u64,
    /// The source's partitions on all workers (the quotas' divisor).
    pub job_partitions: usize,
    /// Workers in the job.
    pub job_workers: usize,
    /// Uncommitted epochs allowed before the source waits.
    pub max_epochs_in_flight: u64,
    /// The first epoch of this run.
    pub first_epoch: Epoch,
    /// Where faults go.
    pub fault: Fault,
    /// Stop at the next epoch boundary.
    pub stop: Arc<AtomicBool>,
}

struct Part {
    name: Arc<str>,
    input: u64,
    topic: String,
    partition: i32,
    /// Declared before `queue`: dropped while the consumer lives.
    batches: BatchQueue,
    /// Keeps the partition's messages off the consumer's queue while it lives.
    #[allow(dead_code)]
    queue:
        rdkafka::consumer::base_consumer::PartitionQueue<rdkafka::consumer::DefaultConsumerContext>,
    next: i64,
    /// The end to drain to (`--once`): the high watermark first seen.
    end: Option<i64>,
    /// What the current epoch has taken.
    epoch: EpochBuf,
}

/// One partition's records of the current epoch, as the lines of a chunk.
#[derive(Default)]
struct EpochBuf {
    /// Records taken.
    taken: u64,
    text: String,
    positions: Vec<u64>,
    /// Messages that are not UTF-8: offset and exact payload.
    undecodable: Vec<(u64, Vec<u8>)>,
    first_ts: Option<i64>,
}

impl EpochBuf {
    /// Appends one message as one line (any newline inside it folded);
    /// returns the offset after it.
    fn take(&mut self, m: &Fetched<'_>) -> i64 {
        let payload = m.payload;
        match std::str::from_utf8(payload) {
            Ok(s) if !payload.iter().any(|b| *b == b'\n' || *b == b'\r') => self.text.push_str(s),
            Ok(s) => self.text.push_str(&s.replace(['\n', '\r'], " ")),
            Err(_) => {
                // Rejected as `bad_encoding`, its exact bytes kept.
                self.undecodable.push((m.offset as u64, payload.to_vec()));
                self.text
                    .push_str(&String::from_utf8_lossy(payload).replace(['\n', '\r'], " "));
            }
        }
        self.text.push('\n');
        self.positions.push(m.offset as u64);
        self.first_ts.get_or_insert(m.timestamp_ms);
        self.taken += 1;
        m.offset + 1
    }
}

/// One fetched message, borrowed from librdkafka until the batch is served.
struct Fetched<'a> {
    payload: &'a [u8],
    offset: i64,
    /// The message's timestamp (ms), 0 where it has none.
    timestamp_ms: i64,
}

/// A partition's queue, read in batches (`rd_kafka_consume_batch_queue`).
///
/// rust-rdkafka reads a queue one message per call, and each call reads the
/// clock five times (librdkafka's poll bookkeeping, rust-rdkafka's timeout):
/// measured on one worker's Kafka → Kafka, 11% of the worker thread was
/// `clock_gettime`. A batch pays that once per call.
struct BatchQueue {
    queue: *mut rdkafka::bindings::rd_kafka_queue_t,
    messages: Vec<*mut rdkafka::bindings::rd_kafka_message_t>,
}

/// Most messages one call takes from a partition's queue.
const BATCH: usize = 1024;

impl BatchQueue {
    /// librdkafka's own handle on the queue of `topic`/`partition`.
    fn new(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<BatchQueue> {
        let topic = std::ffi::CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `consumer` lives (the
        // queue is destroyed before it, see `Part`); the topic is a
        // NUL-terminated string that outlives the call.
        let queue = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        (!queue.is_null()).then(|| BatchQueue {
            queue,
            messages: Vec::with_capacity(BATCH),
        })
    }

    /// Hands each message there is now, up to `max`, to `each` (an error
    /// where the fetch reports one, `PartitionEOF` at the partition's end);
    /// how many there were.
    fn take(&mut self, max: usize, mut each: impl FnMut(Result<Fetched<'_>, KafkaError>)) -> usize {
        use rdkafka::types::RDKafkaRespErr;
        let max = max.min(BATCH);
        self.messages.clear();
        // SAFETY: the queue is live; librdkafka writes at most `max` message
        // pointers into the buffer, which has room for them, and says how many.
        let n = unsafe {
            rdkafka::bindings::rd_kafka_consume_batch_queue(
                self.queue,
                0,
                self.messages.as_mut_ptr(),
                max,
            )
        };
        let n = usize::try_from(n).unwrap_or(0);
        // SAFETY: librdkafka initialised the first `n` entries.
        unsafe { self.messages.set_len(n) };
        for &m in &self.messages {
            // SAFETY: `m` is a message librdkafka handed over; it stays valid
            // (payload included) until it is destroyed just below, after `each`.
            let msg = unsafe { &*m };
            let result = match msg.err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => {
                    let payload = if msg.payload.is_null() {
                        &[][..]
                    } else {
                        // SAFETY: a non-null payload of `len` bytes, see above.
                        unsafe { std::slice::from_raw_parts(msg.payload as *const u8, msg.len) }
                    };
                    let mut kind = rdkafka::bindings::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                    // SAFETY: as above; `kind` is a local.
                    let ts = unsafe { rdkafka::bindings::rd_kafka_message_timestamp(m, &mut kind) };
                    let timestamp_ms = match kind {
                        rdkafka::bindings::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => 0,
                        _ => ts,
                    };
                    Ok(Fetched {
                        payload,
                        offset: msg.offset,
                        timestamp_ms,
                    })
                }
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                    Err(KafkaError::PartitionEOF(msg.partition))
                }
                e => Err(KafkaError::MessageConsumption(e.into())),
            };
            each(result);
            // SAFETY: destroyed once, after its last use.
            unsafe { rdkafka::bindings::rd_kafka_message_destroy(m) };
        }
        self.messages.clear();
        n
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: our own reference to the queue, released once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.queue) };
    }
}

impl Part {
    fn drained(&self) -> bool {
        self.end.is_some_and(|e| self.next >= e)
    }
}

impl super::Source for KafkaSourceSpec {
    fn build<'scope>(
        &self,
        scope: Scope<'scope, Epoch>,
        step_id: &str,
        start: super::SourceStart,
        committed: ProbeHandle<Epoch>,
    ) -> SourceStreams<'scope> {
        let worker = scope.index();
        let source = KafkaSource {
            spec: self.clone(),
            assigned: start.assignment.get(worker).cloned().unwrap_or_default(),
            job_partitions: start.assignment.iter().map(Vec::len).sum(),
            job_workers: start.assignment.len(),
            once: start.once,
            records_per_epoch: start.records_per_epoch,
            max_epochs_in_flight: start.max_epochs_in_flight,
            first_epoch: start.first_epoch,
            fault: start.fault,
            stop: start.stop,
        };
        kafka(scope, step_id, source, committed)
    }
}

/// Builds the Kafka source on this worker. See the module docs.
pub fn kafka<'scope>(
    scope: Scope<'scope, Epoch>,
    step_id: &str,
    cfg: KafkaSource,
    committed: ProbeHandle<Epoch>,
) -> SourceStreams<'scope> {
    let shell = Shell {
        first_epoch: cfg.first_epoch,
        max_epochs_in_flight: cfg.max_epochs_in_flight,
        fault: cfg.fault.clone(),
    };
    let reader = KafkaReader::open(step_id, scope.index(), cfg);
    source(scope, step_id, shell, reader, committed)
}

/// One worker's partitions as a [`Reader`]: each epoch takes a quota from
/// every partition (see the module docs).
struct KafkaReader {
    step: String,
    worker: usize,
    cfg: KafkaSource,
    consumer: Arc<BaseConsumer>,
    parts: Vec<Part>,
    format: Format,
    header: Option<Arc<[String]>>,
    /// Records per partition and epoch.
    quota: u64,
    epoch_started: Instant,
    transport_errors: u64,
    /// A fault was raised: the reader reads no more.
    stopped: bool,
}

impl KafkaReader {
    /// Creates the consumer and assigns it this worker's partitions at their start offsets.
    fn open(step: &str, worker: usize, cfg: KafkaSource) -> Result<KafkaReader, KafkaSourceError> {
        let consumer: Arc<BaseConsumer> =
            Arc::new(consumer_config(&cfg.spec).create().map_err(|error| {
                KafkaSourceError::Client {
                    brokers: cfg.spec.brokers.clone(),
                    error,
                }
            })?);
        let mut tpl = TopicPartitionList::new();
        for a in &cfg.assigned {
            let offset = match (a.offset, cfg.spec.start) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
            };
            tpl.add_partition_offset(&a.topic, a.partition, offset)
                .map_err(KafkaSourceError::Assign)?;
        }
        // librdkafka looks up a start offset only once it knows the
        // partition's leader, and a partition assigned before its topic's
        // metadata arrived waits a fixed 500 ms to look again: asked for
        // first, the metadata is there, and the first fetch goes out at once.
        // (If the brokers do not answer yet, the assignment goes ahead and
        // librdkafka retries as before.)
        let topics: std::collections::BTreeSet<&str> =
            cfg.assigned.iter().map(|a| a.topic.as_str()).collect();
        for topic in topics {
            let _ = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
        }
        // Each partition's queue is split off before the assignment, which
        // starts the fetches at once: split after it, what a fetch answered
        // in between went to the consumer's own queue, where no partition's
        // reader looks (on a loaded machine, thousands of records of the
        // last partitions split). librdkafka makes the partition on the
        // split and keeps it off the consumer's queue from then on: a queue
        // the application has forwarded is not forwarded again when the
        // fetch starts.
        let mut parts = Vec::new();
        for a in &cfg.assigned {
            let queue = consumer
                .split_partition_queue(&a.topic, a.partition)
                .ok_or_else(|| KafkaSourceError::Queue {
                    topic: a.topic.clone(),
                    partition: a.partition,
                })?;
            let batches = BatchQueue::new(&consumer, &a.topic, a.partition).ok_or_else(|| {
                KafkaSourceError::Queue {
                    topic: a.topic.clone(),
                    partition: a.partition,
                }
            })?;
            let name = source_name(&a.topic, a.partition);
            parts.push(Part {
                input: bytes_hash(name.as_bytes()),
                name: name.into(),
                topic: a.topic.clone(),
                partition: a.partition,
                batches,
                queue,
                next: a.offset.unwrap_or(-1),
                end: None,
                epoch: EpochBuf::default(),
            });
        }
        consumer.assign(&tpl).map_err(KafkaSourceError::Assign)?;
        #[cfg(feature = "failpoints")]
        hold_until_fetched(&consumer, &parts);
        info!(step_id = %step, worker, partitions = parts.len(), "Kafka partitions assigned.");
        let format = match cfg.spec.format {
            KafkaFormat::Jsonl => Format::Jsonl,
            KafkaFormat::Csv => Format::Csv,
        };
        let header = (format == Format::Csv).then(|| cfg.spec.columns.clone().into());
        let quota = (cfg.records_per_epoch * cfg.job_workers.max(1) as u64)
            .div_ceil(cfg.job_partitions.max(parts.len()).max(1) as u64)
            .max(1);
        Ok(KafkaReader {
            step: step.to_string(),
            worker,
            cfg,
            consumer,
            parts,
            format,
            header,
            quota,
            epoch_started: Instant::now(),
            transport_errors: 0,
            stopped: false,
        })
    }

    /// Serves the consumer's own events (errors, reconnects). A record there
    /// is one no partition's reader will see: the run stops with the
    /// error, before the epoch is checkpointed, rather than lose it.
    fn serve_events(&mut self) -> Result<(), String> {
        while let Some(ev) = self.consumer.poll(Duration::ZERO) {
            match ev {
                Ok(m) => {
                    return Err(format!(
                        "the record at offset {} of {} reached the consumer's own queue, not its \
                         partition's: stopping before it is lost (a restart reads it again)",
                        m.offset(),
                        source_name(m.topic(), m.partition())
                    ));
                }
                Err(e) => {
                    self.transport_errors += 1;
                    metrics::counter!(crate::core::metrics::KAFKA_ERRORS, "step" => "kafka", "kind" => "consumer").increment(1);
                    crate::core::metrics::io_error();
                    let transport_errors = self.transport_errors;
                    warn!(step_id = %self.step, %e, transport_errors, "Kafka consumer error; librdkafka retries.");
                }
            }
        }
        Ok(())
    }

    /// Fills each partition's quota for this epoch without blocking.
    fn fill(&mut self) {
        let (quota, once) = (self.quota, self.cfg.once);
        for p in self.parts.iter_mut() {
            while p.epoch.taken < quota && !(once && p.drained()) {
                let Part {
                    batches,
                    epoch,
                    next,
                    end,
                    name,
                    topic,
                    partition,
                    ..
                } = &mut *p;
                let mut failed = false;
                let mut drained = false;
                // Taking no more than the quota's rest keeps epochs a function of the offsets.
                let room = usize::try_from(quota - epoch.taken).unwrap_or(usize::MAX);
                let n = batches.take(room, |m| {
                    // Past the end (`--once`) there is nothing to take. After
                    // an error the records that follow it are still taken:
                    // they are the partition's next ones, which the queue
                    // does not give again.
                    if drained {
                        return;
                    }
                    match m {
                        Ok(m) => {
                            if once && end.is_none() {
                                *end = cached_high_watermark(&self.consumer, topic, *partition);
                            }
                            *next = epoch.take(&m);
                            if once && end.is_some_and(|e| *next >= e) {
                                drained = true;
                            }
                        }
                        Err(KafkaError::PartitionEOF(_)) => {
                            if *next < 0 {
                                *next = 0;
                            }
                            // Everything there is has been read: the end is here,
                            // even below the high watermark first seen (a
                            // transactional topic ends in a commit marker, an
                            // offset no reader is given; read_committed stops at
                            // the last stable offset).
                            *end = Some(end.map_or(*next, |e| e.min(*next)));
                        }
                        Err(e) => {
                            self.transport_errors += 1;
                            metrics::counter!(crate::core::metrics::KAFKA_ERRORS, "step" => "kafka", "kind" => "fetch").increment(1);
                            crate::core::metrics::io_error();
                            warn!(step_id = %self.step, partition = %name, %e, "Kafka fetch error; librdkafka retries.");
                            failed = true;
                        }
                    }
                });
                if n == 0 || failed {
                    break;
                }
            }
        }
    }

    /// This epoch's records of every partition that has any, as chunks.
    fn flush(&mut self, emit: &mut Emit) {
        for p in self.parts.iter_mut().filter(|p| p.epoch.taken > 0) {
            let e = std::mem::take(&mut p.epoch);
            metrics::counter!(crate::core::metrics::RECORDS_IN, "step" => "kafka")
                .increment(e.taken);
            metrics::counter!(crate::core::metrics::BYTES_IN, "step" => "kafka")
                .increment(e.text.len() as u64);
            emit.chunks.push(Chunk {
                source: p.name.clone(),
                input: p.input,
                first_line: e.positions[0],
                format: self.format,
                header: self.header.clone(),
                text: e.text,
                arrived_ms: e.first_ts.unwrap_or(0),
                positions: Some(e.positions),
                undecodable: e.undecodable,
            });
        }
        // In the order of their inputs' ids, so that `clean`, which orders an
        // epoch by position, finds it in order already.
        emit.chunks.sort_by_key(|c| c.input);
    }

    /// The position at an epoch's end: every partition's next offset (and the lag gauges).
    fn cut(&self) -> SourcePos {
        let offsets = self
            .parts
            .iter()
            .filter(|p| p.next >= 0)
            .map(|p| (p.name.to_string(), p.next))
            .collect();
        for (a, p) in self.cfg.assigned.iter().zip(self.parts.iter()) {
            if let Some(high) = cached_high_watermark(&self.consumer, &a.topic, a.partition) {
                let lag = (high - p.next.max(0)).max(0) as f64;
                metrics::gauge!(crate::core::metrics::KAFKA_LAG, "topic" => a.topic.clone(), "partition" => a.partition.to_string()).set(lag);
            }
        }
        SourcePos {
            worker: self.worker,
            position: None,
            offsets,
            labels: false,
        }
    }
}

impl Reader for KafkaReader {
    fn step(&mut self, _epoch: Epoch, emit: &mut Emit) -> Next {
        if self.stopped {
            return Next::Never;
        }
        if let Err(e) = self.serve_events() {
            self.cfg.fault.raise(format!("{}: {e}", self.step));
            self.stopped = true;
            return Next::Never;
        }
        let stopping = self.cfg.stop.load(Ordering::Relaxed);
        self.fill();
        let (quota, once) = (self.quota, self.cfg.once);
        let complete = self
            .parts
            .iter()
            .all(|p| p.epoch.taken >= quota || (once && p.drained()));
        let timed_out = !once
            && self.epoch_started.elapsed()
                >= Duration::from_millis(self.cfg.spec.epoch_interval_ms);
        let any = self.parts.iter().any(|p| p.epoch.taken > 0);
        if complete || timed_out || stopping {
            self.flush(emit);
            let all_drained = once && self.parts.iter().all(Part::drained);
            if any || all_drained || timed_out || stopping {
                emit.cut = Some(self.cut());
                self.epoch_started = Instant::now();
            }
            if all_drained || stopping {
                info!(step_id = %self.step, worker = self.worker, "Kafka partitions drained.");
                return Next::Finished;
            }
        }
        if any {
            Next::Now
        } else {
            Next::After(Duration::from_millis(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_keys_are_refused_in_a_topology_and_named_by_their_variable() {
        assert_eq!(
            security_var("ssl.ca.location"),
            "MILLRACE_KAFKA_SSL_CA_LOCATION"
        );
        assert_eq!(
            security_var("security.protocol"),
            "MILLRACE_KAFKA_SECURITY_PROTOCOL"
        );
        for key in [
            "security.protocol",
            "sasl.mechanism",
            "ssl.ca.location",
            "SSL.Key.Location",
        ] {
            assert!(is_security_key(key), "{key}");
        }
        for key in ["client.id", "linger.ms", "socket.timeout.ms", "sslish"] {
            assert!(!is_security_key(key), "{key}");
        }
        let options = |k: &str| BTreeMap::from([(k.to_string(), "x".to_string())]);
        let (key, why) = check_options(&options("ssl.ca.location"), &CONSUMER_OWNED).unwrap_err();
        assert_eq!(key, "ssl.ca.location");
        assert!(why.contains("MILLRACE_KAFKA_SSL_CA_LOCATION"), "{why}");
        let (_, why) = check_options(&options("sasl.password"), &CONSUMER_OWNED).unwrap_err();
        assert!(
            why.contains("is a secret") && why.contains("MILLRACE_KAFKA_SASL_PASSWORD"),
            "{why}"
        );
        let (_, why) = check_options(&options("vault.password"), &CONSUMER_OWNED).unwrap_err();
        assert!(
            why.contains("is a secret") && !why.contains("MILLRACE_KAFKA_"),
            "{why}"
        );
        assert!(check_options(&options("client.id"), &CONSUMER_OWNED).is_ok());
    }
}

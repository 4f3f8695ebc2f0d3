//! `kafka_sink`: the scored stream to a Kafka topic.
//!
//! **In:** scored records (pipeline pact: every worker produces its own).
//! **Out:** one [`Commit`] per epoch once the epoch's records are acknowledged.
//! **Records:** JSON, keyed by the record key:
//! `{"key", "event_time", "score", "label", "model_version", "source", "line", "epoch"}`.
//! **Delivery:** the producer is always idempotent (`acks` configurable,
//! `all` by default). With `transactional = true` (the default) each worker
//! writes each epoch in one transaction (transactional id
//! `millrace-<pipeline>-<topic>-w<worker>`), which also writes the epoch
//! number to the marker topic `<topic>.millrace-epochs`; consumers reading
//! with `isolation.level=read_committed` see whole epochs only. On restart a
//! worker initialises its transactional id (aborting whatever its previous
//! run left open), waits for the marker topic's open transactions to settle,
//! reads its last committed epoch from it and does not
//! produce the replayed epochs up to it again: the engine is deterministic, so
//! they are already there, byte for byte. Together with the checkpoint this is
//! exactly-once. Without transactions (`transactional = false`, for brokers
//! that lack them) delivery is at-least-once: a crash between the produce and
//! the checkpoint repeats the epoch, with the same keys and `source`/`line`,
//! for consumers to deduplicate on.
//! **Failures:** librdkafka retries; a record not acknowledged within
//! `message.timeout.ms` (30 s unless overridden), a record the broker refuses
//! (larger than the topic's `max.message.bytes`, not authorised: the reason
//! and the record's size are in the error) or a failed commit stops the
//! engine with the error, before the epoch is checkpointed: a rerun, once
//! the cause is fixed, produces the epoch again and loses nothing.

// The errors of this module are built once, when a run starts or stops (a
// client, a topic, the marker topic), never per record: their size (librdkafka's
// error and the brokers and topic named in the message) costs nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use millrace_operators::record::Scored;
use millrace_operators::Epoch;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use tracing::info;

use crate::connectors::kafka::{client_config, dispose, refusal, LoginWatch, Refused};
use crate::connectors::lake::Commit;
use crate::connectors::lake::SinkId;
use crate::connectors::ScoredBatch;
use crate::core::fault::Fault;
use crate::core::write_behind::WriteBehind;

/// `[sink.kafka]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// Bootstrap servers (default: the Kafka source's; `--brokers` overrides both).
    #[serde(default)]
    pub brokers: Option<String>,
    /// The topic scored records go to.
    pub topic: String,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "lz4")]
    pub compression: String,
    /// `all`, `1` or `0`.
    #[serde(default = "all")]
    pub acks: String,
    /// One transaction per epoch and worker (exactly-once); off for brokers without transactions.
    #[serde(default = "yes")]
    pub transactional: bool,
    /// librdkafka settings applied after millrace's own (the ones millrace owns are refused).
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn lz4() -> String {
    "lz4".into()
}

fn all() -> String {
    "all".into()
}

fn yes() -> bool {
    true
}

/// librdkafka keys millrace sets itself on producers.
pub const PRODUCER_OWNED: [&str; 4] = [
    "bootstrap.servers",
    "transactional.id",
    "enable.idempotence",
    "metadata.broker.list",
];

/// Waits until every record handed to `p` is acknowledged and its delivery
/// report served: sends what lingers at once and serves the reports as they
/// come, in 1 ms slices.
///
/// rust-rdkafka's `flush` (and `commit_transaction`, which starts with it)
/// serves the reports with `poll(100 ms)`, and `BaseProducer::poll` always
/// waits its whole timeout: every flush, and so every epoch's transaction,
/// would cost at least 100 ms whatever the broker's latency (measured on the
/// Kafka sink: each epoch's commit took 100–103 ms, and one worker's
/// Kafka → Kafka was bound by it). Settled first, their flush returns at once.
pub fn settle<C, P>(p: &BaseProducer<C, P>, timeout: Duration) -> Result<(), KafkaError>
where
    C: rdkafka::producer::ProducerContext<P>,
    P: rdkafka::producer::Partitioner,
{
    let deadline = std::time::Instant::now() + timeout;
    while p.in_flight_count() > 0 {
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        // While a flush waits, librdkafka sends batches without waiting for
        // `linger.ms`; with delivery reports as events it only waits (up to
        // 1 ms here) for them to be served, which `poll` does next.
        // SAFETY: the client pointer is valid while `p` lives.
        unsafe {
            rdkafka::bindings::rd_kafka_flush(p.client().native_ptr(), 1);
        }
        p.poll(Duration::ZERO);
    }
    Ok(())
}

/// The marker topic of an output topic.
pub fn marker_topic(topic: &str) -> String {
    format!("{topic}.millrace-epochs")
}

/// Appends `s` as a JSON string.
///
/// Runs of characters that need no escape are copied whole (keys and
/// source names rarely hold any): char by char, this was the largest cost
/// of the sink's thread after librdkafka's own.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            out.push_str(&s[start..i]);
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                _ => {
                    use std::fmt::Write;
                    let _ = write!(out, "\\u{b:04x}");
                }
            }
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The JSON of one scored record, written into `out` (cleared first).
pub fn render(s: &Scored, epoch: Epoch, out: &mut String) {
    use std::fmt::Write;
    let r = &s.record;
    out.clear();
    out.push_str("{\"key\":");
    push_json_str(out, &r.key);
    let _ = write!(
        out,
        ",\"event_time\":{},\"score\":{},\"label\":",
        r.event_time, s.score
    );
    match r.label {
        Some(l) => {
            let _ = write!(out, "{l}");
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"model_version\":{},\"source\":", s.model_version);
    push_json_str(out, &r.source);
    let _ = write!(out, ",\"line\":{},\"epoch\":{epoch}}}", r.pos.line);
}

/// How long [`committed_epochs`] waits for transactions still open on the
/// marker topic: longer than librdkafka's default `transaction.timeout.ms`
/// (60 s), after which the broker aborts a crashed producer's transaction.
const MARKER_SETTLE: Duration = Duration::from_secs(120);

/// What can go wrong talking to Kafka outside the sink's epochs: creating
/// topics, reading the marker topic, producing test data.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// librdkafka refused a client configuration.
    #[error("cannot create a Kafka {what} for {brokers}: {error}")]
    Client {
        /// Consumer, producer or admin client.
        what: &'static str,
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// A call to the brokers failed.
    #[error("cannot reach Kafka at {brokers} to {doing}: {error}")]
    Unreachable {
        /// The bootstrap servers.
        brokers: String,
        /// What it was doing.
        doing: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// The brokers would not let the client in: a refused login or a failed TLS handshake.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The principal may not write (or see, or create) a topic.
    #[error("not authorised to {doing} topic `{topic}` at {brokers} (check the ACLs of the job's principal: MILLRACE_KAFKA_SASL_USERNAME, or its client certificate's subject)")]
    NotAuthorised {
        /// What was refused (`write to`, `create`).
        doing: &'static str,
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// The broker refused to create a topic.
    #[error("cannot create topic `{topic}`: {code:?}")]
    Create {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
    /// A transaction on the marker topic did not settle.
    #[error(
        "the marker topic `{marker}` at {brokers} still has a transaction open after {} s \
         (last stable offset {stable}, end {end}): is another run of this topology still writing to `{topic}`?",
        MARKER_SETTLE.as_secs()
    )]
    MarkerOpen {
        /// The marker topic.
        marker: String,
        /// The bootstrap servers.
        brokers: String,
        /// Its last stable offset.
        stable: i64,
        /// Its end when the read began.
        end: i64,
        /// The output topic.
        topic: String,
    },
    /// The marker topic's end was not reached in time.
    #[error("timed out reading the marker topic `{marker}` at {brokers}")]
    MarkerTimeout {
        /// The marker topic.
        marker: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// A record could not be produced, or was not acknowledged.
    #[error("cannot produce to `{topic}`: {error}")]
    Produce {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// The broker refused records, or did not acknowledge them in time.
    #[error("records did not reach `{topic}`: {reason}")]
    Undelivered {
        /// The topic.
        topic: String,
        /// How many, and the first failure's reason.
        reason: String,
    },
}

/// A client of kind `what` (for the error) from `config`.
fn create<C: rdkafka::config::FromClientConfig>(
    config: &rdkafka::ClientConfig,
    what: &'static str,
    brokers: &str,
) -> Result<C, KafkaSinkError> {
    config.create().map_err(|error| KafkaSinkError::Client {
        what,
        brokers: brokers.to_string(),
        error,
    })
}

/// A [`KafkaSinkError::Unreachable`] maker for one call.
fn unreachable(brokers: &str, doing: String) -> impl FnOnce(KafkaError) -> KafkaSinkError + '_ {
    move |error| KafkaSinkError::Unreachable {
        brokers: brokers.to_string(),
        doing,
        error,
    }
}

/// Reads the marker topic: the last epoch each worker committed.
///
/// Called by each worker's sink after `init_transactions`, which aborts the
/// transaction its previous incarnation left open. A `read_committed` reader
/// stops at the partition's last stable offset, which stays behind any
/// transaction still open there — another worker's, whose commit may follow
/// markers of ours. So the read first waits until the last stable offset has
/// reached the end the marker partition had when the read began: every
/// transaction written before then is committed or aborted, and the markers
/// read are all there are.
pub fn committed_epochs(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    lake_id: &str,
) -> Result<BTreeMap<String, Epoch>, KafkaSinkError> {
    let marker = marker_topic(topic);
    ensure_topic(brokers, &marker, 1)?;
    let reader = |isolation: &str| -> Result<BaseConsumer, KafkaSinkError> {
        let mut c = client_config(brokers, options);
        c.set(
            "group.id",
            format!("millrace-marker-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation);
        create(&c, "consumer", brokers)
    };
    let timeout = Duration::from_secs(10);
    let uncommitted = reader("read_uncommitted")?;
    let (_, end) = uncommitted
        .fetch_watermarks(&marker, 0, timeout)
        .map_err(unreachable(
            brokers,
            format!("read the end of the marker topic `{marker}`"),
        ))?;
    dispose(uncommitted);
    let consumer = reader("read_committed")?;
    let settle = std::time::Instant::now() + MARKER_SETTLE;
    loop {
        // With read_committed, ListOffsets answers the last stable offset.
        let (_, stable) = consumer
            .fetch_watermarks(&marker, 0, timeout)
            .map_err(unreachable(
                brokers,
                format!("read the marker topic `{marker}`"),
            ))?;
        if stable >= end {
            break;
        }
        if std::time::Instant::now() > settle {
            return Err(KafkaSinkError::MarkerOpen {
                marker,
                brokers: brokers.to_string(),
                stable,
                end,
                topic: topic.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let markers = read_markers(&consumer, brokers, &marker, lake_id);
    dispose(consumer);
    markers
}

/// Reads the marker topic from its beginning to its end: each worker's last
/// epoch marked by this lake.
fn read_markers(
    consumer: &BaseConsumer,
    brokers: &str,
    marker: &str,
    lake_id: &str,
) -> Result<BTreeMap<String, Epoch>, KafkaSinkError> {
    let doing = || format!("read the marker topic `{marker}`");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(marker, 0, Offset::Beginning)
        .map_err(unreachable(brokers, doing()))?;
    consumer
        .assign(&tpl)
        .map_err(unreachable(brokers, doing()))?;
    let mut last = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if std::time::Instant::now() > deadline {
            return Err(KafkaSinkError::MarkerTimeout {
                marker: marker.to_string(),
                brokers: brokers.to_string(),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                if let Some((id, epoch)) = value.split_once(' ') {
                    if let (true, Ok(e)) = (id == lake_id, epoch.parse::<Epoch>()) {
                        last.insert(key, e);
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
            Some(Err(e)) => return Err(unreachable(brokers, doing())(e)),
            None => {}
        }
    }
}

/// Creates `topic` with `partitions` if it is missing.
pub fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), KafkaSinkError> {
    // Look first: creating is an admin call some brokers (and mocks) do not serve.
    let mut config = client_config(brokers, &BTreeMap::new());
    config.set("allow.auto.create.topics", "false");
    // The sink's first call to its brokers (which may not be the source's):
    // a refused login or a failed handshake shows only in the error callback.
    let probe: BaseConsumer<LoginWatch> = config
        .create_with_context(LoginWatch::new(brokers))
        .map_err(|error| KafkaSinkError::Client {
            what: "consumer",
            brokers: brokers.to_string(),
            error,
        })?;
    let md = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|error| match refusal(&probe) {
            Some(refused) => refused.into(),
            None => unreachable(brokers, format!("look up `{topic}`"))(error),
        })?;
    let refused = |doing| KafkaSinkError::NotAuthorised {
        doing,
        topic: topic.to_string(),
        brokers: brokers.to_string(),
    };
    dispose(probe);
    if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
        match t.error().map(RDKafkaErrorCode::from) {
            None if !t.partitions().is_empty() => return Ok(()),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => return Err(refused("write to")),
            _ => {}
        }
    }
    let admin: AdminClient<DefaultClientContext> = create(
        &client_config(brokers, &BTreeMap::new()),
        "admin client",
        brokers,
    )?;
    let name = topic.to_string();
    let (admin, created) = crate::core::blocking::block(async move {
        let new = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        let created = admin.create_topics(&[new], &AdminOptions::new()).await;
        (admin, created)
    });
    dispose(admin);
    let created = created.map_err(unreachable(brokers, format!("create `{topic}`")))?;
    for r in created {
        if let Err((_, code)) = r {
            if matches!(
                code,
                RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            ) {
                return Err(refused("create"));
            }
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(KafkaSinkError::Create {
                    topic: topic.to_string(),
                    code,
                });
            }
        }
    }
    Ok(())
}

/// The key [`produce_lines`] gives a line: for CSV the `account` field (or
/// the first: a label line's record id), quotes honoured; for JSON lines the
/// `account` member, or the whole line.
fn line_key(line: &str, csv_key_column: Option<usize>) -> String {
    match csv_key_column {
        Some(column) => millrace_operators::parse::split_record(line)
            .ok()
            .and_then(|mut fields| (column < fields.len()).then(|| fields.swap_remove(column)))
            .unwrap_or_else(|| line.to_string()),
        None => serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| {
                v.get("account")
                    .and_then(|a| a.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| line.to_string()),
    }
}

/// Produces every line of `text` (skipping a CSV header) to `topic`, keyed by
/// the account (the CSV `account` column, or the JSON `account`) so one
/// account's records keep their order in one partition; CSV without an
/// `account` column (label lines) is keyed by its first field, the record id.
/// Returns the records produced.
pub fn produce_lines(
    brokers: &str,
    topic: &str,
    partitions: i32,
    text: &[u8],
    csv_header: bool,
) -> Result<u64, KafkaSinkError> {
    ensure_topic(brokers, topic, partitions)?;
    let mut c = client_config(brokers, &BTreeMap::new());
    // librdkafka's own message timeout (5 minutes): a loader waits out a
    // slow broker rather than give up on records; those it does give up on
    // fail the call (below), never a flush that succeeds with them missing.
    c.set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("compression.type", "lz4");
    let p: BaseProducer<DeliveryCheck> =
        c.create_with_context(DeliveryCheck::default())
            .map_err(|error| KafkaSinkError::Client {
                what: "producer",
                brokers: brokers.to_string(),
                error,
            })?;
    let produce = |error| KafkaSinkError::Produce {
        topic: topic.to_string(),
        error,
    };
    let text = String::from_utf8_lossy(text);
    let key_column = csv_header.then(|| {
        let header = text.lines().next().unwrap_or_default();
        let columns = millrace_operators::parse::split_record(header).unwrap_or_default();
        columns.iter().position(|c| c == "account").unwrap_or(0)
    });
    let mut n = 0;
    for line in text.lines().skip(usize::from(csv_header)) {
        let key = line_key(line, key_column);
        let mut record = BaseRecord::to(topic).key(key.as_str()).payload(line);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    p.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(produce(e)),
            }
        }
        n += 1;
    }
    settle(&p, Duration::from_secs(360)).map_err(produce)?;
    if let Some(reason) = p.context().take() {
        return Err(KafkaSinkError::Undelivered {
            topic: topic.to_string(),
            reason,
        });
    }
    Ok(n)
}

/// Keeps the first delivery failure the broker reports (a record too large,
/// a topic not authorised...): with the default context librdkafka's
/// delivery reports go nowhere, so a non-transactional flush would succeed
/// with records missing, and a failed transaction would not say why.
#[derive(Default)]
pub struct DeliveryCheck {
    failed: std::sync::atomic::AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryCheck {}

impl rdkafka::producer::ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(format!(
                    "{e} (a record of {} bytes to partition {})",
                    m.payload().map_or(0, <[u8]>::len),
                    m.partition()
                ));
            }
        }
    }
}

impl DeliveryCheck {
    /// The failures since the last call, as a sentence, if any.
    pub fn take(&self) -> Option<String> {
        let n = self.failed.swap(0, std::sync::atomic::Ordering::Relaxed);
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        (n > 0).then(|| {
            format!(
                "the broker refused {n} record(s): {}",
                first.unwrap_or_default()
            )
        })
    }
}

/// What a Kafka sink instance needs.
#[derive(Clone, Debug)]
pub struct KafkaSink {
    /// `[sink.kafka]`.
    pub spec: KafkaSinkSpec,
    /// Resolved bootstrap servers.
    pub brokers: String,
    /// The pipeline name (part of the transactional id).
    pub pipeline: String,
    /// Identifies the lake, so markers of another lake's runs are ignored.
    pub lake_id: String,
    /// The run resumes a checkpoint: each worker reads its last committed
    /// epoch from the marker topic before producing, and skips the replayed
    /// epochs up to it.
    pub resuming: bool,
}

impl super::Sink for KafkaSink {
    fn step_id(&self) -> &str {
        "kafka_scored"
    }

    fn build<'scope>(
        &self,
        inputs: &super::SinkInputs<'scope>,
        ctx: &super::SinkContext,
        _state: millrace_operators::epochs::StateIo,
    ) -> Result<super::SinkStreams<'scope>, millrace_operators::epochs::StateError> {
        let commits =
            inputs
                .scored
                .clone()
                .sink_kafka(self.step_id(), self.clone(), ctx.fault.clone());
        Ok(super::SinkStreams {
            commits,
            snapshots: None,
        })
    }
}

/// The Kafka sink operator. See the module docs.
pub trait KafkaScoredSink<'scope> {
    /// Produces every scored record to the topic, one transaction per epoch.
    fn sink_kafka(
        self,
        step_id: &str,
        sink: KafkaSink,
        fault: Fault,
    ) -> Stream<'scope, Epoch, Vec<Commit>>;
}

impl<'scope> KafkaScoredSink<'scope> for Stream<'scope, Epoch, Vec<ScoredBatch>> {
    fn sink_kafka(
        self,
        step_id: &str,
        sink: KafkaSink,
        fault: Fault,
    ) -> Stream<'scope, Epoch, Vec<Commit>> {
        let worker = self.scope().index();
        let mut producer = EpochProducer {
            step: step_id.to_string(),
            worker,
            me: format!("w{worker}"),
            sink,
            skip_until: None,
            producer: None,
        };
        self.write_behind(step_id, fault, move |epoch, rows| {
            producer.epoch(epoch, &rows).map(|c| vec![c])
        })
    }
}

/// Why an epoch did not reach the topic (the run stops before the epoch is checkpointed).
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// librdkafka or the broker failed a step of the epoch.
    #[error("{what} (topic `{topic}`, epoch {epoch}): {error}")]
    Kafka {
        /// The step: creating the producer, a transaction's begin or commit, a produce.
        what: &'static str,
        /// The topic.
        topic: String,
        /// The epoch.
        epoch: Epoch,
        /// What librdkafka or the broker said.
        error: String,
    },
    /// The epochs committed before a restart could not be read.
    #[error("{0}")]
    Markers(KafkaSinkError),
}

/// One worker's producer and where its replay ends: the sink's state,
/// without timely (it runs on the write-behind thread).
struct EpochProducer {
    step: String,
    worker: usize,
    /// `w<worker>`: the marker key and the transactional id's suffix.
    me: String,
    sink: KafkaSink,
    /// Epochs up to this one are in the topic from before a restart.
    skip_until: Option<Epoch>,
    producer: Option<BaseProducer<DeliveryCheck>>,
}

impl EpochProducer {
    /// An epoch's failure as the error that stops the run.
    fn error(&self, epoch: Epoch, what: &'static str, e: &dyn std::fmt::Display) -> EpochError {
        EpochError::Kafka {
            what,
            topic: self.sink.spec.topic.clone(),
            epoch,
            error: e.to_string(),
        }
    }

    /// Creates the producer; with transactions, initialises them and (when
    /// resuming) reads the last epoch this worker committed.
    fn open(&mut self, epoch: Epoch) -> Result<(), EpochError> {
        let spec = &self.sink.spec;
        let mut c = client_config(&self.sink.brokers, &BTreeMap::new());
        c.set("enable.idempotence", "true")
            .set("acks", &spec.acks)
            .set("compression.type", &spec.compression)
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "20");
        if spec.transactional {
            c.set(
                "transactional.id",
                format!("millrace-{}-{}-{}", self.sink.pipeline, spec.topic, self.me),
            );
        }
        for (k, v) in &spec.librdkafka_options {
            c.set(k, v);
        }
        let p: BaseProducer<DeliveryCheck> = c
            .create_with_context(DeliveryCheck::default())
            .map_err(|e| self.error(epoch, "cannot create the producer", &e))?;
        if spec.transactional {
            // Also aborts the transaction a crashed run of this worker left open.
            p.init_transactions(Duration::from_secs(30))
                .map_err(|e| self.error(epoch, "cannot initialise transactions", &e))?;
            if self.sink.resuming {
                let committed = committed_epochs(
                    &self.sink.brokers,
                    &spec.librdkafka_options,
                    &spec.topic,
                    &self.sink.lake_id,
                )
                .map_err(EpochError::Markers)?;
                self.skip_until = committed.get(&self.me).copied();
                info!(step_id = %self.step, worker = self.worker, last_committed = ?self.skip_until, "Read the epochs already committed to Kafka.");
            }
        }
        self.producer = Some(p);
        Ok(())
    }

    /// Produces one epoch (in one transaction, with its marker) and waits
    /// until the broker has it; its commit.
    fn epoch(&mut self, epoch: Epoch, rows: &[ScoredBatch]) -> Result<Commit, EpochError> {
        if self.producer.is_none() {
            self.open(epoch)?;
        }
        let mut commit = Commit {
            sink: SinkId::Kafka,
            epoch,
            worker: self.worker,
            files: 0,
            rows: rows.iter().map(|b| b.len() as u64).sum(),
            bytes: 0,
            parts: vec![],
        };
        if self.skip_until.is_some_and(|s| epoch <= s) {
            info!(step_id = %self.step, epoch, "Epoch already in Kafka from before the restart; not producing it again.");
            return Ok(commit);
        }
        let p = self.producer.as_ref().expect("opened above");
        let transactional = self.sink.spec.transactional;
        if transactional {
            p.begin_transaction()
                .map_err(|e| self.error(epoch, "cannot begin a transaction", &e))?;
        }
        commit.bytes = self.send(p, epoch, rows)?;
        if transactional {
            let marker = marker_topic(&self.sink.spec.topic);
            let value = format!("{} {epoch}", self.sink.lake_id);
            p.send(
                BaseRecord::to(&marker)
                    .key(self.me.as_str())
                    .payload(value.as_str())
                    .partition(0),
            )
            .map_err(|(e, _)| self.error(epoch, "cannot write the epoch marker", &e))?;
            crate::crash_point!("kafka_before_commit");
            let committed = settle(p, Duration::from_secs(60))
                .and_then(|()| p.commit_transaction(Duration::from_secs(60)));
            if let Some(refused) = p.context().take() {
                return Err(self.error(epoch, "cannot commit the transaction", &refused));
            }
            committed.map_err(|e| self.error(epoch, "cannot commit the transaction", &e))?;
        } else {
            settle(p, Duration::from_secs(60))
                .map_err(|e| self.error(epoch, "records were not acknowledged", &e))?;
            if let Some(refused) = p.context().take() {
                return Err(self.error(epoch, "records were not delivered", &refused));
            }
        }
        Ok(commit)
    }

    /// Hands every record of the epoch to the producer (waiting while its
    /// queue is full); the bytes of their payloads.
    fn send(
        &self,
        p: &BaseProducer<DeliveryCheck>,
        epoch: Epoch,
        rows: &[ScoredBatch],
    ) -> Result<u64, EpochError> {
        let topic = &self.sink.spec.topic;
        let mut bytes = 0u64;
        let mut payload = String::new();
        for (i, s) in rows.iter().flat_map(|b| b.iter()).enumerate() {
            render(s, epoch, &mut payload);
            bytes += payload.len() as u64;
            let mut record = BaseRecord::to(topic)
                .key(s.record.key.as_str())
                .payload(payload.as_str());
            loop {
                match p.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        metrics::counter!(crate::core::metrics::KAFKA_RETRIES, "step" => "kafka_scored").increment(1);
                        crate::core::metrics::io_error();
                        p.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        metrics::counter!(crate::core::metrics::KAFKA_ERRORS, "step" => "kafka_scored", "kind" => "produce").increment(1);
                        crate::core::metrics::io_error();
                        return Err(self.error(epoch, "cannot produce", &e));
                    }
                }
            }
            // Delivery reports are served every so often, not after every
            // record: each poll reads the clock and takes the queue's lock.
            if i % 256 == 255 {
                p.poll(Duration::ZERO);
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_operators::record::{Pos, Record};

    #[test]
    fn rendered_records_are_json() {
        let record = Record {
            pos: Pos { input: 0, line: 42 },
            source: "tx/3".into(),
            line_hash: 0,
            key: "a\"b\\c\u{1}é".into(),
            key_hash: 0,
            id: None,
            event_time: 1_767_225_600_000,
            label: Some(1.0),
            nums: vec![],
            missing: 0,
            cats: vec![],
            arrived_ms: 0,
        };
        let mut out = String::new();
        render(
            &Scored {
                record,
                score: 0.125,
                model_version: 3,
                shadow_score: None,
            },
            7,
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["key"], "a\"b\\c\u{1}é");
        assert_eq!(
            (
                v["score"].as_f64(),
                v["label"].as_f64(),
                v["line"].as_u64(),
                v["epoch"].as_u64()
            ),
            (Some(0.125), Some(1.0), Some(42), Some(7))
        );
        assert_eq!(v["source"], "tx/3");
    }
}

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
//! **Secrets** (SASL and SSL passwords) come from the environment
//! (`MILLRACE_KAFKA_SASL_USERNAME`, `MILLRACE_KAFKA_SASL_PASSWORD`,
//! `MILLRACE_KAFKA_SSL_KEY_PASSWORD`, with `MILLRACE_KAFKA_SECURITY_PROTOCOL`
//! and `MILLRACE_KAFKA_SASL_MECHANISM`), never from the topology file, and are
//! never logged.

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
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::{ProbeHandle, Scope};
use tracing::{info, warn};

use crate::connectors::landing::{FileFact, SourcePos, SourceStreams};
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

/// Checks user librdkafka options: no key millrace owns, no secret.
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
            return Err((
                key.clone(),
                format!("`{key}` is a secret: set it in the environment (MILLRACE_KAFKA_SASL_USERNAME, MILLRACE_KAFKA_SASL_PASSWORD, MILLRACE_KAFKA_SSL_KEY_PASSWORD), never in the topology"),
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
    for (env, key) in [
        ("MILLRACE_KAFKA_SECURITY_PROTOCOL", "security.protocol"),
        ("MILLRACE_KAFKA_SASL_MECHANISM", "sasl.mechanism"),
        ("MILLRACE_KAFKA_SASL_USERNAME", "sasl.username"),
        ("MILLRACE_KAFKA_SASL_PASSWORD", "sasl.password"),
        ("MILLRACE_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
    ] {
        if let Ok(v) = std::env::var(env) {
            c.set(key, v);
        }
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

/// Lists the topics' partitions, assigns them to `workers` workers and resolves
/// their start offsets (checkpoint, then the group's commits, then `start`).
pub fn plan(
    spec: &KafkaSourceSpec,
    workers: usize,
    checkpointed: &BTreeMap<String, i64>,
) -> Result<Vec<Vec<Assigned>>, String> {
    let consumer: BaseConsumer = consumer_config(spec)
        .create()
        .map_err(|e| format!("cannot create a Kafka client for {}: {e}", spec.brokers))?;
    let mut partitions = Vec::new();
    for topic in &spec.topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| {
                format!(
                    "cannot reach Kafka at {} to read topic `{topic}`: {e}",
                    spec.brokers
                )
            })?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| format!("topic `{topic}` has no metadata"))?;
        if let Some(err) = t.error() {
            use rdkafka::error::RDKafkaErrorCode as Code;
            return Err(match Code::from(err) {
                Code::UnknownTopicOrPartition | Code::UnknownTopic => format!(
                    "topic `{topic}` does not exist at {} (millrace does not create the topics it reads)",
                    spec.brokers
                ),
                Code::TopicAuthorizationFailed => format!(
                    "not authorised to read topic `{topic}` at {} (check the ACLs of the principal in MILLRACE_KAFKA_SASL_USERNAME)",
                    spec.brokers
                ),
                code => format!("topic `{topic}` at {}: {code}", spec.brokers),
            });
        }
        if t.partitions().is_empty() {
            return Err(format!(
                "topic `{topic}` does not exist at {} (or has no partitions)",
                spec.brokers
            ));
        }
        for p in t.partitions() {
            partitions.push((topic.clone(), p.id()));
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
    .map_err(|e| {
        format!(
            "cannot read the committed offsets of group `{}` at {}: {e}",
            spec.group_id, spec.brokers
        )
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
    Ok(out)
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
pub fn committer(spec: &KafkaSourceSpec) -> Result<BaseConsumer, String> {
    consumer_config(spec)
        .create()
        .map_err(|e| format!("cannot create a Kafka client for {}: {e}", spec.brokers))
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
    queue:
        rdkafka::consumer::base_consumer::PartitionQueue<rdkafka::consumer::DefaultConsumerContext>,
    next: i64,
    /// The end to drain to (`--once`): the high watermark first seen.
    end: Option<i64>,
    /// Records taken in the current epoch.
    taken: u64,
    text: String,
    positions: Vec<u64>,
    /// Messages of the current epoch that are not UTF-8: offset and exact payload.
    undecodable: Vec<(u64, Vec<u8>)>,
    first_ts: Option<i64>,
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
#[allow(clippy::type_complexity)]
pub fn kafka<'scope>(
    scope: Scope<'scope, Epoch>,
    step_id: &str,
    cfg: KafkaSource,
    committed: ProbeHandle<Epoch>,
) -> SourceStreams<'scope> {
    let mut builder = OperatorBuilder::new(step_id.to_owned(), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address);
    let (chunks_out, chunks) = builder.new_output();
    let (facts_out, facts) = builder.new_output();
    let (pos_out, positions) = builder.new_output();
    let mut chunks_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Chunk>>>::from(chunks_out);
    let _facts_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<FileFact>>>::from(facts_out);
    let mut pos_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<SourcePos>>>::from(pos_out);
    let step = step_id.to_string();
    let worker = scope.index();
    let format = match cfg.spec.format {
        KafkaFormat::Jsonl => Format::Jsonl,
        KafkaFormat::Csv => Format::Csv,
    };
    let header: Option<Arc<[String]>> =
        (format == Format::Csv).then(|| cfg.spec.columns.clone().into());
    // The consumer and its partition queues.
    let setup = (|| -> Result<(Arc<BaseConsumer>, Vec<Part>), String> {
        let consumer: Arc<BaseConsumer> = Arc::new(
            consumer_config(&cfg.spec)
                .create()
                .map_err(|e| format!("cannot create a Kafka consumer: {e}"))?,
        );
        let mut tpl = TopicPartitionList::new();
        for a in &cfg.assigned {
            let offset = match (a.offset, cfg.spec.start) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
            };
            tpl.add_partition_offset(&a.topic, a.partition, offset)
                .map_err(|e| e.to_string())?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| format!("cannot assign partitions: {e}"))?;
        let mut parts = Vec::new();
        for a in &cfg.assigned {
            let queue = consumer
                .split_partition_queue(&a.topic, a.partition)
                .ok_or_else(|| format!("cannot read partition {}/{}", a.topic, a.partition))?;
            let name = source_name(&a.topic, a.partition);
            parts.push(Part {
                input: bytes_hash(name.as_bytes()),
                name: name.into(),
                queue,
                next: a.offset.unwrap_or(-1),
                end: None,
                taken: 0,
                text: String::new(),
                positions: Vec::new(),
                undecodable: Vec::new(),
                first_ts: None,
            });
        }
        Ok((consumer, parts))
    })();
    let fault = cfg.fault.clone();
    builder.build(move |mut caps| {
        for cap in caps.iter_mut() {
            cap.downgrade(&cfg.first_epoch);
        }
        let (consumer, mut parts) = match setup {
            Ok(s) => s,
            Err(e) => {
                fault.raise(format!("{step}: {e}"));
                caps.clear();
                return Box::new(move |_: &[timely::progress::frontier::MutableAntichain<Epoch>]| {})
                    as Box<dyn FnMut(&[timely::progress::frontier::MutableAntichain<Epoch>])>;
            }
        };
        info!(step_id = %step, worker, partitions = parts.len(), "Kafka partitions assigned.");
        let mut caps = Some(caps);
        let quota = (cfg.records_per_epoch * cfg.job_workers.max(1) as u64)
            .div_ceil(cfg.job_partitions.max(parts.len()).max(1) as u64)
            .max(1);
        let mut epoch_started = Instant::now();
        let mut transport_errors = 0u64;
        Box::new(move |_frontiers: &[timely::progress::frontier::MutableAntichain<Epoch>]| {
            let Some(c) = caps.as_mut() else { return };
            let epoch = *c[0].time();
            let done = committed.with_frontier(|f| f.first().copied());
            if done.is_some_and(|d| epoch >= d + cfg.max_epochs_in_flight) {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            // Serve the consumer's own events (errors, reconnects).
            while let Some(ev) = consumer.poll(Duration::ZERO) {
                if let Err(e) = ev {
                    transport_errors += 1;
                    metrics::counter!(crate::core::metrics::KAFKA_ERRORS, "step" => "kafka", "kind" => "consumer").increment(1);
                    crate::core::metrics::io_error();
                    warn!(step_id = %step, %e, transport_errors, "Kafka consumer error; librdkafka retries.");
                }
            }
            let stopping = cfg.stop.load(Ordering::Relaxed);
            // Fill each partition's quota for this epoch without blocking.
            for p in parts.iter_mut() {
                while p.taken < quota && !(cfg.once && p.drained()) {
                    match p.queue.poll(Duration::ZERO) {
                        None => break,
                        Some(Ok(m)) => {
                            if cfg.once
                                && p.end.is_none() {
                                    p.end = cached_high_watermark(&consumer, m.topic(), m.partition());
                                }
                            // One message is one line: fold any newline inside it.
                            let payload = m.payload().unwrap_or_default();
                            match std::str::from_utf8(payload) {
                                Ok(s) if !payload.iter().any(|b| *b == b'\n' || *b == b'\r') => p.text.push_str(s),
                                Ok(s) => p.text.push_str(&s.replace(['\n', '\r'], " ")),
                                Err(_) => {
                                    // Rejected as `bad_encoding`, its exact bytes kept.
                                    p.undecodable.push((m.offset() as u64, payload.to_vec()));
                                    p.text.push_str(&String::from_utf8_lossy(payload).replace(['\n', '\r'], " "));
                                }
                            }
                            p.text.push('\n');
                            p.positions.push(m.offset() as u64);
                            p.first_ts.get_or_insert(m.timestamp().to_millis().unwrap_or(0));
                            p.next = m.offset() + 1;
                            p.taken += 1;
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) => {
                            if p.next < 0 {
                                p.next = 0;
                            }
                            // Everything there is has been read: the end is here,
                            // even below the high watermark first seen (a
                            // transactional topic ends in a commit marker, an
                            // offset no reader is given; read_committed stops at
                            // the last stable offset).
                            p.end = Some(p.end.map_or(p.next, |e| e.min(p.next)));
                        }
                        Some(Err(e)) => {
                            transport_errors += 1;
                            metrics::counter!(crate::core::metrics::KAFKA_ERRORS, "step" => "kafka", "kind" => "fetch").increment(1);
                            crate::core::metrics::io_error();
                            warn!(step_id = %step, partition = %p.name, %e, "Kafka fetch error; librdkafka retries.");
                            break;
                        }
                    }
                }
            }
            let complete = parts.iter().all(|p| p.taken >= quota || (cfg.once && p.drained()));
            let timed_out = !cfg.once && epoch_started.elapsed() >= Duration::from_millis(cfg.spec.epoch_interval_ms);
            let any = parts.iter().any(|p| p.taken > 0);
            if complete || timed_out || stopping {
                let mut chunks_handle = chunks_out.activate();
                let mut session = chunks_handle.session(&c[0]);
                for p in parts.iter_mut().filter(|p| p.taken > 0) {
                    metrics::counter!(crate::core::metrics::RECORDS_IN, "step" => "kafka").increment(p.taken);
                    metrics::counter!(crate::core::metrics::BYTES_IN, "step" => "kafka").increment(p.text.len() as u64);
                    session.give(Chunk {
                        source: p.name.clone(),
                        input: p.input,
                        first_line: p.positions[0],
                        format,
                        header: header.clone(),
                        text: std::mem::take(&mut p.text),
                        arrived_ms: p.first_ts.take().unwrap_or(0),
                        positions: Some(std::mem::take(&mut p.positions)),
                        undecodable: std::mem::take(&mut p.undecodable),
                    });
                    p.taken = 0;
                }
                drop(session);
                let all_drained = cfg.once && parts.iter().all(Part::drained);
                if any || all_drained || timed_out || stopping {
                    let offsets = parts.iter().filter(|p| p.next >= 0).map(|p| (p.name.to_string(), p.next)).collect();
                    for (a, p) in cfg.assigned.iter().zip(parts.iter()) {
                        if let Some(high) = cached_high_watermark(&consumer, &a.topic, a.partition) {
                            let lag = (high - p.next.max(0)).max(0) as f64;
                            metrics::gauge!(crate::core::metrics::KAFKA_LAG, "topic" => a.topic.clone(), "partition" => a.partition.to_string()).set(lag);
                        }
                    }
                    pos_out.activate().session(&c[2]).give(SourcePos { worker, position: None, offsets, labels: false });
                    for cap in c.iter_mut() {
                        cap.downgrade(&(epoch + 1));
                    }
                    epoch_started = Instant::now();
                }
                if all_drained || stopping {
                    info!(step_id = %step, worker, "Kafka partitions drained.");
                    caps = None;
                    return;
                }
            }
            if any {
                activator.activate();
            } else {
                activator.activate_after(Duration::from_millis(1));
            }
        })
    });
    (chunks, facts, positions)
}

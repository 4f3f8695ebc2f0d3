//! Kafka → Kafka throughput beside a bare rdkafka consumer loop.
//!
//! `cargo bench --bench kafka [-- --rows N]` starts Apache Kafka (a
//! single-node KRaft broker through `.ci/kafka/broker`, on a free loopback
//! port), produces N generated rows (default 1,000,000, JSON lines, with
//! faults) into a 4-partition topic, then in one run:
//!
//! * `bare-consumer` — one rdkafka consumer that only reads the topic to its
//!   end (read_committed) and counts the messages: the practical limit;
//! * `bare-pipe` — the same loop also producing every message unchanged to
//!   another topic and waiting for the acknowledgements;
//! * `bare-pipe-tx` — the same pipe committing a transaction every 10,000
//!   records, as the engine's sink does every epoch: what transactions cost
//!   the broker without the engine;
//! * `engine-nosink` — the engine reading Kafka into the lake only;
//! * `engine` — `fraud_kafka.toml` with `--once`, 1 worker: read, parse, clean,
//!   featurize, score, write the lake and produce every scored record to a
//!   `scored` topic in one transaction per epoch;
//! * `engine-2w` — the same with 2 workers;
//! * `engine-1core` — 1 worker with the whole process pinned to one core
//!   (`taskset`), the baseline two workers' scaling is judged against.
//!
//! Each runs in a child process of this binary, the modes interleaved in
//! `--repeat` rounds (3 by default; each round with its own groups, output
//! topics and lakes), and the median round of each is reported: a freshly
//! started broker's JVM is still compiling its hot paths during the first
//! round, on the same two cores. It prints records/s, peak RSS, the ratio
//! to the bare consumer, and the CPU time per record of the mode's process
//! (all its threads) and of the broker while the mode ran: where the broker
//! shares the machine's cores, their sum bounds the rate.

#[path = "../tests/common/broker.rs"]
mod broker;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = common::arg(&args, "--rows", 1_000_000);
    let repeat: usize = common::arg(&args, "--repeat", 3) as usize;
    match std::env::var("MILLRACE_BENCH_MODE").ok().as_deref() {
        Some(mode) => child(mode),
        None => parent(rows, repeat.max(1)),
    }
}

const MODES: [&str; 7] = [
    "bare-consumer",
    "bare-pipe",
    "bare-pipe-tx",
    "engine-nosink",
    "engine",
    "engine-2w",
    "engine-1core",
];

fn parent(rows: u64, repeat: usize) {
    let broker = broker::Broker::start("bench");
    let brokers = broker.addr.clone();
    let dir = std::env::temp_dir().join(format!("millrace-kafka-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = millrace::gen::GenOptions {
        rows,
        seed: 7,
        format: millrace::gen::GenFormat::Jsonl,
        ..Default::default()
    };
    let mut buf = Vec::new();
    let truth = millrace::gen::generate(&opts, &mut buf).unwrap();
    let t = Instant::now();
    let n =
        millrace::connectors::kafka_sink::produce_lines(&brokers, "tx", 4, &buf, false).unwrap();
    println!("kafka bench: {n} records ({rows} rows + {} duplicates) produced to a 4-partition topic in {:.1} s; Apache Kafka {} on loopback, {} cores", truth.duplicates, t.elapsed().as_secs_f64(), kafka_version(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    let mut rounds: Vec<Vec<(&str, serde_json::Value)>> = Vec::new();
    let broker_pid = broker.pid();
    let broker_cpu = || {
        broker_pid
            .as_deref()
            .and_then(common::cpu_seconds)
            .unwrap_or(f64::NAN)
    };
    for round in 0..repeat {
        let round = round.to_string();
        let env = [
            ("MILLRACE_BENCH_DIR", dir.to_str().unwrap()),
            ("MILLRACE_BENCH_BROKERS", brokers.as_str()),
            ("MILLRACE_BENCH_ROUND", round.as_str()),
        ];
        // One mode at a time, with the broker's CPU time over it: on a
        // machine the broker shares, what the two together spend per record
        // is what bounds the rate.
        let mut runs = Vec::new();
        for mode in MODES {
            let before = broker_cpu();
            let mut run = common::run_modes(&[mode], &env).remove(0);
            run.1["broker_cpu_s"] = serde_json::json!(broker_cpu() - before);
            runs.push(run);
        }
        rounds.push(runs);
    }
    // Each mode's median round by records/s.
    let results: Vec<(&str, serde_json::Value)> = (0..MODES.len())
        .map(|m| {
            let mut runs: Vec<&serde_json::Value> = rounds.iter().map(|r| &r[m].1).collect();
            runs.sort_by(|a, b| {
                a["records_per_s"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["records_per_s"].as_f64().unwrap())
            });
            (MODES[m], runs[runs.len() / 2].clone())
        })
        .collect();
    println!("median of {repeat} interleaved round(s):");
    let base = results[0].1["records_per_s"].as_f64().unwrap();
    println!(
        "{:<14} {:>10} {:>10} {:>12} {:>10} {:>7} {:>8} {:>10}",
        "mode", "records", "seconds", "records/s", "peak MB", "ratio", "µs CPU", "µs broker"
    );
    for (mode, v) in &results {
        let rps = v["records_per_s"].as_f64().unwrap();
        let records = v["records"].as_f64().unwrap();
        // CPU per record: the mode's process (all its threads), and the broker meanwhile.
        let per_record = |key: &str| v[key].as_f64().unwrap_or(f64::NAN) * 1e6 / records;
        println!(
            "{:<14} {:>10} {:>10.3} {:>12.0} {:>10.1} {:>7.3} {:>8.2} {:>10.2}",
            mode,
            v["records"],
            v["seconds"].as_f64().unwrap(),
            rps,
            v["peak_kb"].as_f64().unwrap() / 1024.0,
            rps / base,
            per_record("cpu_s"),
            per_record("broker_cpu_s")
        );
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The broker's Kafka version (`broker version`).
fn kafka_version() -> String {
    Command::new(broker::script())
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn child(mode: &str) {
    if mode == "engine-1core" {
        // Before the engine starts any thread: they all inherit the mask.
        let pinned = Command::new("taskset")
            .args(["-cp", "0", &std::process::id().to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(pinned, "engine-1core needs taskset (util-linux)");
    }
    let dir = PathBuf::from(std::env::var("MILLRACE_BENCH_DIR").unwrap());
    let brokers = std::env::var("MILLRACE_BENCH_BROKERS").unwrap();
    // Every round writes its own output topics, groups and lakes.
    let round = std::env::var("MILLRACE_BENCH_ROUND").unwrap_or_default();
    let tagged = format!("{mode}-{round}");
    let piped = format!("piped-{round}");
    let started = Instant::now();
    let records = match mode {
        "bare-consumer" => bare(&brokers, None, None),
        "bare-pipe" => bare(&brokers, Some(&piped), None),
        "bare-pipe-tx" => bare(&brokers, Some(&format!("{piped}-tx")), Some(10_000)),
        _ => engine(
            &dir,
            &brokers,
            if mode == "engine-2w" { 2 } else { 1 },
            mode,
            &tagged,
        ),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"mode": mode, "records": records, "seconds": secs, "records_per_s": records as f64 / secs,
            "peak_kb": common::peak_rss_kb(), "cpu_s": common::cpu_seconds("self")})
    );
}

/// Reads `tx` to its end; with `pipe`, also produces every payload unchanged to that topic
/// (idempotent, lz4, waiting for every acknowledgement), one message per call.
/// With `transactions`, the pipe commits a transaction every that many
/// records, as the engine's sink does every epoch: what transactions cost
/// without the engine.
fn bare(brokers: &str, pipe: Option<&str>, transactions: Option<u64>) -> u64 {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: Option<BaseProducer> = pipe.map(|topic| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "20");
        if transactions.is_some() {
            c.set("transactional.id", format!("bench-{topic}"));
        }
        let p: BaseProducer = c.create().unwrap();
        if transactions.is_some() {
            p.init_transactions(Duration::from_secs(30)).unwrap();
            p.begin_transaction().unwrap();
        }
        p
    });
    // As the engine's sink: settled first, a commit does not wait out
    // rust-rdkafka's 100 ms flush polls.
    let commit = |p: &BaseProducer| {
        millrace::connectors::kafka_sink::settle(p, Duration::from_secs(120)).unwrap();
        p.commit_transaction(Duration::from_secs(60)).unwrap();
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("tx", p, Offset::Beginning)
            .unwrap();
    }
    // As the engine's source does: with the topic's leaders known before the
    // assignment, librdkafka looks up the start offsets at once instead of
    // 500 ms later.
    consumer
        .fetch_metadata(Some("tx"), Duration::from_secs(10))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut eof = BTreeSet::new();
    let mut n = 0u64;
    let mut bytes = 0usize;
    while eof.len() < 4 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                use rdkafka::Message;
                n += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
                if let (Some(p), Some(topic)) = (&producer, pipe) {
                    let mut record = BaseRecord::to(topic)
                        .key(m.key().unwrap_or_default())
                        .payload(m.payload().unwrap_or_default());
                    while let Err((_, r)) = p.send(record) {
                        record = r;
                        p.poll(Duration::from_millis(5));
                    }
                    p.poll(Duration::ZERO);
                    if transactions.is_some_and(|every| n.is_multiple_of(every)) {
                        commit(p);
                        p.begin_transaction().unwrap();
                    }
                }
                eof.remove(&m.partition());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    if let Some(p) = &producer {
        if transactions.is_some() {
            commit(p);
        } else {
            p.flush(Duration::from_secs(120)).unwrap();
        }
    }
    std::hint::black_box(bytes);
    n
}

/// The engine in `mode`, its group, output topic and lake named `tag`.
fn engine(dir: &Path, brokers: &str, workers: usize, mode: &str, tag: &str) -> u64 {
    let mut plan = millrace::topology::Topology::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies/fraud_kafka.toml"),
    )
    .unwrap();
    let k = plan.source.kafka_mut().unwrap();
    k.brokers = brokers.to_string();
    k.topics = vec!["tx".into()];
    k.group_id = format!("bench-{tag}");
    let sink = plan.topology.sink.kafka.as_mut().unwrap();
    sink.brokers = Some(brokers.to_string());
    sink.topic = format!("scored-{tag}");
    if mode == "engine-nosink" {
        plan.topology.sink.kafka = None;
    } else if mode == "engine-notx" {
        plan.topology.sink.kafka.as_mut().unwrap().transactional = false;
    }
    plan.topology.lake.path = dir.join(format!("lake-{tag}"));
    let s = millrace::runtime::run(
        Arc::new(plan),
        &millrace::runtime::RunOptions {
            workers,
            once: true,
            ..Default::default()
        },
    )
    .unwrap();
    s.ledger.input
}

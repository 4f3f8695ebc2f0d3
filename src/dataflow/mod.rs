//! Dataflow assembly: a compiled topology becomes one timely dataflow per worker.
//!
//! ```text
//! landing ─► parse ─► clean ─┬─► featurize ─► score ─┬─► lake:clean + lake:scored (pending parts)
//!   │                        └─► lake:rejected     ▲ (pending parts)
//!   │   labels (a folder or Kafka) ─► parse ─► label_lines ┘ (exchanged by record id, with the examples)
//!   │          clean, featurize, score snapshots ─► checkpoint_state (per worker)
//!   └─ positions, file facts, tallies, evaluations, commits, saved states
//!                      ─► ledger (worker 0): checkpoint, publish, manifest, lake:metrics
//!                                                          │
//!                         landing's flow control ◄── probe ┘
//! ```
//! Step ids are fixed per position (`landing`, `parse`, `clean`, `featurize`,
//! `score`, `lake_records`, `lake_rejected`, `checkpoint_state`, `ledger`): they key checkpointed state and label
//! metrics.

pub mod coordinator;
pub mod progress;
pub mod tap;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use millrace_operators::arena::{Arena, ArenaTally, PromoteRule};
use millrace_operators::clean::Clean;
use millrace_operators::epochs::decode;
use millrace_operators::epochs::{StateError, StateIo};
use millrace_operators::featurize::Featurize;
use millrace_operators::hash::{key_hash, owner};
use millrace_operators::labels::LabelLines;
use millrace_operators::monitor::Monitors;
use millrace_operators::parse::Parse;
use millrace_operators::score::{Challenger, ModelDelta, Refresh, Score, Scorer, CHALLENGER_STEP};
use millrace_operators::Epoch;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, ConnectLoop, Exchange, Feedback, Probe};
use timely::dataflow::{ProbeHandle, Scope, Stream};

use crate::connectors::kafka::Assigned;
use crate::connectors::lake::{Lake, Table};
use crate::connectors::landing::Processed;
use crate::connectors::{Sink, SinkContext, SinkInputs, SourceStart};
use crate::core::fault::Fault;
use crate::core::position::SourceStreams;
use crate::dataflow::coordinator::ledger::{Checkpointing, Coordinator, Event, Ledger, RunTotals};
use crate::dataflow::coordinator::snapshots::PersistSnapshots;
use crate::topology::Compiled;

/// Where the delayed-label source's files go in the manifest (a prefix no landed name has).
pub const LABEL_FILES: &str = "labels/";

/// What a worker's dataflow shares with the runtime.
pub struct Context {
    /// Read what is there, then stop.
    pub once: bool,
    /// Files already processed (from the manifest).
    pub processed: Processed,
    /// The first epoch of this run.
    pub first_epoch: Epoch,
    /// Where operators report faults.
    pub fault: Fault,
    /// Set when the run is asked to stop (SIGINT/SIGTERM).
    pub stop: Arc<AtomicBool>,
    /// The coordinator's totals (filled on worker 0).
    pub totals: Rc<RefCell<RunTotals>>,
    /// Checkpointing, and the checkpoint resumed from.
    pub checkpointing: Option<Checkpointing>,
    /// Operator state to restore, by step id and worker.
    pub restore: Arc<BTreeMap<(String, usize), Vec<u8>>>,
    /// Kafka source: every worker's partitions and start offsets.
    pub kafka_assignment: Arc<Vec<Vec<Assigned>>>,
    /// Kafka label source: every worker's label partitions and start offsets.
    pub label_kafka_assignment: Arc<Vec<Vec<Assigned>>>,
    /// Sinks the runtime prepared (the Kafka sink, after asking the broker
    /// which epochs a previous run already committed), beside the plan's own.
    pub prepared_sinks: Vec<Arc<dyn Sink + Send + Sync>>,
    /// Why the previous run did not finish cleanly, if it did not.
    pub restart: Option<String>,
    /// A registry version to start the model from (no checkpoint to resume).
    pub warm_start: Option<millrace_operators::score::ModelRelease>,
    /// Progress counters (a `--once` run over a landing folder).
    pub progress: Option<Arc<crate::dataflow::progress::Progress>>,
    /// Sample records into these rings (the live view's `/tap`).
    pub taps: Option<Arc<crate::dataflow::tap::Taps>>,
    /// A request to promote the challenger (read by worker 0, which tells the others).
    pub promote: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Builds the dataflow; returns a probe that is done when everything is committed.
pub fn build<'scope>(
    scope: Scope<'scope, Epoch>,
    plan: &Compiled,
    ctx: Context,
) -> Result<ProbeHandle<Epoch>, StateError> {
    let t = &plan.topology;
    let worker = scope.index();
    let snapshot = ctx.checkpointing.is_some();
    let state = |step: &str| StateIo {
        snapshot,
        restore: ctx.restore.get(&(step.to_string(), worker)).cloned(),
    };
    let committed = ProbeHandle::new();
    let records = read_records(scope, plan, &ctx, committed.clone());
    let (parsed, read) = records.0.parse(plan.schema.clone());
    let cleaned = parsed.clean("clean", plan.schema.clone(), &t.clean, state("clean"))?;
    let (mut examples, feature_snapshots) =
        cleaned
            .clean
            .clone()
            .featurize("featurize", plan.features.clone(), state("featurize"))?;
    let labels = read_labels(scope, plan, &ctx, committed.clone());
    if labels.is_some() {
        // Labels and the records they belong to meet on the worker that owns the id.
        let peers = scope.peers();
        examples = examples.exchange(move |ex| {
            let h = ex.record.id.as_deref().map_or(ex.record.key_hash, key_hash);
            owner(h, peers) as u64
        });
    }
    let (labels, label_events, label_rejects) = match labels {
        Some(l) => (Some(l.waits), l.events, Some(l.rejected)),
        None => (None, Vec::new(), None),
    };
    let scoring = score(scope, plan, &ctx, examples, labels, state("score"))?;
    let mut events: Vec<Stream<'scope, Epoch, Vec<Event>>> = vec![
        records.1.map(Event::File),
        records.2.map(Event::Source),
        read.map(Event::Tally),
        cleaned.tallies.map(Event::Tally),
        scoring.evals.map(Event::Eval),
        scoring.releases.clone().map(Event::Model),
    ];
    // Window aggregates for the monitors, and arrival times for the latency figures.
    events.push(scoring.windows.map(Event::Windows));
    events.extend(label_events);
    let rejected = match label_rejects {
        Some(late) => scope.concatenate(vec![cleaned.rejected, late]),
        None => cleaned.rejected,
    };
    let inputs = SinkInputs::new(scoring.scored, rejected);
    if let Some(taps) = &ctx.taps {
        tap(taps, &cleaned.clean, &inputs.rejected, &inputs.scored);
    }
    let sink_ctx = SinkContext {
        lake: t.lake.path.clone(),
        schema: plan.schema.clone(),
        pending: snapshot,
        fault: ctx.fault.clone(),
    };
    let mut snapshots = vec![cleaned.snapshots, feature_snapshots, scoring.snapshots];
    for sink in plan.sinks().iter().chain(&ctx.prepared_sinks) {
        let out = sink.build(&inputs, &sink_ctx, state(sink.step_id()))?;
        events.push(out.commits.map(Event::Commit));
        snapshots.extend(out.snapshots);
    }
    if snapshot {
        let all = scope.concatenate(snapshots);
        events.push(
            all.persist_snapshots("checkpoint_state", t.lake.path.clone(), ctx.fault.clone())
                .map(Event::State),
        );
    }
    let coordinator = coordinator(plan, ctx, worker, snapshot);
    let done = ProbeHandle::new();
    scope
        .concatenate(events)
        .ledger("ledger", coordinator)
        .probe_with(&committed)
        .probe_with(&done);
    Ok(done)
}

/// The records' source, started where the checkpoint left it.
fn read_records<'scope>(
    scope: Scope<'scope, Epoch>,
    plan: &Compiled,
    ctx: &Context,
    committed: ProbeHandle<Epoch>,
) -> SourceStreams<'scope> {
    let resume = ctx.checkpointing.as_ref().and_then(|c| c.resumed.as_ref());
    let start = SourceStart {
        files: resume.map(|r| r.sources.clone()).unwrap_or_default(),
        processed: ctx.processed.clone(),
        assignment: ctx.kafka_assignment.clone(),
        ..source_start(plan, ctx)
    };
    plan.source
        .connector()
        .build(scope, plan.source.step_id(), start, committed)
}

/// What every source of this run shares.
fn source_start(plan: &Compiled, ctx: &Context) -> SourceStart {
    let r = &plan.topology.runtime;
    SourceStart {
        once: ctx.once,
        records_per_epoch: r.records_per_epoch,
        max_epochs_in_flight: r.max_epochs_in_flight,
        first_epoch: ctx.first_epoch,
        fault: ctx.fault.clone(),
        stop: ctx.stop.clone(),
        files: Vec::new(),
        processed: Processed::default(),
        assignment: Arc::default(),
    }
}

/// The delayed labels, wired for scoring.
struct Labels<'scope> {
    /// The labels, on the worker owning their id, with the horizon and the waiting bound.
    waits: LateLabels<'scope>,
    /// The label source's facts, positions and tallies for the coordinator.
    events: Vec<Stream<'scope, Epoch, Vec<Event>>>,
    /// Label lines rejected.
    rejected: Stream<'scope, Epoch, Vec<millrace_operators::record::Reject>>,
}

type LateLabels<'scope> = (
    Stream<'scope, Epoch, Vec<millrace_operators::labels::Label>>,
    i64,
    usize,
);

/// The delayed-label source (a landing folder of its own, its files in the
/// manifest under [`LABEL_FILES`] so the two folders never share a name; or
/// Kafka topics), parsed into label lines.
fn read_labels<'scope>(
    scope: Scope<'scope, Epoch>,
    plan: &Compiled,
    ctx: &Context,
    committed: ProbeHandle<Epoch>,
) -> Option<Labels<'scope>> {
    let (spec, schema) = plan.labels.as_ref()?;
    let source = plan.label_source()?;
    let resume = ctx.checkpointing.as_ref().and_then(|c| c.resumed.as_ref());
    let start = SourceStart {
        files: resume.map(|r| r.label_sources.clone()).unwrap_or_default(),
        processed: ctx
            .processed
            .iter()
            .filter_map(|(name, v)| {
                name.strip_prefix(LABEL_FILES)
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect(),
        assignment: ctx.label_kafka_assignment.clone(),
        ..source_start(plan, ctx)
    };
    let (chunks, facts, positions) = source.build(scope, "labels", start, committed);
    let (parsed, read) = chunks.parse(schema.clone());
    let lines = parsed.label_lines("label_lines");
    let peers = scope.peers();
    let waits = (
        lines
            .labels
            .exchange(move |l| owner(l.id_hash, peers) as u64),
        spec.horizon_ms,
        spec.max_waiting,
    );
    let events = vec![
        facts.map(|mut f| {
            f.name = format!("{LABEL_FILES}{}", f.name);
            Event::File(f)
        }),
        positions.map(|mut p| {
            p.labels = true;
            Event::Source(p)
        }),
        read.map(Event::Tally),
        lines.tallies.map(Event::Tally),
    ];
    Some(Labels {
        waits,
        events,
        rejected: lines.rejected,
    })
}

/// Scoring and learning: the model (shared across workers through a feedback
/// edge of their published updates), a challenger in shadow if declared, and
/// the delayed labels if any.
fn score<'scope>(
    scope: Scope<'scope, Epoch>,
    plan: &Compiled,
    ctx: &Context,
    examples: Stream<'scope, Epoch, Vec<millrace_operators::record::Example>>,
    labels: Option<LateLabels<'scope>>,
    state: StateIo,
) -> Result<millrace_operators::score::ScoreStreams<'scope>, StateError> {
    let t = &plan.topology;
    // Several workers share one model: their published updates go to every
    // worker and come back one epoch later (a feedback edge), to be merged.
    let (loop_handle, updates) =
        match (scope.peers() > 1).then(|| scope.feedback::<Vec<ModelDelta>>(1)) {
            Some((handle, updates)) => (Some(handle), Some(updates)),
            None => (None, None),
        };
    let (challenger, tally_loop) = challenger(scope, plan, ctx)?;
    let refresh = Refresh {
        updates,
        spec: t.model.clone(),
        resumed_after: ctx
            .checkpointing
            .as_ref()
            .and_then(|c| c.resumed.as_ref())
            .map(|r| r.epoch),
        labels,
        challenger,
    };
    let mut scorer = Scorer::new(&t.model, &plan.features);
    if let Some(release) = ctx.warm_start.clone() {
        scorer.warm_start(release);
    }
    let scoring = examples.score("score", scorer, plan.watched.clone(), state, refresh)?;
    if let Some(handle) = loop_handle {
        scoring.deltas.clone().broadcast().connect_loop(handle);
    }
    if let Some(handle) = tally_loop {
        scoring.tallies.clone().broadcast().connect_loop(handle);
    }
    Ok(scoring)
}

type TallyLoop<'scope> =
    timely::dataflow::operators::feedback::Handle<'scope, Epoch, Vec<ArenaTally>>;

/// A challenger: its own scorer, and with several workers a feedback edge
/// for the arena tallies (everyone decides a promotion on everyone's).
fn challenger<'scope>(
    scope: Scope<'scope, Epoch>,
    plan: &Compiled,
    ctx: &Context,
) -> Result<(Option<Challenger<'scope>>, Option<TallyLoop<'scope>>), StateError> {
    let t = &plan.topology;
    let Some(spec) = &t.challenger else {
        return Ok((None, None));
    };
    let worker = scope.index();
    let (tally_loop, tallies) =
        match (scope.peers() > 1).then(|| scope.feedback::<Vec<ArenaTally>>(1)) {
            Some((handle, stream)) => (Some(handle), Some(stream)),
            None => (None, None),
        };
    let (scorer, arena) = match ctx.restore.get(&(CHALLENGER_STEP.to_string(), worker)) {
        Some(bytes) => {
            let (s, a) = decode::<(Scorer, Arena)>(CHALLENGER_STEP, bytes)?;
            (s.restored(), a)
        }
        None => (
            Scorer::new(spec, &plan.features),
            Arena::new(t.promotion.clone().unwrap_or_else(|| PromoteRule {
                // Without `[promotion]` the challenger only shadows.
                window_records: u64::MAX,
                ..PromoteRule::default()
            })),
        ),
    };
    let challenger = Challenger {
        scorer,
        spec: spec.clone(),
        arena,
        tallies,
        promote_now: ctx.promote.clone().filter(|_| worker == 0),
    };
    Ok((Some(challenger), tally_loop))
}

/// Taps: one record in N of a step, rendered as JSON only when sampled, into the live view's ring.
fn tap<'scope>(
    taps: &Arc<crate::dataflow::tap::Taps>,
    clean: &Stream<'scope, Epoch, Vec<millrace_operators::record::Record>>,
    rejected: &Stream<'scope, Epoch, Vec<millrace_operators::record::Reject>>,
    scored: &Stream<'scope, Epoch, Vec<crate::connectors::ScoredBatch>>,
) {
    use timely::dataflow::operators::Inspect;
    fn sample<T: serde::Serialize>(
        taps: &Arc<crate::dataflow::tap::Taps>,
        step: &'static str,
    ) -> impl FnMut(&T) {
        let (tp, mut n) = (taps.clone(), 0u64);
        move |r: &T| {
            n += 1;
            if tp.sampled(n) {
                tp.push(step, serde_json::to_string(r).unwrap_or_default());
            }
        }
    }
    clean.clone().inspect(sample(taps, "clean"));
    rejected.clone().inspect(sample(taps, "rejected"));
    let mut scored_sample = sample(taps, "score");
    scored
        .clone()
        .inspect(move |batch| batch.iter().for_each(&mut scored_sample));
}

/// The coordinator's settings (it runs on every worker, and does its work on worker 0).
fn coordinator(plan: &Compiled, ctx: Context, worker: usize, snapshot: bool) -> Coordinator {
    let t = &plan.topology;
    let wants = |table: Table| t.lake.tables.contains(&table);
    // Worker 0 hosts the coordinator; only it commits the Kafka group's offsets.
    let committer = |spec: Option<&crate::connectors::kafka::KafkaSourceSpec>| match (spec, worker)
    {
        (Some(spec), 0) => match crate::connectors::kafka::committer(spec) {
            Ok(c) => Some(c),
            Err(e) => {
                ctx.fault.raise(e.to_string());
                None
            }
        },
        _ => None,
    };
    let kafka_commit = committer(plan.source.kafka());
    let label_kafka_commit = committer(plan.labels.as_ref().and_then(|(l, _)| l.kafka.as_ref()));
    let monitors = plan.watched.as_ref().map(|watched| {
        Monitors::new(
            &plan.schema,
            &t.monitors,
            watched,
            t.alerts.allowed_lateness_ms,
        )
    });
    let notifiers = match worker {
        0 => crate::connectors::notify::start_channels(
            crate::connectors::notify::Channels {
                webhook: t.alerts.webhook.as_ref(),
                email: t.alerts.email.as_ref(),
                kafka: t.alerts.kafka.as_ref(),
            },
            plan.source.kafka().map(|k| k.brokers.as_str()),
            &ctx.fault,
        ),
        _ => Vec::new(),
    };
    Coordinator {
        lake: Lake {
            root: t.lake.path.clone(),
            compression: t.lake.compression,
            schema: plan.schema.clone(),
            pending: snapshot,
            partitioning: t.lake.partition,
        },
        metrics: wants(Table::Metrics),
        checkpointing: ctx.checkpointing,
        totals: ctx.totals,
        fault: ctx.fault,
        kafka_commit,
        label_kafka_commit,
        monitors,
        alerts_table: wants(Table::Alerts),
        alerts_jsonl: t.alerts.jsonl.as_ref().map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                t.lake.path.join(p)
            }
        }),
        restart: ctx.restart,
        progress: ctx.progress,
        max_per_rule_per_hour: t.alerts.max_per_rule_per_hour,
        registry: (worker == 0
            && t.model.kind != millrace_operators::learn::logistic::ModelKind::Feature)
            .then(|| registry_ctx(plan)),
        notifiers,
    }
}

/// What the coordinator publishes model versions with.
fn registry_ctx(plan: &Compiled) -> crate::dataflow::coordinator::ledger::RegistryCtx {
    let t = &plan.topology;
    crate::dataflow::coordinator::ledger::RegistryCtx {
        name: t.name.clone(),
        config: serde_json::to_value(&t.model).expect("a model spec is plain data"),
        challenger_config: t
            .challenger
            .as_ref()
            .map(|c| serde_json::to_value(c).expect("a model spec is plain data")),
        features: plan
            .features
            .dense_names
            .iter()
            .chain(&plan.features.sparse_names)
            .cloned()
            .collect(),
        fingerprint: t.state_fingerprint(),
        keep_versions: t.model.keep_versions.unwrap_or(10),
    }
}

/// A readable description of the dataflow `plan` builds (what `millrace validate` prints).
pub fn describe(plan: &Compiled) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "topology `{}`: ok", plan.topology.name);
    describe_sources(plan, &mut out);
    describe_steps(plan, &mut out);
    describe_model(plan, &mut out);
    describe_outputs(plan, &mut out);
    out
}

/// The records' and the labels' sources, and how epochs are cut.
fn describe_sources(plan: &Compiled, out: &mut String) {
    use std::fmt::Write;
    let t = &plan.topology;
    let s = &plan.schema;
    let epochs = format!(
        "epochs of {} lines per worker, at most {} in flight",
        t.runtime.records_per_epoch, t.runtime.max_epochs_in_flight
    );
    if let Some(l) = plan.source.landing() {
        let _ = writeln!(
            *out,
            "  landing    source: folder {} ({:?} files, poll every {} ms, settled after {} ms); {epochs}",
            l.path.display(),
            l.format,
            l.poll_interval_ms,
            l.settle_ms,
        );
    }
    if let Some(k) = plan.source.kafka() {
        let options: Vec<String> = k
            .librdkafka_options
            .iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect();
        let _ = writeln!(
            *out,
            "  kafka      source: topics [{}] at {} (group `{}`, {:?} payloads, start {:?}); partitions assigned round-robin to workers; {epochs}, live epochs cut after {} ms{}",
            k.topics.join(", "),
            k.brokers,
            k.group_id,
            k.format,
            k.start,
            k.epoch_interval_ms,
            if options.is_empty() { String::new() } else { format!("; librdkafka {}", options.join(" ")) }
        );
    }
    if let Some((l, _)) = &plan.labels {
        let _ = writeln!(
            *out,
            "  labels     source: {}; joined to records by `{}`; {}; predictions wait {} ms of event time for their label",
            match (&l.path, &l.kafka) {
                (Some(path), _) => format!("folder {} ({:?} files)", path.display(), l.format),
                (None, Some(k)) => format!(
                    "Kafka topics [{}] at {} (group `{}`, {:?} payloads, start {:?})",
                    k.topics.join(", "),
                    k.brokers,
                    k.group_id,
                    k.format,
                    k.start
                ),
                (None, None) => String::new(),
            },
            s.id,
            match &l.time {
                Some(t) => format!("learned once the scored stream reaches `{t}`"),
                None => "learned as soon as they meet their prediction".to_string(),
            },
            l.horizon_ms
        );
    }
}

/// Parse, clean and featurize.
fn describe_steps(plan: &Compiled, out: &mut String) {
    use std::fmt::Write;
    let t = &plan.topology;
    let s = &plan.schema;
    let label = s.label.as_ref().map_or("none".to_string(), |l| {
        format!("{} ({:?})", l.field, l.kind)
    });
    let _ = writeln!(
        *out,
        "  parse      event time {} ({:?}), key {}, label {}, numeric [{}], categorical [{}]",
        s.event_time.field,
        s.event_time.format,
        s.key,
        label,
        s.numeric
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        s.categorical
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        *out,
        "  clean      keyed by {}; exact duplicates within {} lines; imputation [{}]  ─► rejected",
        s.key,
        t.clean.dedup_window_records,
        s.numeric
            .iter()
            .map(|f| format!("{}: {:?}", f.name, f.impute).to_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        *out,
        "  featurize  {} dense [{}] + {} sparse slots",
        plan.features.dense_len(),
        plan.features.dense_names.join(", "),
        plan.features.sparse_len()
    );
}

/// The champion and the challenger.
fn describe_model(plan: &Compiled, out: &mut String) {
    use std::fmt::Write;
    let t = &plan.topology;
    let m = &t.model;
    use millrace_operators::learn::logistic::ModelKind;
    let learner = match m.kind {
        ModelKind::LogisticRegression | ModelKind::LinearRegression => format!(
            "{:?} ({:?} lr {}, intercept lr {}, l2 {})",
            m.kind,
            m.optimizer,
            m.learning_rate,
            m.intercept_learning_rate.unwrap_or(m.learning_rate),
            m.l2
        ),
        ModelKind::Ftrl => format!(
            "FTRL-Proximal (alpha {}, beta {}, l1 {}, l2 {})",
            m.alpha.unwrap_or(0.1),
            m.beta.unwrap_or(1.0),
            m.l1,
            m.l2
        ),
        ModelKind::HoeffdingTree => format!("Hoeffding tree ({})", leaves(m)),
        ModelKind::AdaptiveRandomForest => format!(
            "adaptive random forest ({} trees, lambda {}, {})",
            m.trees.unwrap_or(10),
            m.lambda.unwrap_or(6.0),
            leaves(m)
        ),
        ModelKind::Feature => format!(
            "the feature `{}` as the score",
            m.feature.as_deref().unwrap_or("")
        ),
    };
    let _ = writeln!(
        *out,
        "  score      {learner}, standardised, predict then learn; with several workers one shared model, refreshed every {} records per worker",
        m.refresh_records.unwrap_or(1000)
    );
    if let Some(c) = &t.challenger {
        let rule = match &t.promotion {
            Some(p) => format!(
                "promoted when its {:?} beats the champion's by {} over the last {} labelled records",
                p.metric, p.margin, p.window_records
            )
            .to_lowercase(),
            None => "never promoted (no `[promotion]`)".to_string(),
        };
        let _ = writeln!(
            *out,
            "  challenger {:?} in shadow on the same records, evaluated beside the champion; {rule}",
            c.kind
        );
    }
}

/// The lake, the Kafka sink, the monitors and the ledger.
fn describe_outputs(plan: &Compiled, out: &mut String) {
    use std::fmt::Write;
    let t = &plan.topology;
    let s = &plan.schema;
    let tables: Vec<&str> = t.lake.tables.iter().map(|t| t.name()).collect();
    let _ = writeln!(
        *out,
        "  lake       {} tables [{}] ({:?} Parquet, partitioned by {:?})",
        t.lake.path.display(),
        tables.join(", "),
        t.lake.compression,
        t.lake.partition
    );
    if let Some(c) = &t.lake.compaction {
        let _ = writeln!(
            *out,
            "  compaction closed partitions every {} ms (all at the end of --once) into files of ~{} MiB; replaced parts kept {} ms",
            c.interval_ms, c.target_file_mb, c.grace_ms
        );
    }
    if let Some(k) = &t.sink.kafka {
        let _ = writeln!(
            *out,
            "  kafka      sink: topic `{}` at {} (JSON keyed by {}, {} compression, acks {}, {})",
            k.topic,
            k.brokers
                .as_deref()
                .or(plan.source.kafka().map(|s| s.brokers.as_str()))
                .unwrap_or("?"),
            s.key,
            k.compression,
            k.acks,
            if k.transactional {
                "one transaction per epoch: exactly-once"
            } else {
                "idempotent producer: at-least-once"
            }
        );
    }
    if !t.monitors.is_empty() {
        let rules: Vec<String> = t
            .monitors
            .iter()
            .map(|m| format!("{} ({:?})", m.id, m.kind).to_lowercase())
            .collect();
        let mut channels = Vec::new();
        if t.lake.tables.contains(&Table::Alerts) {
            channels.push("lake:alerts".to_string());
        }
        if let Some(p) = &t.alerts.jsonl {
            channels.push(format!("jsonl:{}", p.display()));
        }
        if let Some(w) = &t.alerts.webhook {
            channels.push(format!("webhook:{}", w.url));
        }
        if let Some(m) = &t.alerts.email {
            channels.push(format!("email:{}", m.to.join("+")));
        }
        if let Some(k) = &t.alerts.kafka {
            channels.push(format!("kafka:{}", k.topic));
        }
        let _ = writeln!(
            *out,
            "  monitors   [{}] ─► alerts to [{}]",
            rules.join(", "),
            channels.join(", ")
        );
    }
    let _ = write!(
        *out,
        "  ledger     in = clean + rejected + duplicate{} per epoch; manifest {}",
        if plan.labels.is_some() {
            " + labels"
        } else {
            ""
        },
        crate::dataflow::coordinator::manifest::path(&t.lake.path).display()
    );
}

/// What a tree learner's leaves answer with, for `validate`.
fn leaves(m: &millrace_operators::learn::logistic::ModelSpec) -> String {
    use millrace_operators::learn::logistic::LeafPrediction;
    match m.leaf_prediction.unwrap_or_default() {
        LeafPrediction::Logistic => format!(
            "model trees: a logistic regression at every node, lr {}",
            m.learning_rate
        ),
        LeafPrediction::Majority => "leaves: class distribution".to_string(),
        LeafPrediction::NaiveBayes => "leaves: naive Bayes".to_string(),
        LeafPrediction::NaiveBayesAdaptive => "leaves: naive Bayes adaptive".to_string(),
    }
}

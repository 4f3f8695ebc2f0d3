//! Checkpoints: what a run needs to resume exactly where a committed epoch ended.
//!
//! Layout under the lake:
//! ```text
//! _checkpoints/<epoch>.ckpt              one per checkpointed epoch (the commit point)
//! _checkpoints/state/<epoch>-w<worker>.bin   operator snapshots written by one worker after that epoch
//! ```
//! A `.ckpt` file is a header line `millrace-checkpoint <version> <xxh3 of the body>`
//! followed by a JSON body ([`Checkpoint`]): the source position of every
//! worker, a reference (with length and checksum) to the state file holding
//! each operator's latest snapshot, the lake parts written for the epoch (still
//! under hidden pending names), the files that ended in the epoch, and the
//! coordinator's own state. It is written create-only (`storage::write_create`:
//! a hard link of a fsynced temporary file on a local disk, a conditional put
//! in an object store): it exists whole or not at all, and of two writers
//! committing the same epoch of the same lake only one succeeds — the other
//! stops with an error saying so, before it publishes anything.
//!
//! **Commit protocol for epoch e.** Sinks write e's parts under hidden names
//! (`.part-….parquet.pending`, which Parquet readers skip) and fsync them;
//! every worker writes its operators' snapshots; then the coordinator writes
//! checkpoint e (the commit point) and only then renames e's parts to their
//! visible names. On restart, [`recover`] takes the newest checkpoint that
//! validates, finishes its renames (roll forward), deletes every pending part
//! and every visible part of a later epoch (roll back), and trims the landing
//! manifest to it; the epochs after it are replayed and, being deterministic,
//! rewrite the same parts under the same names.
//!
//! **Leftovers of a crashed run.** Recovery needs nothing from the run that
//! left the lake: temporary files, pending parts, state files and checkpoints
//! of later epochs are removed whatever state they are in, and a checkpoint
//! that cannot be completed — a state file or one of its parts missing, which
//! only a second process writing the same lake could cause (`runtime::lock`
//! now prevents that) — is skipped like a corrupt one, so the run falls back
//! to an older checkpoint instead of failing on every start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use millrace_operators::{Epoch, Snapshot};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_64;

use crate::connectors::compaction::is_compacted as compacted;
use crate::connectors::landing::{FileFact, FilePos};
use crate::core::storage;
use crate::dataflow::coordinator::manifest;

/// The checkpoint format version this build writes and reads: the operator
/// state format ([`millrace_operators::epochs::STATE_FORMAT`], whose test
/// fails when a state changes shape without a bump). A lake written under
/// another version is refused with both versions named (never silently
/// restarted).
pub const VERSION: u32 = millrace_operators::epochs::STATE_FORMAT;

/// A whole checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// The last epoch whose effects it includes.
    pub epoch: Epoch,
    /// Workers of the run that wrote it (state is partitioned over them).
    pub workers: usize,
    /// Fingerprint of the topology parts that shape state (schema, cleaning, features, model).
    pub topology: String,
    /// Per worker: the file it was in the middle of, if any.
    pub sources: Vec<Option<FilePos>>,
    /// The same for the delayed-label source.
    #[serde(default)]
    pub label_sources: Vec<Option<FilePos>>,
    /// Per operator instance: where its latest snapshot is.
    pub states: Vec<StateRef>,
    /// Lake parts of this epoch: pending name → visible name (relative to the lake).
    pub parts: Vec<(String, String)>,
    /// Landed files that ended in this epoch.
    pub files: Vec<FileFact>,
    /// The coordinator's latest event time (places metrics rows).
    pub latest_time_ms: i64,
    /// Kafka source: the next offset of every partition (`topic/partition`).
    #[serde(default)]
    pub kafka: BTreeMap<String, i64>,
    /// Kafka label source (`[source.labels.kafka]`): the next offset of every partition.
    #[serde(default)]
    pub label_kafka: BTreeMap<String, i64>,
    /// The monitors' state (bincode, base64 in the file), when the topology has monitors.
    #[serde(default, with = "base64_bytes")]
    pub monitors: Option<Vec<u8>>,
}

/// Bytes as one base64 string in the checkpoint's JSON (an array of numbers
/// would be several times larger and slow to write every epoch).
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(bytes) => s.serialize_some(&B64.encode(bytes)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        B64.decode(text.as_bytes())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// Where one operator instance's snapshot is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRef {
    /// Step id.
    pub step_id: String,
    /// Worker.
    pub worker: usize,
    /// The epoch of the snapshot (at or before the checkpoint's).
    pub epoch: Epoch,
    /// The state file, relative to the lake.
    pub file: String,
    /// Length of the state file.
    pub len: u64,
    /// xxh3 of the state file.
    pub checksum: u64,
}

/// The checkpoint folder of a lake.
pub fn dir(lake: &Path) -> PathBuf {
    lake.join("_checkpoints")
}

fn ckpt_name(epoch: Epoch) -> String {
    format!("{epoch:010}.ckpt")
}

/// The state file a worker writes after `epoch`, relative to the lake.
pub fn state_file(epoch: Epoch, worker: usize) -> String {
    format!("_checkpoints/state/{epoch:010}-w{worker:04}.bin")
}

/// Writes one worker's snapshots of one epoch; returns its reference data `(file, len, checksum)`.
pub fn write_state(
    lake: &Path,
    epoch: Epoch,
    worker: usize,
    snapshots: &[Snapshot],
) -> std::io::Result<(String, u64, u64)> {
    let rel = state_file(epoch, worker);
    let bytes = bincode::serialize(snapshots).map_err(std::io::Error::other)?;
    storage::write_atomic(&lake.join(&rel), &bytes)?;
    Ok((rel, bytes.len() as u64, xxh3_64(&bytes)))
}

/// Encodes a checkpoint with its header.
pub fn encode(ckpt: &Checkpoint) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(ckpt).expect("a checkpoint serializes");
    let mut out = format!("millrace-checkpoint {VERSION} {:016x}\n", xxh3_64(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Writes checkpoint `ckpt`, create-only. `crash` runs once its bytes are
/// durable, before it becomes visible. A checkpoint of the same epoch that is
/// already there (another job committed it) is an `AlreadyExists` error.
pub fn write(lake: &Path, ckpt: &Checkpoint, crash: impl FnOnce()) -> std::io::Result<()> {
    // The tests' place to hold a job just before it commits (two writers racing).
    crate::wait_point!("before_checkpoint_create");
    let path = dir(lake).join(ckpt_name(ckpt.epoch));
    storage::write_create(&path, &encode(ckpt), crash).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(
                e.kind(),
                format!(
                    "epoch {} of {} was committed by another job writing the same lake ({} exists); this job stops without publishing it",
                    ckpt.epoch,
                    lake.display(),
                    path.display()
                ),
            )
        } else {
            e
        }
    })
}

/// Why a checkpoint file was not used.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub reason: String,
}

/// Reads and fully validates one checkpoint file (header, checksum, JSON, and every state file it references).
pub fn read(lake: &Path, path: &Path) -> Result<Checkpoint, CheckpointError> {
    use CheckpointError as E;
    let bytes = storage::read(path).map_err(E::Read)?;
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or(E::NoHeader)?;
    let header = String::from_utf8_lossy(&bytes[..newline]).to_string();
    let parts: Vec<&str> = header.split(' ').collect();
    let [magic, version, checksum] = parts[..] else {
        return Err(E::Header(header));
    };
    if magic != "millrace-checkpoint" {
        return Err(E::Header(header));
    }
    if version != VERSION.to_string() {
        return Err(E::Version(version.to_string()));
    }
    let body = &bytes[newline + 1..];
    if format!("{:016x}", xxh3_64(body)) != checksum {
        return Err(E::Checksum);
    }
    let ckpt: Checkpoint = serde_json::from_slice(body).map_err(E::Body)?;
    for s in &ckpt.states {
        let (file, step) = (s.file.clone(), s.step_id.clone());
        let data = match storage::read(&lake.join(&s.file)) {
            Ok(data) => data,
            Err(error) => return Err(E::State { file, step, error }),
        };
        if data.len() as u64 != s.len || xxh3_64(&data) != s.checksum {
            return Err(E::CorruptState { file, step });
        }
    }
    // A commit point whose parts are gone (neither pending nor published) cannot
    // be rolled forward: recovery falls back to an older one and replays.
    for (pending, visible) in &ckpt.parts {
        let there = |rel: &str| storage::exists(&lake.join(rel)).map_err(E::Read);
        // A compaction may have replaced a published part (its rows are in
        // the compacted file) and a later pass deleted it.
        if !there(pending)? && !there(visible)? && !compacted(lake, visible).map_err(E::Read)? {
            return Err(E::PartMissing(visible.clone()));
        }
    }
    Ok(ckpt)
}

/// Why a checkpoint file cannot be resumed from (recovery then tries an older one).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// It, or a file it names, could not be read.
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    /// It has no header line.
    #[error("no header line (truncated?)")]
    NoHeader,
    /// Its header is not a checkpoint's.
    #[error("malformed header `{0}`")]
    Header(String),
    /// Another build's format.
    #[error("format version {0}, this build reads version {VERSION}")]
    Version(String),
    /// Its body is not what its header's checksum says.
    #[error("checksum mismatch (corrupt or truncated)")]
    Checksum,
    /// Its body does not decode.
    #[error("unreadable body: {0}")]
    Body(serde_json::Error),
    /// A state file it names could not be read.
    #[error("state file {file} of `{step}`: {error}")]
    State {
        /// The state file.
        file: String,
        /// The operator whose state it holds.
        step: String,
        /// The storage error.
        error: std::io::Error,
    },
    /// A state file it names is not what it recorded.
    #[error("state file {file} of `{step}` is corrupt")]
    CorruptState {
        /// The state file.
        file: String,
        /// The operator whose state it holds.
        step: String,
    },
    /// A part it publishes is neither pending nor published.
    #[error(
        "its part {0} is missing, neither pending nor published (removed by another process?)"
    )]
    PartMissing(String),
}

/// Checkpoint files of a lake, newest first.
pub fn list(lake: &Path) -> Vec<(Epoch, PathBuf)> {
    try_list(lake).unwrap_or_else(|e| {
        warn!(lake = %lake.display(), %e, "Cannot list the checkpoints.");
        Vec::new()
    })
}

/// Checkpoint files of a lake, newest first, or why they cannot be listed.
pub fn try_list(lake: &Path) -> std::io::Result<Vec<(Epoch, PathBuf)>> {
    let mut found = Vec::new();
    for (name, _) in storage::list(&dir(lake), false)? {
        if let Some(epoch) = name
            .strip_suffix(".ckpt")
            .and_then(|n| n.parse::<Epoch>().ok())
        {
            found.push((epoch, dir(lake).join(&name)));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// The newest checkpoint that validates, and the newer ones that did not.
pub fn newest(lake: &Path) -> (Option<Checkpoint>, Vec<Rejected>) {
    let mut rejected = Vec::new();
    for (_, path) in list(lake) {
        match read(lake, &path) {
            Ok(c) => return (Some(c), rejected),
            Err(reason) => {
                warn!(checkpoint = %path.display(), %reason, "Skipping an unusable checkpoint.");
                rejected.push(Rejected {
                    file: path,
                    reason: reason.to_string(),
                });
            }
        }
    }
    (None, rejected)
}

/// Every operator's snapshot referenced by `ckpt`, by `(step id, worker)`.
pub fn load_states(
    lake: &Path,
    ckpt: &Checkpoint,
) -> std::io::Result<BTreeMap<(String, usize), Vec<u8>>> {
    let mut files: BTreeMap<&str, Vec<Snapshot>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for s in &ckpt.states {
        if !files.contains_key(s.file.as_str()) {
            let data = storage::read(&lake.join(&s.file))?;
            files.insert(
                &s.file,
                bincode::deserialize(&data).map_err(std::io::Error::other)?,
            );
        }
        let snap = files[s.file.as_str()]
            .iter()
            .find(|x| x.step_id == s.step_id && x.worker == s.worker)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{} holds no state for `{}` on worker {}",
                    s.file, s.step_id, s.worker
                ))
            })?;
        out.insert((s.step_id.clone(), s.worker), snap.bytes.clone());
    }
    Ok(out)
}

pub use crate::core::storage::publish;

/// The epoch in a part file name (`part-<epoch>-<worker>.parquet`, pending or not).
pub fn part_epoch(name: &str) -> Option<Epoch> {
    let rest = name.trim_start_matches('.').strip_prefix("part-")?;
    rest.split('-').next()?.parse().ok()
}

/// Whether the lake holds anything a run committed (so starting from empty
/// would be wrong), or why the lake cannot be looked at.
pub fn has_committed_data(lake: &Path) -> std::io::Result<bool> {
    if !try_list(lake)?.is_empty() || storage::exists(&manifest::path(lake))? {
        return Ok(true);
    }
    Ok(storage::list(lake, true)?.iter().any(|(rel, _)| {
        let mut parts: Vec<&str> = rel.split('/').collect();
        let name = parts.pop().unwrap_or("");
        !parts.iter().any(|p| p.starts_with('_'))
            && name.starts_with("part-")
            && name.ends_with(".parquet")
    }))
}

/// Brings the lake back to checkpoint `ckpt` (or to empty when `None`): finishes
/// its renames, deletes pending parts and visible parts of later epochs, drops
/// temporary files, and trims the landing manifest. Returns the files removed.
pub fn recover(lake: &Path, ckpt: Option<&Checkpoint>) -> std::io::Result<usize> {
    if let Some(c) = ckpt {
        let mut parts = Vec::with_capacity(c.parts.len());
        for (pending, visible) in &c.parts {
            let gone = |rel: &str| storage::exists(&lake.join(rel)).map(|there| !there);
            // Published, then replaced by a compaction and deleted: nothing to finish.
            if !(gone(pending)? && gone(visible)? && compacted(lake, visible)?) {
                parts.push((pending.clone(), visible.clone()));
            }
        }
        publish(lake, &parts)?;
    }
    let keep_until = ckpt.map(|c| c.epoch);
    let later = |ep: Epoch| keep_until.is_none_or(|k| ep > k);
    let mut removed = 0;
    for (rel, _) in storage::list(lake, true)? {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        let stale_part = name.ends_with(".pending")
            || (name.starts_with("part-") && part_epoch(name).is_some_and(later));
        // Newer checkpoints than the one resumed are unusable (that is why it was chosen).
        let stale_ckpt = name
            .strip_suffix(".ckpt")
            .and_then(|n| n.parse::<Epoch>().ok())
            .is_some_and(later);
        // State files of epochs after the checkpoint belong to an unfinished epoch.
        let stale_state = rel.starts_with("_checkpoints/state/")
            && name
                .split('-')
                .next()
                .and_then(|n| n.parse::<Epoch>().ok())
                .is_some_and(later);
        if stale_part || stale_ckpt || stale_state || name.ends_with(".tmp") {
            storage::remove_file(&lake.join(&rel))?;
            removed += 1;
        }
    }
    let facts = manifest::load(lake)?;
    let mut kept: Vec<FileFact> = facts
        .iter()
        .filter(|f| keep_until.is_some_and(|k| f.last_epoch <= k))
        .cloned()
        .collect();
    if let Some(c) = ckpt {
        for f in &c.files {
            if !kept.contains(f) {
                kept.push(f.clone());
            }
        }
    }
    if kept.len() != facts.len() || kept.iter().zip(&facts).any(|(a, b)| a != b) {
        manifest::rewrite(lake, &kept)?;
    }
    if removed > 0 {
        info!(lake = %lake.display(), removed, "Removed files of epochs after the checkpoint.");
    }
    Ok(removed)
}

/// Deletes all but the newest `keep` checkpoints and the state files only they referenced.
pub fn prune(lake: &Path, keep: usize) -> std::io::Result<()> {
    let all = list(lake);
    if all.len() <= keep {
        return Ok(());
    }
    let mut referenced = std::collections::BTreeSet::new();
    for (_, path) in &all[..keep] {
        if let Some(c) = read_unchecked(path) {
            referenced.extend(c.states.into_iter().map(|s| s.file));
        }
    }
    let oldest_kept = all[keep - 1].0;
    for (_, path) in &all[keep..] {
        storage::remove_file(path)?;
    }
    for (name, _) in storage::list(&dir(lake).join("state"), false)? {
        let rel = format!("_checkpoints/state/{name}");
        let epoch = name.split('-').next().and_then(|n| n.parse::<Epoch>().ok());
        if !referenced.contains(&rel) && epoch.is_some_and(|ep| ep < oldest_kept) {
            storage::remove_file(&lake.join(&rel))?;
        }
    }
    Ok(())
}

fn read_unchecked(path: &Path) -> Option<Checkpoint> {
    let bytes = storage::read(path).ok()?;
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    serde_json::from_slice(&bytes[newline + 1..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("millrace-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ckpt(lake: &Path, epoch: Epoch) -> Checkpoint {
        let snaps = vec![Snapshot {
            step_id: "score".into(),
            worker: 0,
            epoch,
            bytes: vec![epoch as u8; 10],
        }];
        let (file, len, checksum) = write_state(lake, epoch, 0, &snaps).unwrap();
        Checkpoint {
            version: VERSION,
            epoch,
            workers: 1,
            topology: "t".into(),
            sources: vec![None],
            label_sources: Vec::new(),
            states: vec![StateRef {
                step_id: "score".into(),
                worker: 0,
                epoch,
                file,
                len,
                checksum,
            }],
            parts: vec![],
            files: vec![],
            latest_time_ms: 0,
            kafka: BTreeMap::new(),
            label_kafka: BTreeMap::new(),
            monitors: None,
        }
    }

    #[test]
    fn newest_valid_checkpoint_wins_and_corruption_is_detected() {
        let l = lake("newest");
        for e in [3, 4, 5] {
            write(&l, &ckpt(&l, e), || {}).unwrap();
        }
        assert_eq!(newest(&l).0.unwrap().epoch, 5);
        // Flip a byte in the newest body.
        let p = dir(&l).join(ckpt_name(5));
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 5] ^= 0x20;
        std::fs::write(&p, &b).unwrap();
        let (c, rejected) = newest(&l);
        assert_eq!(c.unwrap().epoch, 4);
        assert!(rejected[0].reason.contains("checksum"), "{rejected:?}");
        // Truncate the next one; corrupt its state file's neighbour.
        let p4 = dir(&l).join(ckpt_name(4));
        let b4 = std::fs::read(&p4).unwrap();
        std::fs::write(&p4, &b4[..20]).unwrap();
        std::fs::write(l.join(state_file(3, 0)), b"garbage").unwrap();
        let (c, rejected) = newest(&l);
        assert!(c.is_none());
        assert_eq!(rejected.len(), 3);
        assert!(rejected[2].reason.contains("state file"), "{rejected:?}");
        std::fs::remove_dir_all(&l).unwrap();
    }

    #[test]
    fn states_round_trip_and_prune_keeps_the_newest() {
        let l = lake("prune");
        for e in 0..6 {
            write(&l, &ckpt(&l, e), || {}).unwrap();
        }
        let c = newest(&l).0.unwrap();
        assert_eq!(
            load_states(&l, &c).unwrap()[&("score".to_string(), 0)],
            vec![5u8; 10]
        );
        prune(&l, 2).unwrap();
        assert_eq!(list(&l).iter().map(|x| x.0).collect::<Vec<_>>(), [5, 4]);
        let states: Vec<_> = std::fs::read_dir(dir(&l).join("state"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(states.len(), 2);
        std::fs::remove_dir_all(&l).unwrap();
    }

    #[test]
    fn recover_rolls_forward_and_back() {
        let l = lake("recover");
        let part_dir = l.join("scored/date=2026-01-01/hour=00");
        std::fs::create_dir_all(&part_dir).unwrap();
        for name in [
            ".part-0000000004-0000.parquet.pending",
            ".part-0000000005-0000.parquet.pending",
            "part-0000000003-0000.parquet",
            "part-0000000006-0000.parquet",
            ".x.tmp",
        ] {
            std::fs::write(part_dir.join(name), b"x").unwrap();
        }
        let mut c = ckpt(&l, 4);
        c.parts = vec![(
            "scored/date=2026-01-01/hour=00/.part-0000000004-0000.parquet.pending".into(),
            "scored/date=2026-01-01/hour=00/part-0000000004-0000.parquet".into(),
        )];
        recover(&l, Some(&c)).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&part_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "part-0000000003-0000.parquet",
                "part-0000000004-0000.parquet"
            ]
        );
        assert!(has_committed_data(&l).unwrap());
        recover(&l, None).unwrap();
        assert!(std::fs::read_dir(&part_dir).unwrap().next().is_none());
        std::fs::remove_dir_all(&l).unwrap();
    }

    #[test]
    fn a_checkpoint_whose_parts_are_gone_is_skipped_and_rolled_back() {
        // What two runs on one lake left: checkpoint 5's commit lost a pending
        // part (the other run's recovery deleted it) after publishing another.
        let l = lake("lostparts");
        let part_dir = l.join("scored/date=2026-01-01/hour=00");
        std::fs::create_dir_all(&part_dir).unwrap();
        let rel = |name: &str| format!("scored/date=2026-01-01/hour=00/{name}");
        std::fs::write(part_dir.join("part-0000000004-0000.parquet"), b"x").unwrap();
        std::fs::write(part_dir.join("part-0000000005-0000.parquet"), b"x").unwrap();
        let mut c4 = ckpt(&l, 4);
        c4.parts = vec![(
            rel(".part-0000000004-0000.parquet.pending"),
            rel("part-0000000004-0000.parquet"),
        )];
        write(&l, &c4, || {}).unwrap();
        let mut c5 = ckpt(&l, 5);
        c5.parts = vec![
            (
                rel(".part-0000000005-0000.parquet.pending"),
                rel("part-0000000005-0000.parquet"),
            ),
            (
                rel(".part-0000000005-0001.parquet.pending"),
                rel("part-0000000005-0001.parquet"),
            ),
        ];
        write(&l, &c5, || {}).unwrap();
        let (c, rejected) = newest(&l);
        let c = c.unwrap();
        assert_eq!(c.epoch, 4);
        assert!(
            rejected[0]
                .reason
                .contains("part-0000000005-0001.parquet is missing"),
            "{rejected:?}"
        );
        recover(&l, Some(&c)).unwrap();
        let names: Vec<String> = std::fs::read_dir(&part_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["part-0000000004-0000.parquet"]);
        assert_eq!(list(&l).iter().map(|x| x.0).collect::<Vec<_>>(), [4]);
        // Recovered: the next start takes checkpoint 4 without complaint.
        let (again, rejected) = newest(&l);
        assert_eq!((again.unwrap().epoch, rejected.len()), (4, 0));
        std::fs::remove_dir_all(&l).unwrap();
    }

    #[test]
    fn monitor_state_round_trips_as_base64() {
        let l = lake("b64");
        let mut c = ckpt(&l, 1);
        c.monitors = Some((0..=255u8).chain([0, 1, 2]).collect());
        write(&l, &c, || {}).unwrap();
        let back = newest(&l).0.unwrap();
        assert_eq!(back.monitors, c.monitors);
        std::fs::remove_dir_all(&l).unwrap();
    }

    #[test]
    fn part_epochs() {
        assert_eq!(part_epoch("part-0000000042-0003.parquet"), Some(42));
        assert_eq!(
            part_epoch(".part-0000000042-0003.parquet.pending"),
            Some(42)
        );
        assert_eq!(part_epoch("other.parquet"), None);
    }
}

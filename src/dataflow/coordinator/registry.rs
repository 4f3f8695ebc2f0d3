//! `registry`: published model versions in the lake, and which one is the champion.
//!
//! ```text
//! <lake>/models/<pipeline>/registry.json          versions, champion, promotion history
//! <lake>/models/<pipeline>/v<N>/model.json        the version: learner, weights by feature name,
//!                                                  scaler, config, data range, metrics
//! <lake>/models/<pipeline>/v<N>/state.bin         the exact state, for warm starts
//! ```
//!
//! The coordinator publishes a version after the checkpoint of the epoch that
//! produced it (so the registry never holds a model the lake does not), every
//! `publish_every_versions` versions. Its metrics are the prequential metrics
//! of the records scored since the previous publication — how the model
//! family did on data it had not seen. The champion is the newest version
//! unless one was promoted; `millrace models promote` pins one, `rollback`
//! goes back to the previous champion. A topology with `[model] warm_start`
//! starts from the champion, the latest or a named version instead of from
//! zero, when there is no checkpoint to resume.

use std::path::{Path, PathBuf};

use millrace_operators::learn::eval::EvalMetrics;
use millrace_operators::learn::Learner;
use millrace_operators::score::ModelRelease;
use millrace_operators::Epoch;
use serde::{Deserialize, Serialize};

/// One published version, as listed in `registry.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// The version number.
    pub version: u64,
    /// The epoch after which it was the model.
    pub epoch: Epoch,
    /// Labelled records it learned from, in total.
    pub records: u64,
    /// Event-time range (ms) of the records scored since the previous publication.
    pub event_range: Option<(i64, i64)>,
    /// Prequential metrics over those records.
    pub metrics: VersionMetrics,
    /// When it was published (ms since the Unix epoch).
    pub published_ms: i64,
}

/// Prequential metrics of a version (absent where they do not apply).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionMetrics {
    /// Labelled records.
    pub n: u64,
    /// Accuracy at the threshold.
    pub accuracy: Option<f64>,
    /// Mean log loss.
    pub log_loss: Option<f64>,
    /// Exact ROC AUC.
    pub auc: Option<f64>,
    /// Regression: mean absolute error.
    pub mae: Option<f64>,
    /// Regression: root mean squared error.
    pub rmse: Option<f64>,
}

impl From<EvalMetrics> for VersionMetrics {
    fn from(m: EvalMetrics) -> Self {
        let f = |v: f64| v.is_finite().then_some(v);
        VersionMetrics {
            n: m.n,
            accuracy: f(m.accuracy),
            log_loss: f(m.log_loss),
            auc: f(m.auc),
            mae: f(m.mae),
            rmse: f(m.rmse),
        }
    }
}

/// `registry.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// The pipeline (model) name.
    pub model: String,
    /// Published versions, oldest first.
    pub versions: Vec<VersionEntry>,
    /// A promoted version; `None`: the newest is the champion.
    pub pinned: Option<u64>,
    /// Earlier champions, most recent last (for `rollback`).
    pub history: Vec<u64>,
}

impl Registry {
    /// The champion: the promoted version, else the newest.
    pub fn champion(&self) -> Option<u64> {
        self.pinned.or(self.versions.last().map(|v| v.version))
    }
}

/// `<lake>/models/<name>`.
pub fn dir(lake: &Path, name: &str) -> PathBuf {
    lake.join("models").join(name)
}

/// `<lake>/models/<name>/v<version>/state.bin`: a version's exact state.
pub fn state_path(lake: &Path, name: &str, version: u64) -> PathBuf {
    dir(lake, name)
        .join(format!("v{version}"))
        .join("state.bin")
}

/// What can go wrong with the registry: each names the file or the version.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The storage error.
        error: std::io::Error,
    },
    /// A file or folder could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The storage error.
        error: std::io::Error,
    },
    /// A version's state could not be removed.
    #[error("cannot remove {}: {error}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The storage error.
        error: std::io::Error,
    },
    /// A file is not what this build writes there.
    #[error("{}: {error}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        error: String,
    },
    /// Not `champion`, `latest` or `v<N>`.
    #[error("`{which}`: expected `champion`, `latest` or `v<N>`")]
    Which {
        /// What was asked for.
        which: String,
    },
    /// Nothing is published.
    #[error("no version of `{model}` is published yet")]
    Empty {
        /// The model.
        model: String,
    },
    /// The version is not listed.
    #[error("`{model}` has no version {version}")]
    Unknown {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// The version's state is gone (`keep_versions`).
    #[error("version {version} of `{model}` is listed but its state was pruned: the registry keeps the exact state of the newest `keep_versions` versions, the champion and the promotion history (`millrace models list` shows which)")]
    Pruned {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// Its state is another build's format.
    #[error("version {version} of `{model}` was published by another millrace build, whose model state this build cannot read (state format {}); start from zero, or use that build", crate::dataflow::coordinator::checkpoint::VERSION)]
    OtherBuild {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// Its state belongs to other features or another model.
    #[error("version {version} of `{model}` was trained with other features or another model; it cannot start this topology")]
    OtherTopology {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// A pruned version cannot be the champion.
    #[error("version {version} of `{model}` cannot be the champion: its state was pruned (`keep_versions`), so nothing could start from it")]
    NotPromotable {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// There is no earlier champion.
    #[error("`{model}` has no earlier champion to roll back to")]
    NoEarlierChampion {
        /// The model.
        model: String,
    },
}

fn decode(path: &Path) -> impl FnOnce(&dyn std::fmt::Display) -> RegistryError + '_ {
    move |e| RegistryError::Decode {
        path: path.to_path_buf(),
        error: e.to_string(),
    }
}

fn writing(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |error| RegistryError::Write {
        path: path.to_path_buf(),
        error,
    }
}

fn reading(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |error| RegistryError::Read {
        path: path.to_path_buf(),
        error,
    }
}

/// The registry of `name` in `lake` (empty if nothing was published).
pub fn load(lake: &Path, name: &str) -> Result<Registry, RegistryError> {
    let p = dir(lake, name).join("registry.json");
    match crate::core::storage::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| decode(&p)(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry {
            model: name.to_string(),
            ..Registry::default()
        }),
        Err(e) => Err(reading(&p)(e)),
    }
}

use crate::core::storage::write_atomic;

/// Saves the registry atomically.
pub fn save(lake: &Path, reg: &Registry) -> Result<(), RegistryError> {
    let d = dir(lake, &reg.model);
    crate::core::storage::create_dir_all(&d).map_err(writing(&d))?;
    let p = d.join("registry.json");
    write_atomic(&p, &serde_json::to_vec_pretty(reg).expect("serializes")).map_err(writing(&p))
}

/// What `model.json` holds besides the entry.
#[derive(Serialize)]
struct ModelFile<'a> {
    model: &'a str,
    #[serde(flatten)]
    entry: &'a VersionEntry,
    learner: &'a str,
    config: &'a serde_json::Value,
    features: &'a [String],
    weights: Option<Vec<(String, f64)>>,
    intercept: Option<f64>,
    scaler: serde_json::Value,
    /// Several workers' trees: the members of the forest (in `state.bin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    forest_members: Option<usize>,
}

/// Publishes `release` under `<lake>/models/<name>/v<N>/` and lists it in the registry.
#[allow(clippy::too_many_arguments)]
pub fn publish(
    lake: &Path,
    name: &str,
    release: &ModelRelease,
    config: &serde_json::Value,
    feature_names: &[String],
    fingerprint: &str,
    event_range: Option<(i64, i64)>,
    metrics: EvalMetrics,
    now_ms: i64,
) -> Result<(), RegistryError> {
    let vdir = dir(lake, name).join(format!("v{}", release.version));
    crate::core::storage::create_dir_all(&vdir).map_err(writing(&vdir))?;
    let entry = VersionEntry {
        version: release.version,
        epoch: release.epoch,
        records: release.model.updates(),
        event_range,
        metrics: metrics.into(),
        published_ms: now_ms,
    };
    let (learner, weights, intercept) = match &release.model {
        Learner::Logistic(m) | Learner::Linear(m) => (
            if matches!(release.model, Learner::Logistic(_)) {
                "logistic_regression"
            } else {
                "linear_regression"
            },
            Some(m.weights.clone()),
            Some(m.intercept),
        ),
        Learner::Ftrl(m) => {
            let mut w = m.weights();
            let b = w.pop();
            ("ftrl", Some(w), b)
        }
        Learner::Tree(_) => ("hoeffding_tree", None, None),
        Learner::Forest(_) => ("adaptive_random_forest", None, None),
    };
    let named = weights.map(|w| {
        w.into_iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    feature_names
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("#{i}")),
                    v,
                )
            })
            .collect()
    });
    let file = ModelFile {
        model: name,
        entry: &entry,
        learner,
        config,
        features: feature_names,
        weights: named,
        intercept,
        scaler: serde_json::json!({
            "count": release.scaler.count,
            "mean": release.scaler.mean,
            "var": release.scaler.var,
        }),
        forest_members: (!release.forest.is_empty()).then_some(release.forest.len()),
    };
    // (By reference: a forest's state is tens of MB, not worth a copy.)
    let state = (tagged(fingerprint), release);
    let p = state_path(lake, name, release.version);
    write_atomic(&p, &bincode::serialize(&state).expect("serializes")).map_err(writing(&p))?;
    let p = vdir.join("model.json");
    write_atomic(&p, &serde_json::to_vec_pretty(&file).expect("serializes"))
        .map_err(writing(&p))?;
    let mut reg = load(lake, name)?;
    reg.versions.retain(|v| v.version != release.version); // a replayed epoch publishes the same version again
    reg.versions.push(entry);
    reg.versions.sort_by_key(|v| v.version);
    save(lake, &reg)
}

/// Deletes the exact state (`state.bin`) of every version but the newest
/// `keep`, the champion and the promotion history (rollback targets), so a
/// long-running job's registry grows by a `model.json` per version, not by a
/// model's state (tens of MB for a forest, 16 MB for a million FTRL weights).
pub fn prune_states(lake: &Path, name: &str, keep: usize) -> Result<usize, RegistryError> {
    let reg = load(lake, name)?;
    let mut kept: Vec<u64> = reg
        .versions
        .iter()
        .rev()
        .take(keep.max(1))
        .map(|v| v.version)
        .collect();
    kept.extend(reg.champion());
    kept.extend(&reg.history);
    let mut pruned = 0;
    for v in &reg.versions {
        if kept.contains(&v.version) {
            continue;
        }
        let p = state_path(lake, name, v.version);
        match crate::core::storage::remove_file(&p) {
            Ok(true) => pruned += 1,
            Ok(false) => {}
            Err(error) => return Err(RegistryError::Remove { path: p, error }),
        }
    }
    Ok(pruned)
}

/// Resolves `champion`, `latest` or `v<N>` to a version number.
pub fn resolve(reg: &Registry, which: &str) -> Result<u64, RegistryError> {
    let v = match which {
        "champion" => reg.champion(),
        "latest" => reg.versions.last().map(|v| v.version),
        other => Some(other.trim_start_matches('v').parse::<u64>().map_err(|_| {
            RegistryError::Which {
                which: other.to_string(),
            }
        })?),
    };
    let model = reg.model.clone();
    let version = v.ok_or_else(|| RegistryError::Empty {
        model: model.clone(),
    })?;
    if !reg.versions.iter().any(|e| e.version == version) {
        return Err(RegistryError::Unknown { model, version });
    }
    Ok(version)
}

/// Loads a version's exact state, checking it was trained on the same features and model.
pub fn load_state(
    lake: &Path,
    name: &str,
    version: u64,
    fingerprint: &str,
) -> Result<ModelRelease, RegistryError> {
    let p = state_path(lake, name, version);
    let model = name.to_string();
    let bytes = crate::core::storage::read(&p).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            RegistryError::Pruned {
                model: model.clone(),
                version,
            }
        } else {
            reading(&p)(error)
        }
    })?;
    // The tag first: a state another build wrote may not even decode.
    let tag: String = bincode::deserialize(&bytes).map_err(|e| decode(&p)(&e))?;
    if !tag.starts_with(&tagged("")) {
        return Err(RegistryError::OtherBuild { model, version });
    }
    if tag != tagged(fingerprint) {
        return Err(RegistryError::OtherTopology { model, version });
    }
    let (_, release): (String, ModelRelease) =
        bincode::deserialize(&bytes).map_err(|e| decode(&p)(&e))?;
    Ok(ModelRelease {
        scaler: release.scaler.restored(),
        ..release
    })
}

/// A version state's first field: the state format (bincode has no schema:
/// another build's layout must not be read) and the topology's fingerprint.
fn tagged(fingerprint: &str) -> String {
    format!(
        "millrace-state {}:{fingerprint}",
        crate::dataflow::coordinator::checkpoint::VERSION
    )
}

/// Makes `version` the champion; the previous champion goes to the history.
pub fn promote(lake: &Path, name: &str, which: &str) -> Result<u64, RegistryError> {
    let mut reg = load(lake, name)?;
    let v = resolve(&reg, which)?;
    let state = state_path(lake, name, v);
    if !crate::core::storage::exists(&state).map_err(reading(&state))? {
        return Err(RegistryError::NotPromotable {
            model: name.to_string(),
            version: v,
        });
    }
    if let Some(c) = reg.champion() {
        if c != v {
            reg.history.push(c);
        }
    }
    reg.pinned = Some(v);
    save(lake, &reg)?;
    Ok(v)
}

/// Goes back to the previous champion.
pub fn rollback(lake: &Path, name: &str) -> Result<u64, RegistryError> {
    let mut reg = load(lake, name)?;
    let v = reg
        .history
        .pop()
        .ok_or_else(|| RegistryError::NoEarlierChampion {
            model: name.to_string(),
        })?;
    reg.pinned = Some(v);
    save(lake, &reg)?;
    Ok(v)
}

/// The models published in a lake.
pub fn models(lake: &Path) -> Vec<String> {
    let mut names: Vec<String> = crate::core::storage::list(&lake.join("models"), true)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(rel, _)| rel.strip_suffix("/registry.json").map(str::to_string))
        .filter(|name| !name.contains('/'))
        .collect();
    names.sort();
    names
}

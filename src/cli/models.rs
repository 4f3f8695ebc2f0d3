//! `millrace models`: the model registry of a lake — list, show, promote,
//! roll back — and promoting a running job's challenger.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::dataflow::coordinator::registry;

#[derive(Subcommand)]
pub enum ModelsAction {
    /// List the published versions (the champion is marked).
    List {
        /// The lake: a folder, or an az://, abfss:// or s3:// URL.
        lake: PathBuf,
        /// The model (pipeline) name; needed when the lake has several.
        #[arg(long)]
        model: Option<String>,
    },
    /// Print a version's model.json (`champion`, `latest` or `v<N>`).
    Show {
        /// The lake: a folder, or an az://, abfss:// or s3:// URL.
        lake: PathBuf,
        /// Which version.
        version: String,
        /// The model (pipeline) name.
        #[arg(long)]
        model: Option<String>,
    },
    /// Make a version the champion (warm starts with `champion` take it).
    Promote {
        /// The lake: a folder, or an az://, abfss:// or s3:// URL.
        lake: PathBuf,
        /// Which version.
        version: String,
        /// The model (pipeline) name.
        #[arg(long)]
        model: Option<String>,
    },
    /// Promote the challenger of a running job now (its live view's `POST /promote`).
    PromoteChallenger {
        /// The job's `--http-addr`.
        #[arg(long)]
        addr: String,
        /// The NAME of the environment variable holding the job's live-view
        /// token (the job's `--http-token-env` or `[runtime] http_token_env`).
        #[arg(long, value_name = "NAME")]
        http_token_env: Option<String>,
    },
    /// Go back to the previous champion.
    Rollback {
        /// The lake: a folder, or an az://, abfss:// or s3:// URL.
        lake: PathBuf,
        /// The model (pipeline) name.
        #[arg(long)]
        model: Option<String>,
    },
}

/// The one model in `lake`, or the named one.
fn model_name(lake: &Path, model: Option<String>) -> anyhow::Result<String> {
    if let Some(m) = model {
        return Ok(m);
    }
    let all = registry::models(lake);
    match all.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no model is published in {}", lake.display()),
        many => bail!(
            "{} holds several models ({}); pass --model NAME",
            lake.display(),
            many.join(", ")
        ),
    }
}

/// Runs `millrace models`.
pub fn run(action: ModelsAction) -> anyhow::Result<()> {
    match action {
        ModelsAction::List { lake, model } => list(&crate::cli::lake_arg(&lake)?, model)?,
        ModelsAction::Show {
            lake,
            version,
            model,
        } => {
            let lake = crate::cli::lake_arg(&lake)?;
            let name = model_name(&lake, model)?;
            let reg = registry::load(&lake, &name)?;
            let v = registry::resolve(&reg, &version)?;
            let p = registry::dir(&lake, &name)
                .join(format!("v{v}"))
                .join("model.json");
            print!(
                "{}",
                String::from_utf8_lossy(
                    &crate::core::storage::read(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?
                )
            );
            println!();
        }
        ModelsAction::Promote {
            lake,
            version,
            model,
        } => {
            let lake = crate::cli::lake_arg(&lake)?;
            let name = model_name(&lake, model)?;
            // The running job rewrites the registry too: not while one holds the lake.
            let _lock = crate::runtime::lock::acquire(&lake, "models promote")?;
            let v = registry::promote(&lake, &name, &version)?;
            println!("champion of `{name}`: v{v}");
        }
        ModelsAction::PromoteChallenger {
            addr,
            http_token_env,
        } => super::client::promote_challenger(&addr, http_token_env.as_deref())?,
        ModelsAction::Rollback { lake, model } => {
            let lake = crate::cli::lake_arg(&lake)?;
            let name = model_name(&lake, model)?;
            let _lock = crate::runtime::lock::acquire(&lake, "models rollback")?;
            let v = registry::rollback(&lake, &name)?;
            println!("champion of `{name}`: v{v} (rolled back)");
        }
    }
    Ok(())
}

/// `millrace models list`.
fn list(lake: &Path, model: Option<String>) -> anyhow::Result<()> {
    let name = model_name(lake, model)?;
    let reg = registry::load(lake, &name)?;
    let champion = reg.champion();
    println!(
        "model `{name}` in {}: {} version(s)",
        lake.display(),
        reg.versions.len()
    );
    println!("  version     epoch    records   labelled   accuracy   log loss    ROC AUC   state");
    // Whether the version's exact state is kept (warm-startable) or pruned (`keep_versions`).
    let state = |v: u64| {
        if crate::core::storage::exists(&registry::state_path(lake, &name, v)).unwrap_or(false) {
            "kept"
        } else {
            "pruned"
        }
    };
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.5}"));
    for v in &reg.versions {
        println!(
            "{} v{:<8} {:>7} {:>10} {:>10}   {:>8}   {:>8}   {:>8}   {}",
            if Some(v.version) == champion {
                "*"
            } else {
                " "
            },
            v.version,
            v.epoch,
            v.records,
            v.metrics.n,
            f(v.metrics.accuracy),
            f(v.metrics.log_loss),
            f(v.metrics.auc),
            state(v.version)
        );
    }
    if let Some(c) = champion {
        println!(
            "champion: v{c}{}",
            if reg.pinned.is_some() {
                " (promoted)"
            } else {
                " (newest)"
            }
        );
    }
    Ok(())
}

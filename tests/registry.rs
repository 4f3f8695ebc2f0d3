//! The model registry through the CLI: versions published by a run, listed,
//! shown, promoted, rolled back, and used to warm-start another run.

mod common;

use common::*;

#[test]
fn publish_list_promote_rollback_and_warm_start() {
    let dir = scratch("registry");
    gen(&dir, "tx.csv", 350_000, 51, &[]);
    settle(&dir);
    let q = quickstart();
    millrace(
        &dir,
        &[
            "run",
            &q,
            "--once",
            "--landing",
            "landing",
            "--lake",
            "lake-a",
        ],
    );
    // Published every 10 versions (a version per epoch here): v11, v21, v31.
    let list = millrace(&dir, &["models", "list", "lake-a"]);
    assert!(list.contains("model `quickstart`"), "{list}");
    for v in ["v11 ", "v21 ", "v31 "] {
        assert!(list.contains(v), "{v} missing:\n{list}");
    }
    assert!(list.contains("champion: v31 (newest)"), "{list}");
    let shown = millrace(&dir, &["models", "show", "lake-a", "v21"]);
    let json: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(json["version"], 21);
    assert_eq!(json["learner"], "logistic_regression");
    assert!(json["metrics"]["auc"].as_f64().unwrap() > 0.7, "{shown}");
    assert!(json["weights"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w[0] == "acct_mean"));
    // Promote, promote again, roll back.
    let out = millrace(&dir, &["models", "promote", "lake-a", "v11"]);
    assert!(out.contains("champion of `quickstart`: v11"), "{out}");
    millrace(&dir, &["models", "promote", "lake-a", "v21"]);
    let out = millrace(&dir, &["models", "rollback", "lake-a"]);
    assert!(out.contains("v11 (rolled back)"), "{out}");
    let list = millrace(&dir, &["models", "list", "lake-a"]);
    assert!(list.contains("champion: v11 (promoted)"), "{list}");
    let bad = millrace_raw(&dir, &["models", "promote", "lake-a", "v9999"]);
    assert!(!bad.status.success());
    // Warm start: a new lake whose model starts from the champion of lake-a.
    let base = std::fs::read_to_string(&q).unwrap();
    warm_topology(&dir, &base, "warm.toml", "champion", "lake-a");
    run_once(&dir, "warm.toml", "lake-b", &[]);
    let (first, same) = warm_against_cold(&dir.join("lake-b"), &dir.join("lake-a"));
    assert_eq!(first, 11, "the first record is scored by the champion, v11");
    // Not a cold start: the first records get other scores than in lake-a's cold start.
    assert!(
        same < 10,
        "{same} of the first 100 scores equal a cold start's"
    );
    // A version that does not exist is refused with the key named.
    let bad = std::fs::read_to_string(&q).unwrap().replace(
        "l2 = 0.0\n",
        "l2 = 0.0\nwarm_start = \"v9999\"\nregistry = \"lake-a\"\n",
    );
    std::fs::write(dir.join("bad.toml"), bad).unwrap();
    let out = millrace_raw(
        &dir,
        &[
            "run",
            "bad.toml",
            "--once",
            "--landing",
            "landing",
            "--lake",
            "lake-c",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("model.warm_start"),
        "{out:?}"
    );
}

#[test]
fn a_forest_on_one_worker_is_versioned_published_and_warm_starts() {
    // A learner whose state is not a vector of weights (here the adaptive
    // random forest) gets versions and registry entries on one worker too.
    let dir = scratch("registry-forest");
    gen(&dir, "tx.csv", 120_000, 52, &[]);
    settle(&dir);
    let forest = std::fs::read_to_string(quickstart()).unwrap().replace(
        "kind = \"logistic_regression\"",
        "kind = \"adaptive_random_forest\"\ntrees = 3",
    );
    std::fs::write(dir.join("forest.toml"), &forest).unwrap();
    run_once(&dir, "forest.toml", "lake-a", &[]);
    let list = millrace(&dir, &["models", "list", "lake-a"]);
    assert!(list.contains("v11 "), "{list}");
    let shown = millrace(&dir, &["models", "show", "lake-a", "v11"]);
    let json: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(json["learner"], "adaptive_random_forest", "{shown}");
    assert!(json["metrics"]["auc"].as_f64().unwrap() > 0.6, "{shown}");
    warm_topology(&dir, &forest, "warm.toml", "v11", "lake-a");
    run_once(&dir, "warm.toml", "lake-b", &[]);
    let (first, same) = warm_against_cold(&dir.join("lake-b"), &dir.join("lake-a"));
    assert_eq!(first, 11, "the first record is scored by v11");
    assert!(
        same < 50,
        "{same} of the first 100 scores equal a cold start's"
    );

    // Two workers: the registry gets the whole forest they scored with, and
    // a run warm-started from it scores its first records with that forest.
    run_once(&dir, "forest.toml", "lake-c", &["--workers", "2"]);
    let list = millrace(&dir, &["models", "list", "lake-c"]);
    let newest = list
        .lines()
        .find_map(|l| l.strip_prefix("* v"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no champion in\n{list}"))
        .to_string();
    let shown = millrace(&dir, &["models", "show", "lake-c", &format!("v{newest}")]);
    let json: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(json["forest_members"], 2, "{shown}");
    warm_topology(&dir, &forest, "warm2.toml", &format!("v{newest}"), "lake-c");
    run_once(&dir, "warm2.toml", "lake-d", &["--workers", "2"]);
    let (first, same) = warm_against_cold(&dir.join("lake-d"), &dir.join("lake-c"));
    assert_eq!(first.to_string(), newest, "scored by the published forest");
    assert!(
        same < 50,
        "{same} of the first 100 scores equal a cold start's"
    );
}

#[test]
fn only_the_newest_versions_keep_their_state() {
    // `keep_versions`: a long-running job's registry keeps every version's
    // line and model.json, but the exact state only of the newest few (and of
    // the champion and the rollback history).
    let dir = scratch("registry-keep");
    gen(&dir, "tx.csv", 120_000, 53, &[]);
    settle(&dir);
    let q = std::fs::read_to_string(quickstart()).unwrap().replace(
        "l2 = 0.0\n",
        "l2 = 0.0\npublish_every_versions = 2\nkeep_versions = 2\n",
    );
    std::fs::write(dir.join("keep.toml"), &q).unwrap();
    run_once(&dir, "keep.toml", "lake", &[]);
    let list = millrace(&dir, &["models", "list", "lake"]);
    let rows: Vec<(String, &str)> = list
        .lines()
        .filter(|l| l.len() > 3 && l[2..].starts_with('v') && l.as_bytes()[3].is_ascii_digit())
        .map(|l| {
            let v = l[2..].split_whitespace().next().unwrap().to_string();
            (v, l.split_whitespace().last().unwrap())
        })
        .collect();
    assert!(rows.len() >= 4, "{list}");
    let (old, new) = rows.split_at(rows.len() - 2);
    assert!(new.iter().all(|(_, s)| *s == "kept"), "{list}");
    assert!(old.iter().all(|(_, s)| *s == "pruned"), "{list}");
    for (v, _) in old {
        assert!(!dir
            .join(format!("lake/models/quickstart/{v}/state.bin"))
            .exists());
        assert!(dir
            .join(format!("lake/models/quickstart/{v}/model.json"))
            .exists());
    }
    // A pruned version can be neither promoted nor started from.
    let (oldest, _) = &old[0];
    let out = millrace_raw(&dir, &["models", "promote", "lake", oldest]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pruned"),
        "{out:?}"
    );
    warm_topology(&dir, &q, "warm.toml", oldest, "lake");
    let out = millrace_raw(&dir, &once_args("warm.toml", "lake-w", &[]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pruned") && err.contains("model.warm_start"),
        "{err}"
    );
    // A state another build wrote (no format tag, here a bare fingerprint) is
    // refused as such, not misread.
    let (newest, _) = new.last().unwrap();
    std::fs::write(
        dir.join(format!("lake/models/quickstart/{newest}/state.bin")),
        bincode::serialize(&"0123456789abcdef".to_string()).unwrap(),
    )
    .unwrap();
    warm_topology(&dir, &q, "warm.toml", newest, "lake");
    let out = millrace_raw(&dir, &once_args("warm.toml", "lake-x", &[]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another millrace build"), "{err}");
}

/// Writes `base` warm-started from `version` of `registry`'s registry as `file`.
fn warm_topology(dir: &std::path::Path, base: &str, file: &str, version: &str, registry: &str) {
    let text = base.replace(
        "l2 = 0.0\n",
        &format!("l2 = 0.0\nwarm_start = \"{version}\"\nregistry = \"{registry}\"\n"),
    );
    std::fs::write(dir.join(file), text).unwrap();
}

/// A warm-started lake against a cold start on the same input: the version
/// that scored its first record, and how many of its first 100 scores equal the cold start's.
fn warm_against_cold(warm: &std::path::Path, cold: &std::path::Path) -> (u64, usize) {
    let w = scored(warm);
    let first = w.iter().min_by_key(|r| (r.0.clone(), r.1)).unwrap().6;
    let same = scored(cold)
        .iter()
        .zip(&w)
        .take(100)
        .filter(|(x, y)| x.4 == y.4)
        .count();
    (first, same)
}

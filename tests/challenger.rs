//! Champion and challenger (`[challenger]`, `[promotion]`): a second model
//! scores every record in shadow, both are evaluated on the same labelled
//! records, and the challenger is promoted by rule — at the same epoch on
//! every worker and process, published to the registry as the champion.

mod common;

use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, UInt64Type};
use common::*;

/// The champion/challenger topology; `weak`: the champion learns 20 times slower, so the challenger wins.
fn topology(dir: &Path, weak: bool, promote: bool) -> String {
    let mut text =
        std::fs::read_to_string(repo().join("topologies/champion_challenger.toml")).unwrap();
    if weak {
        text = text.replace("learning_rate = 0.01", "learning_rate = 0.0005");
    }
    if !promote {
        let at = text.find("\n[promotion]").unwrap();
        let end = at + text[at..].find("\n[lake]").unwrap();
        text.replace_range(at..end, "");
    }
    let path = dir.join(format!("cc-{weak}-{promote}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The version the registry has pinned as champion (a promotion pins it).
fn pinned(lake: &Path) -> Option<u64> {
    let text =
        std::fs::read_to_string(lake.join("models/champion_challenger/registry.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["pinned"].as_u64()
}

fn line<'a>(out: &'a str, start: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(start))
}

/// The labelled count of a `model (prequential, N labelled)` style line.
fn labelled(l: &str) -> u64 {
    let open = l.find('(').unwrap();
    l[open..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_better_challenger_is_promoted_by_rule_and_published_as_champion() {
    let dir = scratch("cc-promote");
    gen(&dir, "tx-0001.csv", 150_000, 5, &[]);
    settle(&dir);
    let t = topology(&dir, true, true);
    let out = millrace(&dir, &["run", &t, "--once", "--lake", "lake"]);
    let promoted = line(&out, "promoted:").unwrap_or_else(|| panic!("no promotion:\n{out}"));
    let version: u64 = promoted
        .rsplit("version ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Both models were evaluated on the same records.
    let champion = labelled(line(&out, "model (prequential").unwrap());
    let challenger = labelled(line(&out, "challenger (shadow").unwrap());
    assert_eq!(champion, challenger, "{out}");

    // The registry: the promoted version is the champion, made by the challenger's config.
    assert_eq!(pinned(&dir.join("lake")), Some(version));
    let model: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!(
            "lake/models/champion_challenger/v{version}/model.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(model["learner"], "ftrl");
    assert_eq!(model["config"]["kind"], "ftrl");
    let listed = millrace(&dir, &["models", "list", "lake"]);
    assert!(listed.contains(&format!("v{version}")), "{listed}");

    // From the promotion on, the scored rows carry the new champion's versions.
    let rows = scored(&dir.join("lake"));
    let newest = rows.iter().map(|r| r.6).max().unwrap();
    assert!(newest >= version, "{newest} < {version}");
    // The metrics table has the challenger's figures beside the champion's.
    let mut challenger_rows = 0;
    for (_, b) in read_table(&dir.join("lake"), "metrics") {
        let acc = b
            .column_by_name("challenger_accuracy")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        let n = b
            .column_by_name("labelled")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        for i in 0..b.num_rows() {
            if n.value(i) > 0 {
                assert!(!acc.is_null(i));
                challenger_rows += 1;
            }
        }
    }
    assert!(challenger_rows > 10);
    // Metrics per model version: the metrics table says which version scored each epoch.
    let mut versions: Vec<u64> = read_table(&dir.join("lake"), "metrics")
        .iter()
        .flat_map(|(_, b)| {
            b.column_by_name("model_version")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec()
        })
        .collect();
    versions.sort();
    assert!(versions.contains(&version), "{versions:?} lacks v{version}");
    millrace(&dir, &["report", "lake", "-o", "cc.html"]);
    let page = std::fs::read_to_string(dir.join("cc.html")).unwrap();
    assert!(page.contains("challenger ROC AUC") && page.contains("challenger log loss"));

    // Two workers, and two processes of one worker: the same promotion at the same epoch.
    let two = millrace(
        &dir,
        &["run", &t, "--once", "--lake", "lake-2", "--workers", "2"],
    );
    let cluster = millrace(
        &dir,
        &[
            "run",
            &t,
            "--once",
            "--lake",
            "lake-3",
            "--workers",
            "1",
            "--local-cluster",
            "2",
        ],
    );
    assert!(line(&two, "promoted:").is_some(), "{two}");
    assert_eq!(
        line(&two, "promoted:"),
        line(&cluster, "promoted:"),
        "{two}\n{cluster}"
    );
    assert_eq!(
        line(&two, "challenger (shadow"),
        line(&cluster, "challenger (shadow")
    );
    assert_eq!(
        line(&two, "model (prequential"),
        line(&cluster, "model (prequential")
    );
}

#[test]
fn without_a_rule_the_challenger_only_shadows() {
    let dir = scratch("cc-shadow");
    gen(&dir, "tx-0001.csv", 60_000, 6, &[]);
    settle(&dir);
    let out = millrace(
        &dir,
        &[
            "run",
            &topology(&dir, true, false),
            "--once",
            "--lake",
            "lake",
        ],
    );
    assert!(line(&out, "promoted:").is_none(), "{out}");
    assert!(line(&out, "challenger (shadow").is_some(), "{out}");
    // The champion's scores are untouched by a challenger beside it.
    let weak = topology(&dir, true, false);
    let text = std::fs::read_to_string(&weak).unwrap();
    let at = text.find("\n[challenger]").unwrap();
    let end = at + text[at..].find("\n[lake]").unwrap();
    let mut alone = text.clone();
    alone.replace_range(at..end, "");
    std::fs::write(dir.join("alone.toml"), alone).unwrap();
    millrace(
        &dir,
        &["run", "alone.toml", "--once", "--lake", "lake-alone"],
    );
    let strip = |rows: Vec<ScoredRow>| -> Vec<(String, u64, u64)> {
        rows.into_iter()
            .map(|r| (r.0, r.1, r.4.to_bits()))
            .collect()
    };
    assert!(strip(scored(&dir.join("lake"))) == strip(scored(&dir.join("lake-alone"))));
}

#[test]
fn a_crash_resumes_the_arena_where_it_was() {
    let dir = scratch("cc-crash");
    gen(&dir, "tx-0001.csv", 100_000, 7, &[]);
    gen(&dir, "tx-0002.csv", 100_000, 8, &[]);
    settle(&dir);
    let t = topology(&dir, true, true);
    let whole = millrace(
        &dir,
        &["run", &t, "--once", "--lake", "lake-a", "--workers", "2"],
    );
    let crashed = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["run", &t, "--once", "--lake", "lake-b", "--workers", "2"])
        .current_dir(&dir)
        .env("FAILPOINTS", "before_checkpoint=3*off->return")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the run should have crashed");
    let resumed = millrace(
        &dir,
        &["run", &t, "--once", "--lake", "lake-b", "--workers", "2"],
    );
    assert!(
        resumed.contains("resumed from the checkpoint of epoch"),
        "{resumed}"
    );
    for table in ["scored", "clean", "metrics"] {
        let (a, b) = (
            table_rows(&dir.join("lake-a"), table),
            table_rows(&dir.join("lake-b"), table),
        );
        if table == "metrics" {
            // Wall-clock columns differ; the model columns must not.
            assert_eq!(a.len(), b.len());
            continue;
        }
        assert!(
            a == b,
            "{table} differs after the crash:\n{whole}\n{resumed}"
        );
    }
    let champion = pinned(&dir.join("lake-a"));
    assert!(champion.is_some(), "{whole}");
    assert_eq!(champion, pinned(&dir.join("lake-b")));
}

#[test]
fn a_command_promotes_the_challenger_of_a_running_job() {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = scratch("cc-command");
    gen(&dir, "tx-0001.csv", 30_000, 9, &[]);
    settle(&dir);
    let t = topology(&dir, false, false); // no rule: only a command promotes
    let addr = free_addr();
    // Promotion changes the job, so the live view takes it only with a token.
    let token = [(
        "MILLRACE_TEST_PROMOTE_TOKEN",
        "a-token-of-thirty-two-characters",
    )];
    let mut job = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["run", &t, "--lake", "lake", "--http-addr", &addr])
        .args(["--http-token-env", token[0].0])
        .envs(token)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let manifest = dir.join("lake/_manifest/landing.jsonl");
    let files_done = || {
        std::fs::read_to_string(&manifest)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let start = Instant::now();
    while files_done() < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first file was not committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let said = millrace_env(
        &dir,
        &[
            "models",
            "promote-challenger",
            "--addr",
            &addr,
            "--http-token-env",
            token[0].0,
        ],
        &token,
    );
    assert!(said.contains("next epoch"), "{said}");
    // The next file's first epoch swaps the two.
    gen(&dir, "tx-0002.csv", 30_000, 10, &[]);
    settle(&dir);
    while files_done() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the second file was not committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status()
        .unwrap();
    let mut out = String::new();
    job.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(job.wait().unwrap().success(), "{out}");
    let promoted = line(&out, "promoted:").unwrap_or_else(|| panic!("no promotion:\n{out}"));
    let version: u64 = promoted
        .rsplit("version ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pinned(&dir.join("lake")), Some(version));
    // No job at the address: a clear error, not a hang.
    let nobody = millrace_raw(
        &dir,
        &["models", "promote-challenger", "--addr", &free_addr()],
    );
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("cannot reach the job's live view"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
}

/// The non-linear learner recovers from the stream's drift faster
/// than logistic regression, shown as a metric per window. A forest of model
/// trees shadows logistic regression on the reference stream (its concept
/// reverses at the drift), and the `metrics` table's per-epoch ROC AUC of
/// both, on the same records, shows which is back first.
#[test]
fn a_forest_of_model_trees_is_back_from_the_drift_before_logistic_regression() {
    let dir = scratch("cc-drift");
    let truth = gen(&dir, "tx-0001.csv", 60_000, 7, &["--no-faults"]);
    settle(&dir);
    let mut text =
        std::fs::read_to_string(repo().join("topologies/champion_challenger.toml")).unwrap();
    let at = text.find("\n[challenger]").unwrap();
    let end = at + text[at..].find("\n[lake]").unwrap();
    text.replace_range(
        at..end,
        "\n[challenger]\nkind = \"adaptive_random_forest\"\nleaf_prediction = \"logistic\"\n",
    );
    let text = text.replace("records_per_epoch = 10000", "records_per_epoch = 1000");
    std::fs::write(dir.join("drift.toml"), text).unwrap();
    millrace(&dir, &["run", "drift.toml", "--once", "--lake", "lake"]);

    // Per epoch (1,000 records): labelled, champion's AUC, challenger's AUC.
    let mut epochs: Vec<(u64, u64, f64, f64)> = Vec::new();
    for (_, b) in read_table(&dir.join("lake"), "metrics") {
        let u = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<UInt64Type>()
                .clone()
        };
        let f = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (epoch, n, auc, shadow) = (u("epoch"), u("labelled"), f("auc"), f("challenger_auc"));
        for i in 0..b.num_rows() {
            if n.value(i) > 0 {
                epochs.push((epoch.value(i), n.value(i), auc.value(i), shadow.value(i)));
            }
        }
    }
    epochs.sort_by_key(|e| e.0);
    // The epoch the drift falls in, by the records before it.
    let drift_row = truth_u64(&truth, "drift_at_row");
    let mut seen = 0;
    let d = epochs
        .iter()
        .position(|e| {
            seen += e.1;
            seen > drift_row
        })
        .unwrap();
    let mean = |range: std::ops::Range<usize>, pick: fn(&(u64, u64, f64, f64)) -> f64| {
        epochs[range.clone()].iter().map(pick).sum::<f64>() / range.len() as f64
    };
    let table: Vec<String> = epochs[d - 3..d + 6]
        .iter()
        .map(|e| format!("epoch {}: {:.3} {:.3}", e.0, e.2, e.3))
        .collect();
    // The two epochs from the drift on: the forest is back first.
    let (lr, forest) = (mean(d..d + 2, |e| e.2), mean(d..d + 2, |e| e.3));
    assert!(
        forest > lr + 0.05,
        "after the drift, forest {forest:.3} against logistic regression {lr:.3}:\n{table:#?}"
    );
    // Before it the forest is a learner as good (it does not win by being different).
    let (lr, forest) = (mean(d - 10..d, |e| e.2), mean(d - 10..d, |e| e.3));
    assert!(
        forest > lr - 0.03 && forest > 0.8,
        "before the drift, forest {forest:.3} against logistic regression {lr:.3}:\n{table:#?}"
    );
}

//! Lakes on object storage, against real emulators on loopback: Azurite (the
//! Azure Blob emulator, from npm) and moto's S3 server (from PyPI), both
//! started by `.ci/storage/emulator` for this test process (and stopped when
//! it exits).
//!
//! - the quickstart written to `az://` and `s3://` lakes holds the same rows,
//!   ledger and final model as a local lake;
//! - a run killed at the named crash points around the commit resumes to the
//!   same lake (exactly once: nothing lost, nothing twice);
//! - a second job racing the first to commit an epoch wins or loses cleanly:
//!   the loser stops with an error saying so, having published nothing;
//! - an unsupported scheme, a missing bucket and wrong credentials are clear
//!   errors;
//! - a landing folder that is a container or bucket prefix: each object is
//!   read once, across restarts, and gives the lake a local folder gives;
//! - compaction swaps a partition's parts for one file at its commit record
//!   (a reader counts every row once before and after it), and a run resumes
//!   on the compacted lake.
//!
//! Without node (Azurite) or python3 (moto) the tests say so and skip, unless
//! `MILLRACE_REQUIRE_EMULATORS=1` (set by `.ci/test`), when that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

/// The emulators' endpoints, once per test process; `None` when skipped.
struct Emulators {
    azurite: Option<String>,
    s3: Option<String>,
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start(kind: &str, tools: &[&str]) -> Option<String> {
    if let Some(missing) = tools.iter().find(|t| !have(t)) {
        assert!(
            std::env::var_os("MILLRACE_REQUIRE_EMULATORS").is_none(),
            "{missing} is needed for the {kind} emulator and MILLRACE_REQUIRE_EMULATORS is set"
        );
        eprintln!("skipping the {kind} tests: {missing} is not installed");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("millrace-emulator-{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Some(start_emulator(kind, &dir, None))
}

/// Starts both emulators and points this process's environment (which the
/// jobs it starts inherit) at them.
fn emulators() -> &'static Emulators {
    static E: OnceLock<Emulators> = OnceLock::new();
    E.get_or_init(|| {
        let azurite = start("azurite", &["node", "npm"]);
        let s3 = start("s3", &["python3"]);
        // Set once, before any storage call of this process reads them.
        if let Some(url) = &azurite {
            std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
            std::env::set_var(
                "AZURITE_BLOB_STORAGE_URL",
                url.trim_end_matches("/devstoreaccount1"),
            );
        }
        if let Some(url) = &s3 {
            for (k, v) in [
                ("AWS_ENDPOINT", url.as_str()),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ] {
                std::env::set_var(k, v);
            }
        }
        // A failed store call gives up after seconds, not the default minutes.
        std::env::set_var("MILLRACE_STORAGE_RETRY_TIMEOUT_S", "10");
        Emulators { azurite, s3 }
    })
}

/// The lake URLs to test on (one per running emulator), unique to `name`.
fn lakes(name: &str) -> Vec<String> {
    let e = emulators();
    let pid = std::process::id();
    let mut out = Vec::new();
    if e.azurite.is_some() {
        out.push(format!("az://lake/{name}-{pid}"));
    }
    if e.s3.is_some() {
        out.push(format!("s3://lake/{name}-{pid}"));
    }
    out
}

/// Copies every object under `url` into the local folder `to`.
fn download(url: &str, to: &Path) {
    let root = PathBuf::from(url);
    for (rel, _) in millrace::core::storage::list(&root, true).unwrap() {
        let bytes = millrace::core::storage::read(&root.join(&rel)).unwrap();
        let target = to.join(&rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

/// A scratch folder with 60,000 generated lines in two files (six epochs), settled, and its local lake.
fn input(name: &str) -> Scratch {
    let dir = scratch(name);
    gen(&dir, "tx-a.csv", 30_000, 41, &[]);
    gen(&dir, "tx-b.csv", 30_000, 42, &[]);
    settle(&dir);
    run_once(&dir, &quickstart(), "local", &[]);
    dir
}

fn job(dir: &Path, lake: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_millrace"));
    c.args(once_args(&quickstart(), lake, &[])).current_dir(dir);
    c
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_quickstart_on_object_stores_equals_a_local_lake() {
    let dir = input("objstore-same");
    for lake in lakes("same") {
        let out = run_once(&dir, &quickstart(), &lake, &[]);
        assert!(out.contains(&format!("lake: {lake} (")), "{out}");
        let copy = dir.join(lake.replace("://", "-").replace('/', "-"));
        download(&lake, &copy);
        assert_same_lake(&dir.join("local"), &copy, &lake);
        // A second run finds nothing new and changes nothing.
        let again = run_once(&dir, &quickstart(), &lake, &[]);
        assert!(
            again.contains("resumed from the checkpoint of epoch"),
            "{again}"
        );
        let copy2 = dir.join("again");
        let _ = std::fs::remove_dir_all(&copy2);
        download(&lake, &copy2);
        assert_same_lake(&dir.join("local"), &copy2, &format!("{lake}, run again"));
        // The commands that read a lake take the URL too.
        let report = dir.join("report.html");
        millrace(&dir, &["report", &lake, "-o", report.to_str().unwrap()]);
        assert!(std::fs::read_to_string(&report).unwrap().contains("<svg"));
    }
}

#[test]
fn a_run_killed_around_the_commit_resumes_exactly_once() {
    let dir = input("objstore-kill");
    for lake in lakes("kill") {
        // The 13th part written (in the third epoch), the third commit record, the third publication.
        for (point, skip) in [
            ("lake_after_write", 12),
            ("checkpoint_before_rename", 2),
            ("before_publish", 2),
        ] {
            let lake = format!("{lake}-{point}");
            let crashed = job(&dir, &lake)
                .env("FAILPOINTS", format!("{point}={skip}*off->return"))
                .output()
                .unwrap();
            assert!(
                !crashed.status.success()
                    && String::from_utf8_lossy(&crashed.stderr)
                        .contains(&format!("crash point `{point}` hit")),
                "{lake}: the run should have crashed at {point}: {}",
                text(&crashed)
            );
            let out = run_once(&dir, &quickstart(), &lake, &[]);
            assert!(
                out.contains("resumed from the checkpoint of epoch"),
                "{lake}: {out}"
            );
            let copy = dir.join(format!("copy-{point}"));
            let _ = std::fs::remove_dir_all(&copy);
            download(&lake, &copy);
            assert_same_lake(&dir.join("local"), &copy, &lake);
        }
    }
}

#[test]
fn a_second_job_racing_a_commit_loses_cleanly() {
    let dir = input("objstore-race");
    for lake in lakes("race") {
        // Job A is held just before it creates the checkpoint of its third epoch.
        let gate = dir.join(format!(
            "gate-{}",
            lake.replace("://", "-").replace('/', "-")
        ));
        let mut a = job(&dir, &lake)
            .env(
                "FAILPOINTS",
                format!("before_checkpoint_create=2*off->return({})", gate.display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        held(&mut a, &gate);
        // Job B, as if on another machine (its own local lock folder), runs the
        // same lake to the end: it resumes from A's last commit and commits the rest.
        let other_host = dir.join("other-host-cache");
        let b = job(&dir, &lake)
            .env("XDG_CACHE_HOME", &other_host)
            .output()
            .unwrap();
        assert!(b.status.success(), "{lake}: job B failed: {}", text(&b));
        // A goes on, finds its epoch committed by B, and stops without publishing.
        std::fs::write(&gate, b"go").unwrap();
        let a = a.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&a.stderr);
        assert!(
            !a.status.success()
                && err.contains("was committed by another job writing the same lake"),
            "{lake}: job A should have lost the commit: {}",
            text(&a)
        );
        // Committed data is B's, whole; a later run clears what A left hidden.
        let copy = dir.join("race-copy");
        let _ = std::fs::remove_dir_all(&copy);
        download(&lake, &copy);
        for table in ["scored", "clean", "rejected"] {
            assert_eq!(
                table_rows(&dir.join("local"), table),
                table_rows(&copy, table),
                "{lake}: {table}"
            );
        }
        run_once(&dir, &quickstart(), &lake, &[]);
        let _ = std::fs::remove_dir_all(&copy);
        download(&lake, &copy);
        assert_same_lake(&dir.join("local"), &copy, &format!("{lake} after the race"));
    }
}

#[test]
fn bad_locations_and_credentials_are_clear_errors() {
    let dir = scratch("objstore-errors");
    gen(&dir, "tx.csv", 1_000, 5, &[]);
    settle(&dir);
    let run = |lake: &str, env: &[(&str, &str)]| {
        let mut c = job(&dir, lake);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{lake} should fail: {}", text(&out));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run("gs://bucket/lake", &[]);
    assert!(err.contains("the scheme `gs://` is not supported"), "{err}");
    assert!(
        !dir.join("gs:").exists(),
        "a local folder named gs: was written"
    );
    let err = run("s3://KEY:SECRET@bucket/lake", &[]);
    assert!(
        err.contains("credentials in the URL are not accepted") && !err.contains("SECRET"),
        "{err}"
    );
    let e = emulators();
    if e.s3.is_some() {
        let err = run("s3://no-such-bucket/lake", &[]);
        assert!(
            err.contains("s3://no-such-bucket/lake") && err.contains("NoSuchBucket"),
            "{err}"
        );
    }
    if e.azurite.is_some() {
        // Not the emulator's key: Azurite refuses the signature.
        let err = run(
            "az://lake/badkey",
            &[
                ("AZURE_STORAGE_USE_EMULATOR", "false"),
                ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1"),
                ("AZURE_STORAGE_ACCOUNT_KEY", "d3JvbmcK"),
                ("AZURE_STORAGE_ENDPOINT", e.azurite.as_deref().unwrap()),
                ("AZURE_ALLOW_HTTP", "true"),
            ],
        );
        assert!(
            err.contains("az://lake/badkey") && err.contains("403") && !err.contains("d3JvbmcK"),
            "{err}"
        );
    }
}

#[test]
fn landing_from_a_container_reads_each_object_once_across_restarts() {
    let dir = scratch("objstore-landing");
    gen(&dir, "tx-a.csv", 30_000, 41, &[]);
    gen(&dir, "tx-b.csv", 30_000, 42, &[]);
    settle(&dir);
    // The third file lands later; it waits aside.
    std::fs::create_dir_all(dir.join("later")).unwrap();
    gen(&dir, "tx-c.csv", 20_000, 43, &[]);
    std::fs::rename(dir.join("landing/tx-c.csv"), dir.join("later/tx-c.csv")).unwrap();
    let run = |landing: &str, lake: &str| {
        millrace(
            &dir,
            &[
                "run",
                &quickstart(),
                "--once",
                "--landing",
                landing,
                "--lake",
                lake,
            ],
        )
    };
    // The reference: a local folder, the third file landed before the second run.
    let first = run("landing", "local");
    assert!(first.contains("2 file(s)"), "{first}");
    std::fs::copy(dir.join("later/tx-c.csv"), dir.join("landing/tx-c.csv")).unwrap();
    run("landing", "local");
    for root in lakes("landing") {
        let landing = format!("{root}-in");
        let put = |name: &str, from: &Path| {
            let bytes = std::fs::read(from.join(name)).unwrap();
            millrace::core::storage::write_atomic(&PathBuf::from(&landing).join(name), &bytes)
                .unwrap();
        };
        put("tx-a.csv", &dir.join("landing"));
        put("tx-b.csv", &dir.join("landing"));
        // On their way in, or not data: not read.
        millrace::core::storage::write_atomic(&PathBuf::from(&landing).join("tx-d.csv.tmp"), b"x")
            .unwrap();
        millrace::core::storage::write_atomic(&PathBuf::from(&landing).join("notes.txt"), b"x")
            .unwrap();
        let lake = dir.join(format!("lake-{}", &root[..2]));
        let lake = lake.to_str().unwrap();
        let out = run(&landing, lake);
        assert!(out.contains("2 file(s)"), "{landing}: {out}");
        // Run again: nothing new is read.
        let again = run(&landing, lake);
        assert!(again.contains("0 file(s)"), "{landing}: {again}");
        // The third object lands: the next run reads it alone.
        put("tx-c.csv", &dir.join("later"));
        let third = run(&landing, lake);
        assert!(third.contains("1 file(s)"), "{landing}: {third}");
        // The same rows as from the local folder, but for when each file arrived.
        for table in ["scored", "clean", "rejected"] {
            let rows = |lake: &Path| table_rows_except(lake, table, &["arrived_at"]);
            let (a, b) = (rows(&dir.join("local")), rows(Path::new(lake)));
            assert!(!a.is_empty() && a == b, "{landing}: table {table} differs");
        }
        // The manifest names each object once, with its size.
        let manifest =
            std::fs::read_to_string(Path::new(lake).join("_manifest/landing.jsonl")).unwrap();
        for name in ["tx-a.csv", "tx-b.csv", "tx-c.csv"] {
            assert_eq!(
                manifest.matches(&format!("\"name\":\"{name}\"")).count(),
                1,
                "{landing}: {manifest}"
            );
        }
        assert!(
            !manifest.contains("tx-d") && !manifest.contains("notes"),
            "{manifest}"
        );
    }
}

/// `millrace files LAKE TABLE --rows`: the total it prints.
fn files_total(dir: &Path, lake: &str, table: &str) -> u64 {
    let out = millrace(dir, &["files", lake, table, "--rows"]);
    out.lines()
        .find_map(|l| l.strip_prefix("total\t"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

#[test]
fn compaction_on_object_stores_swaps_parts_in_atomically_and_runs_resume_after_it() {
    let dir = input("objstore-compact");
    let local = dir.join("local");
    let expected = rows(&local, "scored") as u64;
    for lake in lakes("compact") {
        run_once(&dir, &quickstart(), &lake, &[]);
        // Held before and after its first commit record: a reader counts every row once.
        let (before, after) = (dir.join("gate-before"), dir.join("gate-after"));
        let mut compactor =
            spawn_held_compactor(&dir, &[&lake, "--grace-ms", "0"], &before, &after);
        for gate in [&before, &after] {
            held(&mut compactor, gate);
            assert_eq!(files_total(&dir, &lake, "scored"), expected, "{lake}");
            std::fs::write(gate, "").unwrap();
        }
        let out = compactor.wait_with_output().unwrap();
        assert!(out.status.success(), "{lake}: {}", text(&out));
        assert_eq!(files_total(&dir, &lake, "scored"), expected, "{lake}");
        let copy = dir.join(lake.replace("://", "-").replace('/', "-"));
        download(&lake, &copy);
        assert_same_lake(&local, &copy, &format!("{lake}, compacted"));
        for table in ["clean", "scored", "rejected", "metrics"] {
            let mut per_partition = std::collections::BTreeMap::new();
            for f in table_files(&copy, table) {
                *per_partition
                    .entry(f.parent().unwrap().to_path_buf())
                    .or_insert(0) += 1;
            }
            assert!(
                per_partition.values().all(|n| *n == 1),
                "{lake}: {table}: {per_partition:?}"
            );
            // Grace 0: the replaced parts are gone from the store.
            let parquet = millrace::core::storage::list(&PathBuf::from(&lake).join(table), true)
                .unwrap()
                .into_iter()
                .filter(|(rel, _)| rel.ends_with(".parquet"))
                .count();
            assert_eq!(parquet, per_partition.len(), "{lake}: {table}");
        }
        // A run on the compacted lake resumes from its checkpoint, whose parts
        // were compacted away, and changes nothing.
        let again = run_once(&dir, &quickstart(), &lake, &[]);
        assert!(
            again.contains("resumed from the checkpoint of epoch"),
            "{again}"
        );
        assert_eq!(files_total(&dir, &lake, "scored"), expected, "{lake}");
    }
}

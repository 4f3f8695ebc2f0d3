//! Helpers shared by the integration tests: run the `millrace` binary in a
//! scratch folder and read the lake back with the Parquet reader.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, TimestampMillisecondType, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub mod broker;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch folder for one test, removed when the test is done with it.
///
/// The suite generates and writes several gigabytes in all; leaving the
/// folders behind once filled a CI machine's disk. A folder is kept when its
/// test fails (for looking at what it wrote), or always with
/// `MILLRACE_KEEP_TEST_DIRS=1`.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test folder kept: {}", self.0.display());
        } else if std::env::var_os("MILLRACE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("millrace-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("landing")).unwrap();
    Scratch(dir)
}

/// Runs `millrace ARGS` in `dir`; panics with its output if it fails.
pub fn millrace(dir: &Path, args: &[&str]) -> String {
    let out = millrace_raw(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "millrace {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `millrace ARGS` in `dir` and returns whatever happened.
pub fn millrace_raw(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the millrace binary runs")
}

/// The arguments of `millrace run TOPOLOGY --once --landing landing --lake LAKE EXTRA…`.
pub fn once_args<'a>(topology: &'a str, lake: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        topology,
        "--once",
        "--landing",
        "landing",
        "--lake",
        lake,
    ];
    args.extend_from_slice(extra);
    args
}

/// `millrace run TOPOLOGY --once` over `dir`'s landing folder into `lake`; panics if it fails.
pub fn run_once(dir: &Path, topology: &str, lake: &str, extra: &[&str]) -> String {
    millrace(dir, &once_args(topology, lake, extra))
}

/// The quickstart topology, as an absolute path.
pub fn quickstart() -> String {
    repo()
        .join("topologies/quickstart.toml")
        .display()
        .to_string()
}

/// Generates `rows` rows into `dir/landing/NAME` and returns the ground truth.
pub fn gen(dir: &Path, name: &str, rows: u64, seed: u64, extra: &[&str]) -> serde_json::Value {
    let out = format!("landing/{name}");
    let truth = format!("truth-{name}.json");
    let rows = rows.to_string();
    let seed = seed.to_string();
    let mut args = vec![
        "gen", "--rows", &rows, "--seed", &seed, "--out", &out, "--truth", &truth,
    ];
    args.extend_from_slice(extra);
    millrace(dir, &args);
    serde_json::from_str(&std::fs::read_to_string(dir.join(truth)).unwrap()).unwrap()
}

/// The Parquet files that hold a table's rows, each row once: what a reader
/// reads (hidden, temporary and compacted-away files excluded).
pub fn table_files(lake: &Path, table: &str) -> Vec<PathBuf> {
    millrace::connectors::compaction::live_parts(&lake.join(table)).unwrap()
}

/// Every file under the lake whose name marks it as temporary.
pub fn temp_files(lake: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![lake.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".tmp") {
                found.push(p);
            }
        }
    }
    found
}

/// All record batches of a table.
pub fn read_table(lake: &Path, table: &str) -> Vec<(PathBuf, RecordBatch)> {
    let mut out = Vec::new();
    for f in table_files(lake, table) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            out.push((f.clone(), b.unwrap()));
        }
    }
    out
}

/// Number of rows in a table.
pub fn rows(lake: &Path, table: &str) -> usize {
    read_table(lake, table)
        .iter()
        .map(|(_, b)| b.num_rows())
        .sum()
}

/// Sum of a UInt64 column of the metrics table.
pub fn metrics_sum(lake: &Path, column: &str) -> u64 {
    read_table(lake, "metrics")
        .iter()
        .map(|(_, b)| {
            b.column_by_name(column)
                .unwrap()
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .sum::<u64>()
        })
        .sum()
}

/// Counts of a text column's values.
pub fn counts(lake: &Path, table: &str, column: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (_, b) in read_table(lake, table) {
        let col = b.column_by_name(column).unwrap().as_string::<i32>().clone();
        for v in col.iter() {
            *m.entry(v.unwrap_or("").to_string()).or_default() += 1;
        }
    }
    m
}

/// One scored row: (source, line, key, event time, score, label, model version).
pub type ScoredRow = (String, u64, String, i64, f64, Option<i32>, u64);

/// All scored rows, sorted by source and line.
pub fn scored(lake: &Path) -> Vec<ScoredRow> {
    let mut v = Vec::new();
    for (_, b) in read_table(lake, "scored") {
        let source = b
            .column_by_name("source")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let line = b
            .column_by_name("line")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        let key = b.column_by_name("key").unwrap().as_string::<i32>().clone();
        let t = b
            .column_by_name("event_time")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let s = b
            .column_by_name("score")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>()
            .clone();
        let y = b
            .column_by_name("label")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let ver = b
            .column_by_name("model_version")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .clone();
        for i in 0..b.num_rows() {
            v.push((
                source.value(i).to_string(),
                line.value(i),
                key.value(i).to_string(),
                t.value(i),
                s.value(i),
                (!y.is_null(i)).then(|| y.value(i)),
                ver.value(i),
            ));
        }
    }
    v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    v
}

/// A truth field as u64.
pub fn truth_u64(truth: &serde_json::Value, key: &str) -> u64 {
    truth[key]
        .as_u64()
        .unwrap_or_else(|| panic!("truth has no `{key}`: {truth}"))
}

/// Every row of a table rendered as text (all columns), sorted: a lake's content, comparable across runs.
pub fn table_rows(lake: &Path, table: &str) -> Vec<String> {
    table_rows_except(lake, table, &[])
}

/// [`table_rows`] without the columns named in `skip`.
pub fn table_rows_except(lake: &Path, table: &str, skip: &[&str]) -> Vec<String> {
    let mut rows = Vec::new();
    for (_, b) in read_table(lake, table) {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .zip(schema.fields())
                .filter(|(_, f)| !skip.contains(&f.name().as_str()))
                .map(|(c, _)| match c.data_type() {
                    // Rendering a named time zone needs chrono-tz; the raw value is as good a fingerprint.
                    arrow::datatypes::DataType::Timestamp(..) if c.is_null(i) => "null".to_string(),
                    arrow::datatypes::DataType::Timestamp(..) => c
                        .as_primitive::<TimestampMillisecondType>()
                        .value(i)
                        .to_string(),
                    _ => arrow::util::display::array_value_to_string(c, i).unwrap(),
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

/// Marks every file in `dir/landing` as written a minute ago, so the landing source takes it at once.
pub fn settle(dir: &Path) {
    settle_folder(dir, "landing");
}

/// Marks every file in `dir/folder` as written a minute ago.
pub fn settle_folder(dir: &Path, folder: &str) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for e in std::fs::read_dir(dir.join(folder)).unwrap() {
        let p = e.unwrap().path();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

/// A loopback address with a port nothing listens on (for a job's `--http-addr`).
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The newest checkpoint file of a lake.
pub fn newest_checkpoint(lake: &Path) -> PathBuf {
    let mut c: Vec<PathBuf> = std::fs::read_dir(lake.join("_checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    c.sort();
    c.pop().expect("the lake has a checkpoint")
}

/// The number just before `what` in the summary line starting with `line`.
pub fn figure(out: &str, line: &str, what: &str) -> u64 {
    let l = out
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no `{line}` line in:\n{out}"));
    let at = l
        .find(what)
        .unwrap_or_else(|| panic!("no `{what}` in `{l}`"));
    let before: String = l[..at]
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    before.chars().rev().collect::<String>().parse().unwrap()
}

/// The summary's `late labels:` line: learned, expired, orphaned, waiting, due, early.
pub fn late_counts(out: &str) -> [u64; 6] {
    let l = out
        .lines()
        .find(|l| l.starts_with("late labels:"))
        .unwrap_or_else(|| panic!("no `late labels:` line in:\n{out}"));
    let n: Vec<u64> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    n.try_into()
        .unwrap_or_else(|_| panic!("six counts expected: {l}"))
}

/// The final model of a lake: every worker's `score` state in its newest checkpoint.
pub fn final_model(lake: &Path) -> Vec<millrace_operators::score::Scorer> {
    let text = std::fs::read(newest_checkpoint(lake)).unwrap();
    let body = &text[text.iter().position(|b| *b == b'\n').unwrap() + 1..];
    let ckpt: millrace::dataflow::coordinator::checkpoint::Checkpoint =
        serde_json::from_slice(body).unwrap();
    let states = millrace::dataflow::coordinator::checkpoint::load_states(lake, &ckpt).unwrap();
    let models: Vec<millrace_operators::score::Scorer> = states
        .iter()
        .filter(|((step, _), _)| step == "score")
        .map(|(_, b)| millrace_operators::epochs::decode("score", b).unwrap())
        .collect();
    assert!(!models.is_empty());
    models
}

/// Asserts lake `b` holds exactly what lake `a` holds, and the same final model.
pub fn assert_same_lake(a: &Path, b: &Path, context: &str) {
    for table in ["scored", "clean", "rejected"] {
        let (ra, rb) = (table_rows(a, table), table_rows(b, table));
        assert!(!ra.is_empty(), "{context}: {table} is empty");
        if ra != rb {
            let missing = ra.iter().filter(|r| rb.binary_search(r).is_err()).count();
            let extra = rb.iter().filter(|r| ra.binary_search(r).is_err()).count();
            panic!(
                "{context}: table {table} differs: {} vs {} rows, {missing} missing, {extra} extra",
                ra.len(),
                rb.len()
            );
        }
    }
    // No record twice.
    let mut ids: Vec<(String, u64)> = scored(b).into_iter().map(|r| (r.0, r.1)).collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "{context}: a record was scored twice");
    assert_eq!(
        metrics_sum(a, "input"),
        metrics_sum(b, "input"),
        "{context}: the metrics ledgers differ"
    );
    let (ma, mb) = (final_model(a), final_model(b));
    assert_eq!(ma.len(), mb.len());
    for (ma, mb) in ma.iter().zip(&mb) {
        assert_eq!(
            ma.model, mb.model,
            "{context}: final weights, intercept or update counts differ"
        );
        assert_eq!(
            ma.version, mb.version,
            "{context}: final model versions differ"
        );
        assert_eq!(
            ma.scaler, mb.scaler,
            "{context}: final scaler statistics differ"
        );
    }
    assert!(
        temp_or_pending(b).is_empty(),
        "{context}: uncommitted files left: {:?}",
        temp_or_pending(b)
    );
}

pub fn temp_or_pending(lake: &Path) -> Vec<PathBuf> {
    let mut found = temp_files(lake);
    let mut stack = vec![lake.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".pending") {
                found.push(p);
            }
        }
    }
    found
}

/// Per table: rows and an xxh3 of its sorted rendered rows (`table_rows`) —
/// a lake's content in a line, for comparing lakes and printing the difference.
pub fn lake_digest(lake: &Path) -> Vec<(&'static str, usize, u64)> {
    ["scored", "clean", "rejected"]
        .into_iter()
        .map(|table| {
            let rows = table_rows(lake, table);
            (
                table,
                rows.len(),
                xxhash_rust::xxh3::xxh3_64(rows.join("\n").as_bytes()),
            )
        })
        .collect()
}

/// Runs `millrace ARGS` in `dir` with `env` added to its environment and returns whatever happened.
pub fn millrace_env_raw(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("the millrace binary runs")
}

/// Runs `millrace ARGS` in `dir` with `env` added; panics with its output if it fails.
pub fn millrace_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = millrace_env_raw(dir, args, env);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "millrace {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One HTTP exchange over a fresh TCP connection, `request` sent as given:
/// the status (0 when the server closed without answering), the head and the
/// body. The live view closes every connection after one answer.
pub fn http_exchange(addr: &str, request: &[u8]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (http_status(head), head.to_string(), body.to_string())
}

/// The status of an HTTP/1.x answer (0 when there is none).
pub fn http_status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.")
        .and_then(|h| h.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `METHOD path` to the live view at `addr`, with `headers` (a `Host: addr`
/// unless they name one): the status, the head and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    http_exchange(addr, request.as_bytes())
}

/// A `millrace run` in the background serving its live view on a free
/// loopback port, its stdout and stderr going to files in its folder.
/// [`LiveJob::stop`] interrupts it (as Ctrl-C does) and waits; a job still
/// running when dropped (a failed test) is killed.
pub struct LiveJob {
    child: Option<std::process::Child>,
    /// The live view's address.
    pub addr: String,
    out: PathBuf,
    err: PathBuf,
}

impl LiveJob {
    /// Starts `millrace run ARGS --http-addr ADDR` in `dir` with `env` added, and waits until `/healthz` answers.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> LiveJob {
        Self::start_at(dir, args, env, &free_addr())
    }

    /// [`LiveJob::start`] listening on `listen`; requests go to 127.0.0.1 on its port.
    pub fn start_at(dir: &Path, args: &[&str], env: &[(&str, &str)], listen: &str) -> LiveJob {
        let port = listen.rsplit(':').next().unwrap();
        let n = std::fs::read_dir(dir).unwrap().count();
        let (out, err) = (
            dir.join(format!("job-{n}.out")),
            dir.join(format!("job-{n}.err")),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_millrace"))
            .arg("run")
            .args(args)
            .args(["--http-addr", listen])
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut job = LiveJob {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
            out,
            err,
        };
        let start = std::time::Instant::now();
        loop {
            if std::net::TcpStream::connect(&job.addr).is_ok()
                && http_request(&job.addr, "GET", "/healthz", &[]).0 == 200
            {
                break;
            }
            if let Some(status) = job.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the job exited ({status}) before serving its live view:\n{}",
                    job.stderr()
                );
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the live view did not come up:\n{}",
                job.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        job
    }

    /// The job's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What the job printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Interrupts the job and waits for it: whether it succeeded, its stdout and its stderr.
    pub fn stop(mut self) -> (bool, String, String) {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        let ok = child.wait().unwrap().success();
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        (ok, out, self.stderr())
    }
}

impl Drop for LiveJob {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `/proc/<pid>/status` figure in kB (`VmRSS`, `VmHWM`).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Waits until the process held at `gate` (a `wait_point!` given
/// `return(GATE)`) announces `GATE.reached`, or fails if it exits first.
pub fn held(child: &mut std::process::Child, gate: &Path) {
    let reached = gate.with_extension("reached");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !reached.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process exited ({status}) before reaching its wait point");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process never reached its wait point"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `millrace compact ARGS` started in `dir`, held at two wait points: before
/// and after its first commit record, gated by the files `before` and
/// `after` (wait with [`held`], release by writing the gate). Leftover
/// gates of an earlier run in `dir` are removed first.
pub fn spawn_held_compactor(
    dir: &Path,
    args: &[&str],
    before: &Path,
    after: &Path,
) -> std::process::Child {
    for gate in [before, after] {
        let _ = std::fs::remove_file(gate);
        let _ = std::fs::remove_file(gate.with_extension("reached"));
    }
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .arg("compact")
        .args(args)
        .env(
            "FAILPOINTS",
            format!(
                "compaction_hold_before_record=return({});compaction_hold_after_record=return({})",
                before.display(),
                after.display()
            ),
        )
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `.ci/storage/emulator start KIND` (`azurite` or `s3`) with its data in
/// `dir`, listening on `host` (default loopback), with a bucket `lake`,
/// stopped when this process ends; its endpoint.
pub fn start_emulator(kind: &str, dir: &Path, host: Option<&str>) -> String {
    let mut cmd = Command::new(repo().join(".ci/storage/emulator"));
    cmd.args(["start", kind]);
    if let Some(host) = host {
        cmd.args(["--host", host]);
    }
    let out = cmd
        .arg("--dir")
        .arg(dir)
        .args([
            "--bucket",
            "lake",
            "--owner",
            &std::process::id().to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("the emulator script runs");
    assert!(
        out.status.success(),
        "the {kind} emulator did not start on {}",
        host.unwrap_or("loopback")
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits until `poll` says done, for at most `secs` seconds; panics with
/// `what` and the last value it saw.
pub fn wait_until<T: std::fmt::Debug>(
    what: &str,
    secs: u64,
    mut poll: impl FnMut() -> (bool, T),
) -> T {
    let start = std::time::Instant::now();
    loop {
        let (done, value) = poll();
        if done {
            return value;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "{what} within {secs} s; last seen: {value:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

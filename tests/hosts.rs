//! A cluster job whose processes share nothing but an object store, run as
//! separate hosts: each process in a network namespace of its own with its
//! own address (made here with `ip netns` and veth pairs on a bridge), its own
//! working folder, and Azurite on the bridge's address as the one thing they
//! all reach. One host's process is killed mid-run; the restarted job ends
//! with the lake one process writes.
//!
//! Needs root (or CAP_NET_ADMIN) for `ip netns`, and node for Azurite;
//! without them the test says so and skips, unless `MILLRACE_REQUIRE_HOSTS=1`
//! (set by `.ci/test`), when that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

/// Network namespaces on one bridge; removed when dropped.
struct Hosts {
    bridge: String,
    namespaces: Vec<String>,
    /// The bridge's address (the root namespace, where the emulator listens).
    gateway: String,
    /// Each namespace's address.
    addresses: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    fn make(n: usize) -> Result<Hosts, String> {
        let tag = std::process::id() % 100_000;
        let subnet = format!("10.{}.{}", 200 + tag % 50, tag / 50 % 250);
        let mut hosts = Hosts {
            bridge: format!("mrbr{tag}"),
            namespaces: Vec::new(),
            gateway: format!("{subnet}.1"),
            addresses: Vec::new(),
        };
        ip(&["link", "add", &hosts.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.gateway),
            "dev",
            &hosts.bridge,
        ])?;
        ip(&["link", "set", &hosts.bridge, "up"])?;
        for i in 0..n {
            let (ns, veth, addr) = (
                format!("mr{tag}h{i}"),
                format!("mr{tag}v{i}"),
                format!("{subnet}.{}", 2 + i),
            );
            ip(&["netns", "add", &ns])?;
            hosts.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &hosts.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            hosts.addresses.push(addr);
        }
        Ok(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Azurite on the bridge's address; its endpoint (without the account).
fn azurite(dir: &Path, host: &str) -> String {
    start_emulator("azurite", dir, Some(host))
        .trim_end_matches("/devstoreaccount1")
        .to_string()
}

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var_os("MILLRACE_REQUIRE_HOSTS").is_none(),
        "{why}, and MILLRACE_REQUIRE_HOSTS is set"
    );
    eprintln!("skipping the multi-host test: {why}");
}

/// `millrace run` as process `process` of the job, inside its namespace.
fn process(
    host_dir: &Path,
    ns: &str,
    process: usize,
    args: &[&str],
    failpoints: Option<String>,
) -> Child {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_millrace"), "run"])
        .args(args)
        .args(["--processes", "2", "--process", &process.to_string()])
        .args(["--hostfile", "hosts.txt"])
        .current_dir(host_dir)
        .stdout(std::fs::File::create(host_dir.join(format!("out-{process}.txt"))).unwrap())
        .stderr(std::fs::File::create(host_dir.join(format!("err-{process}.txt"))).unwrap());
    if let Some(f) = failpoints {
        c.env("FAILPOINTS", f);
    }
    c.spawn().unwrap()
}

fn output(host_dir: &Path, process: usize) -> String {
    let read = |what: &str| {
        std::fs::read_to_string(host_dir.join(format!("{what}-{process}.txt"))).unwrap_or_default()
    };
    format!("{}{}", read("out"), read("err"))
}

#[test]
fn processes_sharing_only_an_object_store_survive_a_killed_host_and_write_one_processs_lake() {
    if !Path::new("/usr/bin/node").exists()
        && Command::new("node").arg("--version").output().is_err()
    {
        return skip_or_fail("node is not installed (Azurite)");
    }
    let hosts = match Hosts::make(2) {
        Ok(h) => h,
        Err(e) => return skip_or_fail(&format!("cannot make network namespaces ({e})")),
    };
    let dir = scratch("hosts");
    let endpoint = azurite(&dir.join("azurite"), &hosts.gateway);
    // Every process (this one's storage calls included) reaches the store at the bridge.
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &endpoint);
    std::env::set_var("MILLRACE_STORAGE_RETRY_TIMEOUT_S", "20");
    let tag = std::process::id();
    let landing = format!("az://lake/hosts-{tag}-in");
    gen(&dir, "tx-a.csv", 30_000, 61, &[]);
    gen(&dir, "tx-b.csv", 30_000, 62, &[]);
    for name in ["tx-a.csv", "tx-b.csv"] {
        let bytes = std::fs::read(dir.join("landing").join(name)).unwrap();
        millrace::core::storage::write_atomic(&PathBuf::from(&landing).join(name), &bytes).unwrap();
    }
    // Small epochs, so the kill lands mid-run.
    let topology = dir.join("quickstart.toml");
    std::fs::write(
        &topology,
        std::fs::read_to_string(quickstart())
            .unwrap()
            .replace("records_per_epoch = 10000", "records_per_epoch = 2000"),
    )
    .unwrap();
    let topology = topology.to_str().unwrap().to_string();
    // The reference: one process of two workers, from the same container.
    let reference = format!("az://lake/hosts-{tag}-one");
    millrace(
        &dir,
        &[
            "run",
            &topology,
            "--once",
            "--workers",
            "2",
            "--landing",
            &landing,
            "--lake",
            &reference,
        ],
    );
    // Two hosts, one folder each (nothing shared but the store).
    let lake = format!("az://lake/hosts-{tag}");
    let folders: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("host-{i}"))).collect();
    for f in &folders {
        std::fs::create_dir_all(f).unwrap();
        let list: String = hosts
            .addresses
            .iter()
            .map(|a| format!("{a}:7400\n"))
            .collect();
        std::fs::write(f.join("hosts.txt"), list).unwrap();
    }
    let args = [
        "--once".to_string(),
        "--landing".into(),
        landing.clone(),
        "--lake".into(),
        lake.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let args = [&[topology.as_str()][..], &args].concat();
    // Process 0 is held after its third commit; then host 1's process is killed.
    let gate = folders[0].join("gate");
    let mut p0 = process(
        &folders[0],
        &hosts.namespaces[0],
        0,
        &args,
        Some(format!("after_commit=2*off->return({})", gate.display())),
    );
    let mut p1 = process(&folders[1], &hosts.namespaces[1], 1, &args, None);
    let reached = gate.with_extension("reached");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !reached.exists() {
        if let Some(s) = p0.try_wait().unwrap() {
            panic!(
                "process 0 exited ({s}) before its third commit:\n{}",
                output(&folders[0], 0)
            );
        }
        assert!(
            Instant::now() < deadline,
            "process 0 never committed three epochs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p1.kill().unwrap();
    p1.wait().unwrap();
    std::fs::write(&gate, "").unwrap();
    let status = p0.wait().unwrap();
    assert!(
        !status.success(),
        "process 0 went on without its peer:\n{}",
        output(&folders[0], 0)
    );
    // Both hosts start again; the job resumes from the store alone.
    let mut p0 = process(&folders[0], &hosts.namespaces[0], 0, &args, None);
    let mut p1 = process(&folders[1], &hosts.namespaces[1], 1, &args, None);
    let (s0, s1) = (p0.wait().unwrap(), p1.wait().unwrap());
    assert!(
        s0.success() && s1.success(),
        "{}\n{}",
        output(&folders[0], 0),
        output(&folders[1], 1)
    );
    let out = output(&folders[0], 0);
    assert!(
        out.contains("resumed from the checkpoint of epoch"),
        "{out}"
    );
    assert!(out.contains("2 worker(s) in 2 processes"), "{out}");
    let (one, two) = (dir.join("copy-one"), dir.join("copy-two"));
    for (url, to) in [(&reference, &one), (&lake, &two)] {
        for (rel, _) in millrace::core::storage::list(Path::new(url), true).unwrap() {
            let bytes = millrace::core::storage::read(&Path::new(url).join(&rel)).unwrap();
            let target = to.join(&rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, bytes).unwrap();
        }
    }
    assert_same_lake(&one, &two, "two hosts, one killed, against one process");
    // Neither host's folder holds any of the job's data.
    for f in &folders {
        let names: Vec<String> = std::fs::read_dir(f)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.ends_with(".txt") && !n.starts_with("gate"))
            .collect();
        assert!(names.is_empty(), "{}: {names:?}", f.display());
    }
}

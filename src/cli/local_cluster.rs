//! `millrace run --local-cluster N`: the same command as N processes on
//! loopback, one timely cluster, for trying cluster mode on one machine.

use anyhow::{bail, Context};

/// `run --local-cluster N`: this same command as N processes on loopback.
/// Prints process 0's output; if any process fails, stops the others and
/// reports which one failed and why.
pub fn run(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--local-cluster: expected at least 1 process");
    }
    // The command line without --local-cluster.
    let mut args: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--local-cluster" {
            it.next();
        } else if !a.starts_with("--local-cluster=") {
            args.push(a);
        }
    }
    // Free loopback ports (bound, read, released; the processes bind them next).
    let addresses: Vec<String> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.to_string())
        })
        .collect::<std::io::Result<_>>()
        .context("cannot find free loopback ports")?;
    let hostfile = std::env::temp_dir().join(format!("millrace-hosts-{}.txt", std::process::id()));
    std::fs::write(&hostfile, addresses.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", hostfile.display()))?;
    let exe = std::env::current_exe().context("cannot find the millrace binary")?;
    let mut children = Vec::new();
    for i in 0..n {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&args)
            .args(["--processes", &n.to_string(), "--process", &i.to_string()])
            .arg("--hostfile")
            .arg(&hostfile)
            .stdout(std::process::Stdio::piped());
        children.push(
            cmd.spawn()
                .with_context(|| format!("cannot start process {i}"))?,
        );
    }
    // Each process's stdout, read on its own thread so none blocks on a full pipe.
    let outputs: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let mut out = c.stdout.take().expect("piped");
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut s);
                s
            })
        })
        .collect();
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; n];
    let mut first_failure = None;
    while status.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if status[i].is_none() {
                if let Some(s) = c.try_wait()? {
                    status[i] = Some(s);
                    if !s.success() && first_failure.is_none() {
                        first_failure = Some((i, s));
                    }
                }
            }
        }
        if first_failure.is_some() {
            // Give the others a moment to notice and stop on their own, then stop them.
            std::thread::sleep(std::time::Duration::from_secs(2));
            for (i, c) in children.iter_mut().enumerate() {
                if status[i].is_none() {
                    let _ = c.kill();
                    status[i] = c.wait().ok();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&hostfile);
    let texts: Vec<String> = outputs
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    print!("{}", texts[0]);
    if let Some((i, s)) = first_failure {
        if s.code() == Some(crate::runtime::lock::EXIT_LOCKED.into()) {
            // Refused: another job holds the lake; say so with the same exit code.
            std::process::exit(s.code().unwrap_or(1));
        }
        bail!("process {i} of the local cluster failed ({s}); the others were stopped (its error is above)");
    }
    Ok(())
}

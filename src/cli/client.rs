//! The command line's client of a running job's live view: `millrace tap`
//! and `millrace models promote-challenger`.
//!
//! HTTP/1.1 through `ureq` (blocking, which suits a command; the same crate
//! as the webhook channel). Every request has a 10-second deadline, follows
//! no redirect and ignores proxy variables, so the token goes to the job's
//! address and nowhere else; the `Authorization` header is marked sensitive
//! (ureq never logs it) and the token is never printed.
//!
//! The token (see [`crate::http`]): `promote-challenger --http-token-env
//! NAME` reads it from the environment variable `NAME`, like `millrace run
//! --http-token-env NAME`; `tap` reads the one its topology's `[runtime]
//! http_token_env` names. Without one, no `Authorization` header is sent: a
//! job with a token then answers 401 and says so.
//!
//! `tap` polls `/tap/<step>?after=N`: again at once while pages come back
//! full, after [`POLL_MIN`] when some records came, and backing off to
//! [`POLL_MAX`] while nothing does — never a busy loop.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ureq::http::HeaderValue;

/// The deadline of one request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a page that was not full.
const POLL_MIN: Duration = Duration::from_millis(250);
/// The longest pause between polls while nothing comes.
const POLL_MAX: Duration = Duration::from_secs(2);
/// `tap` gives up after this long.
const TAP_FOR: Duration = Duration::from_secs(600);
/// The most samples the server returns per request (`/tap`'s page).
const TAP_PAGE: usize = 200;

/// A running job's live view.
struct Live {
    agent: ureq::Agent,
    addr: String,
    authorization: Option<HeaderValue>,
}

impl Live {
    /// The live view at `addr` (a bare port: on 127.0.0.1), with the token of
    /// the variable `token_env` names (`key`: where the name came from, for errors).
    fn new(addr: &str, token_env: Option<(&str, &str)>) -> anyhow::Result<Live> {
        let addr = match addr.parse::<u16>() {
            Ok(port) => format!("127.0.0.1:{port}"),
            Err(_) => addr.to_string(),
        };
        let authorization = match token_env {
            None => None,
            Some((name, key)) => {
                let token =
                    crate::http::Token::from_env(name).map_err(|problem| match problem {
                        crate::http::TokenProblem::BadName => anyhow::anyhow!("{key}: {problem}"),
                        _ => anyhow::anyhow!("{key}: the environment variable {name} {problem}"),
                    })?;
                let mut value = HeaderValue::from_str(&token.bearer())
                    .context("the token cannot travel in a header")?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent("millrace")
            .build()
            .new_agent();
        Ok(Live {
            agent,
            addr,
            authorization,
        })
    }

    /// `GET` (or `POST`, empty) `path`: the status and the body.
    fn call(&self, post: bool, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("http://{}{path}", self.addr);
        let reach = || format!("cannot reach the job's live view at {}", self.addr);
        let mut response = if post {
            let mut r = self.agent.post(&url);
            if let Some(a) = &self.authorization {
                r = r.header("Authorization", a.clone());
            }
            r.send_empty().with_context(reach)?
        } else {
            let mut r = self.agent.get(&url);
            if let Some(a) = &self.authorization {
                r = r.header("Authorization", a.clone());
            }
            r.call().with_context(reach)?
        };
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{}: cannot read the answer", self.addr))?;
        Ok((status, body))
    }
}

/// `millrace tap`: polls the job's `/tap/<step>` and prints new samples until `limit`.
pub fn tap(
    topology: &std::path::Path,
    step: &str,
    addr: Option<String>,
    limit: usize,
) -> anyhow::Result<()> {
    let plan = super::load(topology)?;
    let addr = addr.or(plan.topology.runtime.http_addr.clone()).context(
        "the topology has no `[runtime] http_addr` and no --addr was given: where is the job?",
    )?;
    if !crate::dataflow::tap::STEPS.contains(&step) {
        bail!(
            "no step `{step}` to tap; steps: {}",
            crate::dataflow::tap::STEPS.join(", ")
        );
    }
    let token_env = plan.topology.runtime.http_token_env.as_deref();
    let live = Live::new(
        &addr,
        token_env.map(|name| (name, "`[runtime] http_token_env`")),
    )?;
    let (mut after, mut shown) = (0u64, 0usize);
    let started = Instant::now();
    let mut pause = POLL_MIN;
    while shown < limit {
        let (status, body) = live.call(false, &format!("/tap/{step}?after={after}"))?;
        if status != 200 {
            bail!("{addr}: {}", body.trim());
        }
        let mut got = 0;
        for line in body.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).context("a tap line is not JSON")?;
            after = after.max(v["seq"].as_u64().unwrap_or(0));
            println!("{}", v["record"]);
            got += 1;
            shown += 1;
            if shown >= limit {
                break;
            }
        }
        if shown >= limit || started.elapsed() > TAP_FOR {
            break;
        }
        match got {
            0 => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(POLL_MAX);
            }
            n => {
                pause = POLL_MIN;
                if n < TAP_PAGE {
                    std::thread::sleep(POLL_MIN);
                }
            }
        }
    }
    Ok(())
}

/// `millrace models promote-challenger`: `POST /promote` to the job's live
/// view, with the token of the variable `token_env` names.
pub fn promote_challenger(addr: &str, token_env: Option<&str>) -> anyhow::Result<()> {
    let live = Live::new(addr, token_env.map(|name| (name, "--http-token-env")))?;
    let (status, body) = live.call(true, "/promote")?;
    let body = body.trim();
    anyhow::ensure!(status == 202, "{}: {status}: {body}", live.addr);
    println!("{body}");
    Ok(())
}

//! `http`: the live view of a running job, on `--http-addr` (or `[runtime]
//! http_addr`; a bare port means 127.0.0.1).
//!
//! | path | what | token |
//! |---|---|---|
//! | `/` | the report page, rendered from the lake (at most once a second, so it follows the committed epochs), refreshing itself every 10 s | no |
//! | `/metrics` | Prometheus text exposition of every `millrace_*` metric | no |
//! | `/healthz` | `ok` while the job runs, `503` with the fault once it has one | no |
//! | `/dataflow` | the topology's dataflow as a graph (SVG) and as text | no |
//! | `/tap/<step>?after=N` | sampled records leaving `clean`, `rejected` or `score`, as JSON lines (see `tap`) | when one is configured |
//! | `POST /promote` | promote the challenger at the next epoch (`millrace models promote-challenger`) | always: disabled (403) without one |
//!
//! **The token.** `[runtime] http_token_env` (or `millrace run
//! --http-token-env`) names the environment variable that holds it; the
//! token itself is never in the topology, the logs, the report or the lake.
//! Requests send `Authorization: Bearer <token>`; a missing or wrong one is
//! 401, compared in constant time ([`guard`]). `/tap` returns raw records, so
//! it needs the token when there is one; `/metrics` and `/healthz` stay open
//! for Prometheus and health checks.
//!
//! **The checks** ([`guard`]), on every request: the `Host` must be one of
//! the server's own names — the bound address, `localhost`, `127.0.0.1`,
//! `[::1]` (with the port) and `[runtime] http_allowed_hosts` — or the answer
//! is 421 (this stops DNS rebinding). `/tap` and `POST /promote` refuse (403)
//! a request whose `Origin` is not one of those hosts, even with the token.
//! No CORS header is ever sent. Binding a wildcard address (`0.0.0.0`, `::`)
//! works, with one warning in the log that the endpoints are reachable from
//! the network (and that a token should be set, when none is).
//!
//! **The limits.** hyper's HTTP/1.1 server on a tokio runtime of one thread
//! (plus one for rendering the report), on its own OS thread — never on the
//! timely workers, and a scrape never slows the dataflow. Connections are
//! served concurrently, at most [`MAX_CONNECTIONS`] at a time (more wait in
//! the kernel's queue); the request head must arrive within
//! [`HEADER_READ_TIMEOUT`] (idle and trickling clients are dropped then), a
//! request is answered within [`REQUEST_TIMEOUT`] (408 otherwise) and a
//! connection lives at most [`CONNECTION_LIFETIME`]; the head (request line
//! and headers) may be [`MAX_HEADER_BYTES`] long (431 beyond, without reading
//! the rest) and a body [`MAX_BODY_BYTES`] (413). One request per connection
//! (no keep-alive): a held connection costs a few kilobytes and nothing else.

mod guard;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};

use crate::core::fault::Fault;

pub use guard::{Token, TokenProblem, MIN_TOKEN_CHARS};

/// Connections served at once; the next ones wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 256;
/// The request line and headers must arrive within this, from the connection's start.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (the handler, the report's rendering included) is answered within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection is closed after this, whatever it is doing (a slow reader of a large page).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// The largest request body (`POST /promote` needs none).
pub const MAX_BODY_BYTES: usize = 1024;

/// What the server shows.
pub struct LiveView {
    /// The lake the report reads.
    pub lake: PathBuf,
    /// The pipeline's name.
    pub name: String,
    /// `validate`'s description of the dataflow.
    pub dataflow: String,
    /// The run's fault, for `/healthz`.
    pub fault: Fault,
    /// Sampled records per step, for `/tap/<step>`.
    pub taps: Arc<crate::dataflow::tap::Taps>,
    /// `POST /promote` sets it: the challenger is promoted at the next epoch (`None`: no challenger).
    pub promote: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The bearer token for `/tap` and `POST /promote` (`None`: `/tap` open, `POST /promote` disabled).
    pub token: Option<Token>,
    /// `[runtime] http_allowed_hosts`: more names the server answers to.
    pub allowed_hosts: Vec<String>,
}

/// Why the live view could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be listened on: malformed, not local, or in use (the user's).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server's runtime or thread could not start (the machine's: out of threads or descriptors).
    #[error("cannot start the live view's server: {0}")]
    Start(#[source] std::io::Error),
}

/// `addr` as an address to bind: a bare port is on 127.0.0.1.
fn bind_address(addr: &str) -> String {
    match addr.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => addr.to_string(),
    }
}

/// Binds `addr` and serves `view` on a thread of its own; returns the bound address.
pub fn serve(addr: &str, view: LiveView) -> Result<SocketAddr, HttpError> {
    let addr = bind_address(addr);
    let listener = std::net::TcpListener::bind(&addr).map_err(|source| HttpError::Bind {
        addr: addr.clone(),
        source,
    })?;
    listener.set_nonblocking(true).map_err(HttpError::Start)?;
    let bound = listener.local_addr().map_err(HttpError::Start)?;
    if bound.ip().is_unspecified() {
        if view.token.is_some() {
            tracing::warn!(addr = %bound, "The live view listens on every network interface: its endpoints are reachable from the network (/tap and POST /promote need the token; /, /dataflow, /metrics and /healthz do not). Requests must name an allowed host: add the machine's names to `[runtime] http_allowed_hosts`.");
        } else {
            tracing::warn!(addr = %bound, "The live view listens on every network interface: its endpoints, /tap's raw records included, are reachable from the network with no token. Set one with `[runtime] http_token_env` (or --http-token-env), or listen on 127.0.0.1; requests must name an allowed host: add the machine's names to `[runtime] http_allowed_hosts`.");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(1)
        .thread_name("millrace-http")
        .build()
        .map_err(HttpError::Start)?;
    let listener = {
        let _in = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(HttpError::Start)?
    };
    let hosts = guard::AllowedHosts::new(bound, &addr, &view.allowed_hosts);
    let app = routes::router(view, hosts);
    std::thread::Builder::new()
        .name("millrace-http".into())
        .spawn(move || runtime.block_on(accept(listener, app)))
        .map_err(HttpError::Start)?;
    Ok(bound)
}

/// Accepts connections and serves each on a task of its own.
async fn accept(listener: tokio::net::TcpListener, app: axum::Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                // Out of descriptors, most likely: do not spin.
                tracing::warn!(%error, "Cannot accept a live-view connection; retrying.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_header_size(MAX_HEADER_BYTES)
                .max_headers(MAX_HEADERS)
                .max_buf_size(4 * MAX_HEADER_BYTES)
                .keep_alive(false);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "A live-view connection ended early.")
                }
                Err(_) => {
                    tracing::debug!(%peer, "A live-view connection outlived its time; closed.")
                }
            }
        });
    }
}

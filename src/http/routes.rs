//! The live view's endpoints (see the module doc of [`crate::http`]) and the
//! layers around them: the host check on every request, the protected
//! endpoints' origin and token checks, the body limit and the request timeout.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::guard::{self, AllowedHosts, Refusal};
use super::LiveView;
use crate::svg::esc;

/// The report is rendered from the lake at most this often (concurrent requests share one rendering).
const REPORT_MAX_AGE: Duration = Duration::from_secs(1);

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// A rendered answer, shared between requests.
#[derive(Clone)]
struct Page {
    status: StatusCode,
    kind: &'static str,
    body: Bytes,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (self.status, [(CONTENT_TYPE, self.kind)], self.body).into_response()
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(CONTENT_TYPE, TEXT)], body.into()).into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut r = text(self.status, format!("{}\n", self.message));
        if unauthorized {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"millrace\""),
            );
        }
        r
    }
}

struct Shared {
    view: LiveView,
    hosts: AllowedHosts,
    /// `/dataflow` does not change while the job runs.
    dataflow: Page,
    /// The last rendering of the report, and when.
    report: Arc<tokio::sync::Mutex<Option<(Instant, Page)>>>,
}

/// The live view's routes and layers.
pub(super) fn router(view: LiveView, hosts: AllowedHosts) -> Router {
    let dataflow = Page {
        status: StatusCode::OK,
        kind: HTML,
        body: dataflow_page(&view).into(),
    };
    let shared = Arc::new(Shared {
        view,
        hosts,
        dataflow,
        report: Arc::default(),
    });
    Router::new()
        .route("/", get(report))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route(
            "/dataflow",
            get(|State(s): State<Arc<Shared>>| async move { s.dataflow.clone() }),
        )
        .route("/tap/{step}", get(tap))
        .route(
            "/promote",
            post(promote).fallback(|| async {
                text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "POST to promote the challenger\n",
                )
            }),
        )
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n") })
        .layer(RequestBodyLimitLayer::new(super::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), checks))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            super::REQUEST_TIMEOUT,
        ))
        .with_state(shared)
}

/// Every request: the host check; every answer: not cached, not sniffed.
async fn checks(State(s): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let mut response = match s.hosts.check_host(request.headers(), request.uri()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(
                status = refusal.status.as_u16(),
                "Refused a live-view request addressed to another host."
            );
            refusal.into_response()
        }
    };
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `/tap/*`: no foreign origin, and the token when there is one.
fn check_tap(s: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    s.hosts.check_origin(headers)?;
    match &s.view.token {
        Some(token) => guard::check_token(token, headers, "/tap"),
        None => Ok(()),
    }
}

/// `POST /promote`: no foreign origin, a token configured, and sent.
fn check_promote(s: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    s.hosts.check_origin(headers)?;
    let Some(token) = &s.view.token else {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: "POST /promote is disabled: this job has no token. Start it with `[runtime] http_token_env = \"NAME\"` (or `millrace run --http-token-env NAME`) and the token in that environment variable, then send `Authorization: Bearer <token>` (`millrace models promote-challenger --http-token-env NAME`).".into(),
        });
    };
    guard::check_token(token, headers, "POST /promote")
}

async fn promote(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = check_promote(&s, &headers) {
        tracing::info!(
            status = refusal.status.as_u16(),
            "Refused a request to promote the challenger."
        );
        return refusal.into_response();
    }
    match &s.view.promote {
        Some(flag) => {
            flag.store(true, Ordering::Relaxed);
            tracing::info!("Promotion of the challenger requested over HTTP.");
            text(
                StatusCode::ACCEPTED,
                "the challenger becomes the champion at the next epoch\n",
            )
        }
        None => text(StatusCode::CONFLICT, "this topology has no [challenger]\n"),
    }
}

#[derive(serde::Deserialize)]
struct TapQuery {
    #[serde(default)]
    after: u64,
}

async fn tap(
    State(s): State<Arc<Shared>>,
    Path(step): Path<String>,
    Query(q): Query<TapQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = check_tap(&s, &headers) {
        return refusal.into_response();
    }
    match s.view.taps.since(&step, q.after, 200) {
        Some(lines) => {
            let body: String = lines
                .iter()
                .map(|(n, l)| format!("{{\"seq\":{n},\"record\":{l}}}\n"))
                .collect();
            (
                StatusCode::OK,
                [(CONTENT_TYPE, "application/x-ndjson")],
                body,
            )
                .into_response()
        }
        None => text(
            StatusCode::NOT_FOUND,
            format!(
                "no step `{}` to tap; steps: {}\n",
                step.chars().take(64).collect::<String>(),
                crate::dataflow::tap::STEPS.join(", ")
            ),
        ),
    }
}

async fn metrics() -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::core::metrics::render(),
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    match s.view.fault.message() {
        None => text(StatusCode::OK, "ok\n"),
        Some(m) => text(StatusCode::SERVICE_UNAVAILABLE, format!("failed: {m}\n")),
    }
}

/// `/`: the report, rendered from the lake on the blocking thread. The lock
/// travels with the rendering, so a request that times out does not start a
/// second one: the next request waits for it and takes its result.
async fn report(State(s): State<Arc<Shared>>) -> Response {
    let mut last = s.report.clone().lock_owned().await;
    if let Some((at, page)) = last.as_ref() {
        if at.elapsed() < REPORT_MAX_AGE {
            return page.clone().into_response();
        }
    }
    let (lake, name) = (s.view.lake.clone(), s.view.name.clone());
    let rendered = tokio::task::spawn_blocking(move || {
        let page = match crate::report::load(&lake) {
            Ok(data) => {
                let html = crate::report::render(&data, &format!("millrace · {name} (live)"));
                let html = html.replacen(
                    "<head>",
                    "<head><meta http-equiv=\"refresh\" content=\"10\">",
                    1,
                );
                Page {
                    status: StatusCode::OK,
                    kind: HTML,
                    body: html.into(),
                }
            }
            Err(e) => Page {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: TEXT,
                body: format!("cannot read the lake: {e}\n").into(),
            },
        };
        *last = Some((Instant::now(), page.clone()));
        page
    })
    .await;
    match rendered {
        Ok(page) => page.into_response(),
        Err(e) => {
            tracing::error!(%e, "Rendering the live report failed.");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the report failed (a bug: see the job's log)\n",
            )
        }
    }
}

/// The dataflow as boxes and arrows, beside `validate`'s text.
fn dataflow_page(view: &LiveView) -> String {
    // The steps are the lines of the description that name one: `  name   what`.
    let steps: Vec<(String, String)> = view
        .dataflow
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| {
            let l = l.trim();
            let (name, rest) = l.split_once(char::is_whitespace)?;
            Some((name.to_string(), rest.trim().to_string()))
        })
        .collect();
    let (w, h) = (190.0, 44.0);
    let mut svg = format!(
        r##"<svg id="dataflow" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12"><title>dataflow of {}</title><defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>"##,
        w + 80.0,
        steps.len() as f64 * (h + 24.0) + 20.0,
        esc(&view.name)
    );
    for (i, (name, what)) in steps.iter().enumerate() {
        let y = 10.0 + i as f64 * (h + 24.0);
        svg.push_str(&format!(
            r##"<g class="step" data-step="{n}"><rect x="20" y="{y}" width="{w}" height="{h}" rx="6" fill="#E8F1FA" stroke="#0072B2"/><text x="30" y="{:.0}" font-weight="bold">{n}</text><text x="30" y="{:.0}" fill="#444">{}</text></g>"##,
            y + 18.0,
            y + 35.0,
            esc(&what.chars().take(28).collect::<String>()),
            n = esc(name)
        ));
        if i + 1 < steps.len() {
            svg.push_str(&format!(
                r##"<line x1="{x}" y1="{:.0}" x2="{x}" y2="{:.0}" stroke="#555" marker-end="url(#arrow)"/>"##,
                y + h,
                y + h + 22.0,
                x = 20.0 + w / 2.0
            ));
        }
    }
    svg.push_str("</svg>");
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>dataflow · {n}</title></head><body style="font-family:sans-serif"><h1>Dataflow of {n}</h1><div style="display:flex;gap:32px">{svg}<pre>{}</pre></div></body></html>"#,
        esc(&view.dataflow),
        n = esc(&view.name)
    )
}

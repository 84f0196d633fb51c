//! The HTTP API (axum).
//!
//! `POST /e/{event_key}` speaks Inngest's event format, so Inngest's own
//! clients can send events here; `/v1/...` manages apps, functions, events
//! and runs (and, with the admin key, tenants). Every error is JSON:
//! `{"error": "...", "status": N}`.
//! [`conn`] serves it, with the caps and timeouts that keep hostile clients
//! from exhausting the host.
//!
//! Readers see only what is durable: an answer about runs or events is held
//! until the journal has flushed what it shows ([`once_durable`]), so no
//! reader sees a state that a crash could take back (a run `waiting` that
//! restarts `running`). The one exception is in process:
//! [`Stepwise::subscribe_ended`] tells of a run's end before its flush,
//! since a replay after a crash ends the run the same way.

mod apps;
mod auth;
mod backup;
pub mod body_rate;
pub mod conn;
mod error;
pub mod forward;
mod query;
mod tenants;
pub mod throttle;
pub mod views;
mod work;

pub use auth::{Caller, KeyUse, MIN_KEY_CHARS, check_operator_key};
pub use error::ApiError;
pub(crate) use query::Query;

use crate::journal::RunFilter;
use crate::metrics::{LimitHit, Refusal};
use crate::model::{EventError, parse_events};
use crate::model::{KeyKind, RunKey, RunStatus};
use crate::runtime::{CancelError, SendError, Stepwise};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use throttle::AuthThrottle;
use views::{LogView, RunDetail, RunView, StepView};

/// Largest events request (up to 5,000 events of which each ≤ 512 KiB is
/// checked separately).
const MAX_EVENTS_BODY: usize = 16 * 1024 * 1024;

type Host = State<Arc<Stepwise>>;
type ApiResult<T> = Result<T, ApiError>;

/// The API's routes over a running host; wrong keys are counted by `auth`.
pub fn router(host: Arc<Stepwise>, auth: Arc<AuthThrottle>) -> Router {
    let component_limit = host.config.limits.max_component_bytes;
    let forwarding_secret = host.config.forwarding_secret.clone();
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/e/{event_key}", post(send_with_key))
        .route("/v1/events", get(list_events).post(send_event))
        .merge(apps::routes(component_limit))
        .route("/v1/functions", get(list_functions))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/cancel", post(cancel_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/backup", post(backup::backup))
        .merge(tenants::routes())
        .merge(work::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_EVENTS_BODY))
        .layer(axum::middleware::from_fn_with_state(
            host.clone(),
            refuse_while_stopping,
        ))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::Extension(auth))
        .with_state(host);
    match forwarding_secret {
        Some(secret) => routes.layer(axum::middleware::from_fn_with_state(
            Arc::new(secret),
            forward::trust_forwarded,
        )),
        None => routes,
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see the README for the API")
}

async fn health(State(host): Host) -> Json<Value> {
    let mut health = json!({
        "status": "ok",
        "active_runs": host.scheduler.active_runs(),
        "armed_timers": host.scheduler.armed_timers(),
    });
    // Among several hosts on one database: this one leads.
    if let Some(fence) = &host.config.fence {
        health["role"] = json!("leader");
        health["host_id"] = json!(fence.holder);
        health["epoch"] = json!(fence.epoch);
    }
    if let Some(workers) = &host.workers {
        health["executing_here"] = json!(workers.executing_here());
        health["workers"] = json!(workers.view());
    }
    Json(health)
}

/// Readiness (a load balancer's or Kubernetes' probe): 200 while the host
/// takes requests; 503, saying why, while it stops or its store cannot be
/// written. `/health` is liveness: it answers while the process runs.
async fn ready(State(host): Host) -> ApiResult<Json<Value>> {
    let mut reasons = Vec::new();
    if host.stopping() {
        reasons.push("the host is shutting down");
    }
    if !host.commit.writable() {
        reasons.push("the store cannot be written (its last flush failed; see the host's log)");
    }
    if reasons.is_empty() {
        return Ok(Json(json!({"status": "ready"})));
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}", reasons.join("; ")),
    )
    .retry_after(5))
}

/// While the host stops, requests are answered 503 (with `Retry-After`),
/// so that clients and load balancers go elsewhere or come back after the
/// restart; probes, metrics and other hosts' calls for the runs executing
/// on them are still answered.
async fn refuse_while_stopping(
    State(host): Host,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let exempt = matches!(path, "/health" | "/ready" | "/metrics") || path.starts_with("/cluster/");
    if host.stopping() && !exempt {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this host is shutting down: nothing of this request was taken; send it again in a few seconds (to another host, or to this one once it has restarted)",
        )
        .retry_after(5)
        .into_response();
    }
    next.run(request).await
}

/// The host's metrics in the Prometheus text format (see
/// [`crate::metrics`]).
async fn metrics(_: auth::Scraper, State(host): Host) -> axum::response::Response {
    metrics_text(&host)
}

/// `host`'s metrics as a response.
pub fn metrics_text(host: &Stepwise) -> axum::response::Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        host.metrics.render(),
    )
        .into_response()
}

/// A router with only `GET /metrics`, open to anyone who reaches it: for
/// `--metrics-listen`, an address the operator keeps private.
pub fn metrics_router(host: Arc<Stepwise>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(host): Host| async move { metrics_text(&host) }),
        )
        .fallback(|| async { ApiError::not_found("this address serves only GET /metrics") })
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(host)
}

/// The cause of a failed body read that says how the client failed: a body
/// too slow (`408`), if it was one.
fn too_slow(error: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(slow) = error.downcast_ref::<body_rate::BodyTooSlow>() {
            return Some(ApiError::new(StatusCode::REQUEST_TIMEOUT, slow.to_string()));
        }
        cause = error.source();
    }
    None
}

pub(crate) fn body(body: Result<Bytes, BytesRejection>, what: &str) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if let Some(slow) = too_slow(&rejection) {
            slow
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!("the {what} is too large: {}", rejection.body_text()),
            )
        } else {
            ApiError::new(
                status,
                format!("could not read the {what}: {}", rejection.body_text()),
            )
        }
    })
}

/// Counts a refused request sending events; returns its error.
fn refused(host: &Stepwise, reason: Refusal, error: ApiError) -> ApiError {
    host.metrics.event_request_refused(reason);
    error
}

async fn ingest(
    host: &Stepwise,
    tenant: &str,
    bytes: &[u8],
    headers: &axum::http::HeaderMap,
) -> ApiResult<Json<Value>> {
    let max_event_bytes = host.tenants.limits(tenant).max_event_bytes;
    let mut events = parse_events(bytes, max_event_bytes).map_err(|e| match e {
        EventError::TooLarge { .. } => refused(
            host,
            Refusal::size,
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        ),
        other => refused(
            host,
            Refusal::malformed,
            ApiError::bad_request(other.to_string()),
        ),
    })?;
    // A W3C trace context the sender is in: each event's span continues it.
    let trace = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    for event in &mut events {
        event.trace.clone_from(&trace);
    }
    let count = events.len();
    let accepted = host.send(tenant, events).await.map_err(|e| {
        let limit = match &e {
            SendError::TooFast { .. } | SendError::BatchOverRate { .. } => {
                Some((Refusal::rate, LimitHit::events_per_second))
            }
            SendError::QueueFull { .. } => Some((Refusal::queue, LimitHit::queued_runs)),
            SendError::StorageQuotaExceeded { .. } => Some((Refusal::quota, LimitHit::storage)),
            SendError::Internal(_) => None,
        };
        match limit {
            Some((reason, limit)) => {
                host.metrics.limit_hit(tenant, limit);
                host.metrics.event_request_refused(reason);
            }
            None => host.metrics.event_request_refused(Refusal::unavailable),
        }
        match e {
            SendError::TooFast { retry_after_ms, .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
                    .retry_after(retry_after_ms.div_ceil(1_000))
            }
            SendError::QueueFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).retry_after(1)
            }
            SendError::BatchOverRate { .. } => ApiError::bad_request(e.to_string()),
            SendError::StorageQuotaExceeded { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            SendError::Internal(error) => ApiError::internal(error),
        }
    })?;
    host.metrics.events_accepted(tenant, count);
    Ok(Json(json!({ "ids": accepted.ids, "status": 200 })))
}

/// Reads a request body of at most `limit` bytes, refusing a larger one by
/// its `Content-Length` before reading any of it.
async fn read_body(parts: &Parts, body: Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the {what} is too large: at most {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            if error.is::<http_body_util::LengthLimitError>() {
                Err(too_large())
            } else if let Some(slow) = too_slow(&*error) {
                Err(slow)
            } else {
                Err(ApiError::bad_request(format!(
                    "could not read the {what}: {error}"
                )))
            }
        }
    }
}

/// Inngest's event API: one event or an array, authorised by the tenant's
/// event key in the path. The key is checked before any of the body is
/// read, so that a client without one costs the host nothing.
async fn send_with_key(
    State(host): Host,
    Path(event_key): Path<String>,
    request: axum::extract::Request,
) -> ApiResult<Json<Value>> {
    let (parts, body) = request.into_parts();
    let gate = auth::Gate::of(&parts);
    gate.check().map_err(|e| refused(&host, Refusal::key, e))?;
    let tenant = match host.tenants.authenticate(&event_key) {
        Some(identity) if identity.kind == KeyKind::Event => identity.tenant,
        Some(_) => {
            return Err(refused(
                &host,
                Refusal::key,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "that is a management key; POST /e/{key} takes the tenant's event key (keep management keys out of apps)",
                ),
            ));
        }
        None => {
            return Err(refused(&host, Refusal::key, gate.failed(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "event key not found: send events to /e/{key} with the tenant's event key (the default tenant's is printed at start)",
            ))));
        }
    };
    let bytes = read_body(&parts, body, MAX_EVENTS_BODY, "event payload")
        .await
        .map_err(|e| {
            let reason = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Refusal::size
            } else {
                Refusal::malformed
            };
            refused(&host, reason, e)
        })?;
    ingest(&host, &tenant, &bytes, &parts.headers).await
}

/// The management API's way to send events (used by `stepwise send`).
async fn send_event(
    caller: Caller,
    State(host): Host,
    headers: axum::http::HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let bytes = body(bytes, "event payload").map_err(|e| {
        let reason = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::size
        } else {
            Refusal::malformed
        };
        refused(&host, reason, e)
    })?;
    ingest(&host, &caller.tenant, &bytes, &headers).await
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// `answer`, once every write it may show is on disk. It was read before
/// this call, so one group commit from now covers it; with nothing
/// unflushed since the last flush, it returns at once.
async fn once_durable<T>(host: &Stepwise, answer: T) -> ApiResult<T> {
    host.commit.settled().await?;
    Ok(answer)
}

async fn list_events(
    caller: Caller,
    State(host): Host,
    Query(query): Query<Limit>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1_000);
    let events = once_durable(&host, host.journal.list_events(&caller.tenant, limit)?).await?;
    Ok(Json(
        serde_json::to_value(events).map_err(anyhow::Error::from)?,
    ))
}

async fn list_functions(caller: Caller, State(host): Host) -> ApiResult<Json<Value>> {
    let functions = host.journal.functions(&caller.tenant)?;
    Ok(Json(
        serde_json::to_value(functions).map_err(anyhow::Error::from)?,
    ))
}

#[derive(Deserialize)]
struct RunsQuery {
    function: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(
    caller: Caller,
    State(host): Host,
    Query(query): Query<RunsQuery>,
) -> ApiResult<Json<Vec<RunView>>> {
    let status = match query.status.as_deref() {
        None => None,
        Some(word) => Some(RunStatus::parse(word).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status {word:?}; use queued, running, sleeping, waiting, completed, failed, cancelled or skipped"
            ))
        })?),
    };
    let filter = RunFilter {
        function: query.function,
        status,
        limit: query.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let runs = host.journal.list_runs(&caller.tenant, &filter)?;
    let runs = once_durable(&host, runs).await?;
    Ok(Json(runs.into_iter().map(RunView::from).collect()))
}

/// Run `id` of the caller's tenant: another tenant's run is "not found",
/// exactly like one that does not exist.
fn run_key(caller: &Caller, id: &str) -> ApiResult<RunKey> {
    if id.is_empty() || id.len() > 64 || id.contains('\0') {
        return Err(ApiError::not_found(format!("run {id:?} not found")));
    }
    Ok(RunKey::new(&caller.tenant, id))
}

async fn get_run(
    caller: Caller,
    State(host): Host,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let key = run_key(&caller, &id)?;
    let Some(run) = host.journal.run(&key)? else {
        return Err(ApiError::not_found(format!("run {id} not found")));
    };
    let events = host
        .journal
        .run_events(&key)?
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    let steps = host
        .journal
        .steps(&key)?
        .into_iter()
        .map(StepView::from)
        .collect();
    let logs = host
        .journal
        .logs(&key)?
        .into_iter()
        .map(LogView::from)
        .collect();
    let detail = RunDetail {
        run: run.into(),
        events,
        steps,
        logs,
    };
    Ok(Json(once_durable(&host, detail).await?))
}

async fn cancel_run(
    caller: Caller,
    State(host): Host,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let key = run_key(&caller, &id)?;
    match host.cancel(&key).await {
        Ok(run) => Ok(Json(run.into())),
        Err(CancelError::NotFound(id)) => Err(ApiError::not_found(format!("run {id} not found"))),
        Err(e @ CancelError::AlreadyEnded(..)) => {
            Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(CancelError::Internal(error)) => Err(ApiError::internal(error)),
    }
}

/// What `POST /v1/runs/cancel` cancels: the runs of one function (or of all)
/// created in a time range, as Inngest's bulk cancellation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkCancel {
    /// Only runs of this function.
    function: Option<String>,
    /// Created at or after this time, ms since the epoch (default: any).
    from: Option<u64>,
    /// Created at or before this time, ms since the epoch (default: now).
    until: Option<u64>,
}

async fn cancel_runs(
    caller: Caller,
    State(host): Host,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let bytes = body(bytes, "cancellation")?;
    let request: BulkCancel = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"function\": \"id\", \"from\": ms, \"until\": ms}} (all optional): {e}"
        ))
    })?;
    if let Some(function) = &request.function
        && host.catalog.get(&caller.tenant, function).is_none()
    {
        return Err(ApiError::not_found(format!(
            "function {function:?} not found"
        )));
    }
    let from = request.from.unwrap_or(0);
    let until = request.until.unwrap_or(u64::MAX);
    if from > until {
        return Err(ApiError::bad_request("\"from\" is after \"until\""));
    }
    let cancelled = host
        .cancel_many(&caller.tenant, request.function.as_deref(), from, until)
        .await?;
    Ok(Json(json!({ "cancelled": cancelled })))
}

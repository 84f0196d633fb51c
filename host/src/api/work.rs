//! The leader's side of worker hosts' requests (see [`crate::work`]):
//! only for requests that carry the hosts' shared secret.

use super::error::ApiError;
use super::forward::FromAHost;
use super::{ApiResult, Host};
use crate::work::Workers;
use crate::work::leader::SessionFenced;
use crate::work::wire::{self, Call, Claimed, Done, InSession, Join, Joined};
use axum::Router;
use axum::extract::{Extension, Json};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The routes, on a leader that shares work.
pub fn routes() -> Router<Arc<crate::runtime::Stepwise>> {
    Router::new()
        .route(wire::JOIN, post(join))
        .route(wire::CLAIM, post(claim))
        .route(wire::CALL, post(call))
        .route(wire::DONE, post(done))
        .route(wire::LEAVE, post(leave))
}

/// The leader's worker sessions, for a request from a host.
fn workers(
    host: &crate::runtime::Stepwise,
    from: Option<Extension<FromAHost>>,
) -> ApiResult<&Arc<Workers>> {
    if from.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this endpoint is for other Stepwise hosts on the same database: the request must carry their shared forwarding key",
        ));
    }
    host.workers
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this host does not share work with other hosts"))
}

/// A fenced session is `409`: the worker stops its executions and joins
/// again. Anything else failed on this host.
fn refused(error: anyhow::Error) -> ApiError {
    match error.downcast_ref::<SessionFenced>() {
        Some(fenced) => ApiError::new(StatusCode::CONFLICT, fenced.to_string()),
        None => ApiError::internal(error),
    }
}

async fn join(
    axum::extract::State(host): Host,
    from: Option<Extension<FromAHost>>,
    Json(join): Json<Join>,
) -> ApiResult<Json<Joined>> {
    Ok(Json(
        workers(&host, from)?.join(join.host_id, join.capacity),
    ))
}

async fn claim(
    axum::extract::State(host): Host,
    from: Option<Extension<FromAHost>>,
    Json(claim): Json<InSession>,
) -> ApiResult<Json<Claimed>> {
    let workers = workers(&host, from)?;
    let jobs = workers
        .claim(claim.session)
        .await
        .map_err(|fenced| refused(fenced.into()))?;
    // Read after the jobs: terms older than this are stale for them.
    let generation = workers.generation();
    Ok(Json(Claimed { jobs, generation }))
}

async fn call(
    axum::extract::State(host): Host,
    from: Option<Extension<FromAHost>>,
    Json(call): Json<Call>,
) -> ApiResult<Json<wire::Answer>> {
    let answer = workers(&host, from)?
        .call(call.session, call.ask)
        .await
        .map_err(refused)?;
    Ok(Json(answer))
}

async fn done(
    axum::extract::State(host): Host,
    from: Option<Extension<FromAHost>>,
    Json(done): Json<Done>,
) -> ApiResult<Json<Value>> {
    workers(&host, from)?
        .done(
            done.session,
            done.job,
            done.output,
            done.again_after_ms.map(Duration::from_millis),
        )
        .await
        .map_err(refused)?;
    Ok(Json(json!({})))
}

async fn leave(
    axum::extract::State(host): Host,
    from: Option<Extension<FromAHost>>,
    Json(leave): Json<InSession>,
) -> ApiResult<Json<Value>> {
    workers(&host, from)?
        .fence(leave.session, "a worker host left")
        .await;
    Ok(Json(json!({})))
}

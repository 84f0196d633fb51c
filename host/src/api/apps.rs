//! `/v1/apps`: deploy versions, list them, roll back, and replay recorded
//! runs against a candidate before deploying it.

use super::auth::Caller;
use super::{ApiError, ApiResult, Host, body};
use crate::runtime::DeployError;
use crate::runtime::versions::VersionError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes; uploads may be as large as `component_limit`.
pub fn routes(component_limit: usize) -> Router<Arc<crate::runtime::Stepwise>> {
    let upload = DefaultBodyLimit::max(component_limit + 1);
    Router::new()
        .route("/v1/apps", get(list_apps))
        .route("/v1/apps/{app}", put(deploy).layer(upload))
        .route("/v1/apps/{app}/versions", get(versions))
        .route("/v1/apps/{app}/rollback", post(rollback))
        .route("/v1/apps/{app}/replay", post(replay).layer(upload))
}

impl From<DeployError> for ApiError {
    fn from(error: DeployError) -> Self {
        match error {
            DeployError::Invalid(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
            DeployError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
            DeployError::NotFound(message) => ApiError::not_found(message),
            DeployError::Diverged(check) => {
                let message = format!(
                    "{} of the {} runs replayed diverge on this version, so it was not deployed; see `report` (or `stepwise replay`) for the first difference of each",
                    check.diverged,
                    check.runs.len()
                );
                ApiError::new(StatusCode::CONFLICT, message)
                    .with_detail("report", serde_json::to_value(check).unwrap_or(Value::Null))
            }
            DeployError::Internal(error) => ApiError::internal(error),
        }
    }
}

impl From<VersionError> for ApiError {
    fn from(error: VersionError) -> Self {
        match error {
            VersionError::NotFound(message) => ApiError::not_found(message),
            VersionError::Internal(error) => ApiError::internal(error),
        }
    }
}

#[derive(Deserialize)]
struct DeployQuery {
    /// Refuse the version if a replay of the app's runs diverges on it.
    #[serde(default)]
    check_replay: bool,
}

async fn deploy(
    caller: Caller,
    State(host): Host,
    Path(app): Path<String>,
    Query(query): Query<DeployQuery>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let bytes = body(bytes, "component")?;
    let deployed = if query.check_replay {
        host.deploy_checked(&caller.tenant, &app, bytes).await?
    } else {
        host.deploy(&caller.tenant, &app, bytes).await?
    };
    Ok(Json(
        serde_json::to_value(deployed).map_err(anyhow::Error::from)?,
    ))
}

async fn list_apps(caller: Caller, State(host): Host) -> ApiResult<Json<Value>> {
    let apps = host.journal.apps(&caller.tenant)?;
    Ok(Json(
        serde_json::to_value(apps).map_err(anyhow::Error::from)?,
    ))
}

async fn versions(
    caller: Caller,
    State(host): Host,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    let versions = host.versions(&caller.tenant, &app)?;
    Ok(Json(json!(versions)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: String,
}

async fn rollback(
    caller: Caller,
    State(host): Host,
    Path(app): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let bytes = body(bytes, "rollback")?;
    let request: Rollback = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"version\": \"<hash or a unique prefix>\"}}: {e}"
        ))
    })?;
    let deployed = host
        .rollback(&caller.tenant, &app, &request.version)
        .await?;
    Ok(Json(
        serde_json::to_value(deployed).map_err(anyhow::Error::from)?,
    ))
}

async fn replay(
    caller: Caller,
    State(host): Host,
    Path(app): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let bytes = body(bytes, "candidate component")?;
    if host.journal.app(&caller.tenant, &app)?.is_none() {
        return Err(ApiError::not_found(format!("app {app:?} not found")));
    }
    let check = host.check_replay(&caller.tenant, &app, bytes).await?;
    Ok(Json(
        serde_json::to_value(check).map_err(anyhow::Error::from)?,
    ))
}

//! `/v1/tenants`: the operator's API (admin key only). Keys are shown once,
//! when made; afterwards only their ids.

use super::auth::Admin;
use super::{ApiError, ApiResult, Host};
use crate::model::{KeyKind, TenantLimits, TenantRecord};
use crate::tenants::TenantError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes, mounted under `/v1/tenants`.
pub fn routes() -> Router<Arc<crate::runtime::Stepwise>> {
    Router::new()
        .route("/v1/tenants", get(list).post(create))
        .route("/v1/tenants/{name}", get(show))
        .route("/v1/tenants/{name}/keys", post(issue_key))
        .route("/v1/tenants/{name}/keys/{id}", delete(revoke_key))
        .route("/v1/tenants/{name}/limits", put(set_limits))
        .route("/v1/tenants/{name}/http-allow", put(set_http_allow))
}

impl From<TenantError> for ApiError {
    fn from(error: TenantError) -> Self {
        match error {
            TenantError::NotFound(_) => ApiError::not_found(error.to_string()),
            TenantError::Exists(_) => ApiError::new(StatusCode::CONFLICT, error.to_string()),
            TenantError::Invalid(_) => ApiError::bad_request(error.to_string()),
            TenantError::Internal(error) => ApiError::internal(error),
        }
    }
}

/// A tenant as the operator sees it: key ids, never keys or hashes; and
/// what it uses of its quotas now.
fn view(host: &crate::runtime::Stepwise, tenant: &TenantRecord) -> Value {
    let keys: Vec<Value> = tenant
        .keys
        .iter()
        .map(|k| json!({"id": k.id, "kind": k.kind, "created_at": k.created_at, "revoked_at": k.revoked_at}))
        .collect();
    json!({
        "name": tenant.name,
        "created_at": tenant.created_at,
        "keys": keys,
        "limits": tenant.limits,
        "http_allow": tenant.http_allow,
        "usage": {
            "storage_bytes": host.journal.usage().used(&tenant.name),
            "queued_runs": host.scheduler.queued_of(&tenant.name),
            "guest_memory_bytes": host.executor.memory_budget().used_by(&tenant.name),
        },
    })
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be {shape}: {e}")))
}

async fn durable(host: &crate::runtime::Stepwise) -> ApiResult<()> {
    host.commit.durable().await.map_err(ApiError::internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
}

async fn create(
    _: Admin,
    State(host): Host,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: Create = parse(&body, r#"{"name": "tenant-name"}"#)?;
    let made = host.tenants.create(&request.name)?;
    durable(&host).await?;
    Ok((StatusCode::CREATED, Json(json!(made))))
}

async fn list(_: Admin, State(host): Host) -> Json<Value> {
    Json(Value::Array(
        host.tenants
            .list()
            .iter()
            .map(|tenant| view(&host, tenant))
            .collect(),
    ))
}

async fn show(_: Admin, State(host): Host, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let tenant = host.tenants.get(&name).ok_or(TenantError::NotFound(name))?;
    Ok(Json(view(&host, &tenant)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Issue {
    kind: KeyKind,
    /// Revoke the tenant's other keys of this kind at once.
    #[serde(default)]
    rotate: bool,
}

async fn issue_key(
    _: Admin,
    State(host): Host,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: Issue = parse(
        &body,
        r#"{"kind": "management" or "event", "rotate": true or false}"#,
    )?;
    let (key, record) = host
        .tenants
        .issue_key(&name, request.kind, request.rotate)?;
    durable(&host).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"tenant": name, "id": record.id, "kind": record.kind, "key": key})),
    ))
}

async fn revoke_key(
    _: Admin,
    State(host): Host,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = host.tenants.revoke(&name, &id)?;
    durable(&host).await?;
    Ok(Json(view(&host, &tenant)))
}

async fn set_limits(
    _: Admin,
    State(host): Host,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let limits: TenantLimits = parse(
        &body,
        "an object of limits such as {\"memory_bytes\": 67108864, \"cpu_ms\": 2000}",
    )?;
    let tenant = host.tenants.set_limits(&name, limits)?;
    durable(&host).await?;
    Ok(Json(view(&host, &tenant)))
}

async fn set_http_allow(
    _: Admin,
    State(host): Host,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let hosts: Vec<String> = parse(&body, r#"a list of hosts such as ["api.example.com"]"#)?;
    let tenant = host.tenants.set_http_allow(&name, hosts)?;
    durable(&host).await?;
    Ok(Json(view(&host, &tenant)))
}

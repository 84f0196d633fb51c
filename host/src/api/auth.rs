//! Who is calling: a tenant (by its management key, or the default tenant in
//! dev mode) or the operator (by the admin key).

use super::ApiError;
use crate::model::{DEFAULT_TENANT, KeyKind};
use crate::runtime::Stepwise;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use std::sync::Arc;

/// The tenant a `/v1` call acts for.
pub struct Caller {
    /// Its name.
    pub tenant: String,
}

/// The operator, managing tenants.
pub struct Admin;

/// The key in `Authorization: Bearer KEY`, if any.
fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    match value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        Some(key) if !key.trim().is_empty() => Ok(Some(key.trim())),
        _ => Err(unauthorized(
            "the Authorization header must be `Bearer <key>`",
        )),
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

impl FromRequestParts<Arc<Stepwise>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        host: &Arc<Stepwise>,
    ) -> Result<Self, Self::Rejection> {
        match bearer(parts)? {
            Some(key) => match host.tenants.authenticate(key) {
                Some(identity) if identity.kind == KeyKind::Management => Ok(Caller {
                    tenant: identity.tenant,
                }),
                Some(_) => Err(unauthorized(
                    "that is an event key, which only sends events (POST /e/{key}); /v1 needs the tenant's management key",
                )),
                None if host.tenants.is_admin(key) => Err(unauthorized(
                    "the admin key manages tenants (/v1/tenants); to act as a tenant, use its management key",
                )),
                None => Err(unauthorized(
                    "the key is not valid: it is unknown or was revoked; use a management key from `stepwise tenant create` (or the one the host printed at start)",
                )),
            },
            None if host.config.require_keys => Err(unauthorized(
                "this host requires a management key: send `Authorization: Bearer <key>` (the CLI's --key or STEPWISE_KEY)",
            )),
            None => Ok(Caller {
                tenant: DEFAULT_TENANT.to_string(),
            }),
        }
    }
}

impl FromRequestParts<Arc<Stepwise>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        host: &Arc<Stepwise>,
    ) -> Result<Self, Self::Rejection> {
        if !host.tenants.admin_enabled() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant management is off on this host: start it with --admin-key (or STEPWISE_ADMIN_KEY)",
            ));
        }
        match bearer(parts)? {
            Some(key) if host.tenants.is_admin(key) => Ok(Admin),
            Some(_) => Err(unauthorized(
                "the key is not the admin key; managing tenants needs the key the host was started with (--admin-key)",
            )),
            None => Err(unauthorized(
                "managing tenants needs the admin key: send `Authorization: Bearer <admin key>` (the CLI's --admin-key or STEPWISE_ADMIN_KEY)",
            )),
        }
    }
}

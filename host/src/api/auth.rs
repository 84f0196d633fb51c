//! Who is calling: a tenant (by its management key, or the default tenant in
//! dev mode) or the operator (by the admin key); how strong the keys an
//! operator picks must be; and the throttle on wrong keys every check goes
//! through.

use super::ApiError;
use super::conn::ClientAddr;
use super::throttle::AuthThrottle;
use crate::model::{DEFAULT_TENANT, KeyKind};
use crate::runtime::Stepwise;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use std::sync::Arc;

/// The tenant a `/v1` call acts for.
pub struct Caller {
    /// The tenant's name: the key's owner, or the default tenant when the
    /// host does not require keys.
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
        let gate = Gate::of(parts);
        match bearer(parts)? {
            Some(key) => match gate.check().map(|()| host.tenants.authenticate(key))? {
                Some(identity) if identity.kind == KeyKind::Management => Ok(Caller {
                    tenant: identity.tenant,
                }),
                Some(_) => Err(unauthorized(
                    "that is an event key, which only sends events (POST /e/{key}); /v1 needs the tenant's management key",
                )),
                None if host.tenants.is_admin(key) => Err(unauthorized(
                    "the admin key manages tenants (/v1/tenants); to act as a tenant, use its management key",
                )),
                None => Err(gate.failed(unauthorized(
                    "the key is not valid: it is unknown or was revoked; use a management key from `stepwise tenant create` (or the one the host printed at start)",
                ))),
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
        let gate = Gate::of(parts);
        match bearer(parts)? {
            Some(key) if gate.check().map(|()| host.tenants.is_admin(key))? => Ok(Admin),
            Some(_) => Err(gate.failed(unauthorized(
                "the key is not the admin key; managing tenants needs the key the host was started with (--admin-key)",
            ))),
            None => Err(unauthorized(
                "managing tenants needs the admin key: send `Authorization: Bearer <admin key>` (the CLI's --admin-key or STEPWISE_ADMIN_KEY)",
            )),
        }
    }
}

/// The operator taking a backup, which writes files on the host's own
/// machine: with the admin key when the host has one; on a host without
/// one, only from that machine itself (a loopback address).
pub struct BackupTaker;

impl FromRequestParts<Arc<Stepwise>> for BackupTaker {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        host: &Arc<Stepwise>,
    ) -> Result<Self, Self::Rejection> {
        if host.tenants.admin_enabled() {
            return Admin::from_request_parts(parts, host)
                .await
                .map(|Admin| BackupTaker);
        }
        match parts.extensions.get::<ClientAddr>() {
            Some(ClientAddr(peer)) if !peer.ip().is_loopback() => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this host has no admin key, so backups are taken only from its own machine (run `stepwise backup` there, or start the host with --admin-key)",
            )),
            _ => Ok(BackupTaker),
        }
    }
}

/// Someone allowed to read the host's metrics: anyone when the host has no
/// admin key (a dev host), else only the operator.
pub struct Scraper;

impl FromRequestParts<Arc<Stepwise>> for Scraper {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        host: &Arc<Stepwise>,
    ) -> Result<Self, Self::Rejection> {
        if !host.tenants.admin_enabled() {
            return Ok(Scraper);
        }
        let gate = Gate::of(parts);
        match bearer(parts)? {
            Some(key) if gate.check().map(|()| host.tenants.is_admin(key))? => Ok(Scraper),
            Some(_) => Err(gate.failed(unauthorized(
                "the key is not the admin key; /metrics needs the key the host was started with (--admin-key), or scrape the --metrics-listen address instead",
            ))),
            None => Err(unauthorized(
                "/metrics needs the admin key on a host that has one: send `Authorization: Bearer <admin key>` (Prometheus: `authorization: {credentials: ...}`), or scrape the --metrics-listen address instead",
            )),
        }
    }
}

/// The throttle on wrong keys, as it applies to one request: every key
/// check asks it first and reports a wrong key to it.
pub(crate) struct Gate {
    throttle: Option<Arc<AuthThrottle>>,
    source: Option<std::net::IpAddr>,
}

impl Gate {
    /// The gate for the request with these parts (open when the request did
    /// not come through the connection layer, as in unit tests).
    pub(crate) fn of(parts: &Parts) -> Self {
        Gate {
            throttle: parts.extensions.get::<Arc<AuthThrottle>>().cloned(),
            source: parts.extensions.get::<ClientAddr>().map(|a| a.0.ip()),
        }
    }

    /// `429` if the request's source has had too many wrong keys lately.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        let (Some(throttle), Some(source)) = (&self.throttle, self.source) else {
            return Ok(());
        };
        throttle.check(source).map_err(|seconds| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many wrong keys from your address: try again in {seconds} s, with a valid key"
                ),
            )
            .retry_after(seconds)
        })
    }

    /// Counts a wrong key against the request's source; returns `error`.
    pub(crate) fn failed(&self, error: ApiError) -> ApiError {
        if let (Some(throttle), Some(source)) = (&self.throttle, self.source) {
            throttle.failed(source);
        }
        error
    }
}

/// Where a key an operator picks travels, which limits its characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// In an `Authorization` header (the admin key).
    Header,
    /// In a URL path too (`POST /e/{key}`: the event key).
    UrlPath,
}

/// Shortest key an operator may pick.
pub const MIN_KEY_CHARS: usize = 16;

/// Checks a key an operator picked (`--admin-key`, `--event-key`): keys
/// like `a` or `1` fall to the first guesses, so a host refuses to start
/// with one. Required: at least 16 characters, at least 8 of them
/// different, of at least 2 kinds (lowercase letters, uppercase letters,
/// digits, symbols), visible ASCII only (no spaces); a key in a URL path
/// also without `/`, `?`, `#` or `%`.
pub fn check_operator_key(flag: &str, key: &str, used: KeyUse) -> Result<(), String> {
    const HOW: &str = "e.g. `openssl rand -hex 32`";
    let chars = key.chars().count();
    if chars < MIN_KEY_CHARS {
        return Err(format!(
            "{flag} is too weak: it is {chars} character(s) long; at least {MIN_KEY_CHARS} are required ({HOW})"
        ));
    }
    if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{flag} may hold visible ASCII characters only (no spaces or control characters), not {bad:?} ({HOW})"
        ));
    }
    if used == KeyUse::UrlPath
        && let Some(bad) = key.chars().find(|c| "/?#%".contains(*c))
    {
        return Err(format!(
            "{flag} travels in URL paths (POST /e/{{key}}), so it may not contain '/', '?', '#' or '%' (found {bad:?}; {HOW})"
        ));
    }
    let distinct = key.chars().collect::<std::collections::HashSet<_>>().len();
    if distinct < 8 {
        return Err(format!(
            "{flag} is too weak: it has {distinct} different character(s); at least 8 are required ({HOW})"
        ));
    }
    let kinds = [
        key.chars().any(|c| c.is_ascii_lowercase()),
        key.chars().any(|c| c.is_ascii_uppercase()),
        key.chars().any(|c| c.is_ascii_digit()),
        key.chars().any(|c| c.is_ascii_punctuation()),
    ]
    .into_iter()
    .filter(|&k| k)
    .count();
    if kinds < 2 {
        return Err(format!(
            "{flag} is too weak: it uses one kind of character only; mix at least 2 of lowercase letters, uppercase letters, digits and symbols ({HOW})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_operator_keys_are_refused_with_what_is_required() {
        for weak in [
            "a",
            "1",
            "operator-secret",
            "aaaaaaaaaaaaaaaaaaaa",
            "abababababababab12",
        ] {
            let error = check_operator_key("--admin-key", weak, KeyUse::Header).unwrap_err();
            assert!(error.contains("--admin-key is too weak"), "{weak}: {error}");
        }
        let error = check_operator_key("--event-key", "abcdefghijklmnopqrstuvwxyz", KeyUse::Header)
            .unwrap_err();
        assert!(error.contains("one kind"), "{error}");
        let error = check_operator_key("--event-key", "k3y/with/slashes-0123", KeyUse::UrlPath)
            .unwrap_err();
        assert!(error.contains("'/'"), "{error}");
        assert!(check_operator_key("--admin-key", "has a space 0123456", KeyUse::Header).is_err());
        for strong in [
            "0f3a9c2e7b1d4a6f8e0c2b4d6f8a1c3e",
            "operator-secret-2024",
            "swe_5d41402abc4b2a76b9719d911017c592",
        ] {
            check_operator_key("--event-key", strong, KeyUse::UrlPath).unwrap();
        }
    }
}

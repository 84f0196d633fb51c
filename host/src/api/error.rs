//! API errors: a status and a message that says what was wrong and what to
//! do; internal details are logged, not sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered as `{"error": "...", "status": N}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
    detail: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_s: None,
            detail: None,
        }
    }

    /// Adds a field to the error's JSON (e.g. the report that explains it).
    pub fn with_detail(mut self, field: &'static str, value: serde_json::Value) -> Self {
        self.detail = Some((field, value));
        self
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Tells the client when to try again (a `Retry-After` header).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such thing in this tenant.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: logged in full, answered in general terms; 503 when the
    /// journal's database is out of reach for now (the client may retry).
    pub fn internal(error: anyhow::Error) -> Self {
        if crate::journal::postgres::is_unreachable(&error) {
            tracing::warn!(
                error = format!("{error:#}"),
                "request failed: the database is out of reach"
            );
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the host cannot reach its database right now (it may be restarting); retry in a moment (an event sent again with the same id is not taken twice)",
            )
            .retry_after(1);
        }
        tracing::error!(error = format!("{error:#}"), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the host failed to handle the request; see its log",
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError::internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "status": self.status.as_u16() });
        if let Some((field, value)) = self.detail {
            body[field] = value;
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

/// Answers every error in the JSON shape: axum's own rejections (a bad
/// path parameter, a method not allowed, ...) are plain text or empty, so
/// they are rewritten here, keeping their status and headers.
pub(crate) async fn json_errors(response: Response) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json") {
        return response;
    }
    if !(content_type.is_empty() || content_type.starts_with("text/plain")) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase()
    } else {
        text
    };
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        match parts.headers.get(axum::http::header::ALLOW) {
            Some(allow) => format!(
                "{message}: this endpoint takes {}",
                allow.to_str().unwrap_or_default()
            ),
            None => message,
        }
    } else {
        message
    };
    let json = ApiError::new(status, message).into_response();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(CONTENT_TYPE);
    let (json_parts, json_body) = json.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

//! The API of a standby host: every request goes to the leading host, and
//! its answer comes back as it was (see [`crate::cluster`]). Once this host
//! leads, its own router answers instead; while it starts to (between
//! winning the lease and having read the journal), requests wait for it.
//!
//! Forwarding keeps one truth: keys, limits, runs and long polls are the
//! leader's, so an answer is the same whichever host was asked.

use super::conn::ClientAddr;
use super::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// The header naming the client a forwarded request came from: the
/// leader counts the request against that client (its wrong keys, say),
/// not against the standby that forwarded it, when the request also
/// carries the hosts' forwarding secret.
pub const FORWARDED_FOR: &str = "x-stepwise-forwarded-for";

/// The header carrying the forwarding secret, which only hosts on the
/// database know (see [`crate::cluster`]).
pub const FORWARDING_KEY: &str = "x-stepwise-forwarding-key";

/// How long a request waits for this host to finish starting to lead.
const STARTING_PATIENCE: Duration = Duration::from_secs(60);

/// How long a request waits for another leader when the one it was sent
/// to cannot be reached: longer than a lease, so that a leader's death is
/// ridden out.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(30);

/// Who answers a request to this host.
#[derive(Clone)]
pub enum Role {
    /// The host leading at this URL: forward to it.
    Forward(String),
    /// This host won the lease and is starting: wait.
    Starting,
    /// This host leads: its own router answers.
    Lead(Router),
}

/// What a standby's router needs.
struct Forwarding {
    role: watch::Receiver<Role>,
    /// This host's id (for `/health`).
    host_id: String,
    /// Proves to the leader that a request comes from a host.
    secret: String,
    http: reqwest::Client,
    /// The largest request body forwarded (an upload's limit).
    body_limit: usize,
    /// What this host executes for the leader.
    work: Arc<crate::work::WorkerStats>,
}

/// A router that answers as `role` says at the time of each request;
/// requests it forwards carry `secret`.
pub fn router(
    role: watch::Receiver<Role>,
    host_id: String,
    secret: String,
    body_limit: usize,
    work: Arc<crate::work::WorkerStats>,
) -> Router {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        // The leader's answer is the answer: its redirects are the client's.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client with a connect timeout and no redirects builds");
    let forwarding = Arc::new(Forwarding {
        role,
        host_id,
        secret,
        http,
        body_limit,
        work,
    });
    Router::new().fallback(answer).with_state(forwarding)
}

async fn answer(State(forwarding): State<Arc<Forwarding>>, request: Request) -> Response {
    let mut role = forwarding.role.clone();
    let leader = match settled(&mut role).await {
        Ok(Role::Lead(router)) => return lead(router, request).await,
        Ok(Role::Forward(leader)) => leader,
        Ok(Role::Starting) | Err(()) => return not_ready(),
    };
    if request.uri().path() == "/ready" {
        // Ready to take requests: it forwards them to the leader.
        return axum::Json(
            serde_json::json!({"status": "ready", "role": "standby", "leader": leader}),
        )
        .into_response();
    }
    if request.uri().path() == "/health" {
        // A standby is healthy when it can forward: it answers for itself.
        return axum::Json(serde_json::json!({
            "status": "ok",
            "role": "standby",
            "host_id": forwarding.host_id,
            "leader": leader,
            "executing": forwarding.work.executing.load(Ordering::Relaxed),
            "executed": forwarding.work.executed.load(Ordering::Relaxed),
        }))
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, forwarding.body_limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request's body is over {} bytes, or was cut off",
                forwarding.body_limit
            ),
        )
        .into_response();
    };
    let client = parts.extensions.get::<ClientAddr>().copied();
    // A leader that cannot be reached may have died: once another host
    // leads (this one, perhaps), the request goes there instead. It was
    // never received, so sending it again repeats nothing.
    let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
    let mut leader = leader;
    loop {
        match forward(&forwarding, &leader, &parts, client, body.clone()).await {
            Ok(response) => return response,
            Err(Failed::Answer(error)) => return error.into_response(),
            Err(Failed::Unreachable(error)) => {
                let changed = tokio::time::timeout_at(deadline, role.changed()).await;
                if !matches!(changed, Ok(Ok(()))) {
                    return unreachable_leader(&leader, &error).into_response();
                }
                match settled(&mut role).await {
                    Ok(Role::Forward(next)) => leader = next,
                    Ok(Role::Lead(router)) => {
                        let mut request = Request::new(Body::from(body));
                        *request.method_mut() = parts.method.clone();
                        *request.uri_mut() = parts.uri.clone();
                        *request.headers_mut() = parts.headers.clone();
                        if let Some(client) = client {
                            request.extensions_mut().insert(client);
                        }
                        return lead(router, request).await;
                    }
                    Ok(Role::Starting) | Err(()) => return not_ready(),
                }
            }
        }
    }
}

/// The role once this host is not starting to lead (waiting for that up to
/// [`STARTING_PATIENCE`]).
async fn settled(role: &mut watch::Receiver<Role>) -> Result<Role, ()> {
    tokio::time::timeout(
        STARTING_PATIENCE,
        role.wait_for(|role| !matches!(role, Role::Starting)),
    )
    .await
    .map_err(|_| ())?
    .map(|role| role.clone())
    .map_err(|_| ())
}

async fn lead(mut router: Router, request: Request) -> Response {
    match tower_service::Service::call(&mut router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn not_ready() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "this host is taking over as the leader and is not ready yet; retry in a moment",
    )
    .retry_after(1)
    .into_response()
}

fn unreachable_leader(leader: &str, error: &reqwest::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!(
            "this host stands by and forwards to the leading host at {leader}, which could not be reached ({error}); retry: if it stopped, another host takes over within the lease's time"
        ),
    )
    .retry_after(1)
}

/// Why a forwarded request got no answer.
enum Failed {
    /// The leader could not be reached: the request was not sent.
    Unreachable(reqwest::Error),
    /// Anything else, answered as it is.
    Answer(ApiError),
}

async fn forward(
    forwarding: &Forwarding,
    leader: &str,
    parts: &axum::http::request::Parts,
    client: Option<ClientAddr>,
    body: axum::body::Bytes,
) -> Result<Response, Failed> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut outgoing = forwarding
        .http
        .request(parts.method.clone(), format!("{leader}{path}"))
        .headers(end_to_end(&parts.headers))
        .body(body);
    if let Some(ClientAddr(peer)) = client {
        outgoing = outgoing
            .header(FORWARDED_FOR, peer.ip().to_string())
            .header(FORWARDING_KEY, &forwarding.secret);
    }
    let answered = outgoing.send().await.map_err(|error| match error.is_connect() {
        true => Failed::Unreachable(error),
        false => Failed::Answer(
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the leading host at {leader} did not answer ({error}); the request may or may not have been taken: retry (an event sent again with the same id is not taken twice)"
                ),
            )
            .retry_after(1),
        ),
    })?;
    let status = answered.status();
    let headers = end_to_end(answered.headers());
    let body = answered.bytes().await.map_err(|error| {
        Failed::Answer(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the leading host at {leader} broke off its answer ({error}); retry"),
        ))
    })?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// `headers` without those that belong to one connection (RFC 9110
/// 7.6.1), and without the length and host, which the next hop sets.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::HOST,
        header::CONTENT_LENGTH,
    ];
    let mut kept = headers.clone();
    for name in HOP_BY_HOP {
        kept.remove(name);
    }
    kept.remove("keep-alive");
    kept.remove("proxy-connection");
    // A client's own claim of where it is from is never passed on.
    kept.remove(FORWARDED_FOR);
    kept.remove(FORWARDING_KEY);
    kept
}

/// The leader's side: a request that carries the hosts' forwarding secret
/// counts as coming from the client the standby names; any other claim of
/// a source is dropped.
pub async fn trust_forwarded(
    State(secret): State<Arc<String>>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers_mut();
    let key = headers.remove(FORWARDING_KEY);
    let claimed = headers.remove(FORWARDED_FOR);
    let from_a_host = key.is_some_and(|key| same_secret(key.as_bytes(), secret.as_bytes()));
    let client = claimed
        .and_then(|value| value.to_str().ok()?.parse::<std::net::IpAddr>().ok())
        .filter(|_| from_a_host);
    if from_a_host {
        request.extensions_mut().insert(FromAHost);
    }
    if let Some(ip) = client {
        request
            .extensions_mut()
            .insert(ClientAddr(std::net::SocketAddr::new(ip, 0)));
    }
    next.run(request).await
}

/// Marks a request that proved it comes from another host on the same
/// database: worker hosts' requests (see [`crate::work`]) are only taken
/// from those.
#[derive(Debug, Clone, Copy)]
pub struct FromAHost;

/// Compares digests, so that the time taken says nothing of the secret.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(given) == Sha256::digest(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_and_a_clients_claim_of_its_source_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "close".parse().unwrap());
        headers.insert(header::HOST, "a:1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(FORWARDED_FOR, "10.0.0.1".parse().unwrap());
        headers.insert(FORWARDING_KEY, "guess".parse().unwrap());
        let kept = end_to_end(&headers);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[header::AUTHORIZATION], "Bearer k");
        assert_eq!(kept[header::CONTENT_TYPE], "application/json");
    }
}

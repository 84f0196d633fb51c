//! Tenants and keys: every `/v1` call and every event is scoped to its
//! tenant, keys can be rotated and revoked, and the operator manages
//! tenants with the admin key, from the CLI too.

use crate::{PATIENCE, STEPWISE, start_host_with, start_script};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::process::Command;
use stepwise_tests::{Api, HostOptions, HostProcess, guests};

pub const ADMIN: &str = "operator-secret-2024";

pub fn admin_host(extra: &[&str]) -> (tempfile::TempDir, HostProcess) {
    let mut extra_args = vec!["--admin-key".to_string(), ADMIN.to_string()];
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    start_host_with(HostOptions {
        extra_args,
        ..HostOptions::default()
    })
}

/// `stepwise tenant create NAME --json` against `host`; the tenant's API.
pub fn create_tenant(host: &HostProcess, name: &str) -> Api {
    let output = Command::new(STEPWISE)
        .args(["tenant", "create", name, "--json"])
        .env("STEPWISE_SERVER", &host.url)
        .env("STEPWISE_ADMIN_KEY", ADMIN)
        .output()
        .expect("running the CLI");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let made: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(made["tenant"], name);
    let management = made["management_key"].as_str().unwrap();
    let event = made["event_key"].as_str().unwrap();
    assert!(
        management.starts_with("swm_") && event.starts_with("swe_"),
        "{made}"
    );
    host.as_tenant(management, event)
}

pub async fn status(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = api.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_sees_nothing_of_another_on_any_endpoint() {
    let (_dir, host) = admin_host(&[]);
    let acme = create_tenant(&host, "acme");
    let globex = create_tenant(&host, "globex");
    acme.deploy("probe", guests::PROBE).await.unwrap();
    let run = start_script(
        &acme,
        json!({"ops": [{"local": "a"}, {"sleep": {"id": "nap", "duration": "10m"}}]}),
    )
    .await;
    acme.wait_status(&run, "sleeping", PATIENCE).await.unwrap();

    // Everything of acme's is invisible to globex: empty lists, and 404 (not
    // 403) for its run, as for a run that does not exist.
    for path in ["/v1/apps", "/v1/functions", "/v1/runs", "/v1/events"] {
        let (code, body) = status(&globex, Method::GET, path, None).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        assert_eq!(body, json!([]), "{path} of globex: {body}");
        let (_, mine) = status(&acme, Method::GET, path, None).await;
        assert_ne!(mine, json!([]), "{path} of acme");
    }
    for (method, path, body) in [
        (Method::GET, format!("/v1/runs/{run}"), None),
        (Method::POST, format!("/v1/runs/{run}/cancel"), None),
        (
            Method::POST,
            "/v1/runs/cancel".to_string(),
            Some(json!({"function": "script"})),
        ),
        (Method::GET, "/v1/apps/probe/versions".to_string(), None),
        (
            Method::POST,
            "/v1/apps/probe/rollback".to_string(),
            Some(json!({"version": "0"})),
        ),
    ] {
        let (code, answer) = status(&globex, method, &path, body).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    let replay = globex
        .request(Method::POST, "/v1/apps/probe/replay")
        .body(std::fs::read(guests::PROBE).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        replay.status(),
        StatusCode::NOT_FOUND,
        "acme's app is not globex's to replay"
    );
    // globex's events start nothing of acme's, and acme's run is untouched.
    globex
        .send("probe/script", json!({"ops": []}))
        .await
        .unwrap();
    assert_eq!(
        status(&globex, Method::GET, "/v1/runs", None).await.1,
        json!([])
    );
    assert_eq!(acme.run(&run).await.unwrap().run.status, "sleeping");
    // Function ids are per tenant: globex may deploy the same app.
    globex.deploy("probe", guests::PROBE).await.unwrap();
    // The default tenant is a tenant like the others.
    assert_eq!(
        status(&host, Method::GET, "/v1/runs", None).await.1,
        json!([])
    );
    let (code, _) = status(&host, Method::GET, &format!("/v1/runs/{run}"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_checked_rotated_and_revoked_and_the_operator_alone_manages_tenants() {
    let (_dir, host) = admin_host(&["--require-keys"]);
    let acme = create_tenant(&host, "acme");

    // --require-keys: no key, no /v1; a wrong or misplaced key says why.
    let (code, body) = status(&host, Method::GET, "/v1/runs", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("requires a management key"),
        "{body}"
    );
    let as_event_key = host.as_tenant(&acme.event_key, &acme.event_key);
    let (code, body) = status(&as_event_key, Method::GET, "/v1/runs", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"].as_str().unwrap().contains("event key"),
        "{body}"
    );
    let management_on_e = host.as_tenant("x", acme.key.as_deref().unwrap());
    let (code, _) = status(
        &management_on_e,
        Method::POST,
        &format!("/e/{}", acme.key.as_deref().unwrap()),
        Some(json!({"name": "a/b"})),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        host.management_key.is_empty() && host.event_key.is_empty(),
        "--require-keys: no default tenant, no default keys"
    );

    // Only the admin key manages tenants.
    let (code, _) = status(&acme, Method::GET, "/v1/tenants", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let admin = host.as_tenant(ADMIN, "");
    let (code, tenants) = status(&admin, Method::GET, "/v1/tenants", None).await;
    assert_eq!(code, StatusCode::OK);
    let listed = tenants.to_string();
    assert!(listed.contains("acme") && !listed.contains("default"));
    assert!(
        !listed.contains(acme.key.as_deref().unwrap()),
        "keys are never shown again"
    );
    let (code, _) = status(
        &admin,
        Method::POST,
        "/v1/tenants",
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);

    // Rotation: the new key works at once, the old one no more.
    let (code, issued) = status(
        &admin,
        Method::POST,
        "/v1/tenants/acme/keys",
        Some(json!({"kind": "management", "rotate": true})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{issued}");
    let rotated = host.as_tenant(issued["key"].as_str().unwrap(), &acme.event_key);
    assert_eq!(
        status(&rotated, Method::GET, "/v1/runs", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(&acme, Method::GET, "/v1/runs", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Revocation of the event key: its events are refused, with a reason.
    let event_key_id = tenants
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "event")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rotated.send("a/b", json!({})).await.is_ok());
    let (code, _) = status(
        &admin,
        Method::DELETE,
        &format!("/v1/tenants/acme/keys/{event_key_id}"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let refused = rotated
        .send("a/b", json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("401") && refused.contains("event key not found"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_limits_refuse_too_many_events_and_oversized_uploads_clearly() {
    let (_dir, host) = admin_host(&[]);
    let acme = create_tenant(&host, "acme");
    let admin = host.as_tenant(ADMIN, "");
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/acme/limits",
        Some(json!({"events_per_second": 5, "component_bytes": 1000})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/acme/limits",
        Some(json!({"cpu_millis": 5})),
    )
    .await;
    assert_eq!(
        code,
        StatusCode::BAD_REQUEST,
        "unknown limits are refused: {body}"
    );

    // A batch that could never fit in a second is a mistake, not a rate:
    // 400, saying how big a batch may be.
    let events: Vec<Value> = (0..6)
        .map(|i| json!({"name": "a/b", "data": {"i": i}}))
        .collect();
    let response = acme
        .request(Method::POST, &format!("/e/{}", acme.event_key))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("send batches of at most 5"),
        "{body}"
    );
    // Batches that fit, sent faster than five a second, are told when to
    // come back.
    let mut sent = 0;
    let response = loop {
        let response = acme
            .request(Method::POST, &format!("/e/{}", acme.event_key))
            .json(&events[..3])
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            break response;
        }
        sent += 1;
        assert!(sent < 10, "thirty events in a moment, none refused");
    };
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("5 events per second"),
        "{body}"
    );
    let stored = status(&acme, Method::GET, "/v1/events", None).await.1;
    assert!(
        stored.as_array().unwrap().len() % 3 == 0,
        "refused requests stored none of their events: {stored}"
    );
    // Another tenant is not limited by acme's limits.
    let other = create_tenant(&host, "other");
    other.send_batch(events).await.unwrap();

    let refused = acme
        .deploy("probe", guests::PROBE)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("422") && refused.contains("at most 1000"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_executing_queued_event_and_journal_limits_hold() {
    let (_dir, host) = admin_host(&[]);
    let small = create_tenant(&host, "small");
    let admin = host.as_tenant(ADMIN, "");
    let limits = json!({"executing": 1, "queued_runs": 2, "event_bytes": 4000, "journal_bytes_per_run": 2000});
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/small/limits",
        Some(limits),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let allow = json!(["127.0.0.1"]);
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/small/http-allow",
        Some(allow),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    small.deploy("flow", guests::FLOW).await.unwrap();
    small.deploy("probe", guests::PROBE).await.unwrap();

    // One run executes at a time (the function alone would allow two);
    // two more may wait; the next event is refused until they start.
    let loopback = stepwise_tests::Loopback::start().await.unwrap();
    loopback.plan("a", stepwise_tests::Plan::Hold);
    let data = json!({"url": loopback.url});
    let first = small.send("flow/limited", data.clone()).await.unwrap();
    let first = small.run_for_event(&first).await.unwrap();
    assert!(loopback.wait_hits(&first, "a", 1, PATIENCE).await);
    small.send("flow/limited", data.clone()).await.unwrap();
    small.send("flow/limited", data.clone()).await.unwrap();
    let refused = small
        .send("flow/limited", data.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("429") && refused.contains("runs waiting"),
        "{refused}"
    );
    loopback.release();
    small
        .wait_runs("limited", PATIENCE, |runs| {
            runs.len() == 3 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(
        loopback.max_in_flight(),
        1,
        "one step body at a time for this tenant"
    );

    // Events over the tenant's size are refused whole.
    let big = small
        .send("a/b", json!({"text": "x".repeat(5000)}))
        .await
        .unwrap_err()
        .to_string();
    assert!(big.contains("413") && big.contains("at most 4000"), "{big}");

    // Step outputs past the tenant's journal size fail the run, naming it.
    let long = "y".repeat(900);
    let run = start_script(
        &small,
        json!({"ops": [{"local": long}, {"local": long}, {"local": long}]}),
    )
    .await;
    let failed = small.wait_status(&run, "failed", PATIENCE).await.unwrap();
    assert_eq!(
        crate::error(&failed.run).name,
        "JournalLimitError",
        "{failed:#?}"
    );
    assert_eq!(failed.steps.len(), 2, "the third output was not journaled");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_sent_by_steps_count_against_the_tenants_rate_and_wait_for_room() {
    let (_dir, host) = admin_host(&[]);
    let chatty = create_tenant(&host, "chatty");
    let admin = host.as_tenant(ADMIN, "");
    let limits = json!({"events_per_second": 2});
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/chatty/limits",
        Some(limits),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    chatty.deploy("flow", guests::FLOW).await.unwrap();
    // The event itself takes one of the two per second; the run's step sends
    // two more, which must wait until both fit (half a second here).
    let event = chatty.send("flow/send", json!({"n": 1})).await.unwrap();
    let run = chatty.run_for_event(&event).await.unwrap();
    let done = chatty
        .wait_status(&run, "completed", PATIENCE)
        .await
        .unwrap();
    let announce = &done.steps[0];
    assert_eq!(announce.id, "announce");
    assert_eq!(announce.attempts, 1, "waiting for room uses no attempt");
    let waited = announce.ended_at.unwrap() - done.run.created_at;
    assert!(
        waited >= 300,
        "the send waited for the tenant's rate ({waited} ms): {done:#?}"
    );
    chatty
        .wait_runs("received", PATIENCE, |runs| {
            runs.len() == 2 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
}

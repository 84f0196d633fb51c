//! Tenants share the host's executing slots: one tenant flooding steps that
//! block cannot hold back another's runs, and a step that waits too long
//! is stopped by the step timeout and retried.

use crate::PATIENCE;
use crate::tenants::{ADMIN, admin_host, create_tenant, status};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use stepwise_tests::{Api, HostProcess, Loopback, Plan, guests};

/// Lets `tenant`'s step bodies call `loopback` (its exact address: loopback
/// addresses are never reachable through `*`).
pub async fn allow_loopback(admin: &Api, tenant: &str, loopback: &Loopback) {
    let address = loopback.url.trim_start_matches("http://");
    let (code, body) = status(
        admin,
        Method::PUT,
        &format!("/v1/tenants/{tenant}/http-allow"),
        Some(json!([address])),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// Waits until `loopback` has `n` calls in flight.
pub async fn wait_in_flight(loopback: &Loopback, n: u32) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    while loopback.in_flight() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} calls arrived",
            loopback.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A host (with `extra` arguments) where two tenants run the probe app:
/// `hog`, whose step bodies may call `loopback`, and `neighbour`.
pub struct Neighbours {
    /// Keeps the host's data directory.
    pub _dir: tempfile::TempDir,
    /// The host.
    pub host: HostProcess,
    /// The operator.
    pub admin: Api,
    /// The tenant that attacks.
    pub hog: Api,
    /// The tenant that must not notice.
    pub neighbour: Api,
    /// What the hog's steps call.
    pub loopback: Loopback,
}

impl Neighbours {
    /// Starts the host and sets the tenants up.
    pub async fn start(extra: &[&str]) -> Neighbours {
        let (_dir, host) = admin_host(extra);
        let admin = host.as_tenant(ADMIN, "");
        let hog = create_tenant(&host, "hog");
        let neighbour = create_tenant(&host, "neighbour");
        let loopback = Loopback::start().await.unwrap();
        allow_loopback(&admin, "hog", &loopback).await;
        hog.deploy("probe", guests::PROBE).await.unwrap();
        neighbour.deploy("probe", guests::PROBE).await.unwrap();
        Neighbours {
            _dir,
            host,
            admin,
            hog,
            neighbour,
            loopback,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_flooding_blocking_steps_does_not_hold_back_another_tenants_runs() {
    // Every field is bound: one left to `..` would be dropped at once
    // (the host with it).
    let Neighbours {
        _dir,
        host: _host,
        admin: _admin,
        hog,
        neighbour,
        loopback,
    } = Neighbours::start(&[]).await;

    // 300 runs whose one step blocks until the test lets it go: more than
    // the host's 256 slots.
    loopback.plan("block", Plan::Hold);
    let script = json!({"url": loopback.url, "ops": [{"run": "block"}]});
    let events: Vec<_> = (0..300)
        .map(|_| json!({"name": "probe/script", "data": script}))
        .collect();
    for batch in events.chunks(100) {
        hog.send_batch(batch.to_vec()).await.unwrap();
    }
    // Alone on the host, the hog may use every slot (work-conserving).
    wait_in_flight(&loopback, 256).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(loopback.in_flight(), 256, "the host's slots bound the hog");

    // The neighbour's runs complete while every one of the hog's blocking
    // steps is still in flight.
    for _ in 0..5 {
        let event = neighbour.send("bench/ten-steps", json!({})).await.unwrap();
        let run = neighbour.run_for_event(&event).await.unwrap();
        let done = neighbour
            .wait_status(&run, "completed", PATIENCE)
            .await
            .unwrap();
        assert_eq!(done.run.output, Some(json!(45)), "{done:#?}");
    }
    assert_eq!(
        loopback.in_flight(),
        256,
        "none of the hog's steps ended meanwhile"
    );
    assert_eq!(loopback.total_hits(), 256, "no hog step ran twice");

    // Let go: every one of the hog's runs completes.
    loopback.release();
    let runs = hog
        .wait_runs("script", PATIENCE * 2, |runs| {
            runs.len() == 300 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_waits_past_the_step_timeout_fails_its_attempt_and_is_retried() {
    let (_dir, host) = admin_host(&[]);
    let admin = host.as_tenant(ADMIN, "");
    let tenant = create_tenant(&host, "slow");
    let loopback = Loopback::start().await.unwrap();
    allow_loopback(&admin, "slow", &loopback).await;
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/slow/limits",
        Some(json!({"step_timeout_ms": 1000})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    tenant.deploy("probe", guests::PROBE).await.unwrap();

    // A body held by the server, and a body asleep in the guest: neither
    // uses CPU, both are stopped at the timeout; the script function has
    // three retries, so four attempts each.
    loopback.plan("held", Plan::Hold);
    for (ops, step) in [
        (json!([{"run": "held"}]), "held"),
        (
            json!([{"thread_sleep": {"ms": 60_000, "step": "nap"}}]),
            "nap",
        ),
    ] {
        let event = tenant
            .send("probe/script", json!({"url": loopback.url, "ops": ops}))
            .await
            .unwrap();
        let run = tenant.run_for_event(&event).await.unwrap();
        let ended = tenant.wait_status(&run, "failed", PATIENCE).await.unwrap();
        let error = serde_json::to_string(&ended.run.error).unwrap();
        assert!(error.contains("StepTimeoutError"), "{ended:#?}");
        assert!(error.contains("1000 ms of wall-clock time"), "{error}");
        let attempts = ended.steps.first().map_or(0, |s| s.attempts);
        assert_eq!(
            attempts, 4,
            "{step}: retried by the usual rules: {ended:#?}"
        );
        if step == "held" {
            assert_eq!(loopback.hits(&run, "held"), 4);
        }
    }
    loopback.release();
}

//! The host's guest memory budget: guests that hold memory cannot take the
//! machine's, and the runs that would go over it wait in the queue (nothing
//! fails) while other tenants' runs still start.

use crate::PATIENCE;
use crate::fairness::{Neighbours, wait_in_flight};
use crate::tenants::{ADMIN, admin_host, create_tenant, status};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use stepwise_tests::Plan;

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn guests_holding_memory_wait_for_the_budget_instead_of_exhausting_the_host() {
    let Neighbours {
        _dir,
        host,
        admin: _admin,
        hog,
        neighbour,
        loopback,
    } = Neighbours::start(&["--guest-memory", "512MiB"]).await;
    let idle = host.rss_bytes().unwrap();

    // Twelve runs that each hold 200 MiB inside a step that blocks.
    loopback.plan("hold", Plan::Hold);
    let script = json!({"url": loopback.url, "ops": [{"hog": {"mb": 200, "step": "hold"}}]});
    let events: Vec<_> = (0..12)
        .map(|_| json!({"name": "probe/script", "data": script}))
        .collect();
    hog.send_batch(events).await.unwrap();
    // A version not seen yet reserves the tenant's per-instance limit
    // (256 MiB) as each run starts: two fit in the 512 MiB budget. A
    // second later they are charged what they grew to (200 MiB each), the
    // version is known to take that, and one more fits (400 + 200 ≥ 512).
    wait_in_flight(&loopback, 3).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(loopback.in_flight(), 3, "the rest wait for the budget");
    let queued = hog
        .runs_of("script")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status == "queued")
        .count();
    assert_eq!(queued, 9, "waiting, not failed");
    let held = host.rss_bytes().unwrap().saturating_sub(idle);
    assert!(
        held < 900 * MIB,
        "three guests' memory, not twelve: {} MiB",
        held / MIB
    );

    // Another tenant's runs still start and complete.
    let event = neighbour.send("bench/ten-steps", json!({})).await.unwrap();
    let run = neighbour.run_for_event(&event).await.unwrap();
    let done = neighbour
        .wait_status(&run, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(done.run.output, Some(json!(45)));
    assert_eq!(loopback.in_flight(), 3);

    // As memory is given back the others run (reserving the 200 MiB the
    // version is now known to take): all twelve complete.
    loopback.release();
    let runs = hog
        .wait_runs("script", PATIENCE * 2, |runs| {
            runs.len() == 12 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 12);
    assert!(
        loopback.max_in_flight() <= 4,
        "{}",
        loopback.max_in_flight()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_past_its_storage_quota_is_refused_and_stays_refused_after_a_restart() {
    let (_dir, mut host) = admin_host(&[]);
    let admin = host.as_tenant(ADMIN, "");
    let filler = create_tenant(&host, "filler");
    let other = create_tenant(&host, "other");
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/filler/limits",
        Some(json!({"storage_bytes": 200_000})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    // Batches of twenty 3 KB events through the public event key.
    let padding = "x".repeat(3_000);
    let batch: Vec<_> = (0..20)
        .map(|i| json!({"name": "fill/up", "data": {"i": i, "pad": padding}}))
        .collect();
    let send = |api: &stepwise_tests::Api| {
        let path = format!("/e/{}", api.event_key);
        let api = api.clone();
        let batch = json!(batch);
        async move { status(&api, Method::POST, &path, Some(batch)).await }
    };
    let mut accepted = 0;
    let refusal = loop {
        let (code, body) = send(&filler).await;
        if code != StatusCode::OK {
            break (code, body);
        }
        accepted += 1;
        assert!(accepted < 20, "the quota never took effect");
    };
    // 200 kB hold three or four batches of 60 kB: the quota is counted in
    // stored bytes, not in requests.
    assert!((3..=5).contains(&accepted), "{accepted} batches accepted");
    assert_eq!(refusal.0, StatusCode::TOO_MANY_REQUESTS, "{}", refusal.1);
    let (_, shown) = status(&admin, Method::GET, "/v1/tenants/filler", None).await;
    let used = shown["usage"]["storage_bytes"].as_u64().unwrap_or_default();
    assert!(
        used >= 200_000,
        "the operator sees what the tenant stores: {shown}"
    );
    let error = refusal.1["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("StorageQuotaExceeded"), "{error}");
    assert!(error.contains("--storage"), "says what to do: {error}");
    let (code, body) = send(&other).await;
    assert_eq!(code, StatusCode::OK, "another tenant is unaffected: {body}");

    // The count is saved: a restart does not reset it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    host.kill();
    host.restart().unwrap();
    let filler = host.as_tenant(filler.key.as_deref().unwrap(), &filler.event_key);
    let (code, body) = send(&filler).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{body}");

    // The operator raises the quota: events are accepted again.
    let admin = host.as_tenant(ADMIN, "");
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/filler/limits",
        Some(json!({"storage_bytes": 10_000_000})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = send(&filler).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queue_is_bounded_host_wide_and_a_flooding_tenant_leaves_room_for_others() {
    // Every field is bound: one left to `..` would be dropped at once
    // (the host with it).
    let Neighbours {
        _dir,
        host: _host,
        admin: _admin,
        hog,
        neighbour,
        loopback,
    } = Neighbours::start(&["--max-executing", "1", "--max-queued", "640"]).await;

    // One run holds the only slot; the rest of the hog's runs queue until
    // the host's cap (640) turns its events away.
    loopback.plan("hold", Plan::Hold);
    let script = json!({"url": loopback.url, "ops": [{"run": "hold"}]});
    let batch: Vec<_> = (0..100)
        .map(|_| json!({"name": "probe/script", "data": script}))
        .collect();
    let mut accepted = 0;
    let refusal = loop {
        let (code, body) = status(
            &hog,
            Method::POST,
            &format!("/e/{}", hog.event_key),
            Some(json!(batch)),
        )
        .await;
        if code != StatusCode::OK {
            break (code, body);
        }
        accepted += 100;
        assert!(accepted <= 2_000, "the host's queue cap never took effect");
    };
    assert_eq!(refusal.0, StatusCode::TOO_MANY_REQUESTS, "{}", refusal.1);
    assert!(
        refusal.1["error"].to_string().contains("runs waiting"),
        "{}",
        refusal.1
    );
    assert!((600..=800).contains(&accepted), "{accepted} accepted");

    // A tenant with little queued still gets its events in.
    let events: Vec<_> = (0..3)
        .map(|_| json!({"name": "bench/ten-steps", "data": {}}))
        .collect();
    neighbour.send_batch(events).await.unwrap();
    loopback.release();
    let runs = neighbour
        .wait_runs("ten-steps", PATIENCE * 2, |runs| {
            runs.len() == 3 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 3);
}

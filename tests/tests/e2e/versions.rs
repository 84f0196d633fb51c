//! Versions: a run stays on the version it started on; a candidate is
//! replayed against recorded runs before it replaces the current version
//! (`stepwise replay`, `deploy --check-replay`); rollbacks take one call;
//! versions no run needs are collected.

use crate::{PATIENCE, STEPWISE, start_host_with};
use serde_json::{Value, json};
use std::process::Command;
use stepwise_tests::{HostOptions, HostProcess, guests};

fn cli(host: &HostProcess, args: &[&str]) -> (bool, String) {
    let output = Command::new(STEPWISE)
        .args(args)
        .env("STEPWISE_SERVER", &host.url)
        .output()
        .expect("running the CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn order(id: &str, delay: &str, timeout: &str) -> Value {
    json!({"orderId": id, "userId": "u-1", "paymentDelay": delay, "paymentTimeout": timeout})
}

#[tokio::test(flavor = "multi_thread")]
async fn candidates_are_replayed_before_they_replace_a_version_and_runs_stay_on_theirs() {
    let (_dir, host) = start_host_with(HostOptions {
        extra_args: vec!["--keep-versions".into(), "1".into()],
        ..HostOptions::default()
    });
    let v1 = host.deploy("shop", guests::PROCESS_ORDER).await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    // One run ends on v1; another sleeps on it through the upgrade.
    let ended = host
        .send("shop/order.created", order("o-1", "100ms", "200ms"))
        .await
        .unwrap();
    let ended = host.run_for_event(&ended).await.unwrap();
    host.wait_status(&ended, "completed", PATIENCE)
        .await
        .unwrap();
    let pinned = host
        .send("shop/order.created", order("o-2", "3s", "60s"))
        .await
        .unwrap();
    let pinned = host.run_for_event(&pinned).await.unwrap();
    host.wait_status(&pinned, "sleeping", PATIENCE)
        .await
        .unwrap();

    // The breaking candidate: every recorded run diverges at its first step.
    let (ok, text) = cli(&host, &["replay", "--app", "shop", guests::ORDER_BREAKING]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("diverged")
            && text.contains("at step 0: the journal has run \"get-user\" but the candidate calls run \"lookup-user\"")
            && text.contains("2 runs replayed"),
        "{text}"
    );
    let (ok, text) = cli(
        &host,
        &[
            "deploy",
            guests::ORDER_BREAKING,
            "--app",
            "shop",
            "--check-replay",
        ],
    );
    assert!(
        !ok && text.contains("409") && text.contains("diverge"),
        "{text}"
    );
    let apps = host.get("/v1/apps").await.unwrap();
    assert_eq!(
        apps[0]["version"], v1,
        "the refused version was not deployed"
    );

    // The compatible candidate replays both runs and is deployed.
    let (ok, text) = cli(
        &host,
        &["replay", "--app", "shop", guests::ORDER_COMPATIBLE],
    );
    assert!(ok && text.contains("0 diverge, 0 fail"), "{text}");
    let (ok, text) = cli(
        &host,
        &[
            "deploy",
            guests::ORDER_COMPATIBLE,
            "--app",
            "shop",
            "--check-replay",
            "--json",
        ],
    );
    assert!(ok, "{text}");
    let v2: Value = serde_json::from_str(&text).unwrap();
    let v2 = v2["version"].as_str().unwrap().to_string();
    let versions = host.get("/v1/apps/shop/versions").await.unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions:#}");
    assert_eq!(versions[0]["version"], v1);
    assert_eq!(versions[0]["active_runs"], 1, "the sleeping run is on v1");
    assert_eq!(versions[1]["current"], true);

    // The pinned run finishes on v1 (v2 would say "version": "next").
    host.wait_status(&pinned, "waiting", PATIENCE)
        .await
        .unwrap();
    host.send(
        "shop/payment.success",
        json!({"orderId": "o-2", "amount": 5}),
    )
    .await
    .unwrap();
    let done = host
        .wait_status(&pinned, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(done.run.version, v1);
    assert!(
        done.run
            .output
            .as_ref()
            .and_then(|o| o.get("version"))
            .is_none(),
        "{done:#?}"
    );
    let fresh = host
        .send("shop/order.created", order("o-3", "1ms", "1ms"))
        .await
        .unwrap();
    let fresh = host.run_for_event(&fresh).await.unwrap();
    let fresh = host
        .wait_status(&fresh, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        crate::output(&fresh.run)["version"],
        "next",
        "new runs start on v2"
    );

    // Rollback is one call. With --keep-versions 1 and no run left on it,
    // v2 is collected as soon as v1 is current again; after v3 (the
    // breaking one, unchecked) only v3 is kept, and v2 is gone for good.
    let (ok, text) = cli(&host, &["rollback", "shop", &v1[..10]]);
    assert!(ok && text.contains(&v1[..12]), "{text}");
    assert_eq!(host.get("/v1/apps").await.unwrap()[0]["version"], v1);
    host.deploy("shop", guests::ORDER_BREAKING).await.unwrap();
    let kept: Vec<Value> = host
        .get("/v1/apps/shop/versions")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(kept.len(), 1, "only the current version is kept: {kept:#?}");
    let (ok, text) = cli(&host, &["rollback", "shop", &v2]);
    assert!(!ok && text.contains("no kept version"), "{text}");
}

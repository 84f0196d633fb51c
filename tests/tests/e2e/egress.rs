//! Step bodies cannot reach the host's own API or internal addresses
//! through `*` or a host name: only an address the operator lists exactly,
//! and never the host's own port.

use crate::PATIENCE;
use crate::tenants::{ADMIN, admin_host, create_tenant, status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stepwise_host::api::views::RunDetail;
use stepwise_tests::{Api, Loopback, guests};

/// Sets `tenant`'s HTTP allowlist.
pub async fn allow(admin: &Api, tenant: &str, hosts: Value) {
    let (code, body) = status(
        admin,
        Method::PUT,
        &format!("/v1/tenants/{tenant}/http-allow"),
        Some(hosts),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// Runs the hostile app's `http-elsewhere` against `url`: its run, ended.
pub async fn call(tenant: &Api, url: &str) -> RunDetail {
    let event = tenant
        .send("attack/http-elsewhere", json!({ "url": url }))
        .await
        .unwrap();
    let run = tenant.run_for_event(&event).await.unwrap();
    tenant
        .wait_for(&run, PATIENCE, |r| {
            ["completed", "failed"].contains(&r.run.status.as_str())
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn step_http_never_reaches_the_host_itself_or_internal_addresses_unless_listed_exactly() {
    let (_dir, host) = admin_host(&[]);
    let admin = host.as_tenant(ADMIN, "");
    let tenant = create_tenant(&host, "curious");
    tenant.deploy("hostile", guests::HOSTILE).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    let loopback_address = loopback.url.trim_start_matches("http://").to_string();
    let host_port = host.url.rsplit(':').next().unwrap().to_string();

    // `*` admits the Internet, not loopback, link-local or private ranges,
    // whether named by address or by a name that resolves there.
    allow(&admin, "curious", json!(["*"])).await;
    let own_api = format!("{}/v1/runs", host.url);
    let by_name = format!("http://localhost:{host_port}/health");
    let metadata = "http://169.254.169.254/latest/meta-data/".to_string();
    let private = "http://10.255.255.1/".to_string();
    let counter = format!("{}/egress/probe", loopback.url);
    for url in [&own_api, &by_name, &metadata, &private, &counter] {
        let ended = call(&tenant, url).await;
        assert_eq!(ended.run.status, "failed", "{url}: {ended:#?}");
        let error = serde_json::to_string(&ended.run.error).unwrap();
        assert!(
            error.contains("internal address") || error.contains("own API"),
            "{url}: {error}"
        );
    }
    assert_eq!(loopback.total_hits(), 0, "the counter was never reached");

    // Listed exactly, the loopback counter is reachable; the host's own
    // port is not, even listed exactly.
    allow(
        &admin,
        "curious",
        json!([loopback_address, format!("127.0.0.1:{host_port}")]),
    )
    .await;
    let reached = call(&tenant, &counter).await;
    assert_eq!(reached.run.status, "completed", "{reached:#?}");
    assert_eq!(reached.run.output, Some(json!(200)));
    assert_eq!(loopback.total_hits(), 1);
    let refused = call(&tenant, &format!("http://127.0.0.1:{host_port}/health")).await;
    assert_eq!(refused.run.status, "failed", "{refused:#?}");
    let error = serde_json::to_string(&refused.run.error).unwrap();
    assert!(error.contains("own API"), "{error}");
    assert!(
        host.log().contains("refused outgoing HTTP"),
        "the refusals are logged for the operator"
    );
}

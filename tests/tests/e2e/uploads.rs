//! Uploads: a refused upload leaves no file behind; tenants' uploads are
//! compiled side by side, one tenant's flood never holding back another's;
//! and a tenant's first upload of bytes another tenant has is compiled all
//! the same, so its timing tells nothing of what others run.

use crate::tenants::{admin_host, create_tenant};
use crate::{PATIENCE, STEPWISE, start_script};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use stepwise_tests::{Api, HostOptions, HostProcess, guests};

/// `file`'s component with a custom section naming `tag` appended: the
/// same app, other bytes (another content hash), so nothing is cached.
fn variant(file: &str, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let name = b"stepwise-test";
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0);
    bytes.extend(leb128(payload.len()));
    bytes.extend(payload);
    bytes
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `PUT /v1/apps/{app}{query}` with `bytes`: the status and the answer.
async fn upload(api: &Api, app: &str, query: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let response = api
        .request(Method::PUT, &format!("/v1/apps/{app}{query}"))
        .timeout(std::time::Duration::from_secs(600))
        .body(bytes)
        .send()
        .await
        .expect("uploading");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The regular files under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path.to_string_lossy().into_owned());
        }
    }
    found
}

/// What uploads may leave on disk: the compiled-code cache and sled's
/// blob files (where large values such as component bytes go).
fn upload_files(data: &Path) -> Vec<String> {
    let mut found = files_under(&data.join("compiled"));
    found.extend(
        files_under(&data.join("journal"))
            .into_iter()
            .filter(|f| f.contains("/blobs/")),
    );
    found.sort();
    found
}

fn order(id: &str) -> Value {
    json!({"orderId": id, "userId": "u-1", "paymentDelay": "100ms", "paymentTimeout": "200ms"})
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_uploads_leave_no_files_behind() {
    // This host's own compiled-code directory (not the tests' shared one),
    // so that its files can be counted.
    let dir = tempfile::tempdir().unwrap();
    let host = HostProcess::start(STEPWISE, dir.path(), HostOptions::default()).unwrap();
    let probe = host.deploy("probe", guests::PROBE).await.unwrap();
    let probe_version = probe["version"].as_str().unwrap().to_string();
    host.deploy("shop", guests::PROCESS_ORDER).await.unwrap();
    let event = host.send("shop/order.created", order("o-1")).await.unwrap();
    let ended = host.run_for_event(&event).await.unwrap();
    host.wait_status(&ended, "completed", PATIENCE)
        .await
        .unwrap();
    let before = upload_files(dir.path());
    let compiled: Vec<&String> = before.iter().filter(|f| f.ends_with(".cwasm")).collect();
    assert_eq!(
        compiled.len(),
        2,
        "the two deployed versions are compiled into the host's cache: {before:?}"
    );

    let mut refused = 0;
    for i in 0..4 {
        let tag = format!("refused-{i}");
        for (what, app, query, bytes, expected) in [
            (
                "a foreign import",
                "vault",
                "",
                variant(guests::FOREIGN_IMPORT, &tag),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "a trapping constructor",
                "trap",
                "",
                variant(guests::TRAP_START, &tag),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "a command, not an app",
                "command",
                "",
                variant(guests::NOT_AN_APP, &tag),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "a broken registration",
                "config",
                "",
                variant(guests::BAD_CONFIG, &tag),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "not WebAssembly",
                "text",
                "",
                format!("hello {tag}").into_bytes(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "function ids of another app",
                "probe-copy",
                "",
                variant(guests::PROBE, &tag),
                StatusCode::CONFLICT,
            ),
            (
                "a version its runs diverge on",
                "shop",
                "?check_replay=true",
                variant(guests::ORDER_BREAKING, &tag),
                StatusCode::CONFLICT,
            ),
        ] {
            let (status, body) = upload(&host, app, query, bytes).await;
            assert_eq!(status, expected, "{what}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(!error.is_empty(), "{what}: the answer says why: {body}");
            refused += 1;
        }
        // A candidate only replayed, never deployed, is not kept either.
        let check = host
            .request(Method::POST, "/v1/apps/shop/replay")
            .body(variant(guests::ORDER_COMPATIBLE, &tag))
            .send()
            .await
            .unwrap();
        assert_eq!(check.status(), StatusCode::OK);
        let check: Value = check.json().await.unwrap();
        assert_eq!(check["diverged"], 0, "{check}");
    }
    // Bytes a deployed app uses, refused for another app: their compiled
    // code is still the first app's, and stays.
    let (status, body) = upload(
        &host,
        "probe-copy",
        "",
        std::fs::read(guests::PROBE).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let after = upload_files(dir.path());
    assert_eq!(
        after, before,
        "{refused} refused uploads and 4 replayed candidates left files behind"
    );
    assert!(
        after
            .iter()
            .any(|f| f.contains(&format!("/{probe_version}-"))),
        "probe's compiled code is kept: {after:?}"
    );
    // And the deployed apps still run.
    let run = start_script(&host, json!({"ops": [{"local": "a"}]})).await;
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();
}

/// Eight apps with distinct function ids, for one tenant to flood with.
const FLOOD: [(&str, &str); 8] = [
    ("shop", guests::PROCESS_ORDER),
    ("fan", guests::FAN_OUT_LOOP),
    ("flaky", guests::FLAKY_RETRY),
    ("crm", guests::SYNC_CRM),
    ("index", guests::INDEX_PRODUCT),
    ("report", guests::GENERATE_REPORT),
    ("transfer", guests::RISKY_TRANSFER),
    ("fetch", guests::FETCH_PARALLEL),
];

#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_flood_of_uploads_does_not_hold_back_others() {
    let (_dir, host) = admin_host(&[]);
    let flood = create_tenant(&host, "flood");
    let acme = create_tenant(&host, "acme");
    let globex = create_tenant(&host, "globex");

    // The flood: eight uploads at once, each compiled (bytes new to the
    // host, so that no cache could make them quick).
    let finished = Arc::new(AtomicUsize::new(0));
    let mut flooding = Vec::new();
    for (app, file) in FLOOD {
        let (flood, finished) = (flood.clone(), finished.clone());
        flooding.push(tokio::spawn(async move {
            let (status, body) = upload(&flood, app, "", variant(file, "flood")).await;
            finished.fetch_add(1, Ordering::SeqCst);
            assert_eq!(status, StatusCode::OK, "flood's {app}: {body}");
            assert_eq!(body["compiled"], true, "{body}");
        }));
    }
    // Once the first is done, the other seven are queued in the host.
    while finished.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Two other tenants deploy at once, while the flood's queue is busy.
    let others = [acme, globex].map(|api| {
        let finished = finished.clone();
        tokio::spawn(async move {
            let (status, body) = upload(&api, "probe", "", variant(guests::PROBE, "other")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["compiled"], true, "{body}");
            finished.load(Ordering::SeqCst)
        })
    });
    for other in others {
        let flood_done = other.await.unwrap();
        assert!(
            flood_done < FLOOD.len(),
            "another tenant's deploy waited for all {} of the flood's (done when {flood_done} were)",
            FLOOD.len()
        );
    }
    for task in flooding {
        task.await.unwrap();
    }
    assert_eq!(finished.load(Ordering::SeqCst), FLOOD.len());
    let apps = flood.get("/v1/apps").await.unwrap();
    assert_eq!(apps.as_array().map(Vec::len), Some(FLOOD.len()), "{apps}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_upload_is_compiled_even_when_another_tenant_has_the_bytes() {
    // Only each app's current version is kept, so that a replaced one is
    // collected at once.
    let (_dir, host) = admin_host(&["--keep-versions", "0"]);
    let acme = create_tenant(&host, "acme");
    let globex = create_tenant(&host, "globex");
    let bytes = variant(guests::PROBE, "shared");

    let (status, first) = upload(&acme, "probe", "", bytes.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["compiled"], true, "acme's first upload: {first}");
    // acme's own re-upload may be quick: it reuses what acme compiled.
    let (status, again) = upload(&acme, "probe", "", bytes.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["compiled"], false, "acme's re-upload: {again}");
    assert_eq!(again["version"], first["version"]);

    // globex's first upload of the same bytes costs what any first upload
    // costs: compiled from its bytes, not taken from acme's.
    let (status, theirs) = upload(&globex, "probe", "", bytes.clone()).await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    assert_eq!(
        theirs["compiled"], true,
        "globex's first upload of bytes acme has: {theirs}"
    );
    assert_eq!(theirs["version"], first["version"]);
    let (_, theirs_again) = upload(&globex, "probe", "", bytes.clone()).await;
    assert_eq!(theirs_again["compiled"], false, "{theirs_again}");

    // acme moves on: its app no longer keeps the shared bytes, globex's
    // still does. acme's next upload of them is compiled again, as if no
    // one had them: a quick one would tell acme that someone still does.
    let (status, next) = upload(&acme, "probe", "", variant(guests::PROBE, "next")).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let kept = acme.get("/v1/apps/probe/versions").await.unwrap();
    assert_eq!(
        kept.as_array().map(Vec::len),
        Some(1),
        "acme's replaced version is collected: {kept}"
    );
    let (status, back) = upload(&acme, "probe", "", bytes.clone()).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(
        back["compiled"], true,
        "acme's upload of bytes only globex keeps: {back}"
    );

    // Both tenants run their own deploys of the shared bytes.
    for api in [&acme, &globex] {
        let run = start_script(api, json!({"ops": [{"local": "a"}]})).await;
        api.wait_status(&run, "completed", PATIENCE).await.unwrap();
    }
}

//! What an operator sees and does: `/metrics` (with the admin key, or on
//! `--metrics-listen`), counted from a real host's real runs; `/ready`; and
//! SIGTERM, which lets step bodies in progress finish.

use crate::tenants::{ADMIN, admin_host};
use crate::{PATIENCE, deployed, start_script};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use stepwise_tests::{HostProcess, Loopback, Plan, free_port, guests};

/// A scrape, as `series{labels}` → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `series`, which must be in the scrape.
fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    *metrics.get(series).unwrap_or_else(|| {
        let mut known: Vec<_> = metrics.keys().collect();
        known.sort();
        panic!("{series} is not in the scrape; it has {known:#?}")
    })
}

async fn scrape(url: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("scraping");
    let status = response.status();
    if status.is_success() {
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    }
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_runs_steps_and_refusals_for_the_operator_only() {
    let metrics_port = free_port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let (_dir, host) = admin_host(&["--metrics-listen", &metrics_address]);
    host.deploy("probe", guests::PROBE).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("flaky", Plan::FailTimes(2));

    let completed = start_script(
        &host,
        json!({"url": loopback.url, "ops": [{"run": "flaky"}, {"local": "after"}]}),
    )
    .await;
    let sleeping = start_script(
        &host,
        json!({"url": loopback.url, "ops": [{"sleep": {"id": "nap", "duration": "1h"}}]}),
    )
    .await;
    host.wait_status(&completed, "completed", PATIENCE)
        .await
        .unwrap();
    host.wait_status(&sleeping, "sleeping", PATIENCE)
        .await
        .unwrap();
    let wrong_key = reqwest::Client::new()
        .post(format!("{}/e/not-a-key-of-anyone", host.url))
        .json(&json!({"name": "probe/script", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
    // A tenant over its events per second.
    let admin = host.as_tenant(ADMIN, "");
    let (code, body) = crate::tenants::status(
        &admin,
        Method::PUT,
        "/v1/tenants/default/limits",
        Some(json!({"events_per_second": 1})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let over = host
        .send_batch(vec![
            json!({"name": "other/event", "data": {}}),
            json!({"name": "other/event", "data": {}}),
        ])
        .await;
    assert!(over.is_err(), "two events in one request are over 1/s");

    let (status, body) = scrape(&host.url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("admin key"), "says what is needed: {body}");
    let (status, body) = scrape(&host.url, Some(&host.management_key)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a tenant's key is not enough: {body}"
    );
    let (status, text) = scrape(&host.url, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, private) = scrape(&format!("http://{metrics_address}"), None).await;
    assert_eq!(status, StatusCode::OK, "--metrics-listen needs no key");
    assert!(private.contains("stepwise_runs_started_total"), "{private}");

    let metrics = parse_metrics(&text);
    let function = r#"tenant="default",app="probe",function="script""#;
    assert_eq!(
        value(
            &metrics,
            &format!("stepwise_runs_started_total{{{function}}}")
        ),
        2.0
    );
    let steps = |outcome: &str| {
        value(
            &metrics,
            &format!("stepwise_steps_total{{{function},outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(steps("retried"), 2.0, "two failed attempts of `flaky`");
    assert_eq!(steps("completed"), 2.0, "`flaky` at last, and `after`");
    assert_eq!(
        value(
            &metrics,
            &format!("stepwise_runs_ended_total{{{function},status=\"completed\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("stepwise_run_duration_seconds_count{{{function},status=\"completed\"}}")
        ),
        1.0
    );
    assert_eq!(value(&metrics, "stepwise_runs_sleeping"), 1.0);
    assert_eq!(value(&metrics, "stepwise_runs_waiting"), 0.0);
    assert_eq!(
        value(
            &metrics,
            r#"stepwise_events_accepted_total{tenant="default"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"stepwise_event_requests_refused_total{reason="key"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"stepwise_queue_wait_seconds_count{tenant="default"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"stepwise_event_requests_refused_total{reason="rate"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"stepwise_tenant_limit_hits_total{tenant="default",limit="events_per_second"}"#
        ),
        1.0
    );
    assert!(value(&metrics, "stepwise_journal_flush_duration_seconds_count") >= 1.0);
    let fsyncs = metrics.get("stepwise_journal_fsyncs_total").copied();
    if stepwise_tests::host::on_postgres() {
        assert_eq!(fsyncs, None, "PostgreSQL syncs by its own settings");
    } else {
        assert!(
            fsyncs.unwrap_or(0.0)
                >= value(&metrics, "stepwise_journal_flush_duration_seconds_count"),
            "sled's every flush is synced to the disk: {fsyncs:?}"
        );
    }
    assert!(
        value(&metrics, "stepwise_journal_flush_group_size_sum")
            >= value(&metrics, "stepwise_journal_flush_group_size_count"),
        "each flush covers at least one change"
    );
    let code: f64 = ["memory", "disk", "compiled"]
        .iter()
        .filter_map(|source| {
            metrics
                .get(&format!(
                    "stepwise_compiled_code_total{{source=\"{source}\"}}"
                ))
                .copied()
        })
        .sum();
    assert!(code >= 2.0, "each execution found its code: {code}");
    assert!(
        value(&metrics, "stepwise_instance_memory_budget_bytes") > 0.0,
        "the budget is shown"
    );
    assert!(
        value(&metrics, r#"stepwise_stored_bytes{tenant="default"}"#) > 0.0,
        "the default tenant stores its events and runs"
    );
    for secret in [ADMIN, host.management_key.as_str(), host.event_key.as_str()] {
        assert!(!text.contains(secret), "no key is ever in the metrics");
    }
    dashboard_names_metrics_the_host_has(&text);
}

/// Every metric the shipped Grafana dashboard queries is one a host
/// exports (bar those only some hosts have).
fn dashboard_names_metrics_the_host_has(scrape: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let dashboard = std::fs::read_to_string(path).expect("docs/grafana-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut names: Vec<&str> = dashboard
        .match_indices("stepwise_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    let conditional = ["stepwise_workers", "stepwise_journal_fsyncs_total"];
    for name in names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        if conditional.contains(&family) {
            continue;
        }
        assert!(
            scrape.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which the host does not export"
        );
    }
}

/// Waits for the host to exit by itself, without holding up the runtime
/// (the loopback server answers on it meanwhile).
fn exited(host: &mut HostProcess, patience: Duration) -> Option<std::process::ExitStatus> {
    tokio::task::block_in_place(|| host.wait_exit(patience))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_running_step_finish_and_it_never_runs_again() {
    let (_dir, mut host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("slow", Plan::Delay(Duration::from_secs(2)));
    let run = start_script(
        &host,
        json!({"url": loopback.url, "ops": [{"run": "slow"}, {"run": "after"}]}),
    )
    .await;
    assert!(
        loopback.wait_hits(&run, "slow", 1, PATIENCE).await,
        "the slow step began"
    );
    host.signal(libc::SIGTERM);
    // While it stops: not ready, alive, and nothing new is taken.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let ready = host.request(Method::GET, "/ready").send().await.unwrap();
        if ready.status() == StatusCode::SERVICE_UNAVAILABLE {
            let said = ready.text().await.unwrap();
            assert!(said.contains("shutting down"), "{said}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never stopped being ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = host
        .request(Method::POST, "/v1/events")
        .json(&json!({"name": "probe/script", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let said = refused.text().await.unwrap();
    assert!(said.contains("shutting down"), "{said}");
    let health = host.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "still alive while it stops"
    );

    let status = exited(&mut host, PATIENCE).expect("the host exits by itself");
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        loopback.hits(&run, "after"),
        0,
        "no body began after SIGTERM"
    );
    let log = host.log();
    assert!(
        log.contains("every step body in progress has finished"),
        "{log}"
    );

    host.restart().unwrap();
    let ready = host.request(Method::GET, "/ready").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(
        loopback.hits(&run, "slow"),
        1,
        "the step that finished before the exit did not run again"
    );
    assert_eq!(loopback.hits(&run, "after"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_stops_at_once_and_the_run_resumes_after_restart() {
    let (_dir, mut host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("held", Plan::HoldFirst);
    let run = start_script(
        &host,
        json!({"url": loopback.url, "ops": [{"local": "first"}, {"run": "held"}]}),
    )
    .await;
    assert!(loopback.wait_hits(&run, "held", 1, PATIENCE).await);
    host.signal(libc::SIGTERM);
    assert!(
        exited(&mut host, Duration::from_secs(2)).is_none(),
        "a held step body keeps the first signal waiting"
    );
    host.signal(libc::SIGTERM);
    let status = exited(&mut host, Duration::from_secs(10)).expect("the second signal stops it");
    assert!(status.success(), "exit status {status}");
    assert!(host.log().contains("second signal"), "{}", host.log());

    host.restart().unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(
        done.steps[0].status, "completed",
        "journaled before the stop"
    );
    assert_eq!(
        loopback.hits(&run, "held"),
        2,
        "the body cut off by the forced stop ran again"
    );
    loopback.release();
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_and_hold_no_key_or_payload() {
    let (_dir, host) = admin_host(&["--log-format", "json"]);
    host.deploy("probe", guests::PROBE).await.unwrap();
    let tenant = crate::tenants::create_tenant(&host, "acme");
    tenant.deploy("probe", guests::PROBE).await.unwrap();
    crate::egress::allow(&host.as_tenant(ADMIN, ""), "acme", json!(["127.0.0.1"])).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("flaky", Plan::FailTimes(1));
    let secret = "payload-secret-7f3a91";
    for api in [&*host, &tenant] {
        let run = start_script(
            api,
            json!({"url": loopback.url, "secret": secret, "ops": [{"run": "flaky"}, {"print": "done"}]}),
        )
        .await;
        api.wait_status(&run, "completed", PATIENCE).await.unwrap();
    }
    let wrong = reqwest::Client::new()
        .post(format!("{}/e/{}x", host.url, host.event_key))
        .json(&json!({"name": "probe/script", "data": {"secret": secret}}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let malformed = host
        .request(Method::POST, "/v1/events")
        .body(format!("{{\"name\": 7, \"data\": \"{secret}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    let log = host.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 3,
        "the host logged its start and runs: {log}"
    );
    for line in &lines {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(entry.get(field).is_some(), "no {field} in {line}");
        }
    }
    assert!(
        log.contains(r#""message":"run ended""#),
        "runs' ends are logged: {log}"
    );
    for (what, secret) in [
        ("the payload", secret),
        ("the admin key", ADMIN),
        ("the default management key", host.management_key.as_str()),
        ("the default event key", host.event_key.as_str()),
        ("acme's management key", tenant.key.as_deref().unwrap()),
        ("acme's event key", tenant.event_key.as_str()),
    ] {
        assert!(!log.contains(secret), "{what} is in the log:\n{log}");
    }
}

/// Two live runs, each with a first step done: one sleeping for `sleep`
/// (then a last step), one waiting up to 5 minutes for `probe/go`.
async fn sleeper_and_waiter(host: &stepwise_tests::Api, sleep: &str) -> (String, String) {
    let sleeper = start_script(
        host,
        json!({"ops": [{"local": "before"}, {"sleep": {"id": "nap", "duration": sleep}}, {"local": "after"}]}),
    )
    .await;
    let waiter = start_script(
        host,
        json!({"ops": [{"local": "before"}, {"wait": {"id": "go", "event": "probe/go", "timeout": "5m"}}]}),
    )
    .await;
    host.wait_status(&sleeper, "sleeping", PATIENCE)
        .await
        .unwrap();
    host.wait_status(&waiter, "waiting", PATIENCE)
        .await
        .unwrap();
    (sleeper, waiter)
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_a_steady_host_bounded_and_spares_live_runs() {
    let (dir, host) = crate::start_host_with(stepwise_tests::HostOptions {
        extra_args: vec!["--retention".into(), "2s".into()],
        ..Default::default()
    });
    host.deploy("probe", guests::PROBE).await.unwrap();
    // Live runs older than the retention: one sleeping past the load, one
    // waiting for an event sent after it. (Once they end, they too are
    // deleted 2 s later, so each is read as soon as it ends.)
    let (sleeper, waiter) = sleeper_and_waiter(&host, "40s").await;

    // Steady load: 40 short runs a second for 20 seconds, each event
    // padded to 1 KiB, so that sled's log fills segments it must reuse.
    let pad = "x".repeat(1024);
    let mut sent = 0;
    let mut samples = Vec::new();
    for second in 0..20 {
        for _ in 0..4 {
            let batch = (0..10)
                .map(|_| json!({"name": "probe/script", "data": {"ops": [{"local": "quick"}], "pad": pad}}))
                .collect();
            sent += host.send_batch(batch).await.unwrap().len();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let runs: Vec<serde_json::Value> = host.get_as("/v1/runs?limit=1000").await.unwrap();
        let events: Vec<serde_json::Value> = host.get_as("/v1/events?limit=1000").await.unwrap();
        let kept = stepwise_tests::store_footprint(dir.path()).unwrap();
        samples.push((second, runs.len(), events.len(), kept));
    }
    let sleeping = host.run(&sleeper).await.unwrap();
    assert_eq!(
        (sleeping.run.status.as_str(), sleeping.steps.len()),
        ("sleeping", 2),
        "the sleeper, older than the retention, is kept whole while it sleeps"
    );
    host.send("probe/go", json!({"ok": true})).await.unwrap();
    let waited = host
        .wait_status(&waiter, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        waited.steps.len(),
        2,
        "its first step outlived the retention"
    );
    let slept = host
        .wait_status(&sleeper, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        slept
            .steps
            .iter()
            .map(|s| s.status.as_str())
            .collect::<Vec<_>>(),
        ["completed", "completed", "completed"],
        "a live run's journal is kept whole"
    );

    let (_, runs_now, events_now, _) = *samples.last().unwrap();
    let most_runs = samples.iter().map(|s| s.1).max().unwrap();
    assert!(
        runs_now < sent / 2 && most_runs < sent * 3 / 4,
        "ended runs are deleted as they age: {sent} sent, counts {samples:?}"
    );
    assert!(
        events_now < sent / 2,
        "old events are deleted: {sent} sent, counts {samples:?}"
    );
    let text = reqwest::get(format!("{}/metrics", host.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = parse_metrics(&text);
    assert!(
        value(&metrics, r#"stepwise_retention_deleted_total{kind="runs"}"#) >= (sent / 2) as f64,
        "{text}"
    );
    // The store stops growing: the most it held in the second half of the
    // load is about the most it held in the first (growing steadily, it
    // would be twice that). sled reuses the segments of its log that
    // deletes emptied; 800 runs of 1 KiB each would be well over 1 MB.
    let most = |half: &[(usize, usize, usize, u64)]| half.iter().map(|s| s.3).max().unwrap();
    let (first, second) = (most(&samples[..10]), most(&samples[10..]));
    println!("(second, runs, events, store) over the load: {samples:?}");
    assert!(
        second as f64 <= first as f64 * 1.25,
        "the store keeps growing: {samples:?}"
    );
}

/// `stepwise backup DEST` against `host`, with `admin_key`: whether it
/// succeeded, and what it printed (stdout, then stderr).
fn backup(host: &HostProcess, dest: &std::path::Path, admin_key: Option<&str>) -> (bool, String) {
    let mut command = std::process::Command::new(crate::STEPWISE);
    command
        .arg("backup")
        .arg(dest)
        .env("STEPWISE_SERVER", &host.url);
    if let Some(key) = admin_key {
        command.env("STEPWISE_ADMIN_KEY", key);
    }
    let output = command.output().expect("running stepwise backup");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_live_host_serves_its_ended_runs_and_resumes_the_in_flight_ones() {
    let (dir, host) = admin_host(&[]);
    host.deploy("probe", guests::PROBE).await.unwrap();
    let dest = dir.path().join("backup");
    if stepwise_tests::host::on_postgres() {
        let (ok, said) = backup(&host, &dest, Some(ADMIN));
        assert!(!ok && said.contains("pg_dump"), "{said}");
        assert!(!dest.exists(), "a refused backup made {}", dest.display());
        return;
    }

    let mut ended = Vec::new();
    for n in 0..20 {
        ended.push(start_script(&host, json!({"ops": [{"local": format!("done-{n}")}]})).await);
    }
    for run in &ended {
        host.wait_status(run, "completed", PATIENCE).await.unwrap();
    }
    let (sleeper, waiter) = sleeper_and_waiter(&host, "4s").await;

    // Runs keep starting and stepping while the copy is taken.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let (api, busy) = ((*host).clone(), busy.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while busy.load(std::sync::atomic::Ordering::Relaxed) {
                let script = json!({"ops": [{"local": "a"}, {"local": "b"}, {"local": "c"}]});
                api.send("probe/script", script).await.unwrap();
                sent += 1;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (wrong_key, said) = backup(&host, &dest, Some("not-the-admin-key"));
    assert!(!wrong_key && said.contains("admin key"), "{said}");
    let (ok, said) = backup(&host, &dest, Some(ADMIN));
    assert!(ok, "the backup failed: {said}");
    assert!(
        said.contains("backed up") && said.contains("serve --data"),
        "{said}"
    );
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 0, "no load ran during the backup");
    println!("{said}({sent} events sent during the backup)");
    let (again, said) = backup(&host, &dest, Some(ADMIN));
    assert!(!again && said.contains("not empty"), "{said}");

    // The original host goes away; a host on the copy carries on.
    let (management_key, event_key) = (host.management_key.clone(), host.event_key.clone());
    assert!(!event_key.is_empty(), "the dev host printed its event key");
    drop(host);
    let copy = crate::start_host_on(
        &dest,
        stepwise_tests::HostOptions {
            extra_args: vec!["--admin-key".into(), ADMIN.into()],
            ..Default::default()
        },
    );
    assert_eq!(
        (copy.management_key.as_str(), copy.event_key.as_str()),
        (management_key.as_str(), event_key.as_str()),
        "the copy keeps the dev keys"
    );
    let copy_api: &stepwise_tests::Api = &copy;
    for run in &ended {
        let detail = copy_api.run(run).await.unwrap();
        assert_eq!(detail.run.status, "completed", "{run} in the copy");
        assert_eq!(detail.steps.len(), 1, "{run}'s journal in the copy");
    }
    let slept = copy_api
        .wait_status(&sleeper, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(slept.steps.len(), 3, "the sleeper resumed from the copy");
    copy_api.send("probe/go", json!({})).await.unwrap();
    let waited = copy_api
        .wait_status(&waiter, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(waited.steps.len(), 2, "the waiter resumed from the copy");
    // Every run the copy holds finishes there: none is half-copied.
    let runs: Vec<serde_json::Value> = copy_api.get_as("/v1/runs?limit=1000").await.unwrap();
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        copy_api
            .wait_status(id, "completed", PATIENCE)
            .await
            .unwrap();
    }
}

//! Hostile guests: one tenant attacks the host while another runs its
//! functions. Each attack must end with a clear error on its own run, the
//! host must stay up, the other tenant's runs must keep completing, and
//! nothing may be lost from their journals.

use crate::PATIENCE;
use crate::tenants::{ADMIN, admin_host, create_tenant, status};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stepwise_tests::{Api, guests};

/// What each attack must end as: status, and words its error must hold.
const ATTACKS: &[(&str, &str, &[&str])] = &[
    (
        "spin-outside",
        "failed",
        &["CpuLimitError", "CPU limit exceeded"],
    ),
    (
        "spin-inside",
        "failed",
        &["CpuLimitError", "CPU limit exceeded"],
    ),
    ("memory-bomb", "failed", &["GuestTrap", "memory"]),
    ("stack-overflow", "failed", &["GuestTrap", "stack"]),
    ("huge-output", "failed", &["OutputTooLargeError", "at most"]),
    ("huge-log", "completed", &[]),
    (
        "million-steps",
        "failed",
        &["StepLimitError", "1000 step calls"],
    ),
    ("read-file", "failed", &["/etc/passwd"]),
    ("open-socket", "failed", &["connecting to"]),
    // The host's own API, even with its exact address on the allowlist.
    ("http-elsewhere", "failed", &["own API"]),
    ("complete-unbegun", "failed", &["StepError", "never begun"]),
    ("parallel-trap", "completed", &[]),
    ("block-in-step", "failed", &["StepTimeoutError", "8000 ms"]),
];

/// Blocking runs the attacker floods the host with, beyond its 256 slots.
const BLOCKING_FLOOD: usize = 300;

/// Connections that trickle a body to a wrong event key: each must be
/// closed, and cost the host nothing.
async fn slow_bogus_body(url: String) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // From an address of its own (the wrong-key throttle is per source).
    let Ok(address) = url.trim_start_matches("http://").parse() else {
        return false;
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let Ok(stream) = socket.connect(address).await else {
        return false;
    };
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let head =
            "POST /e/swe_bogus HTTP/1.1\r\nhost: stepwise\r\ncontent-length: 16000000\r\n\r\n";
        let _ = writer.write_all(head.as_bytes()).await;
        for _ in 0..600 {
            if writer.write_all(&[b' '; 64]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answer))
        .await
        .is_ok();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    closed && (answer.starts_with("HTTP/1.1 401") || answer.starts_with("HTTP/1.1 429"))
}

/// Runs ten-step runs of `victim` one after another until `stop`, and
/// returns how long each took, event accepted to run completed.
async fn keep_working(victim: Api, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let event = victim.send("bench/ten-steps", json!({})).await.unwrap();
        let run = victim.run_for_event(&event).await.unwrap();
        let done = victim
            .wait_status(&run, "completed", PATIENCE)
            .await
            .unwrap();
        assert_eq!(done.steps.len(), 10, "{done:#?}");
        assert_eq!(done.run.output, Some(json!(45)));
        latencies.push(started.elapsed());
    }
    latencies
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_guests_fail_alone_with_clear_errors_while_another_tenant_runs_on() {
    let (_dir, host) = admin_host(&[]);
    let attacker = create_tenant(&host, "attacker");
    let victim = create_tenant(&host, "victim");
    let admin = host.as_tenant(ADMIN, "");
    // The CPU limit is counted in slices the guest is given, so on a busy
    // machine it takes longer than its ms of wall clock: the step timeout is
    // kept well above it, or a spinning step could end by either. (And the
    // CPU limit stays well above what writing a megabyte of log costs.)
    let limits = json!({"cpu_ms": 1000, "memory_bytes": 64 << 20, "step_timeout_ms": 8000});
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/attacker/limits",
        Some(limits),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    // Components that must not get in.
    for (component, words) in [
        (guests::TRAP_START, vec!["functions() failed"]),
        (
            guests::FOREIGN_IMPORT,
            vec!["acme:vault/secrets", "does not provide"],
        ),
    ] {
        let refused = attacker
            .deploy("bad", component)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("422"), "{refused}");
        for word in words {
            assert!(refused.contains(word), "{word:?} in {refused}");
        }
    }
    attacker.deploy("hostile", guests::HOSTILE).await.unwrap();
    victim.deploy("probe", guests::PROBE).await.unwrap();
    let own_address = host.url.trim_start_matches("http://").to_string();
    let (code, body) = status(
        &admin,
        Method::PUT,
        "/v1/tenants/attacker/http-allow",
        Some(json!([own_address])),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    let stop = Arc::new(AtomicBool::new(false));
    let working = tokio::spawn(keep_working(victim.clone(), stop.clone()));
    // Beside the attacks below: more blocking steps than the host has
    // slots, and slow bodies to a wrong event key.
    let flood: Vec<_> = (0..BLOCKING_FLOOD)
        .map(|_| json!({"name": "attack/block-in-step", "data": {}}))
        .collect();
    let flood_events = attacker.send_batch(flood).await.unwrap();
    let slow_bodies: Vec<_> = (0..100)
        .map(|_| tokio::spawn(slow_bogus_body(host.url.clone())))
        .collect();
    let mut runs = Vec::new();
    for (attack, ..) in ATTACKS {
        let event = attacker
            .send(
                &format!("attack/{attack}"),
                json!({"url": format!("{}/health", host.url)}),
            )
            .await
            .unwrap();
        runs.push(attacker.run_for_event(&event).await.unwrap());
    }
    for ((attack, expected, words), run) in ATTACKS.iter().zip(&runs) {
        let ended = attacker
            .wait_for(run, Duration::from_secs(120), |r| {
                ["completed", "failed", "cancelled"].contains(&r.run.status.as_str())
            })
            .await
            .unwrap();
        assert_eq!(ended.run.status, *expected, "{attack}: {ended:#?}");
        let error = serde_json::to_string(&ended.run.error).unwrap();
        for word in *words {
            assert!(error.contains(word), "{attack}: {word:?} in {error}");
        }
        match *attack {
            "huge-log" => assert!(
                crate::log_text(&ended).contains("[stepwise: output truncated"),
                "huge-log: the log is cut, with a note"
            ),
            "parallel-trap" => {
                let outcomes = crate::output(&ended.run);
                assert_eq!(outcomes[0], 0, "{outcomes}");
                assert_eq!(outcomes[2], 2, "{outcomes}");
                let failed = outcomes[1]["failed"].as_str().unwrap_or_default();
                assert!(failed.contains("trapped"), "{outcomes}");
            }
            "spin-inside" => assert_eq!(
                ended.steps[0].attempts, 2,
                "the CPU limit fails an attempt; the step is retried by the normal rules"
            ),
            _ => {}
        }
    }
    for event in &flood_events {
        let run = attacker.run_for_event(event).await.unwrap();
        let ended = attacker
            .wait_status(&run, "failed", Duration::from_secs(120))
            .await
            .unwrap();
        assert!(
            serde_json::to_string(&ended.run.error)
                .unwrap()
                .contains("StepTimeoutError"),
            "{ended:#?}"
        );
    }
    for slow in slow_bodies {
        assert!(
            slow.await.unwrap(),
            "a slow body to a wrong key is answered 401 or 429 and closed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let latencies = working.await.unwrap();
    assert!(
        !latencies.is_empty(),
        "the victim ran while the attacks did"
    );
    let slowest = latencies.iter().max().unwrap();
    println!(
        "victim: {} ten-step runs during the attacks, slowest {slowest:?}",
        latencies.len()
    );
    assert_eq!(host.get("/health").await.unwrap()["status"], "ok");
    // The victim's journal is whole: every run completed with its ten steps.
    let runs = victim.runs().await.unwrap();
    assert_eq!(runs.len(), latencies.len());
    for run in runs {
        assert_eq!(run.status, "completed", "{run:#?}");
    }
}

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
    (
        "http-elsewhere",
        "failed",
        &["not on this tenant's HTTP allowlist"],
    ),
    ("complete-unbegun", "failed", &["StepError", "never begun"]),
    ("parallel-trap", "completed", &[]),
];

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
        assert_eq!(done["steps"].as_array().unwrap().len(), 10, "{done:#}");
        assert_eq!(done["output"], 45);
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
    let limits = json!({"cpu_ms": 1000, "memory_bytes": 64 << 20});
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

    let stop = Arc::new(AtomicBool::new(false));
    let working = tokio::spawn(keep_working(victim.clone(), stop.clone()));
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
                ["completed", "failed", "cancelled"].contains(&r["status"].as_str().unwrap_or(""))
            })
            .await
            .unwrap();
        assert_eq!(ended["status"], *expected, "{attack}: {ended:#}");
        let error = ended["error"].to_string();
        for word in *words {
            assert!(error.contains(word), "{attack}: {word:?} in {error}");
        }
        match *attack {
            "huge-log" => assert!(
                crate::log_text(&ended).contains("[stepwise: output truncated"),
                "huge-log: the log is cut, with a note"
            ),
            "parallel-trap" => {
                let outcomes = &ended["output"];
                assert_eq!(outcomes[0], 0, "{outcomes}");
                assert_eq!(outcomes[2], 2, "{outcomes}");
                let failed = outcomes[1]["failed"].as_str().unwrap_or_default();
                assert!(failed.contains("trapped"), "{outcomes}");
            }
            "spin-inside" => assert_eq!(
                ended["steps"][0]["attempts"], 2,
                "the CPU limit fails an attempt; the step is retried by the normal rules"
            ),
            _ => {}
        }
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
        assert_eq!(run["status"], "completed", "{run:#}");
    }
}

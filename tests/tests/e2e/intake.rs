//! The host's front door under attack (issue 9, findings 2, 9 and 10):
//! bodies with a wrong key cost no memory, slow headers and bodies and idle
//! connections are closed, connections are capped per source and host-wide,
//! wrong keys are throttled, weak operator keys stop the host, and bad
//! names and query strings get JSON errors. Each test attacks a real host
//! process over real sockets.

use crate::tenants::{ADMIN, admin_host, create_tenant, status};
use crate::{PATIENCE, STEPWISE, start_host_with, start_script};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use stepwise_tests::{HostOptions, HostProcess, guests};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The host's listening address.
fn address(host: &HostProcess) -> SocketAddr {
    host.url
        .trim_start_matches("http://")
        .parse()
        .expect("the host's address")
}

/// The host's resident memory, KiB.
fn rss_kib(host: &HostProcess) -> u64 {
    let pid = host.pid().expect("the host runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc status")
}

/// A connection to `to` from the loopback address `from` (127.0.0.x: each is
/// a different source to the host).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("binding a loopback source address");
    socket.connect(to).await.expect("connecting to the host")
}

/// Everything the host sends until it closes the connection, and how long
/// that took; `None` if it still holds the connection open after `within`.
/// A reset counts as a close.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    started.elapsed(),
                    String::from_utf8_lossy(&received).into_owned(),
                ));
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// One response's head and body on a keep-alive connection (which stays
/// open): reads up to the body's `content-length`.
async fn response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer))
            .await
            .expect("the host answers")
            .expect("reading the answer");
        assert!(
            n > 0,
            "the host closed the connection mid-answer: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: stepwise\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_slow_bodies_with_a_wrong_key_cost_no_memory_and_other_tenants_are_served() {
    let (_dir, host) = admin_host(&[]);
    let acme = create_tenant(&host, "acme");
    acme.deploy("probe", guests::PROBE).await.unwrap();
    let to = address(&host);
    let before = rss_kib(&host);

    // The attack that took a host from 73 to 644 MiB: each of 300
    // connections announces a 16 MiB body for a key that does not exist and
    // sends it as fast as the host takes it (up to 2 MiB each, 600 MiB in
    // all, which the host used to buffer before it looked at the key). The
    // attacker is 127.0.0.3; acme's own calls come from 127.0.0.1, so the
    // throttle on wrong keys (429 after 20) does not hold them back.
    let attackers: Vec<_> = (0..300)
        .map(|_| {
            tokio::spawn(async move {
                let stream = connect_from("127.0.0.3", to).await;
                let (mut reader, mut writer) = stream.into_split();
                let sending = tokio::spawn(async move {
                    let head = b"POST /e/swe_bogus HTTP/1.1\r\nhost: stepwise\r\ncontent-type: application/json\r\ncontent-length: 16000000\r\n\r\n[";
                    if writer.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 64 * 1024];
                    for _ in 0..32 {
                        if writer.write_all(&chunk).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let mut answer = Vec::new();
                let read = tokio::time::timeout(
                    Duration::from_secs(60),
                    reader.read_to_end(&mut answer),
                )
                .await;
                sending.abort();
                (read.is_ok(), String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();

    // Meanwhile another tenant's events are accepted and its runs complete.
    let sampling = {
        let pid = host.pid().unwrap();
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..100 {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let rss: u64 = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|k| k.parse().ok())
                        .unwrap_or(0);
                    peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let run = start_script(&acme, json!({"ops": [{"local": "a"}]})).await;
    acme.wait_status(&run, "completed", PATIENCE).await.unwrap();

    // Every attacker is refused before its body is read and its connection
    // closed: 401 for the first 20 wrong keys, 429 after. (Closing with the
    // body unread may reset the connection, losing the answer: then only
    // the close is seen.)
    let mut refused = 0;
    for attacker in attackers {
        let (closed, answer) = attacker.await.unwrap();
        assert!(
            closed,
            "the host kept a connection with a wrong key open: {answer:?}"
        );
        if answer.starts_with("HTTP/1.1 401") {
            assert!(answer.contains("event key not found"), "{answer}");
            refused += 1;
        } else if answer.starts_with("HTTP/1.1 429") {
            assert!(answer.contains("too many wrong keys"), "{answer}");
            refused += 1;
        } else {
            assert!(answer.is_empty(), "{answer}");
        }
    }
    assert!(refused > 0, "no attacker saw its refusal");
    let peak = sampling.await.unwrap().max(rss_kib(&host));
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "300 bodies with a wrong key grew the host by {grown_mib} MiB (from {} MiB)",
        before / 1024
    );
    // And the host still serves its tenants.
    let run = start_script(&acme, json!({"ops": [{"local": "b"}]})).await;
    acme.wait_status(&run, "completed", PATIENCE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_slow_bodies_and_idle_connections_are_closed_but_steady_requests_are_not() {
    let (_dir, host) = start_host_with(HostOptions {
        extra_args: [
            "--header-timeout",
            "2s",
            "--idle-timeout",
            "4s",
            "--body-timeout",
            "1s",
            "--body-min-bytes",
            "4096",
        ]
        .map(String::from)
        .to_vec(),
        ..HostOptions::default()
    });
    let to = address(&host);
    let before = rss_kib(&host);

    // 100 connections that send nothing, 100 that send a head one byte at
    // a time, and 100 that send a valid key and then trickle the body.
    let idle: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(to).await.unwrap();
                closed_within(&mut stream, Duration::from_secs(15)).await
            })
        })
        .collect();
    let slow_heads: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(to).await.unwrap();
                let (mut reader, mut writer) = stream.into_split();
                let trickle = tokio::spawn(async move {
                    for byte in b"GET /health HTTP/1.1\r\nhost: stepwise\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                        if writer.write_all(&[*byte]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                let started = Instant::now();
                let mut answer = Vec::new();
                let closed =
                    tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer))
                        .await
                        .is_ok();
                trickle.abort();
                (closed, started.elapsed(), answer)
            })
        })
        .collect();
    let event_key = host.event_key.clone();
    let slow_bodies: Vec<_> = (0..100)
        .map(|_| {
            let event_key = event_key.clone();
            tokio::spawn(async move {
                let stream = TcpStream::connect(to).await.unwrap();
                let (mut reader, mut writer) = stream.into_split();
                let trickle = tokio::spawn(async move {
                    let head = format!(
                        "POST /e/{event_key} HTTP/1.1\r\nhost: stepwise\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
                    );
                    if writer.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for _ in 0..100 {
                        if writer.write_all(&[b' '; 100]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let mut answer = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer))
                        .await;
                trickle.abort();
                // How the read ended says how the host closed (a reset
                // would have cost the client the answer).
                let ending = match &read {
                    Ok(Ok(_)) => String::from("end of stream"),
                    Ok(Err(error)) => format!("read error: {error}"),
                    Err(_) => String::from("still open"),
                };
                (
                    read.is_ok(),
                    format!("{}[{ending}]", String::from_utf8_lossy(&answer)),
                )
            })
        })
        .collect();

    // Meanwhile, a body that is slow but steady (10 KB/s, well above 4 KiB
    // per 1 s window) and takes longer than both timeouts is accepted whole.
    let padding = "x".repeat(40_000);
    let body = json!({"name": "intake/steady", "data": {"padding": padding}}).to_string();
    let mut steady = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /e/{} HTTP/1.1\r\nhost: stepwise\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        host.event_key,
        body.len()
    );
    steady.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for chunk in body.as_bytes().chunks(2_000) {
        steady.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = response(&mut steady).await;
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the steady body took {:?}",
        started.elapsed()
    );
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "a steady body is not cut: {answer}"
    );
    // ... and the connection, idle afterwards, is closed after the idle
    // timeout (4 s), not before the header timeout would have cut it (2 s).
    let (after, _) = closed_within(&mut steady, Duration::from_secs(12))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(
        after >= Duration::from_millis(3_000),
        "the idle connection was closed after {after:?}, before --idle-timeout"
    );

    for task in idle {
        let (after, sent) = task.await.unwrap().expect("an idle connection is closed");
        assert!(sent.is_empty(), "{sent}");
        assert!(after < Duration::from_secs(8), "{after:?}");
    }
    for task in slow_heads {
        let (closed, after, answer) = task.await.unwrap();
        assert!(
            closed,
            "a connection sending its head at 5 bytes/s is kept open"
        );
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        assert!(
            after < Duration::from_secs(8),
            "a slow head took {after:?} to be cut"
        );
    }
    let mut answers = Vec::new();
    for task in slow_bodies {
        let (closed, answer) = task.await.unwrap();
        assert!(closed, "a body trickled at 1 KB/s is kept open: {answer}");
        answers.push(answer);
    }
    // Each is answered 408 and closed. On a loaded machine a client may
    // miss its answer to a reset (the host closes after draining for a few
    // seconds, and a starved client reads later than that): 17 of 100 did
    // once in `.ci/run` on 2 busy cores. So most, not all, must see it, and
    // none may end with another answer.
    let answered = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408") && a.contains("too slowly"))
        .count();
    let unanswered = answers.iter().filter(|a| a.starts_with('[')).count();
    assert!(
        answered >= answers.len() / 2 && answered + unanswered == answers.len(),
        "{answered} of {} slow bodies answered 408: {answers:?}",
        answers.len()
    );
    let grown_mib = rss_kib(&host).saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "the host grew by {grown_mib} MiB");
    // The host still answers.
    let health = host.get("/health").await.unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_caps_are_refused_while_other_sources_are_served() {
    let (_dir, host) = start_host_with(HostOptions {
        extra_args: [
            "--max-connections-per-source",
            "8",
            "--max-connections",
            "12",
        ]
        .map(String::from)
        .to_vec(),
        ..HostOptions::default()
    });
    let to = address(&host);

    // One source holds its 8 connections (each served, so each counted).
    let mut mine = Vec::new();
    for _ in 0..8 {
        let mut stream = connect_from("127.0.0.1", to).await;
        stream.write_all(HEALTH).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        mine.push(stream);
    }
    // Its 9th is refused ...
    let mut ninth = connect_from("127.0.0.1", to).await;
    let _ = ninth.write_all(HEALTH).await;
    let (_, answer) = closed_within(&mut ninth, Duration::from_secs(10))
        .await
        .expect("a connection over the per-source cap is closed");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    assert!(
        answer.is_empty() || answer.contains("too many open connections from your address"),
        "{answer}"
    );
    // ... while another source is served, up to the host-wide cap (12).
    let mut theirs = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.2", to).await;
        stream.write_all(HEALTH).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        theirs.push(stream);
    }
    let mut over = connect_from("127.0.0.3", to).await;
    let _ = over.write_all(HEALTH).await;
    let (_, answer) = closed_within(&mut over, Duration::from_secs(10))
        .await
        .expect("a connection over the host-wide cap is closed");
    assert!(
        answer.is_empty() || answer.contains("most open connections"),
        "{answer}"
    );
    // A closed connection gives its place back.
    drop(mine.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = connect_from("127.0.0.1", to).await;
        let _ = stream.write_all(HEALTH).await;
        let mut answer = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await;
        if matches!(read, Ok(Ok(12))) && answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the source's freed place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client whose connections come from `from` (a 127.0.0.x address).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_keys_are_throttled_per_source_with_429() {
    let (_dir, host) = admin_host(&[]);
    let acme = create_tenant(&host, "acme");
    let attacker = client_from("127.0.0.1");
    let url = |path: &str| format!("{}{path}", host.url);

    // 20 wrong keys of every kind within a minute are answered 401 ...
    for round in 0..20 {
        let request = match round % 3 {
            0 => attacker
                .get(url("/v1/runs"))
                .bearer_auth(format!("swm_guess{round}")),
            1 => attacker
                .post(url(&format!("/e/swe_guess{round}")))
                .json(&json!({"name": "x"})),
            _ => attacker
                .get(url("/v1/tenants"))
                .bearer_auth(format!("admin-guess-{round}")),
        };
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "try {round}");
    }
    // ... and the 21st, of any kind, even a right one, is answered 429.
    let refused = [
        attacker
            .get(url("/v1/runs"))
            .bearer_auth(acme.key.clone().unwrap()),
        attacker
            .post(url(&format!("/e/{}", acme.event_key)))
            .json(&json!({"name": "x"})),
        attacker.get(url("/v1/tenants")).bearer_auth(ADMIN),
        attacker.get(url("/v1/runs")).bearer_auth("swm_guess21"),
    ];
    for request in refused {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = answer
            .headers()
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], 429, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("too many wrong keys"),
            "{body}"
        );
    }
    // Another source is not held back: its right key works, its wrong key
    // is a plain 401.
    let other = client_from("127.0.0.2");
    let answer = other
        .get(url("/v1/runs"))
        .bearer_auth(acme.key.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = other
        .get(url("/v1/runs"))
        .bearer_auth("swm_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
}

/// Runs `stepwise serve` with `args`; its stderr, once it exited (it must,
/// within 30 s).
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(STEPWISE)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(args)
        .env_remove("STEPWISE_ADMIN_KEY")
        .env_remove("STEPWISE_EVENT_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the host started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn weak_operator_keys_stop_the_host_at_start_saying_what_is_required() {
    let error = refused_start(&["--admin-key", "a"]);
    assert!(
        error.contains("--admin-key (STEPWISE_ADMIN_KEY) is too weak")
            && error.contains("at least 16"),
        "{error}"
    );
    let error = refused_start(&["--event-key", "1"]);
    assert!(
        error.contains("--event-key (STEPWISE_EVENT_KEY) is too weak"),
        "{error}"
    );
    let error = refused_start(&["--admin-key", "aaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert!(error.contains("at least 8 are required"), "{error}");
    let error = refused_start(&["--admin-key", "abcdefghijklmnopqrstuvwxyz"]);
    assert!(error.contains("mix at least 2 of"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_names_are_refused_and_bad_query_strings_get_json_errors() {
    let (_dir, host) = admin_host(&[]);
    let admin = host.as_tenant(ADMIN, "");
    for name in ["..", ".", "-rf"] {
        let (code, body) = status(
            &admin,
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("starting with a letter or digit"),
            "{body}"
        );
    }
    let (code, body) = status(&admin, Method::GET, "/v1/tenants", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .all(|t| !t["name"].as_str().unwrap().starts_with(['.', '-'])),
        "{body}"
    );

    for path in [
        "/v1/runs?limit=abc",
        "/v1/events?limit=abc",
        "/v1/runs?limit=-1",
    ] {
        let answer = host.request(Method::GET, path).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = answer.json().await.expect("a JSON error");
        assert_eq!(body["status"], 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("limit"),
            "{path}: {body}"
        );
    }
    // axum's other rejections are JSON too.
    let answer = host
        .request(Method::DELETE, "/v1/runs")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = answer.json().await.expect("a JSON error");
    assert_eq!(body["status"], 405, "{body}");
}

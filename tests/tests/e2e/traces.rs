//! Traces: a host with `--otlp-endpoint` exports each run as a trace to a
//! real OTLP/HTTP collector (decoded with the `opentelemetry-proto` types),
//! continuing the sender's `traceparent`, and a step body's outgoing HTTP
//! carries its attempt's span.

use crate::{PATIENCE, start_host_with};
use serde_json::json;
use stepwise_tests::otlp::{Collector, Received};
use stepwise_tests::{HostOptions, Loopback, Plan, guests};

/// The sender's trace and span, as a W3C `traceparent` carries them.
const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.span.name == name).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_a_trace_that_continues_the_senders_and_reaches_the_users_services() {
    let collector = Collector::start().await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("flaky", Plan::FailTimes(1));
    let (_dir, host) = start_host_with(HostOptions {
        extra_args: vec!["--otlp-endpoint".into(), collector.url.clone()],
        ..Default::default()
    });
    host.deploy("probe", guests::PROBE).await.unwrap();

    let event = json!({"name": "probe/script", "data": {"url": loopback.url, "ops": [
        {"run": "flaky"},
        {"sleep": {"id": "nap", "duration": "1s"}},
        {"wait": {"id": "go", "event": "probe/go", "timeout": "1s"}},
    ]}});
    let answer: serde_json::Value = host
        .request(reqwest::Method::POST, &format!("/e/{}", host.event_key))
        .header("traceparent", format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01"))
        .json(&event)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event_id = answer["ids"][0].as_str().unwrap().to_string();
    let run = host.run_for_event(&event_id).await.unwrap();
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();

    let run_trace = hex(&ulid::Ulid::from_string(&run).unwrap().0.to_be_bytes());
    let spans = collector
        .wait_for(PATIENCE, |spans| {
            spans.iter().any(|s| s.span.name.starts_with("run "))
                && named(spans, "wait go").len() == 1
        })
        .await;
    let summary: Vec<_> = spans
        .iter()
        .map(|s| {
            (
                s.span.name.clone(),
                hex(&s.span.trace_id),
                hex(&s.span.parent_span_id),
            )
        })
        .collect();
    println!("spans (name, trace, parent): {summary:#?}");
    assert!(
        spans
            .iter()
            .all(|s| s.service.as_deref() == Some("stepwise")),
        "{summary:?}"
    );

    // The event's span continues the sender's trace.
    let [event_span] = named(&spans, "event probe/script")[..] else {
        panic!("one event span: {summary:?}")
    };
    assert_eq!(hex(&event_span.span.trace_id), SENDER_TRACE);
    assert_eq!(hex(&event_span.span.parent_span_id), SENDER_SPAN);
    assert_eq!(
        event_span.attribute("stepwise.event.id").as_deref(),
        Some(event_id.as_str())
    );

    // The run is a trace of its own, named by the run's id, linked to it.
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name.starts_with("run ") && hex(&s.span.trace_id) == run_trace)
        .collect();
    let [root] = roots[..] else {
        panic!("one root span in the run's trace: {summary:?}")
    };
    assert!(root.span.parent_span_id.is_empty(), "{summary:?}");
    assert_eq!(
        root.attribute("stepwise.run.id").as_deref(),
        Some(run.as_str())
    );
    assert_eq!(
        root.attribute("stepwise.run.status").as_deref(),
        Some("completed")
    );
    assert_eq!(root.span.links.len(), 1, "{summary:?}");
    assert_eq!(
        (
            hex(&root.span.links[0].trace_id),
            hex(&root.span.links[0].span_id)
        ),
        (SENDER_TRACE.to_string(), hex(&event_span.span.span_id)),
        "the run links to its event's span"
    );

    // A span per attempt of the flaky step, the first failed.
    let mut attempts = named(&spans, "step flaky");
    attempts.sort_by_key(|s| s.attribute("stepwise.step.attempt"));
    assert_eq!(attempts.len(), 2, "{summary:?}");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(hex(&attempt.span.trace_id), run_trace);
        assert_eq!(attempt.span.parent_span_id, root.span.span_id);
        assert_eq!(
            attempt.attribute("stepwise.step.attempt"),
            Some(n.to_string())
        );
        assert!(attempt.span.start_time_unix_nano <= attempt.span.end_time_unix_nano);
    }
    let failed = attempts[0].span.status.as_ref().expect("a status");
    assert!(failed.message.contains("500"), "{failed:?}");
    assert!(attempts[1].span.start_time_unix_nano >= attempts[0].span.end_time_unix_nano);

    // The sleep and the wait are spans too, as long as they lasted.
    let [nap] = named(&spans, "sleep nap")[..] else {
        panic!("one sleep span: {summary:?}")
    };
    let slept_ms = (nap.span.end_time_unix_nano - nap.span.start_time_unix_nano) / 1_000_000;
    assert!((1_000..30_000).contains(&slept_ms), "slept {slept_ms} ms");
    let [wait] = named(&spans, "wait go")[..] else {
        panic!("one wait span: {summary:?}")
    };
    assert_eq!(
        wait.attribute("stepwise.wait.event").as_deref(),
        Some("probe/go")
    );
    assert_eq!(wait.span.parent_span_id, root.span.span_id);

    // Each attempt's outgoing call carried that attempt's span.
    let carried = loopback.traceparents(&run, "flaky");
    let expected: Vec<_> = attempts
        .iter()
        .map(|a| Some(format!("00-{run_trace}-{}-01", hex(&a.span.span_id))))
        .collect();
    assert_eq!(carried, expected);
}

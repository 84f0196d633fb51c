//! Inngest's function model, every language: the same scenarios run against
//! `tests/guests/flow` in Rust and its Python and JavaScript ports
//! (`tests/guests/{python,js}/flow`), each on a host of its own, and must
//! leave the same journals (step ids, kinds, statuses, attempts, outputs),
//! the same run statuses, outputs and errors, and the same facts (how many
//! runs started, how many times a step body ran).
//!
//! Only what is deterministic is compared: ids and event times are replaced
//! by placeholders, and runs whose order depends on timing are sorted.

use crate::{PATIENCE, deployed, guest_app};
use serde_json::{Value, json};
use stepwise_host::api::views::RunDetail;
use stepwise_tests::{HostProcess, Loopback, Plan, guests};

/// The Python port of `tests/guests/flow`.
const PYTHON_FLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/python/flow/app.py");
/// The JavaScript port of `tests/guests/flow`.
const JS_FLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/js/flow/app.js");

/// What one language did, scenario by scenario: a label and a JSON value
/// (a run's outcome, or a fact such as a count).
type Results = Vec<(String, Value)>;

const TERMINAL: [&str; 4] = ["completed", "failed", "cancelled", "skipped"];

/// Whether `c` can be part of a ULID (Crockford's base 32).
fn ulid_char(c: char) -> bool {
    c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))
}

/// `text` with every ULID (run and event ids) replaced by `<id>`.
fn scrub_ids(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() == 26 && word.chars().all(ulid_char) {
            out.push_str("<id>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The fields of an event that hold times.
const TIMES: [&str; 2] = ["ts", "received_at"];

/// `value` without what differs per run: ids in strings, and events' times.
fn scrub(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(scrub_ids(text)),
        Value::Array(items) => Value::Array(items.iter().map(scrub).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = if TIMES.contains(&k.as_str()) {
                        json!("<time>")
                    } else {
                        scrub(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A run's observable result (as `conformance.rs`'s `outcome`), scrubbed.
fn outcome(run: &RunDetail) -> Value {
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|s| {
            let output = match (s.kind.as_str(), &s.output) {
                // A wait's output is the event, whose id and times differ per run.
                ("wait", Some(event)) if event.is_object() => {
                    json!({"name": event["name"], "data": event["data"]})
                }
                (_, output) => json!(output),
            };
            let error = s.error.as_ref().map(|e| &e.message);
            json!({"id": s.id, "kind": s.kind, "status": s.status, "attempts": s.attempts, "output": output, "error": error})
        })
        .collect();
    scrub(&json!({
        "status": run.run.status,
        "kind": run.run.kind,
        "started": run.run.started_at.is_some(),
        "output": run.run.output,
        "error": run.run.error,
        "steps": steps,
    }))
}

/// Sends `name` with `data` and returns the id of the run it starts.
async fn start(host: &HostProcess, name: &str, data: Value) -> String {
    let event = host.send(name, data).await.unwrap();
    host.run_for_event(&event).await.unwrap()
}

/// Run `id` once its status is one of `statuses` or it has ended.
async fn settled(host: &HostProcess, id: &str, statuses: &[&str]) -> RunDetail {
    host.wait_for(id, PATIENCE, |r| {
        TERMINAL.iter().chain(statuses).any(|s| r.run.status == *s)
    })
    .await
    .unwrap()
}

/// The outcome of run `id` once it has ended.
async fn ended(host: &HostProcess, id: &str) -> Value {
    outcome(&settled(host, id, &[]).await)
}

/// The outcomes of the runs of `function` once `n` have ended, sorted by
/// output (their order depends on timing).
async fn ended_runs(host: &HostProcess, function: &str, n: usize) -> Vec<Value> {
    let runs = host
        .wait_runs(function, PATIENCE, |runs| {
            runs.iter()
                .filter(|r| TERMINAL.contains(&r.status.as_str()))
                .count()
                >= n
        })
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for run in runs {
        outcomes.push(outcome(&host.run(&run.id).await.unwrap()));
    }
    outcomes.sort_by_key(|o| o["output"].to_string());
    outcomes
}

/// `outcomes` labelled `label 0`, `label 1`, ...
fn numbered(label: &str, outcomes: Vec<Value>) -> Results {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| (format!("{label} {i}"), o))
        .collect()
}

fn fact(label: &str, value: Value) -> (String, Value) {
    (label.to_string(), value)
}

/// The registered functions, without the version (a content hash) and
/// the benchmark's `burn`, which only the Rust guest has.
async fn registration(host: &HostProcess) -> Results {
    let mut functions: Vec<Value> = host
        .get("/v1/functions")
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["id"] != "burn")
        .map(|mut f| {
            if let Some(fields) = f.as_object_mut() {
                fields.remove("version");
            }
            f
        })
        .collect();
    functions.sort_by_key(|f| f["id"].as_str().map(str::to_string));
    vec![fact("registration", json!(functions))]
}

/// A trigger with `if`: `flow/filtered` with n <= 5 starts nothing.
async fn filtered(host: &HostProcess) -> Results {
    let ids = host
        .send_batch(vec![
            json!({"name": "flow/filtered", "data": {"n": 3}}),
            json!({"name": "flow/filtered", "data": {"n": 7}}),
            json!({"name": "flow/any", "data": {"n": 1}}),
        ])
        .await
        .unwrap();
    // Events are admitted before the answer: the runs there are now are
    // all there will be.
    let started = host.runs_of("filtered").await.unwrap().len();
    let mut results = vec![fact("filtered: runs", json!(started))];
    for (id, label) in ids[1..]
        .iter()
        .zip(["filtered: n > 5", "filtered: flow/any"])
    {
        let run = host.run_for_event(id).await.unwrap();
        results.push(fact(label, ended(host, &run).await));
    }
    results
}

/// Idempotency: one run per `orderId`.
async fn idempotent(host: &HostProcess) -> Results {
    host.send_batch(vec![
        json!({"name": "flow/idempotent", "data": {"orderId": "o-1", "try": 1}}),
        json!({"name": "flow/idempotent", "data": {"orderId": "o-1", "try": 2}}),
    ])
    .await
    .unwrap();
    for (order, attempt) in [("o-1", 3), ("o-2", 1)] {
        host.send("flow/idempotent", json!({"orderId": order, "try": attempt}))
            .await
            .unwrap();
    }
    let started = host.runs_of("idempotent").await.unwrap().len();
    let mut results = vec![fact("idempotent: runs", json!(started))];
    results.extend(numbered(
        "idempotent: run",
        ended_runs(host, "idempotent", started).await,
    ));
    results
}

/// Batches of 3: 7 events make two full batches and one after the timeout.
async fn batched(host: &HostProcess) -> Results {
    let events = (0..7)
        .map(|n| json!({"name": "flow/batched", "data": {"n": n}}))
        .collect();
    host.send_batch(events).await.unwrap();
    let outcomes = ended_runs(host, "batched", 3).await;
    let mut results = vec![fact(
        "batched: runs",
        json!(host.runs_of("batched").await.unwrap().len()),
    )];
    results.extend(numbered("batched: run", outcomes));
    results
}

/// Debounce: one run per key, with its last event.
async fn debounced(host: &HostProcess) -> Results {
    for (id, n) in [("p-1", 1), ("p-1", 2), ("p-1", 3), ("p-2", 9)] {
        host.send("flow/debounced", json!({"id": id, "n": n}))
            .await
            .unwrap();
    }
    let outcomes = ended_runs(host, "debounced", 2).await;
    let mut results = vec![fact(
        "debounced: runs",
        json!(host.runs_of("debounced").await.unwrap().len()),
    )];
    results.extend(numbered("debounced: run", outcomes));
    results
}

/// Singleton `function`: a second run with the active run's key is skipped
/// (`single-skip`) or replaces it (`single-cancel`); another key runs.
async fn singleton(host: &HostProcess, function: &str) -> Results {
    let event = format!("flow/{function}");
    let first = start(host, &event, json!({"id": "k"})).await;
    host.wait_status(&first, "sleeping", PATIENCE)
        .await
        .unwrap();
    let second = start(host, &event, json!({"id": "k"})).await;
    let other = start(host, &event, json!({"id": "other"})).await;
    let other = outcome(&settled(host, &other, &["sleeping"]).await);
    let second = outcome(&settled(host, &second, &["sleeping"]).await);
    let first = outcome(&host.run(&first).await.unwrap());
    vec![
        fact(&format!("{function}: first"), first),
        fact(&format!("{function}: second, same key"), second),
        fact(&format!("{function}: other key"), other),
    ]
}

/// cancelOn: by `match` (a), not by a condition that fails (b), by a
/// condition that holds (c).
async fn cancellable(host: &HostProcess) -> Results {
    let mut runs = Vec::new();
    for id in ["a", "b", "c"] {
        let run = start(host, "flow/cancellable", json!({"id": id})).await;
        host.wait_status(&run, "sleeping", PATIENCE).await.unwrap();
        runs.push(run);
    }
    host.send("flow/cancel", json!({"id": "a"})).await.unwrap();
    // Neither the wrong reason for b nor the right one for another id
    // cancels b.
    for data in [
        json!({"id": "b", "reason": "typo"}),
        json!({"id": "z", "reason": "fraud"}),
    ] {
        host.send("flow/cancel-if", data).await.unwrap();
    }
    host.send("flow/cancel-if", json!({"id": "c", "reason": "fraud"}))
        .await
        .unwrap();
    // Cancellations happen as the events are admitted.
    let mut results = Vec::new();
    for (run, label) in runs
        .iter()
        .zip(["match", "condition false", "condition true"])
    {
        let run = host.run(run).await.unwrap();
        results.push(fact(&format!("cancellable: {label}"), outcome(&run)));
    }
    results
}

/// timeouts.start: a run queued behind a held one is cancelled unstarted;
/// timeouts.finish: a sleeping run is cancelled.
async fn timeouts(host: &HostProcess) -> Results {
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("work", Plan::Hold);
    let first = start(host, "flow/slow-start", json!({"url": loopback.url})).await;
    assert!(
        loopback.wait_hits(&first, "work", 1, PATIENCE).await,
        "the first slow-start run never reached its step"
    );
    let second = start(host, "flow/slow-start", json!({"url": loopback.url})).await;
    let late = ended(host, &second).await;
    loopback.release();
    let first = ended(host, &first).await;
    let slow = start(host, "flow/slow-finish", json!({})).await;
    let mut slow = ended(host, &slow).await;
    // Whether the 1 s ran out before or after the run's first step depends
    // on the machine's load.
    slow["steps"] = Value::Null;
    vec![
        fact("slow-start: holding the slot", first),
        fact("slow-start: queued behind it", late),
        fact("slow-finish", slow),
    ]
}

/// A wait with `match` and `if`: only the third payment lets it through.
async fn wait_if(host: &HostProcess) -> Results {
    let run = start(host, "flow/wait-if", json!({"order": "o-1", "total": 100})).await;
    host.wait_status(&run, "waiting", PATIENCE).await.unwrap();
    for (order, amount) in [("o-1", 50), ("o-2", 500), ("o-1", 150)] {
        host.send("flow/paid", json!({"order": order, "amount": amount}))
            .await
            .unwrap();
    }
    vec![fact("wait-if", ended(host, &run).await)]
}

/// invoke: a child that completes, one that fails, one that outlives the
/// invoke's timeout; the parents and the children.
async fn invoke(host: &HostProcess) -> Results {
    let cases = [
        ("ok", json!({"n": 21})),
        ("failing child", json!({"n": 1, "fail": true})),
        ("timeout", json!({"n": 1, "sleep": "1m", "timeout": "1s"})),
    ];
    let mut results = Vec::new();
    for (label, data) in cases {
        let parent = start(host, "flow/parent", data).await;
        let parent = settled(host, &parent, &[]).await;
        let child = parent
            .steps
            .first()
            .and_then(|s| s.child.as_deref())
            .unwrap_or_default();
        // The slow child sleeps on after its parent stopped waiting.
        let child = settled(host, child, &["sleeping"]).await;
        results.push(fact(&format!("invoke {label}: parent"), outcome(&parent)));
        results.push(fact(
            &format!("invoke {label}: child is invoked by its parent"),
            json!(child.run.parent.as_deref() == Some(parent.run.id.as_str())),
        ));
        results.push(fact(&format!("invoke {label}: child"), outcome(&child)));
    }
    results
}

/// send_event: two events sent once, each starting a `received` run.
async fn send_event(host: &HostProcess) -> Results {
    let loopback = Loopback::start().await.unwrap();
    let run = start(host, "flow/send", json!({"url": loopback.url, "n": 5})).await;
    let sender = ended(host, &run).await;
    let mut results = vec![
        fact("send: sender", sender),
        fact("send: after ran", json!(loopback.hits(&run, "after"))),
    ];
    results.extend(numbered(
        "send: received",
        ended_runs(host, "received", 2).await,
    ));
    results.push(fact(
        "send: received runs",
        json!(host.runs_of("received").await.unwrap().len()),
    ));
    results
}

/// on_failure and `inngest/function.failed`: `fails` fails for good, its
/// handler runs, and `watch-failures` (whose `if` names `fails`) runs.
async fn failure(host: &HostProcess) -> Results {
    let run = start(host, "flow/fails", json!({"id": "x-1"})).await;
    let failed = ended(host, &run).await;
    let runs = host
        .wait_runs("fails", PATIENCE, |runs| {
            runs.iter()
                .any(|r| r.kind == "on_failure" && TERMINAL.contains(&r.status.as_str()))
        })
        .await
        .unwrap();
    let handler = runs.iter().find(|r| r.kind == "on_failure").unwrap();
    let handler = host.run(&handler.id).await.unwrap();
    let watchers = host
        .wait_runs("watch-failures", PATIENCE, |runs| {
            runs.iter().any(|r| TERMINAL.contains(&r.status.as_str()))
        })
        .await
        .unwrap();
    let watcher = host.run(&watchers[0].id).await.unwrap();
    vec![
        fact("fails", failed),
        fact("fails: handler", outcome(&handler)),
        fact(
            "fails: the handler names the failed run",
            json!(
                handler
                    .run
                    .output
                    .as_ref()
                    .is_some_and(|o| o["failed_run"] == run.as_str())
            ),
        ),
        fact(
            "fails: the handler's event",
            scrub(handler.events.first().unwrap_or(&Value::Null)),
        ),
        fact("fails: watcher", outcome(&watcher)),
        fact(
            "fails: the watcher's event names the failed run",
            json!(
                watcher
                    .run
                    .output
                    .as_ref()
                    .is_some_and(|o| o["run_id"] == run.as_str())
            ),
        ),
    ]
}

/// Parallel branches: all succeeding; then one that fails once (and is
/// retried alone) and one that fails for good (retries: 2).
async fn fan(host: &HostProcess) -> Results {
    let run = start(host, "flow/fan", json!({"branches": 3})).await;
    let all_ok = ended(host, &run).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("branch-1", Plan::FailTimes(1));
    loopback.plan("branch-2", Plan::Reject);
    let run = start(
        host,
        "flow/fan",
        json!({"url": loopback.url, "branches": 3}),
    )
    .await;
    let some_fail = ended(host, &run).await;
    let hits: Vec<u32> = (0..3)
        .map(|i| loopback.hits(&run, &format!("branch-{i}")))
        .collect();
    vec![
        fact("fan: every branch succeeds", all_ok),
        fact(FAN_FAILING, some_fail),
        fact("fan: branch bodies run", json!(hits)),
    ]
}

const FAN_FAILING: &str = "fan: one branch retried, one failed";

/// Every scenario, at once, on one host running `component` (they use
/// different functions, so they do not disturb one another).
async fn scenarios(component: &str) -> Results {
    let (_dir, host) = deployed("flow", component).await;
    let host = &host;
    let (flow_control, steps) = tokio::join!(
        async {
            let (a, b, c, d, e, f, g, h, i) = tokio::join!(
                registration(host),
                filtered(host),
                idempotent(host),
                batched(host),
                debounced(host),
                singleton(host, "single-skip"),
                singleton(host, "single-cancel"),
                cancellable(host),
                timeouts(host),
            );
            [a, b, c, d, e, f, g, h, i].concat()
        },
        async {
            let (a, b, c, d, e) = tokio::join!(
                wait_if(host),
                invoke(host),
                send_event(host),
                failure(host),
                fan(host),
            );
            [a, b, c, d, e].concat()
        },
    );
    let mut results = [flow_control, steps].concat();
    // Every failure emits `inngest/function.failed` (the failing child's
    // too), and all have been admitted by now: only one passed the `if`.
    results.push(fact(
        "watch-failures: runs",
        json!(host.runs_of("watch-failures").await.unwrap().len()),
    ));
    results
}

/// The value labelled `label`.
fn get<'a>(results: &'a Results, label: &str) -> &'a Value {
    results
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no result {label:?}"))
}

/// Asserts that `language` gave the same results as Rust, showing both
/// sides of every scenario that differs.
fn assert_same(language: &str, theirs: &Results, rust: &Results) {
    let labels = |r: &Results| r.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    assert_eq!(labels(theirs), labels(rust), "{language}: the scenarios");
    let differences: Vec<String> = theirs
        .iter()
        .zip(rust)
        .filter(|((_, theirs), (_, rust))| theirs != rust)
        .map(|((label, theirs), (_, rust))| {
            format!("`{label}`:\n{language}: {theirs:#}\nRust: {rust:#}")
        })
        .collect();
    assert!(
        differences.is_empty(),
        "{language} differs from Rust in {} scenario(s):\n{}",
        differences.len(),
        differences.join("\n\n")
    );
}

/// Asserts that Rust did what Inngest documents, so that the comparison
/// is with right answers.
fn assert_documented(rust: &Results) {
    let output = |label: &str| get(rust, label)["output"].clone();
    let status = |label: &str| get(rust, label)["status"].clone();
    let all = format!("{rust:#?}");
    // Flow control.
    assert_eq!(get(rust, "filtered: runs"), &json!(2), "{all}");
    assert_eq!(output("filtered: n > 5"), json!({"n": 7}), "{all}");
    assert_eq!(get(rust, "idempotent: runs"), &json!(2), "{all}");
    assert_eq!(
        output("idempotent: run 0"),
        json!({"orderId": "o-1", "try": 1}),
        "{all}"
    );
    assert_eq!(get(rust, "batched: runs"), &json!(3), "{all}");
    assert_eq!(output("batched: run 0"), json!([0, 1, 2]), "{all}");
    assert_eq!(output("batched: run 2"), json!([6]), "{all}");
    assert_eq!(get(rust, "debounced: runs"), &json!(2), "{all}");
    assert_eq!(
        output("debounced: run 0"),
        json!({"id": "p-1", "n": 3}),
        "{all}"
    );
    for (label, expected) in [
        ("single-skip: first", "sleeping"),
        ("single-skip: second, same key", "skipped"),
        ("single-skip: other key", "sleeping"),
        ("single-cancel: first", "cancelled"),
        ("single-cancel: second, same key", "sleeping"),
        ("cancellable: match", "cancelled"),
        ("cancellable: condition false", "sleeping"),
        ("cancellable: condition true", "cancelled"),
        ("slow-start: holding the slot", "completed"),
        ("slow-start: queued behind it", "cancelled"),
        ("slow-finish", "cancelled"),
    ] {
        assert_eq!(status(label), expected, "{label}: {all}");
    }
    let late = get(rust, "slow-start: queued behind it");
    assert_eq!(late["error"]["name"], "FunctionTimeoutError", "{late:#}");
    assert_eq!(late["started"], false, "{late:#}");
    // Steps and failures.
    assert_eq!(
        output("wait-if"),
        json!({"order": "o-1", "amount": 150}),
        "{all}"
    );
    assert_eq!(output("invoke ok: parent"), json!({"child": 42}), "{all}");
    for (label, expected) in [
        ("invoke failing child: parent", "the child was told to fail"),
        (
            "invoke timeout: parent",
            "did not end before the invoke's timeout",
        ),
    ] {
        let message = output(label)["child_error"].clone();
        let message = message.as_str().unwrap_or_default();
        assert!(message.contains(expected), "{label}: {message}");
    }
    assert_eq!(get(rust, "send: after ran"), &json!(1), "{all}");
    assert_eq!(get(rust, "send: received runs"), &json!(2), "{all}");
    assert_eq!(
        output("send: received 0"),
        json!({"n": 5, "copy": 1}),
        "{all}"
    );
    assert_eq!(status("fails"), "failed", "{all}");
    assert_eq!(get(rust, "fails: handler")["kind"], "on_failure", "{all}");
    for fact in [
        "fails: the handler names the failed run",
        "fails: the watcher's event names the failed run",
    ] {
        assert_eq!(get(rust, fact), &json!(true), "{fact}: {all}");
    }
    assert_eq!(get(rust, "watch-failures: runs"), &json!(1), "{all}");
    assert_eq!(
        get(rust, "fan: branch bodies run"),
        &json!([1, 2, 3]),
        "{all}"
    );
    assert_eq!(
        output(FAN_FAILING),
        json!({
            "branches": [{"step": "branch-0", "hit": 1}, {"step": "branch-1", "hit": 2}, {"failed": "HTTP 400"}],
            "join": [1, "two"],
        }),
        "{all}"
    );
}

/// The three builds of the flow guest: Rust, Python, JavaScript.
fn builds() -> (String, String, String) {
    (
        guests::FLOW.to_string(),
        guest_app(PYTHON_FLOW),
        guest_app(JS_FLOW),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_function_model_behaves_the_same_in_every_language() {
    let (rust, python, js) = builds();
    let (rust, python, js) = tokio::join!(scenarios(&rust), scenarios(&python), scenarios(&js),);
    assert_documented(&rust);
    assert_same("Python", &python, &rust);
    assert_same("JavaScript", &js, &rust);
}

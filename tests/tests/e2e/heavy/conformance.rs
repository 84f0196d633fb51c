//! One scenario, every language: the Rust, Python and JavaScript builds of an example
//! must leave identical journals (step ids, kinds, statuses, attempts,
//! outputs, order), the same run output and the same log.

use crate::{PATIENCE, deployed, guest_app, log_text};
use serde_json::{Value, json};
use stepwise_host::api::views::RunDetail;
use stepwise_host::model::ErrorRecord;
use stepwise_tests::guests;

/// A run's observable result, without times and ids that differ per run.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: String,
    /// The run's output (`null` when it has none, as the API shows it).
    output: Value,
    error: Option<ErrorRecord>,
    steps: Vec<Value>,
    log: String,
}

fn outcome(run: &RunDetail) -> Outcome {
    let steps = run
        .steps
        .iter()
        .map(|s| {
            let output = match (s.kind.as_str(), &s.output) {
                // A wait's output is the event, whose id and time differ per run.
                ("wait", Some(event)) if event.is_object() => {
                    json!({"name": event["name"], "data": event["data"]})
                }
                // Sent events' ids are made from the run id.
                ("send", output) => {
                    json!({"sent": output.as_ref().and_then(Value::as_array).map(Vec::len)})
                }
                (_, output) => output.clone().unwrap_or_default(),
            };
            let error = s.error.as_ref().map(|e| e.message.clone());
            json!({"id": s.id, "kind": s.kind, "status": s.status, "attempts": s.attempts, "output": output, "error": error})
        })
        .collect();
    Outcome {
        status: run.run.status.clone(),
        output: run.run.output.clone().unwrap_or_default(),
        error: run.run.error.clone(),
        steps,
        log: log_text(run),
    }
}

/// process-order on one host: order o-1 is paid, order o-2 is not.
async fn process_order(component: &str) -> (Outcome, Outcome) {
    let (_dir, host) = deployed("process-order", component).await;
    let order = |id: &str, timeout: &str| json!({"orderId": id, "userId": "u-1", "paymentDelay": "300ms", "paymentTimeout": timeout});
    let paid = host
        .send("shop/order.created", order("o-1", "60s"))
        .await
        .unwrap();
    let unpaid = host
        .send("shop/order.created", order("o-2", "1s"))
        .await
        .unwrap();
    let paid = host.run_for_event(&paid).await.unwrap();
    let unpaid = host.run_for_event(&unpaid).await.unwrap();
    host.wait_status(&paid, "waiting", PATIENCE).await.unwrap();
    host.send(
        "shop/payment.success",
        json!({"orderId": "o-1", "amount": 42}),
    )
    .await
    .unwrap();
    (
        outcome(
            &host
                .wait_status(&paid, "completed", PATIENCE)
                .await
                .unwrap(),
        ),
        outcome(
            &host
                .wait_status(&unpaid, "completed", PATIENCE)
                .await
                .unwrap(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn process_order_leaves_the_same_journal_in_every_language() {
    let python = guest_app(guests::PYTHON_PROCESS_ORDER);
    let js = guest_app(guests::JS_PROCESS_ORDER);
    let (rust, python, js) = tokio::join!(
        process_order(guests::PROCESS_ORDER),
        process_order(&python),
        process_order(&js),
    );
    assert_eq!(rust.0.output["status"], "shipped", "{rust:#?}");
    assert_eq!(rust.1.output["status"], "cancelled", "{rust:#?}");
    assert_eq!(python, rust, "Python");
    assert_eq!(js, rust, "JavaScript");
}

/// Sends each `(name, data)` to one host running `component` and returns
/// the outcome of each run, once all have ended.
async fn runs(component: &str, events: &[(&str, Value)]) -> Vec<Outcome> {
    let (_dir, host) = deployed("app", component).await;
    let mut outcomes = Vec::new();
    for (name, data) in events {
        let event = host.send(name, data.clone()).await.unwrap();
        let run = host.run_for_event(&event).await.unwrap();
        let ended = host
            .wait_for(&run, PATIENCE, |r| {
                ["completed", "failed"].iter().any(|s| r.run.status == *s)
            })
            .await
            .unwrap();
        outcomes.push(outcome(&ended));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread")]
async fn loops_and_retries_leave_the_same_journals_in_every_language() {
    let items = [(
        "batch/items.received",
        json!({"items": [{"id": "a", "qty": 2}, {"id": "b"}, {"id": "c", "qty": 4}]}),
    )];
    let flaky = [
        ("flaky/charge.requested", json!({})),
        ("flaky/validate.requested", json!({"sku": 7})),
    ];
    let (loop_py, loop_js) = (
        guest_app(guests::PYTHON_FAN_OUT_LOOP),
        guest_app(guests::JS_FAN_OUT_LOOP),
    );
    let (flaky_py, flaky_js) = (
        guest_app(guests::PYTHON_FLAKY_RETRY),
        guest_app(guests::JS_FLAKY_RETRY),
    );
    let (rust_loop, python_loop, js_loop, rust_flaky, python_flaky, js_flaky) = tokio::join!(
        runs(guests::FAN_OUT_LOOP, &items),
        runs(&loop_py, &items),
        runs(&loop_js, &items),
        runs(guests::FLAKY_RETRY, &flaky),
        runs(&flaky_py, &flaky),
        runs(&flaky_js, &flaky),
    );
    assert_eq!(
        rust_loop[0].output,
        json!({"items": 3, "units": 7}),
        "{rust_loop:#?}"
    );
    assert_eq!(python_loop, rust_loop, "Python");
    assert_eq!(js_loop, rust_loop, "JavaScript");
    assert_eq!(rust_flaky[0].steps[0]["attempts"], 3, "{rust_flaky:#?}");
    assert_eq!(rust_flaky[1].status, "failed", "{rust_flaky:#?}");
    assert_eq!(python_flaky, rust_flaky, "Python");
    assert_eq!(js_flaky, rust_flaky, "JavaScript");
}

/// The three builds of an example: the Rust component and the Python and
/// JavaScript ones (built now), each with the suffix its function ids carry.
fn builds(rust: &'static str, name: &str) -> [(String, &'static str); 3] {
    [
        (rust.to_string(), ""),
        (
            guest_app(&stepwise_tests::example_source("python", name)),
            "-py",
        ),
        (
            guest_app(&stepwise_tests::example_source("js", name)),
            "-js",
        ),
    ]
}

/// The ended runs of `function` on `host`, oldest first, once there are `n`.
async fn ended_runs(
    host: &stepwise_tests::HostProcess,
    function: &str,
    n: usize,
) -> Vec<RunDetail> {
    let terminal = ["completed", "failed", "cancelled", "skipped"];
    let mut runs = host
        .wait_runs(function, PATIENCE, |runs| {
            runs.len() >= n && runs.iter().all(|r| terminal.contains(&r.status.as_str()))
        })
        .await
        .unwrap();
    runs.sort_by_key(|r| r.id.clone());
    let mut detailed = Vec::new();
    for run in runs {
        detailed.push(host.run(&run.id).await.unwrap());
    }
    detailed
}

/// What the flow-control examples did on one host: the statuses of the
/// rate-limited runs, then the outcomes of the first of them, of the report
/// and of the one debounced run.
type FlowOutcome = (Vec<String>, Outcome, Outcome, Outcome);

/// sync-crm (rate limit), generate-report (priority) and index-product
/// (debounce) on one host.
async fn flow_examples(builds: [(String, &'static str); 3]) -> FlowOutcome {
    let [crm, report, product] = builds;
    let suffix = crm.1;
    let (_dir, host) = deployed("sync-crm", &crm.0).await;
    host.deploy("generate-report", &report.0).await.unwrap();
    host.deploy("index-product", &product.0).await.unwrap();
    let contacts = (0..12)
        .map(|i| json!({"name": "crm/contact.updated", "data": {"userId": "u-1", "contactId": format!("c-{i}")}}))
        .collect();
    host.send_batch(contacts).await.unwrap();
    host.send(
        "report/requested",
        json!({"account": "a-1", "plan": "enterprise"}),
    )
    .await
    .unwrap();
    for name in ["draft", "final"] {
        host.send("product/updated", json!({"productId": "p-1", "name": name}))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let crm_runs = ended_runs(&host, &format!("sync-crm{suffix}"), 12).await;
    let statuses = crm_runs.iter().map(|r| r.run.status.clone()).collect();
    let report = ended_runs(&host, &format!("generate-report{suffix}"), 1).await;
    let product = ended_runs(&host, &format!("index-product{suffix}"), 1).await;
    assert_eq!(product.len(), 1, "debounce: one run");
    (
        statuses,
        outcome(&crm_runs[0]),
        outcome(&report[0]),
        outcome(&product[0]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn flow_control_examples_behave_the_same_in_every_language() {
    let per_language = |i: usize| {
        let crm = builds(guests::SYNC_CRM, "sync-crm");
        let report = builds(guests::GENERATE_REPORT, "generate-report");
        let product = builds(guests::INDEX_PRODUCT, "index-product");
        [crm[i].clone(), report[i].clone(), product[i].clone()]
    };
    let (rust, python, js) = tokio::join!(
        flow_examples(per_language(0)),
        flow_examples(per_language(1)),
        flow_examples(per_language(2)),
    );
    assert_eq!(rust.0.iter().filter(|s| *s == "completed").count(), 10);
    assert_eq!(rust.0.iter().filter(|s| *s == "skipped").count(), 2);
    assert_eq!(rust.3.output["indexed"]["name"], "final", "{rust:#?}");
    assert_eq!(python, rust, "Python");
    assert_eq!(js, rust, "JavaScript");
}

/// fetch-parallel, risky-transfer (and its failure handler) and
/// daily-digest (send and invoke) on one host.
async fn step_examples(builds: [(String, &'static str); 3]) -> Vec<Outcome> {
    let [fetch, transfer, digest] = builds;
    let suffix = fetch.1;
    let (_dir, host) = deployed("fetch-parallel", &fetch.0).await;
    host.deploy("risky-transfer", &transfer.0).await.unwrap();
    host.deploy("daily-digest", &digest.0).await.unwrap();
    host.send("fetch/requested", json!({"items": ["a", "bb", "ccc"]}))
        .await
        .unwrap();
    host.send(
        "bank/transfer.init",
        json!({"transferId": "t-1", "amount": 50, "failCredit": true}),
    )
    .await
    .unwrap();
    host.send("digest/requested", json!({"orders": 5}))
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for (function, n) in [
        ("fetch-parallel", 1),
        ("risky-transfer", 2),
        ("daily-digest", 1),
        ("render-digest", 1),
    ] {
        for run in ended_runs(&host, &format!("{function}{suffix}"), n).await {
            outcomes.push(outcome(&run));
        }
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_failure_and_messaging_examples_behave_the_same_in_every_language() {
    let per_language = |i: usize| {
        let fetch = builds(guests::FETCH_PARALLEL, "fetch-parallel");
        let transfer = builds(guests::RISKY_TRANSFER, "risky-transfer");
        let digest = builds(guests::DAILY_DIGEST, "daily-digest");
        [fetch[i].clone(), transfer[i].clone(), digest[i].clone()]
    };
    let (rust, python, js) = tokio::join!(
        step_examples(per_language(0)),
        step_examples(per_language(1)),
        step_examples(per_language(2)),
    );
    assert_eq!(rust.len(), 5, "{rust:#?}");
    assert_eq!(rust[0].output["total"], 6, "{rust:#?}");
    assert_eq!(rust[1].status, "failed");
    assert_eq!(
        rust[2].steps[0]["id"], "rollback-funds",
        "the failure handler"
    );
    assert_eq!(rust[3].output["digest"], "5 orders today", "{rust:#?}");
    assert_eq!(python, rust, "Python");
    assert_eq!(js, rust, "JavaScript");
}

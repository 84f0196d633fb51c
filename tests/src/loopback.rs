//! A loopback HTTP server that step bodies call: it counts every execution
//! of every step body, notes the order calls arrive in and how many are in
//! flight at once, and the test decides how each step's call answers.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How the server answers calls for one step id.
#[derive(Debug, Clone)]
pub enum Plan {
    /// 500 for the first `n` calls, then 200.
    FailTimes(u32),
    /// 400 always (the probe turns it into a `NonRetriableError`).
    Reject,
    /// Hold the call open until [`Loopback::release`] (to kill the host
    /// while a step body is in flight).
    Hold,
    /// Hold a run's first call open until [`Loopback::release`], and
    /// answer its later ones at once (a body re-executed elsewhere ends
    /// while the first is still held).
    HoldFirst,
    /// Answer 200 after this long (to keep calls in flight together).
    Delay(Duration),
}

#[derive(Default)]
struct Shared {
    hits: Mutex<HashMap<String, u32>>,
    plans: Mutex<HashMap<String, Plan>>,
    /// `run/step` of every call, with when it arrived (ms since the epoch),
    /// in arrival order.
    arrivals: Mutex<Vec<(String, u64)>>,
    /// Calls in flight now, and the most seen at once.
    in_flight: Mutex<(u32, u32)>,
    /// The `traceparent` header of each call, by `run/step`, in arrival
    /// order (`None`: the call had none).
    traceparents: Mutex<HashMap<String, Vec<Option<String>>>>,
}

/// The server; it stops when the test's runtime ends.
pub struct Loopback {
    /// Its base URL.
    pub url: String,
    shared: Arc<Shared>,
    release: watch::Sender<bool>,
}

impl Loopback {
    /// The `traceparent` header of each call of `run`'s step `step`, in
    /// arrival order.
    pub fn traceparents(&self, run: &str, step: &str) -> Vec<Option<String>> {
        self.shared
            .traceparents
            .lock()
            .unwrap()
            .get(&format!("{run}/{step}"))
            .cloned()
            .unwrap_or_default()
    }

    /// Starts a server on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (release, released) = watch::channel(false);
        let app = Router::new()
            .route("/step/{run}/{step}", get(step))
            .route("/{kind}/{key}", get(other))
            .route("/outside", get(|| async { "reached" }))
            .with_state((shared.clone(), released));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Loopback {
            url,
            shared,
            release,
        })
    }

    /// Sets how calls for step `step` are answered.
    pub fn plan(&self, step: &str, plan: Plan) {
        self.shared
            .plans
            .lock()
            .unwrap()
            .insert(step.to_string(), plan);
    }

    /// Lets held calls (and future ones) through.
    pub fn release(&self) {
        self.shared
            .plans
            .lock()
            .unwrap()
            .retain(|_, p| !matches!(p, Plan::Hold | Plan::HoldFirst));
        let _ = self.release.send(true);
    }

    /// How many times the body of `step` ran in run `run`.
    pub fn hits(&self, run: &str, step: &str) -> u32 {
        let key = format!("{run}/{step}");
        self.shared
            .hits
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// Calls of every step of run `run`, by step id.
    pub fn hits_of_run(&self, run: &str) -> HashMap<String, u32> {
        let prefix = format!("{run}/");
        self.shared
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), *v)))
            .collect()
    }

    /// `run/step` of every call so far, in arrival order.
    pub fn arrivals(&self) -> Vec<String> {
        self.arrival_times()
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// `run/step` of every call so far with its arrival time (ms since the
    /// epoch), in arrival order.
    pub fn arrival_times(&self) -> Vec<(String, u64)> {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.lock().unwrap().0
    }

    /// The most calls that were in flight at once.
    pub fn max_in_flight(&self) -> u32 {
        self.shared.in_flight.lock().unwrap().1
    }

    /// Every call so far, of every path. (`/crm/c-1` counts as
    /// `hits("crm", "c-1")`.)
    pub fn total_hits(&self) -> u32 {
        self.shared.hits.lock().unwrap().values().sum()
    }

    /// Waits until the body of `step` of run `run` has been called `n` times.
    pub async fn wait_hits(&self, run: &str, step: &str, n: u32, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.hits(run, step) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

type LoopState = (Arc<Shared>, watch::Receiver<bool>);

/// `/crm/c-1`, `/fetch/a`: counted as run `crm`, step `c-1`.
async fn other(
    state: State<LoopState>,
    path: Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, String) {
    step(state, path, headers).await
}

/// Counts a call in flight for as long as it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let mut in_flight = shared.in_flight.lock().unwrap();
        in_flight.0 += 1;
        in_flight.1 = in_flight.1.max(in_flight.0);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.lock().unwrap().0 -= 1;
    }
}

async fn step(
    State((shared, mut released)): State<LoopState>,
    Path((run, step)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, String) {
    let _in_flight = InFlight::enter(&shared);
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    shared
        .traceparents
        .lock()
        .unwrap()
        .entry(format!("{run}/{step}"))
        .or_default()
        .push(traceparent);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    shared
        .arrivals
        .lock()
        .unwrap()
        .push((format!("{run}/{step}"), now));
    let hit = {
        let mut hits = shared.hits.lock().unwrap();
        let count = hits.entry(format!("{run}/{step}")).or_insert(0);
        *count += 1;
        *count
    };
    let plan = shared.plans.lock().unwrap().get(&step).cloned();
    let ok = (
        StatusCode::OK,
        json!({ "step": step, "hit": hit }).to_string(),
    );
    match plan {
        None => ok,
        Some(Plan::FailTimes(n)) if hit <= n => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("planned failure {hit} of {n}"),
        ),
        Some(Plan::FailTimes(_)) => ok,
        Some(Plan::Reject) => (StatusCode::BAD_REQUEST, "planned rejection".into()),
        Some(Plan::HoldFirst) if hit > 1 => ok,
        Some(Plan::Hold | Plan::HoldFirst) => {
            let _ = tokio::time::timeout(Duration::from_secs(120), released.wait_for(|r| *r)).await;
            ok
        }
        Some(Plan::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            ok
        }
    }
}

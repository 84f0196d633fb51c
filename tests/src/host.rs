//! A `stepwise` host as a child process, and the HTTP calls tests make to it.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stepwise_host::api::views::{RunDetail, RunView};

/// How a host is started.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Multiplier of Inngest's retry backoff (tests use a small one).
    pub retry_backoff_scale: f64,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    /// Listen here (and again after a restart) instead of on a new free
    /// port each time.
    pub listen: Option<String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            retry_backoff_scale: 0.0005,
            extra_args: Vec::new(),
            listen: None,
        }
    }
}

/// A running `stepwise serve` on a data directory; killed on drop. It
/// derefs to the [`Api`] of its default tenant.
pub struct HostProcess {
    binary: PathBuf,
    data_dir: PathBuf,
    /// The PostgreSQL journal's URL, when the tests run on that backend.
    store: Option<String>,
    options: HostOptions,
    child: Option<Child>,
    api: Api,
    /// The default tenant's management key, as the host printed it (empty
    /// when it printed none).
    pub management_key: String,
    /// What the host printed at its last start, up to its keys.
    pub start_output: Vec<String>,
}

/// A host's HTTP API as one tenant uses it: with its event key, and its
/// management key on `/v1` calls (none: the default tenant of a dev host).
#[derive(Clone)]
pub struct Api {
    /// The host's base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The tenant's event key.
    pub event_key: String,
    /// The tenant's management key, sent as `Authorization: Bearer ...`.
    pub key: Option<String>,
    http: reqwest::Client,
    log_path: PathBuf,
}

impl std::ops::Deref for HostProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl HostProcess {
    /// Starts `binary serve` on `data_dir` with a free port.
    pub fn start(binary: &str, data_dir: &Path, options: HostOptions) -> Result<Self> {
        let mut host = HostProcess {
            binary: PathBuf::from(binary),
            data_dir: data_dir.to_path_buf(),
            // A test that names its own store keeps it.
            store: match options.extra_args.iter().any(|a| a == "--store") {
                true => None,
                false => test_store(data_dir)?,
            },
            options,
            child: None,
            api: Api {
                url: String::new(),
                event_key: String::new(),
                key: None,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()?,
                log_path: data_dir.join("host.log"),
            },
            management_key: String::new(),
            start_output: Vec::new(),
        };
        host.spawn()?;
        Ok(host)
    }

    /// The host process's resident memory (VmRSS), bytes, while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The API as the tenant with these keys sees it.
    pub fn as_tenant(&self, management_key: &str, event_key: &str) -> Api {
        Api {
            key: Some(management_key.to_string()),
            event_key: event_key.to_string(),
            ..self.api.clone()
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("host.log"))?;
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .arg("--data")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.options.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--retry-backoff-scale")
            .arg(self.options.retry_backoff_scale.to_string())
            // The loopback servers tests count step bodies with (internal
            // addresses are reachable only when listed exactly).
            .args(["--allow-http", "127.0.0.1"])
            .args(self.store.iter().flat_map(|url| ["--store", url]))
            .args(&self.options.extra_args)
            .env("STEPWISE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut key, mut management) = (None, None, None);
        self.start_output.clear();
        while url.is_none() || key.is_none() || management.is_none() {
            let Some(line) = lines.next() else {
                bail!(
                    "the host exited before it was ready; its log:\n{}",
                    std::fs::read_to_string(self.data_dir.join("host.log")).unwrap_or_default()
                );
            };
            let line = line?;
            if let Some(rest) = line.strip_prefix("stepwise listening on ") {
                url = Some(rest.trim().to_string());
            } else if let Some(rest) = line.trim().strip_prefix("event key:") {
                key = rest.split_whitespace().next().map(str::to_string);
            } else if let Some(rest) = line.trim().strip_prefix("management key:") {
                management = rest.split_whitespace().next().map(str::to_string);
            } else if line.trim().starts_with("no event key") {
                // Revoked, or none (--require-keys): the key stays empty.
                key = Some(String::new());
            } else if line.trim().starts_with("no management key") {
                management = Some(String::new());
            } else if line.trim().starts_with("standing by:") {
                // Another host on the database leads: this one forwards to
                // it and prints no keys.
                key = Some(String::new());
                management = Some(String::new());
            } else if line.trim().starts_with("no default tenant") {
                key = Some(String::new());
                management = Some(String::new());
            }
            self.start_output.push(line);
        }
        // Keep draining stdout so the host never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.api.url = url.unwrap_or_default();
        self.api.event_key = key.unwrap_or_default();
        self.management_key = management.unwrap_or_default();
        self.child = Some(child);
        Ok(())
    }

    /// The host's process id (to read its memory use from `/proc`), while
    /// it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the host with SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to the host, while it runs.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill only sends a signal to our own child process.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// Waits up to `patience` for the host to exit by itself; its exit
    /// status, or `None` if it still runs.
    pub fn wait_exit(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + patience;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Starts the host again on the same data directory (after `kill`).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Api {
    /// The host's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A raw request builder, for tests of the API's error answers.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `request`; an HTTP error, or a success whose body is not
    /// JSON, is an error with the status and the body.
    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = request.send().await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {body}");
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body)
            .with_context(|| format!("HTTP {status} with a body that is not JSON: {body}"))
    }

    /// Deploys a component file as `app`.
    pub async fn deploy(&self, app: &str, file: &str) -> Result<Value> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        // Compiling a 10-20 MB Python or JavaScript component takes a while
        // on a loaded 2-core machine.
        let request = self
            .request(reqwest::Method::PUT, &format!("/v1/apps/{app}"))
            .timeout(Duration::from_secs(600))
            .body(bytes);
        self.json(request).await
    }

    /// Sends one event through Inngest's event API; returns its id.
    pub async fn send(&self, name: &str, data: Value) -> Result<String> {
        let body = self
            .json(
                self.request(reqwest::Method::POST, &format!("/e/{}", self.event_key))
                    .json(&json!({ "name": name, "data": data })),
            )
            .await?;
        body["ids"][0]
            .as_str()
            .map(str::to_string)
            .context("no event id in the answer")
    }

    /// Sends several events in one request; returns their ids.
    pub async fn send_batch(&self, events: Vec<Value>) -> Result<Vec<String>> {
        let body = self
            .json(
                self.request(reqwest::Method::POST, &format!("/e/{}", self.event_key))
                    .json(&events),
            )
            .await?;
        Ok(body["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect())
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.json(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    /// The runs of `function`, newest first.
    pub async fn runs_of(&self, function: &str) -> Result<Vec<RunView>> {
        Ok(self
            .runs()
            .await?
            .into_iter()
            .filter(|r| r.function == function)
            .collect())
    }

    /// Polls the runs of `function` until `done` holds for them; fails
    /// after `timeout` with what they were, or at once on an API error.
    pub async fn wait_runs(
        &self,
        function: &str,
        timeout: Duration,
        done: impl Fn(&[RunView]) -> bool,
    ) -> Result<Vec<RunView>> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.runs_of(function).await?;
            if done(&runs) {
                return Ok(runs);
            }
            if Instant::now() > deadline {
                bail!(
                    "the runs of {function} did not get there in {timeout:?}; they are:\n{}\nhost log:\n{}",
                    pretty(&runs),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls every run until `done` holds for them; fails after `timeout`
    /// with how many there were, or at once on an API error (only "not
    /// yet" is worth another look).
    pub async fn wait_for_runs(
        &self,
        timeout: Duration,
        done: impl Fn(&[RunView]) -> bool,
    ) -> Result<Vec<RunView>> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.runs().await?;
            if done(&runs) {
                return Ok(runs);
            }
            if Instant::now() > deadline {
                let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
                for run in &runs {
                    *statuses.entry(run.status.clone()).or_default() += 1;
                }
                bail!(
                    "the runs did not get there in {timeout:?}: {} runs, by status {statuses:?}\nhost log:\n{}",
                    runs.len(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET path`, answered with JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    /// `GET path`, answered with JSON read as a `T` (a run, a list of
    /// runs); an answer of another shape is an error with the body.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.get(path).await?;
        serde_json::from_value(body.clone())
            .with_context(|| format!("GET {path} answered with an unexpected shape: {body:#}"))
    }

    /// A run with its steps and logs.
    pub async fn run(&self, id: &str) -> Result<RunDetail> {
        self.get_as(&format!("/v1/runs/{id}")).await
    }

    /// Runs, newest first.
    pub async fn runs(&self) -> Result<Vec<RunView>> {
        self.get_as("/v1/runs?limit=10000").await
    }

    /// The run started by event `event_id`, once it exists.
    pub async fn run_for_event(&self, event_id: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for run in self.runs().await? {
                if run.event_ids.iter().any(|i| i == event_id) {
                    return Ok(run.id);
                }
            }
            if Instant::now() > deadline {
                bail!("no run for event {event_id}; host log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls run `id` until `done` holds for it (or fails after `timeout`).
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&RunDetail) -> bool,
    ) -> Result<RunDetail> {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.run(id).await?;
            if done(&run) {
                return Ok(run);
            }
            if Instant::now() > deadline {
                bail!(
                    "run {id} did not get there in {timeout:?}; it is:\n{}\nhost log:\n{}",
                    pretty(&run),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// Polls run `id` until its status is `status`; fails at once if the
    /// run ends with another status.
    pub async fn wait_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<RunDetail> {
        let terminal = ["completed", "failed", "cancelled"];
        let run = self
            .wait_for(id, timeout, |run| {
                run.run.status == status || terminal.contains(&run.run.status.as_str())
            })
            .await?;
        if run.run.status != status {
            bail!(
                "run {id} ended {:?} while waiting for it to be {status}:\n{}",
                run.run.status,
                pretty(&run)
            );
        }
        Ok(run)
    }
}

/// `value` as the API answered it: pretty JSON (for failure messages).
pub fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(not serialisable: {e})"))
}

/// Whether the tests run every host's journal in PostgreSQL: the
/// `e2e_postgres` test binary does (it is the `e2e` suite under another
/// name), `e2e` runs on sled; `STEPWISE_TEST_STORE=postgres` or `=sled`
/// chooses for any binary.
pub fn on_postgres() -> bool {
    match std::env::var("STEPWISE_TEST_STORE") {
        Ok(store) => store == "postgres",
        Err(_) => std::env::current_exe().is_ok_and(|exe| {
            exe.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("e2e_postgres"))
        }),
    }
}

/// The journal a host on `data_dir` would open, opened by the test itself
/// (with no host on it) to plant records an older host could have left.
pub fn open_journal(data_dir: &Path) -> Result<Box<dyn stepwise_host::journal::Journal>> {
    Ok(match test_store(data_dir)? {
        Some(url) => Box::new(stepwise_host::journal::PgJournal::open(&url)?),
        None => Box::new(stepwise_host::journal::SledJournal::open(
            &data_dir.join("journal"),
        )?),
    })
}

/// What every table of the PostgreSQL journal of a host on `data_dir`
/// holds, printable bytes as they are (`None` on sled).
pub fn database_contents(data_dir: &Path) -> Result<Option<String>> {
    let Some(url) = test_store(data_dir)? else {
        return Ok(None);
    };
    crate::postgres::cluster()?.contents(&url).map(Some)
}

/// How much the journal of a host on `data_dir` keeps: on sled, the bytes
/// of its files; on PostgreSQL, its rows (PostgreSQL reuses a deleted
/// row's space only after a vacuum, which it runs when it chooses).
pub fn store_footprint(data_dir: &Path) -> Result<u64> {
    match test_store(data_dir)? {
        Some(url) => crate::postgres::cluster()?.rows(&url),
        None => bytes_under(&data_dir.join("journal")),
    }
}

/// Bytes of the files under `dir`.
fn bytes_under(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += match meta.is_dir() {
            true => bytes_under(&entry.path())?,
            false => meta.len(),
        };
    }
    Ok(total)
}

/// The `--store` URL of a host on `data_dir` when the tests run on
/// PostgreSQL: a new database for a new data directory, the same one again
/// for a host started again on it (a restart is the same host).
fn test_store(data_dir: &Path) -> Result<Option<String>> {
    if !on_postgres() {
        return Ok(None);
    }
    let remembered = data_dir.join("test-store-url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return Ok(Some(url));
    }
    let url = crate::postgres::cluster()?.new_database()?;
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&remembered, &url)?;
    Ok(Some(url))
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

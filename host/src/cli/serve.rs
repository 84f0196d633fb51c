//! `stepwise serve` and `stepwise dev`.

use super::ServeArgs;
use crate::api;
use crate::api::forward::Role;
use crate::cluster::{self, Claim, Leadership, Leases};
use crate::config::{HostConfig, Limits};
use crate::model::DEFAULT_TENANT;
use crate::retry::Backoff;
use crate::runtime::Stepwise;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Logs to stderr, as text for people or as one JSON object per line for
/// a log pipeline (`--log-format json`); `STEPWISE_LOG` filters them.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("STEPWISE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,cranelift=warn,wasmtime=warn,sled=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// How the host writes its logs.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields.
    Json,
}

/// Runs a host until Ctrl-C or SIGTERM; with `examples`, builds and deploys
/// them first (`dev`).
pub async fn serve(args: ServeArgs, examples: Option<PathBuf>) -> Result<()> {
    init_logging(args.log_format);
    check_operator_keys(&args)?;
    let config = host_config(&args, examples.is_some());
    let built = match &examples {
        Some(dir) => build_examples(dir)?,
        None => Vec::new(),
    };
    if let Some(url) = args.store.clone() {
        return serve_on_postgres(args, config, &url, built).await;
    }
    let host = Stepwise::start(config).await?;
    let listener = bind(&args).await?;
    let address = listener.local_addr()?;
    announce(&host, address, &args);
    serve_metrics(&host, &args).await?;
    ready(&host, address, &built).await?;
    let router = api::router(host.clone(), args.intake.auth_throttle());
    let leading = Arc::new(OnceLock::from(host.clone()));
    let stopped = graceful_stop(Signals::listen()?, leading, args.shutdown_timeout);
    api::conn::serve(listener, router, args.intake.limits(), stopped).await;
    host.commit.durable().await?;
    tracing::info!("stopped");
    Ok(())
}

/// A host whose journal is in PostgreSQL, where others may share it: it
/// leads when it wins the runs lease, and stands by until then, forwarding
/// requests to the leader (see [`crate::cluster`]).
async fn serve_on_postgres(
    args: ServeArgs,
    mut config: HostConfig,
    url: &str,
    built: Vec<(String, PathBuf)>,
) -> Result<()> {
    crate::journal::restrict_new_files();
    crate::journal::make_private(&args.data_dir)
        .with_context(|| format!("preparing the data directory {}", args.data_dir.display()))?;
    let _lock = cluster::lock_data_dir(&args.data_dir)?;
    let host_id = cluster::host_id(&args.data_dir, args.host_id.as_deref())?;
    let listener = bind(&args).await?;
    let address = listener.local_addr()?;
    let advertised = args
        .advertise
        .clone()
        .unwrap_or_else(|| advertised_url(address));
    let ttl = args.lease_ttl.max(Duration::from_millis(400));
    let mut leases = Leases::open(url, &host_id, &advertised, ttl).await?;
    let first = leases.claim(cluster::RUNS_LEASE).await?;
    let standing_by = match first {
        Claim::Won { epoch } => Err(epoch),
        Claim::HeldBy {
            holder,
            address: at,
        } => Ok((holder, at)),
    };
    let signals = Signals::listen()?;
    // The host, once this one leads: what a SIGTERM stops gracefully.
    let leading: Arc<OnceLock<Arc<Stepwise>>> = Arc::default();
    let (role, role_seen) = tokio::sync::watch::channel(Role::Starting);
    let work = Arc::new(crate::work::WorkerStats::default());
    // Proves to the other hosts that a request comes from one of them.
    let secret = leases.forwarding_secret().to_string();
    let router = match &standing_by {
        Err(_) => None,
        Ok((holder, at)) => {
            role.send_replace(Role::Forward(at.clone()));
            println!("stepwise listening on http://{address}");
            println!("  data directory: {}", args.data_dir.display());
            println!("  journal: PostgreSQL (--store), host id {host_id}");
            println!(
                "  standing by: host {holder} leads ({at}); requests here are forwarded to it, and this host takes over when it stops"
            );
            flush_stdout();
            Some(api::forward::router(
                role_seen.clone(),
                host_id.clone(),
                secret.clone(),
                config.limits.max_component_bytes + 64 * 1024,
                work.clone(),
            ))
        }
    };
    // A standby executes jobs for the leader until it leads itself.
    let worker = standing_by.is_ok().then(|| {
        tokio::spawn(crate::work::worker::work(
            role_seen,
            host_id.clone(),
            secret.clone(),
            config.clone(),
            Some(address),
            work.clone(),
        ))
    });
    let lead = async {
        let epoch = match standing_by {
            Err(epoch) => epoch,
            Ok(_) => {
                let epoch = cluster::wait_to_lead(&mut leases, ttl, |at| {
                    // Told only of a change: requests waiting for a new
                    // leader wake on it.
                    role.send_if_modified(|role| match role {
                        Role::Forward(known) if known == at => false,
                        _ => {
                            *role = Role::Forward(at.to_string());
                            true
                        }
                    });
                })
                .await;
                role.send_replace(Role::Starting);
                epoch
            }
        };
        if let Some(worker) = &worker {
            // Its executions belong to the last leader's sessions, which
            // are over: this host replays their runs as it starts.
            worker.abort();
        }
        config.forwarding_secret = Some(secret.clone());
        config.share_work = Some(ttl);
        let leadership = Leadership::keep(leases, epoch, ttl);
        config.fence = Some(leadership.fence());
        let host = Stepwise::start(config).await?;
        tracing::info!(host_id, epoch, "leading: this host holds the runs lease");
        Ok::<_, anyhow::Error>((host, leadership))
    };
    let Some(router) = router else {
        // Leading from the start: as a lone host, with its own router.
        let (host, leadership) = lead.await?;
        announce(&host, address, &args);
        serve_metrics(&host, &args).await?;
        println!(
            "  leading: host {host_id} holds the runs lease (epoch {})",
            leadership.epoch()
        );
        ready(&host, address, &built).await?;
        let router = api::router(host.clone(), args.intake.auth_throttle());
        let leading = Arc::new(OnceLock::from(host.clone()));
        let stopped = graceful_stop(signals, leading, args.shutdown_timeout);
        api::conn::serve(listener, router, args.intake.limits(), stopped).await;
        return stop(&host, &leadership).await;
    };
    let stopped = graceful_stop(signals, leading.clone(), args.shutdown_timeout);
    let serving = api::conn::serve(listener, router, args.intake.limits(), stopped);
    tokio::pin!(serving);
    let (host, leadership) = tokio::select! {
        _ = &mut serving => {
            if let Some(worker) = &worker {
                worker.abort();
            }
            work.leave(&secret).await;
            tracing::info!("stopped while standing by");
            return Ok(());
        }
        led = lead => led?,
    };
    host.own_address.set(address);
    let _ = leading.set(host.clone());
    serve_metrics(&host, &args).await?;
    role.send_replace(Role::Lead(api::router(
        host.clone(),
        args.intake.auth_throttle(),
    )));
    println!(
        "  leading now: host {host_id} took the runs lease over (epoch {})",
        leadership.epoch()
    );
    for (app, path) in &built {
        deploy_example(&host, app, path).await?;
    }
    flush_stdout();
    serving.await;
    stop(&host, &leadership).await
}

/// Serves `GET /metrics` on `--metrics-listen`, if given, until the
/// process ends.
async fn serve_metrics(host: &Arc<Stepwise>, args: &ServeArgs) -> Result<()> {
    let Some(at) = args.metrics_listen else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("listening on --metrics-listen {at}"))?;
    println!(
        "  metrics: http://{}/metrics (no key: keep this address private)",
        listener.local_addr()?
    );
    let router = api::metrics_router(host.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the --metrics-listen server stopped");
        }
    });
    Ok(())
}

/// Stops a leading host: what it applied is flushed, then its lease goes
/// to whichever standby claims it first.
async fn stop(host: &Stepwise, leadership: &Leadership) -> Result<()> {
    host.commit.durable().await?;
    leadership.release().await;
    tracing::info!("stopped");
    Ok(())
}

/// The URL other hosts reach this one's API at when `--advertise` is not
/// given: the address it listens on, or the machine's name when that is
/// every interface.
fn advertised_url(address: std::net::SocketAddr) -> String {
    if address.ip().is_unspecified() {
        let name = cluster::hostname();
        if !name.is_empty() {
            return format!("http://{name}:{}", address.port());
        }
    }
    format!("http://{address}")
}

/// The host's settings from the command line.
fn host_config(args: &ServeArgs, dev: bool) -> HostConfig {
    HostConfig {
        data_dir: args.data_dir.clone(),
        store: args.store.clone(),
        fence: None,
        forwarding_secret: None,
        share_work: None,
        journal_fsync: !args.unsafe_no_fsync,
        otlp_endpoint: args.otlp_endpoint.clone(),
        compiled_dir: args.compiled_dir.clone(),
        event_key: args.event_key.clone(),
        keep_old_event_key: args.keep_old,
        admin_key: args.admin_key.clone(),
        require_keys: args.require_keys,
        backoff: Backoff::scaled(args.retry_backoff_scale),
        keep_versions: args.keep_versions,
        dev_loopback: dev,
        default_http_allow: args.allow_http.clone(),
        limits: Limits {
            max_steps_per_run: args.max_steps_per_run,
            max_executing: args.max_executing.max(1),
            executing_share: args.executing_share,
            executing_reserve: args.executing_reserve,
            step_timeout_ms: (args.step_timeout.as_millis() as u64).max(10),
            guest_memory_budget: args
                .guest_memory
                .unwrap_or_else(crate::config::default_budget),
            storage_bytes: args.storage_quota,
            retention_ms: (args.retention.as_millis() as u64).max(1),
            created_tenant_events_per_second: args.tenant_events_per_second,
            host_queued_runs: args
                .max_queued
                .unwrap_or_else(|| Limits::default().host_queued_runs),
            ..Limits::default()
        },
    }
}

async fn bind(args: &ServeArgs) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another host running? use --listen)",
                args.listen
            )
        })
}

/// Prints where the host listens and how to call it.
fn announce(host: &Stepwise, address: std::net::SocketAddr, args: &ServeArgs) {
    host.own_address.set(address);
    println!("stepwise listening on http://{address}");
    println!("  data directory: {}", args.data_dir.display());
    if args.store.is_some() {
        println!("  journal: PostgreSQL (--store)");
    }
    for line in host.tenants.start_lines(&address.to_string()) {
        println!("{line}");
    }
    if host.config.require_keys {
        println!("  /v1 calls need a management key (--require-keys)");
    }
    if host.tenants.admin_enabled() {
        println!("  tenant management: on (/v1/tenants with the admin key)");
    }
}

/// Deploys the examples (`dev`) and says how to try them.
async fn ready(
    host: &Arc<Stepwise>,
    address: std::net::SocketAddr,
    built: &[(String, PathBuf)],
) -> Result<()> {
    for (app, path) in built {
        deploy_example(host, app, path).await?;
    }
    if !built.is_empty() {
        println!();
        println!("Try it:");
        println!("  export STEPWISE_SERVER=http://{address}");
        println!(
            "  cargo run -p stepwise-host -- send shop/order.created --data '{{\"orderId\":\"o-1\",\"userId\":\"u-1\",\"paymentDelay\":\"5s\",\"paymentTimeout\":\"1m\"}}'"
        );
        println!(
            "  cargo run -p stepwise-host -- send shop/payment.success --data '{{\"orderId\":\"o-1\",\"amount\":42}}'"
        );
        println!("  cargo run -p stepwise-host -- runs");
        println!("  cargo run -p stepwise-host -- run <RUN_ID>");
    }
    flush_stdout();
    Ok(())
}

fn flush_stdout() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Refuses weak keys from the operator before anything starts.
fn check_operator_keys(args: &ServeArgs) -> Result<()> {
    if let Some(key) = &args.admin_key {
        api::check_operator_key("--admin-key (STEPWISE_ADMIN_KEY)", key, api::KeyUse::Header)
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(key) = &args.event_key {
        api::check_operator_key(
            "--event-key (STEPWISE_EVENT_KEY)",
            key,
            api::KeyUse::UrlPath,
        )
        .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// SIGTERM and Ctrl-C (SIGINT), as they arrive.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Takes both signals over from now on (their default is to end the
    /// process at once).
    fn listen() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// The next of either.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Completes when the API should stop serving. On the first signal the
/// leading host (if this one leads by then) begins stopping: requests are
/// answered 503, step bodies in progress may finish (up to `patience`),
/// none begins. A second signal ends the process at once, once what was
/// applied is flushed: everything acknowledged was durable already.
async fn graceful_stop(
    mut signals: Signals,
    leading: Arc<OnceLock<Arc<Stepwise>>>,
    patience: Duration,
) {
    signals.next().await;
    let Some(host) = leading.get().cloned() else {
        tracing::info!("stopping (standing by)");
        return;
    };
    tracing::info!(
        step_bodies = host.drain.bodies(),
        ?patience,
        "stopping: requests are answered 503, step bodies in progress may finish (--shutdown-timeout), no new one begins; a second signal stops at once"
    );
    host.begin_stopping();
    let forced = host.clone();
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: stopping at once");
        if let Err(error) = forced.commit.durable().await {
            tracing::error!(error = format!("{error:#}"), "flushing before exit failed");
        }
        flush_stdout();
        std::process::exit(0);
    });
    if host.drained(patience).await {
        tracing::info!("every step body in progress has finished and is journaled");
    } else {
        tracing::warn!(
            step_bodies = host.drain.bodies(),
            "--shutdown-timeout passed with step bodies still running: their runs resume after the restart, and those bodies run again"
        );
    }
}

async fn deploy_example(host: &Arc<Stepwise>, app: &str, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let deployed = host
        .deploy(DEFAULT_TENANT, app, bytes.into())
        .await
        .with_context(|| format!("deploying example {app}"))?;
    let triggers: Vec<String> = deployed
        .functions
        .iter()
        .map(|f| {
            let triggers: Vec<String> = f.triggers.iter().map(|t| t.describe()).collect();
            format!("{} <- {}", f.id, triggers.join(", "))
        })
        .collect();
    println!("  deployed {app}: {}", triggers.join("; "));
    Ok(())
}

/// The examples workspace: the one given, `./examples`, or the one beside
/// this crate's sources.
pub fn examples_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    let candidates = match given {
        Some(dir) => vec![dir],
        None => vec![
            PathBuf::from("examples"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"),
        ],
    };
    for dir in &candidates {
        if dir.join("Cargo.toml").is_file() {
            return Ok(dir.clone());
        }
    }
    bail!(
        "no examples workspace found (looked in {}); pass --examples DIR",
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Builds the examples to wasm32-wasip2 and returns (app name, component).
fn build_examples(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let manifest = dir.join("Cargo.toml");
    eprintln!(
        "building the examples in {} (cargo build --release --target wasm32-wasip2)...",
        dir.display()
    );
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(&manifest)
            .status()
            .context("running cargo to build the examples (is cargo on PATH?)")?;
    if !status.success() {
        bail!(
            "building the examples failed; if the target is missing: rustup target add wasm32-wasip2"
        );
    }
    let members = std::fs::read_to_string(&manifest)?;
    let manifest: toml::Table = members
        .parse()
        .context("reading the examples' Cargo.toml")?;
    let names = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("the examples' Cargo.toml lists no workspace members")?;
    let out = dir.join("target/wasm32-wasip2/release");
    let mut built = Vec::new();
    for name in names.iter().filter_map(|n| n.as_str()) {
        let app = Path::new(name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        let wasm = out.join(format!("{}.wasm", app.replace('-', "_")));
        if !wasm.is_file() {
            bail!("expected {} after the build", wasm.display());
        }
        built.push((app, wasm));
    }
    Ok(built)
}

/// How the API treats clients: connection caps, timeouts and the throttle
/// on wrong keys (`serve` flags; see `api::conn`).
#[derive(Debug, Args, Clone)]
pub struct IntakeArgs {
    /// Most open connections, host-wide; more are answered 503 and closed.
    /// Lowered to fit the process's file descriptor limit (`ulimit -n`,
    /// raised to its hard limit at start), keeping 256 for the host's files.
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// Most open connections from one source (an IPv4 address or an IPv6
    /// /64); more are answered 503 and closed. Behind a reverse proxy every
    /// client is the proxy: raise it there.
    #[arg(long, default_value_t = 1_024)]
    max_connections_per_source: usize,
    /// How long a request's head (request line and headers) may take to
    /// arrive once it started; a slower one has its connection closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// How long a keep-alive connection with no request in progress is
    /// kept, and how long a client may leave a response unread. A response
    /// being produced (a long poll, an event stream) is never idle.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Request bodies must bring --body-min-bytes (or end) in every window
    /// this long, else they are answered 408 and the connection closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// Bytes a request body must bring in every --body-timeout window
    /// (default 64 KiB, i.e. 6.4 KiB/s).
    #[arg(long, default_value_t = 64 * 1024)]
    body_min_bytes: u64,
    /// Wrong keys (event, management or admin) one source may send in a
    /// minute; after that its requests with keys are answered 429 until
    /// the minute is over. 0 turns the throttle off.
    #[arg(long, default_value_t = 20)]
    auth_failures_per_minute: u32,
}

/// File descriptors kept for the journal, compiled code and logs.
const RESERVED_FDS: u64 = 256;

impl IntakeArgs {
    /// The connection layer's settings.
    fn limits(&self) -> api::conn::ConnLimits {
        let fds = raise_fd_limit();
        let fitting =
            usize::try_from(fds.saturating_sub(RESERVED_FDS).max(64)).unwrap_or(usize::MAX);
        let max_connections = self.max_connections.clamp(1, fitting);
        if max_connections < self.max_connections {
            tracing::warn!(
                wanted = self.max_connections,
                kept = max_connections,
                fd_limit = fds,
                "--max-connections lowered to fit the file descriptor limit (raise `ulimit -n`)"
            );
        }
        api::conn::ConnLimits {
            max_connections,
            max_per_source: self.max_connections_per_source.max(1),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            body_rate: api::body_rate::MinRate {
                window: self.body_timeout,
                min_bytes: self.body_min_bytes,
            },
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// The throttle on wrong keys.
    fn auth_throttle(&self) -> Arc<api::throttle::AuthThrottle> {
        Arc::new(api::throttle::AuthThrottle::new(
            self.auth_failures_per_minute,
        ))
    }
}

/// Raises the soft limit on open files to the hard one; returns the limit.
fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return u64::MAX;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        limit.rlim_cur
    }
    #[cfg(not(unix))]
    u64::MAX
}

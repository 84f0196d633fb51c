//! The `stepwise` command: run a host (`serve`, `dev`), build a Python or
//! JavaScript app (`build`), talk to a host (`deploy`, `replay`,
//! `versions`, `rollback`, `send`, `runs`, `run`, `cancel`, `functions`,
//! `events`), or manage its tenants (`tenant`).

mod backup;
mod build;
mod client;
mod serve;
mod tenant;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Durable step functions compiled to WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "stepwise", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a host.
    Serve(ServeArgs),
    /// Build the example apps, run a host, and deploy them to it.
    Dev(DevArgs),
    /// Build a Python (`app.py`) or JavaScript (`app.js`) app into a
    /// component.
    Build {
        /// The app's main module.
        source: PathBuf,
        /// Where to write the component (default: beside the source, `.wasm`).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The componentize-py to use (default: $STEPWISE_COMPONENTIZE_PY,
        /// else `componentize-py` on the PATH).
        #[arg(long)]
        componentize_py: Option<PathBuf>,
    },
    /// Upload a component as a new version of an app.
    Deploy {
        /// The `.wasm` component.
        file: PathBuf,
        /// The app's name (default: the file name, `_` turned into `-`).
        #[arg(long)]
        app: Option<String>,
        /// Refuse the version if the app's recorded runs diverge on it
        /// (as `stepwise replay` shows).
        #[arg(long)]
        check_replay: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Replay an app's in-flight and recent runs against a candidate
    /// component, without deploying it: the first divergence of each run.
    Replay {
        /// The candidate `.wasm` component.
        candidate: PathBuf,
        /// The app whose runs to replay.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List an app's kept versions, with the runs still on each.
    Versions {
        /// The app's name.
        app: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Make an older version current again (its hash or a unique prefix).
    Rollback {
        /// The app's name.
        app: String,
        /// The version: its content hash, or a unique prefix of it.
        version: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send an event.
    Send {
        /// The event name, e.g. `shop/order.created`.
        name: String,
        /// The event's data, a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
        /// An id for the event (events with the same id start nothing
        /// again for 24 hours).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List runs, newest first.
    Runs {
        /// Only runs of this function.
        #[arg(long)]
        function: Option<String>,
        /// Only runs with this status.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a run: status, step timeline, output.
    Run {
        /// The run id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a run, or every run of a function (`--function`).
    Cancel {
        /// The run id.
        #[arg(required_unless_present = "function", conflicts_with = "function")]
        id: Option<String>,
        /// Cancel every run of this function that has not ended.
        #[arg(long)]
        function: Option<String>,
        /// With `--function`: only runs created this recently, e.g. `1h`.
        #[arg(long, requires = "function", value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List deployed functions.
    Functions {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Copy a running host's journal, consistently and without stopping
    /// it, into DEST on the host's machine (a new or empty directory);
    /// `serve --data DEST` serves the copy. sled only: a PostgreSQL
    /// journal is backed up with pg_dump.
    Backup {
        /// The directory to make.
        dest: PathBuf,
        #[command(flatten)]
        admin: tenant::AdminArgs,
    },
    /// Manage tenants on a running host (needs its admin key).
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
        #[command(flatten)]
        admin: tenant::AdminArgs,
    },
    /// List recent events, newest first.
    Events {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where a host keeps its data and listens.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// The data directory (journal and compiled-code cache).
    #[arg(long = "data", default_value = ".stepwise")]
    data_dir: PathBuf,
    /// Keep the journal in PostgreSQL instead of sled in the data
    /// directory: a URL such as `postgres://user:password@host/db` (a
    /// unix socket: `postgres://user@/db?host=/run/postgresql`). The
    /// schema is created or migrated on start.
    #[arg(long, env = "STEPWISE_STORE", value_name = "URL")]
    store: Option<String>,
    /// With --store: this host's id among the hosts on the database
    /// (default: made once and kept in DATA/host-id). Give every host its
    /// own.
    #[arg(long, env = "STEPWISE_HOST_ID", requires = "store")]
    host_id: Option<String>,
    /// With --store: how long the leading host's lease lasts unless it
    /// renews it; a standby takes over this long after the leader dies (at
    /// once when it is stopped).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration, requires = "store")]
    lease_ttl: std::time::Duration,
    /// With --store: the URL other hosts forward requests to while this one
    /// leads (default: http:// and the --listen address).
    #[arg(
        long,
        env = "STEPWISE_ADVERTISE",
        value_name = "URL",
        requires = "store"
    )]
    advertise: Option<String>,
    /// The HTTP address (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8288")]
    listen: SocketAddr,
    /// Do not sync the sled journal to the disk after each flush: faster,
    /// and an acknowledged step still survives the process being killed,
    /// but not a power cut or a kernel crash. (PostgreSQL's own settings
    /// decide this for --store.)
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// How long ended runs (with their steps and output) and accepted
    /// events are kept; a background sweep deletes older ones, a bounded
    /// amount at a time. A tenant's own limit (`tenant limits NAME
    /// --retention`) overrides it.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    retention: std::time::Duration,
    /// How logs (on stderr) are written: `text`, or `json` (one object per
    /// line). Keys and event payloads are never logged.
    #[arg(long, value_enum, default_value = "text")]
    log_format: serve::LogFormat,
    /// On SIGTERM or Ctrl-C, how long step bodies in progress may take to
    /// finish (and be journaled, so that they do not run again after the
    /// restart) before the host exits anyway. A second signal exits at once.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_timeout: std::time::Duration,
    /// Also serve `GET /metrics` at this address, to anyone who reaches it
    /// (keep it private); on the API's address it needs the admin key when
    /// the host has one.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Export a trace of every run (a span per step attempt, sleep and
    /// wait, linked to the span of the event that started it) to this
    /// OpenTelemetry collector over OTLP/HTTP: its base URL, e.g.
    /// `http://localhost:4318` (spans go to `/v1/traces`).
    #[arg(long, value_name = "URL", env = "STEPWISE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The dev-mode default tenant's event key for `POST /e/{key}`
    /// (default: made once and kept in a 0600 file of the data directory).
    /// A new one retires the previous one; not allowed with
    /// --require-keys, which has no default tenant.
    #[arg(long, env = "STEPWISE_EVENT_KEY")]
    event_key: Option<String>,
    /// With --event-key: keep the previous default event key valid beside
    /// the new one (until revoked), e.g. while senders move over.
    #[arg(long, requires = "event_key")]
    keep_old: bool,
    /// The operator's key for managing tenants over HTTP (`stepwise
    /// tenant ...` sends it); tenant management is off without one.
    #[arg(long, env = "STEPWISE_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Refuse `/v1` calls without a management key (without this flag they
    /// act for the default tenant, as in dev mode).
    #[arg(long)]
    require_keys: bool,
    /// Hosts or exact addresses the default tenant's step bodies may call
    /// besides its allowlist (repeatable): internal addresses (loopback,
    /// private, link-local) are reachable only when listed exactly, e.g.
    /// `127.0.0.1` or `10.0.0.7:5432`; the host's own port never is.
    #[arg(long = "allow-http", value_name = "ADDRESS")]
    allow_http: Vec<String>,
    /// Multiply Inngest's retry backoff (15 s, 30 s, 1 m, ...) by this; e.g.
    /// 0.001 for demos and tests.
    #[arg(long, default_value_t = 1.0)]
    retry_backoff_scale: f64,
    /// Most step calls a run may make.
    #[arg(long, default_value_t = 1_000)]
    max_steps_per_run: u32,
    /// Most runs (or parallel branches) executing at once; the rest wait in
    /// the queue.
    #[arg(long, default_value_t = 256)]
    max_executing: u32,
    /// Runs each tenant may start even when others hold every one of
    /// --max-executing: its guaranteed share of the slots.
    #[arg(long, default_value_t = 32)]
    executing_share: u32,
    /// Slots beyond --max-executing that only tenants below their share may
    /// use (started steps cannot be preempted, so without them one tenant's
    /// slow steps could hold every slot).
    #[arg(long, default_value_t = 64)]
    executing_reserve: u32,
    /// Wall-clock time one attempt of a step body may take by default
    /// (tenants may be given their own); then the attempt fails with
    /// StepTimeoutError and is retried.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    step_timeout: std::time::Duration,
    /// Guest memory host-wide (e.g. 8GiB; default half the machine's): what
    /// executing instances have grown to, in all. While it is spent, new
    /// runs wait in the queue.
    #[arg(long, value_parser = tenant::parse_size)]
    guest_memory: Option<u64>,
    /// Events and run journals each tenant may store by default (logical
    /// bytes); past it its events are refused with StorageQuotaExceeded.
    #[arg(long, default_value = "10GiB", value_parser = tenant::parse_size)]
    storage_quota: u64,
    /// Events per second a tenant made with `tenant create` may send unless
    /// given its own limit (the default tenant has none).
    #[arg(long, default_value_t = 5_000)]
    tenant_events_per_second: u32,
    /// Runs waiting in the queue host-wide (default from the machine's
    /// memory, about 1–2 KiB each); past it only tenants with few runs
    /// waiting may queue more.
    #[arg(long)]
    max_queued: Option<u64>,
    /// Versions kept per app for rollbacks, besides the current one and
    /// those runs are still on.
    #[arg(long, default_value_t = stepwise_keep_versions())]
    keep_versions: usize,
    /// Where to cache compiled components (default: DATA/compiled); hosts
    /// of the same stepwise build may share one.
    #[arg(long, env = "STEPWISE_COMPILED_DIR")]
    compiled_dir: Option<PathBuf>,
    /// Connection caps, timeouts and the throttle on wrong keys.
    #[command(flatten)]
    intake: serve::IntakeArgs,
}

/// `dev` = `serve` plus the examples.
#[derive(Debug, Args)]
struct DevArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// The examples workspace to build and deploy.
    #[arg(long)]
    examples: Option<PathBuf>,
}

/// Which host a client command talks to.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The host's URL.
    #[arg(long, env = "STEPWISE_SERVER", default_value = "http://127.0.0.1:8288")]
    server: String,
    /// The tenant's management key (without one, a dev-mode host acts for
    /// its default tenant).
    #[arg(long, env = "STEPWISE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn stepwise_keep_versions() -> usize {
    crate::config::KEEP_VERSIONS
}

/// Runs the command line; the `stepwise` binary's whole `main`.
pub fn main() -> ExitCode {
    crate::memory::configure_allocator();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Dev(_)) {
        restore_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` to a closed pipe panics; a client
/// command should end quietly like any Unix tool (`stepwise runs | head`).
/// Hosts keep ignoring it: a client hanging up must not kill them.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default has no
    // preconditions; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(args, None).await,
        Command::Dev(args) => {
            serve::serve(args.serve, Some(serve::examples_dir(args.examples)?)).await
        }
        Command::Build {
            source,
            output,
            componentize_py,
        } => {
            let built = build::build(&source, output, componentize_py)?;
            println!("built {}", built.display());
            Ok(())
        }
        Command::Deploy {
            file,
            app,
            check_replay,
            server,
        } => client::deploy(&server, &file, app, check_replay).await,
        Command::Replay {
            candidate,
            app,
            server,
        } => client::replay(&server, &candidate, &app).await,
        Command::Versions { app, server } => client::versions(&server, &app).await,
        Command::Rollback {
            app,
            version,
            server,
        } => client::rollback(&server, &app, &version).await,
        Command::Send {
            name,
            data,
            id,
            server,
        } => client::send(&server, &name, &data, id).await,
        Command::Runs {
            function,
            status,
            limit,
            server,
        } => client::runs(&server, function, status, limit).await,
        Command::Run { id, server } => client::run(&server, &id).await,
        Command::Cancel {
            id,
            function,
            since,
            server,
        } => match (id, function) {
            (Some(id), _) => client::cancel(&server, &id).await,
            (None, Some(function)) => client::cancel_many(&server, &function, since).await,
            (None, None) => anyhow::bail!("give a run id, or --function"),
        },
        Command::Functions { server } => client::functions(&server).await,
        Command::Events { limit, server } => client::events(&server, limit).await,
        Command::Tenant { command, admin } => tenant::run(command, &admin).await,
        Command::Backup { dest, admin } => backup::backup(&dest, &admin).await,
    }
}

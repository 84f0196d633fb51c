//! The `stepwise` command: run a host (`serve`, `dev`), build a Python or
//! JavaScript app (`build`), or talk to a host (`deploy`, `send`, `runs`, `run`, `cancel`,
//! `functions`, `events`).

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
        /// The app.
        app: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Make an older version current again (its hash or a unique prefix).
    Rollback {
        /// The app.
        app: String,
        /// The version.
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
    /// The HTTP address (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8288")]
    listen: SocketAddr,
    /// The default tenant's event key for `POST /e/{key}` (default: made
    /// once and kept in the data directory).
    #[arg(long, env = "STEPWISE_EVENT_KEY")]
    event_key: Option<String>,
    /// The operator's key for managing tenants over HTTP (`stepwise
    /// tenant ...` sends it); tenant management is off without one.
    #[arg(long, env = "STEPWISE_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Refuse `/v1` calls without a management key (without this flag they
    /// act for the default tenant, as in dev mode).
    #[arg(long)]
    require_keys: bool,
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
    /// Versions kept per app for rollbacks, besides the current one and
    /// those runs are still on.
    #[arg(long, default_value_t = stepwise_keep_versions())]
    keep_versions: usize,
    /// Where to cache compiled components (default: DATA/compiled); hosts
    /// of the same stepwise build may share one.
    #[arg(long, env = "STEPWISE_COMPILED_DIR")]
    compiled_dir: Option<PathBuf>,
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
    crate::versions::KEEP_VERSIONS
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
    }
}

//! `stepwise serve` and `stepwise dev`.

use super::ServeArgs;
use crate::api;
use crate::config::{HostConfig, Limits};
use crate::model::DEFAULT_TENANT;
use crate::retry::Backoff;
use crate::runtime::Stepwise;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

fn init_logging() {
    let filter = EnvFilter::try_from_env("STEPWISE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,cranelift=warn,wasmtime=warn,sled=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a host until Ctrl-C or SIGTERM; with `examples`, builds and deploys
/// them first (`dev`).
pub async fn serve(args: ServeArgs, examples: Option<PathBuf>) -> Result<()> {
    init_logging();
    let config = HostConfig {
        data_dir: args.data_dir.clone(),
        compiled_dir: args.compiled_dir.clone(),
        event_key: args.event_key.clone(),
        admin_key: args.admin_key.clone(),
        require_keys: args.require_keys,
        backoff: Backoff::scaled(args.retry_backoff_scale),
        keep_versions: args.keep_versions,
        limits: Limits {
            max_steps_per_run: args.max_steps_per_run,
            max_executing: args.max_executing.max(1),
            ..Limits::default()
        },
    };
    let built = match &examples {
        Some(dir) => build_examples(dir)?,
        None => Vec::new(),
    };
    let host = Stepwise::start(config).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another host running? use --listen)",
                args.listen
            )
        })?;
    let address = listener.local_addr()?;
    println!("stepwise listening on http://{address}");
    println!("  data directory: {}", args.data_dir.display());
    let (event_key, management_key) = host.tenants.default_keys();
    println!("  default tenant (dev mode; more with `stepwise tenant create`):");
    println!("  event key:      {event_key}  (POST http://{address}/e/{event_key})");
    println!("  management key: {management_key}  (Authorization: Bearer ...; the CLI's --key)");
    if host.config.require_keys {
        println!("  /v1 calls need a management key (--require-keys)");
    }
    if host.tenants.admin_enabled() {
        println!("  tenant management: on (/v1/tenants with the admin key)");
    }
    for (app, path) in &built {
        deploy_example(&host, app, path).await?;
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
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    axum::serve(listener, api::router(host.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    host.commit.durable().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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

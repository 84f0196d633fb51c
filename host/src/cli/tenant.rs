//! `stepwise tenant ...`: the operator's commands. Each is one call to the
//! host's `/v1/tenants` API with the admin key.

use super::client::{print_json, shown, table};
use crate::model::TenantLimits;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

/// Which host, and the operator's key.
#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// The host's URL.
    #[arg(
        long,
        global = true,
        env = "STEPWISE_SERVER",
        default_value = "http://127.0.0.1:8288"
    )]
    pub(super) server: String,
    /// The admin key the host was started with (`serve --admin-key`).
    #[arg(
        long,
        global = true,
        env = "STEPWISE_ADMIN_KEY",
        hide_env_values = true
    )]
    pub(super) admin_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(super) json: bool,
}

/// What to do with tenants.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Make a tenant; prints its management key and event key (shown once).
    Create {
        /// Its name: 1 to 64 letters, digits, '-', '_' or '.'.
        name: String,
    },
    /// List tenants with their key ids, limits and HTTP allowlists.
    List,
    /// Issue a new key for a tenant, revoking its other keys of that kind.
    Rotate {
        /// The tenant's name.
        name: String,
        /// `management` or `event`.
        #[arg(long, value_parser = ["management", "event"])]
        kind: String,
        /// Keep the old keys valid (issue a key beside them).
        #[arg(long)]
        keep_old: bool,
    },
    /// Revoke one key of a tenant (its id, from `tenant list`).
    Revoke {
        /// The tenant's name.
        name: String,
        /// The key's id, as `tenant list` shows it.
        key_id: String,
    },
    /// Set some of a tenant's limits (the others stay as they are).
    Limits {
        /// The tenant's name.
        name: String,
        /// Memory per instance, e.g. 64MiB.
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
        /// Table elements per instance.
        #[arg(long)]
        table_elements: Option<u32>,
        /// Runs (or parallel branches) executing at once.
        #[arg(long)]
        executing: Option<u32>,
        /// Runs waiting in the queue.
        #[arg(long)]
        queued_runs: Option<u32>,
        /// Events accepted per second.
        #[arg(long)]
        events_per_second: Option<u32>,
        /// One event, e.g. 512KiB.
        #[arg(long, value_parser = parse_size)]
        event_size: Option<u64>,
        /// One step output, e.g. 4MiB.
        #[arg(long, value_parser = parse_size)]
        step_output_size: Option<u64>,
        /// All step outputs of one run, e.g. 32MiB.
        #[arg(long, value_parser = parse_size)]
        journal_size: Option<u64>,
        /// Step calls per run.
        #[arg(long)]
        steps_per_run: Option<u32>,
        /// An uploaded component, e.g. 64MiB.
        #[arg(long, value_parser = parse_size)]
        component_size: Option<u64>,
        /// CPU time of a step body or of the code between steps, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        cpu: Option<std::time::Duration>,
        /// Wall-clock time one attempt of a step body may take, e.g. 5m.
        #[arg(long, value_parser = humantime::parse_duration)]
        step_timeout: Option<std::time::Duration>,
        /// Events and run journals it may store, e.g. 10GiB.
        #[arg(long, value_parser = parse_size)]
        storage: Option<u64>,
        /// How long its ended runs and its events are kept, e.g. 30d.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<std::time::Duration>,
    },
    /// Set the hosts a tenant's step bodies may call over HTTP
    /// (`api.example.com`, `api.example.com:8443`, `*.example.com`, `*`).
    Allow {
        /// The tenant's name.
        name: String,
        /// The hosts (none: no outgoing HTTP at all).
        hosts: Vec<String>,
    },
}

/// `1024`, `512KiB`, `64MiB`, `1GiB` (or kB/MB/GB, powers of ten).
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 65536, 512KiB or 64MiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Runs a tenant command against the host.
pub async fn run(command: TenantCommand, admin: &AdminArgs) -> Result<()> {
    let Some(admin_key) = &admin.admin_key else {
        bail!(
            "managing tenants needs the host's admin key: pass --admin-key or set STEPWISE_ADMIN_KEY"
        );
    };
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", admin.server.trim_end_matches('/'));
    let request = match &command {
        TenantCommand::Create { name } => client
            .post(url("/v1/tenants"))
            .json(&json!({ "name": name })),
        TenantCommand::List => client.get(url("/v1/tenants")),
        TenantCommand::Rotate {
            name,
            kind,
            keep_old,
        } => client
            .post(url(&format!("/v1/tenants/{name}/keys")))
            .json(&json!({ "kind": kind, "rotate": !keep_old })),
        TenantCommand::Revoke { name, key_id } => {
            client.delete(url(&format!("/v1/tenants/{name}/keys/{key_id}")))
        }
        TenantCommand::Limits {
            name,
            memory,
            table_elements,
            executing,
            queued_runs,
            events_per_second,
            event_size,
            step_output_size,
            journal_size,
            steps_per_run,
            component_size,
            cpu,
            step_timeout,
            storage,
            retention,
        } => {
            let limits = TenantLimits {
                memory_bytes: *memory,
                table_elements: *table_elements,
                executing: *executing,
                queued_runs: *queued_runs,
                events_per_second: *events_per_second,
                event_bytes: *event_size,
                step_output_bytes: *step_output_size,
                journal_bytes_per_run: *journal_size,
                steps_per_run: *steps_per_run,
                component_bytes: *component_size,
                cpu_ms: cpu.map(|d| d.as_millis() as u64),
                step_timeout_ms: step_timeout.map(|d| d.as_millis() as u64),
                storage_bytes: *storage,
                retention_ms: retention.map(|d| d.as_millis() as u64),
            };
            client
                .put(url(&format!("/v1/tenants/{name}/limits")))
                .json(&limits)
        }
        TenantCommand::Allow { name, hosts } => client
            .put(url(&format!("/v1/tenants/{name}/http-allow")))
            .json(hosts),
    };
    let body = super::client::answer(request, &admin.server, Some(admin_key)).await?;
    if admin.json {
        return print_json(&body);
    }
    match command {
        TenantCommand::Create { name } => {
            println!("created tenant {name}; keep these keys, they are not shown again:");
            println!(
                "  management key: {}",
                body["management_key"].as_str().unwrap_or("?")
            );
            println!(
                "  event key:      {}",
                body["event_key"].as_str().unwrap_or("?")
            );
        }
        TenantCommand::Rotate { name, .. } => {
            println!(
                "new {} key of {name} (id {}); keep it, it is not shown again:\n  {}",
                body["kind"].as_str().unwrap_or("?"),
                body["id"].as_str().unwrap_or("?"),
                body["key"].as_str().unwrap_or("?")
            );
        }
        TenantCommand::List => {
            let rows: Vec<Vec<String>> = body
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let keys: Vec<String> = t["keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|k| k["revoked_at"].is_null())
                        .map(|k| {
                            format!(
                                "{} {}",
                                k["kind"].as_str().unwrap_or("?"),
                                k["id"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    vec![
                        t["name"].as_str().unwrap_or("?").to_string(),
                        keys.join(", "),
                        t["limits"].to_string(),
                        t["http_allow"].to_string(),
                    ]
                })
                .collect();
            table(&["TENANT", "KEYS", "LIMITS", "HTTP ALLOW"], &rows);
        }
        TenantCommand::Revoke { .. }
        | TenantCommand::Limits { .. }
        | TenantCommand::Allow { .. } => {
            println!(
                "{}: limits {}, http allow {}",
                shown(body["name"].as_str().unwrap_or("?")),
                body["limits"],
                body["http_allow"]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("65536"), Ok(65_536));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("big").is_err());
    }
}

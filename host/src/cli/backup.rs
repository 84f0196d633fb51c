//! `stepwise backup DEST`: asks a running host for a consistent copy of its
//! journal, written on the host's machine.

use super::tenant::AdminArgs;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::Path;

/// Asks the host at `admin.server` to back its journal up to `dest` (made
/// absolute against this directory: the host writes it on its own
/// machine, which is this one unless `--server` names another).
pub async fn backup(dest: &Path, admin: &AdminArgs) -> Result<()> {
    let dest = std::path::absolute(dest)
        .with_context(|| format!("making {} an absolute path", dest.display()))?;
    let url = format!("{}/v1/backup", admin.server.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .post(&url)
        .json(&json!({ "dest": dest }));
    if let Some(key) = &admin.admin_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.with_context(|| {
        format!(
            "could not reach the host at {} (is `stepwise serve` running? set --server or STEPWISE_SERVER)",
            admin.server
        )
    })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        bail!("{message} (HTTP {})", status.as_u16());
    }
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!(
        "backed up {} rows ({} bytes) to {}; writes paused {} ms. Serve it with `stepwise serve --data {}`",
        body["rows"],
        body["bytes"],
        dest.display(),
        body["paused_ms"],
        dest.display()
    );
    Ok(())
}

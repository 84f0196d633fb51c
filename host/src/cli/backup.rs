//! `stepwise backup DEST`: asks a running host for a consistent copy of its
//! journal, written on the host's machine.

use super::client;
use super::tenant::AdminArgs;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

/// Asks the host at `admin.server` to back its journal up to `dest` (made
/// absolute against this directory: the host writes it on its own
/// machine, which is this one unless `--server` names another).
pub async fn backup(dest: &Path, admin: &AdminArgs) -> Result<()> {
    let dest = std::path::absolute(dest)
        .with_context(|| format!("making {} an absolute path", dest.display()))?;
    let url = format!("{}/v1/backup", admin.server.trim_end_matches('/'));
    let request = reqwest::Client::new()
        .post(&url)
        .json(&json!({ "dest": dest }));
    let body = client::answer(request, &admin.server, admin.admin_key.as_deref()).await?;
    if admin.json {
        return client::print_json(&body);
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

//! `POST /v1/backup`: a consistent copy of the live host's journal, written
//! on the host's machine as a new data directory (see
//! [`crate::journal::backup`]).

use super::auth::BackupTaker;
use super::{ApiError, ApiResult, Host};
use crate::journal::BackupUnsupported;
use crate::journal::backup::{BackupReport, BadDestination};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    /// An absolute path on the host's machine: a new or empty directory.
    dest: PathBuf,
}

pub(super) async fn backup(
    _: BackupTaker,
    State(host): Host,
    body: axum::body::Bytes,
) -> ApiResult<Json<BackupReport>> {
    let request: BackupRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            r#"the body must be {{"dest": "/absolute/path/on/the/host"}}: {e}"#
        ))
    })?;
    let journal = host.journal.clone();
    let data_dir = host.config.data_dir.clone();
    let copied = tokio::task::spawn_blocking(move || {
        let report = journal.backup_to(&request.dest)?;
        copy_dev_keys(&data_dir, &request.dest)?;
        Ok::<_, anyhow::Error>(report)
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("the backup task failed: {e}")))?;
    match copied {
        Ok(report) => {
            tracing::info!(
                dest = %report.dest.display(),
                rows = report.rows,
                bytes = report.bytes,
                paused_ms = report.paused_ms,
                "backup written"
            );
            Ok(Json(report))
        }
        Err(error) if error.is::<BackupUnsupported>() || error.is::<BadDestination>() => {
            Err(ApiError::bad_request(error.to_string()))
        }
        Err(error) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the backup failed (an incomplete journal copy is never left in place); fix the cause, empty the destination and run it again: {error:#}"
            ),
        )),
    }
}

/// Copies the dev-mode default tenant's clear keys beside the journal's
/// copy, so that a host on the copy prints (and keeps) the same keys
/// instead of making new ones.
fn copy_dev_keys(data_dir: &std::path::Path, dest: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let from = crate::tenants::dev_keys::key_file(data_dir);
    if !from.exists() {
        return Ok(());
    }
    let to = crate::tenants::dev_keys::key_file(dest);
    std::fs::copy(&from, &to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    crate::journal::make_private(dest)?;
    Ok(())
}

//! Versions of an app: every upload is one, named by the component's content
//! hash. A run stays on the version it started on; this module lists
//! versions with the runs still on them, rolls an app back to one, replays
//! recorded runs against a candidate before it replaces the current one
//! (Temporal's replayer, for wasm), and drops versions no run needs any more.

use super::{DeployError, Deployed, Stepwise};
use crate::executor::{ReplayVerdict, Upload};
use crate::journal::{Op, RunFilter};
use crate::model::{RunKey, RunStatus};
use anyhow::Result;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Ended runs replayed against a candidate, besides every active one.
pub const RECENT_RUNS_REPLAYED: usize = 100;

/// A version of an app.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// The component's content hash.
    pub version: String,
    /// Whether new runs use it.
    pub current: bool,
    /// When it was last deployed, ms.
    pub deployed_at: Option<u64>,
    /// Runs on it that have not ended.
    pub active_runs: usize,
}

/// One run replayed against a candidate.
#[derive(Debug, Clone, Serialize)]
pub struct RunReplay {
    /// The run's id.
    pub run: String,
    /// The id of the function it runs.
    pub function: String,
    /// Its status when replayed, e.g. `waiting` or `completed`.
    pub status: String,
    /// The version it ran on.
    pub version: String,
    /// Entries in its journal.
    pub journaled: usize,
    /// Calls the candidate made before the replay stopped.
    pub replayed: usize,
    /// What the replay found.
    #[serde(flatten)]
    pub verdict: ReplayVerdict,
}

/// What replaying an app's recorded runs against a candidate found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayCheck {
    /// The candidate's content hash.
    pub candidate: String,
    /// Each run replayed.
    pub runs: Vec<RunReplay>,
    /// How many diverged.
    pub diverged: usize,
    /// How many failed for another reason.
    pub failed: usize,
}

/// Why a version operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// No such app, or no such version of it.
    #[error("{0}")]
    NotFound(String),
    /// The host failed (storage, I/O), not the request: the API answers 500
    /// and logs it in full.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Stepwise {
    /// The kept versions of `app`, newest last, with their active runs.
    pub fn versions(&self, tenant: &str, app: &str) -> Result<Vec<VersionView>, VersionError> {
        let record = self
            .journal
            .app(tenant, app)?
            .ok_or_else(|| VersionError::NotFound(format!("app {app:?} not found")))?;
        let mut active: HashMap<String, usize> = HashMap::new();
        for run in self.journal.active_runs()? {
            if run.key.tenant == tenant && run.app == app {
                *active.entry(run.version).or_default() += 1;
            }
        }
        Ok(record
            .versions
            .iter()
            .map(|version| VersionView {
                version: version.clone(),
                current: *version == record.version,
                deployed_at: record.deployed.get(version).copied(),
                active_runs: active.get(version).copied().unwrap_or(0),
            })
            .collect())
    }

    /// Makes `version` (a content hash, or a unique prefix of one) the
    /// current version of `app` again: one call, as a new upload of it.
    pub async fn rollback(
        &self,
        tenant: &str,
        app: &str,
        version: &str,
    ) -> Result<Deployed, DeployError> {
        let record = self
            .journal
            .app(tenant, app)?
            .ok_or_else(|| DeployError::NotFound(format!("app {app:?} not found")))?;
        let matches: Vec<&String> = record
            .versions
            .iter()
            .filter(|v| v.starts_with(version))
            .collect();
        let hash = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(DeployError::NotFound(format!(
                    "app {app:?} has no kept version {version:?}; `stepwise versions {app}` lists them"
                )));
            }
            _ => {
                return Err(DeployError::Invalid(format!(
                    "{version:?} names {} versions of {app:?}; give more of the hash",
                    matches.len()
                )));
            }
        };
        let bytes = self.journal.component(&hash)?.ok_or_else(|| {
            DeployError::NotFound(format!("version {hash} of {app:?} is no longer stored"))
        })?;
        tracing::info!(tenant, app, version = %hash, "rolling back");
        self.deploy(tenant, app, bytes.into()).await
    }

    /// Replays the app's active runs and its most recent ended ones against
    /// `candidate` (not deployed): does the new code make the calls their
    /// journals record?
    /// The candidate is not deployed, so it leaves nothing behind.
    pub async fn check_replay(
        &self,
        tenant: &str,
        app: &str,
        candidate: bytes::Bytes,
    ) -> Result<ReplayCheck, DeployError> {
        let upload = self
            .executor
            .inspect(
                tenant,
                candidate,
                self.tenants.limits(tenant).max_component_bytes,
            )
            .await
            .map_err(DeployError::from)?;
        self.replay_upload(tenant, app, &upload).await
    }

    /// Replays the app's runs against `upload`, inspected already.
    pub(crate) async fn replay_upload(
        &self,
        tenant: &str,
        app: &str,
        upload: &Upload<'_>,
    ) -> Result<ReplayCheck, DeployError> {
        let hash = upload.hash.clone();
        let exported: HashSet<&str> = upload.configs.iter().map(|c| c.id.as_str()).collect();
        let filter = RunFilter {
            limit: 10_000,
            ..RunFilter::default()
        };
        let mut recent = 0;
        let mut runs = Vec::new();
        for run in self.journal.list_runs(tenant, &filter)? {
            if run.app != app || run.status() == RunStatus::Skipped {
                continue;
            }
            if run.status().is_terminal() {
                if recent >= RECENT_RUNS_REPLAYED {
                    continue;
                }
                recent += 1;
            }
            runs.push(run);
        }
        let mut report = Vec::new();
        for run in runs {
            let key = RunKey::new(tenant, &run.key.run);
            let replayed = if exported.contains(run.function.as_str()) {
                self.replay(&key, Some(&hash)).await?
            } else {
                crate::executor::ReplayReport {
                    journaled: self.journal.steps(&key)?.len(),
                    replayed: 0,
                    elapsed: Default::default(),
                    verdict: ReplayVerdict::Failed {
                        message: format!(
                            "the candidate has no function {:?}, which this run needs",
                            run.function
                        ),
                    },
                }
            };
            let status = run.status().as_str().into();
            report.push(RunReplay {
                run: run.key.run,
                function: run.function,
                status,
                version: run.version,
                journaled: replayed.journaled,
                replayed: replayed.replayed,
                verdict: replayed.verdict,
            });
        }
        let count = |f: fn(&ReplayVerdict) -> bool| report.iter().filter(|r| f(&r.verdict)).count();
        Ok(ReplayCheck {
            candidate: hash,
            diverged: count(|v| matches!(v, ReplayVerdict::Diverged { .. })),
            failed: count(|v| matches!(v, ReplayVerdict::Failed { .. })),
            runs: report,
        })
    }

    /// Drops the versions no app keeps (beyond the current one, the last
    /// `keep_versions` and any an active run is on) and, when no app of
    /// any tenant keeps a component any more, its bytes. Which versions an
    /// app keeps depends only on its own tenant's runs, never on another
    /// tenant's (that would tell who runs the same bytes). Call with
    /// `deploys.collect()` held. Returns the components removed.
    pub(crate) async fn collect_versions(&self) -> Result<usize> {
        let mut in_use: HashSet<(String, String)> = HashSet::new();
        let mut in_use_anywhere: HashSet<String> = HashSet::new();
        for run in self.journal.active_runs()? {
            in_use_anywhere.insert(run.version.clone());
            in_use.insert((run.key.tenant, run.version));
        }
        let mut kept_anywhere = HashSet::new();
        let mut kept_by_tenant: HashMap<String, HashSet<String>> = HashMap::new();
        let mut dropped = Vec::new();
        let mut batch = Vec::new();
        for tenant in self.tenants.list() {
            for mut app in self.journal.apps(&tenant.name)? {
                let recent: HashSet<String> = app
                    .versions
                    .iter()
                    .rev()
                    .take(self.config.keep_versions)
                    .cloned()
                    .collect();
                let (keep, drop): (Vec<String>, Vec<String>) =
                    app.versions.iter().cloned().partition(|v| {
                        *v == app.version
                            || recent.contains(v)
                            || in_use.contains(&(app.tenant.clone(), v.clone()))
                    });
                if !drop.is_empty() {
                    for version in &drop {
                        app.deployed.remove(version);
                    }
                    app.versions = keep;
                    dropped.extend(drop);
                    batch.push(Op::PutApp(app.clone()));
                }
                kept_anywhere.extend(app.versions.iter().cloned());
                kept_by_tenant
                    .entry(tenant.name.clone())
                    .or_default()
                    .extend(app.versions.iter().cloned());
            }
        }
        self.executor.forget_uploads(&kept_by_tenant);
        let mut deleted = HashSet::new();
        for hash in dropped {
            let needed = kept_anywhere.contains(&hash) || in_use_anywhere.contains(&hash);
            if !needed && deleted.insert(hash.clone()) {
                batch.push(Op::DeleteComponent { hash: hash.clone() });
                self.executor.forget(&hash);
            }
        }
        let removed = deleted.len();
        if !batch.is_empty() {
            self.journal.apply(batch)?;
            self.commit.durable().await?;
            tracing::info!(removed, "collected old app versions");
        }
        Ok(removed)
    }
}

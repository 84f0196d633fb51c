//! The dev-mode default tenant's keys: which ones `stepwise serve` prints.
//!
//! In dev mode (no `--require-keys`) the host makes a `default` tenant with
//! an event key and a management key and prints them at start, so that a
//! developer can send events at once. Their clear copies live only in a
//! 0600 file of the data directory ([`KEY_FILE`]); the journal holds their
//! hashes, as for every key, marked `dev`. A revoked dev key stays revoked
//! and is no longer printed; `--event-key NEW` retires the previous dev
//! event key unless `--keep-old` is given. Older hosts kept the two keys in
//! clear in the journal's settings: [`migrate_clear_keys`] moves them to
//! the file and rewrites the journal without them.

use super::{hash, key_record, new_key};
use crate::journal::{Journal, Op, RunJournal, SledJournal};
use crate::model::{DEFAULT_TENANT, KeyKind, TenantRecord};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The file, in the data directory, holding the dev keys in clear (0600).
pub const KEY_FILE: &str = "default-tenant-keys.json";

/// Where an older host kept the default tenant's keys in clear.
const LEGACY_SETTINGS: [(KeyKind, &str); 2] = [
    (KeyKind::Event, "tenant/default/event-key"),
    (KeyKind::Management, "tenant/default/management-key"),
];

/// The key file of the data directory `data_dir`.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The clear dev keys, as kept in [`KEY_FILE`].
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct KeyFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    management_key: Option<String>,
}

impl KeyFile {
    fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "reading the default tenant's keys in {}; fix or delete the file (new dev keys are then made)",
                    path.display()
                )
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file whole (or removes it when it holds no key), private
    /// to the host's user from its first byte.
    fn write(&self, path: &Path) -> Result<()> {
        if *self == KeyFile::default() {
            return match std::fs::remove_file(path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(error).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let partial = path.with_extension("json.partial");
        let _ = std::fs::remove_file(&partial);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut file = options.open(&partial)?;
            file.write_all(&serde_json::to_vec_pretty(self)?)?;
            file.sync_all()?;
            std::fs::rename(&partial, path)
        };
        write().with_context(|| format!("writing the default tenant's keys to {}", path.display()))
    }

    fn get(&self, kind: KeyKind) -> Option<&String> {
        match kind {
            KeyKind::Event => self.event_key.as_ref(),
            KeyKind::Management => self.management_key.as_ref(),
        }
    }

    fn set(&mut self, kind: KeyKind, key: Option<String>) {
        match kind {
            KeyKind::Event => self.event_key = key,
            KeyKind::Management => self.management_key = key,
        }
    }
}

/// One dev key, as the start message shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevKey {
    /// Valid: printed.
    Live(String),
    /// Revoked: stays so, and is not printed.
    Revoked,
    /// Valid, but its clear copy is gone from the key file.
    Lost,
}

impl DevKey {
    /// The key, if it can be printed.
    pub fn live(&self) -> Option<&str> {
        match self {
            DevKey::Live(key) => Some(key),
            _ => None,
        }
    }
}

/// The default tenant's dev keys after a start, for the start message.
#[derive(Debug, Clone)]
pub struct DevKeys {
    /// For `POST /e/{key}`.
    pub event: DevKey,
    /// For `/v1` (`Authorization: Bearer ...`).
    pub management: DevKey,
    /// Ids of the previous event keys `--event-key` revoked at this start.
    pub retired: Vec<String>,
    /// Ids of previous event keys left valid by `--keep-old`.
    pub kept: Vec<String>,
}

impl DevKeys {
    /// What `stepwise serve` prints about the default tenant, one line each:
    /// what `--event-key` did to the previous key first, then the key lines
    /// (`event key:` or `no event key`, `management key:` or `no management
    /// key`), which tools read.
    pub fn start_lines(&self, address: &str) -> Vec<String> {
        let mut lines =
            vec!["  default tenant (dev mode; more with `stepwise tenant create`):".to_string()];
        if !self.retired.is_empty() {
            lines.push(format!(
                "  previous event key {} retired (revoked) by --event-key; add --keep-old to keep it valid beside the new one",
                self.retired.join(", ")
            ));
        }
        if !self.kept.is_empty() {
            lines.push(format!(
                "  previous event key {} still valid (--keep-old); revoke it with `stepwise tenant revoke default ID` once senders use the new one",
                self.kept.join(", ")
            ));
        }
        lines.push(match &self.event {
            DevKey::Live(key) => {
                format!("  event key:      {key}  (POST http://{address}/e/{key})")
            }
            DevKey::Revoked => "  no event key: the default tenant's dev event key was revoked; start with --event-key KEY to set a new one".into(),
            DevKey::Lost => format!("  no event key: its copy in {KEY_FILE} is gone; start with --event-key KEY to set a new one (the old one is then retired)"),
        });
        lines.push(match &self.management {
            DevKey::Live(key) => format!(
                "  management key: {key}  (Authorization: Bearer ...; the CLI's --key)"
            ),
            DevKey::Revoked => "  no management key: the default tenant's dev management key was revoked (in dev mode, /v1 calls without a key act for the default tenant)".into(),
            DevKey::Lost => format!("  no management key: its copy in {KEY_FILE} is gone (in dev mode, /v1 calls without a key act for the default tenant)"),
        });
        lines
    }
}

/// Reconciles the dev keys of `default` at a dev-mode start: the key given with
/// `--event-key` (retiring the previous dev event keys unless `keep_old`),
/// else the kept ones, else, for a kind the tenant never had a dev key of,
/// new ones. `taken` says whether a key already belongs to another tenant.
/// Updates `default`'s key records and the key file; the caller stores
/// `default`.
pub(super) fn reconcile(
    default: &mut TenantRecord,
    data_dir: &Path,
    event_key: Option<&str>,
    keep_old: bool,
    now: u64,
    taken: impl Fn(&str) -> Option<String>,
) -> Result<DevKeys> {
    let path = key_file(data_dir);
    let mut file = KeyFile::read(&path)?;
    let before = file.clone();
    let mut keys = DevKeys {
        event: DevKey::Revoked,
        management: DevKey::Revoked,
        retired: Vec::new(),
        kept: Vec::new(),
    };
    if let Some(given) = event_key {
        if let Some(owner) = taken(given) {
            bail!(
                "the key given with --event-key is one of tenant {owner:?}'s keys; choose a new key"
            );
        }
        let digest = hex::encode(hash(given));
        match default.keys.iter().find(|k| k.hash == digest) {
            Some(record) if record.kind != KeyKind::Event => bail!(
                "the key given with --event-key is the default tenant's {} key; choose a new key",
                record.kind.as_str()
            ),
            Some(record) if record.revoked_at.is_some() => bail!(
                "the key given with --event-key (id {}) was revoked, and revoked keys stay revoked; choose a new key",
                record.id
            ),
            Some(_) => {}
            None => {
                let mut record = key_record(given, KeyKind::Event, now);
                record.dev = true;
                default.keys.push(record);
            }
        }
        for old in default.keys.iter_mut().filter(|k| {
            k.dev && k.kind == KeyKind::Event && k.revoked_at.is_none() && k.hash != digest
        }) {
            if keep_old {
                keys.kept.push(old.id.clone());
            } else {
                old.revoked_at = Some(now);
                keys.retired.push(old.id.clone());
            }
        }
        file.set(KeyKind::Event, Some(given.to_string()));
        keys.event = DevKey::Live(given.to_string());
    }
    for kind in [KeyKind::Event, KeyKind::Management] {
        if kind == KeyKind::Event && event_key.is_some() {
            continue;
        }
        let kept = file.get(kind).and_then(|key| {
            let digest = hex::encode(hash(key));
            default
                .keys
                .iter()
                .find(|k| k.hash == digest && k.kind == kind)
                .map(|record| (key.clone(), record.revoked_at.is_none()))
        });
        let state = match kept {
            Some((key, true)) => DevKey::Live(key),
            Some((_, false)) => {
                file.set(kind, None);
                DevKey::Revoked
            }
            None => {
                let dev = default.keys.iter().filter(|k| k.dev && k.kind == kind);
                match dev.clone().any(|k| k.revoked_at.is_none()) {
                    true => DevKey::Lost,
                    false if dev.count() > 0 => DevKey::Revoked,
                    false => {
                        let key = new_key(kind);
                        let mut record = key_record(&key, kind, now);
                        record.dev = true;
                        default.keys.push(record);
                        file.set(kind, Some(key.clone()));
                        DevKey::Live(key)
                    }
                }
            }
        };
        match kind {
            KeyKind::Event => keys.event = state,
            KeyKind::Management => keys.management = state,
        }
    }
    if file != before {
        file.write(&path)?;
    }
    Ok(keys)
}

/// Whether `journal` still holds keys in clear, as hosts before key hashing
/// kept them (then [`migrate_clear_keys`] is due). A cheap read of two
/// settings, so that the journal is not opened twice at every start.
pub fn has_clear_keys(journal: &dyn crate::journal::RunJournal) -> Result<bool> {
    for (_, name) in LEGACY_SETTINGS {
        if journal.setting(name)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Moves the default tenant's keys that an older host kept in clear in the
/// journal's settings into the key file of `data_dir` (the valid ones;
/// revoked ones are dropped), marks their records `dev`, removes the clear
/// copies, and rewrites the journal so that no byte of them stays on disk.
/// Returns whether there was anything to migrate. Run before the journal is
/// opened for the host.
pub fn migrate_clear_keys(journal_dir: &Path, data_dir: &Path) -> Result<bool> {
    if !journal_dir.exists() {
        return Ok(false);
    }
    {
        let journal = SledJournal::open(journal_dir)?;
        let mut legacy = Vec::new();
        for (kind, name) in LEGACY_SETTINGS {
            if let Some(key) = journal.setting(name)? {
                legacy.push((kind, name, key));
            }
        }
        if legacy.is_empty() {
            return Ok(false);
        }
        let path = key_file(data_dir);
        let mut file = KeyFile::read(&path)?;
        let mut default = journal
            .tenants()?
            .into_iter()
            .find(|t| t.name == DEFAULT_TENANT);
        let mut batch = Vec::new();
        for (kind, name, key) in legacy {
            let digest = hex::encode(hash(&key));
            if let Some(record) = default
                .as_mut()
                .and_then(|t| t.keys.iter_mut().find(|k| k.hash == digest))
            {
                record.dev = true;
                if record.revoked_at.is_none() && file.get(kind).is_none() {
                    file.set(kind, Some(key));
                }
            }
            batch.push(Op::DeleteSetting { name: name.into() });
        }
        file.write(&path)?;
        batch.extend(default.map(Op::PutTenant));
        journal.apply(batch)?;
        journal.flush()?;
    }
    SledJournal::rewrite(journal_dir)?;
    tracing::info!(
        file = %key_file(data_dir).display(),
        "moved the default tenant's keys out of the journal (an older host kept them there in clear) and rewrote the journal without them"
    );
    Ok(true)
}

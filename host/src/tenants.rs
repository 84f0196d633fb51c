//! The tenants of a host: their keys, limits and HTTP allowlists.
//!
//! Kept in memory (rebuilt from the journal at start) because every request
//! and every run start consults them; the journal stays the truth. Keys are
//! stored as SHA-256 hashes: a presented key is hashed, looked up by its
//! hash, and the hashes compared in constant time. The `default` tenant is
//! dev mode's ([`dev_keys`]): under `--require-keys` it is not made, and
//! the keys dev mode made for it open nothing.

pub mod dev_keys;

pub use dev_keys::{DevKey, DevKeys, KEY_FILE, has_clear_keys, key_file, migrate_clear_keys};

use crate::config::{HostConfig, Limits};
use crate::journal::{Journal, Op};
use crate::model::{Clock, DEFAULT_TENANT, KeyKind, KeyRecord, TenantLimits, TenantRecord};
use anyhow::{Result, bail};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Why a tenant operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// No such tenant.
    #[error("tenant {0:?} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("tenant {0:?} already exists")]
    Exists(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The host failed (storage, I/O), not the request: the API answers 500
    /// and logs it in full.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The name of the tenant the key belongs to.
    pub tenant: String,
    /// What the key allows.
    pub kind: KeyKind,
}

/// A tenant just made, with its keys in clear (shown once).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewTenant {
    /// The tenant's name.
    pub tenant: String,
    /// For `/v1` and the CLI (`Authorization: Bearer ...`).
    pub management_key: String,
    /// For `POST /e/{key}`.
    pub event_key: String,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, TenantRecord>,
    /// Key hash → owner.
    keys: HashMap<[u8; 32], Identity>,
}

/// A change of the tenants' state in progress: it counts itself in
/// [`Tenants::generation`] as it ends, before the lock is let go.
struct Writing<'a> {
    state: std::sync::RwLockWriteGuard<'a, State>,
    generation: &'a std::sync::atomic::AtomicU64,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::ops::Deref for Writing<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

/// The tenants of a host.
pub struct Tenants {
    journal: Arc<dyn Journal>,
    defaults: Limits,
    admin_key: Option<[u8; 32]>,
    state: RwLock<State>,
    /// Counts changes of `state` (see [`Tenants::generation`]).
    generation: std::sync::atomic::AtomicU64,
    /// GCRA state of each tenant's events-per-second limit.
    event_rates: Mutex<HashMap<String, u64>>,
    /// The default tenant's dev keys (none under `--require-keys`).
    dev_keys: Option<DevKeys>,
    /// When keys and tenants are made and revoked, and event rates.
    clock: Arc<dyn Clock>,
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equal in constant time: no early exit on the first differing byte.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random key of `kind`.
fn new_key(kind: KeyKind) -> String {
    format!(
        "{}{}",
        kind.prefix(),
        hex::encode(rand::random::<[u8; 24]>())
    )
}

fn key_record(key: &str, kind: KeyKind, created_at: u64) -> KeyRecord {
    let digest = hex::encode(hash(key));
    KeyRecord {
        id: digest[..12].to_string(),
        kind,
        hash: digest,
        created_at,
        revoked_at: None,
        dev: false,
    }
}

/// Tenant names are parts of keys and URLs.
pub fn check_tenant_name(name: &str) -> Result<(), TenantError> {
    crate::model::check_name_part("tenant", name).map_err(TenantError::Invalid)
}

impl Tenants {
    /// Loads the tenants from `journal`. In dev mode (no `--require-keys`)
    /// makes sure the default tenant exists and reconciles its dev keys
    /// ([`dev_keys`]); under `--require-keys` there is no implicit default
    /// tenant and dev keys authenticate nothing. Not durable until the
    /// caller flushes.
    pub fn load(
        journal: Arc<dyn Journal>,
        config: &HostConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let mut state = State::default();
        for tenant in journal.tenants()? {
            state.tenants.insert(tenant.name.clone(), tenant);
        }
        let dev_keys = if config.require_keys {
            if config.event_key.is_some() {
                bail!(
                    "--event-key sets the dev-mode default tenant's event key, and under --require-keys there is no default tenant: drop --event-key (and STEPWISE_EVENT_KEY), and make tenants with `stepwise tenant create`"
                );
            }
            None
        } else {
            let others: HashMap<String, String> = state
                .tenants
                .values()
                .filter(|t| t.name != DEFAULT_TENANT)
                .flat_map(|t| t.keys.iter().map(|k| (k.hash.clone(), t.name.clone())))
                .collect();
            let created = !state.tenants.contains_key(DEFAULT_TENANT);
            let default = state
                .tenants
                .entry(DEFAULT_TENANT.to_string())
                .or_insert_with(|| TenantRecord {
                    name: DEFAULT_TENANT.into(),
                    created_at: clock.now_ms(),
                    keys: Vec::new(),
                    limits: TenantLimits::default(),
                    // Dev mode: the default tenant's steps may call anything.
                    http_allow: vec!["*".into()],
                });
            let before = default.clone();
            let keys = dev_keys::reconcile(
                default,
                &config.data_dir,
                config.event_key.as_deref(),
                config.keep_old_event_key,
                clock.now_ms(),
                |key| others.get(&hex::encode(hash(key))).cloned(),
            )?;
            if created || *default != before {
                journal.apply(vec![Op::PutTenant(default.clone())])?;
            }
            Some(keys)
        };
        for tenant in state.tenants.values() {
            for key in tenant.keys.iter().filter(|k| k.revoked_at.is_none()) {
                if key.dev && config.require_keys {
                    continue;
                }
                if let Ok(bytes) = hex::decode(&key.hash)
                    && let Ok(digest) = <[u8; 32]>::try_from(bytes.as_slice())
                {
                    state.keys.insert(
                        digest,
                        Identity {
                            tenant: tenant.name.clone(),
                            kind: key.kind,
                        },
                    );
                }
            }
        }
        Ok(Tenants {
            journal,
            defaults: config.limits.clone(),
            admin_key: config.admin_key.as_deref().map(hash),
            state: RwLock::new(state),
            generation: std::sync::atomic::AtomicU64::new(0),
            event_rates: Mutex::new(HashMap::new()),
            dev_keys,
            clock,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever tenants, their limits, allowlists or keys may
    /// have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What `tenant`'s runs execute under, with the generation it is of.
    pub fn terms(&self, tenant: &str) -> (u64, Limits, Arc<Vec<String>>) {
        loop {
            // A write counts itself before it lets go of the lock: the
            // same count before and after means no write in between.
            let before = self.generation();
            let (limits, allow) = (self.limits(tenant), self.http_allow(tenant));
            if self.generation() == before {
                return (before, limits, allow);
            }
        }
    }

    fn write(&self) -> Writing<'_> {
        Writing {
            state: self.state.write().unwrap_or_else(|p| p.into_inner()),
            generation: &self.generation,
        }
    }

    /// The default tenant's dev keys as reconciled at start (dev mode only).
    pub fn dev_keys(&self) -> Option<&DevKeys> {
        self.dev_keys.as_ref()
    }

    /// What `stepwise serve` prints about the default tenant at start.
    pub fn start_lines(&self, address: &str) -> Vec<String> {
        match &self.dev_keys {
            Some(keys) => keys.start_lines(address),
            None => vec![
                "  no default tenant (--require-keys): every call needs a tenant's key; make tenants with `stepwise tenant create`".into(),
            ],
        }
    }

    /// Whose key `key` is, if it is a valid one.
    pub fn authenticate(&self, key: &str) -> Option<Identity> {
        let digest = hash(key);
        let state = self.read();
        let (stored, identity) = state.keys.get_key_value(&digest)?;
        same(stored, &digest).then(|| identity.clone())
    }

    /// Whether `key` is the operator's key.
    pub fn is_admin(&self, key: &str) -> bool {
        self.admin_key
            .as_ref()
            .is_some_and(|admin| same(admin, &hash(key)))
    }

    /// Whether tenant management is on (an operator key was given).
    pub fn admin_enabled(&self) -> bool {
        self.admin_key.is_some()
    }

    /// Every tenant, by name.
    pub fn list(&self) -> Vec<TenantRecord> {
        let mut tenants: Vec<_> = self.read().tenants.values().cloned().collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        tenants
    }

    /// Tenant `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<TenantRecord> {
        self.read().tenants.get(name).cloned()
    }

    /// Makes a tenant with a management key and an event key.
    pub fn create(&self, name: &str) -> Result<NewTenant, TenantError> {
        check_tenant_name(name)?;
        let management_key = new_key(KeyKind::Management);
        let event_key = new_key(KeyKind::Event);
        let mut state = self.write();
        if state.tenants.contains_key(name) {
            return Err(TenantError::Exists(name.into()));
        }
        let now = self.clock.now_ms();
        let tenant = TenantRecord {
            name: name.into(),
            created_at: now,
            keys: vec![
                key_record(&management_key, KeyKind::Management, now),
                key_record(&event_key, KeyKind::Event, now),
            ],
            limits: TenantLimits::default(),
            http_allow: Vec::new(),
        };
        self.journal.apply(vec![Op::PutTenant(tenant.clone())])?;
        for (key, kind) in [
            (&management_key, KeyKind::Management),
            (&event_key, KeyKind::Event),
        ] {
            state.keys.insert(
                hash(key),
                Identity {
                    tenant: name.into(),
                    kind,
                },
            );
        }
        state.tenants.insert(name.into(), tenant);
        tracing::info!(tenant = name, "tenant created");
        Ok(NewTenant {
            tenant: name.into(),
            management_key,
            event_key,
        })
    }

    /// Changes tenant `name` with `change` and stores it.
    fn update(
        &self,
        name: &str,
        change: impl FnOnce(
            &mut TenantRecord,
            &mut HashMap<[u8; 32], Identity>,
        ) -> Result<(), TenantError>,
    ) -> Result<TenantRecord, TenantError> {
        let mut state = self.write();
        let State { tenants, keys } = &mut *state;
        let tenant = tenants
            .get_mut(name)
            .ok_or_else(|| TenantError::NotFound(name.into()))?;
        let mut changed = tenant.clone();
        let mut changed_keys = keys.clone();
        change(&mut changed, &mut changed_keys)?;
        self.journal.apply(vec![Op::PutTenant(changed.clone())])?;
        *tenant = changed.clone();
        *keys = changed_keys;
        Ok(changed)
    }

    /// Issues a new key of `kind`; with `rotate`, the tenant's other keys of
    /// that kind are revoked at once. Returns the key (shown once) and its id.
    pub fn issue_key(
        &self,
        name: &str,
        kind: KeyKind,
        rotate: bool,
    ) -> Result<(String, KeyRecord), TenantError> {
        let key = new_key(kind);
        let now = self.clock.now_ms();
        let record = key_record(&key, kind, now);
        self.update(name, |tenant, keys| {
            if rotate {
                for old in tenant
                    .keys
                    .iter_mut()
                    .filter(|k| k.kind == kind && k.revoked_at.is_none())
                {
                    old.revoked_at = Some(now);
                    revoke_hash(keys, &old.hash);
                }
            }
            tenant.keys.push(record.clone());
            keys.insert(
                hash(&key),
                Identity {
                    tenant: tenant.name.clone(),
                    kind,
                },
            );
            Ok(())
        })?;
        Ok((key, record))
    }

    /// Revokes key `id` of tenant `name`.
    pub fn revoke(&self, name: &str, id: &str) -> Result<TenantRecord, TenantError> {
        self.update(name, |tenant, keys| {
            let key = tenant
                .keys
                .iter_mut()
                .find(|k| k.id == id)
                .ok_or_else(|| TenantError::NotFound(format!("{name}/key {id}")))?;
            if key.revoked_at.is_none() {
                key.revoked_at = Some(self.clock.now_ms());
                revoke_hash(keys, &key.hash);
            }
            Ok(())
        })
    }

    /// Sets some of tenant `name`'s limits (the others stay).
    pub fn set_limits(
        &self,
        name: &str,
        limits: TenantLimits,
    ) -> Result<TenantRecord, TenantError> {
        self.update(name, |tenant, _| {
            tenant.limits = tenant.limits.merged(&limits);
            Ok(())
        })
    }

    /// Replaces tenant `name`'s HTTP allowlist.
    pub fn set_http_allow(
        &self,
        name: &str,
        hosts: Vec<String>,
    ) -> Result<TenantRecord, TenantError> {
        for host in &hosts {
            let plain = host.strip_prefix("*.").unwrap_or(host);
            let ok = host == "*"
                || (!plain.is_empty()
                    && plain
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)));
            if !ok {
                return Err(TenantError::Invalid(format!(
                    "{host:?} is not a host pattern: use api.example.com, api.example.com:8443, *.example.com or *"
                )));
            }
        }
        self.update(name, |tenant, _| {
            tenant.http_allow = hosts;
            Ok(())
        })
    }

    /// The bounds of `tenant`'s guests.
    pub fn limits(&self, tenant: &str) -> Limits {
        match self.read().tenants.get(tenant) {
            Some(record) if tenant == DEFAULT_TENANT => self.defaults.for_tenant(&record.limits),
            Some(record) => self.defaults.for_created_tenant(&record.limits),
            None => self.defaults.clone(),
        }
    }

    /// The hosts `tenant`'s step bodies may call.
    pub fn http_allow(&self, tenant: &str) -> Arc<Vec<String>> {
        Arc::new(
            self.read()
                .tenants
                .get(tenant)
                .map(|t| t.http_allow.clone())
                .unwrap_or_default(),
        )
    }

    /// Takes `count` events from `tenant`'s events-per-second budget (GCRA,
    /// with a burst of a second's worth), or says in how many ms all of
    /// them will fit.
    pub fn take_events(&self, tenant: &str, count: usize) -> Result<(), u64> {
        let per_second = u64::from(self.limits(tenant).events_per_second);
        if per_second == 0 || count == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let interval = (1_000 / per_second).max(1);
        let tolerance = interval * (per_second - 1);
        let mut rates = self.event_rates.lock().unwrap_or_else(|p| p.into_inner());
        let tat = rates.get(tenant).copied().unwrap_or(now).max(now);
        // The last of the `count` fits when its arrival time is within the
        // tolerance.
        let last = tat + interval * (count as u64 - 1);
        if last - now > tolerance {
            return Err((last - tolerance - now).max(1));
        }
        rates.insert(tenant.to_string(), last + interval);
        Ok(())
    }
}

fn revoke_hash(keys: &mut HashMap<[u8; 32], Identity>, hex_hash: &str) {
    if let Ok(bytes) = hex::decode(hex_hash)
        && let Ok(digest) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        keys.remove(&digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SledJournal;
    use crate::model::SystemClock;

    fn tenants(dir: &std::path::Path) -> Tenants {
        let mut config = HostConfig::new(dir.to_path_buf());
        config.admin_key = Some("admin".into());
        load(&config).unwrap()
    }

    /// The tenants of a host started with `config` (its journal in
    /// `DATA/journal`, as a real host's).
    fn load(config: &HostConfig) -> Result<Tenants> {
        let journal: Arc<dyn Journal> =
            Arc::new(SledJournal::open(&config.data_dir.join("journal"))?);
        let tenants = Tenants::load(journal.clone(), config, Arc::new(SystemClock))?;
        journal.flush()?;
        Ok(tenants)
    }

    fn live(key: &DevKey) -> String {
        key.live().expect("a printable dev key").to_string()
    }

    fn dev_key_id(t: &Tenants, kind: KeyKind) -> String {
        t.get(DEFAULT_TENANT)
            .unwrap()
            .keys
            .iter()
            .find(|k| k.dev && k.kind == kind && k.revoked_at.is_none())
            .unwrap()
            .id
            .clone()
    }

    /// Whether any file under `dir` holds `needle`.
    fn bytes_hold(dir: &std::path::Path, needle: &str) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                bytes_hold(&path, needle)
            } else {
                std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            }
        })
    }

    #[test]
    fn terms_carry_the_generation_they_were_read_at_and_a_change_moves_it() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = tenants(dir.path());
        tenants.create("acme").unwrap();
        let (before, _, allow) = tenants.terms("acme");
        assert!(allow.is_empty());
        assert_eq!(tenants.terms("acme").0, before, "reads change nothing");
        tenants
            .set_http_allow("acme", vec!["api.example.com".into()])
            .unwrap();
        let (after, _, allow) = tenants.terms("acme");
        assert!(after > before, "{after} after {before}");
        assert_eq!(*allow, vec!["api.example.com".to_string()]);
        let refused = tenants.set_http_allow("acme", vec!["not a host".into()]);
        assert!(refused.is_err());
    }

    #[test]
    fn require_keys_makes_no_default_tenant_and_dev_keys_open_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HostConfig::new(dir.path().to_path_buf());
        config.require_keys = true;
        {
            let t = load(&config).unwrap();
            assert!(
                t.get(DEFAULT_TENANT).is_none(),
                "no implicit default tenant"
            );
            assert!(t.dev_keys().is_none());
            assert!(t.start_lines("h:1")[0].contains("no default tenant"));
            assert!(!dir.path().join(KEY_FILE).exists());
        }
        // A dev-mode start made the default tenant and its keys; a later
        // --require-keys start refuses them.
        config.require_keys = false;
        let keys = load(&config).unwrap().dev_keys().unwrap().clone();
        let (event, management) = (live(&keys.event), live(&keys.management));
        config.require_keys = true;
        let t = load(&config).unwrap();
        assert!(t.authenticate(&event).is_none());
        assert!(t.authenticate(&management).is_none());
        // Keys an operator issues for it do work.
        let (issued, _) = t
            .issue_key(DEFAULT_TENANT, KeyKind::Management, false)
            .unwrap();
        assert_eq!(t.authenticate(&issued).unwrap().tenant, DEFAULT_TENANT);
        drop(t);
        assert!(load(&config).unwrap().authenticate(&issued).is_some());
        config.event_key = Some("swe_given".into());
        let refused = load(&config).err().unwrap().to_string();
        assert!(refused.contains("--require-keys"), "{refused}");
    }

    #[test]
    fn a_revoked_dev_key_stays_revoked_and_unprinted_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = HostConfig::new(dir.path().to_path_buf());
        let first = load(&config).unwrap();
        let keys = first.dev_keys().unwrap().clone();
        let (event, management) = (live(&keys.event), live(&keys.management));
        first
            .revoke(DEFAULT_TENANT, &dev_key_id(&first, KeyKind::Management))
            .unwrap();
        drop(first);
        for _ in 0..2 {
            let t = load(&config).unwrap();
            let keys = t.dev_keys().unwrap();
            assert_eq!(keys.management, DevKey::Revoked);
            assert_eq!(keys.event, DevKey::Live(event.clone()));
            assert!(t.authenticate(&management).is_none());
            let printed = t.start_lines("h:1").join("\n");
            assert!(!printed.contains(&management), "{printed}");
            assert!(printed.contains("no management key"), "{printed}");
            let file = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
            assert!(!file.contains(&management), "dropped from the key file");
        }
    }

    #[test]
    fn a_new_event_key_retires_the_previous_one_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HostConfig::new(dir.path().to_path_buf());
        let old = live(&load(&config).unwrap().dev_keys().unwrap().event);
        config.event_key = Some("swe_second".into());
        let t = load(&config).unwrap();
        assert!(t.authenticate(&old).is_none(), "retired");
        assert!(t.authenticate("swe_second").is_some());
        assert_eq!(t.dev_keys().unwrap().retired.len(), 1);
        assert!(t.start_lines("h:1").join("\n").contains("retired"));
        drop(t);
        config.event_key = Some("swe_third".into());
        config.keep_old_event_key = true;
        let t = load(&config).unwrap();
        assert!(t.authenticate("swe_second").is_some(), "kept");
        assert!(t.authenticate("swe_third").is_some());
        assert!(t.start_lines("h:1").join("\n").contains("--keep-old"));
        drop(t);
        // Without --event-key the last one given is kept; a retired one
        // cannot come back.
        config.event_key = None;
        config.keep_old_event_key = false;
        let t = load(&config).unwrap();
        assert_eq!(
            t.dev_keys().unwrap().event,
            DevKey::Live("swe_third".into())
        );
        drop(t);
        config.event_key = Some(old);
        let refused = load(&config).err().unwrap().to_string();
        assert!(refused.contains("was revoked"), "{refused}");
    }

    #[test]
    fn clear_keys_of_an_older_journal_are_moved_to_a_private_file_and_leave_no_byte_behind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        let (event, management) = (
            "swe_legacyevent0123456789",
            "swm_legacymanagement0123456789",
        );
        // What a host before this change wrote: both keys in clear in the
        // settings, their hashes in the default tenant's record.
        {
            let journal = SledJournal::open(&journal_dir).unwrap();
            journal
                .apply(vec![
                    Op::PutSetting {
                        name: "tenant/default/event-key".into(),
                        value: event.into(),
                    },
                    Op::PutSetting {
                        name: "tenant/default/management-key".into(),
                        value: management.into(),
                    },
                    Op::PutTenant(TenantRecord {
                        name: DEFAULT_TENANT.into(),
                        created_at: 1,
                        keys: vec![
                            key_record(event, KeyKind::Event, 1),
                            key_record(management, KeyKind::Management, 1),
                        ],
                        limits: TenantLimits::default(),
                        http_allow: vec!["*".into()],
                    }),
                ])
                .unwrap();
            journal.flush().unwrap();
        }
        assert!(bytes_hold(&journal_dir, management), "the old format");
        assert!(migrate_clear_keys(&journal_dir, dir.path()).unwrap());
        assert!(!bytes_hold(&journal_dir, management), "no clear copy left");
        assert!(!bytes_hold(&journal_dir, event));
        let file = dir.path().join(KEY_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            !migrate_clear_keys(&journal_dir, dir.path()).unwrap(),
            "once"
        );
        // Dev mode prints the same keys from the file; --require-keys
        // refuses them, as keys dev mode made.
        let mut config = HostConfig::new(dir.path().to_path_buf());
        let t = load(&config).unwrap();
        assert_eq!(t.dev_keys().unwrap().event, DevKey::Live(event.into()));
        assert_eq!(
            t.dev_keys().unwrap().management,
            DevKey::Live(management.into())
        );
        assert!(t.authenticate(management).is_some());
        drop(t);
        config.require_keys = true;
        assert!(load(&config).unwrap().authenticate(event).is_none());
    }

    #[test]
    fn keys_authenticate_their_tenant_until_revoked_or_rotated_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let made = {
            let t = tenants(dir.path());
            let made = t.create("acme").unwrap();
            assert!(made.management_key.starts_with("swm_"));
            assert_eq!(
                t.authenticate(&made.event_key),
                Some(Identity {
                    tenant: "acme".into(),
                    kind: KeyKind::Event
                })
            );
            assert!(matches!(t.create("acme"), Err(TenantError::Exists(_))));
            made
        };
        let t = tenants(dir.path());
        assert_eq!(
            t.authenticate(&made.management_key).map(|i| i.tenant),
            Some("acme".into())
        );
        assert!(t.authenticate("swm_nope").is_none());
        assert!(t.is_admin("admin") && !t.is_admin("Admin"));
        let (new_key, _) = t.issue_key("acme", KeyKind::Management, true).unwrap();
        assert!(
            t.authenticate(&made.management_key).is_none(),
            "rotated out"
        );
        assert!(t.authenticate(&new_key).is_some());
        let id = t
            .get("acme")
            .unwrap()
            .keys
            .iter()
            .find(|k| k.kind == KeyKind::Event)
            .unwrap()
            .id
            .clone();
        t.revoke("acme", &id).unwrap();
        assert!(t.authenticate(&made.event_key).is_none(), "revoked");
        let stored = t.get("acme").unwrap();
        assert!(
            stored
                .keys
                .iter()
                .all(|k| !k.hash.contains(&made.event_key))
        );
        let keys = t.dev_keys().unwrap();
        let (event, management) = (live(&keys.event), live(&keys.management));
        assert_eq!(t.authenticate(&event).unwrap().tenant, DEFAULT_TENANT);
        assert_eq!(
            t.authenticate(&management).unwrap().kind,
            KeyKind::Management
        );
    }

    #[test]
    fn limits_override_the_hosts_and_events_per_second_are_metered() {
        let dir = tempfile::tempdir().unwrap();
        let t = tenants(dir.path());
        t.create("small").unwrap();
        t.set_limits(
            "small",
            TenantLimits {
                events_per_second: Some(5),
                cpu_ms: Some(500),
                ..TenantLimits::default()
            },
        )
        .unwrap();
        let limits = t.limits("small");
        assert_eq!(limits.cpu_ms, 500);
        assert_eq!(
            limits.max_steps_per_run,
            Limits::default().max_steps_per_run
        );
        assert!(t.take_events("small", 5).is_ok());
        assert!(t.take_events("small", 1).is_err(), "the sixth in a second");
        assert!(
            t.take_events(DEFAULT_TENANT, 10_000).is_ok(),
            "no limit by default"
        );
        assert!(t.set_http_allow("small", vec!["bad host".into()]).is_err());
        assert!(
            t.set_http_allow("small", vec!["*.example.com".into(), "127.0.0.1".into()])
                .is_ok()
        );
        assert!(matches!(
            t.set_limits("nobody", TenantLimits::default()),
            Err(TenantError::NotFound(_))
        ));
    }
}

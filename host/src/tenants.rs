//! The tenants of a host: their keys, limits and HTTP allowlists.
//!
//! Kept in memory (rebuilt from the journal at start) because every request
//! and every run start consults them; the journal stays the truth. Keys are
//! stored as SHA-256 hashes: a presented key is hashed, looked up by its
//! hash, and the hashes compared in constant time. The `default` tenant is
//! dev mode's: its two keys are kept in the journal's settings so that
//! `stepwise serve` can print them at every start.

use crate::config::Limits;
use crate::journal::{Journal, Op};
use crate::model::{DEFAULT_TENANT, KeyKind, KeyRecord, TenantLimits, TenantRecord, now_ms};
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

const DEFAULT_EVENT_KEY: &str = "tenant/default/event-key";
const DEFAULT_MANAGEMENT_KEY: &str = "tenant/default/management-key";

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
    /// The host failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant.
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

/// The tenants of a host.
pub struct Tenants {
    journal: Arc<dyn Journal>,
    defaults: Limits,
    admin_key: Option<[u8; 32]>,
    state: RwLock<State>,
    /// GCRA state of each tenant's events-per-second limit.
    event_rates: Mutex<HashMap<String, u64>>,
    /// The default tenant's keys, in clear (dev mode prints them).
    default_keys: (String, String),
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

fn key_record(key: &str, kind: KeyKind) -> KeyRecord {
    let digest = hex::encode(hash(key));
    KeyRecord {
        id: digest[..12].to_string(),
        kind,
        hash: digest,
        created_at: now_ms(),
        revoked_at: None,
    }
}

/// Tenant names are parts of keys and URLs.
pub fn check_tenant_name(name: &str) -> Result<(), TenantError> {
    crate::model::check_name_part("tenant", name).map_err(TenantError::Invalid)
}

impl Tenants {
    /// Loads the tenants from `journal`, and makes sure the default tenant
    /// exists with its dev-mode keys (`event_key` if given, else the kept or
    /// a new one). Not durable until the caller flushes.
    pub fn load(
        journal: Arc<dyn Journal>,
        defaults: Limits,
        admin_key: Option<&str>,
        event_key: Option<&str>,
    ) -> Result<Self> {
        let kept = |name: &str| journal.setting(name);
        let event_key = match (event_key, kept(DEFAULT_EVENT_KEY)?) {
            (Some(key), _) => key.to_string(),
            (None, Some(stored)) => stored,
            (None, None) => new_key(KeyKind::Event),
        };
        let management_key =
            kept(DEFAULT_MANAGEMENT_KEY)?.unwrap_or_else(|| new_key(KeyKind::Management));
        let mut state = State::default();
        for tenant in journal.tenants()? {
            state.tenants.insert(tenant.name.clone(), tenant);
        }
        let default = state
            .tenants
            .entry(DEFAULT_TENANT.to_string())
            .or_insert_with(|| TenantRecord {
                name: DEFAULT_TENANT.into(),
                created_at: now_ms(),
                keys: Vec::new(),
                limits: TenantLimits::default(),
                // Dev mode: the default tenant's steps may call anything.
                http_allow: vec!["*".into()],
            });
        for (key, kind) in [
            (&event_key, KeyKind::Event),
            (&management_key, KeyKind::Management),
        ] {
            let record = key_record(key, kind);
            if !default.keys.iter().any(|k| k.hash == record.hash) {
                default.keys.push(record);
            }
        }
        let default = default.clone();
        journal.apply(vec![
            Op::PutSetting {
                name: DEFAULT_EVENT_KEY.into(),
                value: event_key.clone(),
            },
            Op::PutSetting {
                name: DEFAULT_MANAGEMENT_KEY.into(),
                value: management_key.clone(),
            },
            Op::PutTenant(default),
        ])?;
        for tenant in state.tenants.values() {
            for key in tenant.keys.iter().filter(|k| k.revoked_at.is_none()) {
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
            defaults,
            admin_key: admin_key.map(hash),
            state: RwLock::new(state),
            event_rates: Mutex::new(HashMap::new()),
            default_keys: (event_key, management_key),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The default tenant's event and management keys (dev mode).
    pub fn default_keys(&self) -> (&str, &str) {
        (&self.default_keys.0, &self.default_keys.1)
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

    /// Every tenant.
    pub fn list(&self) -> Vec<TenantRecord> {
        let mut tenants: Vec<_> = self.read().tenants.values().cloned().collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        tenants
    }

    /// One tenant.
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
        let tenant = TenantRecord {
            name: name.into(),
            created_at: now_ms(),
            keys: vec![
                key_record(&management_key, KeyKind::Management),
                key_record(&event_key, KeyKind::Event),
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
        let record = key_record(&key, kind);
        self.update(name, |tenant, keys| {
            if rotate {
                let now = now_ms();
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
                key.revoked_at = Some(now_ms());
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
            Some(record) => self.defaults.for_tenant(&record.limits),
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
        let now = now_ms();
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

    fn tenants(dir: &std::path::Path) -> Tenants {
        let journal: Arc<dyn Journal> = Arc::new(SledJournal::open(dir).unwrap());
        Tenants::load(journal, Limits::default(), Some("admin"), None).unwrap()
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
        let (event, management) = t.default_keys();
        assert_eq!(t.authenticate(event).unwrap().tenant, DEFAULT_TENANT);
        assert_eq!(
            t.authenticate(management).unwrap().kind,
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

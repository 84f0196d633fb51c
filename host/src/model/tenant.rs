//! Tenants: who owns apps, events and runs, with their keys, limits and
//! HTTP allowlist.
//!
//! Keys are stored as SHA-256 hashes: the journal never holds a key itself.
//! (The dev-mode default tenant's keys, which `stepwise serve` prints at
//! start, are kept in clear only in a 0600 file of the data directory.) A
//! key is looked up by its hash and compared in constant time.

use serde::{Deserialize, Serialize};

/// What a key lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// `/v1/...` and the CLI: deploy, list, cancel, send.
    Management,
    /// `POST /e/{key}`: send events only (safe to ship in an app).
    Event,
}

impl KeyKind {
    /// The prefix keys of this kind start with, so people can tell them apart.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Management => "swm_",
            KeyKind::Event => "swe_",
        }
    }

    /// The word the API and CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Management => "management",
            KeyKind::Event => "event",
        }
    }
}

/// One key of a tenant, as stored: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// A public id (the hash's first 12 hex digits), to list and revoke by.
    pub id: String,
    /// What it allows.
    pub kind: KeyKind,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// When it was made, ms.
    pub created_at: u64,
    /// When it was revoked, ms (then it is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Made by dev mode for the default tenant (printed at start), not
    /// issued by an operator: under `--require-keys` it opens nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

/// A tenant's own bounds; each unset one is the host's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Linear memory per instance, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Table elements per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_elements: Option<u32>,
    /// Runs (or parallel branches) executing at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executing: Option<u32>,
    /// Runs waiting in the queue; events that would start more are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_runs: Option<u32>,
    /// Events accepted per second (with a burst of as many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    /// Size of one event, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_bytes: Option<u64>,
    /// Size of one step output, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_output_bytes: Option<u64>,
    /// Step outputs journaled by one run, bytes in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_bytes_per_run: Option<u64>,
    /// Step calls per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_run: Option<u32>,
    /// Size of an uploaded component, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_bytes: Option<u64>,
    /// CPU time a step body, or the code between two steps, may use, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Wall-clock time one attempt of a step body may take, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout_ms: Option<u64>,
    /// Logical bytes of events and run journals it may store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    /// How long ended runs and accepted events are kept, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

impl TenantLimits {
    /// These overrides with `newer`'s set fields on top.
    pub fn merged(&self, newer: &TenantLimits) -> TenantLimits {
        TenantLimits {
            memory_bytes: newer.memory_bytes.or(self.memory_bytes),
            table_elements: newer.table_elements.or(self.table_elements),
            executing: newer.executing.or(self.executing),
            queued_runs: newer.queued_runs.or(self.queued_runs),
            events_per_second: newer.events_per_second.or(self.events_per_second),
            event_bytes: newer.event_bytes.or(self.event_bytes),
            step_output_bytes: newer.step_output_bytes.or(self.step_output_bytes),
            journal_bytes_per_run: newer.journal_bytes_per_run.or(self.journal_bytes_per_run),
            steps_per_run: newer.steps_per_run.or(self.steps_per_run),
            component_bytes: newer.component_bytes.or(self.component_bytes),
            cpu_ms: newer.cpu_ms.or(self.cpu_ms),
            step_timeout_ms: newer.step_timeout_ms.or(self.step_timeout_ms),
            storage_bytes: newer.storage_bytes.or(self.storage_bytes),
            retention_ms: newer.retention_ms.or(self.retention_ms),
        }
    }
}

/// A tenant as stored: its keys (hashed), its own limits and its HTTP
/// allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Its name, unique on the host; part of every key it owns.
    pub name: String,
    /// When it was made, ms.
    pub created_at: u64,
    /// Its keys, revoked ones included.
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
    /// Its own limits; each one it does not set is the host's default.
    #[serde(default)]
    pub limits: TenantLimits,
    /// Hosts its step bodies may call over HTTP: `api.example.com`,
    /// `api.example.com:8443`, `*.example.com`, or `*` for any.
    #[serde(default)]
    pub http_allow: Vec<String>,
}

//! The functions deployed on the host, and which events trigger them.
//!
//! Kept in memory (rebuilt from the journal at start) because every accepted
//! event consults it; the journal stays the truth.

use crate::journal::RunJournal;
use crate::model::FunctionRecord;
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// Tenant → function id → function.
type Functions = HashMap<String, BTreeMap<String, FunctionRecord>>;

/// The in-memory index of deployed functions.
#[derive(Default)]
pub struct Catalog {
    functions: RwLock<Functions>,
}

impl Catalog {
    /// Loads every function from the journal.
    pub fn load(journal: &dyn RunJournal) -> Result<Self> {
        let catalog = Catalog::default();
        {
            let mut functions = catalog.write();
            for function in journal.all_functions()? {
                functions
                    .entry(function.tenant.clone())
                    .or_default()
                    .insert(function.id.clone(), function);
            }
        }
        Ok(catalog)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Functions> {
        self.functions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Functions> {
        self.functions.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The functions of `tenant` that an event named `event` starts.
    pub fn triggered_by(&self, tenant: &str, event: &str) -> Vec<FunctionRecord> {
        self.read()
            .get(tenant)
            .map(|functions| {
                functions
                    .values()
                    .filter(|f| f.triggers.iter().any(|t| t.event.as_deref() == Some(event)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Function `id` of `tenant`, if it is deployed.
    pub fn get(&self, tenant: &str, id: &str) -> Option<FunctionRecord> {
        self.read().get(tenant)?.get(id).cloned()
    }

    /// Replaces the functions of `app` with `functions`.
    pub fn replace_app(&self, tenant: &str, app: &str, functions: Vec<FunctionRecord>) {
        let mut all = self.write();
        let tenant_functions = all.entry(tenant.to_string()).or_default();
        tenant_functions.retain(|_, f| f.app != app);
        for function in functions {
            tenant_functions.insert(function.id.clone(), function);
        }
    }
}

//! The journal's tables in PostgreSQL, created and migrated on start.
//!
//! Every host migrates on start, so several may try at once: an advisory
//! lock lets one at a time through, and each migration commits together
//! with its version number. A database migrated by a newer binary is
//! refused (its tables may mean something this one does not know), and so
//! is one where the user may not create the schema: both before anything
//! is written.

use super::super::records::TREE_NAMES;
use super::pool::Connection;
use anyhow::{Context, Result, bail};

/// The advisory lock key migrations hold ("stepwise" in ASCII, as a
/// number), so that hosts starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7374_6570_7769_7365;

/// The schema version this binary writes and reads.
pub fn latest() -> i32 {
    MIGRATIONS.len() as i32
}

/// The migrations, in order: version `n` is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[fn() -> String] = &[tables_v1, leases_v2];

/// Version 1: one table per kind of record, binary keys ordered as the
/// journal reads them, JSON values (the sled backend's layout).
fn tables_v1() -> String {
    let mut sql = String::new();
    for name in TREE_NAMES {
        sql.push_str(&format!(
            "CREATE TABLE stepwise.{name} (key bytea PRIMARY KEY, value bytea NOT NULL);\n"
        ));
    }
    sql
}

/// Version 2: the leases hosts hold to write (see [`super::lease`]), the
/// check every flush makes that its host still holds its lease, which
/// fails the flush's transaction when not, and the settings the hosts
/// share (the secret that proves a request forwarded by one of them).
fn leases_v2() -> String {
    format!(
        "CREATE TABLE stepwise.leases (\
           name text PRIMARY KEY, \
           holder text NOT NULL, \
           epoch bigint NOT NULL, \
           expires_at timestamptz NOT NULL, \
           address text NOT NULL); \
         CREATE TABLE stepwise.cluster (name text PRIMARY KEY, value text NOT NULL); \
         CREATE FUNCTION stepwise.hold_lease(lease_name text, lease_holder text, lease_epoch bigint) \
         RETURNS void LANGUAGE plpgsql AS $fn$ \
         BEGIN \
           PERFORM 1 FROM stepwise.leases \
             WHERE name = lease_name AND holder = lease_holder AND epoch = lease_epoch FOR SHARE; \
           IF NOT FOUND THEN \
             RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = format( \
               'host %s no longer holds the lease %s at epoch %s: another host took it over', \
               lease_holder, lease_name, lease_epoch); \
           END IF; \
         END $fn$",
        code = super::lease::FENCED_SQLSTATE
    )
}

/// Brings the database's schema to [`latest`], or fails saying why.
pub async fn migrate(mut connection: Connection) -> Result<Connection> {
    let client = connection.client().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("waiting for other hosts' migrations (pg_advisory_lock)")?;
    let migrated = migrate_locked(&mut connection).await;
    let client = connection.client().await?;
    if migrated.is_err() {
        // A failed migration leaves its transaction open, aborted.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .context("releasing the migration lock");
    migrated?;
    unlocked?;
    Ok(connection)
}

async fn migrate_locked(connection: &mut Connection) -> Result<()> {
    let client = connection.client().await?;
    let schema_exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'stepwise'", &[])
        .await
        .context("looking for the stepwise schema")?
        .is_some();
    if !schema_exists {
        client
            .batch_execute(
                "CREATE SCHEMA stepwise; \
                 CREATE TABLE stepwise.schema_version (version integer NOT NULL)",
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "could not create the stepwise schema: {e}; the --store user needs to be \
                     allowed to create it (GRANT CREATE ON DATABASE <db> TO <user>), or an \
                     owner can create it once: CREATE SCHEMA stepwise AUTHORIZATION <user>"
                )
            })?;
    }
    let current: i32 = client
        .query_opt("SELECT max(version) FROM stepwise.schema_version", &[])
        .await
        .context("reading the schema version (stepwise.schema_version)")?
        .and_then(|row| row.get::<_, Option<i32>>(0))
        .unwrap_or(0);
    if current > latest() {
        bail!(
            "the database's stepwise schema is version {current}, newer than this binary's \
             {}: a newer stepwise has migrated it; run that version (or newer) here, or point \
             --store at another database",
            latest()
        );
    }
    for version in current + 1..=latest() {
        let sql = MIGRATIONS[(version - 1) as usize]();
        let client = connection.client().await?;
        client
            .batch_execute(&format!(
                "BEGIN; {sql}; INSERT INTO stepwise.schema_version VALUES ({version}); COMMIT"
            ))
            .await
            .with_context(|| format!("migrating the stepwise schema to version {version}"))?;
        tracing::info!(version, "migrated the stepwise schema");
    }
    Ok(())
}

//! The PostgreSQL journal's start: what a wrong `--store` says, and that
//! it writes nothing; TLS to the database as `sslmode` asks. (The whole suite runs on PostgreSQL with
//! `STEPWISE_TEST_STORE=postgres`.)

use crate::{PATIENCE, STEPWISE, compiled_cache, start_script};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use stepwise_tests::postgres::{cluster, database_of};
use stepwise_tests::{HostOptions, HostProcess, Loopback, guests};

/// A host on a new data directory with its journal at `url` (kept alive
/// by the returned directory).
pub fn host_on(url: &str) -> (tempfile::TempDir, HostProcess) {
    let data = tempfile::tempdir().unwrap();
    let options = HostOptions {
        extra_args: vec![
            "--store".into(),
            url.to_string(),
            "--compiled-dir".into(),
            compiled_cache(),
        ],
        ..HostOptions::default()
    };
    let host = HostProcess::start(STEPWISE, data.path(), options)
        .unwrap_or_else(|e| panic!("a host on {url}: {e:#}"));
    (data, host)
}

/// Starts `stepwise serve --store url`, which must fail; returns what it
/// printed to stderr.
fn start_fails(url: &str) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(STEPWISE)
        .args(["serve", "--listen", "127.0.0.1:0", "--store", url, "--data"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the host started with --store {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unreachable_or_malformed_store_is_a_clear_error_at_start() {
    let missing = start_fails("postgres://stepwise@/journal?host=/nonexistent/socket/dir");
    assert!(
        missing.contains("could not connect to PostgreSQL at /nonexistent/socket/dir")
            && missing.contains("check that the server is running"),
        "{missing}"
    );
    let malformed = start_fails("postgres://stepwise@host:notaport/db");
    assert!(
        malformed.contains("not a PostgreSQL connection string"),
        "{malformed}"
    );
    let secret = start_fails("postgres://stepwise:hunter2@/journal?host=/nonexistent");
    assert!(
        !secret.contains("hunter2"),
        "the password is printed: {secret}"
    );
}

#[test]
fn a_database_a_newer_binary_migrated_is_refused_and_left_as_it_was() {
    let cluster = cluster().unwrap();
    let url = cluster.new_database().unwrap();
    let database = database_of(&url).unwrap();
    drop(host_on(&url));
    let versions =
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM stepwise.schema_version";
    let migrated = cluster.sql_in(database, versions).unwrap();
    assert!(!migrated.is_empty(), "the host migrated the schema");
    cluster
        .sql_in(database, "INSERT INTO stepwise.schema_version VALUES (999)")
        .unwrap();
    let tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'stepwise'";
    let before = cluster.sql_in(database, tables).unwrap();

    let refused = start_fails(&url);
    assert!(
        refused.contains("schema is version 999, newer than this binary's"),
        "{refused}"
    );
    assert_eq!(
        cluster.sql_in(database, versions).unwrap(),
        format!("{migrated},999")
    );
    assert_eq!(cluster.sql_in(database, tables).unwrap(), before);
}

#[test]
fn a_user_who_may_not_create_the_schema_is_told_what_to_grant() {
    let cluster = cluster().unwrap();
    let url = cluster.new_database().unwrap();
    let database = database_of(&url).unwrap();
    let role = format!("weak_{}", std::process::id());
    cluster.sql(&format!("CREATE ROLE {role} LOGIN")).unwrap();
    let weak = url.replacen("stepwise@", &format!("{role}@"), 1);
    let refused = start_fails(&weak);
    assert!(
        refused.contains("could not create the stepwise schema")
            && refused.contains("GRANT CREATE ON DATABASE"),
        "{refused}"
    );
    let schemas = cluster
        .sql_in(
            database,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'stepwise'",
        )
        .unwrap();
    assert_eq!(schemas, "0", "nothing was created");
}

/// Starts a host on `url` and runs a one-step script on it to completion;
/// the host runs on until dropped.
async fn works_on(url: &str) -> (tempfile::TempDir, HostProcess) {
    let (data, host) = host_on(url);
    host.deploy("probe", guests::PROBE).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    let run = start_script(&host, json!({"url": loopback.url, "ops": [{"run": "a"}]})).await;
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    (data, host)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_the_database_checks_what_sslmode_asks() {
    let cluster = cluster().unwrap();
    let ca = cluster.ca_file().unwrap();
    let other_ca = cluster.other_ca_file().unwrap();
    // A new database each time: each host is alone on its own.
    let with = |host: &str, params: String| {
        let url = cluster.new_database().unwrap();
        let name = database_of(&url).unwrap().to_string();
        (cluster.tcp_url(host, &name, &params), name)
    };

    // The certificate checked, chain and name.
    let full = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let (url, name) = with("localhost", full.clone());
    let running = works_on(&url).await;
    let encrypted = cluster
        .sql(&format!(
            "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{name}' AND a.application_name = 'stepwise'"
        ))
        .unwrap();
    let (tls, all) = encrypted.split_once('/').unwrap();
    assert!(
        all != "0" && tls == all,
        "connections with TLS / all: {encrypted}"
    );
    drop(running);
    // Encrypted without a check, and the chain without the name.
    works_on(&with("localhost", "sslmode=require".into()).0).await;

    let chain_only = format!("sslmode=verify-ca&sslrootcert={}", ca.display());
    works_on(&with("127.0.0.1", chain_only).0).await;

    // A name the certificate is not for, a CA that did not sign it, and no
    // TLS where the server requires it: clear errors at start.
    let wrong_name = start_fails(&with("127.0.0.1", full).0);
    assert!(
        wrong_name.contains("could not connect to PostgreSQL at 127.0.0.1")
            && wrong_name.contains("sslrootcert"),
        "{wrong_name}"
    );
    let untrusted = start_fails(
        &with(
            "localhost",
            format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
        )
        .0,
    );
    assert!(
        untrusted.contains("could not connect") && untrusted.to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    let plain = start_fails(&with("localhost", "sslmode=disable".into()).0);
    assert!(
        plain.contains("no encryption") || plain.contains("pg_hba.conf"),
        "{plain}"
    );
    let missing = start_fails(
        &with(
            "localhost",
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem".into(),
        )
        .0,
    );
    assert!(
        missing.contains("reading sslrootcert /nonexistent/ca.pem"),
        "{missing}"
    );
}

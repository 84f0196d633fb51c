//! Keys and what users send, attacked against a real host (issue 9,
//! findings 5-7): no implicit default tenant under `--require-keys`, no key
//! in clear in the journal, a private data directory, revocation and
//! `--event-key` that stick across restarts, and event names, ids, logs and
//! CLI output that control characters cannot subvert.

use crate::tenants::{ADMIN, admin_host, create_tenant, status};
use crate::{PATIENCE, STEPWISE, compiled_cache, start_host, start_script};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use stepwise_host::journal::{Journal, Op, SledJournal};
use stepwise_host::model::{EventRecord, TenantRecord};
use stepwise_tests::{Api, HostOptions, HostProcess, guests};

/// A host on `dir` (kept from an earlier host, or prepared) with `extra`
/// arguments.
fn host_on(dir: &Path, extra: &[&str]) -> HostProcess {
    let mut extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    extra_args.extend(["--compiled-dir".to_string(), compiled_cache()]);
    HostProcess::start(
        STEPWISE,
        dir,
        HostOptions {
            extra_args,
            ..HostOptions::default()
        },
    )
    .expect("starting the host")
}

/// The answer to `POST /e/{key}` with one event.
async fn send_with(host: &HostProcess, key: &str, event: Value) -> (StatusCode, Value) {
    let api = host.as_tenant("", key);
    let response = api
        .request(Method::POST, &format!("/e/{key}"))
        .json(&event)
        .send()
        .await
        .unwrap();
    let code = response.status();
    (code, response.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/runs` with `key` as the bearer key (none if empty).
async fn runs_with(host: &HostProcess, key: &str) -> StatusCode {
    let mut api: Api = host.as_tenant(key, "");
    if key.is_empty() {
        api.key = None;
    }
    status(&api, Method::GET, "/v1/runs", None).await.0
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The files under `dir` whose bytes hold `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn require_keys_has_no_default_tenant_and_the_old_default_keys_open_nothing() {
    // A fresh host: nothing printed, nothing opens the default tenant.
    let (_fresh, host) = admin_host(&["--require-keys"]);
    let printed = host.start_output.join("\n");
    assert!(printed.contains("no default tenant"), "{printed}");
    assert!(
        !printed.contains("swe_") && !printed.contains("swm_"),
        "{printed}"
    );
    assert_eq!(runs_with(&host, "").await, StatusCode::UNAUTHORIZED);
    drop(host);

    // A data directory a dev-mode host used: its default keys worked there...
    let dir = tempfile::tempdir().unwrap();
    let dev = host_on(dir.path(), &[]);
    let (event, management) = (dev.event_key.clone(), dev.management_key.clone());
    assert!(event.starts_with("swe_") && management.starts_with("swm_"));
    assert_eq!(runs_with(&dev, &management).await, StatusCode::OK);
    assert_eq!(
        send_with(&dev, &event, json!({"name": "a/b"})).await.0,
        StatusCode::OK
    );
    drop(dev);

    // ...and open nothing under --require-keys, nor are they printed.
    let strict = host_on(dir.path(), &["--require-keys", "--admin-key", ADMIN]);
    let printed = strict.start_output.join("\n");
    assert!(
        !printed.contains(&event) && !printed.contains(&management),
        "{printed}"
    );
    assert!(strict.event_key.is_empty() && strict.management_key.is_empty());
    assert_eq!(runs_with(&strict, "").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        runs_with(&strict, &management).await,
        StatusCode::UNAUTHORIZED
    );
    let (code, body) = send_with(&strict, &event, json!({"name": "a/b"})).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    // A tenant the operator makes works as usual.
    let acme = create_tenant(&strict, "acme");
    assert_eq!(
        status(&acme, Method::GET, "/v1/runs", None).await.0,
        StatusCode::OK
    );
    // --event-key has no default tenant to set under --require-keys.
    drop(strict);
    let refused = HostProcess::start(
        STEPWISE,
        dir.path(),
        HostOptions {
            extra_args: vec!["--require-keys".into(), "--event-key".into(), event],
            ..HostOptions::default()
        },
    )
    .err()
    .expect("the host refuses to start")
    .to_string();
    assert!(
        refused.contains("--event-key") && refused.contains("--require-keys"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_default_key_stays_revoked_and_unprinted_after_restarts() {
    let (_dir, mut host) = admin_host(&[]);
    let (event, management) = (host.event_key.clone(), host.management_key.clone());
    let admin = host.as_tenant(ADMIN, "");
    let (code, tenant) = status(&admin, Method::GET, "/v1/tenants/default", None).await;
    assert_eq!(code, StatusCode::OK, "{tenant}");
    for key in tenant["keys"].as_array().unwrap() {
        let path = format!("/v1/tenants/default/keys/{}", key["id"].as_str().unwrap());
        let (code, body) = status(&admin, Method::DELETE, &path, None).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    assert_eq!(
        runs_with(&host, &management).await,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..2 {
        host.restart().unwrap();
        let printed = host.start_output.join("\n");
        assert!(
            !printed.contains(&event) && !printed.contains(&management),
            "a revoked key is printed again: {printed}"
        );
        assert!(
            printed.contains("no event key") && printed.contains("no management key"),
            "{printed}"
        );
        assert_eq!(
            runs_with(&host, &management).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send_with(&host, &event, json!({"name": "a/b"})).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_is_private_and_no_key_is_stored_in_clear() {
    let (dir, mut host) = admin_host(&[]);
    let acme = create_tenant(&host, "acme");
    acme.deploy("probe", guests::PROBE).await.unwrap();
    let run = start_script(&acme, json!({"ops": [{"local": "a"}]})).await;
    acme.wait_status(&run, "completed", PATIENCE).await.unwrap();
    host.send("a/b", json!({})).await.unwrap();
    // Written to disk for sure, and sled's files made at a start included.
    host.restart().unwrap();
    host.kill();

    let data = dir.path();
    let key_file = data.join(stepwise_host::tenants::KEY_FILE);
    let keys = [
        host.event_key.as_str(),
        host.management_key.as_str(),
        acme.event_key.as_str(),
        acme.key.as_deref().unwrap(),
        ADMIN,
    ];
    for key in keys {
        let found: Vec<PathBuf> = holding(data, key)
            .into_iter()
            .filter(|f| *f != key_file)
            .collect();
        assert!(found.is_empty(), "{key} is kept in clear in {found:?}");
    }
    // The dev keys' one clear copy, for `serve` to print: private.
    let kept = std::fs::read_to_string(&key_file).unwrap();
    assert!(kept.contains(&host.event_key) && kept.contains(&host.management_key));
    assert!(!kept.contains(acme.key.as_deref().unwrap()));

    if let Some(contents) = stepwise_tests::host::database_contents(data).unwrap() {
        assert!(
            contents.contains("\"tenants\"") || contents.contains("acme"),
            "the database's tables are read: {contents}"
        );
        for key in keys {
            assert!(
                !contents.contains(key),
                "{key} is kept in clear in the database"
            );
        }
    }
    assert_eq!(mode(data), 0o700);
    let all = files(data);
    let journal_files = if stepwise_tests::host::on_postgres() {
        0
    } else {
        3
    };
    assert!(
        all.len() > journal_files,
        "the journal's files are there: {all:?}"
    );
    for file in all {
        let folder = file.parent().unwrap();
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_journal_with_keys_in_clear_is_migrated_when_the_host_opens_it() {
    if stepwise_tests::host::on_postgres() {
        eprintln!("sled only: no release kept keys in clear in PostgreSQL");
        return;
    }
    // What a host before this change left: both default keys in clear in
    // the journal's settings (and their hashes in the tenant's record),
    // in a 0755 directory of 0644 files.
    let event = "swe_legacyeventkey00000000000000000000000000000";
    let management = "swm_legacymanagementkey000000000000000000000000";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let journal_dir = data.join("journal");
    {
        let journal = SledJournal::open(&journal_dir).unwrap();
        let default: TenantRecord = serde_json::from_value(json!({
            "name": "default",
            "created_at": 1,
            "keys": [
                {"id": "cda97de49c38", "kind": "event", "created_at": 1,
                 "hash": "cda97de49c386ca297117c9008af58346833289d2cb4727eebfe322986b3be17"},
                {"id": "1a24deab064c", "kind": "management", "created_at": 1,
                 "hash": "1a24deab064c5714a3ee15c0404acecaa1580aee01bfea6fb05b5cb1f758c9c0"},
            ],
            "http_allow": ["*"],
        }))
        .unwrap();
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
                Op::PutTenant(default),
            ])
            .unwrap();
        journal.flush().unwrap();
    }
    for path in files(&journal_dir) {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        !holding(&journal_dir, management).is_empty(),
        "the old format"
    );

    let mut host = host_on(data, &[]);
    // The same keys still work and are printed, from the private file...
    assert_eq!(host.event_key, event);
    assert_eq!(host.management_key, management);
    assert_eq!(runs_with(&host, management).await, StatusCode::OK);
    host.kill();
    // ...and not one byte of them is left in the journal.
    assert_eq!(holding(&journal_dir, management), Vec::<PathBuf>::new());
    assert_eq!(holding(&journal_dir, event), Vec::<PathBuf>::new());
    assert_eq!(mode(data), 0o700);
    for file in files(data) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // Keys dev mode made open nothing under --require-keys.
    let strict = host_on(data, &["--require-keys"]);
    assert_eq!(
        runs_with(&strict, management).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_event_key_retires_the_previous_one_unless_asked_to_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = host_on(dir.path(), &[]).event_key.clone();
    let second = "swe_second0123456789abcdef0123456789abcdef0123";
    let host = host_on(dir.path(), &["--event-key", second]);
    assert_eq!(host.event_key, second);
    let printed = host.start_output.join("\n");
    assert!(
        printed.contains("retired") && printed.contains("--keep-old"),
        "the start message says the old key was retired: {printed}"
    );
    let (code, body) = send_with(&host, &first, json!({"name": "a/b"})).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        send_with(&host, second, json!({"name": "a/b"})).await.0,
        StatusCode::OK
    );
    drop(host);

    let third = "swe_third0123456789abcdef0123456789abcdef01234";
    let host = host_on(dir.path(), &["--event-key", third, "--keep-old"]);
    let printed = host.start_output.join("\n");
    assert!(printed.contains("still valid (--keep-old)"), "{printed}");
    for key in [second, third] {
        assert_eq!(
            send_with(&host, key, json!({"name": "a/b"})).await.0,
            StatusCode::OK,
            "{key}"
        );
    }
    drop(host);
    // A retired key does not come back, even when given again.
    let refused = HostProcess::start(
        STEPWISE,
        dir.path(),
        HostOptions {
            extra_args: vec!["--event-key".into(), first],
            ..HostOptions::default()
        },
    )
    .err()
    .expect("the host refuses a revoked key")
    .to_string();
    assert!(refused.contains("was revoked"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_in_event_names_and_ids_are_refused_and_cannot_forge_a_log_line() {
    let (_dir, host) = start_host();
    let key = host.event_key.clone();
    for bad in ["a/\u{1b}[2Jb", "a/\rb", "a/b\u{7}", "a/b\nERROR forged"] {
        let (code, body) = send_with(&host, &key, json!({"name": bad})).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("\"name\"") && error.contains("printable characters only"),
            "{error}"
        );
        let (code, body) = send_with(&host, &key, json!({"name": "a/b", "id": bad})).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("\"id\""), "{body}");
        let (code, body) = status(
            &host,
            Method::POST,
            "/v1/events",
            Some(json!({"name": bad})),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    }
    // The attack of the finding: a duplicate id carrying a log line.
    let forged = "dup\n2030-01-01T00:00:00Z ERROR stepwise: forged line";
    for _ in 0..2 {
        let (code, _) = send_with(&host, &key, json!({"name": "a/b", "id": forged})).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }
    // A duplicate id that is allowed is logged quoted, on its own line.
    for _ in 0..2 {
        let (code, _) = send_with(
            &host,
            &key,
            json!({"name": "a/b", "id": "dup \"quoted\" ✓"}),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
    }
    let log = host.log();
    assert!(log.contains("duplicate event id"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("forged line") || l.starts_with("2030")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_prints_control_characters_users_sent_as_escapes() {
    // An event stored before names were checked, as an older host accepted
    // it, and a run whose output holds terminal controls.
    let dir = tempfile::tempdir().unwrap();
    let evil = "evil\u{1b}]0;pwned\u{7}\rname";
    {
        let journal = stepwise_tests::host::open_journal(dir.path()).unwrap();
        journal
            .apply(vec![Op::PutEvent {
                tenant: "default".into(),
                event: EventRecord {
                    id: "old\u{1b}[2Jid".into(),
                    name: evil.into(),
                    data: json!({}),
                    user: None,
                    ts: 1,
                    v: None,
                    received_at: 1,
                    trace: None,
                },
                dedupe: false,
            }])
            .unwrap();
        journal.flush().unwrap();
    }
    let host = host_on(dir.path(), &[]);
    host.deploy("probe", guests::PROBE).await.unwrap();
    let run = start_script(
        &host,
        json!({"ops": [{"print": "red \u{1b}[31mRED\u{7} back\rX"}]}),
    )
    .await;
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();

    let cli = |args: &[&str]| {
        let output = Command::new(STEPWISE)
            .args(args)
            .env("STEPWISE_SERVER", &host.url)
            .output()
            .expect("running the CLI");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let events = cli(&["events"]);
    let run_out = cli(&["run", &run]);
    for out in [&events, &run_out] {
        assert!(
            !out.contains(['\u{1b}', '\u{7}', '\r']),
            "a control character reached the terminal: {out:?}"
        );
    }
    assert!(
        events.contains("evil\\u{1b}]0;pwned\\u{7}\\rname"),
        "{events}"
    );
    assert!(events.contains("old\\u{1b}[2Jid"), "{events}");
    assert!(
        run_out.contains("red \\u{1b}[31mRED\\u{7} back\\rX"),
        "{run_out}"
    );
}

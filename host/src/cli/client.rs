//! The client commands: each is one HTTP call to a running host, printed as
//! a table (or as the host's JSON with `--json`).
//!
//! Much of what is printed was sent by users (event names and ids, step
//! outputs, errors, logs), so text goes through [`shown`] first: a control
//! character such as ESC, CR or BEL is printed as an escape, never sent to
//! the terminal. (`--json` is safe as it is: JSON escapes them.)

use super::ServerArgs;
use crate::api::views::{RunDetail, RunView};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

pub(super) async fn call(request: reqwest::RequestBuilder, server: &ServerArgs) -> Result<Value> {
    answer(request, &server.server, server.key.as_deref()).await
}

/// Sends `request` to the host at `server` with `key` (a tenant's or the
/// admin's), if any: the host's JSON answer, or an error with the host's
/// message and status (and its JSON as [`Refused`]).
pub(super) async fn answer(
    request: reqwest::RequestBuilder,
    server: &str,
    key: Option<&str>,
) -> Result<Value> {
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("could not reach the host at {server} (is `stepwise serve` running? set --server or STEPWISE_SERVER)"))?;
    let status = response.status();
    let text = response.text().await.context("reading the host's answer")?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        return Err(anyhow::Error::new(Refused(body)).context(format!(
            "{} (HTTP {})",
            shown(&message),
            status.as_u16()
        )));
    }
    Ok(body)
}

/// The host's answer to a refused request (its JSON, e.g. a replay report).
#[derive(Debug)]
pub(super) struct Refused(pub Value);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused")
    }
}

impl std::error::Error for Refused {}

/// `text` safe for a terminal: control characters (ESC, CR, BEL, newline,
/// ...), line separators and bidirectional overrides written as escapes
/// (`\u{1b}`), as [`crate::model::escape_unprintable`] does.
pub(super) fn shown(text: &str) -> String {
    crate::model::escape_unprintable(text).into_owned()
}

fn url(server: &ServerArgs, path: &str) -> String {
    format!("{}{path}", server.server.trim_end_matches('/'))
}

pub(super) fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `stepwise deploy FILE [--app NAME]`
pub async fn deploy(
    server: &ServerArgs,
    file: &Path,
    app: Option<String>,
    check_replay: bool,
) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let app = match app {
        Some(app) => app,
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .context("the file has no name; pass --app")?,
    };
    let client = reqwest::Client::new();
    let request = client
        .put(url(server, &format!("/v1/apps/{app}")))
        .query(&[("check_replay", check_replay)])
        .body(bytes);
    let body = match call(request, server).await {
        Ok(body) => body,
        Err(error) => {
            if let Some(report) = error
                .downcast_ref::<Refused>()
                .and_then(|r| r.0.get("report"))
            {
                print_replay(report);
            }
            return Err(error);
        }
    };
    if server.json {
        return print_json(&body);
    }
    let version = body["version"].as_str().unwrap_or("?");
    println!(
        "deployed {app} version {}",
        &version[..version.len().min(12)]
    );
    for function in body["functions"].as_array().into_iter().flatten() {
        println!(
            "  {}  <- {}",
            shown(function["id"].as_str().unwrap_or("?")),
            shown(&triggers_text(function))
        );
    }
    Ok(())
}

/// `stepwise send NAME [--data JSON] [--id ID]`
pub async fn send(server: &ServerArgs, name: &str, data: &str, id: Option<String>) -> Result<()> {
    let data: Value = serde_json::from_str(data).context("--data is not valid JSON")?;
    let mut event = serde_json::json!({ "name": name, "data": data });
    if let Some(id) = id {
        event["id"] = Value::String(id);
    }
    let client = reqwest::Client::new();
    let body = call(client.post(url(server, "/v1/events")).json(&event), server).await?;
    if server.json {
        return print_json(&body);
    }
    for id in body["ids"].as_array().into_iter().flatten() {
        println!(
            "sent {} as event {}",
            shown(name),
            shown(id.as_str().unwrap_or("?"))
        );
    }
    Ok(())
}

/// `stepwise runs`
pub async fn runs(
    server: &ServerArgs,
    function: Option<String>,
    status: Option<String>,
    limit: usize,
) -> Result<()> {
    let mut query = vec![("limit", limit.to_string())];
    query.extend(function.map(|f| ("function", f)));
    query.extend(status.map(|s| ("status", s)));
    let client = reqwest::Client::new();
    let body = call(client.get(url(server, "/v1/runs")).query(&query), server).await?;
    if server.json {
        return print_json(&body);
    }
    let runs: Vec<RunView> = serde_json::from_value(body).context("reading the runs")?;
    if runs.is_empty() {
        println!("no runs");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.function.clone(),
                r.status.clone(),
                time(r.created_at),
                r.ended_at
                    .map(|end| duration(end.saturating_sub(r.created_at)))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "FUNCTION", "STATUS", "CREATED", "TOOK"], &rows);
    Ok(())
}

/// `stepwise run ID`
pub async fn run(server: &ServerArgs, id: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let body = call(client.get(url(server, &format!("/v1/runs/{id}"))), server).await?;
    if server.json {
        return print_json(&body);
    }
    let detail: RunDetail = serde_json::from_value(body).context("reading the run")?;
    let run = &detail.run;
    println!("run       {}", shown(&run.id));
    println!(
        "function  {} (app {}, version {})",
        shown(&run.function),
        shown(&run.app),
        shown(short(&run.version))
    );
    println!("status    {}", shown(&run.status));
    println!("created   {}", time(run.created_at));
    if let Some(ended) = run.ended_at {
        println!(
            "ended     {} (took {})",
            time(ended),
            duration(ended.saturating_sub(run.created_at))
        );
    }
    if let Some(wake) = run.wake_at {
        println!("retry at  {}", time(wake));
    }
    println!("events    {}", shown(&run.event_ids.join(", ")));
    println!();
    if detail.steps.is_empty() {
        println!("no steps yet");
    } else {
        let rows: Vec<Vec<String>> = detail
            .steps
            .iter()
            .map(|s| {
                let result = match (&s.output, &s.error) {
                    (_, Some(e)) if s.status != "completed" => format!("{}: {}", e.name, e.message),
                    (Some(out), _) => out.to_string(),
                    _ => s
                        .wake_at
                        .map(|w| format!("until {}", time(w)))
                        .unwrap_or_default(),
                };
                vec![
                    s.id.clone(),
                    s.kind.clone(),
                    s.status.clone(),
                    s.attempts.to_string(),
                    time(s.started_at),
                    s.duration_ms.map(duration).unwrap_or_default(),
                    truncate(&result, 60),
                ]
            })
            .collect();
        table(
            &[
                "STEP", "KIND", "STATUS", "ATTEMPTS", "STARTED", "TOOK", "OUTPUT",
            ],
            &rows,
        );
    }
    if let Some(output) = &run.output {
        println!("\noutput    {}", shown(&output.to_string()));
    }
    if let Some(error) = &run.error {
        println!(
            "\nerror     {}",
            shown(&format!("{}: {}", error.name, error.message))
        );
    }
    if !detail.logs.is_empty() {
        println!("\nlog:");
        let text: String = detail.logs.iter().map(|l| l.text.as_str()).collect();
        for line in text.lines() {
            println!("  {}", shown(line));
        }
    }
    Ok(())
}

/// `stepwise cancel ID`
pub async fn cancel(server: &ServerArgs, id: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let body = call(
        client.post(url(server, &format!("/v1/runs/{id}/cancel"))),
        server,
    )
    .await?;
    if server.json {
        return print_json(&body);
    }
    println!("cancelled run {id}");
    Ok(())
}

/// `stepwise cancel --function ID [--since 1h]`: every run of the function
/// created in that window that has not ended.
pub async fn cancel_many(
    server: &ServerArgs,
    function: &str,
    since: Option<Duration>,
) -> Result<()> {
    let from = since.map(|d| {
        std::time::SystemTime::now()
            .checked_sub(d)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    });
    let client = reqwest::Client::new();
    let body = call(
        client
            .post(url(server, "/v1/runs/cancel"))
            .json(&serde_json::json!({ "function": function, "from": from })),
        server,
    )
    .await?;
    if server.json {
        return print_json(&body);
    }
    let cancelled = body["cancelled"].as_array().map(Vec::len).unwrap_or(0);
    println!("cancelled {cancelled} runs of {function}");
    Ok(())
}

/// A function's triggers as people read them.
fn triggers_text(function: &Value) -> String {
    let triggers: Vec<crate::model::TriggerRecord> =
        serde_json::from_value(function["triggers"].clone()).unwrap_or_default();
    triggers
        .iter()
        .map(|t| t.describe())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `stepwise functions`
pub async fn functions(server: &ServerArgs) -> Result<()> {
    let client = reqwest::Client::new();
    let body = call(client.get(url(server, "/v1/functions")), server).await?;
    if server.json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                f["id"].as_str().unwrap_or("?").to_string(),
                f["app"].as_str().unwrap_or("?").to_string(),
                triggers_text(f),
                f["retries"].to_string(),
            ]
        })
        .collect();
    table(&["FUNCTION", "APP", "TRIGGERS", "RETRIES"], &rows);
    Ok(())
}

/// `stepwise events`
pub async fn events(server: &ServerArgs, limit: usize) -> Result<()> {
    let client = reqwest::Client::new();
    let body = call(
        client
            .get(url(server, "/v1/events"))
            .query(&[("limit", limit)]),
        server,
    )
    .await?;
    if server.json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                e["id"].as_str().unwrap_or("?").to_string(),
                e["name"].as_str().unwrap_or("?").to_string(),
                e["received_at"].as_u64().map(time).unwrap_or_default(),
                truncate(&e["data"].to_string(), 60),
            ]
        })
        .collect();
    table(&["ID", "NAME", "RECEIVED", "DATA"], &rows);
    Ok(())
}

/// Prints `rows` under `headers` in aligned columns, every cell through
/// [`shown`].
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| shown(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1_000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1_000)).to_string()
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// Prints a replay report: one line per run, the first difference of each.
fn print_replay(report: &Value) {
    let rows: Vec<Vec<String>> = report["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let verdict = r["verdict"].as_str().unwrap_or("?");
            let detail = match verdict {
                "diverged" => format!(
                    "at step {}: the journal has {} but the candidate calls {}",
                    r["step_index"],
                    r["expected"].as_str().unwrap_or("?"),
                    r["actual"].as_str().unwrap_or("?")
                ),
                "failed" => r["message"].as_str().unwrap_or("?").to_string(),
                _ => format!("{} of {} steps", r["replayed"], r["journaled"]),
            };
            vec![
                r["run"].as_str().unwrap_or("?").to_string(),
                r["function"].as_str().unwrap_or("?").to_string(),
                r["status"].as_str().unwrap_or("?").to_string(),
                verdict.to_string(),
                detail,
            ]
        })
        .collect();
    table(&["RUN", "FUNCTION", "STATUS", "REPLAY", "DETAIL"], &rows);
    println!(
        "{} runs replayed against {}: {} diverge, {} fail",
        rows.len(),
        short(report["candidate"].as_str().unwrap_or("?")),
        report["diverged"],
        report["failed"]
    );
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// `stepwise replay --app APP CANDIDATE.wasm`: fails if a run diverges.
pub async fn replay(server: &ServerArgs, candidate: &Path, app: &str) -> Result<()> {
    let bytes =
        std::fs::read(candidate).with_context(|| format!("reading {}", candidate.display()))?;
    let client = reqwest::Client::new();
    let report = call(
        client
            .post(url(server, &format!("/v1/apps/{app}/replay")))
            .body(bytes),
        server,
    )
    .await?;
    if server.json {
        print_json(&report)?;
    } else {
        print_replay(&report);
    }
    if report["diverged"].as_u64().unwrap_or(0) > 0 {
        bail!("the candidate diverges from recorded runs; deploying it would fail them");
    }
    Ok(())
}

/// `stepwise versions APP`
pub async fn versions(server: &ServerArgs, app: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let body = call(
        client.get(url(server, &format!("/v1/apps/{app}/versions"))),
        server,
    )
    .await?;
    if server.json {
        return print_json(&body);
    }
    let rows: Vec<Vec<String>> = body
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            vec![
                short(v["version"].as_str().unwrap_or("?")).to_string(),
                if v["current"] == true {
                    "current".into()
                } else {
                    String::new()
                },
                v["deployed_at"].as_u64().map(time).unwrap_or_default(),
                v["active_runs"].to_string(),
            ]
        })
        .collect();
    table(&["VERSION", "", "DEPLOYED", "ACTIVE RUNS"], &rows);
    Ok(())
}

/// `stepwise rollback APP VERSION`
pub async fn rollback(server: &ServerArgs, app: &str, version: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let body = call(
        client
            .post(url(server, &format!("/v1/apps/{app}/rollback")))
            .json(&serde_json::json!({ "version": version })),
        server,
    )
    .await?;
    if server.json {
        return print_json(&body);
    }
    println!(
        "{app} is on version {} again",
        short(body["version"].as_str().unwrap_or("?"))
    );
    Ok(())
}

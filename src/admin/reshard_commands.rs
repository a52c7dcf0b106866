//! What the CLI's `shardgate reshard start|status|verify|cutover|rollback|complete|cancel` do:
//! call the admin API, wait where asked, and print a workflow's state in a few lines (or the
//! JSON as it came). `reshard plan` is in `commands`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::de::DeserializeOwned;

use super::client::{Client, Response};
use super::commands::Target;
use super::reshard::WorkflowList;
use crate::reshard::manager::{CutoverRequest, KeyspaceRequest, StartRequest};
use crate::reshard::plan::Plan;
use crate::reshard::state::{CutoverAttempt, Direction, Phase, Status, VerifyReport};

/// A start estimates rows on every shard and a cutover waits for the streams to catch up:
/// minutes, not the client's default seconds.
const LONG: Duration = Duration::from_secs(900);
/// How often `--follow` and `--wait` ask again.
const POLL: Duration = Duration::from_secs(1);
/// Differing keys shown per table and kind (the API keeps up to a hundred).
const KEYS_SHOWN: usize = 10;

/// `reshard start`'s request: `--add`/`--remove` as they are, or `--plan-file` (the output of
/// `reshard plan --json`) sent as the plan with its keyspace.
pub fn start_request(
    keyspace: Option<&str>,
    add: Option<String>,
    remove: Option<String>,
    plan_file: Option<&Path>,
) -> anyhow::Result<StartRequest> {
    let Some(file) = plan_file else {
        return Ok(StartRequest {
            keyspace: keyspace.unwrap_or_default().to_string(),
            add,
            remove,
            plan: None,
        });
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let plan: Plan = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a plan as `shardgate reshard plan --json` prints it",
            file.display()
        )
    })?;
    if let Some(k) = keyspace.filter(|k| *k != plan.keyspace) {
        anyhow::bail!(
            "--keyspace {k} is not the keyspace of the plan in {} ({})",
            file.display(),
            plan.keyspace
        );
    }
    Ok(StartRequest {
        keyspace: plan.keyspace.clone(),
        add: None,
        remove: None,
        plan: Some(plan),
    })
}

/// `shardgate reshard start`.
pub async fn start(target: &Target, req: &StartRequest, json: bool) -> anyhow::Result<String> {
    let (r, s): (_, Status) = post(target, "/api/v1/reshard/start", req).await?;
    Ok(if json { r.text() } else { render_status(&s) })
}

/// `shardgate reshard status [--keyspace K] [--follow]`: with `follow`, prints a fresh status
/// every second while a copy, a verify or a completion runs, and returns the last one.
pub async fn status(
    target: &Target,
    keyspace: Option<&str>,
    follow: bool,
    json: bool,
) -> anyhow::Result<String> {
    let client = target.client();
    loop {
        let (text, busy) = match keyspace {
            Some(k) => {
                let (r, s) = status_of(&client, k).await?;
                (
                    if json { r.text() } else { render_status(&s) },
                    in_progress(&s),
                )
            }
            None => {
                let r = client.call("GET", "/api/v1/reshard", None).await?;
                let list: WorkflowList = parse(&client, &r)?;
                let text = if json {
                    r.text()
                } else if list.workflows.is_empty() {
                    "no reshard workflows\n".to_string()
                } else {
                    list.workflows.iter().map(render_status).collect()
                };
                (text, list.workflows.iter().any(in_progress))
            }
        };
        if !follow || !busy {
            return Ok(text);
        }
        print_round(&text, json);
        tokio::time::sleep(POLL).await;
    }
}

/// `shardgate reshard verify --keyspace K [--wait]`: with `wait`, the verify's report once it
/// ended, and an error if it found differences.
pub async fn verify(
    target: &Target,
    keyspace: &str,
    wait: bool,
    json: bool,
) -> anyhow::Result<String> {
    let (r, s) = act(target, "verify", keyspace, wait.then_some(verifying)).await?;
    if !wait {
        return Ok(if json { r.text() } else { render_status(&s) });
    }
    let Some(report) = &s.workflow.verify else {
        anyhow::bail!("the workflow on keyspace {keyspace} has no verify report");
    };
    let text = if json {
        r.text()
    } else {
        render_verify(report)
    };
    if report.is_clean() {
        return Ok(text);
    }
    print_round(&text, json);
    anyhow::bail!("verify of keyspace {keyspace} ended {}", report.state)
}

/// `shardgate reshard cutover|rollback --keyspace K [--max-pause-ms N]`: the attempt, and an
/// error unless it switched.
pub async fn cutover(
    target: &Target,
    req: &CutoverRequest,
    rollback: bool,
    json: bool,
) -> anyhow::Result<String> {
    let path = if rollback {
        "/api/v1/reshard/rollback"
    } else {
        "/api/v1/reshard/cutover"
    };
    let (r, a): (_, CutoverAttempt) = post(target, path, req).await?;
    let text = if json { r.text() } else { render_attempt(&a) };
    if a.outcome == "switched" {
        return Ok(text);
    }
    print_round(&text, json);
    anyhow::bail!(
        "{} of keyspace {} {}{}",
        a.kind,
        req.keyspace,
        a.outcome,
        a.error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )
}

/// `shardgate reshard complete --keyspace K [--wait]`: with `wait`, returns once the moved rows
/// are deleted from the old shards (an error if the workflow ends otherwise).
pub async fn complete(
    target: &Target,
    keyspace: &str,
    wait: bool,
    json: bool,
) -> anyhow::Result<String> {
    let unfinished = |s: &Status| !s.workflow.phase.is_final();
    let (r, s) = act(target, "complete", keyspace, wait.then_some(unfinished)).await?;
    let text = if json { r.text() } else { render_status(&s) };
    if !wait || s.workflow.phase == Phase::Completed {
        return Ok(text);
    }
    print_round(&text, json);
    anyhow::bail!(
        "the workflow on keyspace {keyspace} ended {}",
        phase_name(s.workflow.phase)
    )
}

/// `shardgate reshard cancel --keyspace K`.
pub async fn cancel(target: &Target, keyspace: &str, json: bool) -> anyhow::Result<String> {
    let (r, s) = act(target, "cancel", keyspace, None::<fn(&Status) -> bool>).await?;
    Ok(if json { r.text() } else { render_status(&s) })
}

/// Posts `{"keyspace": K}` to `/api/v1/reshard/ACTION`, then, given `wait_while`, polls the
/// status until it says no longer; the last answer.
async fn act(
    target: &Target,
    action: &str,
    keyspace: &str,
    wait_while: Option<impl Fn(&Status) -> bool>,
) -> anyhow::Result<(Response, Status)> {
    let req = KeyspaceRequest {
        keyspace: keyspace.to_string(),
    };
    let (mut r, mut s) = post(target, &format!("/api/v1/reshard/{action}"), &req).await?;
    if let Some(busy) = wait_while {
        let client = target.client();
        while busy(&s) {
            tokio::time::sleep(POLL).await;
            (r, s) = status_of(&client, keyspace).await?;
        }
    }
    Ok((r, s))
}

async fn post<T: DeserializeOwned>(
    target: &Target,
    path: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<(Response, T)> {
    let client = target.client().with_timeout(LONG);
    let r = client
        .call("POST", path, Some(&serde_json::to_vec(body)?))
        .await?;
    let v = parse(&client, &r)?;
    Ok((r, v))
}

async fn status_of(client: &Client, keyspace: &str) -> anyhow::Result<(Response, Status)> {
    let path = format!("/api/v1/reshard/status?keyspace={}", query_value(keyspace));
    let r = client.call("GET", &path, None).await?;
    let s = parse(client, &r)?;
    Ok((r, s))
}

fn parse<T: DeserializeOwned>(client: &Client, r: &Response) -> anyhow::Result<T> {
    serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", client.addr(), r.text()))
}

/// Percent-encodes what a query value cannot carry as it is (keyspace names are plain words,
/// but a user may type anything).
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prints one round of a `--follow` or `--wait` (the last one is returned instead).
fn print_round(text: &str, json: bool) {
    if json || text.ends_with('\n') {
        println!("{}", text.trim_end_matches('\n'));
    } else {
        println!("{text}");
    }
}

fn verifying(s: &Status) -> bool {
    s.workflow
        .verify
        .as_ref()
        .is_some_and(|v| v.state == "running")
}

/// Whether `--follow` keeps polling: something runs that ends by itself.
fn in_progress(s: &Status) -> bool {
    matches!(s.workflow.phase, Phase::Copying | Phase::Completing) || verifying(s)
}

fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}"))
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A workflow in a few lines: what it does, the copy, the streams, the verify, the cutovers.
pub fn render_status(s: &Status) -> String {
    let w = &s.workflow;
    let mut out = format!(
        "workflow {} (keyspace {}, {}): phase {}, coordinator {}\n",
        w.id,
        w.keyspace,
        w.plan.change.describe(),
        phase_name(w.phase),
        w.coordinator
    );
    out.push_str(&format!(
        "  started {}, updated {}\n",
        w.started_at, w.updated_at
    ));
    if let Some(e) = &w.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    out.push_str(&format!(
        "  copy: {} / {} rows ({}), {:.0} rows/s, ETA {}\n",
        s.rows_copied,
        s.rows_estimated,
        percent(s.rows_copied, s.rows_estimated),
        s.rows_per_second,
        s.eta_seconds.map(duration).unwrap_or_else(|| "-".into())
    ));
    for t in &w.tables {
        out.push_str(&format!(
            "    {} {}->{}: {}/{}{}\n",
            t.table,
            t.source,
            t.target,
            t.rows_copied,
            t.rows_estimated,
            if t.done { " done" } else { "" }
        ));
    }
    if !w.streams.is_empty() {
        out.push_str("  streams:\n");
    }
    for st in &w.streams {
        out.push_str(&format!(
            "    {} {} {}: {} transactions applied, lag {}, {} behind\n",
            st.name,
            match st.direction {
                Direction::Forward => "forward",
                Direction::Reverse => "reverse",
            },
            st.state,
            st.transactions,
            st.lag_seconds
                .map(|l| format!("{l:.1}s"))
                .unwrap_or_else(|| "-".into()),
            st.behind_transactions
                .map(|b| format!("{b} transactions"))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    match &w.verify {
        Some(v) => out.push_str(&indent(&render_verify(v), "  ")),
        None => out.push_str("  verify: not run\n"),
    }
    if !w.cutovers.is_empty() {
        out.push_str("  cutovers:\n");
    }
    for a in &w.cutovers {
        out.push_str(&indent(&render_attempt(a), "    "));
    }
    if w.rows_deleted > 0 || matches!(w.phase, Phase::Completing | Phase::Completed) {
        out.push_str(&format!(
            "  deleted from the old shards: {} rows\n",
            w.rows_deleted
        ));
    }
    out
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// The verify's state and, per table, what it compared and the first differing keys.
pub fn render_verify(v: &VerifyReport) -> String {
    let mut out = format!("verify: {}, started {}", v.state, v.started_at);
    if let Some(f) = &v.finished_at {
        out.push_str(&format!(", finished {f}"));
    }
    out.push('\n');
    for t in &v.tables {
        out.push_str(&format!(
            "  {} {}->{}: {} rows compared in {} chunks, {} missing, {} extra, {} different\n",
            t.table,
            t.source,
            t.target,
            t.rows_compared,
            t.chunks,
            t.missing.len(),
            t.extra.len(),
            t.different.len()
        ));
        for (kind, keys) in [
            ("missing", &t.missing),
            ("extra", &t.extra),
            ("different", &t.different),
        ] {
            if keys.is_empty() {
                continue;
            }
            let shown: Vec<&str> = keys.iter().take(KEYS_SHOWN).map(String::as_str).collect();
            let more = if keys.len() > KEYS_SHOWN { ", ..." } else { "" };
            out.push_str(&format!("    {kind}: {}{more}\n", shown.join(", ")));
        }
    }
    out
}

/// One cutover or rollback: outcome, the writers' pause, the error, each step with its time.
pub fn render_attempt(a: &CutoverAttempt) -> String {
    let mut out = format!("{} {} (started {})", a.kind, a.outcome, a.started_at);
    if let Some(p) = a.pause_ms {
        out.push_str(&format!(", writes paused {p} ms"));
    }
    if let Some(v) = a.version {
        out.push_str(&format!(", shard map version {v}"));
    }
    out.push('\n');
    if let Some(e) = &a.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    for s in &a.steps {
        out.push_str(&format!("  {} @{}ms\n", s.step, s.at_ms));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reshard::plan::Change;
    use crate::reshard::state::{Step, StreamState, TableCopy, TableVerify, Workflow};

    fn status() -> Status {
        let map: crate::shardmap::ShardMap = toml::from_str(
            r#"
[keyspace.app]
sharding = "consistent_hash"
[keyspace.app.tables.t]
shard_key = "id"
[[keyspace.app.shards]]
name = "s0"
primary = "h:1"
[[keyspace.app.shards]]
name = "s1"
primary = "h:2"
"#,
        )
        .expect("map");
        let plan =
            crate::reshard::plan::plan(&map, "app", &Change::Remove("s1".into())).expect("plan");
        Status {
            workflow: Workflow {
                id: "app-1".into(),
                keyspace: "app".into(),
                before: map.keyspace["app"].clone(),
                plan,
                phase: Phase::Copying,
                started_at: "2026-12-07T13:00:00Z".into(),
                updated_at: "2026-12-07T13:01:00Z".into(),
                coordinator: "local".into(),
                tables: vec![TableCopy {
                    table: "t".into(),
                    kind: "sharded".into(),
                    source: "s1".into(),
                    target: "s0".into(),
                    rows_estimated: 2000,
                    rows_read: 500,
                    rows_copied: 500,
                    last_key: None,
                    done: false,
                }],
                streams: vec![StreamState {
                    name: "app s1->s0".into(),
                    direction: Direction::Forward,
                    kind: "sharded".into(),
                    source: "s1".into(),
                    target: "s0".into(),
                    start_position: "0-1-1".into(),
                    applied_position: "0-1-9".into(),
                    transactions: 8,
                    rows_applied: 8,
                    lag_seconds: Some(0.25),
                    behind_transactions: Some(2),
                    state: "running".into(),
                }],
                verify: None,
                cutovers: vec![],
                rows_deleted: 0,
                error: None,
            },
            rows_estimated: 2000,
            rows_copied: 500,
            rows_per_second: 250.0,
            eta_seconds: Some(75.0),
            lag_seconds: Some(0.25),
        }
    }

    #[test]
    fn a_copying_workflow_shows_progress_tables_and_streams() {
        let s = status();
        let text = render_status(&s);
        assert!(
            text.starts_with(
                "workflow app-1 (keyspace app, remove shard s1): phase copying, coordinator local\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  copy: 500 / 2000 rows (25.0%), 250 rows/s, ETA 1m 15s\n"),
            "{text}"
        );
        assert!(text.contains("    t s1->s0: 500/2000\n"), "{text}");
        assert!(
            text.contains(
                "    app s1->s0 forward running: 8 transactions applied, lag 0.2s, 2 transactions behind\n"
            ),
            "{text}"
        );
        assert!(text.contains("  verify: not run\n"), "{text}");
        assert!(in_progress(&s));
    }

    #[test]
    fn verify_shows_ten_keys_a_kind_and_cutovers_their_steps() {
        let mut s = status();
        s.workflow.phase = Phase::Running;
        assert!(!in_progress(&s));
        s.workflow.verify = Some(VerifyReport {
            state: "differences".into(),
            started_at: "a".into(),
            finished_at: Some("b".into()),
            tables: vec![TableVerify {
                table: "t".into(),
                source: "s1".into(),
                target: "s0".into(),
                chunks: 3,
                rows_compared: 2000,
                missing: (1..=12).map(|i| i.to_string()).collect(),
                extra: vec![],
                different: vec!["'x'".into()],
            }],
        });
        s.workflow.cutovers.push(CutoverAttempt {
            kind: "cutover".into(),
            started_at: "c".into(),
            outcome: "aborted".into(),
            steps: vec![
                Step {
                    step: "hold".into(),
                    at_ms: 0,
                },
                Step {
                    step: "wait for catch-up".into(),
                    at_ms: 480,
                },
            ],
            pause_ms: Some(500),
            error: Some("the streams did not catch up within 500 ms".into()),
            version: None,
        });
        let text = render_status(&s);
        assert!(
            text.contains("  verify: differences, started a, finished b\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "    t s1->s0: 2000 rows compared in 3 chunks, 12 missing, 0 extra, 1 different\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("      missing: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...\n"),
            "{text}"
        );
        assert!(text.contains("      different: 'x'\n"), "{text}");
        assert!(!text.contains("extra:"), "{text}");
        assert!(
            text.contains(
                "    cutover aborted (started c), writes paused 500 ms\n      error: the streams did not catch up within 500 ms\n      hold @0ms\n      wait for catch-up @480ms\n"
            ),
            "{text}"
        );
        s.workflow.verify.as_mut().expect("verify").state = "running".into();
        assert!(in_progress(&s));
    }

    #[test]
    fn a_plan_file_is_sent_with_its_keyspace() {
        let plan = status().workflow.plan;
        let dir = std::env::temp_dir().join(format!("sg-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("plan.json");
        std::fs::write(&file, serde_json::to_vec(&plan).expect("json")).expect("write");
        let req = start_request(None, None, None, Some(&file)).expect("request");
        assert_eq!(req.keyspace, "app");
        assert_eq!(req.plan.as_ref(), Some(&plan));
        let err = start_request(Some("other"), None, None, Some(&file))
            .expect_err("keyspaces differ")
            .to_string();
        assert!(
            err.contains("--keyspace other is not the keyspace"),
            "{err}"
        );
        std::fs::write(&file, "{}").expect("write");
        let err = format!(
            "{:#}",
            start_request(None, None, None, Some(&file)).expect_err("not a plan")
        );
        assert!(err.contains("is not a plan"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn query_values_are_encoded_and_durations_read() {
        assert_eq!(query_value("app_1"), "app_1");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
        assert_eq!(duration(5.4), "5s");
        assert_eq!(duration(3725.0), "1h 2m");
        assert_eq!(percent(1, 0), "-");
    }
}

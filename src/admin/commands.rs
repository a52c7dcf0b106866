//! What the CLI's admin commands do (`shardgate cache stats|flush`, `topology`, `failover`,
//! `rejoin`, `events`, `reshard plan`; the other reshard commands are in `reshard_commands`):
//! find the admin API, call it, and turn its JSON into a few readable lines (or pass the JSON
//! through).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::cache::{CacheStats, Flushed};
use super::client::Client;
use super::topology::{Role, TopologyView};
use crate::config::Config;

/// Where the admin API listens and the token to show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: String,
    pub token: Option<String>,
}

impl Target {
    /// From a proxy config (`proxy.admin_listen`, `proxy.admin_token`), with `admin` and
    /// `token` overriding either; one of `config` and `admin` is needed.
    pub fn resolve(
        config: Option<&Path>,
        admin: Option<&str>,
        token: Option<&str>,
    ) -> anyhow::Result<Target> {
        let from_config = match config {
            Some(path) => {
                let cfg = Config::load(path)?;
                Some((cfg.proxy.admin_listen, cfg.proxy.admin_token))
            }
            None => None,
        };
        let (listen, config_token) = match (admin, from_config) {
            (Some(a), c) => (a.to_string(), c.and_then(|(_, t)| t)),
            (None, Some((l, t))) => (l, t),
            (None, None) => anyhow::bail!(
                "give --config FILE (the proxy's config: its proxy.admin_listen and \
                 proxy.admin_token) or --admin HOST:PORT --token TOKEN"
            ),
        };
        Ok(Target {
            addr: reachable(&listen),
            token: token.map(str::to_string).or(config_token),
        })
    }

    pub(super) fn client(&self) -> Client {
        Client::new(self.addr.clone(), self.token.clone())
    }
}

/// A listen address as a client dials it: a wildcard (0.0.0.0, ::) means this host.
fn reachable(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(mut a) if a.ip().is_unspecified() => {
            let local = match a {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            a.set_ip(local);
            a.to_string()
        }
        _ => listen.to_string(),
    }
}

/// `shardgate cache stats`: the text to print.
pub async fn cache_stats(target: &Target, json: bool) -> anyhow::Result<String> {
    let r = target.client().call("GET", "/api/v1/cache", None).await?;
    if json {
        return Ok(r.text());
    }
    let s: CacheStats = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, r.text()))?;
    Ok(stats_table(&s))
}

/// `shardgate cache flush [--table DB.TABLE]`: the text to print.
pub async fn cache_flush(
    target: &Target,
    table: Option<&str>,
    json: bool,
) -> anyhow::Result<String> {
    let body = table.map(|t| serde_json::json!({ "table": t }).to_string());
    let r = target
        .client()
        .call(
            "POST",
            "/api/v1/cache/flush",
            body.as_deref().map(str::as_bytes),
        )
        .await?;
    if json {
        return Ok(r.text());
    }
    let f: Flushed = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, r.text()))?;
    Ok(match f.flushed.as_str() {
        "all" => "flushed every cached result\n".to_string(),
        t => format!("flushed the cached results that read {t}\n"),
    })
}

/// One event as a line: time (UTC), kind, shard, message.
fn event_line(e: &crate::ha::events::Event) -> String {
    let time = e.at.get(11..23).unwrap_or(&e.at);
    format!(
        "{time}  {:<7} {:<10} {}\n",
        e.kind,
        e.shard.as_deref().unwrap_or("-"),
        e.message
    )
}

async fn events_after(client: &Client, after: u64) -> anyhow::Result<super::ha::EventList> {
    let r = client
        .call("GET", &format!("/api/v1/events?after={after}"), None)
        .await?;
    serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", client.addr(), r.text()))
}

/// `shardgate failover --shard S [--to SERVER] [--force]`: runs it, printing each step as it
/// happens (from the event list), then the outcome.
pub async fn failover(
    target: &Target,
    shard: &str,
    to: Option<&str>,
    force: bool,
    json: bool,
) -> anyhow::Result<String> {
    let req = super::ha::FailoverRequest {
        shard: shard.to_string(),
        to: to.map(str::to_string),
        force,
    };
    let body = serde_json::to_vec(&req)?;
    watch_operation(target, "/api/v1/failover", body, json).await
}

/// `shardgate reshard plan`.
pub async fn reshard_plan(
    target: &Target,
    req: &super::reshard::PlanRequest,
    json: bool,
) -> anyhow::Result<String> {
    let body = serde_json::to_vec(req)?;
    let r = target
        .client()
        .call("POST", "/api/v1/reshard/plan", Some(&body))
        .await?;
    if json {
        return Ok(r.text());
    }
    let plan: crate::reshard::plan::Plan = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, r.text()))?;
    Ok(plan.render())
}

/// `shardgate rejoin SERVER`.
pub async fn rejoin(target: &Target, server: &str, json: bool) -> anyhow::Result<String> {
    let body = serde_json::to_vec(&super::ha::RejoinRequest {
        server: server.to_string(),
    })?;
    watch_operation(target, "/api/v1/rejoin", body, json).await
}

/// Posts an operation and, unless `json`, prints the events it produces while it runs.
async fn watch_operation(
    target: &Target,
    path: &str,
    body: Vec<u8>,
    json: bool,
) -> anyhow::Result<String> {
    // An operation may wait for a replica to catch up: minutes, not the default seconds.
    let client = target
        .client()
        .with_timeout(std::time::Duration::from_secs(900));
    let mut seen = if json {
        0
    } else {
        events_after(&client, u64::MAX - 1).await?.last_id
    };
    let post = {
        let client = client.clone();
        let path = path.to_string();
        tokio::spawn(async move { client.call("POST", &path, Some(&body)).await })
    };
    tokio::pin!(post);
    let result = loop {
        tokio::select! {
            r = &mut post => break r,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)), if !json => {
                if let Ok(list) = events_after(&client, seen).await {
                    for e in &list.events {
                        print!("{}", event_line(e));
                        seen = e.id;
                    }
                }
            }
        }
    };
    let r = result.map_err(|e| anyhow::anyhow!("the request task failed: {e}"))??;
    if json {
        return Ok(r.text());
    }
    if let Ok(list) = events_after(&client, seen).await {
        for e in &list.events {
            print!("{}", event_line(e));
        }
    }
    let rep: crate::ha::Report = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, r.text()))?;
    Ok(format!(
        "{} of {} done in {} ms: primary {} (was {}), statements held {} ms, shard map version {}\n",
        rep.operation,
        rep.shard,
        rep.took_ms,
        rep.new_primary,
        rep.old_primary,
        rep.held_ms,
        rep.version
    ))
}

/// `shardgate events [--follow]`: failure handling's events, and what runs now.
pub async fn events(
    target: &Target,
    after: u64,
    follow: bool,
    json: bool,
) -> anyhow::Result<String> {
    let client = target.client();
    if json {
        let r = client
            .call("GET", &format!("/api/v1/events?after={after}"), None)
            .await?;
        return Ok(r.text());
    }
    let status = client.call("GET", "/api/v1/ha", None).await?;
    let st: crate::ha::Status = serde_json::from_slice(&status.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, status.text()))?;
    let mut out = format!(
        "automatic failover {}, shard map version {}\n",
        if st.auto_failover { "on" } else { "off" },
        st.shard_map_version
    );
    if let Some(p) = &st.running {
        out.push_str(&format!(
            "running: {} of {} since {}: {}\n",
            p.operation, p.shard, p.started, p.step
        ));
    }
    for f in &st.fenced {
        out.push_str(&format!(
            "fenced: {} (was primary of {}, replaced by {} at {}){}\n",
            f.server,
            f.shard,
            f.replaced_by,
            f.since,
            if f.read_only_set {
                ", read_only set"
            } else {
                ", not reachable yet"
            }
        ));
    }
    let mut seen = after;
    let list = events_after(&client, seen).await?;
    for e in &list.events {
        out.push_str(&event_line(e));
        seen = e.id;
    }
    if !follow {
        return Ok(out);
    }
    print!("{out}");
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let list = events_after(&client, seen).await?;
        for e in &list.events {
            print!("{}", event_line(e));
            seen = e.id;
        }
    }
}

/// `shardgate queries [--sort S] [--limit N]`: the top statement shapes as a table.
pub async fn queries(
    target: &Target,
    sort: &str,
    limit: usize,
    json: bool,
) -> anyhow::Result<String> {
    let r = target
        .client()
        .call(
            "GET",
            &format!("/api/v1/queries?sort={sort}&limit={limit}"),
            None,
        )
        .await?;
    if json {
        return Ok(r.text());
    }
    let list: super::queries::QueryList = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, r.text()))?;
    Ok(queries_table(&list.queries))
}

fn queries_table(rows: &[crate::digests::DigestRow]) -> String {
    let mut out = format!(
        "{:>9} {:>6} {:>9} {:>10} {:>8} {:>8} {:>6} {:>8}  {}\n",
        "count", "errors", "rows", "total ms", "avg ms", "p99 ms", "shards", "cached", "statement"
    );
    for r in rows {
        let text: String = r.text.chars().take(100).collect();
        out.push_str(&format!(
            "{:>9} {:>6} {:>9} {:>10.1} {:>8.3} {:>8.3} {:>6.2} {:>8}  {}\n",
            r.count,
            r.errors,
            r.rows,
            r.total_ms,
            r.avg_ms,
            r.p99_ms,
            r.shards_avg,
            r.cache_hits,
            text
        ));
    }
    out
}

/// `shardgate reload [--force]`: the proxy reads its config file again.
pub async fn reload(target: &Target, force: bool, json: bool) -> anyhow::Result<String> {
    let path = if force {
        "/api/v1/config/reload?force=true"
    } else {
        "/api/v1/config/reload"
    };
    let r = target.client().call("POST", path, None).await?;
    if json {
        return Ok(r.text());
    }
    let rep: crate::topology::ReloadReport = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, r.text()))?;
    let mut out = format!(
        "reloaded: shard map version {}{}\n",
        rep.version,
        if rep.map_changed {
            " (changed)"
        } else {
            " (unchanged)"
        }
    );
    if !rep.added_servers.is_empty() {
        out.push_str(&format!("new servers: {}\n", rep.added_servers.join(", ")));
    }
    if !rep.restart_needed.is_empty() {
        out.push_str(&format!(
            "changed but applied only by a restart: {}\n",
            rep.restart_needed.join(", ")
        ));
    }
    Ok(out)
}

/// `shardgate topology`: the text to print.
pub async fn topology(target: &Target, json: bool) -> anyhow::Result<String> {
    let r = target
        .client()
        .call("GET", "/api/v1/topology", None)
        .await?;
    if json {
        return Ok(r.text());
    }
    let t: TopologyView = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected answer from {}: {}", target.addr, r.text()))?;
    Ok(topology_table(&t))
}

/// One server a line under a header, columns sized to their widest cell.
fn topology_table(t: &TopologyView) -> String {
    let mut rows =
        vec![["SHARD", "ROLE", "SERVER", "UP", "LAG", "RUNNING", "POOL"].map(str::to_string)];
    for ks in &t.keyspaces {
        for shard in &ks.shards {
            for s in &shard.servers {
                let up = match (s.up, s.role) {
                    (false, _) => "down",
                    (true, Role::Replica) if !s.replicating => "up, not replicating",
                    (true, _) => "up",
                };
                let lag = match (s.role, s.lag_seconds) {
                    (Role::Primary, _) => "-".to_string(),
                    (Role::Replica, None) => "unknown".to_string(),
                    (Role::Replica, Some(l)) => format!("{l:.1}s"),
                };
                rows.push([
                    format!("{}/{}", ks.name, shard.name),
                    match s.role {
                        Role::Primary => "primary".to_string(),
                        Role::Replica => "replica".to_string(),
                    },
                    s.addr.clone(),
                    up.to_string(),
                    lag,
                    s.outstanding.to_string(),
                    format!(
                        "{} open, {} idle of {}",
                        s.pool.open, s.pool.idle, s.pool.max
                    ),
                ]);
            }
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("shard map version {}\n", t.version);
    if t.store.kind == "etcd" {
        let names: Vec<&str> = t.store.proxies.iter().map(|p| p.id.as_str()).collect();
        out.push_str(&format!(
            "topology store etcd, {} (this proxy: {}; live proxies: {})\n",
            if t.store.up {
                "reachable"
            } else {
                "UNREACHABLE: serving on the last map, deciding nothing"
            },
            t.store.proxy_id.as_deref().unwrap_or("?"),
            if names.is_empty() {
                "unknown".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Two aligned columns, one counter a line.
fn stats_table(s: &CacheStats) -> String {
    if !s.enabled {
        return "result cache  off (no [[cache.rules]] in the proxy's config)\n".into();
    }
    let lookups = s.hits + s.misses;
    let ratio = if lookups == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", s.hits as f64 * 100.0 / lookups as f64)
    };
    let rows = [
        ("result cache", "on".to_string()),
        ("entries", s.entries.to_string()),
        ("bytes", format!("{} of {} max", s.bytes, s.max_bytes)),
        ("hits", s.hits.to_string()),
        ("misses", s.misses.to_string()),
        ("hit ratio", ratio),
        ("evictions", s.evictions.to_string()),
        ("invalidations", s.invalidations.to_string()),
    ];
    rows.iter().map(|(k, v)| format!("{k:<14}{v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_dialled_on_loopback() {
        assert_eq!(reachable("0.0.0.0:6080"), "127.0.0.1:6080");
        assert_eq!(reachable("[::]:6080"), "[::1]:6080");
        assert_eq!(reachable("10.1.2.3:6080"), "10.1.2.3:6080");
        assert_eq!(reachable("admin.local:6080"), "admin.local:6080");
    }

    #[test]
    fn a_target_needs_an_address() {
        let err = Target::resolve(None, None, Some("t"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--config"), "{err}");
        let t = Target::resolve(None, Some("127.0.0.1:1"), Some("t")).expect("target");
        assert_eq!(t.token.as_deref(), Some("t"));
    }

    #[test]
    fn topology_prints_one_server_a_line() {
        use super::super::topology::{KeyspaceView, ServerView, ShardView};
        let server = |addr: &str, role, lag| ServerView {
            addr: addr.into(),
            role,
            up: true,
            replicating: role == Role::Replica,
            lag_seconds: lag,
            weight: 1,
            outstanding: 2,
            pool: crate::backend::pool::PoolUsage {
                open: 3,
                idle: 1,
                max: 64,
            },
        };
        let t = TopologyView {
            store: Default::default(),
            version: 4,
            keyspaces: vec![KeyspaceView {
                name: "app".into(),
                sharding: crate::shardmap::Sharding::Unsharded,
                shards: vec![ShardView {
                    name: "s0".into(),
                    servers: vec![
                        server("127.0.0.1:1", Role::Primary, None),
                        server("127.0.0.1:2", Role::Replica, Some(1.5)),
                        server("127.0.0.1:3", Role::Replica, None),
                    ],
                }],
            }],
        };
        let text = topology_table(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], "shard map version 4");
        assert!(lines[1].starts_with("SHARD   ROLE     SERVER"), "{text}");
        assert_eq!(
            lines[2],
            "app/s0  primary  127.0.0.1:1  up  -        2        3 open, 1 idle of 64"
        );
        assert!(
            lines[3].contains("replica  127.0.0.1:2  up  1.5s"),
            "{text}"
        );
        assert!(lines[4].contains("unknown"), "{text}");
    }

    #[test]
    fn stats_print_as_a_table() {
        let s = CacheStats {
            enabled: true,
            bytes: 10,
            entries: 1,
            max_bytes: 100,
            hits: 3,
            misses: 1,
            evictions: 0,
            invalidations: 2,
        };
        let t = stats_table(&s);
        assert!(t.contains("entries       1\n"), "{t}");
        assert!(t.contains("hit ratio     75.0%\n"), "{t}");
        let off = stats_table(&CacheStats {
            enabled: false,
            ..s
        });
        assert!(off.contains("off"), "{off}");
    }
}

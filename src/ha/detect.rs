//! The failure detector: pings every primary each `check_interval_ms`; one unreachable for
//! `failover_after_ms` is declared dead only if its replicas lost it too (a proxy-side network
//! blip must not promote anything), then failed over. Also fences former primaries that come
//! back: `read_only`, and never in the shard map until `rejoin`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::{timeout, MissedTickBehavior};

use super::acked::Acked;
use super::ops::groups;
use super::server::Server;
use super::{lock, Ha};

/// What the detector knows of one primary.
#[derive(Default)]
struct Watch {
    conn: Option<Server>,
    down_since: Option<Instant>,
    /// The current outage was reported (once per outage).
    said_down: bool,
    /// "Replicas still see it" was reported for the current outage.
    said_blip: bool,
    /// A failover was refused: the next try waits until then.
    retry_at: Option<Instant>,
}

/// How long after a refused failover the detector tries again (a replica holding everything
/// may come back); each try reconnects to every replica, so not at every check.
const RETRY_REFUSED: Duration = Duration::from_secs(5);

pub async fn run(ha: Arc<Ha>, mut stop: watch::Receiver<()>) {
    let mut watches: HashMap<String, Watch> = HashMap::new();
    let mut fenced_conns: HashMap<String, Server> = HashMap::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(ha.cfg.check_interval_ms));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        let round = async {
            if let Err(e) = ha.resume_intents().await {
                tracing::debug!(error = %e, "looking for unfinished promotions");
            }
            check_primaries(&ha, &mut watches).await;
            fence(&ha, &mut fenced_conns).await;
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = round => {}
        }
    }
}

async fn check_primaries(ha: &Ha, watches: &mut HashMap<String, Watch>) {
    let groups = groups(&ha.topology.map());
    watches.retain(|p, _| groups.iter().any(|g| &g.primary == p));
    for g in groups {
        let w = watches.entry(g.primary.clone()).or_default();
        match probe(ha, &g.primary, &mut w.conn).await {
            Ok(()) => {
                if !Acked::global().has_baseline(&g.primary) {
                    baseline(&g.primary, w.conn.as_mut()).await;
                }
                ha.unblock(&g);
                w.retry_at = None;
                if let Some(since) = w.down_since.take() {
                    if w.said_down {
                        ha.events.add(
                            "blip",
                            Some(&g.name),
                            Some(&g.primary),
                            format!(
                                "primary reachable again after {} ms: no failover",
                                since.elapsed().as_millis()
                            ),
                        );
                    }
                }
                w.said_down = false;
                w.said_blip = false;
            }
            Err(e) => {
                let since = *w.down_since.get_or_insert_with(Instant::now);
                if !w.said_down {
                    w.said_down = true;
                    ha.events.add(
                        "detect",
                        Some(&g.name),
                        Some(&g.primary),
                        format!("primary unreachable from the proxy: {e}"),
                    );
                }
                let after = Duration::from_millis(ha.cfg.failover_after_ms);
                if since.elapsed() < after || !ha.cfg.auto_failover || g.replicas.is_empty() {
                    continue;
                }
                if w.retry_at.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
                if !ha.replicas_lost_primary(&g).await {
                    if !w.said_blip {
                        w.said_blip = true;
                        ha.events.add(
                            "blip",
                            Some(&g.name),
                            Some(&g.primary),
                            format!(
                                "unreachable from the proxy for {} ms, but a replica still \
                                 replicates from it (or none answers): no failover",
                                since.elapsed().as_millis()
                            ),
                        );
                    }
                    continue;
                }
                let reason = format!(
                    "unreachable for {} ms ({e}) and every reachable replica lost it too",
                    since.elapsed().as_millis()
                );
                ha.events
                    .add("detect", Some(&g.name), Some(&g.primary), reason.clone());
                match ha.failover(&g, &reason, false).await {
                    Ok(_) => {
                        watches.remove(&g.primary);
                    }
                    // Logged as an event; try again after another full wait.
                    Err(_) => {
                        w.down_since = Some(Instant::now());
                        w.retry_at = Some(Instant::now() + after.max(RETRY_REFUSED));
                    }
                }
            }
        }
    }
}

/// Reads `primary`'s binlog position, the first time the detector reaches it since the start:
/// what an earlier proxy process may have acknowledged (see `acked`).
async fn baseline(primary: &str, conn: Option<&mut Server>) {
    let Some(c) = conn else { return };
    match c.gtid("gtid_binlog_pos").await {
        Ok(pos) => {
            tracing::info!(%primary, %pos, "acknowledged writes known from here on");
            Acked::global().baseline(primary, &pos);
        }
        Err(e) => tracing::debug!(%primary, error = %e, "reading gtid_binlog_pos failed"),
    }
}

/// COM_PING on a kept connection, reconnecting once when it fails (a server restarted since
/// the last check is not down).
async fn probe(ha: &Ha, addr: &str, conn: &mut Option<Server>) -> Result<(), String> {
    let limit = Duration::from_millis(ha.cfg.check_interval_ms.max(200));
    for _ in 0..2 {
        if conn.is_none() {
            match Server::connect(addr, &ha.creds).await {
                Ok(s) => *conn = Some(s),
                Err(e) => return Err(e.to_string()),
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match timeout(limit, c.ping()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) | Err(_) => *conn = None,
        }
    }
    Err("the connection broke and reconnecting failed".into())
}

/// Sets `read_only` on every fenced former primary that is reachable and writable.
async fn fence(ha: &Ha, conns: &mut HashMap<String, Server>) {
    let fenced = ha.fenced();
    conns.retain(|a, _| fenced.iter().any(|f| &f.server == a));
    for f in fenced {
        if !conns.contains_key(&f.server) {
            match Server::connect(&f.server, &ha.creds).await {
                Ok(s) => {
                    conns.insert(f.server.clone(), s);
                }
                Err(_) => continue,
            }
        }
        let Some(s) = conns.get_mut(&f.server) else {
            continue;
        };
        let r = async {
            if !s.read_only().await? {
                s.set_read_only(true).await?;
                return Ok::<bool, super::HaError>(true);
            }
            Ok(false)
        };
        match r.await {
            Ok(true) => {
                ha.events.add(
                    "fence",
                    Some(&f.shard),
                    Some(&f.server),
                    format!(
                        "former primary {} is back: set read_only; no statements go to it \
                         (primary is {}); `shardgate rejoin {}` makes it a replica",
                        f.server, f.replaced_by, f.server
                    ),
                );
                if let Some(x) = lock(&ha.fenced).get_mut(&f.server) {
                    x.read_only_set = true;
                }
            }
            Ok(false) => {}
            Err(_) => {
                conns.remove(&f.server);
            }
        }
    }
}

//! Wires each shard: replicas replicate from their primary (GTID, semi-sync), then the
//! application user and database are created on the primary and reach the replicas through the
//! binlog. Returns only once every replica runs both threads and has caught up.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::cluster::{Cluster, ServerInfo, KEYSPACE};
use super::error::SandboxError;
use super::sql::{col, quote, Sql};

const REPL_TIMEOUT: Duration = Duration::from_secs(30);
const SEMI_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Sets up every shard concurrently.
pub(crate) async fn setup(cluster: &Cluster) -> Result<(), SandboxError> {
    setup_shards(cluster, &cluster.shard_names()).await
}

/// Sets up the named shards of `cluster` concurrently.
pub(crate) async fn setup_shards(cluster: &Cluster, shards: &[String]) -> Result<(), SandboxError> {
    let mut tasks = JoinSet::new();
    for shard in shards {
        let primary = cluster
            .primary(shard)
            .cloned()
            .ok_or_else(|| SandboxError::Internal(format!("shard {shard} has no primary")))?;
        let replicas: Vec<ServerInfo> = cluster.replicas(shard).into_iter().cloned().collect();
        let (user, password) = (cluster.user.clone(), cluster.password.clone());
        tasks.spawn(async move { setup_shard(&primary, &replicas, &user, &password).await });
    }
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(SandboxError::Internal(format!(
                "replication setup task failed: {e}"
            )))
        });
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn root(s: &ServerInfo) -> Result<Sql, SandboxError> {
    Sql::tcp(s.port, "root", "", &s.label()).await
}

async fn setup_shard(
    primary: &ServerInfo,
    replicas: &[ServerInfo],
    user: &str,
    password: &str,
) -> Result<(), SandboxError> {
    for r in replicas {
        let mut c = root(r).await?;
        c.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
             MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            primary.port
        ))
        .await?;
        c.exec("START SLAVE").await?;
        wait_threads_running(&mut c, r).await?;
        c.close().await;
    }

    let mut p = root(primary).await?;
    // Semi-sync replicas connected first, so the writes below are acknowledged and the primary
    // stays in semi-sync mode.
    if !replicas.is_empty() {
        let deadline = Instant::now() + SEMI_SYNC_WAIT;
        loop {
            let n = p.status("Rpl_semi_sync_master_clients").await?;
            if n.parse::<usize>().unwrap_or(0) >= replicas.len() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(server = %primary.label(), "semi-sync replicas did not connect");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (u, pw) = (quote(user), quote(password));
    p.exec_shown(
        &format!("CREATE USER IF NOT EXISTS {u}@'%' IDENTIFIED BY {pw}"),
        &format!("CREATE USER IF NOT EXISTS {u}@'%' IDENTIFIED BY <password>"),
    )
    .await?;
    p.exec(&format!(
        "GRANT ALL PRIVILEGES ON *.* TO {u}@'%' WITH GRANT OPTION"
    ))
    .await?;
    p.exec(&format!("CREATE DATABASE IF NOT EXISTS `{KEYSPACE}`"))
        .await?;
    let pos = p.value("SELECT @@gtid_binlog_pos").await?;

    for r in replicas {
        let mut c = root(r).await?;
        // Polled rather than MASTER_GTID_WAIT, which here returns about a second late.
        let deadline = Instant::now() + REPL_TIMEOUT;
        loop {
            let at = c.value("SELECT @@gtid_slave_pos").await?;
            if gtid_reached(&at, &pos) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout {
                    what: format!(
                        "{} to reach GTID {pos} of {} (it is at {at})",
                        r.label(),
                        primary.label()
                    ),
                    secs: REPL_TIMEOUT.as_secs(),
                    detail: slave_errors(&mut c).await,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_threads_running(&mut c, r).await?;
        c.close().await;
    }

    if !replicas.is_empty() && p.status("Rpl_semi_sync_master_status").await? != "ON" {
        tracing::warn!(server = %primary.label(), "semi-sync replication is not active");
    }
    p.close().await;
    Ok(())
}

/// Waits until the replica's IO and SQL threads both run (the IO thread retries every second).
async fn wait_threads_running(c: &mut Sql, r: &ServerInfo) -> Result<(), SandboxError> {
    let deadline = Instant::now() + REPL_TIMEOUT;
    loop {
        let rows = c.rows("SHOW SLAVE STATUS").await?;
        let running = rows.first().is_some_and(|row| {
            col(row, "Slave_IO_Running") == "Yes" && col(row, "Slave_SQL_Running") == "Yes"
        });
        if running {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(SandboxError::Timeout {
        what: format!("replication threads to run on {}", r.label()),
        secs: REPL_TIMEOUT.as_secs(),
        detail: slave_errors(c).await,
    })
}

/// The replica's own account of why it is not replicating, for error messages.
async fn slave_errors(c: &mut Sql) -> String {
    match c.rows("SHOW SLAVE STATUS").await {
        Ok(rows) => match rows.first() {
            Some(row) => format!(
                "; Slave_IO_Running={} Slave_SQL_Running={} Last_IO_Error={:?} Last_SQL_Error={:?}",
                col(row, "Slave_IO_Running"),
                col(row, "Slave_SQL_Running"),
                col(row, "Last_IO_Error"),
                col(row, "Last_SQL_Error"),
            ),
            None => "; SHOW SLAVE STATUS is empty (replication not configured)".into(),
        },
        Err(e) => format!("; SHOW SLAVE STATUS failed: {e}"),
    }
}

/// True when GTID position `at` has every domain of `target` at or past its sequence number
/// (positions look like `0-1-42,1-3-7`: domain-server-seq per domain).
pub(crate) fn gtid_reached(at: &str, target: &str) -> bool {
    fn parse(pos: &str) -> Vec<(u64, u64)> {
        pos.split(',')
            .filter_map(|g| {
                let mut parts = g.trim().split('-');
                let domain = parts.next()?.parse().ok()?;
                let seq = parts.nth(1)?.parse().ok()?;
                Some((domain, seq))
            })
            .collect()
    }
    let at = parse(at);
    parse(target)
        .iter()
        .all(|(d, seq)| at.iter().any(|(ad, aseq)| ad == d && aseq >= seq))
}

#[cfg(test)]
mod tests {
    use super::gtid_reached;

    #[test]
    fn gtid_positions_compare_per_domain() {
        assert!(gtid_reached("0-1-5", "0-1-5"));
        assert!(gtid_reached("0-1-6", "0-1-5"));
        assert!(!gtid_reached("0-1-4", "0-1-5"));
        assert!(!gtid_reached("", "0-1-5"));
        assert!(gtid_reached("", ""));
        assert!(gtid_reached("1-2-9,0-1-5", "0-1-5"));
        assert!(!gtid_reached("0-1-5", "0-1-5,1-2-1"));
    }
}

//! The replication commands failure handling runs on one server, over mysql_async with the
//! monitor's account (it needs SUPER or the REPLICATION/READ_ONLY ADMIN privileges).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use tokio::time::timeout;

use super::gtid::GtidPos;
use super::HaError;

/// How to log in to servers for checks and changes.
#[derive(Debug, Clone)]
pub struct Creds {
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    /// Per statement, besides waits that have their own limit.
    pub query_timeout: Duration,
}

/// One server, connected.
pub struct Server {
    pub addr: String,
    conn: Conn,
    query_timeout: Duration,
}

/// What `SHOW SLAVE STATUS` says (nothing when replication is not configured).
#[derive(Debug, Clone, Default)]
pub struct SlaveStatus {
    pub io_running: String,
    pub sql_running: String,
    /// Received from the primary (into the relay log), not necessarily applied.
    pub gtid_io_pos: GtidPos,
    pub master: String,
    pub last_io_error: String,
}

impl SlaveStatus {
    /// Its IO thread is connected to the primary.
    pub fn connected(&self) -> bool {
        self.io_running == "Yes"
    }
}

pub fn split_addr(addr: &str) -> Result<(String, u16), HaError> {
    crate::shardmap::host_port(addr)
        .ok_or_else(|| HaError::Config(format!("'{addr}' is not host:port")))
}

impl Server {
    pub async fn connect(addr: &str, creds: &Creds) -> Result<Server, HaError> {
        let (host, port) = split_addr(addr)?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(creds.user.as_str()))
            .pass(Some(creds.password.as_str()))
            .prefer_socket(false);
        let sql_err = |msg: String| HaError::Sql {
            server: addr.to_string(),
            what: "connect".into(),
            msg,
        };
        match timeout(creds.connect_timeout, Conn::new(opts)).await {
            Ok(Ok(conn)) => Ok(Server {
                addr: addr.to_string(),
                conn,
                query_timeout: creds.query_timeout,
            }),
            Ok(Err(e)) => Err(sql_err(e.to_string())),
            Err(_) => Err(sql_err(format!(
                "no answer within {} ms",
                creds.connect_timeout.as_millis()
            ))),
        }
    }

    fn err(&self, what: &str, msg: impl Into<String>) -> HaError {
        HaError::Sql {
            server: self.addr.clone(),
            what: what.to_string(),
            msg: msg.into(),
        }
    }

    /// COM_PING: answers without counting as a statement (`Com_select` stays put).
    pub async fn ping(&mut self) -> Result<(), HaError> {
        match timeout(self.query_timeout, self.conn.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err("ping", e.to_string())),
            Err(_) => Err(self.err("ping", "no answer in time")),
        }
    }

    /// Runs `sql`, failing after the query timeout.
    pub async fn exec(&mut self, sql: &str) -> Result<(), HaError> {
        self.exec_within(sql, self.query_timeout).await
    }

    async fn exec_within(&mut self, sql: &str, limit: Duration) -> Result<(), HaError> {
        match timeout(limit, self.conn.query_drop(sql)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err(sql, e.to_string())),
            Err(_) => Err(self.err(sql, format!("no answer within {} ms", limit.as_millis()))),
        }
    }

    async fn rows(&mut self, sql: &str) -> Result<Vec<Row>, HaError> {
        match timeout(self.query_timeout, self.conn.query::<Row, _>(sql)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(self.err(sql, e.to_string())),
            Err(_) => Err(self.err(sql, "no answer in time")),
        }
    }

    /// One text value (NULL as empty).
    pub async fn value(&mut self, sql: &str) -> Result<String, HaError> {
        let rows = self.rows(sql).await?;
        Ok(rows
            .first()
            .and_then(|r| r.get_opt::<Option<String>, _>(0))
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_default())
    }

    /// The first two columns of every row, as text (NULL as empty).
    pub async fn pairs(&mut self, sql: &str) -> Result<Vec<(String, String)>, HaError> {
        let rows = self.rows(sql).await?;
        let text = |r: &Row, i: usize| {
            r.get_opt::<Option<String>, _>(i)
                .and_then(Result::ok)
                .flatten()
                .unwrap_or_default()
        };
        Ok(rows.iter().map(|r| (text(r, 0), text(r, 1))).collect())
    }

    pub async fn gtid(&mut self, var: &str) -> Result<GtidPos, HaError> {
        let text = self.value(&format!("SELECT @@GLOBAL.{var}")).await?;
        GtidPos::parse(&text).ok_or_else(|| self.err(var, format!("unreadable GTID '{text}'")))
    }

    pub async fn slave_status(&mut self) -> Result<Option<SlaveStatus>, HaError> {
        let rows = self.rows("SHOW SLAVE STATUS").await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let col = |name: &str| -> String {
            match row.get_opt::<Option<String>, _>(name) {
                Some(Ok(Some(v))) => v,
                _ => String::new(),
            }
        };
        let io_pos = col("Gtid_IO_Pos");
        Ok(Some(SlaveStatus {
            io_running: col("Slave_IO_Running"),
            sql_running: col("Slave_SQL_Running"),
            gtid_io_pos: GtidPos::parse(&io_pos).unwrap_or_default(),
            master: format!("{}:{}", col("Master_Host"), col("Master_Port")),
            last_io_error: col("Last_IO_Error"),
        }))
    }

    pub async fn set_read_only(&mut self, on: bool) -> Result<(), HaError> {
        self.exec(&format!("SET GLOBAL read_only = {}", u8::from(on)))
            .await
    }

    pub async fn read_only(&mut self) -> Result<bool, HaError> {
        Ok(self.value("SELECT @@GLOBAL.read_only").await? == "1")
    }

    /// Ends every client connection but this one and replication's own, so that no
    /// transaction opened before `read_only` can still commit. Returns how many.
    pub async fn kill_clients(&mut self) -> Result<usize, HaError> {
        let me = self.conn.id();
        // SHOW PROCESSLIST (Id, User, Host, db, Command, ...), not information_schema: a query
        // of that builds an on-disk temporary table, and MariaDB 10.11 crashed building those
        // under load (see `reshard::facts`).
        let rows = self.rows("SHOW PROCESSLIST").await?;
        let mut killed = 0;
        for r in rows {
            let id: Option<u64> = r.get_opt(0).and_then(Result::ok);
            let user: String = r
                .get_opt::<Option<String>, _>(1)
                .and_then(Result::ok)
                .flatten()
                .unwrap_or_default();
            let command: String = r
                .get_opt::<Option<String>, _>(4)
                .and_then(Result::ok)
                .flatten()
                .unwrap_or_default();
            let Some(id) = id else { continue };
            let system = user == "system user"
                || user == "event_scheduler"
                || matches!(
                    command.as_str(),
                    "Binlog Dump" | "Daemon" | "Slave_IO" | "Slave_SQL" | "Slave_worker"
                );
            if u64::from(me) == id || system {
                continue;
            }
            // Gone already is fine (1094: unknown thread).
            match self.exec(&format!("KILL CONNECTION {id}")).await {
                Ok(()) => killed += 1,
                Err(HaError::Sql { msg, .. }) if msg.contains("1094") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(killed)
    }

    /// Waits until this replica has applied `pos`, at most `limit`.
    pub async fn wait_applied(&mut self, pos: &GtidPos, limit: Duration) -> Result<(), HaError> {
        let secs = limit.as_secs_f64();
        let sql = format!("SELECT MASTER_GTID_WAIT('{pos}', {secs:.3})");
        let r = match timeout(
            limit + Duration::from_secs(2),
            self.conn.query_first::<i64, _>(sql),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.err("MASTER_GTID_WAIT", e.to_string())),
            Err(_) => return Err(self.err("MASTER_GTID_WAIT", "no answer in time")),
        };
        match r {
            Some(0) => Ok(()),
            _ => {
                let at = self.value("SELECT @@GLOBAL.gtid_slave_pos").await?;
                Err(HaError::NotCaughtUp {
                    server: self.addr.clone(),
                    want: pos.to_string(),
                    at,
                    ms: limit.as_millis() as u64,
                })
            }
        }
    }

    /// Makes this replica a primary: replication stopped and forgotten, writable.
    pub async fn become_primary(&mut self) -> Result<(), HaError> {
        self.exec("STOP SLAVE").await?;
        self.exec("RESET SLAVE ALL").await?;
        self.set_read_only(false).await
    }

    /// Replicates from `primary` with GTID (`slave_pos` for a replica, `current_pos` for a
    /// former primary, whose own binlog holds its newest transactions).
    pub async fn replicate_from(
        &mut self,
        primary: &str,
        user: &str,
        password: &str,
        use_gtid: &str,
    ) -> Result<(), HaError> {
        let (host, port) = split_addr(primary)?;
        let q = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
        self.set_read_only(true).await?;
        self.exec("STOP SLAVE").await?;
        self.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={port}, MASTER_USER='{}', \
             MASTER_PASSWORD='{}', MASTER_USE_GTID={use_gtid}, MASTER_CONNECT_RETRY=1",
            q(&host),
            q(user),
            q(password)
        ))
        .await?;
        self.exec("START SLAVE").await
    }

    pub async fn close(self) {
        let _ = timeout(Duration::from_millis(200), self.conn.disconnect()).await;
    }
}

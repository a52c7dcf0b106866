//! A tiny mysql_async wrapper for the control statements the sandbox runs: every error names the
//! server and the statement, and rows are read by column name without panicking on NULLs.

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use super::error::SandboxError;

/// One connection to one server, labelled for error messages.
pub(crate) struct Sql {
    conn: Conn,
    server: String,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Sql {
    /// Connects over TCP to 127.0.0.1:`port` (never switching to the socket, so TCP is what is tested).
    pub(crate) async fn tcp(
        port: u16,
        user: &str,
        password: &str,
        server: &str,
    ) -> Result<Self, SandboxError> {
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false);
        Self::connect(opts, user, server).await
    }

    /// Connects as root over a unix socket (used while building the template, which has no TCP).
    pub(crate) async fn socket(path: &Path, server: &str) -> Result<Self, SandboxError> {
        let opts = OptsBuilder::default()
            .socket(Some(path.display().to_string()))
            .user(Some("root"))
            .pass(Some(""));
        Self::connect(opts, "root", server).await
    }

    async fn connect(opts: OptsBuilder, user: &str, server: &str) -> Result<Self, SandboxError> {
        let sql = format!("connecting as {user}");
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(Ok(conn)) => Ok(Sql {
                conn,
                server: server.to_string(),
            }),
            Ok(Err(source)) => Err(SandboxError::Sql {
                server: server.to_string(),
                sql,
                source,
            }),
            Err(_) => Err(SandboxError::Timeout {
                what: format!("{server}: {sql}"),
                secs: CONNECT_TIMEOUT.as_secs(),
                detail: String::new(),
            }),
        }
    }

    fn err(&self, sql: &str, source: mysql_async::Error) -> SandboxError {
        SandboxError::Sql {
            server: self.server.clone(),
            sql: sql.to_string(),
            source,
        }
    }

    pub(crate) async fn exec(&mut self, sql: &str) -> Result<(), SandboxError> {
        self.exec_shown(sql, sql).await
    }

    /// Runs `sql` but reports `shown` on error, so passwords stay out of messages.
    pub(crate) async fn exec_shown(&mut self, sql: &str, shown: &str) -> Result<(), SandboxError> {
        match self.conn.query_drop(sql).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.err(shown, e)),
        }
    }

    pub(crate) async fn rows(&mut self, sql: &str) -> Result<Vec<Row>, SandboxError> {
        match self.conn.query::<Row, _>(sql).await {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.err(sql, e)),
        }
    }

    /// First column of the first row as text ("" when there is no row or it is NULL).
    pub(crate) async fn value(&mut self, sql: &str) -> Result<String, SandboxError> {
        let rows = self.rows(sql).await?;
        Ok(rows.first().map(|r| col_at(r, 0)).unwrap_or_default())
    }

    /// The `Value` column of `SHOW GLOBAL STATUS LIKE 'name'`.
    pub(crate) async fn status(&mut self, name: &str) -> Result<String, SandboxError> {
        let rows = self
            .rows(&format!("SHOW GLOBAL STATUS LIKE {}", quote(name)))
            .await?;
        Ok(rows.first().map(|r| col(r, "Value")).unwrap_or_default())
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// A column by name as text; missing, NULL or non-text values read as "".
pub(crate) fn col(row: &Row, name: &str) -> String {
    match row.get_opt::<Option<String>, _>(name) {
        Some(Ok(Some(s))) => s,
        _ => String::new(),
    }
}

fn col_at(row: &Row, idx: usize) -> String {
    match row.get_opt::<Option<String>, _>(idx) {
        Some(Ok(Some(s))) => s,
        _ => String::new(),
    }
}

/// A SQL string literal: single-quoted, with `\` and `'` escaped.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quote_escapes_quotes_and_backslashes() {
        assert_eq!(quote("app"), "'app'");
        assert_eq!(quote("o'k\\"), "'o\\'k\\\\'");
    }
}

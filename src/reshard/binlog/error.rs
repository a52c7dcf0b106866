//! What can stop a binlog stream, worded so an operator knows what to change.

use std::time::Duration;

/// MariaDB's ER_MASTER_FATAL_ERROR_READING_BINLOG: the dump request cannot be served.
const ER_MASTER_FATAL_READING_BINLOG: u16 = 1236;

#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("{server}: cannot connect: {detail}")]
    Connect { server: String, detail: String },
    #[error("{server}: {what}: {source}")]
    Query {
        server: String,
        what: &'static str,
        #[source]
        source: mysql_async::Error,
    },
    #[error("{server}: the binary log is off; start the server with --log-bin")]
    NoBinlog { server: String },
    #[error("{server}: binlog_format is {found}, but catch-up needs row events: set binlog_format=ROW in the server's config (SET GLOBAL does not change sessions already open) and restart the workflow")]
    NotRowFormat { server: String, found: String },
    #[error("{server}: binlog_row_image is {found}, but catch-up needs whole rows before and after each change: set binlog_row_image=FULL in the server's config")]
    NotFullRowImage { server: String, found: String },
    #[error("{server}: the binary log has been purged past the needed position {position}: the catch-up cannot continue from there; copy again from a fresh snapshot (and keep binlogs longer: binlog_expire_logs_seconds). Server said: {message}")]
    Purged {
        server: String,
        position: String,
        message: String,
    },
    #[error("{server}: refused to stream from GTID position {position}: {message}")]
    PositionRefused {
        server: String,
        position: String,
        message: String,
    },
    #[error("{server}: binlog stream lost: {detail}")]
    ConnectionLost { server: String, detail: String },
    #[error("{server}: no event and no heartbeat for {silent_for:?}: the binlog stream is presumed dead")]
    Stalled {
        server: String,
        silent_for: Duration,
    },
    #[error("{server}: unreadable binlog event: {detail}")]
    Malformed { server: String, detail: String },
    #[error("{server}: {what} is not supported by the catch-up stream")]
    Unsupported { server: String, what: String },
    #[error("{server}: table `{schema}`.`{table}`: {detail}")]
    Schema {
        server: String,
        schema: String,
        table: String,
        detail: String,
    },
}

impl BinlogError {
    /// A dump request the server refused to serve from `position` (error 1236): `Purged` when
    /// the binlogs holding it are gone, `PositionRefused` otherwise (a position the server never
    /// had, say). None for any other error.
    pub(super) fn refused(server: &str, position: &str, err: &mysql_async::Error) -> Option<Self> {
        let mysql_async::Error::Server(e) = err else {
            return None;
        };
        if e.code != ER_MASTER_FATAL_READING_BINLOG {
            return None;
        }
        let (server, position, message) =
            (server.to_string(), position.to_string(), e.message.clone());
        Some(if is_purged_message(&e.message) {
            BinlogError::Purged {
                server,
                position,
                message,
            }
        } else {
            BinlogError::PositionRefused {
                server,
                position,
                message,
            }
        })
    }

    /// An error met while reading the stream: a refusal, or else a lost connection.
    pub(super) fn from_stream(server: &str, position: &str, err: mysql_async::Error) -> Self {
        Self::refused(server, position, &err).unwrap_or_else(|| BinlogError::ConnectionLost {
            server: server.to_string(),
            detail: err.to_string(),
        })
    }
}

/// MariaDB words a GTID older than its oldest binlog as "Could not find GTID state requested by
/// slave in any binlog files. Probably the slave state is too old and required binlog files
/// have been purged."
fn is_purged_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("purged") || m.contains("could not find gtid state")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: message.to_string(),
            state: "HY000".to_string(),
        })
    }

    #[test]
    fn error_1236_is_sorted_by_its_message() {
        let purged = server_error(
            1236,
            "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.",
        );
        let e = BinlogError::from_stream("h:1", "0-1-5", purged);
        assert!(matches!(e, BinlogError::Purged { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("purged past the needed position 0-1-5"));

        let ahead = server_error(1236, "Error: connecting slave requested to start from GTID 0-1-99, which is not in the master's binlog");
        let e = BinlogError::from_stream("h:1", "0-1-99", ahead);
        assert!(matches!(e, BinlogError::PositionRefused { .. }), "{e}");

        let other = server_error(1045, "Access denied");
        let e = BinlogError::from_stream("h:1", "0-1-5", other);
        assert!(matches!(e, BinlogError::ConnectionLost { .. }), "{e}");
    }
}

//! The catch-up stream's reader: row changes of one MariaDB primary, from a GTID position on,
//! in commit order, each transaction closed by a `Commit` record carrying its GTID.
//!
//! mysql_async speaks MySQL's GTID dump, which MariaDB refuses; MariaDB's own way is a plain
//! COM_BINLOG_DUMP (empty file name, position 4) after telling the server, in user variables,
//! that this client understands GTIDs and where to start. The server then skips every group up
//! to and including the start position itself.
//!
//! Values are mysql_common's as decoded from the row image, by column index (see
//! [`TableInfo`] for names), adjusted so that each binds as a prepared-statement parameter
//! that writes the same value back; notable forms: DECIMAL as its text (`Bytes("-12.50")`),
//! DATETIME/DATE/TIME as `Date`/`Time`, TIMESTAMP as `Date` in UTC (write it back from a
//! session with `time_zone = '+00:00'`), ENUM as its index, SET as its bitmask (`UInt`), YEAR as
//! its text, integers of UNSIGNED columns as `UInt`, JSON (a text column in MariaDB) as `Bytes`.
//!
//! After any error the reader is spent: drop it and start a new one from [`BinlogReader::position`]
//! (changes of a transaction without its `Commit` must be discarded by the consumer).
//! [`BinlogReader::next`] is cancel-safe: a call dropped while waiting (in `select!`, under a
//! timeout) loses nothing, the next call goes on where it stopped.

mod checksum;
mod columns;
mod error;
mod mariadb;
mod rows;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, QueryEvent, RowsEventData, TableMapEvent};
use mysql_async::binlog::EventType;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, OptsBuilder, Pool};

pub use crate::ha::gtid::{Gtid, GtidPos};
pub use columns::{table_columns, ColumnInfo, TableInfo};
pub use error::BinlogError;
pub use mariadb::TrxGtid;
pub use mysql_async::Value;

use mariadb::{parse_gtid_event, COMPRESSED_EVENTS, FIRST_MARIADB_EVENT, GTID_EVENT};
use rows::RowsError;

/// MARIA_SLAVE_CAPABILITY_GTID: the server sends GTID events and accepts a GTID start state.
const SLAVE_CAPABILITY_GTID: u32 = 4;

/// Where and how to read one primary's binlog.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Must differ from every server's and every other reader's id on this primary: the server
    /// drops an earlier connection that registered the same id.
    pub server_id: u32,
    /// How often an idle server sends a heartbeat event.
    pub heartbeat: Duration,
    /// Silence (no event, no heartbeat) after which the stream counts as dead; also bounds
    /// the connect and the first answer to the dump request.
    pub dead_after: Duration,
    /// Row changes of these schemas only (empty: all). Other tables' row events are skipped
    /// undecoded; commits and statements of every transaction still come through.
    pub schemas: Vec<String>,
}

impl ReaderConfig {
    /// Heartbeat every second, dead after five silent seconds.
    pub fn new(host: &str, port: u16, user: &str, password: &str, server_id: u32) -> Self {
        ReaderConfig {
            host: host.to_string(),
            port,
            user: user.to_string(),
            password: password.to_string(),
            server_id,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            schemas: Vec::new(),
        }
    }

    fn opts(&self) -> OptsBuilder {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            // mysql_async would otherwise switch to the server's socket file when it is local.
            .prefer_socket(false)
    }
}

/// What the stream yields, in binlog (commit) order.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// One row changed by the transaction `gtid`.
    Change(Change),
    /// A statement logged as text inside a transaction (DDL, or DML of a session that was not
    /// logging rows): the stream cannot turn it into row changes.
    Statement {
        gtid: TrxGtid,
        schema: String,
        sql: Vec<u8>,
    },
    /// The transaction `gtid` ends here: everything before it since the previous `Commit`
    /// belongs to it, and [`BinlogReader::position`] now includes it. `timestamp` (Unix
    /// seconds, the source's clock) is when it was written: now minus it is the lag.
    Commit { gtid: TrxGtid, timestamp: u32 },
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub gtid: TrxGtid,
    /// Schema, table and columns; `kind`'s values are at their column's index.
    pub table: Arc<TableInfo>,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    Insert {
        after: Vec<Value>,
    },
    Update {
        before: Vec<Value>,
        after: Vec<Value>,
    },
    Delete {
        before: Vec<Value>,
    },
}

/// The event group being read: its GTID, and whether it is a single statement without
/// BEGIN/COMMIT (DDL), which ends with that statement.
#[derive(Debug, Clone, Copy)]
struct Group {
    gtid: TrxGtid,
    standalone: bool,
}

/// A running binlog stream of one primary.
pub struct BinlogReader {
    server: String,
    stream: BinlogStream,
    /// For table definition lookups: the stream's own connection is busy streaming.
    meta: Pool,
    dead_after: Duration,
    schemas: Vec<String>,
    /// Up to the last `Commit` yielded (the start position before any).
    position: GtidPos,
    /// The start position as errors name it.
    start: String,
    /// The event being handled: kept here across the awaits of `next` so that a cancelled call
    /// does not lose it (the first is read in `start`, to report a refusal there).
    pending: Option<Event>,
    group: Option<Group>,
    ready: VecDeque<Record>,
    /// Tables of the current group's table maps, by table id (filtered-out schemas absent).
    mapped: HashMap<u64, Arc<TableInfo>>,
    /// Table definition lookups, by schema and table.
    tables: HashMap<(String, String), Arc<TableInfo>>,
}

impl BinlogReader {
    /// Connects, checks that the server logs full row images, and starts streaming the
    /// transactions after `from` (MariaDB GTID position, e.g. `@@gtid_binlog_pos` or
    /// `BINLOG_GTID_POS(file, pos)` of a snapshot; empty: from the first transaction the server
    /// ever logged, `Purged` once that binlog is gone).
    pub async fn start(cfg: &ReaderConfig, from: &GtidPos) -> Result<BinlogReader, BinlogError> {
        let server = format!("{}:{}", cfg.host, cfg.port);
        let state = from.to_string();
        let start = if state.is_empty() {
            "'' (the server's first transaction)".to_string()
        } else {
            state.clone()
        };
        let mut conn = match tokio::time::timeout(cfg.dead_after, Conn::new(cfg.opts())).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(BinlogError::Connect {
                    server,
                    detail: e.to_string(),
                })
            }
            Err(_) => {
                return Err(BinlogError::Connect {
                    server,
                    detail: format!("no answer within {:?}", cfg.dead_after),
                })
            }
        };
        check_row_logging(&mut conn, &server).await?;
        // `state` is digits, dashes and commas only (GtidPos's Display), safe to inline.
        let setup = format!(
            "SET @mariadb_slave_capability = {SLAVE_CAPABILITY_GTID}, \
             @slave_connect_state = '{state}', @slave_gtid_strict_mode = 1, \
             @master_heartbeat_period = {}",
            cfg.heartbeat.as_nanos()
        );
        conn.query_drop(setup)
            .await
            .map_err(|source| BinlogError::Query {
                server: server.clone(),
                what: "announcing the GTID start position",
                source,
            })?;
        let request = BinlogStreamRequest::new(cfg.server_id)
            .with_filename(b"")
            .with_pos(4u64);
        let stream = conn.get_binlog_stream(request).await.map_err(|e| {
            BinlogError::refused(&server, &start, &e).unwrap_or(BinlogError::Query {
                server: server.clone(),
                what: "requesting the binlog stream (the user needs REPLICATION SLAVE)",
                source: e,
            })
        })?;
        let mut reader = BinlogReader {
            server,
            stream,
            meta: Pool::new(cfg.opts()),
            dead_after: cfg.dead_after,
            schemas: cfg.schemas.clone(),
            position: from.clone(),
            start,
            pending: None,
            group: None,
            ready: VecDeque::new(),
            mapped: HashMap::new(),
            tables: HashMap::new(),
        };
        // A position the server cannot serve is answered at once with an error instead of the
        // first event: report it here rather than on the first `next`.
        reader.pending = Some(reader.read_event().await?);
        Ok(reader)
    }

    /// The next record; waits for new transactions when the stream is at the end of the binlog.
    pub async fn next(&mut self) -> Result<Record, BinlogError> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                if let Record::Commit { gtid, .. } = &r {
                    self.position.0.insert(
                        gtid.domain,
                        Gtid {
                            server: gtid.server,
                            seq: gtid.seq,
                        },
                    );
                }
                return Ok(r);
            }
            if self.pending.is_none() {
                self.pending = Some(self.read_event().await?);
            }
            self.map_table().await?;
            if let Some(event) = self.pending.take() {
                self.handle(event)?;
            }
        }
    }

    /// Every transaction up to the last `Commit` yielded: where a new reader resumes.
    pub fn position(&self) -> &GtidPos {
        &self.position
    }

    /// `host:port` of the primary, as errors name it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Ends the stream and its lookup connections.
    pub async fn close(self) {
        let _ = self.stream.close().await;
        let _ = self.meta.disconnect().await;
    }

    async fn read_event(&mut self) -> Result<Event, BinlogError> {
        match tokio::time::timeout(self.dead_after, self.stream.next()).await {
            Err(_) => Err(BinlogError::Stalled {
                server: self.server.clone(),
                silent_for: self.dead_after,
            }),
            Ok(None) => Err(BinlogError::ConnectionLost {
                server: self.server.clone(),
                detail: "the server ended the stream".into(),
            }),
            Ok(Some(Err(e))) => Err(BinlogError::from_stream(&self.server, &self.start, e)),
            Ok(Some(Ok(event))) if !checksum::matches(&event) => Err(self.malformed(&format!(
                "event of type {:#04x}: checksum mismatch",
                event.header().event_type_raw()
            ))),
            Ok(Some(Ok(event))) => Ok(event),
        }
    }

    /// Resolves the names of a pending table map's table (the one await of handling an event),
    /// so that its row events can be decoded without waiting.
    async fn map_table(&mut self) -> Result<(), BinlogError> {
        let Some(event) = &self.pending else {
            return Ok(());
        };
        if event.header().event_type_raw() != EventType::TABLE_MAP_EVENT as u8 {
            return Ok(());
        }
        let tme = event
            .read_event::<TableMapEvent<'_>>()
            .map_err(|e| self.malformed(&format!("table map: {e}")))?
            .into_owned();
        if self.skips(&tme.database_name()) {
            return Ok(());
        }
        let info = self.table_info(&tme).await?;
        self.mapped.insert(tme.table_id(), info);
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), BinlogError> {
        let ty = event.header().event_type_raw();
        if ty == GTID_EVENT {
            let g = parse_gtid_event(event.header().server_id(), event.data())
                .ok_or_else(|| self.malformed("GTID event too short"))?;
            if g.prepared_xa {
                return Err(self.unsupported(format!("XA transaction {}", g.gtid)));
            }
            if let Some(open) = self.group {
                tracing::warn!(server = %self.server, "binlog group {} ended without COMMIT or XID before {}", open.gtid, g.gtid);
            }
            self.group = Some(Group {
                gtid: g.gtid,
                standalone: g.standalone,
            });
            // Table ids are only meaningful within the group that maps them.
            self.mapped.clear();
            return Ok(());
        }
        if COMPRESSED_EVENTS.contains(&ty) {
            return Err(self.unsupported("compressed binlog events (log_bin_compress=ON)".into()));
        }
        if ty >= FIRST_MARIADB_EVENT {
            // Annotate-rows, GTID list, binlog checkpoint, start-encryption: nothing to apply.
            return Ok(());
        }
        let data = event
            .read_data()
            .map_err(|e| self.malformed(&e.to_string()))?;
        match data {
            Some(EventData::XidEvent(_)) => self.end_group(event.header().timestamp()),
            Some(EventData::QueryEvent(q)) => self.query(&q, event.header().timestamp())?,
            Some(EventData::RowsEvent(rows)) => self.rows(&rows)?,
            Some(EventData::XaPrepareLogEvent(_)) => {
                return Err(self.unsupported("XA PREPARE".into()))
            }
            // The server lost changes it could not log (a replica stops here too).
            Some(EventData::IncidentEvent(_)) => {
                return Err(self.malformed("incident event: the server logged a gap in its changes"))
            }
            // Format description, rotate, table maps (kept by the stream), heartbeats, ...
            _ => {}
        }
        Ok(())
    }

    fn end_group(&mut self, timestamp: u32) {
        if let Some(g) = self.group.take() {
            self.ready.push_back(Record::Commit {
                gtid: g.gtid,
                timestamp,
            });
        }
    }

    fn query(&mut self, q: &QueryEvent<'_>, timestamp: u32) -> Result<(), BinlogError> {
        let sql = q.query_raw();
        let word = sql.trim_ascii();
        if word.eq_ignore_ascii_case(b"BEGIN") {
            return Ok(());
        }
        // ROLLBACK ends a group whose non-transactional changes stayed (and were logged).
        if word.eq_ignore_ascii_case(b"COMMIT") || word.eq_ignore_ascii_case(b"ROLLBACK") {
            self.end_group(timestamp);
            return Ok(());
        }
        let Some(g) = self.group else {
            return Err(self.malformed("statement outside a GTID event group"));
        };
        self.ready.push_back(Record::Statement {
            gtid: g.gtid,
            schema: q.schema().into_owned(),
            sql: sql.to_vec(),
        });
        if g.standalone {
            self.end_group(timestamp);
        }
        Ok(())
    }

    fn rows(&mut self, rows: &RowsEventData<'_>) -> Result<(), BinlogError> {
        let Some(g) = self.group else {
            return Err(self.malformed("row event outside a GTID event group"));
        };
        let Some(tme) = self.stream.get_tme(rows.table_id()) else {
            return Err(self.malformed("row event for a table id without a table map"));
        };
        let Some(table) = self.mapped.get(&rows.table_id()) else {
            if self.skips(&tme.database_name()) {
                return Ok(());
            }
            return Err(self.malformed("row event for a table mapped outside its group"));
        };
        let changes = rows::changes(rows, tme, table, g.gtid).map_err(|e| match e {
            RowsError::PartialImage => BinlogError::NotFullRowImage {
                server: self.server.clone(),
                found: "an image without every column".into(),
            },
            RowsError::Malformed(m) => self.malformed(&m),
            RowsError::Unsupported(what) => self.unsupported(what),
        })?;
        self.ready.extend(changes.into_iter().map(Record::Change));
        Ok(())
    }

    /// Names and signedness of the table a table map describes: from the table map when it has
    /// them, else from `SHOW CREATE TABLE`, looked up once per table and again whenever its
    /// column types change.
    async fn table_info(&mut self, tme: &TableMapEvent<'_>) -> Result<Arc<TableInfo>, BinlogError> {
        let schema = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let types = (0..tme.columns_count() as usize)
            .map(|i| match tme.get_column_type(i) {
                Ok(Some(t)) => Ok(t),
                _ => Err(self.malformed("table map with an unknown column type")),
            })
            .collect::<Result<Vec<ColumnType>, _>>()?;
        if let Some(info) = columns::from_table_map(tme, &types)
            .map_err(|e| self.malformed(&format!("table map metadata: {e}")))?
        {
            return Ok(Arc::new(info));
        }
        let key = (schema, table);
        if let Some(t) = self.tables.get(&key) {
            if t.columns
                .iter()
                .map(|c| c.column_type)
                .eq(types.iter().copied())
            {
                return Ok(t.clone());
            }
        }
        let (schema, table) = &key;
        let lookup = async {
            let mut conn = self.meta.get_conn().await?;
            table_columns(&mut conn, schema, table).await
        };
        let named = lookup.await.map_err(|source| BinlogError::Query {
            server: self.server.clone(),
            what: "reading the table's columns (SHOW CREATE TABLE)",
            source,
        })?;
        let info = Arc::new(columns::table_info(
            &self.server,
            schema,
            table,
            named,
            types,
        )?);
        self.tables.insert(key, info.clone());
        Ok(info)
    }

    /// Whether `schema`'s row changes are filtered out.
    fn skips(&self, schema: &str) -> bool {
        !self.schemas.is_empty() && !self.schemas.iter().any(|s| s == schema)
    }

    fn malformed(&self, detail: &str) -> BinlogError {
        BinlogError::Malformed {
            server: self.server.clone(),
            detail: detail.to_string(),
        }
    }

    fn unsupported(&self, what: String) -> BinlogError {
        BinlogError::Unsupported {
            server: self.server.clone(),
            what,
        }
    }
}

/// Refuses a server whose binlog would not give whole rows: log off, a format other than ROW,
/// or a row image other than FULL (global values: what new sessions write).
async fn check_row_logging(conn: &mut Conn, server: &str) -> Result<(), BinlogError> {
    let row: Option<(i64, String, String)> = conn
        .query_first("SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.binlog_row_image")
        .await
        .map_err(|source| BinlogError::Query {
            server: server.to_string(),
            what: "reading binlog settings",
            source,
        })?;
    let Some((log_bin, format, image)) = row else {
        return Err(BinlogError::NoBinlog {
            server: server.to_string(),
        });
    };
    if log_bin == 0 {
        return Err(BinlogError::NoBinlog {
            server: server.to_string(),
        });
    }
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(BinlogError::NotRowFormat {
            server: server.to_string(),
            found: format,
        });
    }
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(BinlogError::NotFullRowImage {
            server: server.to_string(),
            found: image,
        });
    }
    Ok(())
}

/// The server's current binlog GTID position (`@@gtid_binlog_pos`): start a reader here to see
/// only what is committed after this call. None if the server's text does not parse.
pub async fn gtid_binlog_pos(conn: &mut Conn) -> Result<Option<GtidPos>, mysql_async::Error> {
    let text: Option<String> = conn.query_first("SELECT @@GLOBAL.gtid_binlog_pos").await?;
    Ok(text.and_then(|t| GtidPos::parse(&t)))
}

//! Protocol constants: capability flags, status flags, command bytes, error codes.

pub mod cap {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const ODBC: u32 = 1 << 6;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;

    /// What the proxy offers clients. No SSL or compression (not supported yet). LONG_PASSWORD
    /// makes MariaDB clients see a "MySQL" server that exchanges no extended capabilities; the
    /// greeting leaves it out when it offers some (`ext_cap::PASS_THROUGH`).
    pub const SERVER_OFFER: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA
        | SESSION_TRACK
        | DEPRECATE_EOF;

    /// Flags that change what the backend sends or how: a backend connection must carry the
    /// client's value of each, so its packets can be forwarded untouched.
    pub const FRAMING: u32 = FOUND_ROWS
        | LONG_FLAG
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | INTERACTIVE
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | SESSION_TRACK
        | DEPRECATE_EOF;
}

pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
    /// The OK packet carries session-state information (CLIENT_SESSION_TRACK only).
    pub const SESSION_STATE_CHANGED: u16 = 0x4000;
}

pub mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const REFRESH: u8 = 0x07;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0a;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const DEBUG: u8 = 0x0d;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
    /// MariaDB's COM_STMT_BULK_EXECUTE (with `ext_cap::STMT_BULK_OPERATIONS`).
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;
}

/// MariaDB's extended capabilities: 4 more bytes in the handshake filler, exchanged when the
/// server leaves out `cap::LONG_PASSWORD` (MariaDB's "not MySQL" mark).
pub mod ext_cap {
    pub const PROGRESS: u32 = 1;
    pub const COM_MULTI: u32 = 1 << 1;
    pub const STMT_BULK_OPERATIONS: u32 = 1 << 2;
    /// Column definitions carry the extended type (`json`, `uuid`, `inet6`, ...).
    pub const EXTENDED_METADATA: u32 = 1 << 3;
    /// Binary results without column definitions: would change result framing; not offered.
    pub const CACHE_METADATA: u32 = 1 << 4;
    /// What the proxy may pass through to clients (when its servers offer it). Both change
    /// what a server sends, so a server connection carries the client's (`ConnKey::ext`).
    pub const PASS_THROUGH: u32 = STMT_BULK_OPERATIONS | EXTENDED_METADATA;
}

/// MySQL error codes the proxy itself sends, with their SQLSTATE.
pub mod errcode {
    pub const CON_COUNT: (u16, &str) = (1040, "08004");
    pub const OUT_OF_RESOURCES: (u16, &str) = (1041, "HY000");
    pub const HANDSHAKE: (u16, &str) = (1043, "08S01");
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    pub const BAD_DB: (u16, &str) = (1049, "42000");
    pub const UNKNOWN_COM: (u16, &str) = (1047, "08S01");
    pub const UNKNOWN: (u16, &str) = (1105, "HY000");
    pub const NET_PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
    pub const NET_READ_INTERRUPTED: (u16, &str) = (1159, "08S01");
    /// ER_LOCK_DEADLOCK: drivers and frameworks retry the transaction on SQLSTATE 40001.
    pub const LOCK_DEADLOCK: (u16, &str) = (1213, "40001");
    pub const USER_LIMIT_REACHED: (u16, &str) = (1226, "42000");
    pub const NOT_SUPPORTED: (u16, &str) = (1235, "42000");
    pub const UNKNOWN_STMT_HANDLER: (u16, &str) = (1243, "HY000");
    /// "This command is not supported in the prepared statement protocol yet".
    pub const UNSUPPORTED_PS: (u16, &str) = (1295, "HY000");
    pub const MALFORMED_PACKET: (u16, &str) = (1835, "HY000");
}

/// Largest payload of one physical packet; a payload this long continues in the next packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

//! mysql_async through the proxy: text and binary protocol, every column type, prepared
//! statements, errors, multiple result sets, many clients, and a client killed mid-result.

mod common;

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Row, Value};

async fn proxy(db: &str) -> Conn {
    Conn::new(Opts::from_url(&common::env().proxy_url(db)).expect("url"))
        .await
        .expect("connect through proxy")
}

async fn direct(db: &str) -> Conn {
    Conn::new(Opts::from_url(&common::env().direct_url(db)).expect("url"))
        .await
        .expect("connect directly")
}

fn values(rows: Vec<Row>) -> Vec<Vec<Value>> {
    rows.into_iter().map(Row::unwrap).collect()
}

#[tokio::test]
async fn default_options_stay_on_the_proxy_instead_of_switching_to_the_socket() {
    // mysql_async reads @@socket after a TCP login to 127.0.0.1 and would reconnect through the
    // server's socket file; the proxy answers NULL so the client stays on it.
    let mut c = proxy("app").await;
    let socket: Option<Option<String>> = c.query_first("SELECT @@socket").await.expect("q");
    assert_eq!(socket, Some(None));
    let host: Option<String> = c
        .query_first("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        .await
        .expect("processlist");
    let host = host.expect("row");
    assert!(
        host.starts_with("127.0.0.1:"),
        "server sees the client as {host}"
    );
    let mut d = direct("app").await;
    let direct_socket: Option<Option<String>> = d.query_first("SELECT @@socket").await.expect("q");
    assert!(
        matches!(direct_socket, Some(Some(_))),
        "the server does have a socket"
    );
}

#[tokio::test]
async fn crud_with_ok_packet_fields() {
    let mut c = proxy("app").await;
    let t = common::unique("crud");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20), n TINYINT)"
    ))
    .await
    .expect("create");
    c.query_drop(format!(
        "INSERT INTO {t} (name, n) VALUES ('a', 1), ('b', 2), ('c', 3)"
    ))
    .await
    .expect("insert");
    assert_eq!(c.affected_rows(), 3);
    assert_eq!(c.last_insert_id(), Some(1));
    c.query_drop(format!("UPDATE {t} SET n = n + 10 WHERE id >= 2"))
        .await
        .expect("update");
    assert_eq!(c.affected_rows(), 2);
    c.query_drop(format!("INSERT INTO {t} (name, n) VALUES ('d', 300)"))
        .await
        .expect_err("out of range in strict mode");
    c.query_drop("SET SESSION sql_mode = ''")
        .await
        .expect("set");
    c.query_drop(format!("INSERT INTO {t} (name, n) VALUES ('d', 300)"))
        .await
        .expect("clipped insert");
    assert_eq!(c.get_warnings(), 1, "warning count of the OK packet");
    assert_eq!(c.last_insert_id(), Some(4));
    c.query_drop(format!("DELETE FROM {t} WHERE name = 'a'"))
        .await
        .expect("delete");
    assert_eq!(c.affected_rows(), 1);
    let rows: Vec<(i32, String, i32)> = c
        .query(format!("SELECT id, name, n FROM {t} ORDER BY id"))
        .await
        .expect("select");
    assert_eq!(
        rows,
        vec![
            (2, "b".into(), 12),
            (3, "c".into(), 13),
            (4, "d".into(), 127)
        ]
    );
    let in_trans: i64 = {
        c.query_drop("START TRANSACTION").await.expect("begin");
        let v = c.query_first("SELECT @@in_transaction").await.expect("q");
        c.query_drop("ROLLBACK").await.expect("rollback");
        v.unwrap_or(0)
    };
    assert_eq!(in_trans, 1);
}

const TYPES_TABLE: &str = "(
    id INT PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
    bi BIGINT, biu BIGINT UNSIGNED, de DECIMAL(65,30), f FLOAT, d DOUBLE,
    dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), y YEAR,
    ch CHAR(10) CHARACTER SET utf8mb4, vc VARCHAR(100) CHARACTER SET utf8mb4,
    bn BINARY(4), vb VARBINARY(10), bl LONGBLOB, tx TEXT CHARACTER SET utf8mb4,
    en ENUM('red','green','blue'), st SET('a','b','c'), bt BIT(64), js JSON
)";

const TYPES_ROW: &str = "(1,
    -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
    -9223372036854775808, 18446744073709551615,
    '-12345678901234567890123456789012345.123456789012345678901234567891',
    3.5, -2.2250738585072014e-308,
    '1000-01-01', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.499999',
    '-838:59:59.000000', 2155,
    'héllo', 'emoji 🐬 and ünïcode', X'00FF10AB', X'000102', X'DEADBEEF00', 'text 🚀',
    'green', 'a,c', b'1010000000000000000000000000000000000000000000000000000000000001',
    '{\"k\": [1, 2.5, \"x\", null, true]}')";

#[tokio::test]
async fn every_column_type_round_trips_in_text_and_binary_protocol() {
    let t = common::unique("types");
    let mut p = proxy("app").await;
    p.query_drop(format!("CREATE TABLE {t} {TYPES_TABLE}"))
        .await
        .expect("create");
    p.query_drop(format!("INSERT INTO {t} VALUES {TYPES_ROW}"))
        .await
        .expect("insert extremes");
    p.query_drop(format!("INSERT INTO {t} (id) VALUES (2)"))
        .await
        .expect("insert nulls");
    let mut d = direct("app").await;
    let sql = format!("SELECT * FROM {t} ORDER BY id");

    let text_p: Vec<Row> = p.query(&sql).await.expect("text via proxy");
    let text_d: Vec<Row> = d.query(&sql).await.expect("text direct");
    let bin_p: Vec<Row> = p.exec(&sql, ()).await.expect("binary via proxy");
    let bin_d: Vec<Row> = d.exec(&sql, ()).await.expect("binary direct");

    // Column metadata passes through untouched (type, flags, charset, length, decimals).
    let meta = |rows: &[Row]| -> Vec<String> {
        rows[0]
            .columns_ref()
            .iter()
            .map(|c| {
                format!(
                    "{}:{:?}:{:?}:{}:{}:{}",
                    c.name_str(),
                    c.column_type(),
                    c.flags(),
                    c.character_set(),
                    c.column_length(),
                    c.decimals()
                )
            })
            .collect()
    };
    assert_eq!(meta(&text_p), meta(&text_d));
    assert_eq!(meta(&bin_p), meta(&bin_d));

    let (text_p, text_d, bin_p, bin_d) =
        (values(text_p), values(text_d), values(bin_p), values(bin_d));
    assert_eq!(text_p, text_d);
    assert_eq!(bin_p, bin_d);
    assert_eq!(text_p.len(), 2);
    // The NULL row is NULL in every column but the key.
    assert!(
        bin_p[1][1..].iter().all(|v| *v == Value::NULL),
        "{:?}",
        bin_p[1]
    );
    // Spot checks of the binary values.
    let row = &bin_p[0];
    assert_eq!(row[10], Value::UInt(u64::MAX));
    assert_eq!(row[9], Value::Int(i64::MIN));
    assert_eq!(row[17], Value::Time(true, 34, 22, 59, 59, 0));
    assert_eq!(row[15], Value::Date(9999, 12, 31, 23, 59, 59, 999_999));
    assert_eq!(row[18], Value::Int(2155));
    assert_eq!(
        row[20],
        Value::Bytes("emoji 🐬 and ünïcode".as_bytes().to_vec())
    );
    assert_eq!(row[21], Value::Bytes(vec![0x00, 0xFF, 0x10, 0xAB]));
    assert_eq!(row[25], Value::Bytes(b"green".to_vec()));
    assert_eq!(row[26], Value::Bytes(b"a,c".to_vec()));
    assert_eq!(
        row[11],
        Value::Bytes(
            b"-12345678901234567890123456789012345.123456789012345678901234567891".to_vec()
        )
    );
    assert_eq!(
        row[27],
        Value::Bytes(0xA000_0000_0000_0001u64.to_be_bytes().to_vec())
    );
}

#[tokio::test]
async fn prepared_statements_bind_every_parameter_type() {
    let t = common::unique("params");
    let mut p = proxy("app").await;
    p.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, i BIGINT, u BIGINT UNSIGNED, f FLOAT, d DOUBLE,
         s VARCHAR(50) CHARACTER SET utf8mb4, b BLOB, dt DATETIME(6), dd DATE, tm TIME(6), n INT)"
    ))
    .await
    .expect("create");
    let ins = format!("INSERT INTO {t} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    let params: Vec<Value> = vec![
        Value::Int(1),
        Value::Int(i64::MIN),
        Value::UInt(u64::MAX),
        Value::Float(1.5),
        Value::Double(-1e300),
        Value::Bytes("ünï 🐬".as_bytes().to_vec()),
        Value::Bytes(vec![0, 1, 2, 255]),
        Value::Date(2024, 2, 29, 13, 14, 15, 123_456),
        Value::Date(1999, 12, 31, 0, 0, 0, 0),
        Value::Time(true, 1, 2, 3, 4, 5),
        Value::NULL,
    ];
    p.exec_drop(&ins, params.clone()).await.expect("insert");
    let stmt = p
        .prep(format!("SELECT * FROM {t} WHERE id = ? AND s = ?"))
        .await
        .expect("prepare");
    assert_eq!(stmt.num_params(), 2);
    assert_eq!(stmt.num_columns(), 11);
    let rows: Vec<Row> = p.exec(&stmt, (1, "ünï 🐬")).await.expect("execute");
    let got = values(rows).remove(0);
    assert_eq!(got[1], Value::Int(i64::MIN));
    assert_eq!(got[2], Value::UInt(u64::MAX));
    assert_eq!(got[3], Value::Float(1.5));
    assert_eq!(got[4], Value::Double(-1e300));
    assert_eq!(got[5..10], params[5..10]);
    assert_eq!(got[10], Value::NULL);
    // The same statement again (re-executed on the proxy's id), then closed.
    let again: Vec<Row> = p.exec(&stmt, (1, "no")).await.expect("execute 2");
    assert!(again.is_empty());
    p.close(stmt).await.expect("close");
    // A statement prepared with an error gets the server's error.
    let e = p
        .prep("SELECT * FROM no_such_table_xyz")
        .await
        .expect_err("prepare error");
    assert!(e.to_string().contains("1146"), "{e}");
}

#[tokio::test]
async fn twenty_mib_blob_round_trips_both_protocols() {
    let t = common::unique("blob");
    let mut p = proxy("app").await;
    p.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)"))
        .await
        .expect("create");
    let blob: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    p.exec_drop(format!("INSERT INTO {t} VALUES (1, ?)"), (blob.clone(),))
        .await
        .expect("insert binary protocol (long data or big packet)");
    let hex: String = blob[..1024].iter().map(|b| format!("{b:02X}")).collect();
    p.query_drop(format!(
        "INSERT INTO {t} VALUES (2, CONCAT(REPEAT(X'{hex}', 20480)))"
    ))
    .await
    .expect("insert text protocol");
    let back: Option<Vec<u8>> = p
        .exec_first(format!("SELECT b FROM {t} WHERE id = ?"), (1,))
        .await
        .expect("select binary");
    assert_eq!(back.as_deref(), Some(&blob[..]));
    let back: Option<Vec<u8>> = p
        .query_first(format!("SELECT b FROM {t} WHERE id = 2"))
        .await
        .expect("select text");
    let back = back.expect("row");
    assert_eq!(back.len(), 20 * 1024 * 1024);
    assert_eq!(&back[..1024], &blob[..1024]);
}

#[tokio::test]
async fn syntax_error_is_1064_and_the_connection_stays_usable() {
    let mut p = proxy("app").await;
    let e = p.query_drop("SELEC 1").await.expect_err("syntax error");
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.code, 1064);
            assert_eq!(s.state, "42000");
        }
        other => panic!("expected a server error, got {other}"),
    }
    let one: Option<i32> = p.query_first("SELECT 1").await.expect("still usable");
    assert_eq!(one, Some(1));
    let e = p
        .exec_drop("SELECT * FROM missing_tbl_q", ())
        .await
        .expect_err("1146");
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1146 && s.state == "42S02"),
        "{e}"
    );
    let two: Option<i32> = p.exec_first("SELECT 2", ()).await.expect("still usable");
    assert_eq!(two, Some(2));
}

#[tokio::test]
async fn stored_procedure_returns_two_result_sets() {
    let name = common::unique("proc");
    let mut p = proxy("app").await;
    p.query_drop(format!(
        "CREATE PROCEDURE {name}() BEGIN SELECT 1 AS a, 'x' AS b; SELECT 2 AS c UNION SELECT 3; END"
    ))
    .await
    .expect("create procedure");
    let mut result = p.query_iter(format!("CALL {name}()")).await.expect("call");
    let first: Vec<(i32, String)> = result.collect().await.expect("first set");
    let second: Vec<i32> = result.collect().await.expect("second set");
    drop(result);
    assert_eq!(first, vec![(1, "x".to_string())]);
    assert_eq!(second, vec![2, 3]);
    // Through the binary protocol too.
    let mut result = p
        .exec_iter(format!("CALL {name}()"), ())
        .await
        .expect("exec call");
    let first: Vec<(i32, String)> = result.collect().await.expect("first set");
    let second: Vec<i32> = result.collect().await.expect("second set");
    drop(result);
    assert_eq!((first.len(), second.len()), (1, 2));
    // Multi-statements in one COM_QUERY.
    let mut result = p
        .query_iter("SELECT 1; SELECT 'two'; DO 3")
        .await
        .expect("multi");
    let a: Vec<i32> = result.collect().await.expect("set 1");
    let b: Vec<String> = result.collect().await.expect("set 2");
    drop(result);
    assert_eq!((a, b), (vec![1], vec!["two".to_string()]));
    let ok: Option<i32> = p.query_first("SELECT 4").await.expect("usable");
    assert_eq!(ok, Some(4));
}

#[tokio::test]
async fn session_commands_ping_reset_and_init_db() {
    let mut p = proxy("app").await;
    p.ping().await.expect("ping");
    let db = common::unique("db");
    p.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .expect("create db");
    p.query_drop(format!("USE {db}")).await.expect("use");
    let cur: Option<String> = p.query_first("SELECT DATABASE()").await.expect("q");
    assert_eq!(cur.as_deref(), Some(db.as_str()));
    p.query_drop("SET @v = 42").await.expect("set var");
    p.reset().await.expect("COM_RESET_CONNECTION");
    let v: Option<Option<i64>> = p.query_first("SELECT @v").await.expect("q");
    assert_eq!(v, Some(None), "user variable cleared by reset");
    p.query_drop(format!("DROP DATABASE {db}"))
        .await
        .expect("drop db");
    let e = Conn::new(Opts::from_url(&common::env().proxy_url(&db)).expect("url"))
        .await
        .expect_err("unknown database");
    assert!(e.to_string().contains("1049"), "{e}");
}

#[tokio::test]
async fn five_hundred_concurrent_clients() {
    let t = common::unique("many");
    let mut setup = proxy("app").await;
    setup
        .query_drop(format!(
            "CREATE TABLE {t} (client INT, q INT, PRIMARY KEY (client, q))"
        ))
        .await
        .expect("create");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(500));
    let tasks: Vec<_> = (0..500)
        .map(|client| {
            let barrier = barrier.clone();
            let t = t.clone();
            tokio::spawn(async move {
                let mut c = proxy("app").await;
                barrier.wait().await; // all 500 are connected at once
                for q in 0..5 {
                    let v: Option<i64> = c
                        .exec_first("SELECT ? * 2", (client * 10 + q,))
                        .await
                        .expect("select");
                    assert_eq!(v, Some((client * 10 + q) * 2));
                    c.query_drop(format!("INSERT INTO {t} VALUES ({client}, {q})"))
                        .await
                        .expect("insert");
                }
                c.disconnect().await.expect("disconnect");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    let n: Option<i64> = setup
        .query_first(format!("/* shardgate:primary */ SELECT COUNT(*) FROM {t}"))
        .await
        .expect("count");
    assert_eq!(n, Some(2500));
}

#[tokio::test]
async fn a_client_killed_mid_result_leaves_the_proxy_healthy() {
    let env = common::env();
    let marker = common::unique("killed");
    let mut child = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-u", common::USER])
        .arg(format!("-p{}", common::PASSWORD))
        .arg(format!("-P{}", env.proxy_port))
        .args(["--batch", "--quick", "app", "-e"])
        .arg(format!(
            "SELECT '{marker}', seq, REPEAT('x', 1000) FROM seq_1_to_10000000"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mariadb");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 1 << 20];
    let n = std::io::Read::read(&mut out, &mut buf).expect("some rows arrive");
    assert!(n > 0);
    child.kill().expect("kill -9 the client");
    let _ = child.wait();
    drop(out);
    // The proxy drops its backend connection, which makes the server stop the query.
    let mut d = direct("app").await;
    let mut running = 1;
    for _ in 0..100 {
        running = d
            .query_first::<i64, _>(format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' AND INFO NOT LIKE '%PROCESSLIST%'"
            ))
            .await
            .expect("processlist")
            .unwrap_or(0);
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 0, "the abandoned query was not stopped");
    let mut p = proxy("app").await;
    let one: Option<i32> = p.query_first("SELECT 1").await.expect("proxy healthy");
    assert_eq!(one, Some(1));
    assert!(env.proxy_alive());
}

#[tokio::test]
async fn kill_connection_by_the_id_the_handshake_announced() {
    let mut victim = proxy("app").await;
    let mut killer = proxy("app").await;
    victim
        .query_drop("DO 1")
        .await
        .expect("victim has a server connection");
    let id = victim.id();
    assert!(
        id >= shardgate::session::FIRST_ID,
        "proxy ids are distinct from server ids: {id}"
    );
    killer
        .query_drop(format!("KILL CONNECTION {id}"))
        .await
        .expect("kill");
    let e = victim
        .query_drop("SELECT 1")
        .await
        .expect_err("victim is gone");
    assert!(
        matches!(
            e,
            mysql_async::Error::Io(_)
                | mysql_async::Error::Server(_)
                | mysql_async::Error::Driver(_)
        ),
        "{e}"
    );
    let unknown = id + 1_000_000;
    let e = killer
        .query_drop(format!("KILL {unknown}"))
        .await
        .expect_err("unknown proxy id");
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1094),
        "{e}"
    );
    let one: Option<i32> = killer.query_first("SELECT 1").await.expect("killer fine");
    assert_eq!(one, Some(1));
}

#[tokio::test]
async fn change_user_starts_a_fresh_session_and_checks_the_password() {
    use mysql_async::ChangeUserOpts;
    let mut c = proxy("app").await;
    c.query_drop("SET @v = 5").await.expect("set");
    c.query_drop("USE mysql").await.expect("use");
    c.change_user(
        ChangeUserOpts::default()
            .with_user(Some(common::USER.into()))
            .with_pass(Some(common::PASSWORD.into()))
            .with_db_name(Some("app".into())),
    )
    .await
    .expect("COM_CHANGE_USER");
    let (v, db): (Option<i64>, Option<String>) = c
        .query_first("SELECT @v, DATABASE()")
        .await
        .expect("q")
        .expect("row");
    assert_eq!((v, db.as_deref()), (None, Some("app")));

    let e = c
        .change_user(
            ChangeUserOpts::default()
                .with_user(Some(common::USER.into()))
                .with_pass(Some("wrong".into())),
        )
        .await
        .expect_err("wrong password");
    assert!(e.to_string().contains("1045"), "{e}");
}

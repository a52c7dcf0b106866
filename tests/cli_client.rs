//! Debian's `mariadb` command-line client through the proxy: CRUD, every column type, errors,
//! multiple result sets, USE, the interactive start-up (auto-rehash sends COM_FIELD_LIST) and
//! 20 MiB values. Where it makes sense, the same SQL also runs against the primary directly and
//! the two outputs must be byte-identical, besides containing the expected values.

mod common;

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Any single CLI run here finishes in a few seconds; past this it is hung.
const DEADLINE: Duration = Duration::from_secs(60);
const BIG_LEN: usize = 20 * 1024 * 1024;

/// Which server a CLI run talks to.
#[derive(Clone, Copy, Debug)]
enum Target {
    Proxy,
    Direct,
}

impl Target {
    fn port(self) -> u16 {
        let env = common::env();
        match self {
            Target::Proxy => env.proxy_port,
            Target::Direct => env.primary_port(),
        }
    }
}

/// What one CLI run printed.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout, after asserting the run succeeded without complaint.
    fn ok(self, what: &str) -> String {
        assert!(
            self.status.success() && self.stderr.is_empty(),
            "{what}: {self:#?}"
        );
        self.stdout
    }
}

/// The `mariadb` arguments shared by every batch run: no option files, utf8mb4, room for
/// 20 MiB statements, tab-separated unescaped output.
fn cli_args(target: Target, db: Option<&str>) -> Vec<String> {
    let fixed = [
        "--no-defaults",
        "--default-character-set=utf8mb4",
        "--max-allowed-packet=64M",
        "-h",
        "127.0.0.1",
        "-u",
        common::USER,
    ];
    let mut args: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    args.push(format!("-p{}", common::PASSWORD));
    args.push(format!("-P{}", target.port()));
    args.extend(db.map(str::to_string));
    args
}

/// Runs `cmd` with `stdin`, failing the test (with what it printed so far) past `DEADLINE`.
fn run(cmd: Command, stdin: Vec<u8>) -> Run {
    run_typed(cmd, vec![(Duration::ZERO, stdin)])
}

/// Like `run`, writing each chunk of `input` to stdin after its delay, as a person types.
fn run_typed(mut cmd: Command, input: Vec<(Duration, Vec<u8>)>) -> Run {
    let (out, timed_out) = common::run_child(&mut cmd, input, DEADLINE);
    let r = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!timed_out, "{cmd:?} hung for {DEADLINE:?}: {r:#?}");
    r
}

/// `mariadb --batch --raw [extra] -e SQL` in database `app`.
fn exec(target: Target, extra: &[&str], sql: &str) -> Run {
    exec_in(target, Some("app"), extra, sql)
}

/// `mariadb --batch --raw [extra] -e SQL` in database `db` (none if `None`).
fn exec_in(target: Target, db: Option<&str>, extra: &[&str], sql: &str) -> Run {
    let mut cmd = Command::new("mariadb");
    cmd.args(cli_args(target, db))
        .args(["--batch", "--raw"])
        .args(extra)
        .args(["-e", sql]);
    run(cmd, Vec::new())
}

/// `mariadb --batch --raw [extra]` in database `app`, reading `sql` from stdin.
fn exec_stdin(target: Target, extra: &[&str], sql: impl Into<Vec<u8>>) -> Run {
    let mut cmd = Command::new("mariadb");
    cmd.args(cli_args(target, Some("app")))
        .args(["--batch", "--raw"])
        .args(extra);
    run(cmd, sql.into())
}

/// Runs `sql` through the proxy and asserts it succeeded; returns the output.
fn proxy(sql: &str) -> String {
    exec(Target::Proxy, &[], sql).ok(sql)
}

/// Runs `sql` through the proxy and directly with the same options and asserts both succeed
/// with byte-identical output; returns it.
fn same_on_both(extra: &[&str], sql: &str) -> String {
    common::wait_env_replicated();
    let via_proxy = exec(Target::Proxy, extra, sql).ok(sql);
    let direct = exec(Target::Direct, extra, sql).ok(sql);
    assert!(
        via_proxy == direct,
        "output of {sql:?} differs:\n--- proxy\n{via_proxy}\n--- direct\n{direct}"
    );
    via_proxy
}

/// Tab-separated rows as `--batch --raw` prints them, header first.
fn tsv(rows: &[&[&str]]) -> String {
    rows.iter().map(|r| r.join("\t") + "\n").collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn crud_statements_report_rows_and_results() {
    let t = common::unique("cli_crud");
    proxy(&format!(
        "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20), qty INT)"
    ));
    // -vv makes the CLI print each OK packet: affected rows, the info string, warnings.
    let writes = exec(
        Target::Proxy,
        &["-vv"],
        &format!(
            "INSERT INTO {t} (name, qty) VALUES ('apple', 3), ('pear', 5), ('plum', 7);
             UPDATE {t} SET qty = qty * 10 WHERE name <> 'pear';
             DELETE FROM {t} WHERE name = 'pear';
             SELECT LAST_INSERT_ID()"
        ),
    )
    .ok("writes");
    for expected in [
        "Query OK, 3 rows affected\nRecords: 3  Duplicates: 0  Warnings: 0\n",
        "Query OK, 2 rows affected\nRows matched: 2  Changed: 2  Warnings: 0\n",
        "Query OK, 1 row affected\n",
        "LAST_INSERT_ID()\n1\n",
    ] {
        assert!(writes.contains(expected), "{expected:?} not in:\n{writes}");
    }
    let rows = same_on_both(&[], &format!("SELECT id, name, qty FROM {t} ORDER BY id"));
    assert_eq!(
        rows,
        tsv(&[
            &["id", "name", "qty"],
            &["1", "apple", "30"],
            &["3", "plum", "70"]
        ])
    );
    proxy(&format!("DROP TABLE {t}"));
    let gone = exec(Target::Proxy, &[], &format!("SELECT * FROM {t}"));
    assert!(gone.stderr.contains("ERROR 1146 (42S02)"), "{gone:#?}");
}

/// ROW_COUNT() after each kind of write, the CLI's "N rows affected" lines, and
/// `@@warning_count` after SHOW WARNINGS: the same through the proxy (default consistency,
/// read_your_writes: it learns each write's GTID) as directly. The table is written on both
/// runs (proxy first, then directly), so it is created again each time.
#[test]
fn row_count_and_warning_count_are_what_the_server_says() {
    let t = common::unique("cli_rc");
    let sql = format!(
        "DROP TABLE IF EXISTS {t};
         CREATE TABLE {t} (id INT PRIMARY KEY, v INT);
         INSERT INTO {t} VALUES (1, 1), (2, 2), (3, 3);
         SELECT ROW_COUNT() AS after_insert;
         UPDATE {t} SET v = v + 1 WHERE id < 3;
         SELECT ROW_COUNT() AS after_update;
         BEGIN;
         DELETE FROM {t} WHERE id = 1;
         SELECT ROW_COUNT() AS after_delete_in_txn;
         COMMIT;
         DELETE FROM {t} WHERE id = 2;
         SELECT ROW_COUNT() AS after_delete;
         UPDATE {t} SET v = 0 WHERE id = 99;
         SELECT ROW_COUNT() AS after_no_match;
         SELECT CAST('1x' AS INT) AS truncated;
         SHOW WARNINGS;
         SELECT @@warning_count AS warnings;
         DROP TABLE {t}"
    );
    let out = same_on_both(&["-vv"], &sql);
    for expected in [
        "Query OK, 3 rows affected",
        "after_insert\n3\n",
        "Rows matched: 2  Changed: 2  Warnings: 0",
        "after_update\n2\n",
        "after_delete_in_txn\n1\n",
        "after_delete\n1\n",
        "Rows matched: 0  Changed: 0  Warnings: 0",
        "after_no_match\n0\n",
        "warnings\n1\n",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
}

/// A client that sets its own tracked variables sees its own list, not the proxy's (which
/// adds `last_gtid` on every server connection), on whichever connection serves it; later
/// sessions on the same server connections get the proxy's list back.
#[test]
fn a_clients_own_session_tracking_list_is_kept() {
    let out = same_on_both(
        &[],
        "SET SESSION session_track_system_variables = 'autocommit,time_zone';
         SELECT @@SESSION.session_track_system_variables AS tracked;
         SELECT @@SESSION.session_track_system_variables AS again FROM DUAL WHERE 1 = 1",
    );
    assert_eq!(
        out,
        tsv(&[
            &["tracked"],
            &["autocommit,time_zone"],
            &["again"],
            &["autocommit,time_zone"]
        ])
    );
    // The next session on those pooled connections: the proxy's list again (it reads each
    // write's GTID from it), not the server's default that undoing the client's SET gives.
    for _ in 0..3 {
        let next = proxy("SELECT @@SESSION.session_track_system_variables AS d");
        assert!(next.contains("last_gtid"), "{next}");
    }
}

/// Every column type: a row of minimums, a row of maximums, a row of NULLs.
const TYPES_DDL: &str = "(
    id INT PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
    dec65 DECIMAL(65,30), f FLOAT, d DOUBLE,
    dt DATE, dtm DATETIME(6), ts TIMESTAMP NULL, tm TIME(6), y YEAR,
    c CHAR(10), vc VARCHAR(100), bin BINARY(4), vbin VARBINARY(16), bl BLOB,
    e ENUM('a','b','c'), st SET('x','y','z'), bt BIT(64), j JSON
) DEFAULT CHARSET=utf8mb4";

const TYPES_ROWS: &str = "
 (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615,
  '-99999999999999999999999999999999999.999999999999999999999999999999',
  -3.40282e38, -1.7976931348623157e308,
  '1000-01-01', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01', '-838:59:59.000000', 1901,
  'a', '😀 ünïcödé 漢字', 0x00000000, 0x00, 0x00ff, 'a', '', b'0',
  '{\"a\": [1, 2, null], \"e\": \"😀\"}'),
 (2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
  '99999999999999999999999999999999999.999999999999999999999999999999',
  3.40282e38, 1.7976931348623157e308,
  '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', '838:59:59.000000', 2155,
  'zzzzzzzzzz', '', 0xdeadbeef, 0x0102030405060708090a0b0c0d0e0f10, '', 'c', 'x,y,z',
  b'1111111111111111111111111111111111111111111111111111111111111111', '[]'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

const TYPES_SELECT: &str = "id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, dec65, f, d, \
    dt, dtm, ts, tm, y, c, vc, HEX(bin), HEX(vbin), HEX(bl), e, st, BIN(bt), bt + 0, j";

/// What `SELECT {TYPES_SELECT}` prints for `TYPES_ROWS` (in UTC).
#[rustfmt::skip]
fn types_expected() -> String {
    let dec = "99999999999999999999999999999999999.999999999999999999999999999999";
    let minus_dec = format!("-{dec}");
    let ones = "1".repeat(64);
    let mut nulls = vec!["3"];
    nulls.resize(29, "NULL");
    tsv(&[
        &TYPES_SELECT.split(", ").collect::<Vec<_>>(),
        &[
            "1", "-128", "255", "-32768", "65535", "-8388608", "16777215", "-2147483648",
            "4294967295", "-9223372036854775808", "18446744073709551615", &minus_dec,
            "-3.40282e38", "-1.7976931348623157e308", "1000-01-01", "1000-01-01 00:00:00.000000",
            "1970-01-01 00:00:01", "-838:59:59.000000", "1901", "a", "😀 ünïcödé 漢字",
            "00000000", "00", "00FF", "a", "", "0", "0", r#"{"a": [1, 2, null], "e": "😀"}"#,
        ],
        &[
            "2", "127", "0", "32767", "0", "8388607", "0", "2147483647", "0",
            "9223372036854775807", "0", dec, "3.40282e38", "1.7976931348623157e308",
            "9999-12-31", "9999-12-31 23:59:59.999999", "2038-01-19 03:14:07",
            "838:59:59.000000", "2155", "zzzzzzzzzz", "", "DEADBEEF",
            "0102030405060708090A0B0C0D0E0F10", "", "c", "x,y,z", &ones,
            "18446744073709551615", "[]",
        ],
        &nulls,
    ])
}

#[test]
fn every_column_type_round_trips_with_nulls() {
    let t = common::unique("cli_types");
    proxy(&format!(
        "SET time_zone = '+00:00'; CREATE TABLE {t} {TYPES_DDL}; \
         INSERT INTO {t} VALUES {TYPES_ROWS}"
    ));
    let sql = format!("SET time_zone = '+00:00'; SELECT {TYPES_SELECT} FROM {t} ORDER BY id");
    let out = same_on_both(&[], &sql);
    assert_eq!(out, types_expected());
    // The raw column values too (binary bytes and all), not only their renderings.
    same_on_both(
        &[],
        &format!("SET time_zone = '+00:00'; SELECT * FROM {t} ORDER BY id"),
    );
    proxy(&format!("DROP TABLE {t}"));
}

#[test]
fn syntax_error_is_reported_and_the_session_goes_on() {
    let r = exec(Target::Proxy, &[], "SELEC 1");
    assert!(!r.status.success(), "{r:#?}");
    assert!(
        r.stderr
            .contains("ERROR 1064 (42000) at line 1: You have an error in your SQL syntax")
            && r.stderr.contains("near 'SELEC 1'"),
        "{r:#?}"
    );
    // --force keeps reading the script after the error, in the same session and connection.
    let r = exec_stdin(
        Target::Proxy,
        &["--force"],
        "SET @before = CONNECTION_ID();\n\
         SELEC 1;\n\
         SELECT 'after' AS a, @before = CONNECTION_ID() AS same;\n",
    );
    assert!(r.stderr.contains("ERROR 1064 (42000) at line 2"), "{r:#?}");
    assert_eq!(r.stdout, tsv(&[&["a", "same"], &["after", "1"]]), "{r:#?}");
}

#[test]
fn server_errors_pass_through_with_code_and_state() {
    let t = common::unique("cli_dup");
    proxy(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY); INSERT INTO {t} VALUES (1)"
    ));
    let cases = [
        (
            format!("INSERT INTO {t} VALUES (1)"),
            "ERROR 1062 (23000) at line 1: Duplicate entry '1' for key 'PRIMARY'\n",
        ),
        (
            "SELECT * FROM no_such_table".to_string(),
            "ERROR 1146 (42S02) at line 1: Table 'app.no_such_table' doesn't exist\n",
        ),
        (
            "SELECT no_such_column FROM DUAL".to_string(),
            "ERROR 1054 (42S22) at line 1: Unknown column 'no_such_column' in 'SELECT'\n",
        ),
    ];
    for (sql, expected) in cases {
        let via_proxy = exec(Target::Proxy, &[], &sql);
        let direct = exec(Target::Direct, &[], &sql);
        assert!(!via_proxy.status.success(), "{via_proxy:#?}");
        assert!(
            via_proxy.stderr.ends_with(expected),
            "{sql}: {via_proxy:#?}"
        );
        assert_eq!(via_proxy.stderr, direct.stderr, "{sql}: proxy vs direct");
    }
    assert_eq!(
        proxy(&format!("SELECT COUNT(*) FROM {t}")),
        tsv(&[&["COUNT(*)"], &["1"]])
    );
    proxy(&format!("DROP TABLE {t}"));
}

#[test]
fn stored_procedure_returns_two_result_sets() {
    let p = common::unique("cli_proc");
    let create = format!(
        "DELIMITER //\nCREATE PROCEDURE {p}(IN n INT)\nBEGIN\n  SELECT n AS a;\n  \
         SELECT 'two' AS b, n + 1 AS c;\nEND//\nDELIMITER ;\n"
    );
    exec_stdin(Target::Proxy, &[], create).ok("create procedure");
    let out = same_on_both(&[], &format!("CALL {p}(41); SELECT 'after' AS d"));
    assert_eq!(
        out,
        tsv(&[
            &["a"],
            &["41"],
            &["b", "c"],
            &["two", "42"],
            &["d"],
            &["after"]
        ])
    );
    proxy(&format!("DROP PROCEDURE {p}"));
}

#[test]
fn multi_statement_text_runs_every_statement() {
    let out = same_on_both(&[], "SELECT 1; SELECT 2; SET @x = 3; SELECT @x + 1 AS y;");
    assert_eq!(out, tsv(&[&["1"], &["1"], &["2"], &["2"], &["y"], &["4"]]));
}

#[test]
fn use_switches_database() {
    let db = common::unique("cli_db");
    proxy(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.marker (v VARCHAR(10)); \
         INSERT INTO {db}.marker VALUES ('there')"
    ));
    // The next statements come from another client and may read a replica.
    common::wait_env_replicated();
    let out = proxy(&format!(
        "SELECT DATABASE(); USE {db}; SELECT DATABASE(); SELECT v FROM marker"
    ));
    assert_eq!(
        out,
        tsv(&[
            &["DATABASE()"],
            &["app"],
            &["DATABASE()"],
            &[&db],
            &["v"],
            &["there"]
        ])
    );
    // `USE` of a missing database is refused and leaves the current one selected.
    let r = exec_stdin(
        Target::Proxy,
        &["--force"],
        format!("USE {db}_missing;\nSELECT DATABASE();\n"),
    );
    assert!(
        r.stderr.contains("ERROR 1049 (42000)") && r.stdout == tsv(&[&["DATABASE()"], &["app"]]),
        "{r:#?}"
    );
    proxy(&format!("DROP DATABASE {db}"));
}

/// Runs `sql` logged in to `db` through the proxy and directly; asserts that both print and
/// fail alike, and returns the proxy's run.
fn alike_on_both(db: Option<&str>, sql: &str) -> Run {
    common::wait_env_replicated();
    let via_proxy = exec_in(Target::Proxy, db, &[], sql);
    let direct = exec_in(Target::Direct, db, &[], sql);
    assert_eq!(
        (&via_proxy.stdout, &via_proxy.stderr, via_proxy.status),
        (&direct.stdout, &direct.stderr, direct.status),
        "db {db:?}, {sql:?}: proxy (left) vs direct (right)"
    );
    via_proxy
}

/// A login without a database has none selected, whatever database the proxy's pooled server
/// connections last had: DATABASE() is NULL and unqualified table names fail with 1046.
#[test]
fn login_without_database_has_none_selected() {
    let db = common::unique("cli_nodb");
    // Leave pooled server connections behind with a database selected.
    proxy(&format!("CREATE DATABASE {db}; USE {db}; SELECT 1"));
    proxy("SELECT 1");
    // The proxy gives connections back to its pool in the background.
    std::thread::sleep(Duration::from_millis(200));
    let r = alike_on_both(None, "SELECT DATABASE(); SELECT * FROM no_db_selected_here");
    assert_eq!(r.stdout, tsv(&[&["DATABASE()"], &["NULL"]]));
    assert!(r.stderr.contains("ERROR 1046 (3D000)"), "{r:#?}");
    proxy(&format!("DROP DATABASE {db}"));
}

/// A login naming a missing database is refused at login, as the server does.
#[test]
fn login_to_missing_database_is_refused() {
    let db = common::unique("cli_missing");
    let r = alike_on_both(Some(&db), "SELECT 'logged in'");
    assert!(!r.status.success() && r.stdout.is_empty(), "{r:#?}");
    assert_eq!(
        r.stderr,
        format!("ERROR 1049 (42000): Unknown database '{db}'\n")
    );
}

/// Runs the CLI on a pseudo-terminal (`script` provides one), so it behaves as for a person
/// typing `input`; returns the run with the terminal's output as stdout.
fn interactive(db: &str, extra: &[&str], input: Vec<(Duration, &[u8])>) -> Run {
    let cli = std::iter::once("mariadb".to_string())
        .chain(cli_args(Target::Proxy, Some(db)))
        .chain(extra.iter().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &cli, "/dev/null"]);
    let input = input.into_iter().map(|(d, s)| (d, s.to_vec())).collect();
    let mut r = run_typed(cmd, input);
    r.stdout = r.stdout.replace("\r\n", "\n");
    r
}

fn assert_session_shows(r: &Run, expected: &[&str]) {
    for e in expected {
        assert!(
            r.stdout.contains(e),
            "{e:?} not in the session:\n{}\n{r:#?}",
            r.stdout
        );
    }
}

/// Without -A or --batch and on a terminal, the CLI reads table and column names for
/// completion (SHOW TABLES, then COM_FIELD_LIST per table) before the first prompt.
#[test]
fn interactive_start_with_auto_rehash_does_not_hang() {
    let db = common::unique("cli_rehash");
    proxy(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.alpha (id INT, name VARCHAR(10)); \
         CREATE TABLE {db}.beta (k BIGINT PRIMARY KEY, v JSON, w BLOB)"
    ));
    let typed: &[u8] = b"SELECT 42 AS answer;\nquit\n";
    let r = interactive(&db, &[], vec![(Duration::ZERO, typed)]);
    assert_session_shows(
        &r,
        &[
            "Reading table information for completion of table and column names",
            &format!("MariaDB [{db}]>"),
            "| answer |",
            "|     42 |",
            "Bye",
        ],
    );
    assert!(r.status.success(), "{r:#?}");
    proxy(&format!("DROP DATABASE {db}"));
}

/// Ctrl-C during a query makes the CLI open a second connection and send
/// `KILL QUERY <the connection id from the handshake>`: the query must stop, the session go on.
#[test]
fn ctrl_c_interrupts_the_running_query() {
    let started = Instant::now();
    let r = interactive(
        "app",
        &["-A"],
        vec![
            (Duration::ZERO, b"SELECT SLEEP(20);\n"),
            (Duration::from_millis(1500), b"\x03"),
            (Duration::from_millis(1000), b"SELECT 7 AS seven;\nquit\n"),
        ],
    );
    let took = started.elapsed();
    assert_session_shows(
        &r,
        &[
            "Ctrl-C -- query killed",
            "ERROR 1317 (70100): Query execution was interrupted",
            "|     7 |",
            "Bye",
        ],
    );
    assert!(
        took < Duration::from_secs(15),
        "the query ran on for {took:?}"
    );
}

/// `len` pseudo-random lowercase letters: no period that could hide misplaced packet chunks.
fn letters(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b'a' + ((x >> 33) % 26) as u8
        })
        .collect()
}

#[test]
fn twenty_mib_values_both_ways() {
    let t = common::unique("cli_big");
    proxy(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)"
    ));
    // Built by the server.
    proxy(&format!(
        "INSERT INTO {t} VALUES (1, REPEAT('x', {BIG_LEN}))"
    ));
    // Sent by the client: one 20 MiB statement, split into several protocol packets.
    let value = letters(BIG_LEN);
    let mut insert = format!("INSERT INTO {t} VALUES (2, '").into_bytes();
    insert.extend_from_slice(&value);
    insert.extend_from_slice(b"');\n");
    exec_stdin(Target::Proxy, &[], insert).ok("20 MiB INSERT");

    let sums = same_on_both(
        &[],
        &format!("SELECT id, LENGTH(b), MD5(b), SHA2(b, 256) FROM {t} ORDER BY id"),
    );
    let lines: Vec<&str> = sums.lines().collect();
    assert_eq!(lines.len(), 3, "{sums}");
    let sha_x = hex(&Sha256::digest(vec![b'x'; BIG_LEN]));
    let sha_value = hex(&Sha256::digest(&value));
    assert!(lines[1].starts_with(&format!("1\t{BIG_LEN}\t")) && lines[1].ends_with(&sha_x));
    assert!(lines[2].starts_with(&format!("2\t{BIG_LEN}\t")) && lines[2].ends_with(&sha_value));

    // And read back whole through the proxy: 20 MiB result rows.
    let back = proxy(&format!("SELECT b FROM {t} WHERE id = 2"));
    let expected = format!("b\n{}\n", String::from_utf8(value).expect("ascii"));
    assert!(
        back == expected,
        "20 MiB value read back differs (len {} vs {})",
        back.len(),
        expected.len()
    );
    proxy(&format!("DROP TABLE {t}"));
}

#[test]
fn load_data_local_infile_uploads_through_the_proxy() {
    let t = common::unique("infile");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rows.tsv");
    let rows: String = (1..=5000).map(|i| format!("{i}\tname {i} ✓\n")).collect();
    std::fs::write(&file, &rows).expect("write rows");
    proxy(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(40)) CHARACTER SET utf8mb4"
    ));
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {t} CHARACTER SET utf8mb4; \
         SELECT COUNT(*), SUM(id), MAX(name) FROM {t}",
        file.display()
    );
    let out = exec(Target::Proxy, &["--local-infile=1"], &sql).ok("load data");
    assert_eq!(
        out,
        tsv(&[
            &["COUNT(*)", "SUM(id)", "MAX(name)"],
            &["5000", "12502500", "name 999 ✓"]
        ])
    );
    // A file the client cannot read: the client answers with an empty upload and the
    // server's error comes through; the session goes on.
    let missing = dir.path().join("missing.tsv");
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {t}",
        missing.display()
    );
    let input = format!("{sql};\nSELECT 'after';\n");
    let r = exec_stdin(
        Target::Proxy,
        &["--local-infile=1", "--force"],
        input.clone(),
    );
    let direct = exec_stdin(Target::Direct, &["--local-infile=1", "--force"], input);
    assert_eq!(r.stdout, "after\nafter\n", "{r:#?}");
    assert_eq!((r.stdout, r.stderr), (direct.stdout, direct.stderr));
}

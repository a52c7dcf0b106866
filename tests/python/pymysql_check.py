#!/usr/bin/env python3
"""Drives PyMySQL through the shardgate proxy and checks that it behaves as it does directly.

Every check talks to the proxy (--port) and, where a comparison makes sense, to the primary
directly (--direct-port): values fetched through the proxy must equal both the values fetched
directly and the expected Python literals. Each check raises on failure; the script prints one
line per check and a summary, and exits non-zero if any check failed.

    python3 tests/python/pymysql_check.py --host 127.0.0.1 --port P --user app --password app \
        --db app --direct-port D [--check NAME ...] [--list]
"""

import argparse
import datetime
import decimal
import hashlib
import os
import sys
import threading
import time
import traceback

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT, COMMAND

ARGS = None
CHECKS = {}
_counter = 0

D = decimal.Decimal
BIG_BLOB_LEN = 20 * 1024 * 1024
STREAM_ROWS = 100_000


def check(fn):
    """Registers a check under its function name."""
    CHECKS[fn.__name__] = fn
    return fn


def connect(port=None, **kw):
    """A utf8mb4 autocommit connection in UTC to the proxy (or to `port`)."""
    opts = dict(
        host=ARGS.host,
        port=port or ARGS.port,
        user=ARGS.user,
        password=ARGS.password,
        database=ARGS.db,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
        max_allowed_packet=64 * 1024 * 1024,
        autocommit=True,
        read_timeout=60,
        write_timeout=60,
    )
    opts.update(kw)
    return pymysql.connect(**opts)


def direct(**kw):
    return connect(port=ARGS.direct_port, **kw)


def unique(prefix):
    """A table name no other run or check uses."""
    global _counter
    _counter += 1
    return f"{prefix}_{os.getpid()}_{_counter}"


def expect_eq(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def query(conn, sql, args=None):
    """All rows of one statement, as a tuple of tuples (whatever the connection's cursor class)."""
    with conn.cursor(pymysql.cursors.Cursor) as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def expect_error(exc_type, code, fn):
    """Runs fn, which must raise exc_type with MySQL error `code`."""
    try:
        fn()
    except exc_type as e:
        expect_eq(f"{exc_type.__name__} code", e.args[0], code)
        return e
    raise AssertionError(f"expected {exc_type.__name__} {code}, nothing was raised")


# ---------------------------------------------------------------------------------------------
# Column types: one row of minimums, one of maximums, one of NULLs.

TYPES_DDL = """
CREATE TABLE {t} (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  dec65 DECIMAL(65,30), f FLOAT, d DOUBLE,
  dt DATE, dtm DATETIME(6), ts TIMESTAMP NULL, tm TIME(6), y YEAR,
  c CHAR(10), vc VARCHAR(100),
  bin BINARY(4), vbin VARBINARY(16), bl BLOB,
  e ENUM('a','b','c'), st SET('x','y','z'), bt BIT(64), j JSON
) DEFAULT CHARSET=utf8mb4
"""

TYPES_COLUMNS = [
    "id", "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "dec65", "f", "d",
    "dt", "dtm", "ts", "tm", "y", "c", "vc", "bin", "vbin", "bl", "e", "st", "bt", "j",
]

DEC65_MAX = D("99999999999999999999999999999999999.999999999999999999999999999999")
DEC65_MIN = D("-99999999999999999999999999999999999.999999999999999999999999999999")

TYPES_ROWS = [
    (
        1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
        -9223372036854775808, 18446744073709551615,
        DEC65_MIN, -3.40282e38, -1.7976931348623157e308,
        datetime.date(1000, 1, 1), datetime.datetime(1000, 1, 1, 0, 0, 0, 0),
        datetime.datetime(1970, 1, 1, 0, 0, 1),
        -datetime.timedelta(hours=838, minutes=59, seconds=59), 1901,
        "a", "😀 ünïcödé 漢字", b"\x00\x00\x00\x00", b"\x00", b"\x00\xff",
        "a", "", b"\x00" * 8, '{"a": [1, 2, null], "e": "😀"}',
    ),
    (
        2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0,
        9223372036854775807, 0,
        DEC65_MAX, 3.40282e38, 1.7976931348623157e308,
        datetime.date(9999, 12, 31), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.datetime(2038, 1, 19, 3, 14, 7),
        datetime.timedelta(hours=838, minutes=59, seconds=59), 2155,
        "zzzzzzzzzz", "", b"\xde\xad\xbe\xef", bytes(range(1, 17)), b"",
        "c", "x,y,z", b"\xff" * 8, "[]",
    ),
    (3,) + (None,) * (len(TYPES_COLUMNS) - 1),
]


def insert_param(col, value):
    """PyMySQL formats a negative timedelta wrongly (it writes '-840:40:01' for -838:59:59),
    so TIME goes as its string; everything else goes as the Python value."""
    if col == "tm" and isinstance(value, datetime.timedelta):
        sign = "-" if value < datetime.timedelta(0) else ""
        secs = int(abs(value).total_seconds())
        return f"{sign}{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}.000000"
    return value


def create_types_table(conn):
    t = unique("py_types")
    with conn.cursor() as cur:
        cur.execute(TYPES_DDL.format(t=t))
        placeholders = ", ".join(["%s"] * len(TYPES_COLUMNS))
        rows = [
            tuple(insert_param(c, v) for c, v in zip(TYPES_COLUMNS, row)) for row in TYPES_ROWS
        ]
        cur.executemany(f"INSERT INTO {t} VALUES ({placeholders})", rows)
        expect_eq("rows inserted", cur.rowcount, len(TYPES_ROWS))
    conn.commit()
    return t


@check
def column_types_round_trip():
    with connect() as proxy, direct() as d:
        t = create_types_table(proxy)
        try:
            sql = f"SELECT {', '.join(TYPES_COLUMNS)} FROM {t} ORDER BY id"
            via_proxy = query(proxy, sql)
            via_direct = query(d, sql)
            expect_eq("rows via proxy vs direct", via_proxy, via_direct)
            for want, got in zip(TYPES_ROWS, via_proxy):
                for col, w, g in zip(TYPES_COLUMNS, want, got):
                    expect_eq(f"row {want[0]} column {col}", g, w)
            expect_eq("row count", len(via_proxy), len(TYPES_ROWS))
            # Server-side renderings too, so a wrong byte cannot hide behind a converter.
            text_sql = f"SELECT HEX(bin), HEX(vbin), HEX(bl), BIN(bt), bt + 0 FROM {t} ORDER BY id"
            expect_eq("hex/bin renderings", query(proxy, text_sql), query(d, text_sql))
            expect_eq(
                "hex/bin of row 2",
                query(proxy, text_sql)[1],
                ("DEADBEEF", "0102030405060708090A0B0C0D0E0F10", "", "1" * 64,
                 D(18446744073709551615)),
            )
        finally:
            query(proxy, f"DROP TABLE {t}")


# ---------------------------------------------------------------------------------------------


TRICKY = "o'brien \"quoted\" \\ 😀"  # quotes, a backslash and an emoji to escape client-side


@check
def ok_packets_match_direct():
    """PyMySQL does not ask for session tracking (the proxy's backend connections do): every
    OK it reads, info text included (PyMySQL takes all bytes after the warnings as the
    message), is what the server sends it directly, and ROW_COUNT() is the server's."""
    expect_eq("client asks for session tracking",
              bool(connect().client_flag & CLIENT.SESSION_TRACK), False)
    t = unique("py_ok")
    seen = {}
    for name, conn in (("proxy", connect()), ("direct", direct())):
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, n INT)")
            try:
                got = []
                for sql in (f"INSERT INTO {t} VALUES (1, 1), (2, 2), (3, 3)",
                            f"UPDATE {t} SET n = n + 1 WHERE id < 3",
                            f"DELETE FROM {t} WHERE id = 3",
                            "USE " + ARGS.db):
                    cur.execute(sql)
                    r = conn._result
                    got.append((r.affected_rows, r.insert_id, r.warning_count,
                                r.server_status, r.message))
                    if not sql.startswith("USE"):
                        cur.execute("SELECT ROW_COUNT()")
                        got.append(cur.fetchone())
                seen[name] = got
            finally:
                cur.execute(f"DROP TABLE {t}")
    expect_eq("OK packets through the proxy vs direct", seen["proxy"], seen["direct"])
    expect_eq("UPDATE info", seen["direct"][2][4], b"(Rows matched: 2  Changed: 2  Warnings: 0")


@check
def crud_with_parameters():
    t = unique("py_crud")
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, "
                    f"name VARCHAR(50), n INT) DEFAULT CHARSET=utf8mb4")
        try:
            insert = f"INSERT INTO {t} (name, n) VALUES (%s, %s)"
            expect_eq("insert rowcount", cur.execute(insert, (TRICKY, 1)), 1)
            first_id = cur.lastrowid
            expect_eq("lastrowid > 0", first_id > 0, True)
            named = f"INSERT INTO {t} (name, n) VALUES (%(name)s, %(n)s)"
            cur.execute(named, {"name": "b", "n": 2})
            expect_eq("second lastrowid", cur.lastrowid, first_id + 1)
            cur.execute(f"SELECT id, name, n FROM {t} WHERE name = %s", (TRICKY,))
            expect_eq("select by param", cur.fetchall(), ((first_id, TRICKY, 1),))
            update = f"UPDATE {t} SET n = n + %s WHERE id >= %s"
            expect_eq("update affected rows", cur.execute(update, (10, first_id)), 2)
            unchanged = f"UPDATE {t} SET n = 11 WHERE id = %s"
            expect_eq("update changing nothing", cur.execute(unchanged, (first_id,)), 0)
            delete = f"DELETE FROM {t} WHERE n = %s"
            expect_eq("delete affected rows", cur.execute(delete, (12,)), 1)
            cur.execute(f"SELECT name, n FROM {t} ORDER BY id")
            expect_eq("rows after delete", cur.fetchall(), ((TRICKY, 11),))
            cur.execute(f"SELECT n FROM {t} WHERE name IN %s", (["a", TRICKY],))
            expect_eq("IN with a list parameter", cur.fetchall(), ((11,),))
        finally:
            cur.execute(f"DROP TABLE {t}")


@check
def executemany_and_lastrowid():
    t = unique("py_many")
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))")
        try:
            rows = [(f"v{i}",) for i in range(500)]
            # PyMySQL turns this into one multi-row INSERT.
            expect_eq("executemany rowcount",
                      cur.executemany(f"INSERT INTO {t} (v) VALUES (%s)", rows), 500)
            expect_eq("lastrowid is the first id of the batch", cur.lastrowid, 1)
            cur.execute("SELECT LAST_INSERT_ID()")
            expect_eq("LAST_INSERT_ID()", cur.fetchone(), (1,))
            # An UPDATE through executemany runs once per row.
            expect_eq("executemany update rowcount", cur.executemany(
                f"UPDATE {t} SET v = %s WHERE id = %s", [("x", 1), ("y", 2), ("z", 999)]), 2)
            cur.execute(f"SELECT COUNT(*), SUM(v IN ('x', 'y')) FROM {t}")
            expect_eq("after updates", cur.fetchone(), (500, D(2)))
            cur.execute(f"INSERT INTO {t} (v) VALUES ('one more')")
            expect_eq("lastrowid after single insert", cur.lastrowid, 501)
        finally:
            cur.execute(f"DROP TABLE {t}")


@check
def big_blob_with_parameters():
    t = unique("py_blob")
    blob = os.urandom(BIG_BLOB_LEN)
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)")
        try:
            expect_eq("insert", cur.execute(f"INSERT INTO {t} VALUES (%s, %s)", (1, blob)), 1)
            cur.execute(f"SELECT b FROM {t} WHERE id = %s", (1,))
            got = cur.fetchone()[0]
            expect_eq("blob length", len(got), len(blob))
            if got != blob:
                raise AssertionError("20 MiB blob read back through the proxy differs")
            cur.execute(f"SELECT LENGTH(b), MD5(b) FROM {t}")
            expect_eq("server-side length and md5", cur.fetchone(),
                      (BIG_BLOB_LEN, hashlib.md5(blob).hexdigest()))
            with direct() as d:
                expect_eq("direct md5", query(d, f"SELECT MD5(b) FROM {t}"),
                          ((hashlib.md5(blob).hexdigest(),),))
        finally:
            cur.execute(f"DROP TABLE {t}")


@check
def warning_count():
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1/0")
        expect_eq("1/0", cur.fetchall(), ((None,),))
        expect_eq("cursor.warning_count", cur.warning_count, 1)
        expect_eq("SHOW WARNINGS", conn.show_warnings(), (("Warning", 1365, "Division by 0"),))
        cur.execute("SELECT 1")
        cur.fetchall()
        expect_eq("warning_count after a clean statement", cur.warning_count, 0)


@check
def syntax_error_then_connection_works():
    with connect() as conn:
        e = expect_error(pymysql.err.ProgrammingError, 1064,
                         lambda: query(conn, "SELEC 1 FROM nowhere"))
        if "SELEC 1" not in e.args[1]:
            raise AssertionError(f"message does not quote the statement: {e.args[1]!r}")
        expect_eq("after the error", query(conn, "SELECT 'still here'"), (("still here",),))
        expect_error(pymysql.err.ProgrammingError, 1146,
                     lambda: query(conn, "SELECT * FROM no_such_table_anywhere"))
        expect_eq("after the second error", query(conn, "SELECT 2"), ((2,),))


@check
def duplicate_key_error():
    t = unique("py_dup")
    with connect() as conn:
        query(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY)")
        try:
            query(conn, f"INSERT INTO {t} VALUES (1)")
            expect_error(pymysql.err.IntegrityError, 1062,
                         lambda: query(conn, f"INSERT INTO {t} VALUES (1)"))
            expect_eq("rows", query(conn, f"SELECT id FROM {t}"), ((1,),))
        finally:
            query(conn, f"DROP TABLE {t}")


@check
def stored_procedure_two_result_sets():
    p = unique("py_proc")
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE PROCEDURE {p}(IN n INT) "
                    f"BEGIN SELECT n AS a; SELECT 'two' AS b, n + 1 AS c; END")
        try:
            cur.execute(f"CALL {p}(%s)", (41,))
            expect_eq("first result set", cur.fetchall(), ((41,),))
            expect_eq("columns of the first", [c[0] for c in cur.description], ["a"])
            expect_eq("nextset", cur.nextset(), True)
            expect_eq("second result set", cur.fetchall(), (("two", 42),))
            expect_eq("columns of the second", [c[0] for c in cur.description], ["b", "c"])
            # The CALL's own OK packet ends the sequence.
            expect_eq("final OK", cur.nextset(), True)
            expect_eq("final OK has no columns", cur.description, None)
            expect_eq("no more sets", cur.nextset(), None)
            expect_eq("connection usable after CALL", query(conn, "SELECT 'next'"), (("next",),))
        finally:
            cur.execute(f"DROP PROCEDURE {p}")


@check
def multi_statements():
    with connect(client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one; SELECT 'b' AS two, 2; SET @x = 5; SELECT @x")
        expect_eq("first", cur.fetchall(), ((1,),))
        expect_eq("nextset 1", cur.nextset(), True)
        expect_eq("second", cur.fetchall(), (("b", 2),))
        expect_eq("nextset 2", cur.nextset(), True)
        expect_eq("SET has no rows", cur.description, None)
        expect_eq("nextset 3", cur.nextset(), True)
        expect_eq("fourth", cur.fetchall(), ((5,),))
        expect_eq("end", cur.nextset(), None)
        # An error in the middle ends the batch; the connection stays usable.
        cur.execute("SELECT 1; SELEC 2; SELECT 3")
        expect_eq("before the error", cur.fetchall(), ((1,),))
        expect_error(pymysql.err.ProgrammingError, 1064, cur.nextset)
        expect_eq("after a failed batch", query(conn, "SELECT 'ok'"), (("ok",),))


@check
def autocommit_off_rollback():
    t = unique("py_tx")
    with connect() as setup:
        query(setup, f"CREATE TABLE {t} (id INT PRIMARY KEY) ENGINE=InnoDB")
        try:
            with connect(autocommit=False) as conn:
                expect_eq("autocommit off", conn.get_autocommit(), False)
                query(conn, f"INSERT INTO {t} VALUES (1)")
                expect_eq("own uncommitted row", query(conn, f"SELECT id FROM {t}"), ((1,),))
                expect_eq("others do not see it", query(setup, f"SELECT id FROM {t}"), ())
                conn.rollback()
                expect_eq("after rollback", query(conn, f"SELECT id FROM {t}"), ())
                query(conn, f"INSERT INTO {t} VALUES (2)")
                conn.commit()
            expect_eq("committed row visible", query(setup, f"/* shardgate:primary */ SELECT id FROM {t}"), ((2,),))
            with direct() as d:
                expect_eq("committed row on the primary", query(d, f"SELECT id FROM {t}"), ((2,),))
        finally:
            query(setup, f"DROP TABLE {t}")


@check
def sscursor_streams_100k_rows():
    with connect(cursorclass=pymysql.cursors.SSCursor) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT seq, REPEAT('r', 100) FROM seq_1_to_{STREAM_ROWS}")
            count, total = 0, 0
            for seq, pad in cur:
                count += 1
                total += seq
                if len(pad) != 100:
                    raise AssertionError(f"row {seq}: padding {len(pad)} bytes")
                if seq != count:
                    raise AssertionError(f"row {count} has seq {seq}")
            expect_eq("streamed rows", count, STREAM_ROWS)
            expect_eq("sum", total, STREAM_ROWS * (STREAM_ROWS + 1) // 2)
        # Abandon a stream half-way: closing the cursor drains it, the connection goes on.
        with conn.cursor() as cur:
            cur.execute(f"SELECT seq FROM seq_1_to_{STREAM_ROWS}")
            expect_eq("first streamed row", cur.fetchone(), (1,))
        expect_eq("after an abandoned stream", query(conn, "SELECT 'next'"), (("next",),))


@check
def ping_and_select_db():
    other = unique("py_db")
    with connect() as conn:
        conn.ping(reconnect=False)
        query(conn, f"CREATE DATABASE {other}")
        try:
            query(conn, f"CREATE TABLE {other}.marker (v VARCHAR(10))")
            query(conn, f"INSERT INTO {other}.marker VALUES ('there')")
            conn.select_db(other)
            expect_eq("DATABASE() after select_db", query(conn, "SELECT DATABASE()"), ((other,),))
            expect_eq("unqualified table of the new db", query(conn, "SELECT v FROM marker"),
                      (("there",),))
            conn.ping(reconnect=False)
            expect_eq("db kept across ping", query(conn, "SELECT DATABASE()"), ((other,),))
            expect_error(pymysql.err.OperationalError, 1049,
                         lambda: conn.select_db(other + "_missing"))
            expect_eq("db kept after a failed select_db", query(conn, "SELECT DATABASE()"),
                      ((other,),))
            conn.select_db(ARGS.db)
            expect_eq("back to the first db", query(conn, "SELECT DATABASE()"), ((ARGS.db,),))
            query(conn, f"USE {other}")
            expect_eq("DATABASE() after USE", query(conn, "SELECT DATABASE()"), ((other,),))
            expect_eq("unqualified table after USE", query(conn, "SELECT v FROM marker"),
                      (("there",),))
        finally:
            query(conn, f"DROP DATABASE {other}")


@check
def no_default_database():
    """A login without a database has none selected, whatever the proxy's pooled connections
    last used: DATABASE() is NULL and unqualified names are refused with 1046."""
    for _ in range(3):
        with connect() as conn:  # leaves a pooled server connection with `app` selected
            query(conn, "SELECT 1")
        time.sleep(0.2)  # the proxy gives connections back to its pool in the background
        with connect(database=None) as conn:
            expect_eq("DATABASE()", query(conn, "SELECT DATABASE()"), ((None,),))
            expect_error(pymysql.err.OperationalError, 1046,
                         lambda: query(conn, "SELECT * FROM no_db_selected_here"))
            expect_eq("qualified names work",
                      query(conn, "SELECT COUNT(*) > 0 FROM information_schema.tables"), ((1,),))


@check
def com_field_list_matches_direct():
    """COM_FIELD_LIST (mysql_list_fields, what the mariadb CLI's auto-rehash sends) returns the
    same column definitions through the proxy as directly, and errors keep the connection."""
    t = unique("py_fields")
    with connect() as conn, direct() as d:
        query(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(20) DEFAULT 'x', "
                    f"j JSON, b BLOB)")
        try:
            via_proxy = field_list(conn, t)
            expect_eq("packets via proxy vs direct", via_proxy, field_list(d, t))
            expect_eq("4 column definitions and an EOF", len(via_proxy), 5)
            expect_eq("query after COM_FIELD_LIST", query(conn, "SELECT 'alive'"), (("alive",),))
            expect_error(pymysql.err.ProgrammingError, 1146,
                         lambda: field_list(conn, "no_such_table"))
            expect_eq("query after a failed one", query(conn, "SELECT 'alive'"), (("alive",),))
        finally:
            query(conn, f"DROP TABLE {t}")


def field_list(conn, table):
    """The raw response packets of COM_FIELD_LIST; PyMySQL has no public API for it."""
    conn._execute_command(COMMAND.COM_FIELD_LIST, table.encode() + b"\0")
    packets = []
    while True:
        packet = conn._read_packet()  # raises on an ERR packet
        packets.append(packet.get_all_data())
        if packet.is_eof_packet():
            return packets


@check
def kill_query_by_thread_id():
    """`KILL QUERY <conn.thread_id()>` from another connection interrupts that connection's
    query, and no other (the id is the one the handshake announced)."""
    with connect() as victim, connect() as bystander, connect() as killer:
        kill_errors = []

        def kill_soon():
            time.sleep(1)
            try:
                query(killer, f"KILL QUERY {victim.thread_id()}")
            except pymysql.err.MySQLError as e:
                kill_errors.append(e)

        bystander.query("SELECT 1")  # pins its server connection
        t = threading.Thread(target=kill_soon)
        t.start()
        started = time.monotonic()
        try:
            expect_error(pymysql.err.OperationalError, 1317,
                         lambda: query(victim, "SELECT SLEEP(10)"))
        except AssertionError as e:
            raise AssertionError(
                f"{e}; KILL QUERY {victim.thread_id()} gave {kill_errors}") from None
        finally:
            t.join()
        took = time.monotonic() - started
        if took > 5:
            raise AssertionError(f"the query ran on for {took:.1f}s")
        expect_eq("victim usable after", query(victim, "SELECT 'next'"), (("next",),))
        expect_eq("bystander untouched", query(bystander, "SELECT 'fine'"), (("fine",),))


@check
def unicode_emoji_round_trip():
    t = unique("py_uni")
    text = "😀🎉 naïve façade — 漢字 Ελληνικά עברית \u0000 end"
    with connect() as conn, direct() as d:
        query(conn, f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(200)) "
                    f"DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin")
        try:
            query(conn, f"INSERT INTO {t} VALUES (%s, %s)", (1, text))
            expect_eq("via proxy", query(conn, f"SELECT s FROM {t}"), ((text,),))
            expect_eq("via direct", query(d, f"SELECT s FROM {t}"), ((text,),))
            expect_eq("lookup by emoji", query(conn, f"SELECT id FROM {t} WHERE s = %s", (text,)),
                      ((1,),))
            expect_eq("char length", query(conn, f"SELECT CHAR_LENGTH(s) FROM {t}"),
                      ((len(text),),))
            expect_eq("literal emoji", query(conn, "SELECT '🐍', CHAR_LENGTH('🐍')"), (("🐍", 1),))
        finally:
            query(conn, f"DROP TABLE {t}")


@check
def wrong_password_is_refused():
    e = expect_error(pymysql.err.OperationalError, 1045,
                     lambda: connect(password=ARGS.password + "-wrong").close())
    if "Access denied" not in e.args[1]:
        raise AssertionError(f"unexpected message {e.args[1]!r}")
    # The right password still works afterwards.
    with connect() as conn:
        expect_eq("login after a refused one", query(conn, "SELECT CURRENT_USER() LIKE 'app@%'"),
                  ((1,),))


# ---------------------------------------------------------------------------------------------


def run(names):
    passed, failed = 0, 0
    for name in names:
        try:
            CHECKS[name]()
        except Exception:  # noqa: BLE001 - every failure is reported, then the next check runs
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name}")
        sys.stdout.flush()
    print(f"pymysql: {passed} checks passed, {failed} failed")
    return failed == 0


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=False)
    p.add_argument("--user", default="app")
    p.add_argument("--password", default="app")
    p.add_argument("--db", default="app")
    p.add_argument("--direct-port", type=int, required=False)
    p.add_argument("--check", action="append", choices=sorted(CHECKS),
                   help="run only this check (repeatable)")
    p.add_argument("--list", action="store_true", help="print the check names and exit")
    ARGS = p.parse_args()
    if ARGS.list:
        print("\n".join(CHECKS))
        return 0
    if ARGS.port is None or ARGS.direct_port is None:
        p.error("--port and --direct-port are required")
    return 0 if run(ARGS.check or list(CHECKS)) else 1


if __name__ == "__main__":
    sys.exit(main())

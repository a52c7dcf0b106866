//! Differential test: a seeded generator writes statements of the shapes sharded keyspaces
//! support (point reads, IN lists, ranges, ORDER BY/LIMIT, aggregates, GROUP BY, DISTINCT,
//! AVG and HAVING (see [`MERGE_AVG_HAVING`]), joins of co-located tables, NULLs, strings in a
//! case-insensitive collation), and each runs
//! against one unsharded MariaDB database and through the proxy on the same data sharded over
//! 2 and over 3 shards. Results must be equal: exactly where the statement orders its rows, as
//! multisets where it does not; letter case is folded where the server may show any spelling of
//! equal strings. Writes on several shards (IN lists, multi-row INSERT, REPLACE, upserts) are
//! compared by their OK packets (affected rows, warnings, info text) and the rows they leave.
//! A failure prints the seed and the statement; `SHARDGATE_DIFF_SEED=N` replays.

mod common;

use std::sync::OnceLock;

use mysql_async::prelude::*;
use mysql_async::Conn;

use common::Sandbox;

const STATEMENTS: usize = 320;
const USERS: i64 = 120;
/// Generate AVG (over INT, DECIMAL and DOUBLE columns and a DECIMAL expression) and HAVING
/// statements, and ORDER BY on aggregates: these need the session to finish merged groups
/// (`executor::group`). Changes which statements a seed generates.
const MERGE_AVG_HAVING: bool = true;

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster_with(&["--shards", "3", "--replicas", "0"]))
}

/// A small deterministic generator (xorshift64*), so a seed replays the same statements.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One generated statement and whether its rows come in a defined order.
struct Case {
    sql: String,
    ordered: bool,
}

fn generate(g: &mut Gen) -> Case {
    let key = |g: &mut Gen| 1 + g.below(USERS as u64 + 10) as i64; // some keys miss
    let score = |g: &mut Gen| g.below(12) as i64;
    let case = |sql: String, ordered: bool| Case { sql, ordered };
    const PLAIN: u64 = 19;
    let shapes = if MERGE_AVG_HAVING {
        PLAIN + AVG_HAVING_SHAPES
    } else {
        PLAIN
    };
    match g.below(shapes) {
        n @ PLAIN.. => avg_having(g, n - PLAIN),
        16 => case(
            format!(
                "SELECT COUNT(DISTINCT name), COUNT(*), MAX(score) FROM users WHERE id {} {}",
                g.pick(&["<", ">", ">="]),
                key(g)
            ),
            true,
        ),
        17 => case(
            format!(
                "SELECT score, COUNT(DISTINCT name) AS c, SUM(amount), AVG(amount) FROM users WHERE id <= {} GROUP BY score",
                key(g)
            ),
            true,
        ),
        18 => case(
            format!(
                "SELECT o.n, COUNT(DISTINCT o.user_id) AS u FROM orders o WHERE o.total > {} GROUP BY o.n HAVING COUNT(DISTINCT o.user_id) > {} ORDER BY u DESC, o.n LIMIT {}",
                g.below(60),
                g.below(4),
                1 + g.below(4)
            ),
            true,
        ),
        14 => case(
            format!(
                "SELECT id, score FROM users WHERE score < {} UNION ALL SELECT user_id, n FROM orders WHERE total > {}",
                score(g),
                g.below(90)
            ),
            false,
        ),
        15 => case(
            format!(
                "SELECT id, name FROM users WHERE id = {} UNION ALL SELECT id, name FROM users WHERE score = {} ORDER BY id DESC LIMIT {}",
                key(g),
                score(g),
                1 + g.below(8)
            ),
            true,
        ),
        0 => case(
            format!("SELECT id, name, score, amount FROM users WHERE id = {}", key(g)),
            false,
        ),
        1 => case(
            format!("SELECT name, score FROM users WHERE id = '{}'", key(g)),
            false,
        ),
        2 => {
            let keys: Vec<String> = (0..1 + g.below(6)).map(|_| key(g).to_string()).collect();
            case(
                format!("SELECT id, name FROM users WHERE id IN ({})", keys.join(", ")),
                false,
            )
        }
        3 => {
            let a = score(g);
            case(
                format!(
                    "SELECT id, score FROM users WHERE score BETWEEN {a} AND {}",
                    a + g.below(4) as i64
                ),
                false,
            )
        }
        4 => {
            let dir = g.pick(&["ASC", "DESC"]);
            let (off, n) = (g.below(10), 1 + g.below(15));
            case(
                format!(
                    "SELECT id, name, score FROM users WHERE score >= {} ORDER BY score {dir}, id LIMIT {off}, {n}",
                    score(g)
                ),
                true,
            )
        }
        5 => case(
            format!(
                "SELECT name, id FROM users WHERE id > {} ORDER BY name, id LIMIT {}",
                key(g),
                1 + g.below(20)
            ),
            true,
        ),
        6 => case(
            format!(
                "SELECT COUNT(*), SUM(amount), MIN(score), MAX(name), MAX(id) FROM users WHERE score {} {}",
                g.pick(&["<", ">", "<=", "="]),
                score(g)
            ),
            true,
        ),
        7 => case(
            format!(
                "SELECT score, COUNT(*) AS c, SUM(amount), MIN(id) FROM users WHERE id <= {} GROUP BY score",
                key(g)
            ),
            true,
        ),
        8 => case(
            format!(
                "SELECT score, COUNT(*) AS c FROM users GROUP BY score ORDER BY c DESC, score LIMIT {}",
                1 + g.below(6)
            ),
            true,
        ),
        9 => case(
            format!(
                "SELECT DISTINCT score FROM users WHERE id < {}",
                key(g)
            ),
            false,
        ),
        10 => case(
            format!(
                "SELECT u.id, u.name, o.n, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = {}",
                key(g)
            ),
            false,
        ),
        11 => case(
            format!(
                "SELECT u.id, o.n FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > {}",
                g.below(90)
            ),
            false,
        ),
        12 => case(
            format!(
                "SELECT o.user_id, COUNT(*) AS c, SUM(o.total) AS t FROM orders o WHERE o.n < {} GROUP BY o.user_id ORDER BY t DESC, o.user_id LIMIT 5",
                1 + g.below(4)
            ),
            true,
        ),
        _ => case(
            format!(
                "SELECT id, name FROM users WHERE name {} ORDER BY id",
                g.pick(&["IS NULL", "LIKE 'a%'", "= 'ALPHA'", "> 'm'"])
            ),
            true,
        ),
    }
}

/// How many shapes [`avg_having`] has.
const AVG_HAVING_SHAPES: u64 = 8;

/// Statements with AVG, HAVING and ORDER BY on aggregates: shape `n` of [`AVG_HAVING_SHAPES`].
/// Every one orders its rows completely (GROUP BY sorts by the group; ORDER BY ends on it).
fn avg_having(g: &mut Gen, n: u64) -> Case {
    let key = |g: &mut Gen| 1 + g.below(USERS as u64 + 10) as i64;
    let score = |g: &mut Gen| g.below(12) as i64;
    // Around the amounts' (0..100) and ratios' (-2..2) averages, with a fraction.
    let amount = |g: &mut Gen| format!("{}.{}", 30 + g.below(40), g.below(10));
    let ratio = |g: &mut Gen| format!("{}{}.{}", g.pick(&["", "-"]), g.below(2), g.below(10));
    let sql = match n {
        0 => format!(
            "SELECT AVG(score), AVG(amount), AVG(ratio), AVG(amount * 1.000), COUNT(*) FROM users WHERE score {} {}",
            g.pick(&["<", ">", "<=", "=", ">="]),
            score(g)
        ),
        1 => format!(
            "SELECT score, AVG(amount) AS a, AVG(ratio), AVG(id), COUNT(score) FROM users WHERE id <= {} GROUP BY score",
            key(g)
        ),
        2 => {
            let having = match g.below(9) {
                0 => format!("COUNT(*) > {}", g.below(14)),
                1 => format!("c >= {} AND MAX(id) > {}", g.below(14), key(g)),
                2 => format!("AVG(amount) > {} OR score IS NULL", amount(g)),
                3 => "MIN(name) = 'ALPHA'".to_string(),
                4 => format!("score BETWEEN {} AND {}", score(g), score(g) + 4),
                5 => "score IN (1, 3, 5, NULL) OR score NOT IN (2, 4)".to_string(),
                6 => format!("SUM(amount) > {}", 200 + g.below(400)),
                7 => format!("NOT (AVG(ratio) < {})", ratio(g)),
                _ => format!(
                    "MAX(name) IS NOT NULL AND AVG(score) >= {}.5",
                    score(g)
                ),
            };
            format!(
                "SELECT score, COUNT(*) AS c, SUM(amount), AVG(ratio) FROM users GROUP BY score HAVING {having}"
            )
        }
        3 => format!(
            "SELECT score, COUNT(*) FROM users GROUP BY score ORDER BY COUNT(*) DESC, score LIMIT {}",
            1 + g.below(8)
        ),
        4 => format!(
            "SELECT name, SUM(amount), MIN(score) FROM users WHERE id > {} GROUP BY name ORDER BY AVG(ratio) {}, name",
            key(g) / 2,
            g.pick(&["ASC", "DESC"])
        ),
        5 => format!(
            "SELECT score, AVG(amount) AS a FROM users GROUP BY score HAVING COUNT(*) > {} ORDER BY a DESC, score LIMIT {}, {}",
            g.below(12),
            g.below(3),
            1 + g.below(5)
        ),
        6 => format!(
            "SELECT o.user_id, COUNT(*) AS c, AVG(o.total) AS a FROM orders o WHERE o.n < {} GROUP BY o.user_id HAVING COUNT(*) > 1 AND a > {} ORDER BY a DESC, o.user_id LIMIT 5",
            2 + g.below(2),
            amount(g)
        ),
        _ => {
            if g.below(2) == 0 {
                format!(
                    "SELECT COUNT(*), AVG(score), MAX(amount) FROM users WHERE id < {} HAVING COUNT(*) > {}",
                    key(g),
                    g.below(60)
                )
            } else {
                format!(
                    "SELECT name FROM users GROUP BY name HAVING AVG(amount) > {} AND COUNT(score) >= {}",
                    amount(g),
                    g.below(20)
                )
            }
        }
    };
    Case { sql, ordered: true }
}

/// The rows: user `i` has a name from a small set in mixed case (or NULL), a score (or NULL),
/// an amount and a ratio (or NULL; quarters, so sums in any order are exact); orders of some
/// users.
fn data() -> (Vec<String>, Vec<String>) {
    let names = [
        "alpha", "Alpha", "ALPHA", "bravo", "Charlie", "delta ", "echo", "mike",
    ];
    let users = (1..=USERS)
        .map(|i| {
            let name = if i % 11 == 0 {
                "NULL".to_string()
            } else {
                format!("'{}'", names[(i as usize * 7) % names.len()])
            };
            let score = if i % 13 == 0 {
                "NULL".to_string()
            } else {
                ((i * 5) % 12).to_string()
            };
            let ratio = if i % 7 == 0 {
                "NULL".to_string()
            } else {
                format!("{}", ((i * 3) % 17 - 8) as f64 * 0.25)
            };
            format!(
                "({i}, {name}, {score}, {}.{:02}, {ratio})",
                (i * 37) % 100,
                (i * 13) % 100
            )
        })
        .collect();
    let mut orders = Vec::new();
    for u in 1..=USERS {
        for n in 0..(u % 4) {
            orders.push(format!(
                "({u}, {n}, {}.{:02})",
                (u * 7 + n * 11) % 100,
                (u + n) % 100
            ));
        }
    }
    (users, orders)
}

const SCHEMA: [&str; 2] = [
    "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(20), score INT, amount DECIMAL(10,2), ratio DOUBLE)",
    "CREATE TABLE orders (user_id INT, n INT, total DECIMAL(10,2), PRIMARY KEY (user_id, n))",
];

/// Loads the rows into `conn`'s current database, in batches.
async fn load(conn: &mut Conn) {
    for ddl in SCHEMA {
        conn.query_drop(ddl).await.expect("schema");
    }
    let (users, orders) = data();
    for chunk in users.chunks(25) {
        conn.query_drop(format!(
            "INSERT INTO users (id, name, score, amount, ratio) VALUES {}",
            chunk.join(", ")
        ))
        .await
        .expect("users");
    }
    for chunk in orders.chunks(25) {
        conn.query_drop(format!(
            "INSERT INTO orders (user_id, n, total) VALUES {}",
            chunk.join(", ")
        ))
        .await
        .expect("orders");
    }
}

/// A proxy whose keyspaces `d2` and `d3` shard users and orders over 2 and 3 shards.
fn proxy_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let sb = sandbox();
        let mut extra = String::from("[monitor]\ninterval_ms = 200\n");
        for (ks, shards) in [("d2", 2), ("d3", 3)] {
            extra.push_str(&format!(
                "[keyspace.{ks}]\nsharding = \"consistent_hash\"\nvnodes = 64\n\
                 [keyspace.{ks}.tables.users]\nshard_key = \"id\"\n\
                 [keyspace.{ks}.tables.orders]\nshard_key = \"user_id\"\n\
                 [keyspace.{ks}.tables.wusers]\nshard_key = \"id\"\n"
            ));
            for s in 0..shards {
                let p = sb.cluster.primary(&format!("s{s}")).expect("primary");
                extra.push_str(&format!(
                    "[[keyspace.{ks}.shards]]\nname = \"s{s}\"\nprimary = \"127.0.0.1:{}\"\n",
                    p.port
                ));
            }
        }
        sb.keep_proxy(&extra)
    })
}

type Rows = Vec<Vec<Option<String>>>;

async fn run(conn: &mut Conn, sql: &str) -> Result<Rows, String> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(b) => {
                        Some(String::from_utf8_lossy(&b).trim_end().to_lowercase())
                    }
                    other => Some(format!("{other:?}")),
                })
                .collect()
        })
        .collect())
}

/// `SHARDGATE_DIFF_SEED` if set, else `default`.
fn seed(default: u64) -> u64 {
    std::env::var("SHARDGATE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A connection to shard s0's server in database `reference` (the unsharded one), with the
/// databases `reference`, `d2` and `d3` on every server.
async fn reference(reference: &str) -> Conn {
    let sb = sandbox();
    for db in [reference, "d2", "d3"] {
        for s in 0..3 {
            let p = sb.cluster.primary(&format!("s{s}")).expect("primary").port;
            let mut c = common::connect(&common::root_url(p)).await;
            // The sandbox's app user may use every database.
            c.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .await
                .expect("database");
        }
    }
    let primary = sb.cluster.primary("s0").expect("primary").port;
    let mut root = common::connect(&common::root_url(primary)).await;
    root.query_drop(format!("USE {reference}"))
        .await
        .expect("use");
    root
}

#[tokio::test]
async fn sharded_results_equal_one_servers() {
    let seed = seed(0x5eed_2026_1123);
    // The unsharded reference: a database of its own on one server, loaded directly.
    let mut root = reference("dref").await;
    load(&mut root).await;
    let port = proxy_port();
    let mut sharded = Vec::new();
    for ks in ["d2", "d3"] {
        let mut c = common::connect(&common::app_url(port, ks)).await;
        load(&mut c).await;
        sharded.push((ks, c));
    }
    let mut g = Gen(seed | 1);
    let mut failures = Vec::new();
    for i in 0..STATEMENTS {
        let case = generate(&mut g);
        let mut want = run(&mut root, &case.sql)
            .await
            .unwrap_or_else(|e| panic!("reference rejected {}: {e}", case.sql));
        if !case.ordered {
            want.sort();
        }
        for (ks, c) in sharded.iter_mut() {
            match run(c, &case.sql).await {
                Ok(mut got) => {
                    if !case.ordered {
                        got.sort();
                    }
                    if got != want {
                        failures.push(format!(
                            "#{i} on {ks}: {}\n  proxy:  {got:?}\n  direct: {want:?}",
                            case.sql
                        ));
                    }
                }
                Err(e) => failures.push(format!("#{i} on {ks}: {}\n  error: {e}", case.sql)),
            }
        }
    }
    println!(
        "seed {seed:#x}: {STATEMENTS} statements x 2 shard counts, {} differences",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "seed {seed:#x} (replay with SHARDGATE_DIFF_SEED={seed}):\n{}",
        failures.join("\n")
    );
}

/// A write of the shapes the proxy runs on several shards (IN lists over shards, multi-row
/// INSERT, REPLACE, ON DUPLICATE KEY UPDATE, INSERT IGNORE; the first three also without a
/// column list),
/// on keys that may or may not exist;
/// a plain INSERT takes keys from `fresh` (a duplicate would fail it on one server, while the
/// shards before the failing one keep their rows: not atomic, as the README says).
fn generate_write(g: &mut Gen, fresh: &mut i64) -> String {
    let keys = |g: &mut Gen| -> Vec<i64> {
        let mut k: Vec<i64> = (0..1 + g.below(5))
            .map(|_| 1 + g.below(30) as i64)
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let list = |k: &[i64]| {
        k.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = |g: &mut Gen, k: &[i64]| {
        k.iter()
            .map(|k| format!("({k}, '{}', {})", g.pick(&["a", "b", "c"]), g.below(4)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let k = keys(g);
    match g.below(10) {
        // Without a column list: the values in the table's column order.
        7 => {
            let new: Vec<i64> = k
                .iter()
                .map(|_| {
                    *fresh += 1;
                    *fresh
                })
                .collect();
            format!("INSERT INTO wusers VALUES {}", rows(g, &new))
        }
        8 => format!("REPLACE INTO wusers VALUES {}", rows(g, &k)),
        9 => format!(
            "INSERT INTO wusers VALUES {} ON DUPLICATE KEY UPDATE name = VALUES(name)",
            rows(g, &k)
        ),
        0 => format!("UPDATE wusers SET score = score + {} WHERE id IN ({})", g.below(2), list(&k)),
        1 => format!("UPDATE wusers SET name = '{}' WHERE id IN ({})", g.pick(&["a", "b"]), list(&k)),
        2 => {
            let new: Vec<i64> = k.iter().map(|_| {
                *fresh += 1;
                *fresh
            }).collect();
            format!("INSERT INTO wusers (id, name, score) VALUES {}", rows(g, &new))
        }
        3 => format!(
            "INSERT INTO wusers (id, name, score) VALUES {} ON DUPLICATE KEY UPDATE score = VALUES(score)",
            rows(g, &k)
        ),
        4 => format!("REPLACE INTO wusers (id, name, score) VALUES {}", rows(g, &k)),
        5 => format!("INSERT IGNORE INTO wusers (id, name, score) VALUES {}", rows(g, &k)),
        _ => format!("DELETE FROM wusers WHERE id IN ({})", list(&k)),
    }
}

/// Writes on several shards answer with one server's OK packet: affected rows, warnings and
/// the info text ("Rows matched: ...", "Records: ..."), and leave the same rows.
#[tokio::test]
async fn sharded_writes_answer_like_one_server() {
    let seed = seed(0x5eed_2026_1207);
    let ddl = "CREATE TABLE IF NOT EXISTS wusers (id INT PRIMARY KEY, name VARCHAR(8), score INT)";
    let mut root = reference("wref").await;
    root.query_drop(ddl).await.expect("reference table");
    let port = proxy_port();
    let mut sharded = Vec::new();
    for ks in ["d2", "d3"] {
        let mut c = common::connect(&common::app_url(port, ks)).await;
        c.query_drop(ddl).await.expect("sharded table");
        sharded.push((ks, c));
    }
    let ok = |c: &Conn| (c.affected_rows(), c.info().into_owned(), c.get_warnings());
    let mut g = Gen(seed | 1);
    let mut failures = Vec::new();
    let mut fresh = 1000;
    for i in 0..120 {
        let sql = generate_write(&mut g, &mut fresh);
        root.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("reference rejected {sql}: {e}"));
        let want = ok(&root);
        for (ks, c) in sharded.iter_mut() {
            match c.query_drop(&sql).await {
                Ok(()) if ok(c) != want => failures.push(format!(
                    "#{i} on {ks}: {sql}\n  proxy:  {:?}\n  direct: {want:?}",
                    ok(c)
                )),
                Ok(()) => {}
                Err(e) => failures.push(format!("#{i} on {ks}: {sql}\n  error: {e}")),
            }
        }
    }
    let table = "SELECT id, name, score FROM wusers ORDER BY id";
    let want = run(&mut root, table).await.expect("reference rows");
    for (ks, c) in sharded.iter_mut() {
        let got = run(c, table).await.expect("rows");
        if got != want {
            failures.push(format!(
                "rows on {ks}:\n  proxy:  {got:?}\n  direct: {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed:#x} (replay with SHARDGATE_DIFF_SEED={seed}):\n{}",
        failures.join("\n")
    );
}

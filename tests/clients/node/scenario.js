// The client matrix's scenario (tests/client_matrix.rs) run with Node's mysql2, through both
// query() (text protocol) and execute() (server-side prepared statements). Connection from the
// SG_* environment variables; prints one canonical JSON line per step.
'use strict';
const mysql = require('mysql2/promise');

const T = process.env.SG_TABLE;
const COLS = 'id, name, qty, price, ratio, created, data, doc';
const ALL_BYTES = Buffer.from([...Array(256).keys()]);

// A value as the library decoded it, tagged with its JS type where JSON alone would hide it.
function canon(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return { bytes: v.toString('hex') };
  if (v instanceof Date) return { datetime: isNaN(v) ? 'invalid' : v.toISOString() };
  if (typeof v === 'bigint') return { bigint: v.toString() };
  if (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return v;
  return { json: v };
}

function result(res, fields) {
  if (Array.isArray(res)) {
    return {
      columns: (fields || []).map((f) => [f.name, f.columnType, f.characterSet, f.flags, f.decimals]),
      rows: res.map((r) => Object.keys(r).map((k) => [k, canon(r[k])])),
    };
  }
  return {
    ok: {
      affectedRows: res.affectedRows,
      insertId: res.insertId,
      changedRows: res.changedRows,
      info: res.info,
      warningStatus: res.warningStatus,
    },
  };
}

async function main() {
  const conn = await mysql.createConnection({
    host: process.env.SG_HOST,
    port: Number(process.env.SG_PORT),
    user: process.env.SG_USER,
    password: process.env.SG_PASSWORD,
    database: process.env.SG_DB,
    timezone: 'Z',
  });
  const step = async (name, f) => {
    let out;
    try {
      out = await f();
    } catch (e) {
      out = { error: { errno: e.errno ?? null, sqlState: e.sqlState ?? null, message: e.message } };
    }
    console.log(JSON.stringify({ step: name, ...out }));
  };
  const q = (sql, params) => conn.query(sql, params).then(([r, f]) => result(r, f));
  const x = (sql, params) => conn.execute(sql, params).then(([r, f]) => result(r, f));

  await step('create', async () => {
    await conn.query(`DROP TABLE IF EXISTS ${T}`);
    return q(
      `CREATE TABLE ${T} (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), qty INT, ` +
        'price DECIMAL(10,2), ratio DOUBLE, created DATETIME, data BLOB, doc JSON) AUTO_INCREMENT=1000'
    );
  });
  await step('insert_multi', () =>
    q(
      `INSERT INTO ${T} (${COLS}) VALUES ` +
        "(1, 'alpha', 10, 12.50, 0.25, '2026-01-02 03:04:05', X'00FF', '{\"a\": 1}'), " +
        "(2, 'bravo', 20, 99999.99, -1.5, '1999-12-31 23:59:59', NULL, '[1, 2]'), " +
        "(3, 'charlie', 30, 0.01, 1e300, NULL, X'', NULL), " +
        "(600, 'six hundred', 600, 6.00, 600, '2026-06-06 06:06:06', X'0600', '{\"k\": \"v\"}')"
    )
  );
  await step('insert_sequence', () => q(`INSERT INTO ${T} (name, qty) VALUES ('seq', 5)`));
  await step('last_insert_id', () => q('SELECT LAST_INSERT_ID()'));
  // query() with parameters: mysql2 interpolates them client-side (a Buffer as X'..').
  await step('insert_interpolated_bytes', () =>
    q(`INSERT INTO ${T} (id, name, data) VALUES (?, ?, ?)`, [5, 'interp', ALL_BYTES])
  );
  await step('insert_prepared', () =>
    x(`INSERT INTO ${T} (id, name, qty, ratio, data) VALUES (?, ?, ?, ?, ?)`, [7, 'prep', null, 2.5, ALL_BYTES])
  );
  // mysql2 binds every JS number as DOUBLE: 600 arrives as 600.0.
  await step('select_prepared_by_600', () => x(`SELECT ${COLS} FROM ${T} WHERE id = ?`, [600]));
  await step('select_prepared_by_string', () => x(`SELECT ${COLS} FROM ${T} WHERE id = ?`, ['7']));
  await step('select_text', () => q(`SELECT ${COLS} FROM ${T} WHERE id = 1`));
  await step('select_interpolated', () => q(`SELECT ${COLS} FROM ${T} WHERE id = ?`, [600]));
  await step('update_scatter', () => q(`UPDATE ${T} SET qty = qty + 1 WHERE qty IS NOT NULL`));
  await step('update_one', () => q(`UPDATE ${T} SET name = 'bravo2' WHERE id = 2`));
  await step('row_count', () => q('SELECT ROW_COUNT()'));
  await step('insert_with_warning', () => q(`INSERT INTO ${T} (id, name, price) VALUES (9, 'warn', 1.005)`));
  await step('show_warnings', () => q('SHOW WARNINGS'));
  await step('warning_count', () => q('SELECT @@warning_count'));
  await step('duplicate_key', () => q(`INSERT INTO ${T} (id, name) VALUES (1, 'dup')`));
  await step('duplicate_key_prepared', () => x(`INSERT INTO ${T} (id, name) VALUES (?, ?)`, [1, 'dup']));
  await step('syntax_error', () => q(`SELEC id FROM ${T}`));
  await step('rollback', async () => {
    await conn.beginTransaction();
    const upd = await q(`UPDATE ${T} SET name = 'rolled back' WHERE id = 3`);
    await conn.rollback();
    const after = await q(`SELECT name FROM ${T} WHERE id = 3`);
    return { update: upd, after };
  });
  // DDL with autocommit off (PyMySQL's default; SQLAlchemy's create_all()).
  await step('ddl_autocommit_off', async () => {
    await conn.query('SET autocommit = 0');
    try {
      return await q(`ALTER TABLE ${T} ADD COLUMN note INT`);
    } finally {
      await conn.query('SET autocommit = 1');
    }
  });
  await step('final_text', () => q(`SELECT ${COLS} FROM ${T} ORDER BY id`));
  await step('final_prepared', () => x(`SELECT ${COLS} FROM ${T} ORDER BY id`, []));
  await conn.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

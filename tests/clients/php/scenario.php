<?php
// The client matrix's scenario (tests/client_matrix.rs) run with PHP PDO and real server-side
// prepares (ATTR_EMULATE_PREPARES off). Connection from the SG_* environment variables; prints
// one canonical JSON line per step.

$t = getenv('SG_TABLE');
$cols = 'id, name, qty, price, ratio, created, data, doc';
$allBytes = '';
for ($i = 0; $i < 256; $i++) {
    $allBytes .= chr($i);
}

$pdo = new PDO(
    sprintf('mysql:host=%s;port=%s;dbname=%s', getenv('SG_HOST'), getenv('SG_PORT'), getenv('SG_DB')),
    getenv('SG_USER'),
    getenv('SG_PASSWORD'),
    [PDO::ATTR_EMULATE_PREPARES => false, PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]
);

// A value as PDO decoded it, with its PHP type; strings that are not UTF-8 as hex.
function canon($v)
{
    $type = gettype($v);
    if (is_string($v) && preg_match('//u', $v) !== 1) {
        return [$type, 'hex:' . bin2hex($v)];
    }
    return [$type, $v];
}

function result(PDOStatement $st)
{
    if ($st->columnCount() == 0) {
        return ['ok' => ['rowCount' => $st->rowCount()]];
    }
    $columns = [];
    for ($i = 0; $i < $st->columnCount(); $i++) {
        $m = $st->getColumnMeta($i);
        $columns[] = [$m['name'], $m['native_type'] ?? null, $m['pdo_type'], $m['len'], $m['precision']];
    }
    $rows = [];
    foreach ($st->fetchAll(PDO::FETCH_ASSOC) as $r) {
        $row = [];
        foreach ($r as $k => $v) {
            $row[] = [$k, canon($v)];
        }
        $rows[] = $row;
    }
    return ['columns' => $columns, 'rows' => $rows];
}

function step($name, $f)
{
    try {
        $out = $f();
    } catch (PDOException $e) {
        $info = $e->errorInfo ?? [];
        $out = ['error' => ['sqlstate' => $info[0] ?? $e->getCode(), 'code' => $info[1] ?? null, 'message' => $info[2] ?? $e->getMessage()]];
    }
    echo json_encode(['step' => $name] + $out, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION), "\n";
}

$q = function ($sql) use ($pdo) {
    return result($pdo->query($sql));
};
$w = function ($sql) use ($pdo) {
    $n = $pdo->exec($sql);
    return ['ok' => ['exec' => $n, 'lastInsertId' => $pdo->lastInsertId()]];
};
$x = function ($sql, $params) use ($pdo) {
    $st = $pdo->prepare($sql);
    foreach ($params as $i => [$v, $type]) {
        $st->bindValue($i + 1, $v, $type);
    }
    $st->execute();
    $r = result($st);
    if (isset($r['ok'])) {
        $r['ok']['lastInsertId'] = $pdo->lastInsertId();
    }
    return $r;
};

step('create', function () use ($pdo, $t, $w) {
    $pdo->exec("DROP TABLE IF EXISTS $t");
    return $w("CREATE TABLE $t (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), qty INT, "
        . 'price DECIMAL(10,2), ratio DOUBLE, created DATETIME, data BLOB, doc JSON) AUTO_INCREMENT=1000');
});
step('insert_multi', fn() => $w("INSERT INTO $t ($cols) VALUES "
    . "(1, 'alpha', 10, 12.50, 0.25, '2026-01-02 03:04:05', X'00FF', '{\"a\": 1}'), "
    . "(2, 'bravo', 20, 99999.99, -1.5, '1999-12-31 23:59:59', NULL, '[1, 2]'), "
    . "(3, 'charlie', 30, 0.01, 1e300, NULL, X'', NULL), "
    . "(600, 'six hundred', 600, 6.00, 600, '2026-06-06 06:06:06', X'0600', '{\"k\": \"v\"}')"));
step('insert_sequence', fn() => $w("INSERT INTO $t (name, qty) VALUES ('seq', 5)"));
step('last_insert_id', fn() => $q('SELECT LAST_INSERT_ID()'));
// Raw non-UTF-8 bytes inside the statement text, in a row whose key the proxy fills in.
$raw = "A" . substr($allBytes, 0x80) . "B";
step('insert_raw_bytes', fn() => $w("INSERT INTO $t (name, data) VALUES ('raw', _binary'$raw')"));
step('select_raw_bytes', fn() => $q("SELECT HEX(data), data FROM $t WHERE name = 'raw'"));
step('insert_prepared', fn() => $x("INSERT INTO $t (id, name, qty, ratio, data) VALUES (?, ?, ?, ?, ?)", [
    [7, PDO::PARAM_INT], ['prep', PDO::PARAM_STR], [null, PDO::PARAM_NULL], ['2.5', PDO::PARAM_STR], [$allBytes, PDO::PARAM_LOB],
]));
step('select_prepared_int', fn() => $x("SELECT $cols FROM $t WHERE id = ?", [[600, PDO::PARAM_INT]]));
step('select_prepared_string', fn() => $x("SELECT $cols FROM $t WHERE id = ?", [['7', PDO::PARAM_STR]]));
step('select_text', fn() => $q("SELECT $cols FROM $t WHERE id = 1"));
step('update_scatter', fn() => $w("UPDATE $t SET qty = qty + 1 WHERE qty IS NOT NULL"));
step('update_one', fn() => $x("UPDATE $t SET name = ? WHERE id = ?", [['bravo2', PDO::PARAM_STR], [2, PDO::PARAM_INT]]));
step('row_count', fn() => $q('SELECT ROW_COUNT()'));
step('insert_with_warning', fn() => $w("INSERT INTO $t (id, name, price) VALUES (9, 'warn', 1.005)"));
step('show_warnings', fn() => $q('SHOW WARNINGS'));
step('warning_count', fn() => $q('SELECT @@warning_count'));
step('duplicate_key', fn() => $w("INSERT INTO $t (id, name) VALUES (1, 'dup')"));
step('duplicate_key_prepared', fn() => $x("INSERT INTO $t (id, name) VALUES (?, ?)", [[1, PDO::PARAM_INT], ['dup', PDO::PARAM_STR]]));
step('syntax_error', fn() => $q("SELEC id FROM $t"));
step('rollback', function () use ($pdo, $t, $x, $q) {
    $pdo->beginTransaction();
    $upd = $x("UPDATE $t SET name = ? WHERE id = ?", [['rolled back', PDO::PARAM_STR], [3, PDO::PARAM_INT]]);
    $pdo->rollBack();
    return ['update' => $upd, 'after' => $q("SELECT name FROM $t WHERE id = 3")];
});
// DDL with autocommit off (PyMySQL's default; SQLAlchemy's create_all()).
step('ddl_autocommit_off', function () use ($pdo, $t, $w) {
    $pdo->exec('SET autocommit = 0');
    try {
        return $w("ALTER TABLE $t ADD COLUMN note INT");
    } finally {
        $pdo->exec('SET autocommit = 1');
    }
});
step('final_text', fn() => $q("SELECT $cols FROM $t ORDER BY id"));
step('final_prepared', fn() => $x("SELECT $cols FROM $t ORDER BY id", []));

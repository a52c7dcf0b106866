// The client matrix's scenario (tests/client_matrix.rs) run with Go's database/sql and
// go-sql-driver/mysql, statements with arguments as server-side prepares
// (interpolateParams=false). Connection from the SG_* environment variables; prints one
// canonical JSON line per step.
package main

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
)

const cols = "id, name, qty, price, ratio, created, data, doc"

type out map[string]interface{}

var ctx = context.Background()

// canon is a value as the driver decoded it, with its Go type.
func canon(v interface{}) interface{} {
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		if utf8.Valid(x) {
			return []interface{}{"[]byte", string(x)}
		}
		return []interface{}{"[]byte", "hex:" + hex.EncodeToString(x)}
	case time.Time:
		return []interface{}{"time.Time", x.UTC().Format(time.RFC3339Nano)}
	default:
		return []interface{}{fmt.Sprintf("%T", x), x}
	}
}

func rowsOut(rows *sql.Rows) (out, error) {
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	columns := [][]interface{}{}
	for _, t := range types {
		nullable, _ := t.Nullable()
		columns = append(columns, []interface{}{t.Name(), t.DatabaseTypeName(), nullable})
	}
	all := [][]interface{}{}
	for rows.Next() {
		vals := make([]interface{}, len(types))
		ptrs := make([]interface{}, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := []interface{}{}
		for i, v := range vals {
			row = append(row, []interface{}{types[i].Name(), canon(v)})
		}
		all = append(all, row)
	}
	return out{"columns": columns, "rows": all}, rows.Err()
}

func resultOut(r sql.Result) (out, error) {
	affected, err := r.RowsAffected()
	if err != nil {
		return nil, err
	}
	id, err := r.LastInsertId()
	if err != nil {
		return nil, err
	}
	return out{"ok": out{"rowsAffected": affected, "lastInsertId": id}}, nil
}

func step(name string, f func() (out, error)) {
	o, err := f()
	if err != nil {
		var me *mysql.MySQLError
		if errors.As(err, &me) {
			o = out{"error": out{"number": me.Number, "message": me.Message}}
		} else {
			o = out{"error": out{"other": err.Error()}}
		}
	}
	o["step"] = name
	line, err := json.Marshal(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(line))
}

func main() {
	t := os.Getenv("SG_TABLE")
	dsn := fmt.Sprintf("%s:%s@tcp(%s:%s)/%s?parseTime=true&interpolateParams=false",
		os.Getenv("SG_USER"), os.Getenv("SG_PASSWORD"), os.Getenv("SG_HOST"), os.Getenv("SG_PORT"), os.Getenv("SG_DB"))
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// One session for the whole scenario: ROW_COUNT() and LAST_INSERT_ID() are per session.
	conn, err := db.Conn(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	q := func(query string, args ...interface{}) func() (out, error) {
		return func() (out, error) {
			rows, err := conn.QueryContext(ctx, query, args...)
			if err != nil {
				return nil, err
			}
			return rowsOut(rows)
		}
	}
	w := func(query string, args ...interface{}) func() (out, error) {
		return func() (out, error) {
			r, err := conn.ExecContext(ctx, query, args...)
			if err != nil {
				return nil, err
			}
			return resultOut(r)
		}
	}

	step("create", func() (out, error) {
		if _, err := conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return nil, err
		}
		return w("CREATE TABLE " + t + " (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), qty INT, " +
			"price DECIMAL(10,2), ratio DOUBLE, created DATETIME, data BLOB, doc JSON) AUTO_INCREMENT=1000")()
	})
	step("insert_multi", w("INSERT INTO "+t+" ("+cols+") VALUES "+
		"(1, 'alpha', 10, 12.50, 0.25, '2026-01-02 03:04:05', X'00FF', '{\"a\": 1}'), "+
		"(2, 'bravo', 20, 99999.99, -1.5, '1999-12-31 23:59:59', NULL, '[1, 2]'), "+
		"(3, 'charlie', 30, 0.01, 1e300, NULL, X'', NULL), "+
		"(600, 'six hundred', 600, 6.00, 600, '2026-06-06 06:06:06', X'0600', '{\"k\": \"v\"}')"))
	step("insert_sequence", w("INSERT INTO "+t+" (name, qty) VALUES ('seq', 5)"))
	step("last_insert_id", q("SELECT LAST_INSERT_ID()"))
	// Raw non-UTF-8 bytes inside the statement text, in a row whose key the proxy fills in.
	raw := append(append([]byte("A"), allBytes[0x80:]...), 'B')
	step("insert_raw_bytes", w("INSERT INTO "+t+" (name, data) VALUES ('raw', _binary'"+string(raw)+"')"))
	step("select_raw_bytes", q("SELECT HEX(data), data FROM "+t+" WHERE name = 'raw'"))
	step("insert_prepared", w("INSERT INTO "+t+" (id, name, qty, ratio, data) VALUES (?, ?, ?, ?, ?)",
		int64(7), "prep", nil, 2.5, allBytes))
	step("select_prepared_int", q("SELECT "+cols+" FROM "+t+" WHERE id = ?", int64(600)))
	step("select_prepared_double", q("SELECT "+cols+" FROM "+t+" WHERE id = ?", float64(600)))
	step("select_prepared_string", q("SELECT "+cols+" FROM "+t+" WHERE id = ?", "7"))
	step("select_text", q("SELECT "+cols+" FROM "+t+" WHERE id = 1"))
	step("update_scatter", w("UPDATE "+t+" SET qty = qty + 1 WHERE qty IS NOT NULL"))
	step("update_one", w("UPDATE "+t+" SET name = ? WHERE id = ?", "bravo2", int64(2)))
	step("row_count", q("SELECT ROW_COUNT()"))
	step("insert_with_warning", w("INSERT INTO "+t+" (id, name, price) VALUES (9, 'warn', 1.005)"))
	step("show_warnings", q("SHOW WARNINGS"))
	step("warning_count", q("SELECT @@warning_count"))
	step("duplicate_key", w("INSERT INTO "+t+" (id, name) VALUES (1, 'dup')"))
	step("duplicate_key_prepared", w("INSERT INTO "+t+" (id, name) VALUES (?, ?)", int64(1), "dup"))
	step("syntax_error", q("SELEC id FROM "+t))
	step("rollback", func() (out, error) {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		r, err := tx.ExecContext(ctx, "UPDATE "+t+" SET name = ? WHERE id = ?", "rolled back", int64(3))
		if err != nil {
			_ = tx.Rollback()
			return nil, err
		}
		upd, err := resultOut(r)
		if err != nil {
			return nil, err
		}
		if err := tx.Rollback(); err != nil {
			return nil, err
		}
		after, err := q("SELECT name FROM " + t + " WHERE id = 3")()
		if err != nil {
			return nil, err
		}
		return out{"update": upd, "after": after}, nil
	})
	// DDL with autocommit off (PyMySQL's default; SQLAlchemy's create_all()).
	step("ddl_autocommit_off", func() (out, error) {
		if _, err := conn.ExecContext(ctx, "SET autocommit = 0"); err != nil {
			return nil, err
		}
		o, err := w("ALTER TABLE " + t + " ADD COLUMN note INT")()
		if _, err2 := conn.ExecContext(ctx, "SET autocommit = 1"); err == nil && err2 != nil {
			return nil, err2
		}
		return o, err
	})
	step("final_text", q("SELECT "+cols+" FROM "+t+" ORDER BY id"))
	step("final_prepared", func() (out, error) {
		st, err := conn.PrepareContext(ctx, "SELECT "+cols+" FROM "+t+" ORDER BY id")
		if err != nil {
			return nil, err
		}
		defer st.Close()
		rows, err := st.QueryContext(ctx)
		if err != nil {
			return nil, err
		}
		return rowsOut(rows)
	})
	_ = conn.Close()
	_ = db.Close()
}

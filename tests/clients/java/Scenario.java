// The client matrix's scenario (tests/client_matrix.rs) run with MariaDB Connector/J:
// server-side prepared statements (useServerPrepStmts) and bulk batches (useBulkStmts).
// Connection from the SG_* environment variables; prints one canonical JSON line per step.
// Run as a single-file program: java -cp mariadb-java-client.jar Scenario.java

import java.math.BigDecimal;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public class Scenario {
    static final String COLS = "id, name, qty, price, ratio, created, data, doc";

    interface Step {
        Object run() throws SQLException;
    }

    // --- a minimal JSON writer (the JDK has none) ---
    static String json(Object v) {
        StringBuilder b = new StringBuilder();
        write(b, v);
        return b.toString();
    }

    static void write(StringBuilder b, Object v) {
        if (v == null) {
            b.append("null");
        } else if (v instanceof Map) {
            b.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) b.append(',');
                first = false;
                write(b, e.getKey().toString());
                b.append(':');
                write(b, e.getValue());
            }
            b.append('}');
        } else if (v instanceof List) {
            b.append('[');
            boolean first = true;
            for (Object o : (List<?>) v) {
                if (!first) b.append(',');
                first = false;
                write(b, o);
            }
            b.append(']');
        } else if (v instanceof Number || v instanceof Boolean) {
            b.append(v);
        } else {
            String s = v.toString();
            b.append('"');
            for (char c : s.toCharArray()) {
                if (c == '"' || c == '\\') b.append('\\').append(c);
                else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
                else b.append(c);
            }
            b.append('"');
        }
    }

    static String hex(byte[] bytes) {
        StringBuilder b = new StringBuilder();
        for (byte x : bytes) b.append(String.format("%02x", x & 0xff));
        return b.toString();
    }

    // A value as the driver decoded it (getObject), with its Java class.
    static Object canon(Object v) {
        if (v == null) return null;
        String s;
        if (v instanceof byte[]) s = "hex:" + hex((byte[]) v);
        else if (v instanceof BigDecimal) s = ((BigDecimal) v).toPlainString();
        else s = v.toString();
        return List.of(v.getClass().getName(), s);
    }

    static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    static Map<String, Object> rows(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<Object> columns = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            columns.add(List.of(md.getColumnLabel(i), md.getColumnTypeName(i), md.getColumnType(i),
                    md.getPrecision(i), md.getScale(i), md.isNullable(i), md.getColumnClassName(i)));
        }
        List<Object> rows = new ArrayList<>();
        while (rs.next()) {
            List<Object> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                List<Object> cell = new ArrayList<>();
                cell.add(md.getColumnLabel(i));
                cell.add(canon(rs.getObject(i)));
                row.add(cell);
            }
            rows.add(row);
        }
        rs.close();
        return map("columns", columns, "rows", rows);
    }

    static List<Object> warnings(Statement st) throws SQLException {
        List<Object> out = new ArrayList<>();
        for (SQLWarning w = st.getWarnings(); w != null; w = w.getNextWarning()) {
            out.add(List.of(w.getErrorCode(), String.valueOf(w.getSQLState()), w.getMessage()));
        }
        return out;
    }

    static Map<String, Object> update(Statement st, int count) throws SQLException {
        List<Object> keys = new ArrayList<>();
        try (ResultSet rs = st.getGeneratedKeys()) {
            while (rs.next()) keys.add(rs.getLong(1));
        }
        return map("ok", map("updateCount", count, "generatedKeys", keys, "warnings", warnings(st)));
    }

    static Map<String, Object> error(SQLException e) {
        // The driver prefixes messages with the server's connection id, which differs per run.
        String msg = String.valueOf(e.getMessage()).replaceFirst("^\\(conn=\\d+\\) ", "");
        return map("errorCode", e.getErrorCode(), "sqlState", e.getSQLState(), "message", msg);
    }

    @SuppressWarnings("unchecked")
    static void step(String name, Step f) {
        Map<String, Object> out = map("step", name);
        try {
            Object r = f.run();
            if (r instanceof Map) out.putAll((Map<String, Object>) r);
        } catch (BatchUpdateException e) {
            List<Object> counts = new ArrayList<>();
            for (int c : e.getUpdateCounts()) counts.add(c);
            out.put("error", error(e));
            out.put("updateCounts", counts);
        } catch (SQLException e) {
            out.put("error", error(e));
        }
        System.out.println(json(out));
    }

    public static void main(String[] args) throws Exception {
        String t = System.getenv("SG_TABLE");
        String url = String.format(
                "jdbc:mariadb://%s:%s/%s?user=%s&password=%s&useServerPrepStmts=true&useBulkStmts=true",
                System.getenv("SG_HOST"), System.getenv("SG_PORT"), System.getenv("SG_DB"),
                System.getenv("SG_USER"), System.getenv("SG_PASSWORD"));
        Connection c = DriverManager.getConnection(url);
        byte[] allBytes = new byte[256];
        for (int i = 0; i < 256; i++) allBytes[i] = (byte) i;

        step("create", () -> {
            try (Statement st = c.createStatement()) {
                st.execute("DROP TABLE IF EXISTS " + t);
            }
            return text(c, "CREATE TABLE " + t
                    + " (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), qty INT, "
                    + "price DECIMAL(10,2), ratio DOUBLE, created DATETIME, data BLOB, doc JSON) AUTO_INCREMENT=1000");
        });
        step("insert_multi", () -> text(c, "INSERT INTO " + t + " (" + COLS + ") VALUES "
                + "(1, 'alpha', 10, 12.50, 0.25, '2026-01-02 03:04:05', X'00FF', '{\"a\": 1}'), "
                + "(2, 'bravo', 20, 99999.99, -1.5, '1999-12-31 23:59:59', NULL, '[1, 2]'), "
                + "(3, 'charlie', 30, 0.01, 1e300, NULL, X'', NULL), "
                + "(600, 'six hundred', 600, 6.00, 600, '2026-06-06 06:06:06', X'0600', '{\"k\": \"v\"}')"));
        step("insert_sequence", () -> text(c, "INSERT INTO " + t + " (name, qty) VALUES ('seq', 5)"));
        step("last_insert_id", () -> text(c, "SELECT LAST_INSERT_ID()"));
        step("insert_prepared", () -> {
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO " + t + " (id, name, qty, ratio, data) VALUES (?, ?, ?, ?, ?)",
                    Statement.RETURN_GENERATED_KEYS)) {
                ps.setLong(1, 7);
                ps.setString(2, "prep");
                ps.setNull(3, java.sql.Types.INTEGER);
                ps.setDouble(4, 2.5);
                ps.setBytes(5, allBytes);
                return update(ps, ps.executeUpdate());
            }
        });
        step("select_prepared_int", () -> prepared(c, "SELECT " + COLS + " FROM " + t + " WHERE id = ?", 600L));
        step("select_prepared_double", () -> prepared(c, "SELECT " + COLS + " FROM " + t + " WHERE id = ?", 600.0));
        step("select_prepared_string", () -> prepared(c, "SELECT " + COLS + " FROM " + t + " WHERE id = ?", "7"));
        step("select_text", () -> text(c, "SELECT " + COLS + " FROM " + t + " WHERE id = 1"));
        step("update_scatter", () -> text(c, "UPDATE " + t + " SET qty = qty + 1 WHERE qty IS NOT NULL"));
        step("update_one", () -> prepared(c, "UPDATE " + t + " SET name = 'bravo2' WHERE id = ?", 2L));
        step("row_count", () -> text(c, "SELECT ROW_COUNT()"));
        step("insert_with_warning", () -> text(c, "INSERT INTO " + t + " (id, name, price) VALUES (9, 'warn', 1.005)"));
        step("show_warnings", () -> text(c, "SHOW WARNINGS"));
        step("warning_count", () -> text(c, "SELECT @@warning_count"));
        step("duplicate_key", () -> text(c, "INSERT INTO " + t + " (id, name) VALUES (1, 'dup')"));
        step("duplicate_key_prepared", () -> prepared(c, "INSERT INTO " + t + " (id, name) VALUES (?, 'dup')", 1L));
        step("syntax_error", () -> text(c, "SELEC id FROM " + t));
        step("batch", () -> {
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t + " (id, name) VALUES (?, ?)")) {
                for (long id = 11; id <= 13; id++) {
                    ps.setLong(1, id);
                    ps.setString(2, "batch" + id);
                    ps.addBatch();
                }
                List<Object> counts = new ArrayList<>();
                for (int n : ps.executeBatch()) counts.add(n);
                return map("batch", counts);
            }
        });
        step("rollback", () -> {
            c.setAutoCommit(false);
            Map<String, Object> upd;
            try {
                upd = prepared(c, "UPDATE " + t + " SET name = 'rolled back' WHERE id = ?", 3L);
            } finally {
                c.rollback();
                c.setAutoCommit(true);
            }
            return map("update", upd, "after", text(c, "SELECT name FROM " + t + " WHERE id = 3"));
        });
        // DDL with autocommit off (PyMySQL's default; SQLAlchemy's create_all()).
        step("ddl_autocommit_off", () -> {
            c.setAutoCommit(false);
            try {
                return text(c, "ALTER TABLE " + t + " ADD COLUMN note INT");
            } finally {
                c.setAutoCommit(true);
            }
        });
        step("final_text", () -> text(c, "SELECT " + COLS + " FROM " + t + " ORDER BY id"));
        step("final_prepared", () -> prepared(c, "SELECT " + COLS + " FROM " + t + " ORDER BY id"));
        c.close();
    }

    static Map<String, Object> text(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            if (st.execute(sql, Statement.RETURN_GENERATED_KEYS)) {
                Map<String, Object> r = rows(st.getResultSet());
                r.put("warnings", warnings(st));
                return r;
            }
            return update(st, st.getUpdateCount());
        }
    }

    static Map<String, Object> prepared(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql, Statement.RETURN_GENERATED_KEYS)) {
            for (int i = 0; i < params.length; i++) {
                Object p = params[i];
                if (p instanceof Long) ps.setLong(i + 1, (Long) p);
                else if (p instanceof Double) ps.setDouble(i + 1, (Double) p);
                else ps.setString(i + 1, (String) p);
            }
            if (ps.execute()) return rows(ps.getResultSet());
            return update(ps, ps.getUpdateCount());
        }
    }
}

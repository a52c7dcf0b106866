//! A table's columns and primary key, read from `SHOW CREATE TABLE` rather than
//! information_schema: every `information_schema.COLUMNS` query makes MariaDB build an on-disk
//! Aria temporary table (its definition has TEXT columns), the path where 10.11.19 crashes
//! under load (signal 11 in create_tmp_table_for_schema; seen in CI, a source primary died
//! mid-reshard). `SHOW CREATE TABLE` makes none. MariaDB prints the statement in one fixed
//! layout: a line per column (`  `name` type ...`), then a line per key.

use mysql_async::prelude::Queryable;

/// One column, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    /// The type's name in lower case, without its length: `bigint`, `varchar`, `decimal`.
    pub data_type: String,
    pub unsigned: bool,
    /// `GENERATED ALWAYS AS (...)`: computed by the server, never written.
    pub generated: bool,
}

/// The columns and the primary key's column names of a `SHOW CREATE TABLE` text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDef {
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
}

/// `schema.table`'s definition on `conn`; `None` when there is no such table (or the user may
/// not see it).
pub async fn read(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<Option<TableDef>, mysql_async::Error> {
    let sql = statement(schema, table);
    // As a Row: a typed read panics on text that is not UTF-8, which the statement holds
    // when a column's DEFAULT is binary (`DEFAULT X'00FF80'` is printed as its raw bytes).
    match conn.query_first::<mysql_async::Row, _>(sql).await {
        Ok(row) => Ok(row
            .and_then(|r| r.get_opt::<Vec<u8>, _>(1).and_then(Result::ok))
            .map(|create| parse(&String::from_utf8_lossy(&create)))),
        // ER_NO_SUCH_TABLE, ER_TABLEACCESS_DENIED_ERROR, ER_BAD_DB_ERROR
        Err(mysql_async::Error::Server(e)) if matches!(e.code, 1146 | 1142 | 1049) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `name` quoted as a MariaDB identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The `SHOW CREATE TABLE` statement of `schema.table` (its second column is the definition).
pub fn statement(schema: &str, table: &str) -> String {
    format!("SHOW CREATE TABLE {}.{}", ident(schema), ident(table))
}

/// Reads MariaDB's `SHOW CREATE TABLE` layout.
pub fn parse(create: &str) -> TableDef {
    let mut def = TableDef::default();
    for line in create.lines() {
        if let Some(rest) = line.strip_prefix("  `") {
            let Some((name, after)) = backquoted(rest) else {
                continue;
            };
            let after = after.trim_start();
            let ty_end = after.find([' ', ',']).unwrap_or(after.len());
            let ty = &after[..ty_end];
            let data_type = ty.split('(').next().unwrap_or(ty).to_ascii_lowercase();
            let unsigned = after[ty_end..].trim_start().starts_with("unsigned");
            let generated = outside_quotes(after, " GENERATED ALWAYS AS (");
            def.columns.push(ColumnDef {
                name,
                data_type,
                unsigned,
                generated,
            });
        } else if let Some(rest) = line.strip_prefix("  PRIMARY KEY (") {
            let mut rest = rest;
            while let Some(r) = rest.strip_prefix('`') {
                let Some((name, after)) = backquoted(r) else {
                    break;
                };
                def.primary_key.push(name);
                // A prefix length (`(10)`) may follow a name; then `,` or `)`.
                rest = after.trim_start_matches(|c: char| c.is_ascii_digit() || c == '(');
                rest = rest.trim_start_matches(')').trim_start_matches(',');
            }
        }
    }
    def
}

/// The name at the start of `s` (just after its opening backquote, ``` `` ``` for a
/// backquote), and the text after its closing one.
fn backquoted(s: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().map(|(_, n)| *n) == Some('`') {
                chars.next();
                name.push('`');
            } else {
                return Some((name, &s[i + 1..]));
            }
        } else {
            name.push(c);
        }
    }
    None
}

/// Whether `needle` occurs in `s` outside '...' string literals (a DEFAULT or COMMENT may
/// hold any text).
fn outside_quotes(s: &str, needle: &str) -> bool {
    let b = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'\'' if quoted && b.get(i + 1) == Some(&b'\'') => i += 1,
            b'\'' => quoted = !quoted,
            _ if !quoted && s[i..].starts_with(needle) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_types_and_the_primary_key_are_read_from_mariadbs_layout() {
        let create = "CREATE TABLE `it``ems` (\n  `id` bigint(20) unsigned NOT NULL,\n  `n` int(11) DEFAULT NULL COMMENT 'GENERATED ALWAYS AS (x) unsigned',\n  `g` int(11) GENERATED ALWAYS AS (`n` + 1) VIRTUAL,\n  `we``ird` enum('a b','c') DEFAULT 'a b',\n  `d` decimal(10,2) NOT NULL,\n  `s` varchar(10) DEFAULT 'x'',y',\n  PRIMARY KEY (`id`,`we``ird`),\n  KEY `k` (`n`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
        let def = parse(create);
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "n", "g", "we`ird", "d", "s"]);
        let types: Vec<&str> = def.columns.iter().map(|c| c.data_type.as_str()).collect();
        assert_eq!(
            types,
            ["bigint", "int", "int", "enum", "decimal", "varchar"]
        );
        let unsigned: Vec<bool> = def.columns.iter().map(|c| c.unsigned).collect();
        assert_eq!(unsigned, [true, false, false, false, false, false]);
        let generated: Vec<bool> = def.columns.iter().map(|c| c.generated).collect();
        assert_eq!(generated, [false, false, true, false, false, false]);
        assert_eq!(def.primary_key, ["id", "we`ird"]);
        let prefix = parse(
            "CREATE TABLE `t` (\n  `a` text NOT NULL,\n  PRIMARY KEY (`a`(10)) USING BTREE\n)",
        );
        assert_eq!(prefix.primary_key, ["a"]);
        assert_eq!(
            parse("CREATE TABLE `t` (\n  `a` int(11)\n)").primary_key,
            Vec::<String>::new()
        );
    }
}

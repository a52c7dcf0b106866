//! Column names and signedness of a table. The table map event carries them when the server
//! runs with `binlog_row_metadata=FULL` (and then describes the table as it was when the row
//! was written); with MariaDB's default (NO_LOG) they are read from the server.

use std::io;

use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::consts::ColumnType;
use mysql_async::Value;

use super::error::BinlogError;

/// One column of a table, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// The binlog type (from the table map event): DATETIME2, NEWDECIMAL, BLOB, ...
    pub column_type: ColumnType,
    pub unsigned: bool,
}

/// A table as the stream describes its rows: every row value is at its column's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnInfo>,
}

impl TableInfo {
    /// Index of the column named `name` (case-insensitive, as MariaDB compares column names).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// Column names and whether each is UNSIGNED, in table order (from `SHOW CREATE TABLE`: see
/// `table_def`). Empty if the table does not exist (or the user may not see it).
pub async fn table_columns(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, bool)>, mysql_async::Error> {
    let def = crate::table_def::read(conn, schema, table).await?;
    Ok(def
        .map(|d| {
            d.columns
                .into_iter()
                .map(|c| (c.name, c.unsigned))
                .collect()
        })
        .unwrap_or_default())
}

/// Joins the table's columns with the table map's types; a different column count
/// means the table changed since the event was written (DDL during catch-up), which the
/// stream cannot map by position.
pub(super) fn table_info(
    server: &str,
    schema: &str,
    table: &str,
    named: Vec<(String, bool)>,
    types: Vec<ColumnType>,
) -> Result<TableInfo, BinlogError> {
    if named.is_empty() {
        return Err(BinlogError::Schema {
            server: server.to_string(),
            schema: schema.to_string(),
            table: table.to_string(),
            detail: "the server shows no such table: it was dropped since, or the stream's user may not see it (grant it SELECT on the table, or run the server with binlog_row_metadata=FULL so row events carry column names)".into(),
        });
    }
    if named.len() != types.len() {
        return Err(BinlogError::Schema {
            server: server.to_string(),
            schema: schema.to_string(),
            table: table.to_string(),
            detail: format!(
                "row events have {} columns, the table has {}: the table was altered (no DDL on moving tables during a reshard)",
                types.len(),
                named.len()
            ),
        });
    }
    let columns = named
        .into_iter()
        .zip(types)
        .map(|((name, unsigned), column_type)| ColumnInfo {
            name,
            column_type,
            unsigned,
        })
        .collect();
    Ok(TableInfo {
        schema: schema.to_string(),
        table: table.to_string(),
        columns,
    })
}

/// Names and signedness from the table map's optional metadata; None when it has no names
/// (`binlog_row_metadata` other than FULL).
pub(super) fn from_table_map(
    tme: &TableMapEvent<'_>,
    types: &[ColumnType],
) -> io::Result<Option<TableInfo>> {
    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
    let names = meta
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<io::Result<Vec<String>>>()?;
    if names.len() != types.len() {
        return Ok(None);
    }
    // One signedness bit per numeric column, in column order.
    let mut signs = meta.iter_signedness();
    let columns = names
        .into_iter()
        .zip(types)
        .map(|(name, &column_type)| ColumnInfo {
            name,
            column_type,
            unsigned: column_type.is_numeric_type() && signs.next().unwrap_or(false),
        })
        .collect();
    Ok(Some(TableInfo {
        schema: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
        columns,
    }))
}

/// Without signedness in the table map, mysql_common decodes every integer as signed (an
/// UNSIGNED TINYINT 255 arrives as -1): reinterpret it at the column's width.
pub(super) fn fix_unsigned(value: Value, column: &ColumnInfo) -> Value {
    let Value::Int(v) = value else {
        return value;
    };
    if !column.unsigned {
        return value;
    }
    let u = match column.column_type {
        ColumnType::MYSQL_TYPE_TINY => u64::from(v as u8),
        ColumnType::MYSQL_TYPE_SHORT => u64::from(v as u16),
        ColumnType::MYSQL_TYPE_INT24 => (v as u64) & 0x00ff_ffff,
        ColumnType::MYSQL_TYPE_LONG => u64::from(v as u32),
        ColumnType::MYSQL_TYPE_LONGLONG => v as u64,
        _ => return Value::Int(v),
    };
    Value::UInt(u)
}

/// A SET arrives as its little-endian member bitmask, which as a string parameter would be
/// read as member names: turned into the number, which MariaDB reads as the bitmask.
pub(super) fn fix_set(value: Value, column: &ColumnInfo) -> Value {
    match value {
        Value::Bytes(b) if column.column_type == ColumnType::MYSQL_TYPE_SET && b.len() <= 8 => {
            let mut le = [0u8; 8];
            le[..b.len()].copy_from_slice(&b);
            Value::UInt(u64::from_le_bytes(le))
        }
        other => other,
    }
}

/// mysql_common gives a TIMESTAMP as Unix seconds (`Bytes("1709214307")`,
/// `Bytes("1709214307.250000")`; the pre-5.6 type as `Int`): turned into its UTC date and time,
/// which a session with `time_zone = '+00:00'` writes back as the same instant. Zero stays the
/// zero date.
pub(super) fn fix_timestamp(value: Value, column: &ColumnInfo) -> Value {
    if !matches!(
        column.column_type,
        ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2
    ) {
        return value;
    }
    utc_date(&value).unwrap_or(value)
}

fn utc_date(value: &Value) -> Option<Value> {
    let (secs, micros) = match value {
        Value::Int(s) => (u64::try_from(*s).ok()?, 0),
        Value::Bytes(b) => {
            let text = std::str::from_utf8(b).ok()?;
            let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
            (secs.parse().ok()?, frac.parse().ok()?)
        }
        _ => return None,
    };
    if secs == 0 && micros == 0 {
        return Some(Value::Date(0, 0, 0, 0, 0, 0, 0));
    }
    // `YYYY-MM-DDTHH:MM:SS.mmmZ`: the project's one civil-date conversion.
    let t = crate::ha::events::rfc3339(secs.checked_mul(1000)?);
    let field = |r: std::ops::Range<usize>| t.get(r)?.parse::<u16>().ok();
    Some(Value::Date(
        field(0..4)?,
        u8::try_from(field(5..7)?).ok()?,
        u8::try_from(field(8..10)?).ok()?,
        u8::try_from(field(11..13)?).ok()?,
        u8::try_from(field(14..16)?).ok()?,
        u8::try_from(field(17..19)?).ok()?,
        micros,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(column_type: ColumnType, unsigned: bool) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            column_type,
            unsigned,
        }
    }

    #[test]
    fn unsigned_integers_are_reinterpreted_at_their_width() {
        use ColumnType::*;
        let cases = [
            (MYSQL_TYPE_TINY, -1, 255u64),
            (MYSQL_TYPE_SHORT, -1, 65_535),
            (MYSQL_TYPE_INT24, -1, 16_777_215),
            (MYSQL_TYPE_LONG, -1, 4_294_967_295),
            (MYSQL_TYPE_LONGLONG, -1, u64::MAX),
            (MYSQL_TYPE_LONG, 7, 7),
        ];
        for (ty, raw, want) in cases {
            assert_eq!(
                fix_unsigned(Value::Int(raw), &col(ty, true)),
                Value::UInt(want),
                "{ty:?}"
            );
        }
        assert_eq!(
            fix_unsigned(Value::Int(-1), &col(MYSQL_TYPE_LONG, false)),
            Value::Int(-1)
        );
        // Already decoded as unsigned (table map with signedness): untouched.
        assert_eq!(
            fix_unsigned(Value::UInt(5), &col(MYSQL_TYPE_LONG, true)),
            Value::UInt(5)
        );
    }

    #[test]
    fn sets_become_their_bitmask() {
        let set = col(ColumnType::MYSQL_TYPE_SET, false);
        assert_eq!(fix_set(Value::Bytes(vec![5]), &set), Value::UInt(5));
        assert_eq!(fix_set(Value::Bytes(vec![0, 1]), &set), Value::UInt(256));
        assert_eq!(
            fix_set(
                Value::Bytes(vec![5]),
                &col(ColumnType::MYSQL_TYPE_BLOB, false)
            ),
            Value::Bytes(vec![5])
        );
    }

    #[test]
    fn timestamps_become_utc_dates() {
        use ColumnType::*;
        let ts = col(MYSQL_TYPE_TIMESTAMP2, false);
        assert_eq!(
            fix_timestamp(Value::Bytes(b"1709214307".to_vec()), &ts),
            Value::Date(2024, 2, 29, 13, 45, 7, 0)
        );
        assert_eq!(
            fix_timestamp(Value::Bytes(b"1709214307.250000".to_vec()), &ts),
            Value::Date(2024, 2, 29, 13, 45, 7, 250_000)
        );
        assert_eq!(
            fix_timestamp(Value::Bytes(b"0".to_vec()), &ts),
            Value::Date(0, 0, 0, 0, 0, 0, 0)
        );
        assert_eq!(
            fix_timestamp(Value::Int(86_400), &col(MYSQL_TYPE_TIMESTAMP, false)),
            Value::Date(1970, 1, 2, 0, 0, 0, 0)
        );
        // Other columns' bytes are left alone.
        let text = Value::Bytes(b"1709214307".to_vec());
        assert_eq!(
            fix_timestamp(text.clone(), &col(MYSQL_TYPE_VARCHAR, false)),
            text
        );
    }

    #[test]
    fn column_count_mismatch_is_a_schema_error() {
        let e = table_info(
            "h:1",
            "db",
            "t",
            vec![("a".into(), false)],
            vec![ColumnType::MYSQL_TYPE_LONG, ColumnType::MYSQL_TYPE_BLOB],
        )
        .expect_err("mismatch");
        assert!(e.to_string().contains("2 columns"), "{e}");
        let e = table_info("h:1", "db", "t", vec![], vec![ColumnType::MYSQL_TYPE_LONG])
            .expect_err("invisible");
        assert!(e.to_string().contains("grant it SELECT"), "{e}");
        let t = table_info(
            "h:1",
            "db",
            "t",
            vec![("Id".into(), true)],
            vec![ColumnType::MYSQL_TYPE_LONG],
        )
        .expect("ok");
        assert_eq!(t.index_of("id"), Some(0));
        assert!(t.columns[0].unsigned);
    }
}

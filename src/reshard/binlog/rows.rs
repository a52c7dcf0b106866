//! Turns one row event (many rows of one table) into owned row changes.

use std::sync::Arc;

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::Value;

use super::columns::{fix_set, fix_timestamp, fix_unsigned, TableInfo};
use super::mariadb::TrxGtid;
use super::{Change, ChangeKind};

/// Why a row event could not be turned into changes.
#[derive(Debug)]
pub(super) enum RowsError {
    /// An image lacks columns: the row was logged with a row image other than FULL.
    PartialImage,
    Malformed(String),
    Unsupported(String),
}

/// The changes of `rows` (described by `tme`, named by `table`), in event order.
pub(super) fn changes(
    rows: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    table: &Arc<TableInfo>,
    gtid: TrxGtid,
) -> Result<Vec<Change>, RowsError> {
    let n = rows.num_columns();
    let images = [rows.columns_before_image(), rows.columns_after_image()];
    if images
        .into_iter()
        .flatten()
        .any(|b| b.count_ones() as u64 != n)
    {
        return Err(RowsError::PartialImage);
    }
    let mut out = Vec::new();
    for row in rows.rows(tme) {
        let (before, after) = row.map_err(|e| RowsError::Malformed(e.to_string()))?;
        let before = before.map(|r| values(r, table)).transpose()?;
        let after = after.map(|r| values(r, table)).transpose()?;
        let kind = match (rows, before, after) {
            (RowsEventData::WriteRowsEventV1(_), None, Some(after))
            | (RowsEventData::WriteRowsEvent(_), None, Some(after)) => ChangeKind::Insert { after },
            (RowsEventData::UpdateRowsEventV1(_), Some(before), Some(after))
            | (RowsEventData::UpdateRowsEvent(_), Some(before), Some(after)) => {
                ChangeKind::Update { before, after }
            }
            (RowsEventData::DeleteRowsEventV1(_), Some(before), None)
            | (RowsEventData::DeleteRowsEvent(_), Some(before), None) => {
                ChangeKind::Delete { before }
            }
            _ => return Err(RowsError::Unsupported("this kind of row event".into())),
        };
        out.push(Change {
            gtid,
            table: table.clone(),
            kind,
        });
    }
    Ok(out)
}

fn values(mut row: BinlogRow, table: &TableInfo) -> Result<Vec<Value>, RowsError> {
    let mut out = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let v = row
            .take(i)
            .ok_or_else(|| RowsError::Malformed("row without a value".into()))?;
        // Only MySQL's partial JSON updates fail here; MariaDB's JSON is a text column.
        let v = Value::try_from(v).map_err(|e| RowsError::Unsupported(e.to_string()))?;
        let column = table
            .columns
            .get(i)
            .ok_or_else(|| RowsError::Malformed("row longer than its table".into()))?;
        // Into what a prepared statement writes back as the same value.
        let v = fix_set(fix_timestamp(fix_unsigned(v, column), column), column);
        out.push(v);
    }
    Ok(out)
}

//! A shard's row as owned values (text forms; the binary protocol's decoded) and back to a
//! row packet for the client, for the primitives that reorder or fold rows.

use bytes::BytesMut;

use super::binary_row;
use super::merge::{row_values, ColumnMeta, ValueKind};

/// One row's values; `None` is SQL NULL.
pub type Row = Vec<Option<Vec<u8>>>;

/// A shard's row as values; `None` when it cannot be read with `metas`.
pub fn decode(row: &[u8], metas: &[ColumnMeta], binary: bool) -> Option<Row> {
    if binary {
        return binary_row::decode_row(row, metas);
    }
    let values = row_values(row, metas.len())?;
    Some(values.into_iter().map(|v| v.map(<[u8]>::to_vec)).collect())
}

/// A row for the client, in the protocol its shards answered in; `None` when a value cannot
/// be put in the binary protocol's form.
pub fn encode(values: &[Option<Vec<u8>>], metas: &[ColumnMeta], binary: bool) -> Option<Vec<u8>> {
    if binary {
        return binary_row::encode_row(values, metas);
    }
    let mut out = BytesMut::new();
    for v in values {
        match v {
            None => out.extend_from_slice(&[0xFB]),
            Some(v) => crate::protocol::wire::put_lenenc_bytes(&mut out, v),
        }
    }
    Some(out.to_vec())
}

/// A value as a group key: strings of case-insensitive collations compare as the server
/// groups them (case and trailing spaces aside).
pub fn group_key(v: &[u8], kind: ValueKind) -> Vec<u8> {
    match kind {
        ValueKind::Text => String::from_utf8_lossy(v)
            .trim_end_matches(' ')
            .to_lowercase()
            .into_bytes(),
        _ => v.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_go_through_values_unchanged() {
        let meta =
            ColumnMeta::parse(&crate::executor::shard_rows::memory::column_def("a", 0xFD)).unwrap();
        let metas = vec![meta.clone(), meta];
        let row = crate::executor::shard_rows::memory::text_row(&[Some("x"), None]);
        let values = decode(&row, &metas, false).unwrap();
        assert_eq!(values, vec![Some(b"x".to_vec()), None]);
        assert_eq!(encode(&values, &metas, false).unwrap(), row);
    }

    #[test]
    fn text_group_keys_ignore_case_and_trailing_spaces() {
        assert_eq!(
            group_key(b"Ab  ", ValueKind::Text),
            group_key(b"aB", ValueKind::Text)
        );
        assert_ne!(
            group_key(b"Ab", ValueKind::Bytes),
            group_key(b"aB", ValueKind::Bytes)
        );
    }
}

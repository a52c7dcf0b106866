//! Column definition packets (protocol 4.1), as far as the proxy reads them.

use super::wire::{Reader, Truncated};

/// The fixed-length part that ends a result set's column definition: its length (0x0C) and
/// charset, length, type, flags, decimals and 2 filler bytes.
const FIXED_PART: usize = 13;

/// Skips MariaDB's extended metadata (the type name such as `json`), the field between a
/// column's names and its fixed-length part in definitions sent to clients that negotiated
/// `ext_cap::EXTENDED_METADATA`. Call it after the six names. Told apart by length: without
/// it, only the fixed part follows the names.
pub fn skip_extended_metadata(r: &mut Reader<'_>) -> Result<(), Truncated> {
    if r.remaining().len() > FIXED_PART {
        r.lenenc_bytes()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest_after_names(def: &[u8]) -> Vec<u8> {
        let mut r = Reader::new(def);
        for _ in 0..6 {
            r.lenenc_bytes().expect("name");
        }
        skip_extended_metadata(&mut r).expect("skip");
        r.remaining().to_vec()
    }

    #[test]
    fn extended_metadata_is_skipped_when_present() {
        let names = [3, b'd', b'e', b'f', 0, 0, 0, 1, b'j', 0];
        let fixed = [0x0c, 45, 0, 0xff, 0xff, 0xff, 0xff, 0xfc, 0x90, 0, 0, 0, 0];
        let plain = [&names[..], &fixed].concat();
        assert_eq!(rest_after_names(&plain), fixed);
        // Type name "json": data type 0, lenenc "json".
        let ext = [&names[..], &[6, 0, 4, b'j', b's', b'o', b'n'], &fixed].concat();
        assert_eq!(rest_after_names(&ext), fixed);
        // An extended field as long as the fixed part is still told apart.
        let twelve = [&names[..], &[12], &[0; 12][..], &fixed].concat();
        assert_eq!(rest_after_names(&twelve), fixed);
    }
}

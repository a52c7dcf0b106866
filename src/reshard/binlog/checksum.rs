//! Each event's CRC32 trailer, checked: mysql_common cuts it off without looking at it.

use mysql_async::binlog::events::Event;
use mysql_async::binlog::{BinlogChecksumAlg, EventType};

/// False only when the event carries a CRC32 that does not match its bytes. The format
/// description event is left out: its checksum covers the in-use flag, which the server
/// clears when the file is closed (so it depends on when the event is read).
pub(super) fn matches(event: &Event) -> bool {
    if event.header().event_type_raw() == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
        return true;
    }
    let Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) = event.footer().get_checksum_alg()
    else {
        return true;
    };
    match event.checksum() {
        Some(sum) => {
            u32::from_le_bytes(sum)
                == event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::binlog::events::{BinlogEventFooter, FormatDescriptionEvent};
    use mysql_async::binlog::BinlogVersion;

    /// An XID event (type 16: 19-byte header, 8-byte xid) followed by `crc`.
    fn xid_event(xid: u64, crc: u32) -> Vec<u8> {
        let mut b = vec![0u8; 19];
        b[4] = 16;
        b[5..9].copy_from_slice(&7u32.to_le_bytes());
        b[9..13].copy_from_slice(&(19u32 + 8 + 4).to_le_bytes());
        b.extend_from_slice(&xid.to_le_bytes());
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn read(bytes: &[u8]) -> Event {
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
            BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32),
        );
        Event::read(&fde, bytes).expect("event")
    }

    #[test]
    fn a_flipped_bit_is_caught() {
        let crc =
            read(&xid_event(42, 0)).calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
        let good = xid_event(42, crc);
        assert!(matches(&read(&good)));
        let mut bad = good.clone();
        bad[20] ^= 0x10;
        assert!(!matches(&read(&bad)));
        assert!(!matches(&read(&xid_event(42, crc ^ 1))));
    }
}

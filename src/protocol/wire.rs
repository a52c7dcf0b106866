//! Reading and writing the protocol's primitive types (length-encoded integers and strings).

use bytes::{BufMut, BytesMut};

/// Cursor over a packet payload; every read is bounds-checked because clients control payloads.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A payload ended before a field it must contain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("packet truncated at byte {0}")]
pub struct Truncated(pub usize);

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).ok_or(Truncated(self.pos))?;
        let s = self.buf.get(self.pos..end).ok_or(Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Truncated> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Truncated> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-encoded integer; `None` for the NULL marker 0xFB.
    pub fn lenenc(&mut self) -> Result<Option<u64>, Truncated> {
        let first = self.u8()?;
        let n = match first {
            0xFB => return Ok(None),
            0xFC => 2,
            0xFD => 3,
            0xFE => 8,
            v => return Ok(Some(v as u64)),
        };
        let b = self.take(n)?;
        let mut v = 0u64;
        for (i, byte) in b.iter().enumerate() {
            v |= (*byte as u64) << (8 * i);
        }
        Ok(Some(v))
    }

    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], Truncated> {
        let n = self.lenenc()?.unwrap_or(0);
        self.take(usize::try_from(n).map_err(|_| Truncated(self.pos))?)
    }

    /// Bytes up to a NUL terminator, which is consumed; to the end if there is none.
    pub fn nul_str(&mut self) -> &'a [u8] {
        let rest = self.remaining();
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                self.pos += i + 1;
                &rest[..i]
            }
            None => {
                self.pos = self.buf.len();
                rest
            }
        }
    }
}

pub fn put_lenenc(out: &mut BytesMut, v: u64) {
    if v < 251 {
        out.put_u8(v as u8);
    } else if v < 1 << 16 {
        out.put_u8(0xFC);
        out.put_u16_le(v as u16);
    } else if v < 1 << 24 {
        out.put_u8(0xFD);
        out.put_uint_le(v, 3);
    } else {
        out.put_u8(0xFE);
        out.put_u64_le(v);
    }
}

pub fn put_lenenc_bytes(out: &mut BytesMut, b: &[u8]) {
    put_lenenc(out, b.len() as u64);
    out.put_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_every_width() {
        for v in [
            0u64,
            250,
            251,
            65535,
            65536,
            (1 << 24) - 1,
            1 << 24,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_lenenc(&mut b, v);
            assert_eq!(Reader::new(&b).lenenc(), Ok(Some(v)));
        }
        assert_eq!(Reader::new(&[0xFB]).lenenc(), Ok(None));
    }

    #[test]
    fn truncated_reads_fail_instead_of_panicking() {
        assert!(Reader::new(&[0xFE, 1, 2]).lenenc().is_err());
        assert!(Reader::new(&[5, b'a']).lenenc_bytes().is_err());
        assert!(Reader::new(&[1]).u32().is_err());
        let mut r = Reader::new(b"abc");
        assert_eq!(r.nul_str(), b"abc");
        assert!(r.is_empty());
    }
}

//! The value codec every typed record shares (spool records, accounts).
//!
//! A value opens with a format version byte, then its fields in order.
//! Integers are LEB128 varints; strings, byte strings and lists carry a varint
//! length first. [`Reader`] checks every length against the bytes left and
//! never panics: bad input becomes [`StoreError::Corrupt`] for the record's
//! family.

use crate::{Family, StoreError};

/// Version byte that opens every encoded value; bump it when a layout changes.
pub(crate) const FORMAT_V1: u8 = 1;

/// Append `value` as an LEB128 varint: 7 bits per byte, high bit = more follow.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Append a string: varint length, then its UTF-8 bytes.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Append a byte string: varint length, then the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Append a list of strings: varint count, then each string.
pub(crate) fn put_strs(out: &mut Vec<u8>, list: &[String]) {
    put_varint(out, list.len() as u64);
    for s in list {
        put_str(out, s);
    }
}

/// Reads one encoded value, front to back, turning every problem into
/// [`StoreError::Corrupt`] for its family.
pub(crate) struct Reader<'a> {
    family: Family,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(family: Family, value: &'a [u8]) -> Self {
        Reader {
            family,
            rest: value,
        }
    }

    pub(crate) fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            family: self.family.name(),
            detail: detail.into(),
        }
    }

    pub(crate) fn version(&mut self) -> Result<(), StoreError> {
        match self.byte()? {
            FORMAT_V1 => Ok(()),
            other => Err(self.corrupt(format!("unknown format version {other}"))),
        }
    }

    pub(crate) fn byte(&mut self) -> Result<u8, StoreError> {
        let (&first, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| self.corrupt("truncated"))?;
        self.rest = rest;
        Ok(first)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, StoreError> {
        let mut value = 0u64;
        // A u64 needs at most 10 groups of 7 bits; the tenth may carry only 1 bit.
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.corrupt("varint overflows u64"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.corrupt("varint overflows u64"))
    }

    /// A length that must fit in what is left (so a bad length can neither
    /// read past the end nor make us allocate a huge buffer).
    pub(crate) fn len(&mut self) -> Result<usize, StoreError> {
        let len = self.varint()?;
        match usize::try_from(len) {
            Ok(len) if len <= self.rest.len() => Ok(len),
            _ => Err(self.corrupt(format!(
                "length {len} exceeds the {} bytes left",
                self.rest.len()
            ))),
        }
    }

    pub(crate) fn string(&mut self) -> Result<String, StoreError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }

    /// A length-prefixed byte string, borrowed from the value.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.len()?;
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes)
    }

    pub(crate) fn strings(&mut self) -> Result<Vec<String>, StoreError> {
        // Every string takes at least one byte (its length), so the count
        // is bounded by what is left, like any other length.
        let count = self.len()?;
        (0..count).map(|_| self.string()).collect()
    }

    /// Nothing is left: fields added later are absent from older values.
    pub(crate) fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    /// Everything must have been read: trailing bytes mean a layout mismatch.
    pub(crate) fn finish(&self) -> Result<(), StoreError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt(format!("{} trailing bytes", self.rest.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_edges_round_trip() {
        for value in [
            0,
            1,
            127,
            128,
            255,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut r = Reader::new(Family::Queue, &out);
            assert_eq!(r.varint().unwrap(), value);
            r.finish().unwrap();
        }
        // Eleven continuation bytes, and a tenth byte carrying more than one bit.
        let too_long = [0xff; 11];
        assert!(matches!(
            Reader::new(Family::Queue, &too_long).varint(),
            Err(StoreError::Corrupt { .. })
        ));
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        assert!(matches!(
            Reader::new(Family::Queue, &overflow).varint(),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn strings_and_bytes_round_trip() {
        let mut out = Vec::new();
        put_str(&mut out, "héllo");
        put_bytes(&mut out, &[0, 0xff, 7]);
        put_strs(&mut out, &["a".into(), String::new()]);
        let mut r = Reader::new(Family::Users, &out);
        assert_eq!(r.string().unwrap(), "héllo");
        assert_eq!(r.bytes().unwrap(), &[0, 0xff, 7]);
        assert_eq!(r.strings().unwrap(), vec!["a".to_string(), String::new()]);
        r.finish().unwrap();
        // A length past the end is corrupt, not a panic or a huge allocation.
        let mut r = Reader::new(Family::Users, &[0x80, 0x80, 0x04, 1]);
        assert!(matches!(
            r.bytes(),
            Err(StoreError::Corrupt {
                family: "users",
                ..
            })
        ));
    }
}

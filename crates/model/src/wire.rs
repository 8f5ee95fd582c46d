//! A cursor over protobuf wire data, for the paths that read OTLP without decoding it into
//! owned messages: splitting an untouched request by trace (the span bytes are copied as they
//! came) and the block writer's span views.

/// Why bytes are not the protobuf message they should be.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WireError(&'static str);

impl WireError {
    pub fn new(why: &'static str) -> WireError {
        WireError(why)
    }
}

type Wire<T> = std::result::Result<T, WireError>;

/// Wire types.
pub const VARINT: u8 = 0;
pub const I64: u8 = 1;
pub const LEN: u8 = 2;
pub const I32: u8 = 5;

/// A cursor over protobuf wire data.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    /// The next field's number and wire type, or None at the end.
    pub fn key(&mut self) -> Wire<Option<(u32, u8)>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = (key >> 3) as u32;
        if tag == 0 || key >> 32 != 0 {
            return Err(WireError::new("invalid field number"));
        }
        Ok(Some((tag, (key & 7) as u8)))
    }

    pub fn varint(&mut self) -> Wire<u64> {
        // Keys, lengths and most counts are one byte.
        if let Some((&b, rest)) = self.0.split_first()
            && b < 0x80
        {
            self.0 = rest;
            return Ok(u64::from(b));
        }
        let mut value = 0u64;
        for (i, &b) in self.0.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(WireError::new("truncated or overlong varint"))
    }

    pub fn take(&mut self, n: usize) -> Wire<&'a [u8]> {
        if n > self.0.len() {
            return Err(WireError::new("a field runs past the end of its message"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub fn bytes(&mut self) -> Wire<&'a [u8]> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| WireError::new("length out of range"))?)
    }

    pub fn str(&mut self) -> Wire<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::new("a string field is not valid UTF-8"))
    }

    pub fn fixed64(&mut self) -> Wire<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn fixed32(&mut self) -> Wire<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn skip(&mut self, wire: u8) -> Wire<()> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            _ => Err(WireError::new("unsupported wire type (groups are not OTLP)")),
        }
    }
}

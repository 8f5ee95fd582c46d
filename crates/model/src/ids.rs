//! Trace and span IDs and their text forms.

use std::fmt;

use crate::error::Error;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Parses a trace ID the way Tempo's API does: 1–32 hex characters, case-insensitive,
    /// left-padded with zeros to 16 bytes.
    pub fn parse_api(text: &str) -> Result<TraceId, Error> {
        if text.is_empty() {
            return Err(Error::TraceId("trace ID is empty".into()));
        }
        if let Some((pos, c)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(Error::TraceId(format!(
                "trace IDs can only contain hex characters: invalid character '{c}' at position {}",
                pos + 1
            )));
        }
        if text.len() > 32 {
            return Err(Error::TraceId(format!(
                "trace ID {text} is longer than 128 bits ({} hex characters)",
                text.len()
            )));
        }
        let padded = format!("{text:0>32}");
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).expect("checked hex");
        }
        Ok(TraceId(id))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<TraceId> {
        let id: [u8; 16] = bytes.try_into().ok()?;
        (id != [0; 16]).then_some(TraceId(id))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    pub fn from_slice(bytes: &[u8]) -> Option<SpanId> {
        let id: [u8; 8] = bytes.try_into().ok()?;
        (id != [0; 8]).then_some(SpanId(id))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// Lowercase hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Decodes an even-length hex string (either case). `None` names no position; callers add it.
pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("hex ID has an odd number of characters ({})", text.len()));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8, at: usize| {
            (c as char)
                .to_digit(16)
                .ok_or_else(|| format!("IDs must be hex, found {:?} at position {}", c as char, at + 1))
        };
        out.push((digit(pair[0], 2 * i)? * 16 + digit(pair[1], 2 * i + 1)?) as u8);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_ids_pad_and_reject() {
        assert_eq!(TraceId::parse_api("1").unwrap().0[15], 1);
        assert_eq!(TraceId::parse_api("ABC").unwrap().to_hex(), format!("{:0>32}", "abc"));
        let err = TraceId::parse_api("12x4").unwrap_err().to_string();
        assert!(err.contains("invalid character 'x' at position 3"), "{err}");
        assert!(TraceId::parse_api(&"1".repeat(33)).is_err());
        assert!(TraceId::parse_api("").is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex("0aFF").unwrap(), vec![10, 255]);
        assert_eq!(hex(&[10, 255]), "0aff");
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").unwrap_err().contains("position 1"));
    }
}

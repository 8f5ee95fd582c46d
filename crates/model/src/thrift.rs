//! Jaeger's Thrift `Batch` (jaeger.thrift, Thrift binary protocol), what Jaeger clients POST to
//! `/api/traces`, decoded into the protobuf model of [`crate::jaeger`] so both transports share
//! one conversion to OTLP.
//!
//! A reader of our own: the binary protocol is a handful of types, and a Thrift dependency
//! would bring code generation for four structs. Untrusted input is bounded: every length is
//! checked against the bytes left before anything is allocated, and nesting is limited.

use crate::error::Error;
use crate::jaeger::{self, Batch, JKeyValue, JSpan, Log, Process, SpanRef, Timestamp};
use crate::otlp::ProtoDuration;

// The binary protocol's type codes.
const STOP: u8 = 0;
const BOOL: u8 = 2;
const BYTE: u8 = 3;
const DOUBLE: u8 = 4;
const I16: u8 = 6;
const I32: u8 = 8;
const I64: u8 = 10;
const STRING: u8 = 11;
const STRUCT: u8 = 12;
const MAP: u8 = 13;
const SET: u8 = 14;
const LIST: u8 = 15;

/// Deeper than any Jaeger message nests; what is skipped (unknown fields) may not go further.
const MAX_DEPTH: u32 = 64;

/// Decodes a Thrift-binary `Batch` (the body of `POST /api/traces`).
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, Error> {
    let mut r = Reader { buf: bytes, pos: 0, depth: 0 };
    let batch = r.batch().map_err(|m| Error::Foreign { format: "Jaeger Thrift", message: m })?;
    if r.pos != bytes.len() {
        return Err(Error::Foreign {
            format: "Jaeger Thrift",
            message: format!("{} bytes after the end of the Batch", bytes.len() - r.pos),
        });
    }
    Ok(batch)
}

type R<T> = Result<T, String>;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| {
            format!("truncated: {n} bytes needed at offset {} but {} left", self.pos, self.buf.len() - self.pos)
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> R<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn i32(&mut self) -> R<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> R<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn f64(&mut self) -> R<f64> {
        Ok(f64::from_bits(self.i64()? as u64))
    }

    fn binary(&mut self) -> R<&'a [u8]> {
        let len = self.i32()?;
        let len = usize::try_from(len).map_err(|_| format!("negative length {len} at offset {}", self.pos - 4))?;
        self.take(len)
    }

    /// Strings from clients are not always UTF-8; the replacement character keeps the rest.
    fn string(&mut self) -> R<String> {
        Ok(String::from_utf8_lossy(self.binary()?).into_owned())
    }

    /// The next field's (type, id), or None at the struct's end.
    fn field(&mut self) -> R<Option<(u8, i16)>> {
        match self.u8()? {
            STOP => Ok(None),
            t => Ok(Some((t, self.i16()?))),
        }
    }

    /// A list header: its element type and a size no larger than the bytes left could hold.
    fn list(&mut self, want: u8, what: &str) -> R<usize> {
        let elem = self.u8()?;
        let size = self.i32()?;
        if elem != want && size > 0 {
            return Err(format!("{what}: list of type {elem}, expected {want}"));
        }
        let size = usize::try_from(size).map_err(|_| format!("{what}: negative list size {size}"))?;
        if size > self.buf.len() - self.pos {
            return Err(format!("{what}: list of {size} elements in {} bytes left", self.buf.len() - self.pos));
        }
        Ok(size)
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(format!("nested deeper than {MAX_DEPTH} levels")) } else { Ok(()) }
    }

    /// Skips a value of a type this decoder does not read.
    fn skip(&mut self, t: u8) -> R<()> {
        match t {
            BOOL | BYTE => self.take(1).map(drop),
            I16 => self.take(2).map(drop),
            I32 => self.take(4).map(drop),
            DOUBLE | I64 => self.take(8).map(drop),
            STRING => self.binary().map(drop),
            STRUCT => {
                self.enter()?;
                while let Some((t, _)) = self.field()? {
                    self.skip(t)?;
                }
                self.depth -= 1;
                Ok(())
            }
            MAP => {
                self.enter()?;
                let (k, v) = (self.u8()?, self.u8()?);
                let n = self.i32()?;
                for _ in 0..n.max(0) {
                    self.skip(k)?;
                    self.skip(v)?;
                }
                self.depth -= 1;
                Ok(())
            }
            SET | LIST => {
                self.enter()?;
                let elem = self.u8()?;
                let n = self.i32()?;
                for _ in 0..n.max(0) {
                    self.skip(elem)?;
                }
                self.depth -= 1;
                Ok(())
            }
            t => Err(format!("unknown Thrift type {t} at offset {}", self.pos.saturating_sub(3))),
        }
    }

    /// Reads a struct field by field; `f` handles the ones it knows and returns false for the
    /// rest, which are skipped.
    fn fields(&mut self, what: &str, mut f: impl FnMut(&mut Self, u8, i16) -> R<bool>) -> R<()> {
        self.enter()?;
        while let Some((t, id)) = self.field()? {
            if !f(self, t, id).map_err(|m| if m.starts_with(what) { m } else { format!("{what}: {m}") })? {
                self.skip(t)?;
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn batch(&mut self) -> R<Batch> {
        let mut process = None;
        let mut spans = None;
        self.fields("Batch", |r, t, id| {
            match (id, t) {
                (1, STRUCT) => process = Some(r.process()?),
                (2, LIST) => {
                    let n = r.list(STRUCT, "Batch.spans")?;
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(r.span()?);
                    }
                    spans = Some(v);
                }
                (1 | 2, t) => return Err(format!("field {id} has Thrift type {t}")),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let process = process.ok_or("Batch.process (field 1) is required")?;
        let spans = spans.ok_or("Batch.spans (field 2) is required")?;
        Ok(Batch { spans, process: Some(process) })
    }

    fn process(&mut self) -> R<Process> {
        let mut p = Process::default();
        self.fields("Process", |r, t, id| {
            match (id, t) {
                (1, STRING) => p.service_name = r.string()?,
                (2, LIST) => p.tags = r.tags("Process.tags")?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(p)
    }

    fn tags(&mut self, what: &str) -> R<Vec<JKeyValue>> {
        let n = self.list(STRUCT, what)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.tag()?);
        }
        Ok(v)
    }

    /// A `Tag`; Thrift's `TagType` (STRING, DOUBLE, BOOL, LONG, BINARY) orders its types
    /// differently from the protobuf model's.
    fn tag(&mut self) -> R<JKeyValue> {
        let mut kv = JKeyValue::default();
        let mut ttype = None;
        self.fields("Tag", |r, t, id| {
            match (id, t) {
                (1, STRING) => kv.key = r.string()?,
                (2, I32) => ttype = Some(r.i32()?),
                (3, STRING) => kv.v_str = r.string()?,
                (4, DOUBLE) => kv.v_float64 = r.f64()?,
                (5, BOOL) => kv.v_bool = r.u8()? != 0,
                (6, I64) => kv.v_int64 = r.i64()?,
                (7, STRING) => kv.v_binary = r.binary()?.to_vec(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        kv.v_type = match ttype {
            Some(0) => jaeger::V_STRING,
            Some(1) => jaeger::V_FLOAT64,
            Some(2) => jaeger::V_BOOL,
            Some(3) => jaeger::V_INT64,
            Some(4) => jaeger::V_BINARY,
            Some(t) => return Err(format!("Tag {:?}: unknown vType {t}", kv.key)),
            None => return Err(format!("Tag {:?}: vType (field 2) is required", kv.key)),
        };
        Ok(kv)
    }

    fn span(&mut self) -> R<JSpan> {
        let mut s = JSpan::default();
        let (mut low, mut high, mut span_id, mut parent) = (0i64, 0i64, 0i64, 0i64);
        let (mut start_us, mut duration_us) = (0i64, 0i64);
        self.fields("Span", |r, t, id| {
            match (id, t) {
                (1, I64) => low = r.i64()?,
                (2, I64) => high = r.i64()?,
                (3, I64) => span_id = r.i64()?,
                (4, I64) => parent = r.i64()?,
                (5, STRING) => s.operation_name = r.string()?,
                (6, LIST) => {
                    let n = r.list(STRUCT, "Span.references")?;
                    for _ in 0..n {
                        s.references.push(r.span_ref()?);
                    }
                }
                (7, I32) => s.flags = r.i32()? as u32,
                (8, I64) => start_us = r.i64()?,
                (9, I64) => duration_us = r.i64()?,
                (10, LIST) => s.tags = r.tags("Span.tags")?,
                (11, LIST) => {
                    let n = r.list(STRUCT, "Span.logs")?;
                    for _ in 0..n {
                        s.logs.push(r.log()?);
                    }
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        s.trace_id = trace_id(high, low);
        s.span_id = span_id.to_be_bytes().to_vec();
        // Thrift carries the parent as a field; the model as a CHILD_OF reference, added only
        // when the client did not list it itself.
        if parent != 0
            && !s.references.iter().any(|r| r.ref_type == jaeger::CHILD_OF && r.span_id == parent.to_be_bytes())
        {
            let r = SpanRef {
                trace_id: s.trace_id.clone(),
                span_id: parent.to_be_bytes().to_vec(),
                ref_type: jaeger::CHILD_OF,
            };
            s.references.insert(0, r);
        }
        s.start_time = Some(micros_timestamp(start_us));
        let d = duration_us.max(0);
        s.duration = Some(ProtoDuration { seconds: d / 1_000_000, nanos: (d % 1_000_000 * 1000) as i32 });
        Ok(s)
    }

    fn span_ref(&mut self) -> R<SpanRef> {
        let (mut kind, mut low, mut high, mut span) = (0, 0i64, 0i64, 0i64);
        self.fields("SpanRef", |r, t, id| {
            match (id, t) {
                (1, I32) => kind = r.i32()?,
                (2, I64) => low = r.i64()?,
                (3, I64) => high = r.i64()?,
                (4, I64) => span = r.i64()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(SpanRef { trace_id: trace_id(high, low), span_id: span.to_be_bytes().to_vec(), ref_type: kind })
    }

    fn log(&mut self) -> R<Log> {
        let mut log = Log::default();
        self.fields("Log", |r, t, id| {
            match (id, t) {
                (1, I64) => log.timestamp = Some(micros_timestamp(r.i64()?)),
                (2, LIST) => log.fields = r.tags("Log.fields")?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(log)
    }
}

fn trace_id(high: i64, low: i64) -> Vec<u8> {
    let mut id = high.to_be_bytes().to_vec();
    id.extend_from_slice(&low.to_be_bytes());
    id
}

fn micros_timestamp(us: i64) -> Timestamp {
    let us = us.max(0);
    Timestamp { seconds: us / 1_000_000, nanos: (us % 1_000_000 * 1000) as i32 }
}

#[cfg(test)]
mod tests;

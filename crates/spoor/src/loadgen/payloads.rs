//! The requests loadgen sends: a pool of encoded export requests (loadgen's own traces, or a
//! file written by another generator such as `scripts/shape-payloads`) replayed endlessly.
//! Each send copies a request's bytes and patches them in place: trace IDs XORed with a key
//! unique to the connection and round (so every send carries new traces), and every timestamp
//! shifted so that the request's newest span ends now. Patching costs a copy, where building
//! and encoding costs microseconds per span, so the generator takes little of the CPU the
//! server under test needs.

use std::path::Path;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use prost::Message;
use spoor_model::otlp::ExportTraceServiceRequest;
use spoor_model::synth::{Rng, SpanRef, build_request};

/// One encoded request and where its fields to patch are.
struct Payload {
    bytes: Vec<u8>,
    /// Offsets of the 16 bytes of each span's trace ID.
    trace_ids: Vec<usize>,
    /// Offsets of each span's span ID (8 bytes), in the order of `trace_ids`.
    span_ids: Vec<usize>,
    /// Offsets of fixed64 timestamps: span start and end, event times.
    times: Vec<usize>,
    newest: u64,
}

pub struct Payloads {
    pool: Vec<Payload>,
    /// Every timestamp is moved this much further into the past (`loadgen --backdate`).
    backdate: u64,
}

impl Payloads {
    /// Reads `[u32 little-endian length][ExportTraceServiceRequest]` records.
    pub fn load(path: &Path) -> anyhow::Result<Payloads> {
        let data = std::fs::read(path).with_context(|| path.display().to_string())?;
        let mut pool = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            ensure!(rest.len() >= 4, "{}: truncated length prefix", path.display());
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            ensure!(rest.len() >= 4 + len, "{}: truncated request", path.display());
            let payload = Payload::index(rest[4..4 + len].to_vec())
                .with_context(|| format!("{}: request {}", path.display(), pool.len()))?;
            pool.push(payload);
            rest = &rest[4 + len..];
        }
        ensure!(!pool.is_empty(), "{}: no requests", path.display());
        Ok(Payloads { pool, backdate: 0 })
    }

    /// `count` requests of loadgen's own traces, `traces` per request.
    pub fn generate(seed: u64, traces: usize, count: usize) -> Payloads {
        let mut rng = Rng::new(seed);
        let now = spoor_model::time::now_nanos();
        let pool = (0..count.max(1))
            .map(|_| {
                let (request, _) = build_request(&mut rng, traces, now);
                Payload::index(request.encode_to_vec()).expect("loadgen's own requests are well-formed")
            })
            .collect();
        Payloads { pool, backdate: 0 }
    }

    /// Timestamps `ns` older than they would be.
    pub fn backdated(mut self, ns: u64) -> Payloads {
        self.backdate = ns;
        self
    }

    /// Send `n` of connection `connection`, as of `now_ns`: the body and its (trace, span) IDs.
    pub fn build(&self, connection: u64, n: u64, now_ns: u64) -> (Bytes, Vec<SpanRef>) {
        let p = &self.pool[(n % self.pool.len() as u64) as usize];
        // The same pooled request comes back once per round; the key makes its traces new.
        let round = n / self.pool.len() as u64;
        let key = mix(connection.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round.wrapping_add(1)).to_le_bytes();
        let shift = now_ns.saturating_sub(p.newest);
        let mut bytes = p.bytes.clone();
        for &at in &p.trace_ids {
            for (b, k) in bytes[at..at + 8].iter_mut().zip(key) {
                *b ^= k;
            }
        }
        for &at in &p.times {
            let t = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            bytes[at..at + 8].copy_from_slice(&t.wrapping_add(shift).saturating_sub(self.backdate).to_le_bytes());
        }
        let ids = p
            .trace_ids
            .iter()
            .zip(&p.span_ids)
            .map(|(&t, &s)| {
                (bytes[t..t + 16].try_into().expect("16 bytes"), bytes[s..s + 8].try_into().expect("8 bytes"))
            })
            .collect();
        (Bytes::from(bytes), ids)
    }
}

impl Payload {
    /// Finds the fields to patch by walking the protobuf wire format.
    fn index(bytes: Vec<u8>) -> anyhow::Result<Payload> {
        // Decoding first rejects anything that is not a valid request.
        ExportTraceServiceRequest::decode(&bytes[..]).context("not an OTLP ExportTraceServiceRequest")?;
        let mut p =
            Payload { bytes: Vec::new(), trace_ids: Vec::new(), span_ids: Vec::new(), times: Vec::new(), newest: 0 };
        // request.1 ResourceSpans → .2 ScopeSpans → .2 Span
        for (rs_start, rs_end) in fields(&bytes, 0, bytes.len(), 1)? {
            for (ss_start, ss_end) in fields(&bytes, rs_start, rs_end, 2)? {
                for span in fields(&bytes, ss_start, ss_end, 2)? {
                    p.index_span(&bytes, span)?;
                }
            }
        }
        p.bytes = bytes;
        Ok(p)
    }

    fn index_span(&mut self, b: &[u8], (start, end): (usize, usize)) -> anyhow::Result<()> {
        let (mut trace, mut span) = (None, None);
        let mut at = start;
        while at < end {
            let (tag, next) = varint(b, at)?;
            let (field, wire) = (tag >> 3, tag & 7);
            match (field, wire) {
                (1 | 2, 2) => {
                    let (len, body) = varint(b, next)?;
                    let want = if field == 1 { 16 } else { 8 };
                    ensure!(len as usize == want, "span field {field} is {len} bytes, not {want}");
                    if field == 1 {
                        trace = Some(body)
                    } else {
                        span = Some(body)
                    }
                    at = body + len as usize;
                }
                (7 | 8, 1) => {
                    self.times.push(next);
                    let t = u64::from_le_bytes(b[next..next + 8].try_into().expect("8 bytes"));
                    self.newest = self.newest.max(t);
                    at = next + 8;
                }
                (11, 2) => {
                    let (len, body) = varint(b, next)?;
                    // Event: field 1 is its fixed64 time.
                    let mut e = body;
                    while e < body + len as usize {
                        let (tag, n) = varint(b, e)?;
                        if tag == (1 << 3 | 1) {
                            self.times.push(n);
                        }
                        e = skip(b, tag, n)?;
                    }
                    at = body + len as usize;
                }
                _ => at = skip(b, tag, next)?,
            }
        }
        match (trace, span) {
            (Some(t), Some(s)) => {
                self.trace_ids.push(t);
                self.span_ids.push(s);
                Ok(())
            }
            _ => bail!("a span without trace or span ID"),
        }
    }
}

/// The (start, end) of each length-delimited field `want` directly inside `b[start..end]`.
fn fields(b: &[u8], start: usize, end: usize, want: u64) -> anyhow::Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let (tag, next) = varint(b, at)?;
        if tag >> 3 == want && tag & 7 == 2 {
            let (len, body) = varint(b, next)?;
            out.push((body, body + len as usize));
        }
        at = skip(b, tag, next)?;
    }
    Ok(out)
}

/// A varint at `at`: its value and the offset after it.
fn varint(b: &[u8], mut at: usize) -> anyhow::Result<(u64, usize)> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(at) else { bail!("truncated varint") };
        at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok((v, at));
        }
    }
    bail!("varint too long")
}

/// The offset after the value of a field with `tag` starting at `at`.
fn skip(b: &[u8], tag: u64, at: usize) -> anyhow::Result<usize> {
    let end = match tag & 7 {
        0 => varint(b, at)?.1,
        1 => at + 8,
        2 => {
            let (len, body) = varint(b, at)?;
            body + len as usize
        }
        5 => at + 4,
        w => bail!("unsupported wire type {w}"),
    };
    ensure!(end <= b.len(), "field runs past the end");
    Ok(end)
}

/// splitmix64's finaliser: spreads a counter over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_carry_new_trace_ids_and_current_times() {
        let pool = Payloads::generate(7, 3, 2);
        let original = ExportTraceServiceRequest::decode(&pool.pool[0].bytes[..]).unwrap();
        let now = pool.pool[0].newest + 5_000_000_000;
        let (a, ids_a) = pool.build(0, 0, now);
        let (b, ids_b) = pool.build(0, 2, now); // same pooled request, next round
        let (ra, rb) = (ExportTraceServiceRequest::decode(a).unwrap(), ExportTraceServiceRequest::decode(b).unwrap());
        let spans = |r: &ExportTraceServiceRequest| {
            r.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| s.spans.clone()).collect::<Vec<_>>()
        };
        let (o, sa, sb) = (spans(&original), spans(&ra), spans(&rb));
        assert_eq!(o.len(), ids_a.len());
        for ((o, a), b) in o.iter().zip(&sa).zip(&sb) {
            assert_ne!(o.trace_id, a.trace_id);
            assert_ne!(a.trace_id, b.trace_id);
            assert_eq!(o.trace_id[8..], a.trace_id[8..]);
            assert_eq!(o.span_id, a.span_id);
            assert_eq!(a.start_time_unix_nano, o.start_time_unix_nano + 5_000_000_000);
            assert_eq!(a.end_time_unix_nano, o.end_time_unix_nano + 5_000_000_000);
            assert_eq!((o.name.as_str(), &o.attributes), (a.name.as_str(), &a.attributes));
        }
        assert_eq!(sa.iter().map(|s| s.end_time_unix_nano).max(), Some(now));
        assert_eq!(ids_a[0].0.to_vec(), sa[0].trace_id);
        assert_ne!(ids_a, ids_b);
    }
}

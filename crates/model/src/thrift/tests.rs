use super::*;
use crate::otlp::any_value::Value;

/// A Thrift-binary writer for the tests: fields are (id, type, bytes).
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn field(&mut self, t: u8, id: i16) -> &mut Self {
        self.0.push(t);
        self.0.extend_from_slice(&id.to_be_bytes());
        self
    }
    fn i32(&mut self, id: i16, v: i32) -> &mut Self {
        self.field(I32, id).0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, id: i16, v: i64) -> &mut Self {
        self.field(I64, id).0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(&mut self, id: i16, v: &str) -> &mut Self {
        self.field(STRING, id).0.extend_from_slice(&(v.len() as i32).to_be_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn list(&mut self, id: i16, items: &[Vec<u8>]) -> &mut Self {
        self.field(LIST, id).0.push(STRUCT);
        self.0.extend_from_slice(&(items.len() as i32).to_be_bytes());
        for i in items {
            self.0.extend_from_slice(i);
        }
        self
    }
    fn strct(&mut self, id: i16, body: Vec<u8>) -> &mut Self {
        self.field(STRUCT, id).0.extend_from_slice(&body);
        self
    }
    fn end(&mut self) -> Vec<u8> {
        self.0.push(STOP);
        std::mem::take(&mut self.0)
    }
}

fn tag_long(key: &str, v: i64) -> Vec<u8> {
    W::default().str(1, key).i32(2, 3).i64(6, v).end()
}

fn tag_str(key: &str, v: &str) -> Vec<u8> {
    W::default().str(1, key).i32(2, 0).str(3, v).end()
}

fn batch() -> Vec<u8> {
    let process = W::default().str(1, "checkout").list(2, &[tag_str("hostname", "h1")]).end();
    let log =
        W::default().i64(1, 1_700_000_000_000_100).list(2, &[tag_str("event", "retry"), tag_long("attempt", 2)]).end();
    let span = W::default()
        .i64(1, 0x0102)
        .i64(2, 0x0a0b)
        .i64(3, 7)
        .i64(4, 5)
        .str(5, "GET /cart")
        .i32(7, 1)
        .i64(8, 1_700_000_000_000_000)
        .i64(9, 1500)
        .list(10, &[tag_long("http.status_code", 503), tag_str("span.kind", "server")])
        .list(11, &[log])
        // An unknown field is skipped.
        .str(99, "ignored")
        .end();
    W::default().strct(1, process).list(2, &[span]).end()
}

#[test]
fn batch_decodes_and_converts() {
    let b = decode_batch(&batch()).unwrap();
    let req = jaeger::to_otlp(b);
    let rs = &req.resource_spans[0];
    let attrs = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(attrs[0].key, "service.name");
    assert_eq!(attrs[1].key, "hostname");
    let s = &rs.scope_spans[0].spans[0];
    assert_eq!(s.trace_id, [0, 0, 0, 0, 0, 0, 0x0a, 0x0b, 0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(s.span_id, 7i64.to_be_bytes());
    assert_eq!(s.parent_span_id, 5i64.to_be_bytes());
    assert!(s.links.is_empty());
    assert_eq!(s.name, "GET /cart");
    assert_eq!(s.kind, crate::convert::KIND_SERVER);
    assert_eq!(s.flags, 1);
    assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_500_000);
    assert_eq!(s.status.as_ref().unwrap().code, crate::convert::STATUS_ERROR);
    assert_eq!(s.attributes.len(), 1);
    assert_eq!(s.attributes[0].value.as_ref().unwrap().value, Some(Value::IntValue(503)));
    assert_eq!(s.events[0].name, "retry");
    assert_eq!(s.events[0].time_unix_nano, 1_700_000_000_000_100_000);
    assert_eq!(s.events[0].attributes[0].value.as_ref().unwrap().value, Some(Value::IntValue(2)));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let body = batch();
    for cut in 0..body.len() {
        assert!(decode_batch(&body[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = body.clone();
    longer.push(0);
    assert!(decode_batch(&longer).unwrap_err().to_string().contains("after the end"));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..2000 {
        let len = (seed % 200) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = decode_batch(&bytes);
    }
    // Flipping each byte of a valid batch: decodes or errors, never panics.
    let body = batch();
    for i in 0..body.len() {
        let mut b = body.clone();
        b[i] ^= 0xff;
        let _ = decode_batch(&b).map(jaeger::to_otlp);
    }
}

#[test]
fn huge_sizes_and_deep_nesting_are_refused() {
    // A list claiming 2^31-1 spans in a few bytes.
    let mut b = vec![LIST, 0, 2, STRUCT];
    b.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(decode_batch(&b).unwrap_err().to_string().contains("elements"));
    // An unknown field nesting structs 10,000 deep.
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend_from_slice(&[STRUCT, 0, 9]);
    }
    assert!(decode_batch(&deep).unwrap_err().to_string().contains("nested deeper"));
    // Missing required fields are named.
    assert!(decode_batch(&[STOP]).unwrap_err().to_string().contains("Batch.process"));
    let e = decode_batch(&W::default().strct(1, W::default().end()).end()).unwrap_err();
    assert!(e.to_string().contains("Batch.spans"), "{e}");
    // A field of the wrong type is named.
    let e = decode_batch(&W::default().str(1, "x").end()).unwrap_err();
    assert!(e.to_string().contains("Batch: field 1"), "{e}");
}

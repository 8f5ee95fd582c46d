//! Request bodies: decompression that never expands past the size limit, and decoding.

use std::io::Read;

use spoor_model::otlp::ExportTraceServiceRequest;
use spoor_model::{jaeger, thrift, zipkin};

use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Deflate,
}

impl Compression {
    /// Reads an HTTP `Content-Encoding` or gRPC `grpc-encoding` value.
    pub fn parse(value: Option<&str>) -> Result<Compression, Error> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Compression::None),
            Some("gzip") | Some("x-gzip") => Ok(Compression::Gzip),
            Some("zstd") => Ok(Compression::Zstd),
            Some("deflate") => Ok(Compression::Deflate),
            Some(other) => Err(Error::unsupported(format!(
                "unsupported content encoding {other:?}; supported: gzip, zstd, deflate, identity"
            ))),
        }
    }
}

/// What a body holds. OTLP is what the pipeline speaks; the other protocols' bodies are
/// converted to an OTLP request at decode, so every step after it is the same for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OTLP `ExportTraceServiceRequest`.
    Protobuf,
    /// OTLP/JSON.
    Json,
    /// Zipkin v2 JSON (a list of spans).
    ZipkinJson(zipkin::Options),
    /// Zipkin proto3 `ListOfSpans`.
    ZipkinProto(zipkin::Options),
    /// Jaeger gRPC `PostSpansRequest`.
    JaegerProto,
    /// Jaeger Thrift `Batch`, binary protocol.
    JaegerThrift,
}

impl Format {
    /// OTLP/HTTP answers in the request's own encoding; the other protocols in plain text.
    pub fn is_otlp(self) -> bool {
        matches!(self, Format::Protobuf | Format::Json)
    }
}

/// Decompresses `body`, refusing (413 / RESOURCE_EXHAUSTED) once the output would pass
/// `limit`. Output grows as it is produced, so a bomb costs at most `limit` bytes.
pub fn decompress(body: Vec<u8>, compression: Compression, limit: usize) -> Result<Vec<u8>, Error> {
    let mut reader: Box<dyn Read + '_> = match compression {
        Compression::None => {
            if body.len() > limit {
                return Err(too_large(limit));
            }
            return Ok(body);
        }
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| Error::bad_request(format!("corrupt zstd body: {e}")))?,
        ),
        Compression::Deflate => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = (&mut reader).take(limit as u64 + 1).read_to_end(&mut out);
    match read {
        Ok(_) if out.len() > limit => Err(too_large(limit)),
        Ok(_) => Ok(out),
        Err(e) => Err(Error::bad_request(format!("corrupt {compression:?} body: {e}").to_lowercase())),
    }
}

fn too_large(limit: usize) -> Error {
    Error::too_large(format!("request is larger than the {limit} byte limit after decompression"))
}

pub fn decode(bytes: &[u8], format: Format) -> Result<ExportTraceServiceRequest, Error> {
    match format {
        Format::Protobuf => <ExportTraceServiceRequest as prost::Message>::decode(bytes)
            .map_err(|e| Error::bad_request(format!("invalid protobuf ExportTraceServiceRequest: {e}"))),
        Format::Json => spoor_model::json::decode_export_request(bytes).map_err(|e| Error::bad_request(e.to_string())),
        Format::ZipkinJson(o) => zipkin::decode_json(bytes, o).map_err(|e| Error::bad_request(e.to_string())),
        Format::ZipkinProto(o) => zipkin::decode_proto(bytes, o).map_err(|e| Error::bad_request(e.to_string())),
        Format::JaegerProto => jaeger::decode_post_spans(bytes).map_err(|e| Error::bad_request(e.to_string())),
        Format::JaegerThrift => {
            thrift::decode_batch(bytes).map(jaeger::to_otlp).map_err(|e| Error::bad_request(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use std::io::Write;

    #[test]
    fn bomb_is_cut_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 50 << 20]).unwrap();
        let body = gz.finish().unwrap();
        assert!(body.len() < 100 << 10);
        assert!(matches!(decompress(body.clone(), Compression::Gzip, 1 << 20), Err(e) if e.kind() == Kind::TooLarge));
        assert_eq!(decompress(body, Compression::Gzip, 50 << 20).unwrap().len(), 50 << 20);
        let z = zstd::encode_all(&vec![1u8; 10 << 20][..], 3).unwrap();
        assert!(matches!(decompress(z, Compression::Zstd, 1 << 20), Err(e) if e.kind() == Kind::TooLarge));
    }

    #[test]
    fn plain_body_claiming_gzip_is_bad_request() {
        assert!(matches!(decompress(b"{}".to_vec(), Compression::Gzip, 100), Err(e) if e.kind() == Kind::BadRequest));
        assert!(matches!(Compression::parse(Some("br")), Err(e) if e.kind() == Kind::Unsupported));
    }
}

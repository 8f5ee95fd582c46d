"""Round trip through Spoor with the real OpenTelemetry Python SDK.

For each OTLP exporter (gRPC and HTTP/protobuf) the SDK produces one small trace (SERVER ->
CLIENT -> INTERNAL) that exercises every attribute type the SDK supports, events, a link,
trace state and all three status codes. An InMemorySpanExporter records exactly what the SDK
produced; the trace is then read back through all four query variants (v1/v2 x JSON/protobuf),
normalised into one plain Python structure and compared field by field with the recording.

Every test runs in each storage mode (see conftest.py): read from the live head, or, after
`POST /flush`, from blocks on local disk and in S3.
"""

from __future__ import annotations

import base64
import collections
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from conftest import SINGLE_TENANT, RecordingExporter, Spoor, http_get

EXPORTERS = ["grpc", "http"]
VARIANTS = ["v1-json", "v1-protobuf", "v2-json", "v2-protobuf"]

# OTLP Span.flags bits (trace.proto SpanFlags).
HAS_IS_REMOTE = trace_pb2.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
IS_REMOTE = trace_pb2.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK

TRACE_STATE = TraceState([("spoor", "roundtrip"), ("vendor", "k1:v1")])

# Every attribute value shape the SDK accepts: the four primitive types, bytes, homogeneous
# sequences of each, and (supported by this SDK release) None, mixed and nested sequences and
# mappings. Zero values matter: in JSON a oneof value of false/0/"" must still be present.
SPAN_ATTRIBUTES: dict[str, Any] = {
    "str": "hello",
    "str.empty": "",
    "str.unicode": 'naïve ☃ 日本語 "quoted" \\ tab\tnewline\n',
    "bool.true": True,
    "bool.false": False,
    "int": 42,
    "int.zero": 0,
    "int.negative": -7,
    "int.max": 2**63 - 1,  # must survive JSON as a string, not a lossy double
    "int.min": -(2**63),
    "float": 3.14159,
    "float.zero": 0.0,
    "float.whole": 3.0,  # a double, not an int, even though it has no fraction
    "float.negative": -2.5,
    "float.tiny": 5e-324,
    "float.huge": 1.7976931348623157e308,
    "float.inf": float("inf"),  # JSON: "Infinity"
    "str.list": ["a", "", "ç"],
    "bool.list": [True, False],
    "int.list": [1, -2, 2**63 - 1],
    "float.list": [0.5, -1.0, 1e-9],
    "list.empty": [],
    "bytes": b"\x00\xffbinary",
    "none": None,
    "list.mixed": [1, "two", 3.0, True, None],
    "list.nested": [[1, 2], ["x"]],
    "map": {"k": "v", "n": 1, "inner": {"flag": False}, "list": [1.5]},
}

RESOURCE_ATTRIBUTES: dict[str, Any] = {
    "service.version": "1.2.3",
    "host.cpu.count": 8,
    "sample.ratio": 0.25,
    "feature.enabled": True,
    "deployment.regions": ["eu-west-1", "us-east-1"],
}
RESOURCE_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"

SCOPE_NAME = "spoor.tests.sdk_roundtrip"
SCOPE_VERSION = "0.9.1"
SCOPE_SCHEMA_URL = "https://opentelemetry.io/schemas/1.27.0"
SCOPE_ATTRIBUTES = {"scope.flag": True, "scope.level": 3}


# ---------------------------------------------------------------------------------------
# Producing the trace


class TraceStateSampler(Sampler):
    """Samples everything and gives every span a non-empty trace state, so that
    Span.trace_state is exercised without making the root span a child of a remote parent."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        # The span is created with the attributes the sampler returns: pass them through.
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes=attributes, trace_state=TRACE_STATE)

    def get_description(self) -> str:
        return "TraceStateSampler"


def make_exporter(kind: str, spoor: Spoor) -> SpanExporter:
    if kind == "grpc":
        return GrpcSpanExporter(endpoint=spoor.grpc_endpoint, insecure=True, timeout=10)
    session = requests.Session()
    session.trust_env = False  # ignore any proxy settings for loopback
    return HttpSpanExporter(endpoint=f"{spoor.otlp_http_url}/v1/traces", timeout=10, session=session)


@dataclass
class Produced:
    exporter: str
    trace_id: str  # lowercase hex
    spans: list[ReadableSpan]


@pytest.fixture(scope="module", params=EXPORTERS)
def produced(request, spoor: Spoor) -> Produced:
    """One trace sent through the given exporter, plus the SDK's own record of it."""
    kind = request.param
    resource = Resource.create(
        {"service.name": f"sdk-roundtrip-{kind}", **RESOURCE_ATTRIBUTES}, schema_url=RESOURCE_SCHEMA_URL
    )
    provider = TracerProvider(resource=resource, sampler=TraceStateSampler())
    memory = InMemorySpanExporter()
    remote = RecordingExporter(make_exporter(kind, spoor))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    # Batch processor: the three spans travel in one export request.
    provider.add_span_processor(BatchSpanProcessor(remote))
    tracer = provider.get_tracer(SCOPE_NAME, SCOPE_VERSION, schema_url=SCOPE_SCHEMA_URL, attributes=SCOPE_ATTRIBUTES)

    # A span in some other trace, as if propagated from another service. The SDK exporter
    # does not send a link's trace state, so none is set here.
    rng = random.Random()
    linked = SpanContext(
        trace_id=rng.getrandbits(128) | 1,
        span_id=rng.getrandbits(64) | 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    link = Link(linked, {"link.reason": "retry-of", "link.attempt": 2, "link.ok": False, "link.weights": [0.5, 1.5]})

    with tracer.start_as_current_span(
        "GET /orders/{id}", kind=SpanKind.SERVER, attributes=SPAN_ATTRIBUTES, links=[link]
    ) as root:
        root.add_event(
            "request.received",
            {"payload.bytes": 512, "compressed": False, "ratio": 0.5, "encodings": ["gzip", "br"], "peer": "10.0.0.1"},
        )
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as client:
            client.set_attributes({"db.system": "postgresql", "db.rows": 3, "db.retry": True, "db.ids": [7, 8, 9]})
            client.add_event("retry")  # an event without attributes
            client.set_status(Status(StatusCode.ERROR, "connection reset by peer"))
            with tracer.start_as_current_span("decode rows", kind=SpanKind.INTERNAL) as internal:
                internal.set_attribute("rows.decoded", 3)
                try:
                    raise ValueError("bad row 2")
                except ValueError as e:
                    # An event with a multi-line string attribute (the stack trace).
                    internal.record_exception(e, attributes={"row": 2})
                # status stays UNSET on this span
        root.set_status(Status(StatusCode.OK))

    assert provider.force_flush(30_000), "force_flush timed out"
    spans = list(memory.get_finished_spans())
    assert len(spans) == 3
    # Guard against a vacuous test: the SDK must have recorded everything asked of it.
    by_name = {s.name: s for s in spans}
    root_attrs = by_name["GET /orders/{id}"].attributes
    assert set(root_attrs) == set(SPAN_ATTRIBUTES), f"SDK recorded {sorted(root_attrs)}"
    assert all(s.context.trace_state == TRACE_STATE for s in spans)
    assert len(by_name["GET /orders/{id}"].links) == 1 and len(by_name["decode rows"].events) == 1
    trace_ids = {s.context.trace_id for s in spans}
    assert len(trace_ids) == 1
    trace_id = f"{trace_ids.pop():032x}"
    assert remote.results, "the OTLP exporter was never called"
    assert all(r == SpanExportResult.SUCCESS for _, r in remote.results), f"export failed: {remote.results}"
    assert sum(n for n, _ in remote.results) == 3

    # Spans are acknowledged only once durable, so the trace must be queryable right away:
    # no polling here on purpose.
    r = http_get(f"{spoor.api_url}/api/traces/{trace_id}")
    assert r.status == 200, f"trace {trace_id} not queryable right after force_flush: {r.status} {r.body[:200]!r}"

    provider.shutdown()

    # In the block modes everything below reads the trace back from blocks.
    spoor.flush_to_blocks()
    if spoor.storage != "live":
        tenants = {b.tenant for b in spoor.blocks()}
        assert tenants == {SINGLE_TENANT}, f"without multi-tenancy blocks belong to {SINGLE_TENANT!r}: {tenants}"
    return Produced(kind, trace_id, spans)


# ---------------------------------------------------------------------------------------
# Normalisation: every format becomes {span_id_hex: span_dict} with plain Python values.
#
# Attribute values become (type, value) pairs so a type change (int -> double, bool -> string,
# missing value) shows up as a difference: ("string", "x"), ("bool", True), ("int", 3),
# ("double", 1.5), ("bytes", b".."), ("array", (...)), ("kvlist", {...}), ("empty", None).


def _sdk_value(v: Any) -> tuple:
    if v is None:
        return ("empty", None)
    if isinstance(v, bool):  # before int: bool is an int subclass
        return ("bool", v)
    if isinstance(v, str):
        return ("string", v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return ("double", v)
    if isinstance(v, bytes):
        return ("bytes", v)
    if isinstance(v, Mapping):
        return ("kvlist", {k: _sdk_value(x) for k, x in v.items()})
    if isinstance(v, Sequence):
        return ("array", tuple(_sdk_value(x) for x in v))
    raise TypeError(f"unexpected attribute value {v!r}")


def _sdk_attrs(attrs: Mapping[str, Any] | None) -> dict[str, tuple]:
    return {k: _sdk_value(v) for k, v in (attrs or {}).items()}


def _flags(parent: SpanContext | None) -> int:
    # The OTLP flags the SDK exporter derives from a (parent or link) context: bit 8 says
    # whether the remote-ness is known, bit 9 whether it is remote; the low W3C trace-flag
    # byte is not sent by this SDK release.
    return HAS_IS_REMOTE | (IS_REMOTE if parent is not None and parent.is_remote else 0)


def expected_spans(spans: Sequence[ReadableSpan]) -> dict[str, dict]:
    """What Spoor should return, derived from the SDK's ReadableSpans."""
    out = {}
    for s in spans:
        ctx = s.get_span_context()
        out[f"{ctx.span_id:016x}"] = {
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else "",
            "trace_state": ctx.trace_state.to_header(),
            "flags": _flags(s.parent),
            "name": s.name,
            "kind": trace_pb2.Span.SpanKind.Value(f"SPAN_KIND_{s.kind.name}"),
            "start": s.start_time,
            "end": s.end_time,
            "attributes": _sdk_attrs(s.attributes),
            "dropped_attributes": s.dropped_attributes,
            "events": [
                {
                    "name": e.name,
                    "time": e.timestamp,
                    "attributes": _sdk_attrs(e.attributes),
                    "dropped_attributes": e.dropped_attributes,
                }
                for e in s.events
            ],
            "dropped_events": s.dropped_events,
            "links": [
                {
                    "trace_id": f"{l.context.trace_id:032x}",
                    "span_id": f"{l.context.span_id:016x}",
                    "trace_state": "",  # not sent by the SDK exporter, see produced()
                    "flags": _flags(l.context),
                    "attributes": _sdk_attrs(l.attributes),
                    "dropped_attributes": l.dropped_attributes,
                }
                for l in s.links
            ],
            "dropped_links": s.dropped_links,
            "status": {
                "code": trace_pb2.Status.StatusCode.Value(f"STATUS_CODE_{s.status.status_code.name}"),
                "message": s.status.description or "",
            },
            "resource": {
                "attributes": _sdk_attrs(s.resource.attributes),
                "dropped_attributes": 0,
                "schema_url": s.resource.schema_url,
            },
            "scope": {
                "name": s.instrumentation_scope.name,
                "version": s.instrumentation_scope.version or "",
                "attributes": _sdk_attrs(s.instrumentation_scope.attributes),
                "dropped_attributes": 0,
                "schema_url": s.instrumentation_scope.schema_url or "",
            },
        }
    return out


class Jsonpb:
    """Readers for Tempo's jsonpb conventions. They are strict on purpose: a hex ID, an
    int64 as a JSON number or an enum as a number is a compatibility bug even if the value
    could be recovered."""

    @staticmethod
    def id(obj: dict, key: str, nbytes: int, where: str) -> str:
        v = obj.get(key)
        if v is None:
            return ""
        assert isinstance(v, str), f"{where}.{key}: expected a base64 string, got {v!r}"
        raw = base64.b64decode(v, validate=True)
        assert len(raw) == nbytes, f"{where}.{key}: {v!r} decodes to {len(raw)} bytes, not {nbytes} (not base64?)"
        return raw.hex()

    @staticmethod
    def u64(obj: dict, key: str, where: str) -> int:
        v = obj.get(key)
        if v is None:
            return 0
        assert isinstance(v, str), f"{where}.{key}: 64-bit integers are strings in jsonpb, got {v!r}"
        return int(v)

    @staticmethod
    def u32(obj: dict, key: str, where: str) -> int:
        v = obj.get(key, 0)
        assert isinstance(v, int) and not isinstance(v, bool), f"{where}.{key}: expected a number, got {v!r}"
        return v

    @staticmethod
    def enum(obj: dict, key: str, enum_type, where: str) -> int:
        v = obj.get(key)
        if v is None:
            return 0
        assert isinstance(v, str), f"{where}.{key}: enums are names in jsonpb, got {v!r}"
        return enum_type.Value(v)

    @staticmethod
    def string(obj: dict, key: str, where: str) -> str:
        v = obj.get(key, "")
        assert isinstance(v, str), f"{where}.{key}: expected a string, got {v!r}"
        return v

    @classmethod
    def any_value(cls, v: dict, where: str) -> tuple:
        assert isinstance(v, dict), f"{where}: expected an AnyValue object, got {v!r}"
        if not v:
            return ("empty", None)
        assert len(v) == 1, f"{where}: AnyValue has more than one value: {v!r}"
        ((k, x),) = v.items()
        if k == "stringValue":
            assert isinstance(x, str), f"{where}: {v!r}"
            return ("string", x)
        if k == "boolValue":
            assert isinstance(x, bool), f"{where}: {v!r}"
            return ("bool", x)
        if k == "intValue":
            assert isinstance(x, str), f"{where}: intValue must be a string in jsonpb: {v!r}"
            return ("int", int(x))
        if k == "doubleValue":
            if isinstance(x, str):  # protojson spells non-finite doubles as strings
                assert x in ("NaN", "Infinity", "-Infinity"), f"{where}: {v!r}"
                return ("double", float(x.replace("Infinity", "inf")))
            assert isinstance(x, (int, float)) and not isinstance(x, bool), f"{where}: {v!r}"
            return ("double", float(x))
        if k == "bytesValue":
            assert isinstance(x, str), f"{where}: {v!r}"
            return ("bytes", base64.b64decode(x, validate=True))
        if k == "arrayValue":
            return ("array", tuple(cls.any_value(e, f"{where}[{i}]") for i, e in enumerate(x.get("values", []))))
        if k == "kvlistValue":
            return ("kvlist", cls.attrs(x, "values", where))
        raise AssertionError(f"{where}: unknown AnyValue field {k!r}")

    @classmethod
    def attrs(cls, obj: dict, key: str, where: str) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for i, kv in enumerate(obj.get(key, [])):
            w = f"{where}.{key}[{i}]"
            k = cls.string(kv, "key", w)
            assert k not in out, f"{w}: duplicate attribute key {k!r}"
            # A KeyValue without a value differs from one holding an empty AnyValue (what
            # the SDK sends for None), so it gets its own marker.
            out[k] = cls.any_value(kv["value"], f"{w}({k})") if "value" in kv else ("absent", None)
        return out


def normalize(resource_spans: list[dict]) -> list[dict]:
    """Tempo-style jsonpb ResourceSpans -> a flat list of span dicts (resource and scope
    copied into each span, so regrouping does not matter but content does).

    Protobuf responses go through here too, after protobuf's own jsonpb conversion
    (json_format.MessageToDict), which follows the same conventions; that keeps a single
    normaliser for all four variants."""
    J = Jsonpb
    out = []
    assert isinstance(resource_spans, list), f"resourceSpans is not a list: {resource_spans!r}"
    for ri, rs in enumerate(resource_spans):
        w_rs = f"resourceSpans[{ri}]"
        res = rs.get("resource", {})
        resource = {
            "attributes": J.attrs(res, "attributes", f"{w_rs}.resource"),
            "dropped_attributes": J.u32(res, "droppedAttributesCount", f"{w_rs}.resource"),
            "schema_url": J.string(rs, "schemaUrl", w_rs),
        }
        for si, ss in enumerate(rs.get("scopeSpans", [])):
            w_ss = f"{w_rs}.scopeSpans[{si}]"
            sc = ss.get("scope", {})
            scope = {
                "name": J.string(sc, "name", f"{w_ss}.scope"),
                "version": J.string(sc, "version", f"{w_ss}.scope"),
                "attributes": J.attrs(sc, "attributes", f"{w_ss}.scope"),
                "dropped_attributes": J.u32(sc, "droppedAttributesCount", f"{w_ss}.scope"),
                "schema_url": J.string(ss, "schemaUrl", w_ss),
            }
            for pi, sp in enumerate(ss.get("spans", [])):
                w = f"{w_ss}.spans[{pi}]"
                # An UNSET status may be sent as an empty Status or left out; both mean UNSET.
                st = sp.get("status", {})
                out.append(
                    {
                        "trace_id": J.id(sp, "traceId", 16, w),
                        "span_id": J.id(sp, "spanId", 8, w),
                        "parent_span_id": J.id(sp, "parentSpanId", 8, w),
                        "trace_state": J.string(sp, "traceState", w),
                        "flags": J.u32(sp, "flags", w),
                        "name": J.string(sp, "name", w),
                        "kind": J.enum(sp, "kind", trace_pb2.Span.SpanKind, w),
                        "start": J.u64(sp, "startTimeUnixNano", w),
                        "end": J.u64(sp, "endTimeUnixNano", w),
                        "attributes": J.attrs(sp, "attributes", w),
                        "dropped_attributes": J.u32(sp, "droppedAttributesCount", w),
                        "events": [
                            {
                                "name": J.string(e, "name", f"{w}.events[{i}]"),
                                "time": J.u64(e, "timeUnixNano", f"{w}.events[{i}]"),
                                "attributes": J.attrs(e, "attributes", f"{w}.events[{i}]"),
                                "dropped_attributes": J.u32(e, "droppedAttributesCount", f"{w}.events[{i}]"),
                            }
                            for i, e in enumerate(sp.get("events", []))
                        ],
                        "dropped_events": J.u32(sp, "droppedEventsCount", w),
                        "links": [
                            {
                                "trace_id": J.id(l, "traceId", 16, f"{w}.links[{i}]"),
                                "span_id": J.id(l, "spanId", 8, f"{w}.links[{i}]"),
                                "trace_state": J.string(l, "traceState", f"{w}.links[{i}]"),
                                "flags": J.u32(l, "flags", f"{w}.links[{i}]"),
                                "attributes": J.attrs(l, "attributes", f"{w}.links[{i}]"),
                                "dropped_attributes": J.u32(l, "droppedAttributesCount", f"{w}.links[{i}]"),
                            }
                            for i, l in enumerate(sp.get("links", []))
                        ],
                        "dropped_links": J.u32(sp, "droppedLinksCount", w),
                        "status": {
                            "code": J.enum(st, "code", trace_pb2.Status.StatusCode, f"{w}.status"),
                            "message": J.string(st, "message", f"{w}.status"),
                        },
                        "resource": resource,
                        "scope": scope,
                    }
                )
    return out


# Keys whose values legitimately are zero/empty in jsonpb: the members of AnyValue's oneof.
_ONEOF_KEYS = {"stringValue", "boolValue", "intValue", "doubleValue", "bytesValue"}


def assert_defaults_omitted(obj: Any, path: str = "$") -> None:
    """jsonpb (EmitDefaults off) leaves out zero scalars and empty lists; Tempo clients do
    not care, but a stray "parentSpanId": "" would read as a real (empty) parent."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in _ONEOF_KEYS:
                bad = v in ("", "0", []) or (isinstance(v, (int, float)) and v == 0) or v is None
                assert not bad, f"{path}.{k} is {v!r}: zero/empty fields must be omitted"
            assert_defaults_omitted(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            assert_defaults_omitted(v, f"{path}[{i}]")


# ---------------------------------------------------------------------------------------
# Fetching


def _protobuf_fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Top-level fields of a protobuf message as (number, wire type, value); enough of the
    wire format to pick Trace out of Tempo's TraceByIDResponse, which has no Python class."""

    def varint(pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            assert pos < len(buf), "truncated varint"
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7

    fields, pos = [], 0
    while pos < len(buf):
        key, pos = varint(pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = varint(pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise AssertionError(f"unsupported wire type {wire} for field {number}")
        assert pos <= len(buf), f"field {number} runs past the end of the message"
        fields.append((number, wire, value))
    return fields


def _parse_traces_data(body: bytes, what: str) -> list[dict]:
    msg = trace_pb2.TracesData()
    msg.ParseFromString(body)
    # Re-encoding must give the same bytes: catches unknown fields (which ParseFromString
    # keeps silently and MessageToDict drops) and non-canonical encodings.
    assert msg.SerializeToString(deterministic=True) == body, f"{what}: not a canonical TracesData encoding"
    return json_format.MessageToDict(msg).get("resourceSpans", [])


def fetch(api_url: str, trace_id: str, variant: str) -> list[dict]:
    """Fetches the trace in one of the four variants; returns jsonpb ResourceSpans."""
    version, fmt = variant.split("-")
    path = "/api/traces/" if version == "v1" else "/api/v2/traces/"
    headers = {"Accept": "application/protobuf"} if fmt == "protobuf" else {}
    r = http_get(f"{api_url}{path}{trace_id}", headers)
    assert r.status == 200, f"{variant}: HTTP {r.status} {r.body[:300]!r}"
    ctype = r.headers.get("content-type", "")

    if fmt == "json":
        assert ctype.startswith("application/json"), f"{variant}: content-type {ctype!r}"
        body = json.loads(r.body)
        assert_defaults_omitted(body)
        if version == "v1":
            assert set(body) == {"batches"}, f"v1 JSON keys: {sorted(body)}"
            return body["batches"]
        assert set(body) <= {"trace", "metrics", "status", "message"}, f"v2 JSON keys: {sorted(body)}"
        assert isinstance(body.get("metrics"), dict), f"v2 JSON has no metrics object: {body.get('metrics')!r}"
        return body["trace"]["resourceSpans"]

    assert ctype.startswith("application/protobuf"), f"{variant}: content-type {ctype!r}"
    if version == "v1":
        return _parse_traces_data(r.body, variant)
    fields = _protobuf_fields(r.body)
    traces = [v for n, w, v in fields if n == 1]
    assert len(traces) == 1 and all(w == 2 for n, w, _ in fields if n == 1), f"v2: expected one Trace field: {fields!r}"
    status = [v for n, w, v in fields if n == 3]
    assert status in ([], [0]), f"v2: status should be COMPLETE (0), got {status}"
    return _parse_traces_data(traces[0], variant)


# ---------------------------------------------------------------------------------------
# Comparison


def _same(a: Any, b: Any) -> bool:
    # Doubles are compared exactly (both sides carry the IEEE value); NaN is never sent, but
    # keep comparison total anyway.
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


_TYPE_TAGS = {"string", "bool", "int", "double", "bytes", "array", "kvlist", "empty", "absent"}


def _typed(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and v[0] in _TYPE_TAGS


def diff(expected: Any, got: Any, path: str = "") -> list[str]:
    """Human-readable differences, one line per leaf: `path: expected X, got Y`."""
    if _typed(expected) and _typed(got):
        if expected[0] != got[0]:  # a type change: show both whole
            return [f"{path}: expected {expected!r}, got {got!r}"]
        return diff(expected[1], got[1], path)
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for k in expected.keys() | got.keys():
            p = f"{path}.{k}" if path else str(k)
            if k not in got:
                out.append(f"{p}: missing (expected {expected[k]!r})")
            elif k not in expected:
                out.append(f"{p}: unexpected {got[k]!r}")
            else:
                out += diff(expected[k], got[k], p)
        return sorted(out)
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)) and type(expected) is type(got):
        if len(expected) != len(got):
            return [f"{path}: expected {len(expected)} items {expected!r}, got {len(got)} {got!r}"]
        return [line for i, (e, g) in enumerate(zip(expected, got)) for line in diff(e, g, f"{path}[{i}]")]
    return [] if _same(expected, got) else [f"{path}: expected {expected!r}, got {got!r}"]


# ---------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("variant", VARIANTS)
def test_trace_round_trips(spoor: Spoor, produced: Produced, variant: str):
    expected = expected_spans(produced.spans)
    got_list = normalize(fetch(spoor.api_url, produced.trace_id, variant))

    # Every span exactly once, and nothing else.
    counts = collections.Counter(s["span_id"] for s in got_list)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    assert not duplicates, f"spans returned more than once: {duplicates}"
    assert set(counts) == set(expected), f"span ids: expected {sorted(expected)}, got {sorted(counts)}"

    got = {s["span_id"]: s for s in got_list}
    problems = []
    for span_id, exp in expected.items():
        problems += [f"span {exp['name']!r} ({span_id}) {line}" for line in diff(exp, got[span_id])]
    assert not problems, f"{produced.exporter} -> {variant}: {len(problems)} differences:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", ["/api/traces/", "/api/v2/traces/"])
@pytest.mark.parametrize("accept", [None, "application/protobuf"], ids=["json", "protobuf"])
def test_unknown_trace_is_404(spoor: Spoor, path: str, accept: str | None):
    missing = f"{random.Random().getrandbits(128) | 1:032x}"
    r = http_get(f"{spoor.api_url}{path}{missing}", {"Accept": accept} if accept else {})
    assert r.status == 404, f"GET {path}{missing}: expected 404, got {r.status} {r.body[:200]!r}"

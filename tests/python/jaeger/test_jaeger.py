"""The Jaeger receivers with OpenTelemetry's Jaeger exporters: a small SDK trace sent
- as a Thrift binary `Batch` to `POST /api/traces` (opentelemetry-exporter-jaeger-thrift, its
  `collector_endpoint`);
- over gRPC, `CollectorService/PostSpans` (opentelemetry-exporter-jaeger-proto-grpc), to the
  OTLP gRPC port and to `jaeger.grpc_listen`;
then read back by ID through the Tempo API and compared field by field after the conversion
docs/receivers.md describes.

The exporters' last releases need an older OpenTelemetry SDK than tests/python/requirements.txt
pins, so this directory has its own requirements and venv (scripts/test makes it).
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.jaeger.proto.grpc import JaegerExporter as GrpcJaegerExporter
from opentelemetry.exporter.jaeger.thrift import JaegerExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from conftest import Spoor, _free_ports
from receivers import fetch, provider, sdk_trace, us

JAEGER_PORT, JAEGER_GRPC_PORT = _free_ports(2)


@pytest.fixture(scope="module", params=["live", "local"])
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def spoor_env() -> dict[str, str]:
    return {
        "SPOOR__JAEGER__THRIFT_HTTP_LISTEN": f"127.0.0.1:{JAEGER_PORT}",
        "SPOOR__JAEGER__GRPC_LISTEN": f"127.0.0.1:{JAEGER_GRPC_PORT}",
    }


def test_opentelemetry_jaeger_thrift_exporter(spoor: Spoor) -> None:
    exporter = JaegerExporter(collector_endpoint=f"http://127.0.0.1:{JAEGER_PORT}/api/traces")
    # Thrift carries microseconds: a start, and a duration rounded on its own.
    send_and_compare(spoor, exporter, lambda start, end: (us(start), us(start) + us(end - start)), us, False)


@pytest.mark.parametrize("port", ["otlp", "jaeger"])
def test_opentelemetry_jaeger_grpc_exporter(spoor: Spoor, port: str) -> None:
    endpoint = spoor.grpc_endpoint if port == "otlp" else f"127.0.0.1:{JAEGER_GRPC_PORT}"
    send_and_compare(spoor, GrpcJaegerExporter(collector_endpoint=endpoint, insecure=True), lambda s, e: (grpc_ns(s), grpc_ns(e)), grpc_ns, True)


def grpc_ns(ns: int) -> int:
    """A time as the gRPC exporter sends it: it goes through a float on the way to a
    Timestamp, so the last digits of the nanoseconds are lost; Spoor keeps what arrives."""
    seconds = int(ns / 1e9)
    return seconds * 10**9 + int((ns / 1e9 - seconds) * 1e9)


def send_and_compare(spoor: Spoor, exporter, times, event_time, process_tags: bool) -> None:
    """`times` and `event_time`: what the exporter makes of the SDK's nanoseconds;
    `process_tags`: whether it sends the resource as process tags (gRPC) or copies it into
    every span's tags (Thrift)."""
    results = []
    export = exporter.export
    exporter.export = lambda spans: results.append(export(spans)) or results[-1]
    p, memory = provider(exporter)
    sdk_trace(p)
    p.shutdown()
    assert results and all(r == SpanExportResult.SUCCESS for r in results), results
    sent = sorted(memory.get_finished_spans(), key=lambda s: (s.start_time, s.context.span_id))
    spoor.flush_to_blocks()
    got = fetch(spoor, sent[0].context.trace_id)
    assert len(got) == len(sent) == 3
    kinds = {SpanKind.SERVER: "SPAN_KIND_SERVER", SpanKind.CLIENT: "SPAN_KIND_CLIENT", SpanKind.INTERNAL: "SPAN_KIND_INTERNAL"}
    for want, have in zip(sent, got):
        assert have["span_id"] == f"{want.context.span_id:016x}"
        assert have["parent"] == (f"{want.parent.span_id:016x}" if want.parent else "")
        assert (have["name"], have["kind"]) == (want.name, kinds[want.kind])
        assert (have["start"], have["end"]) == times(want.start_time, want.end_time)
        # The process is the resource: service.name and its tags, typed.
        if process_tags:
            assert have["resource"] == dict(want.resource.attributes)
        else:
            assert have["resource"] == {"service.name": "checkout"}
            assert have["attributes"]["deployment.environment"] == "e2e"
        assert have["scope"] == "shop.cart"
        for k, v in want.attributes.items():
            # Jaeger has no arrays: the exporter sends them as JSON-ish strings.
            if not isinstance(v, tuple):
                assert have["attributes"][k] == v, k
        code = {StatusCode.UNSET: "STATUS_CODE_UNSET", StatusCode.OK: "STATUS_CODE_OK", StatusCode.ERROR: "STATUS_CODE_ERROR"}
        assert have["status"] == (code[want.status.status_code], want.status.description or "")
        assert not any(k in ("span.kind", "error", "otel.status_code") for k in have["attributes"])
        # Logs are events, named by their `message` field (no `event` field here); the other
        # fields are typed attributes.
        assert [(e[0], e[1], e[2]) for e in have["events"]] == [
            (e.name, event_time(e.timestamp), dict(e.attributes)) for e in want.events
        ]

"""The Jaeger Thrift-over-HTTP receiver with OpenTelemetry's Jaeger exporter
(opentelemetry-exporter-jaeger-thrift, its `collector_endpoint`): a small SDK trace sent as
a Thrift binary `Batch` to `POST /api/traces`, read back by ID through the Tempo API and
compared field by field after the conversion docs/receivers.md describes.

The exporter's last release needs an older OpenTelemetry SDK than tests/python/requirements.txt
pins, so this directory has its own requirements and venv (scripts/test makes it).
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.jaeger.thrift import JaegerExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import Spoor, _free_ports
from receivers import fetch, provider, sdk_trace, us

(JAEGER_PORT,) = _free_ports(1)


@pytest.fixture(scope="module", params=["live", "local"])
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def spoor_env() -> dict[str, str]:
    return {"SPOOR__JAEGER__THRIFT_HTTP_LISTEN": f"127.0.0.1:{JAEGER_PORT}"}


def test_opentelemetry_jaeger_thrift_exporter(spoor: Spoor) -> None:
    exporter = JaegerExporter(collector_endpoint=f"http://127.0.0.1:{JAEGER_PORT}/api/traces")
    p, memory = provider(exporter)
    sdk_trace(p)
    p.shutdown()
    sent = sorted(memory.get_finished_spans(), key=lambda s: (s.start_time, s.context.span_id))
    spoor.flush_to_blocks()
    got = fetch(spoor, sent[0].context.trace_id)
    assert len(got) == len(sent) == 3
    kinds = {SpanKind.SERVER: "SPAN_KIND_SERVER", SpanKind.CLIENT: "SPAN_KIND_CLIENT", SpanKind.INTERNAL: "SPAN_KIND_INTERNAL"}
    for want, have in zip(sent, got):
        assert have["span_id"] == f"{want.context.span_id:016x}"
        assert have["parent"] == (f"{want.parent.span_id:016x}" if want.parent else "")
        assert (have["name"], have["kind"]) == (want.name, kinds[want.kind])
        assert have["start"] == us(want.start_time)
        # The process carries only the service name; this exporter copies the other resource
        # attributes into every span's tags.
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
        # Logs are events; the `event` field names them, the rest are typed attributes.
        assert [(e[0], e[1], e[2]) for e in have["events"]] == [
            (e.name, us(e.timestamp), dict(e.attributes)) for e in want.events
        ]

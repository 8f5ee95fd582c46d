"""What the Zipkin and Jaeger end-to-end tests share: a trace read back by ID through the
Tempo API as plain dicts, and the small SDK trace both OpenTelemetry exporters send. Imports
only the OpenTelemetry SDK, so it works in the main venv and in the Jaeger exporter's own
(whose last release needs an older SDK; see tests/python/jaeger/requirements.txt)."""

from __future__ import annotations

import base64
import json
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import Spoor, http_get

def fetch(spoor: Spoor, trace_id: int) -> list[dict[str, Any]]:
    """The trace as v2 JSON, one plain dict per span (IDs as hex), sorted by start time."""
    r = http_get(f"{spoor.api_url}/api/v2/traces/{trace_id:032x}")
    assert r.status == 200, r.body
    out = []
    for rs in json.loads(r.body)["trace"]["resourceSpans"]:
        resource = attrs(rs.get("resource", {}).get("attributes", []))
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                out.append(
                    {
                        "resource": resource,
                        "scope": ss.get("scope", {}).get("name", ""),
                        "trace_id": b64hex(s["traceId"]),
                        "span_id": b64hex(s["spanId"]),
                        "parent": b64hex(s.get("parentSpanId", "")),
                        "name": s["name"],
                        "kind": s.get("kind", "SPAN_KIND_UNSPECIFIED"),
                        "start": int(s["startTimeUnixNano"]),
                        "end": int(s["endTimeUnixNano"]),
                        "attributes": attrs(s.get("attributes", [])),
                        "events": [(e["name"], int(e["timeUnixNano"]), attrs(e.get("attributes", []))) for e in s.get("events", [])],
                        "links": [(b64hex(l["spanId"]), attrs(l.get("attributes", []))) for l in s.get("links", [])],
                        "status": (s.get("status", {}).get("code", "STATUS_CODE_UNSET"), s.get("status", {}).get("message", "")),
                    }
                )
    return sorted(out, key=lambda s: (s["start"], s["span_id"]))


def us(ns: int) -> int:
    """Nanoseconds as both exporters send them: rounded to whole microseconds (back in ns)."""
    return (ns + 500) // 1000 * 1000


def b64hex(v: str) -> str:
    return base64.b64decode(v).hex()


def attrs(kvs: list[dict]) -> dict[str, Any]:
    def value(v: dict) -> Any:
        (kind, x), = v.items()
        if kind == "intValue":
            return int(x)
        if kind == "arrayValue":
            return [value(i) for i in x.get("values", [])]
        return x

    return {kv["key"]: value(kv["value"]) for kv in kvs}


def provider(exporter) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    p = TracerProvider(resource=Resource.create({"service.name": "checkout", "deployment.environment": "e2e"}))
    p.add_span_processor(SimpleSpanProcessor(memory))
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p, memory


def sdk_trace(p: TracerProvider) -> None:
    tracer = p.get_tracer("shop.cart", "2.1")
    with tracer.start_as_current_span("POST /cart", kind=SpanKind.SERVER, attributes={"http.request.method": "POST", "http.response.status_code": 500}) as server:
        server.add_event("validated", {"items": 3, "coupon": "SPRING", "ok": True}, timestamp=None)
        with tracer.start_as_current_span("reserve", kind=SpanKind.CLIENT, attributes={"peer.service": "inventory", "retries": [1, 2]}):
            with tracer.start_as_current_span("compute", attributes={"ratio": 0.5}) as internal:
                internal.set_status(Status(StatusCode.OK))
        server.set_status(Status(StatusCode.ERROR, "out of stock"))

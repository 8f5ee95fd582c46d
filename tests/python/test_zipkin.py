"""The Zipkin receiver with real client libraries.

- OpenTelemetry's Zipkin JSON exporter (opentelemetry-exporter-zipkin-json) sends a small
  SDK trace to `POST /api/v2/spans`;
- py_zipkin, a Zipkin-native client, sends nested spans with annotations and endpoints, both
  as Zipkin v2 JSON and as proto3.

Each trace is then read back by ID through the Tempo API and compared field by field with
what the client recorded, after the conversion docs/receivers.md describes. Runs with traces
live and in local blocks. The Jaeger exporter's test is in jaeger/ (it needs its own venv).
"""

from __future__ import annotations

import json

import pytest
import requests
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.trace import SpanKind, StatusCode
from py_zipkin import Encoding, Kind
from py_zipkin.zipkin import zipkin_span

from conftest import Spoor, _free_ports
from receivers import fetch, provider, sdk_trace, us

(ZIPKIN_PORT,) = _free_ports(1)


@pytest.fixture(scope="module", params=["live", "local"])
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def spoor_env() -> dict[str, str]:
    return {"SPOOR__ZIPKIN__LISTEN": f"127.0.0.1:{ZIPKIN_PORT}"}


def tag_text(v: object) -> str:
    """An attribute as the exporter writes it into a Zipkin tag."""
    if isinstance(v, tuple):
        return json.dumps([tag_text(x) for x in v], separators=(",", ":"))
    return str(v).lower() if isinstance(v, bool) else str(v)


def test_opentelemetry_zipkin_exporter(spoor: Spoor) -> None:
    p, memory = provider(ZipkinExporter(endpoint=f"http://127.0.0.1:{ZIPKIN_PORT}/api/v2/spans"))
    sdk_trace(p)
    p.shutdown()
    sent = sorted(memory.get_finished_spans(), key=lambda s: (s.start_time, s.context.span_id))
    spoor.flush_to_blocks()
    got = fetch(spoor, sent[0].context.trace_id)
    assert len(got) == len(sent) == 3
    # The SDK's INTERNAL is Zipkin's "no kind", which the collector reads as unspecified.
    kinds = {SpanKind.SERVER: "SPAN_KIND_SERVER", SpanKind.CLIENT: "SPAN_KIND_CLIENT", SpanKind.INTERNAL: "SPAN_KIND_UNSPECIFIED"}
    for want, have in zip(sent, got):
        assert have["trace_id"] == f"{want.context.trace_id:032x}"
        assert have["span_id"] == f"{want.context.span_id:016x}"
        assert have["parent"] == (f"{want.parent.span_id:016x}" if want.parent else "")
        assert have["name"] == want.name
        assert have["kind"] == kinds[want.kind]
        # Zipkin carries microseconds.
        assert have["start"] == us(want.start_time)
        assert have["end"] - have["start"] == us(want.end_time - want.start_time)
        assert have["resource"]["service.name"] == "checkout"
        assert have["scope"] == "shop.cart"
        # Zipkin tags are strings (the collector's default); the exporter also copies the
        # resource attributes into every span's tags.
        for k, v in want.attributes.items():
            assert have["attributes"][k] == tag_text(v), k
        assert have["attributes"]["deployment.environment"] == "e2e"
        assert not any(k.startswith("otel.") or k == "error" for k in have["attributes"])
        code = {StatusCode.UNSET: "STATUS_CODE_UNSET", StatusCode.OK: "STATUS_CODE_OK", StatusCode.ERROR: "STATUS_CODE_ERROR"}
        assert have["status"] == (code[want.status.status_code], want.status.description or "")
        # Events keep their typed attributes (the exporter encodes them as JSON).
        assert [(e[0], e[1], e[2]) for e in have["events"]] == [
            (e.name, us(e.timestamp), {k: v for k, v in e.attributes.items()}) for e in want.events
        ]


def test_py_zipkin_json_and_proto3(spoor: Spoor) -> None:
    for encoding in (Encoding.V2_JSON, Encoding.V2_PROTO3):
        bodies: list[bytes] = []

        def transport(body: bytes) -> None:
            bodies.append(body)

        with zipkin_span(
            service_name="legacy-api",
            span_name="handle",
            transport_handler=transport,
            sample_rate=100.0,
            encoding=encoding,
            kind=Kind.SERVER,
            host="10.1.2.3",
            port=8080,
            binary_annotations={"http.route": "/orders"},
        ) as root:
            with zipkin_span(service_name="legacy-api", span_name="db", kind=Kind.CLIENT) as child:
                child.update_binary_annotations({"db.system": "mysql"})
                child.add_sa_binary_annotation(host="10.9.8.7", port=3306, service_name="mysql")
                child.add_annotation("query sent")
            trace_id = root.zipkin_attrs.trace_id
            root_id, child_id = root.zipkin_attrs.span_id, child.zipkin_attrs.span_id
        ct = "application/json" if encoding == Encoding.V2_JSON else "application/x-protobuf"
        for body in bodies:
            r = requests.post(f"http://127.0.0.1:{ZIPKIN_PORT}/api/v2/spans", data=body, headers={"Content-Type": ct}, timeout=10)
            assert r.status_code == 202, r.text
        spoor.flush_to_blocks()
        got = {s["span_id"]: s for s in fetch(spoor, int(trace_id, 16))}
        assert set(got) == {root_id, child_id}, encoding
        root_span, db = got[root_id], got[child_id]
        assert (root_span["name"], root_span["kind"], root_span["parent"]) == ("handle", "SPAN_KIND_SERVER", "")
        assert root_span["resource"] == {"service.name": "legacy-api", "host.ip": ["10.1.2.3"]}
        assert root_span["attributes"]["http.route"] == "/orders"
        assert root_span["attributes"]["network.local.port"] == 8080
        assert (db["name"], db["kind"], db["parent"]) == ("db", "SPAN_KIND_CLIENT", root_id)
        assert db["attributes"]["db.system"] == "mysql"
        assert db["attributes"]["peer.service"] == "mysql"
        assert db["attributes"]["network.peer.address"] == "10.9.8.7"
        assert db["attributes"]["network.peer.port"] == 3306
        assert [e[0] for e in db["events"]] == ["query sent"]
        assert root_span["start"] <= db["start"] <= db["end"] <= root_span["end"]

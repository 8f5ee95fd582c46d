"""Span filters of read tokens (`spans:` in the tokens file, docs/security.md), end to end.

A trace made with the OpenTelemetry SDK crosses two services; a token that may see only the
`checkout` service's spans reads it through every read path. The other service's spans must
come back as placeholders (IDs, times, parent links) and nothing of theirs (names, attribute
values, the service's name) may appear in any response, nor be found by any query.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import READY_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, SPOOR_BIN, _free_ports

FILTER = '{ resource.service.name = "checkout" }'
TOKENS = {
    "ingest": ("tok-ingest-0c41e7", '["*"]', "[ingest]", ""),
    "ops": ("tok-ops-9f02b1", '["*"]', "[read, admin]", ""),
    "checkout-team": ("tok-checkout-77ad3e", '["*"]', "[read]", FILTER),
}
# What only the hidden spans carry: none of it may leave the server for the filtered token.
SECRETS = ["frontend-private-4711", "db-private-0815", "frontend", "GET /hidden", "db-query", "hidden-event"]


@dataclass
class Server:
    http_port: int
    api_port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, who: str, path: str, **params) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKENS[who][0]}"}
        if "accept" in params:
            headers["Accept"] = params.pop("accept")
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return requests.get(f"http://127.0.0.1:{self.api_port}{path}{query}", headers=headers, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("span-filter")
    tokens = tmp / "tokens.yaml"
    tokens.write_text(
        "".join(
            f"- name: {n}\n  sha256: {hashlib.sha256(t.encode()).hexdigest()}\n  tenants: {ts}\n  roles: {rs}\n"
            + (f"  spans: '{f}'\n" if f else "")
            for n, (t, ts, rs, f) in TOKENS.items()
        )
    )
    _, http_port, api_port = ports = _free_ports(3)
    s = Server(http_port, api_port, tmp / "spoor.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update({"SPOOR__AUTH__ENABLED": "true", "SPOOR__AUTH__TOKENS_FILE": str(tokens), "SPOOR__AUTH__AUDIT_LOG": ""})
    cmd = [
        str(SPOOR_BIN), "serve", "--data-dir", str(tmp / "data"),
        "--otlp-grpc-listen", f"127.0.0.1:{ports[0]}",
        "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    with open(s.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert proc.poll() is None, s.log()
        try:
            if requests.get(f"http://127.0.0.1:{api_port}/ready", timeout=1).status_code == 200:
                break
        except requests.exceptions.ConnectionError:
            pass
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.05)
    yield s
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Sent:
    trace_id: str
    root: str
    checkout: str
    db: str


@pytest.fixture(scope="module")
def sent(server: Server) -> Sent:
    """frontend root → checkout span → frontend db span, one trace across two resources."""
    memory = InMemorySpanExporter()
    front = TracerProvider(resource=Resource.create({"service.name": "frontend", "team.label": "frontend-private-4711"}))
    shop = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    for p in (front, shop):
        p.add_span_processor(SimpleSpanProcessor(memory))
    with front.get_tracer("web").start_as_current_span("GET /hidden", attributes={"http.route": "/hidden"}) as root:
        root.add_event("hidden-event", {"why": "db-private-0815"})
        with shop.get_tracer("shop").start_as_current_span("place-order", attributes={"order.id": "ord-1"}) as mid:
            with front.get_tracer("db").start_as_current_span("db-query", attributes={"db.table": "db-private-0815"}) as db:
                pass
    spans = list(memory.get_finished_spans())
    exporter = HttpSpanExporter(
        endpoint=f"http://127.0.0.1:{server.http_port}/v1/traces",
        headers={"Authorization": f"Bearer {TOKENS['ingest'][0]}"},
        timeout=10,
    )
    assert exporter.export(spans) == SpanExportResult.SUCCESS, server.log()
    h = lambda ctx, n: format(ctx.get_span_context().span_id if n == 16 else ctx.get_span_context().trace_id, f"0{n}x")  # noqa: E731
    return Sent(h(root, 32), h(root, 16), h(mid, 16), h(db, 16))


def b64id(hex_id: str) -> str:
    import base64

    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def spans_of(v2: dict) -> dict[str, tuple[dict, dict]]:
    """span ID (base64) → (span, its resource)."""
    out = {}
    for rs in v2["trace"]["resourceSpans"]:
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                out[sp["spanId"]] = (sp, rs.get("resource") or {})
    return out


def assert_no_secret(text: str | bytes, where: str) -> None:
    raw = text.encode() if isinstance(text, str) else text
    for secret in SECRETS:
        assert secret.encode() not in raw, f"{where} leaks {secret!r}: {raw[:2000]!r}"


def test_trace_keeps_its_shape_but_hidden_spans_are_placeholders(server: Server, sent: Sent):
    full = server.get("ops", f"/api/v2/traces/{sent.trace_id}")
    assert full.status_code == 200 and "frontend-private-4711" in full.text  # the test data is there
    r = server.get("checkout-team", f"/api/v2/traces/{sent.trace_id}")
    assert r.status_code == 200, r.text
    assert_no_secret(r.text, "trace by ID v2")
    spans = spans_of(r.json())
    assert set(spans) == {b64id(sent.root), b64id(sent.checkout), b64id(sent.db)}
    visible, resource = spans[b64id(sent.checkout)]
    assert visible["name"] == "place-order" and visible["parentSpanId"] == b64id(sent.root)
    assert {"key": "order.id", "value": {"stringValue": "ord-1"}} in visible["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "checkout"}} in resource["attributes"]
    for hidden in (sent.root, sent.db):
        sp, res = spans[b64id(hidden)]
        assert not sp.get("name") and not sp.get("attributes") and not sp.get("events"), sp
        assert int(sp["startTimeUnixNano"]) > 0 and int(sp["endTimeUnixNano"]) >= int(sp["startTimeUnixNano"])
        assert not res.get("attributes"), res
    assert spans[b64id(sent.db)][0]["parentSpanId"] == b64id(sent.checkout)
    for path, accept in [
        (f"/api/traces/{sent.trace_id}", None),
        (f"/api/traces/{sent.trace_id}", "application/protobuf"),
        (f"/api/v2/traces/{sent.trace_id}", "application/protobuf"),
    ]:
        r = server.get("checkout-team", path, **({"accept": accept} if accept else {}))
        assert r.status_code == 200 and b"place-order" in r.content, path
        assert_no_secret(r.content, f"{path} {accept}")


def test_queries_cannot_match_or_reveal_hidden_spans(server: Server, sent: Sent):
    for q in [
        '{ resource.team.label = "frontend-private-4711" }',
        '{ span.db.table = "db-private-0815" }',
        '{ name = "GET /hidden" }',
        '{ resource.service.name = "frontend" }',
        '{ event:name = "hidden-event" }',
        '{ .order.id = "ord-1" } >> { name = "db-query" }',
        '{ } | count() > 1',
    ]:
        everything = server.get("ops", "/api/search", q=q)
        assert everything.status_code == 200, (q, everything.text)
        everything = everything.json()
        assert sent.trace_id.lstrip("0") in [t["traceID"].lstrip("0") for t in everything["traces"]], q
        r = server.get("checkout-team", "/api/search", q=q)
        assert r.status_code == 200, (q, r.text)
        assert r.json()["traces"] == [], (q, r.text)
    # What it may see, it finds; the summary says nothing of the hidden root.
    for params in [{"q": '{ .order.id = "ord-1" } | select(span.order.id)'}, {}]:
        r = server.get("checkout-team", "/api/search", **params)
        traces = r.json()["traces"]
        assert [t["traceID"].lstrip("0") for t in traces] == [sent.trace_id.lstrip("0")], (params, r.text)
        assert traces[0]["rootServiceName"] == "[hidden]" and "serviceStats" not in traces[0]
        spans = [s for ss in traces[0]["spanSets"] for s in ss["spans"]]
        assert [s["spanID"].lstrip("0") for s in spans] == [sent.checkout.lstrip("0")]
        assert_no_secret(r.text, f"search {params}")
    for q in ['{ trace:rootService = "frontend" }', '{ rootName = "x" }']:
        r = server.get("checkout-team", "/api/search", q=q)
        assert r.status_code == 403 and "may describe a span this token may not see" in r.text, r.text
    assert server.get("checkout-team", "/api/search", tags="service.name=frontend").status_code == 403
    assert server.get("checkout-team", "/metrics/generated").status_code == 403


def test_tags_and_metrics_come_from_visible_spans_only(server: Server, sent: Sent):
    for path in [
        "/api/v2/search/tag/span.db.table/values",
        "/api/search/tag/db.table/values",
        "/api/v2/search/tag/resource.service.name/values",
        "/api/v2/search/tag/name/values",
        "/api/v2/search/tag/event:name/values",
    ]:
        full = server.get("ops", path)
        assert full.status_code == 200 and any(s.encode() in full.content for s in SECRETS), (path, full.text)
        r = server.get("checkout-team", path)
        assert r.status_code == 200, (path, r.text)
        assert_no_secret(r.text, path)
    names = server.get("checkout-team", "/api/v2/search/tags")
    assert "db.table" not in names.text and "team.label" not in names.text and "order.id" in names.text
    assert "db.table" not in server.get("checkout-team", "/api/search/tags").text
    assert server.get("checkout-team", "/api/v2/search/tag/trace:rootService/values").status_code == 403
    now = int(time.time())
    q = "{ } | count_over_time() by (resource.service.name)"
    full = server.get("ops", "/api/metrics/query_range", q=q, start=now - 600, end=now + 60, step="60s")
    assert full.status_code == 200 and "frontend" in full.text, full.text
    r = server.get("checkout-team", "/api/metrics/query_range", q=q, start=now - 600, end=now + 60, step="60s")
    assert r.status_code == 200 and "checkout" in r.text, r.text
    assert_no_secret(r.text, "metrics query_range")


def test_blocks_are_filtered_too(server: Server, sent: Sent):
    r = requests.post(
        f"http://127.0.0.1:{server.api_port}/flush",
        headers={"Authorization": f"Bearer {TOKENS['ops'][0]}"},
        timeout=120,
    )
    assert r.status_code == 204, r.text
    r = server.get("checkout-team", f"/api/v2/traces/{sent.trace_id}")
    assert r.status_code == 200 and "place-order" in r.text
    assert_no_secret(r.text, "trace from a block")
    r = server.get("checkout-team", "/api/search", q='{ span.db.table = "db-private-0815" }')
    assert r.status_code == 200 and r.json()["traces"] == [], r.text

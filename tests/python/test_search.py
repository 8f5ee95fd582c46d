"""TraceQL search and autocomplete with data from the real OpenTelemetry Python SDK.

The SDK sends a small platform flow (portal -> catalog -> postgresql; a CI pipeline deploying
to production with a failing step) over OTLP/gRPC; the searches are the ones Grafana's Tempo
datasource sends (search tab, TraceQL tab, autocomplete), and their answers are checked
against what the SDK recorded. Every test runs in each storage mode (conftest.py): answered
from the live head, or from blocks on local disk and in S3 after `POST /flush`.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import RecordingExporter, Spoor, http_get


def _provider(spoor: Spoor, service: str, sent: RecordingExporter, memory: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "production"}))
    provider.add_span_processor(SimpleSpanProcessor(sent))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider


@pytest.fixture(scope="module")
def flows(spoor: Spoor) -> dict[str, object]:
    """Sends the flows once per server; returns trace IDs and the recorded spans."""
    sent = RecordingExporter(OTLPSpanExporter(endpoint=spoor.grpc_endpoint, insecure=True))
    memory = InMemorySpanExporter()
    portal = _provider(spoor, "portal", sent, memory).get_tracer("portal-web", "2.1.0")
    catalog = _provider(spoor, "catalog", sent, memory).get_tracer("catalog-api", "0.9.0")
    jenkins = _provider(spoor, "jenkins", sent, memory).get_tracer("jenkins-otel", "1.0.0")

    with portal.start_as_current_span("GET /catalog", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.response.status_code", 200)
        with catalog.start_as_current_span("SELECT entities", kind=SpanKind.CLIENT) as db:
            db.set_attribute("db.system", "postgresql")
            db.set_attribute("db.rows", 42)
            time.sleep(0.02)
        catalog_trace = root.get_span_context().trace_id

    with jenkins.start_as_current_span("build pipeline", kind=SpanKind.SERVER) as pipe:
        pipe.set_attribute("ci.pipeline", "spoor")
        with jenkins.start_as_current_span("run tests") as tests:
            tests.set_status(Status(StatusCode.ERROR, "2 tests failed"))
            tests.add_event("exception", {"exception.type": "AssertionError"})
        with jenkins.start_as_current_span("deploy-to-production", kind=SpanKind.CLIENT) as deploy:
            deploy.set_attribute("deploy.tags", ["eu", "canary"])
            time.sleep(0.05)
        deploy_trace = pipe.get_span_context().trace_id

    assert all(r == SpanExportResult.SUCCESS for _, r in sent.results), sent.results
    spoor.flush_to_blocks()
    return {
        "catalog": f"{catalog_trace:032x}".lstrip("0"),
        "deploy": f"{deploy_trace:032x}".lstrip("0"),
        "spans": {s.name: s for s in memory.get_finished_spans()},
    }


def search(spoor: Spoor, q: str, **params: str) -> dict:
    query = urllib.parse.urlencode({"q": q, **params})
    r = http_get(f"{spoor.api_url}/api/search?{query}")
    assert r.status == 200, f"{q}: {r.status} {r.body[:300]!r}\n{spoor.log_tail()}"
    return json.loads(r.body)


def span_ids(result: dict) -> set[str]:
    return {s["spanID"] for t in result["traces"] for ss in t["spanSets"] for s in ss["spans"]}


def sid(span) -> str:
    return f"{span.context.span_id:016x}"


def test_attribute_and_intrinsic_filters(spoor: Spoor, flows: dict) -> None:
    spans = flows["spans"]
    r = search(spoor, '{ span.db.system = "postgresql" && span.db.rows > 40 }')
    assert [t["traceID"] for t in r["traces"]] == [flows["catalog"]]
    t = r["traces"][0]
    assert t["rootServiceName"] == "portal" and t["rootTraceName"] == "GET /catalog"
    assert span_ids(r) == {sid(spans["SELECT entities"])}
    assert t["serviceStats"] == {"portal": {"spanCount": 1}, "catalog": {"spanCount": 1}}
    attrs = {a["key"]: a["value"] for a in t["spanSets"][0]["spans"][0]["attributes"]}
    assert attrs == {"db.system": {"stringValue": "postgresql"}, "db.rows": {"intValue": "42"}}

    r = search(spoor, '{ status = error && statusMessage = "2 tests failed" }')
    assert span_ids(r) == {sid(spans["run tests"])}
    r = search(spoor, '{ event.exception.type = "AssertionError" }')
    assert span_ids(r) == {sid(spans["run tests"])}
    r = search(spoor, '{ instrumentation:name = "catalog-api" && kind = client }')
    assert span_ids(r) == {sid(spans["SELECT entities"])}
    r = search(spoor, '{ span.deploy.tags = "canary" }')  # any element of a string array
    assert span_ids(r) == {sid(spans["deploy-to-production"])}
    r = search(spoor, '{ name =~ "deploy.*" && duration > 40ms }')
    assert span_ids(r) == {sid(spans["deploy-to-production"])}


def test_structural_and_pipelines(spoor: Spoor, flows: dict) -> None:
    spans = flows["spans"]
    r = search(spoor, '{ resource.service.name = "jenkins" } >> { name = "deploy-to-production" }')
    assert span_ids(r) == {sid(spans["deploy-to-production"])}
    r = search(spoor, '{ name = "build pipeline" } > { status = error }')
    assert span_ids(r) == {sid(spans["run tests"])}
    r = search(spoor, '{ resource.service.name = "portal" } > { resource.service.name = "catalog" }')
    assert [t["traceID"] for t in r["traces"]] == [flows["catalog"]]
    r = search(spoor, "{ } | count() > 2", spss="10")
    assert [t["traceID"] for t in r["traces"]] == [flows["deploy"]]
    assert r["traces"][0]["spanSets"][0]["matched"] == 3
    r = search(spoor, "{ } | by(resource.service.name) | count() = 1")
    groups = {ss["attributes"][0]["value"]["stringValue"] for t in r["traces"] for ss in t["spanSets"]}
    assert groups == {"portal", "catalog"}


def test_newest_first_and_errors(spoor: Spoor, flows: dict) -> None:
    r = search(spoor, "{ }", limit="1")
    assert [t["traceID"] for t in r["traces"]] == [flows["deploy"]]
    r = http_get(f"{spoor.api_url}/api/search?" + urllib.parse.urlencode({"q": "{ span.http.method = }"}))
    assert r.status == 400 and r.body.startswith(b"invalid TraceQL query: "), r.body


def test_autocomplete(spoor: Spoor, flows: dict) -> None:
    r = http_get(f"{spoor.api_url}/api/v2/search/tags")
    assert r.status == 200, r.body
    scopes = {s["name"]: set(s["tags"]) for s in json.loads(r.body)["scopes"]}
    assert {"db.system", "db.rows", "ci.pipeline", "deploy.tags"} <= scopes["span"]
    assert {"service.name", "deployment.environment"} <= scopes["resource"]
    assert "exception.type" in scopes["event"]
    assert {"duration", "name", "status"} <= scopes["intrinsic"]

    r = http_get(f"{spoor.api_url}/api/search/tags")
    names = set(json.loads(r.body)["tagNames"])
    assert {"db.system", "service.name"} <= names and "duration" not in names

    q = urllib.parse.quote('{ resource.service.name = "jenkins" }')
    r = http_get(f"{spoor.api_url}/api/v2/search/tag/name/values?q={q}")
    assert r.status == 200, r.body
    values = {(v["type"], v["value"]) for v in json.loads(r.body)["tagValues"]}
    assert values == {("string", "build pipeline"), ("string", "run tests"), ("string", "deploy-to-production")}

    r = http_get(f"{spoor.api_url}/api/v2/search/tag/resource.service.name/values")
    values = {v["value"] for v in json.loads(r.body)["tagValues"]}
    assert values == {"portal", "catalog", "jenkins"}
    r = http_get(f"{spoor.api_url}/api/v2/search/tag/span.db.rows/values")
    assert json.loads(r.body)["tagValues"] == [{"type": "int", "value": "42"}]
    r = http_get(f"{spoor.api_url}/api/v2/search/tag/status/values")
    assert {v["value"] for v in json.loads(r.body)["tagValues"]} == {"ok", "error", "unset"}
    r = http_get(f"{spoor.api_url}/api/search/tag/service.name/values")
    assert set(json.loads(r.body)["tagValues"]) == {"portal", "catalog", "jenkins"}
    r = http_get(f"{spoor.api_url}/api/v2/search/tag/service.name/values")
    assert r.status == 400 and b"valid" in r.body

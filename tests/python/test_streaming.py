"""Tempo's streaming gRPC query API (tempopb.StreamingQuerier), as Grafana's Tempo data source
calls it: a gRPC client compiled from tests/python/proto/tempo_streaming.proto with
grpcio-tools' protoc talks HTTP/2 to Spoor's API port. Every streamed answer must be the HTTP
API's answer to the same question, field for field (protobuf's JSON mapping is Tempo's JSON).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import urllib.parse

import grpc
import pytest
from google.protobuf import json_format
from grpc_tools import protoc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import REPO, RecordingExporter, Spoor, http_get


@pytest.fixture(scope="module", params=["live", "local"])
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def tempopb(tmp_path_factory: pytest.TempPathFactory):
    """The compiled messages and stub: (tempo_streaming_pb2, tempo_streaming_pb2_grpc)."""
    out = tmp_path_factory.mktemp("tempopb")
    proto_dir = REPO / "tests" / "python" / "proto"
    rc = protoc.main(
        ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", "tempo_streaming.proto"]
    )
    assert rc == 0, "protoc failed on tempo_streaming.proto"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("tempo_streaming_pb2")
        pb2_grpc = importlib.import_module("tempo_streaming_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc


@pytest.fixture(scope="module")
def sent(spoor: Spoor) -> None:
    exporter = RecordingExporter(OTLPSpanExporter(endpoint=spoor.grpc_endpoint, insecure=True))
    for service, n in [("portal", 3), ("catalog", 2)]:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("stream-test")
        for i in range(n):
            with tracer.start_as_current_span(f"GET /page/{i}", kind=SpanKind.SERVER) as root:
                root.set_attribute("http.response.status_code", 200 + i)
                with tracer.start_as_current_span("SELECT rows", kind=SpanKind.CLIENT) as db:
                    db.set_attribute("db.system", "postgresql")
                    if i == 1:
                        db.set_status(Status(StatusCode.ERROR, "timeout"))
                    time.sleep(0.002)
    assert all(r == SpanExportResult.SUCCESS for _, r in exporter.results), exporter.results
    spoor.flush_to_blocks()


@pytest.fixture(scope="module")
def stub(spoor: Spoor, tempopb, sent):
    _, pb2_grpc = tempopb
    channel = grpc.insecure_channel(spoor.api_url.removeprefix("http://"), options=[("grpc.enable_http_proxy", 0)])
    yield pb2_grpc.StreamingQuerierStub(channel)
    channel.close()


def http_json(spoor: Spoor, path: str, **params) -> dict:
    r = http_get(f"{spoor.api_url}{path}?{urllib.parse.urlencode(params)}")
    assert r.status == 200, f"{path}: {r.status} {r.body[:300]!r}\n{spoor.log_tail()}"
    return json.loads(r.body)


def as_json(message) -> dict:
    return json_format.MessageToDict(message)


def test_search_streams_and_ends_with_the_http_answer(spoor: Spoor, stub, tempopb):
    pb2, _ = tempopb
    q = "{ span.db.system = \"postgresql\" } | select(status)"
    answers = list(stub.Search(pb2.SearchRequest(Query=q, Limit=20, SpansPerSpanSet=3), timeout=30))
    assert answers, "no message streamed"
    want = http_json(spoor, "/api/search", q=q, limit=20, spss=3)
    got = as_json(answers[-1])
    # Timing figures differ between two runs of the same search.
    got.pop("metrics", None)
    want.pop("metrics", None)
    assert got == want
    assert len(got["traces"]) == 5
    # Partial answers grow toward the last one; none holds a trace the last one lacks.
    final = {t["traceID"] for t in got["traces"]}
    for partial in answers[:-1]:
        assert {t.traceID for t in partial.traces} <= final


def test_search_reports_progress_over_blocks(spoor: Spoor, stub, tempopb):
    pb2, _ = tempopb
    answers = list(stub.Search(pb2.SearchRequest(Query="{ }", Limit=100), timeout=30))
    last = answers[-1].metrics
    if spoor.storage == "local":
        assert last.totalJobs >= 1 and last.completedJobs == last.totalJobs, last
        assert len(answers) >= 2, "expected an answer after the live traces and after the blocks"
    assert last.inspectedSpans >= 10


def test_tag_names_and_values_match_the_http_api(spoor: Spoor, stub, tempopb):
    pb2, _ = tempopb
    (v2,) = list(stub.SearchTagsV2(pb2.SearchTagsRequest(scope="span"), timeout=30))
    want = http_json(spoor, "/api/v2/search/tags", scope="span")
    want.pop("metrics", None)
    assert as_json(v2) == want
    assert "db.system" in v2.scopes[0].tags

    (v1,) = list(stub.SearchTags(pb2.SearchTagsRequest(), timeout=30))
    want = http_json(spoor, "/api/search/tags")
    want.pop("metrics", None)
    assert as_json(v1) == want

    (values,) = list(stub.SearchTagValuesV2(pb2.SearchTagValuesRequest(tagName="resource.service.name"), timeout=30))
    assert sorted((v.type, v.value) for v in values.tagValues) == [("string", "catalog"), ("string", "portal")]
    (values,) = list(stub.SearchTagValues(pb2.SearchTagValuesRequest(tagName="service.name"), timeout=30))
    assert sorted(values.tagValues) == ["catalog", "portal"]


def test_metrics_queries_match_the_http_api(spoor: Spoor, stub, tempopb):
    pb2, _ = tempopb
    end = int(time.time()) + 60
    start = end - 600
    q = "{ } | count_over_time() by (resource.service.name)"
    (answer,) = list(
        stub.MetricsQueryRange(
            pb2.QueryRangeRequest(query=q, start=start * 10**9, end=end * 10**9, step=60 * 10**9), timeout=30
        )
    )
    want = http_json(spoor, "/api/metrics/query_range", q=q, start=start, end=end, step="60s")
    got = as_json(answer)
    got.pop("metrics", None)
    want.pop("metrics", None)
    assert got == want
    totals = {s.labels[0].value.string_value: sum(x.value for x in s.samples) for s in answer.series}
    assert totals == {"portal": 6, "catalog": 4}

    (instant,) = list(
        stub.MetricsQueryInstant(pb2.QueryInstantRequest(query=q, start=start * 10**9, end=end * 10**9), timeout=30)
    )
    assert {s.labels[0].value.string_value: s.value for s in instant.series} == {"portal": 6, "catalog": 4}


def test_bad_requests_get_grpc_errors(spoor: Spoor, stub, tempopb):
    pb2, _ = tempopb
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Search(pb2.SearchRequest(Query="{ durationn > 1s }"), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid TraceQL query" in e.value.details() and "did you mean 'duration'" in e.value.details()

    channel = grpc.insecure_channel(spoor.api_url.removeprefix("http://"), options=[("grpc.enable_http_proxy", 0)])
    unknown = channel.unary_stream("/tempopb.StreamingQuerier/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as e:
        list(unknown(b"", timeout=30))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    channel.close()

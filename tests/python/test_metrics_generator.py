"""Metrics from traces, end to end, with the real OpenTelemetry SDK and the real Prometheus.

The SDK sends the platform's flows to Spoor as tenant `platform`:
- portal -> backstage -> postgresql (a database client span);
- the CI/CD pipeline, jenkins -> argocd, where every fourth sync fails;
- messaging, chat -> chat-worker (producer and consumer).

Prometheus (Debian's package, on 127.0.0.1) both receives Spoor's remote_write and scrapes
`/metrics/generated` (OpenMetrics, so exemplars come along), and loads the rules of
deploy/prometheus. PromQL over Prometheus's HTTP API must then give the exact call counts per
service and span name, the service-graph edges (database and virtual nodes included), failures,
Grafana's own queries, the shipped recording rules, and exemplars whose trace IDs resolve to the
traces through Spoor's trace-by-ID API.

Remote-written series have no `job` label; scraped ones have `job="spoor"` and `tenant`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import SPOOR_BIN, Spoor, _free_ports, _wait_ready, http_get
from prometheus import ScrapeJob

REPO = Path(__file__).resolve().parents[2]
TENANT = "platform"
PORTAL_FLOWS = 12
PIPELINES = 8  # every fourth fails
MESSAGES = 6
MS = 1_000_000

REMOTE = 'job=""'  # remote-written series carry no job label
SCRAPED = 'job="spoor"'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prometheus_factory):
    """Spoor (multi-tenant, generator pushing every second) and a Prometheus scraping it."""
    yield from start_stack(tmp_path_factory, prometheus_factory, native=False)


@pytest.fixture(scope="module")
def native_stack(tmp_path_factory: pytest.TempPathFactory, prometheus_factory):
    """The same with native histograms pushed too, to a Prometheus that stores them."""
    yield from start_stack(tmp_path_factory, prometheus_factory, native=True)


def start_stack(tmp_path_factory, prometheus_factory, native: bool):
    base = tmp_path_factory.mktemp("generator")
    grpc_port, http_port, api_port = _free_ports(3)
    api = f"127.0.0.1:{api_port}"
    prom = prometheus_factory(
        scrape=[ScrapeJob([api], job_name="spoor", metrics_path="/metrics/generated")],
        rule_files=sorted((REPO / "deploy" / "prometheus").glob("*.rules.yml")),
        extra_args=["--enable-feature=native-histograms"] if native else [],
    )
    config = base / "spoor.yaml"
    config.write_text(
        f"""
tenancy:
  multitenancy_enabled: true
metrics_generator:
  collection_interval: 1s
  generate_native_histograms: {"both" if native else "classic"}
  service_graphs:
    wait: 2s
  remote_write:
    - url: {prom.remote_write_url}
      name: prometheus
"""
    )
    server = Spoor(
        grpc_endpoint=f"127.0.0.1:{grpc_port}",
        otlp_http_url=f"http://127.0.0.1:{http_port}",
        api_url=f"http://{api}",
        data_dir=base / "data",
        log_path=base / "spoor.log",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    cmd = [
        str(SPOOR_BIN), "serve", "--config", str(config),
        "--data-dir", str(server.data_dir),
        "--otlp-grpc-listen", server.grpc_endpoint,
        "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", api,
    ]  # fmt: skip
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(proc, server)
        sent = send_flows(server)
        yield server, prom, sent
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def provider(server: Spoor, service: str) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": "platform"}))
    exporter = OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True, headers={"x-scope-orgid": TENANT})
    p.add_span_processor(BatchSpanProcessor(exporter))
    return p


def send_flows(server: Spoor) -> dict[str, set[str]]:
    """Sends every flow; returns the trace IDs (hex) per flow."""
    services = ["portal", "backstage", "jenkins", "argocd", "chat", "chat-worker"]
    providers = {s: provider(server, s) for s in services}
    t = {s: p.get_tracer("spoor.tests") for s, p in providers.items()}
    sent: dict[str, set[str]] = {"portal": set(), "pipeline": set(), "messaging": set()}
    # Spans end a little in the past, well inside the generator's 30 s slack.
    base = time.time_ns() - 2_000 * MS

    def child(tracer, name, parent, kind, start, ms, attributes=None, error=False):
        ctx = trace.set_span_in_context(parent)
        span = tracer.start_span(name, context=ctx, kind=kind, start_time=start, attributes=attributes or {})
        if error:
            span.set_status(Status(StatusCode.ERROR, "sync failed"))
        return span, start + ms * MS

    for i in range(PORTAL_FLOWS):
        s0 = base + i * 50 * MS
        root = t["portal"].start_span("GET /catalog", kind=SpanKind.SERVER, start_time=s0)
        call, call_end = child(t["portal"], "GET /api/catalog", root, SpanKind.CLIENT, s0 + MS, 40)
        srv, srv_end = child(t["backstage"], "GET /api/catalog", call, SpanKind.SERVER, s0 + 2 * MS, 30)
        db_attrs = {"db.system": "postgresql", "db.name": "catalog", "server.address": "postgresql"}
        db, db_end = child(t["backstage"], "SELECT catalog", srv, SpanKind.CLIENT, s0 + 3 * MS, 5, db_attrs)
        db.end(end_time=db_end)
        srv.end(end_time=srv_end)
        call.end(end_time=call_end)
        root.end(end_time=s0 + 45 * MS)
        sent["portal"].add(format(root.get_span_context().trace_id, "032x"))

    for i in range(PIPELINES):
        s0 = base + i * 50 * MS
        failed = i % 4 == 3
        root = t["jenkins"].start_span("POST /job/deploy/build", kind=SpanKind.SERVER, start_time=s0)
        call, call_end = child(t["jenkins"], "POST /api/v1/applications/sync", root, SpanKind.CLIENT, s0 + MS, 300)
        srv, srv_end = child(t["argocd"], "POST /api/v1/applications/sync", call, SpanKind.SERVER, s0 + 2 * MS, 250, error=failed)
        srv.end(end_time=srv_end)
        call.end(end_time=call_end)
        root.end(end_time=s0 + 320 * MS)
        sent["pipeline"].add(format(root.get_span_context().trace_id, "032x"))

    for i in range(MESSAGES):
        s0 = base + i * 50 * MS
        root = t["chat"].start_span("POST /messages", kind=SpanKind.SERVER, start_time=s0)
        pub, pub_end = child(t["chat"], "messages publish", root, SpanKind.PRODUCER, s0 + MS, 2)
        con, con_end = child(t["chat-worker"], "messages process", pub, SpanKind.CONSUMER, s0 + 10 * MS, 8)
        con.end(end_time=con_end)
        pub.end(end_time=pub_end)
        root.end(end_time=s0 + 20 * MS)
        sent["messaging"].add(format(root.get_span_context().trace_id, "032x"))

    for p in providers.values():
        assert p.force_flush(30_000), "the SDK could not export its spans"
        p.shutdown()
    return sent


def values(result: list[dict]) -> dict[tuple, float]:
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in result}


def has_value(expected: float):
    return lambda result: len(result) == 1 and abs(float(result[0]["value"][1]) - expected) < 1e-9


@pytest.mark.parametrize("source", [REMOTE, SCRAPED])
def test_call_counts_per_service_and_span_name(stack, source):
    _, prom, _ = stack
    expected = {
        ("portal", "GET /catalog", "SPAN_KIND_SERVER"): PORTAL_FLOWS,
        ("portal", "GET /api/catalog", "SPAN_KIND_CLIENT"): PORTAL_FLOWS,
        ("backstage", "GET /api/catalog", "SPAN_KIND_SERVER"): PORTAL_FLOWS,
        ("backstage", "SELECT catalog", "SPAN_KIND_CLIENT"): PORTAL_FLOWS,
        ("jenkins", "POST /job/deploy/build", "SPAN_KIND_SERVER"): PIPELINES,
        ("jenkins", "POST /api/v1/applications/sync", "SPAN_KIND_CLIENT"): PIPELINES,
        ("argocd", "POST /api/v1/applications/sync", "SPAN_KIND_SERVER"): PIPELINES,
        ("chat", "messages publish", "SPAN_KIND_PRODUCER"): MESSAGES,
        ("chat-worker", "messages process", "SPAN_KIND_CONSUMER"): MESSAGES,
        ("chat", "POST /messages", "SPAN_KIND_SERVER"): MESSAGES,
    }
    q = f"sum by (service, span_name, span_kind) (traces_spanmetrics_calls_total{{{source}}})"
    total = sum(expected.values())
    assert total == 4 * PORTAL_FLOWS + 3 * PIPELINES + 3 * MESSAGES
    prom.wait_for(f"sum(traces_spanmetrics_calls_total{{{source}}})", has_value(total), timeout=60)
    got = {
        (m["service"], m["span_name"], m["span_kind"]): v
        for m, v in ((dict(k), v) for k, v in values(prom.query(q)).items())
    }
    assert got == expected
    # The latency histogram counts the same spans, with Tempo's buckets.
    count = prom.query(
        f'traces_spanmetrics_latency_count{{{source},service="backstage",span_name="GET /api/catalog"}}'
    )
    assert [float(r["value"][1]) for r in count] == [PORTAL_FLOWS]
    le = prom.query(f'traces_spanmetrics_latency_bucket{{{source},service="backstage",span_name="GET /api/catalog"}}')
    bounds = sorted(float(r["metric"]["le"]) for r in le)
    assert bounds[:3] == [0.002, 0.004, 0.008] and bounds[-2:] == [16.384, float("inf")]
    # 30 ms spans: none at or below 16 ms, all at or below 32 ms.
    by_le = {r["metric"]["le"]: float(r["value"][1]) for r in le}
    assert (by_le["0.016"], by_le["0.032"]) == (0, PORTAL_FLOWS)
    errors = prom.query(f'sum(traces_spanmetrics_calls_total{{{source},status_code="STATUS_CODE_ERROR"}})')
    assert float(errors[0]["value"][1]) == PIPELINES // 4


@pytest.mark.parametrize("source", [REMOTE, SCRAPED])
def test_service_graph_edges(stack, source):
    _, prom, _ = stack
    expected = {
        ("user", "portal", "virtual_node"): PORTAL_FLOWS,
        ("portal", "backstage", ""): PORTAL_FLOWS,
        ("backstage", "postgresql", "database"): PORTAL_FLOWS,
        ("user", "jenkins", "virtual_node"): PIPELINES,
        ("jenkins", "argocd", ""): PIPELINES,
        ("user", "chat", "virtual_node"): MESSAGES,
        ("chat", "chat-worker", "messaging_system"): MESSAGES,
    }
    q = f"sum by (client, server, connection_type) (traces_service_graph_request_total{{{source}}})"
    prom.wait_for(f"sum(traces_service_graph_request_total{{{source}}})", has_value(sum(expected.values())), timeout=60)
    got = {}
    for labels, v in values(prom.query(q)).items():
        m = dict(labels)
        got[(m["client"], m["server"], m.get("connection_type", ""))] = v
    assert got == expected
    failed = values(prom.query(f"sum by (client, server) (traces_service_graph_request_failed_total{{{source}}} > 0)"))
    assert failed == {(("client", "jenkins"), ("server", "argocd")): PIPELINES // 4}
    # Server-side latency of jenkins -> argocd: 250 ms spans, in the (0.2, 0.4] bucket.
    buckets = prom.query(
        f'traces_service_graph_request_server_seconds_bucket{{{source},client="jenkins",server="argocd"}}'
    )
    by_le = {r["metric"]["le"]: float(r["value"][1]) for r in buckets}
    assert (by_le["0.2"], by_le["0.4"], by_le["+Inf"]) == (0, PIPELINES, PIPELINES)
    # The node types, as Grafana's service map asks for them.
    groups = prom.query(f"group by (client, connection_type, server) (traces_service_graph_request_total{{{source}}})")
    assert len(groups) == len(expected)


def test_scraped_series_carry_the_tenant(stack):
    _, prom, _ = stack
    tenants = prom.query(f"count by (tenant) (traces_spanmetrics_calls_total{{{SCRAPED}}})")
    assert [r["metric"].get("tenant") for r in tenants] == [TENANT]
    remote = prom.query(f"count by (tenant) (traces_spanmetrics_calls_total{{{REMOTE}}})")
    assert [r["metric"].get("tenant") for r in remote] == [None], "remote_write names the tenant in a header"


def test_grafana_queries(stack):
    """The PromQL Grafana's Tempo datasource runs for the service map and the APM table."""
    _, prom, _ = stack
    prom.wait_for(f"sum(traces_service_graph_request_total{{{REMOTE}}})")
    # Two samples are needed for rate(); the generator pushes every second.
    apm = prom.wait_for(
        f'topk(5, sum(rate(traces_spanmetrics_calls_total{{{REMOTE},span_kind="SPAN_KIND_SERVER"}}[1m])) by (span_name))',
        timeout=30,
    )
    assert {r["metric"]["span_name"] for r in apm} <= {
        "GET /catalog",
        "GET /api/catalog",
        "POST /job/deploy/build",
        "POST /api/v1/applications/sync",
        "POST /messages",
    }
    p90 = prom.wait_for(
        f'histogram_quantile(.9, sum(rate(traces_spanmetrics_latency_bucket{{{REMOTE},span_name=~"GET /api/catalog"}}[1m])) by (le))',
        lambda r: len(r) == 1 and r[0]["value"][1] != "NaN",
        timeout=30,
    )
    # 12 spans of 30 ms (backstage) and 12 of 40 ms (portal's client): p90 is in (0.032, 0.064].
    assert 0.032 < float(p90[0]["value"][1]) <= 0.064
    edge_p90 = prom.wait_for(
        f'histogram_quantile(0.9, sum(rate(traces_service_graph_request_server_seconds_bucket{{{REMOTE},client="jenkins",server="argocd"}}[1m])) by (le, client, server))',
        lambda r: len(r) == 1 and r[0]["value"][1] != "NaN",
        timeout=30,
    )
    assert 0.2 < float(edge_p90[0]["value"][1]) <= 0.4


def test_shipped_recording_rules_evaluate_on_spoor_series(stack):
    _, prom, _ = stack
    ratio = prom.wait_for(
        'service:spoor_server_span_errors:ratio_rate5m{service="argocd"}',
        lambda r: len(r) >= 1 and all(float(x["value"][1]) > 0 for x in r),
        timeout=60,
    )
    # Scraped and remote-written series both count: the ratio is the same either way.
    assert {round(float(r["value"][1]), 6) for r in ratio} == {0.25}
    healthy = prom.wait_for('service:spoor_server_span_errors:ratio_rate5m{service="backstage"}', timeout=60)
    assert {float(r["value"][1]) for r in healthy} == {0.0}
    for group in prom.rules():
        for rule in group["rules"]:
            assert rule["health"] != "err", f"{rule['name']}: {rule.get('lastError')}"


@pytest.mark.parametrize("source", [REMOTE, SCRAPED])
def test_exemplars_resolve_to_traces(stack, source):
    server, prom, sent = stack
    now = time.time()
    selector = f'traces_spanmetrics_latency_bucket{{{source},service="backstage",span_name="GET /api/catalog"}}'
    deadline = time.monotonic() + 60
    exemplars: list[dict] = []
    while not exemplars:
        for series in prom.query_exemplars(selector, now - 600, time.time() + 60):
            exemplars.extend(series["exemplars"])
        if not exemplars:
            assert time.monotonic() < deadline, f"no exemplars for {selector}"
            time.sleep(0.5)
    for ex in exemplars:
        trace_id = ex["labels"]["traceID"]
        assert trace_id in sent["portal"], f"exemplar {ex} names a trace that was not sent"
        assert len(ex["labels"]["spanID"]) == 16
        assert 0.029 <= float(ex["value"]) <= 0.031
        r = http_get(f"{server.api_url}/api/v2/traces/{trace_id}", headers={"X-Scope-OrgID": TENANT})
        assert r.status == 200, f"trace {trace_id}: {r.status} {r.body[:200]!r}"
        assert b"backstage" in r.body and b"postgresql" in r.body
    # Still found once the traces are in blocks.
    server.flush()
    r = http_get(f"{server.api_url}/api/v2/traces/{exemplars[0]['labels']['traceID']}", headers={"X-Scope-OrgID": TENANT})
    assert r.status == 200 and b"backstage" in r.body


def test_spoor_reports_its_generator(stack):
    server, _, _ = stack
    body = http_get(f"{server.api_url}/metrics").body.decode()
    total_spans = 4 * PORTAL_FLOWS + 3 * PIPELINES + 3 * MESSAGES
    assert f'spoor_generator_spans_total{{tenant="{TENANT}"}} {total_spans}' in body
    assert 'spoor_remote_write_requests_total{endpoint="prometheus",outcome="ok"}' in body
    assert 'outcome="failed_permanent"' not in body


def test_native_histograms_reach_prometheus(native_stack):
    """With `generate_native_histograms: both`, remote_write carries native histograms that
    Prometheus (with --enable-feature=native-histograms) stores and PromQL reads, beside the
    classic bucket series."""
    _, prom, _ = native_stack
    selector = f'traces_spanmetrics_latency{{{REMOTE},service="backstage",span_name="GET /api/catalog"}}'
    count = prom.wait_for(f"histogram_count({selector})", has_value(PORTAL_FLOWS), timeout=60)
    assert float(count[0]["value"][1]) == PORTAL_FLOWS
    total = prom.query(f"histogram_sum({selector})")
    assert abs(float(total[0]["value"][1]) - PORTAL_FLOWS * 0.030) < 1e-6
    # 30 ms spans: the median lies in the native bucket holding 0.030 (buckets ~9 % wide).
    p50 = prom.query(f"histogram_quantile(0.5, {selector})")
    assert 0.030 / 1.1 < float(p50[0]["value"][1]) < 0.030 * 1.1, p50
    # Grafana's service map on native histograms: server latency of jenkins -> argocd (250 ms).
    edge = f'traces_service_graph_request_server_seconds{{{REMOTE},client="jenkins",server="argocd"}}'
    prom.wait_for(f"histogram_count({edge})", has_value(PIPELINES), timeout=60)
    # The classic series are still there ("both").
    classic = prom.query(f'traces_spanmetrics_latency_count{{{REMOTE},service="backstage",span_name="GET /api/catalog"}}')
    assert [float(r["value"][1]) for r in classic] == [PORTAL_FLOWS]


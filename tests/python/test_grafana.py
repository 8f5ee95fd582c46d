"""Grafana provisioning and dashboards (deploy/grafana), checked against what Spoor really emits.

The provisioning files must parse, and every data-source UID a dashboard, a link or a variable
names must be provisioned with the right type. Then one Spoor is fed traffic (`spoor loadgen`,
spans with a bad ID, the DORA fixture of test_dora.py through the OpenTelemetry SDK, a search, a
flush, a compaction) and a second one refuses everything through its memory limiter; a real
Prometheus scrapes both (`/metrics` and `/metrics/generated`). Every PromQL of every dashboard,
of the Tempo data source's tracesToMetrics links and of every template variable is run there
with Grafana's variables substituted: it must parse, name only series Prometheus has, and
return data. A failure names the dashboard, the panel and the query. TraceQL panels run
against Spoor's search API.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from opentelemetry.trace import SpanKind

from conftest import REPO, SPOOR_BIN, _free_ports, http_get, http_request
from prometheus import PrometheusError, ScrapeJob
from test_dora import Sender, launch, send_fixture

GRAFANA = REPO / "deploy" / "grafana"
PROVISIONING = GRAFANA / "provisioning"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Environment variables the provisioning may read (Grafana expands $NAME and ${NAME} in these
# files); deploy/grafana/README.md documents each.
PROVISIONING_ENV = {"SPOOR_TENANT", "SPOOR_TOKEN"}
# What Grafana puts in for its own variables when the test evaluates a query.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range_s": "3600",
    "__range": "1h",
}
# Grafana's built-in panel types (plugin IDs are case-sensitive: "nodegraph" is no panel).
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "nodeGraph", "state-timeline",
               "status-history", "barchart", "text", "logs", "traces"}  # fmt: skip
# The series the Tempo data source's service map (serviceMap.datasourceUid) asks Prometheus for.
SERVICE_MAP_SERIES = [
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_sum",
    "traces_service_graph_request_server_seconds_count",
    "traces_service_graph_request_server_seconds_bucket",
]


def load_datasources() -> list[dict]:
    out = []
    for path in sorted((PROVISIONING / "datasources").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert doc.get("apiVersion") == 1, path
        out += doc["datasources"]
    return out


def grafana_unescape(text: str, env: dict[str, str] | None = None) -> str:
    """Grafana's expansion of a provisioning value: `$$` is a literal `$`; $NAME and ${NAME}
    are environment variables, from `env` (unset ones expand to the empty string)."""
    names = re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", text.replace("$$", ""))
    unknown = set(names) - PROVISIONING_ENV
    assert not unknown, f"{text!r} reads environment variables {unknown} that the README does not document"
    env = env or {}
    value = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), text.replace("$$", "\0"))
    return value.replace("\0", "$")


def spoor_headers(source: dict, env: dict[str, str] | None = None) -> dict[str, str]:
    """The headers Grafana sends to a data source (httpHeaderNameN / httpHeaderValueN), as
    Grafana expands them with the environment `env`."""
    data = source["jsonData"]
    names = {k.removeprefix("httpHeaderName"): v for k, v in data.items() if k.startswith("httpHeaderName")}
    secure = source.get("secureJsonData", {})
    return {name: grafana_unescape(secure[f"httpHeaderValue{n}"], env) for n, name in names.items()}


def walk(node):
    """Every dict inside a JSON/YAML document."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def panels(dashboard: dict):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # inside collapsed rows


def substitute(query: str, values: dict[str, str]) -> str:
    """Grafana's variable syntax ($name, ${name}, ${name:fmt}, [[name]]) with `values`."""

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        assert name in values, f"unknown variable {name!r} in {query!r}"
        return values[name]

    pattern = r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]|\$([A-Za-z_][A-Za-z0-9_]*)"
    return re.sub(pattern, one, query)


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan"}  # fmt: skip


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label
    matchers, grouping clauses and ranges that are not functions or keywords."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _PROMQL_WORDS:
            continue
        if re.match(r"\d", s[max(0, m.start() - 1) : m.start()]):  # the `e`/`m` of 1e3, 5m
            continue
        names.add(m.group(0))
    return names


def test_metric_names_reads_selectors():
    q = 'histogram_quantile(0.95, sum by (service, le) (rate(x_bucket{a=~"b|c"}[5m]))) / on(service) y_total > 0'
    assert metric_names(q) == {"x_bucket", "y_total"}
    assert metric_names("sum(increase(z[1h])) / (3600 / 86400)") == {"z"}


def test_provisioning_parses_and_links_only_provisioned_datasources():
    sources = load_datasources()
    by_uid = {d["uid"]: d for d in sources}
    types = {uid: d["type"] for uid, d in by_uid.items()}
    assert types == {"spoor": "tempo", "prometheus": "prometheus", "loki": "loki"}
    assert len(by_uid) == len(sources), "a UID is provisioned twice"
    spoor = by_uid["spoor"]["jsonData"]
    for key in ["tracesToLogsV2", "tracesToMetrics", "serviceMap", "lokiSearch"]:
        assert key in spoor, f"the Spoor data source lacks {key}"
    assert spoor["nodeGraph"] == {"enabled": True}
    for d in sources:
        for node in walk(d):
            for key, value in node.items():
                if key == "datasourceUid":
                    assert value in by_uid, f"{d['name']}: datasourceUid {value!r} is not provisioned"
                if isinstance(value, str):
                    grafana_unescape(value)
    logs = spoor["tracesToLogsV2"]
    assert grafana_unescape(logs["query"]) == '{${__tags}} | trace_id="${__trace.traceId}"'
    assert logs["spanStartTimeShift"].startswith("-") and logs["tags"]
    # Multi-tenant and auth setups: the headers Spoor reads, their values from the environment.
    headers = spoor_headers(by_uid["spoor"])
    assert headers == {"X-Scope-OrgID": "", "Authorization": "Bearer "}
    loki = by_uid["loki"]["jsonData"]["derivedFields"]
    assert all(f["datasourceUid"] == "spoor" and grafana_unescape(f["url"]) == "${__value.raw}" for f in loki)
    line = "2026-01-01 INFO checkout trace_id=5b8efff798038103d269b633813fc60c span_id=eee19b7ec3c1b174 paid"
    assert re.search(loki[0]["matcherRegex"], line).group(1) == "5b8efff798038103d269b633813fc60c"
    assert by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "spoor"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "spoor.yaml").read_text())["providers"]
    readme = (GRAFANA / "README.md").read_text()
    for p in providers:
        assert p["type"] == "file" and p["options"]["path"] in readme, "the README must say where to mount it"
    for name in PROVISIONING_ENV:
        assert name in readme, f"the README must document ${name}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_datasources_are_provisioned(path: Path):
    types = {d["uid"]: d["type"] for d in load_datasources()}
    board = json.loads(path.read_text())
    assert board["uid"] and board["title"] and "spoor" in board["tags"], path.name
    ds_vars = {v["name"]: v for v in board.get("templating", {}).get("list", []) if v["type"] == "datasource"}
    for v in ds_vars.values():
        assert v["current"]["value"] in types and types[v["current"]["value"]] == v["query"], (path.name, v["name"])
    seen = 0
    for node in walk(board):
        ds = node.get("datasource")
        if not isinstance(ds, dict):
            continue
        seen += 1
        uid = ds["uid"]
        m = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
        if m:
            var = ds_vars.get(m.group(1) or m.group(2))
            assert var, f"{path.name}: {node.get('title') or node.get('refId')}: {uid} is not a data-source variable"
            assert var["query"] == ds["type"], f"{path.name}: {uid} is a {var['query']} variable, used as {ds['type']}"
        else:
            where = node.get("title") or node.get("refId")
            assert uid in types, f"{path.name}: {where}: data source {uid!r} not provisioned"
            assert types[uid] == ds["type"], f"{path.name}: {uid} is {types[uid]}, used as {ds['type']}"
    assert seen, path.name
    unknown = {p["type"] for p in panels(board)} - PANEL_TYPES
    assert not unknown, f"{path.name}: unknown panel types {unknown}"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"


# ---------------------------------------------------------------------------------------
# The queries, against a real Prometheus scraping a Spoor that was fed traffic


@dataclass
class Fed:
    prom: object
    spoor: object
    services: list[str]
    start: float


# Two flushed blocks of a window are enough for a merge (the default waits for eight).
CONFIG = """
compaction:
  max_input_blocks: 2
processors:
  memory_limiter: {check_interval: 1s, limit_mib: 100000}
"""
# A second server whose memory limiter refuses everything: requests refused before their body.
REFUSING = """
processors:
  memory_limiter: {check_interval: 100ms, limit_mib: 1, spike_limit_mib: 0}
"""


def loadgen(endpoint: str, seconds: int, seed: int) -> str:
    cmd = [str(SPOOR_BIN), "loadgen", "--endpoint", endpoint, "--duration", str(seconds), "--rate", "400",
           "--connections", "2", "--seed", str(seed)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def fed(tmp_path_factory, prometheus_factory):
    ports, refusing_ports = _free_ports(3), _free_ports(3)
    targets = [f"127.0.0.1:{ports[2]}", f"127.0.0.1:{refusing_ports[2]}"]
    prom = prometheus_factory(
        scrape=[
            ScrapeJob(targets, job_name="spoor", metrics_path="/metrics"),
            ScrapeJob(targets[:1], job_name="spoor-generated", metrics_path="/metrics/generated"),
        ]
    )
    server = launch(tmp_path_factory, "grafana", CONFIG, ports)
    refusing = launch(tmp_path_factory, "grafana-refusing", REFUSING, refusing_ports)
    start = time.time()
    try:
        s = server.spoor
        # The refusing server: its limiter measured more than 1 MiB resident, so it refuses.
        time.sleep(0.5)
        report = loadgen(f"http://{refusing.spoor.grpc_endpoint}", 1, 3)
        assert re.search(r": 0 spans accepted", report), report
        send_fixture(s)
        prom.wait_for('spoor_dora_deployments_total{job="spoor-generated"}')
        # The fixture's old spans in a block of their own, then two blocks of current traffic in
        # one window: the compaction below merges those two.
        for seed in (0, 1, 2):
            if seed:
                report = loadgen(f"http://{s.grpc_endpoint}", 3, seed)
                assert "0 failed" in report, report
            r = http_request("POST", f"{s.api_url}/flush", timeout=120)
            assert r.status == 204, (r.status, r.body)
        # A deployment after Prometheus saw the counters, so the timeline has an increase to show.
        out = Sender(s)
        t = out.tracer(**{"service.name": "github-actions"})
        attrs = {
            "cicd.pipeline.task.type": "deploy",
            "deployment.environment.name": "production",
            "deployment.name": "cart",
        }
        now = int(time.time()) * 1_000_000_000
        t.start_span("deploy", kind=SpanKind.INTERNAL, start_time=now - 10**9, attributes=attrs).end(end_time=now)
        out.close()
        # Spans with a bad trace ID: refused one by one (partial success).
        span = {"traceId": "0" * 32, "spanId": "eee19b7ec3c1b174", "name": "x", "startTimeUnixNano": "1",
                "endTimeUnixNano": "2"}  # fmt: skip
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "bad"}}]}
        bad = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
        json_body = {"Content-Type": "application/json"}
        r = http_request("POST", f"{s.otlp_http_url}/v1/traces", json_body, json.dumps(bad).encode())
        assert r.status == 200 and b"rejected" in r.body.lower(), (r.status, r.body)
        r = http_request("POST", f"{s.api_url}/api/admin/compact", timeout=120)
        assert r.status in (200, 204), (r.status, r.body)
        assert http_get(f"{s.api_url}/api/search?q=" + urllib.parse.quote("{ status = error }")).status == 200
        server_spans = prom.wait_for('traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER"}')
        services = sorted({m["metric"]["service"] for m in server_spans})
        # What the dashboards read has been scraped a few times (rates need two samples).
        for q in ["spoor_compactions_total", "spoor_requests_refused_total", "spoor_spans_refused_total",
                  "spoor_queries_total", "spoor_memory_resident_bytes", "traces_service_graph_unpaired_spans_total",
                  "spoor_live_bytes"]:  # fmt: skip
            prom.wait_for(f"min(count_over_time({q}[1m])) >= 3", timeout=60)
        yield Fed(prom, s, services, start)
    finally:
        refusing.stop()
        server.stop()


def prometheus_queries(board: dict) -> list[tuple[str, str, str | None]]:
    """(where, expr, min interval) for every Prometheus query of a dashboard: panels (with the
    panel's or target's minimum interval, which Grafana's $__interval never goes below) and
    annotations."""
    ds_vars = {v["name"] for v in board.get("templating", {}).get("list", []) if v["type"] == "datasource"}
    out = []
    for p in panels(board):
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource") or {}
            if "expr" in t and (ds.get("type") == "prometheus" or ds.get("uid", "").strip("${}") in ds_vars):
                interval = t.get("interval") or p.get("interval")
                out.append((f"panel {p['title']!r} query {t['refId']}", t["expr"], interval))
    for a in board.get("annotations", {}).get("list", []):
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"], a.get("step")))
    return out


def check_promql(fed: Fed, where: str, expr: str, values: dict[str, str], names: set[str]) -> str | None:
    """None if the query is fine, else why not."""
    q = substitute(expr, values)
    missing = metric_names(q) - names
    if missing:
        return f"{where}: {expr}\n  names series Prometheus does not have: {sorted(missing)}"
    end = time.time()
    start = end - 5 * math.ceil((end - fed.start) / 5)  # so that `end` is a step: the newest data counts
    try:
        result = fed.prom.query_range(q, start, end, 5)
    except PrometheusError as e:
        return f"{where}: {expr}\n  {str(e).splitlines()[0]}"
    if not result:
        return f"{where}: {expr}\n  returns no data (as run: {q})"
    return None


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_runs_on_the_series_spoor_emits(fed: Fed, path: Path):
    board = json.loads(path.read_text())
    names = set(fed.prom.api("label/__name__/values"))
    values = dict(GRAFANA_VARIABLES)
    problems = []
    for v in board.get("templating", {}).get("list", []):
        if v["type"] == "datasource":
            values[v["name"]] = v["current"]["value"]
        elif v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["definition"])
            assert m, f"{path.name}: variable {v['name']}: {v['definition']}"
            found = fed.prom.api(f"label/{m.group(2)}/values", [("match[]", m.group(1))])
            if not found:
                problems.append(f"variable {v['name']}: {v['definition']} has no values")
            values[v["name"]] = v.get("allValue") or ".*"
    queries = prometheus_queries(board)
    assert queries, path.name
    for where, expr, interval in queries:
        problem = check_promql(fed, where, expr, {**values, "__interval": interval or values["__interval"]}, names)
        if problem:
            problems.append(problem)
    # TraceQL panels: through Spoor's search API, with the same variables.
    for p in panels(board):
        for t in p.get("targets", []):
            if t.get("queryType") == "traceql":
                q = substitute(t["query"], values)
                r = http_get(f"{fed.spoor.api_url}/api/search?" + urllib.parse.urlencode({"q": q, "limit": 20}))
                if r.status != 200 or not json.loads(r.body).get("traces"):
                    problems.append(f"panel {p['title']!r}: TraceQL {t['query']}: {r.status} {r.body[:200]!r}")
            if t.get("exemplar"):
                ex = fed.prom.query_exemplars(substitute(t["expr"], values), fed.start, time.time())
                label = load_exemplar_label()
                if not any(label in e["labels"] for s in ex for e in s["exemplars"]):
                    problems.append(f"panel {p['title']!r}: no exemplar with a {label} label for {t['expr']}")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def load_exemplar_label() -> str:
    prom = next(d for d in load_datasources() if d["uid"] == "prometheus")
    return prom["jsonData"]["exemplarTraceIdDestinations"][0]["name"]


def test_the_spoor_datasource_queries_run_too(fed: Fed):
    """tracesToMetrics (with $__tags as Grafana fills it from a span of a real service), the
    service map's series, and the provisioned headers with their variables unset."""
    names = set(fed.prom.api("label/__name__/values"))
    spoor = next(d for d in load_datasources() if d["uid"] == "spoor")
    tag = spoor["jsonData"]["tracesToMetrics"]["tags"][0]["value"]
    problems = []
    for q in spoor["jsonData"]["tracesToMetrics"]["queries"]:
        expr = grafana_unescape(q["query"]).replace("$__tags", f'{tag}="{fed.services[0]}"')
        problem = check_promql(fed, f"tracesToMetrics {q['name']!r}", expr, {}, names)
        if problem:
            problems.append(problem)
    problems += [f"the service map reads {n}, which Prometheus lacks" for n in SERVICE_MAP_SERIES if n not in names]
    assert not problems, "\n".join(problems)
    r = http_get(f"{fed.spoor.api_url}/api/search?q=" + urllib.parse.quote("{ }"), spoor_headers(spoor))
    assert r.status == 200 and json.loads(r.body)["traces"], (r.status, r.body[:300])


def test_health_alerts_read_only_series_spoor_emits(fed: Fed):
    """deploy/prometheus/spoor-health-alerts.rules.yml (the alerts docs/operations.md
    recommends): every expression parses in Prometheus and names only series it has."""
    names = set(fed.prom.api("label/__name__/values"))
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "spoor-health-alerts.rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) >= 10
    problems = []
    runbook = (REPO / "docs" / "operations.md").read_text()
    for rule in alerts:
        missing = metric_names(rule["expr"]) - names
        if missing:
            problems.append(f"{rule['alert']}: {rule['expr']}\n  names series Prometheus lacks: {sorted(missing)}")
        try:
            fed.prom.query(rule["expr"])
        except PrometheusError as e:
            problems.append(f"{rule['alert']}: {str(e).splitlines()[0]}")
        if rule["alert"] not in runbook:
            problems.append(f"{rule['alert']} is not explained in docs/operations.md")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("setup", ["multi-tenant", "auth"])
def test_the_spoor_datasource_headers_carry_tenant_and_token(tmp_path_factory, setup: str):
    """The provisioned headers, with SPOOR_TENANT (and SPOOR_TOKEN) set as the README says, read
    one tenant's traces from a multi-tenant Spoor, and from one with tokens; unset, they are
    refused there."""
    spoor_source = next(d for d in load_datasources() if d["uid"] == "spoor")
    config = "tenancy:\n  multitenancy_enabled: true\n"
    ingest = {"X-Scope-OrgID": "team-a"}
    env = {"SPOOR_TENANT": "team-a"}
    if setup == "auth":
        tokens = tmp_path_factory.mktemp("tokens") / "tokens.yaml"
        digest = {t: hashlib.sha256(t.encode()).hexdigest() for t in ("ingest-secret", "grafana-secret")}
        tokens.write_text(yaml.safe_dump([
            {"name": "app", "sha256": digest["ingest-secret"], "tenants": ["team-a"], "roles": ["ingest"]},
            {"name": "grafana", "sha256": digest["grafana-secret"], "tenants": ["team-a"], "roles": ["read"]},
        ]))  # fmt: skip
        config += f"auth:\n  enabled: true\n  tokens_file: {tokens}\n"
        ingest["Authorization"] = "Bearer ingest-secret"
        env["SPOOR_TOKEN"] = "grafana-secret"
    server = launch(tmp_path_factory, f"grafana-{setup}", config)
    try:
        s = server.spoor
        now = time.time_ns()
        span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "GET /a",
                "kind": 2, "startTimeUnixNano": str(now - 10**9), "endTimeUnixNano": str(now)}  # fmt: skip
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "tenant-a-app"}}]}
        body = json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}).encode()
        ingest["Content-Type"] = "application/json"
        r = http_request("POST", f"{s.otlp_http_url}/v1/traces", ingest, body)
        assert r.status == 200, (r.status, r.body)
        url = f"{s.api_url}/api/search?q=" + urllib.parse.quote('{ resource.service.name = "tenant-a-app" }')
        r = http_get(url, spoor_headers(spoor_source, env))
        assert r.status == 200, (r.status, r.body)
        assert [t["traceID"] for t in json.loads(r.body)["traces"]] == ["5b8efff798038103d269b633813fc60c"]
        r = http_get(url, spoor_headers(spoor_source, {}))
        assert r.status == 401, (r.status, r.body)
    finally:
        server.stop()

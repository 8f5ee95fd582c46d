"""`spoor demo` and `spoor lab`, end to end against a real server (docs/dojo/).

Each run sends to a tenant of its own on one multi-tenant server, so every check sees only the
data that run generated. For each scenario, the trace shapes its lab relies on are checked with
TraceQL through the API (and traces by ID where the shape is a tree). For each lab, `lab start`
runs the scenario, the right answer is worked out here from the API data, independently of the
binary's checker, and `lab check` must accept it (exit 0) and refuse a wrong one (exit 1).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import SPOOR_BIN, Spoor, http_get

CALLEES = ["argocd-server", "kube-apiserver", "harbor", "lab-service", "terraform-runner"]
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARN|ERROR) service=\S+ trace_id=([0-9a-f]{32}) span_id=[0-9a-f]{16} "
)


@pytest.fixture(scope="module", params=["live"])
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def spoor_env() -> dict[str, str]:
    return {"SPOOR__TENANCY__MULTITENANCY_ENABLED": "true"}


def new_tenant() -> str:
    return f"dojo-{uuid.uuid4().hex[:10]}"


def demo(spoor: Spoor, tenant: str, *args: str, transport: str = "grpc", duration: str = "3s") -> subprocess.CompletedProcess:
    endpoint = f"http://{spoor.grpc_endpoint}" if transport == "grpc" else spoor.otlp_http_url
    cmd = [str(SPOOR_BIN), "demo", "--endpoint", endpoint, "--transport", transport, "--tenant", tenant]
    r = subprocess.run(
        [*cmd, "--duration", duration, "--rate", "10", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"spoor demo failed: {r.stderr}"
    return r


def search(spoor: Spoor, tenant: str, q: str, limit: int = 50) -> list[dict]:
    query = urllib.parse.urlencode({"q": q, "limit": limit, "spss": 50})
    r = http_get(f"{spoor.api_url}/api/search?{query}", {"X-Scope-OrgID": tenant})
    assert r.status == 200, f"{q}: {r.status} {r.body[:300]!r}"
    return json.loads(r.body)["traces"]


def spans_of(spoor: Spoor, tenant: str, trace_id: str) -> list[dict]:
    """Every span of a trace (v2 JSON), with its service and hex IDs."""
    r = http_get(f"{spoor.api_url}/api/v2/traces/{trace_id}", {"X-Scope-OrgID": tenant})
    assert r.status == 200, f"trace {trace_id}: {r.status}"
    out = []
    for rs in json.loads(r.body)["trace"]["resourceSpans"]:
        service = next(a["value"]["stringValue"] for a in rs["resource"]["attributes"] if a["key"] == "service.name")
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s = dict(s, service=service)
                for k in ("spanId", "parentSpanId"):
                    s[k] = base64.b64decode(s.get(k, "")).hex()
                s["attrs"] = {a["key"]: next(iter(a["value"].values())) for a in s.get("attributes", [])}
                out.append(s)
    return out


def innermost(spans: list[dict], marked) -> list[dict]:
    """The marked spans with no marked descendant."""
    by_id = {s["spanId"]: s for s in spans}
    above_marked = set()
    for s in spans:
        if marked(s):
            p = s["parentSpanId"]
            while p and p not in above_marked:
                above_marked.add(p)
                p = by_id.get(p, {}).get("parentSpanId", "")
    return [s for s in spans if marked(s) and s["spanId"] not in above_marked]


def is_error(s: dict) -> bool:
    return s.get("status", {}).get("code") == "STATUS_CODE_ERROR"


def is_timeout(s: dict) -> bool:
    return s["attrs"].get("error.type") == "timeout"


def origins(spoor: Spoor, tenant: str, q: str, marked, point) -> Counter:
    """Over the traces q finds: what `point` says of each innermost marked span, once per trace."""
    votes: Counter = Counter()
    traces = search(spoor, tenant, q)
    assert traces, f"no trace matches {q}"
    for t in traces:
        votes.update({point(s) for s in innermost(spans_of(spoor, tenant, t["traceID"]), marked)})
    return votes


def dora(spoor: Spoor, tenant: str, path: str = "/api/dora") -> dict:
    r = http_get(f"{spoor.api_url}{path}?since=1h&hints=false", {"X-Scope-OrgID": tenant})
    assert r.status == 200, r.body
    return json.loads(r.body)


def test_healthy_flows_propagate_context_over_http_grpc_and_messaging(spoor: Spoor):
    tenant = new_tenant()
    r = demo(spoor, tenant, "--seed", "42", transport="http")
    lines = r.stdout.splitlines()
    assert lines and all(LOG_LINE.match(l) for l in lines), lines[:3]
    assert re.search(r"spoor demo: (\d+) traces, (\d+) spans sent \(0 refused\)", r.stderr), r.stderr
    # The log lines' trace IDs are the stored traces.
    logged = {LOG_LINE.match(l).group(2) for l in lines}
    some = sorted(logged)[0]
    assert any(s["service"] for s in spans_of(spoor, tenant, some))

    roots = {t["rootServiceName"] for t in search(spoor, tenant, "{ }", limit=200)}
    assert roots == {"nginx", "github", "backstage", "mattermost", "argocd-ui"}, roots
    assert not search(spoor, tenant, "{ status = error }")
    assert not search(spoor, tenant, '{ span.db.system = "postgresql" && duration > 1s }')
    # HTTP: NGINX → Backstage; gRPC: Backstage → lab service → Terraform; a queue: Mattermost → indexer.
    for q in [
        '{ resource.service.name = "nginx" && kind = client } > { resource.service.name = "backstage" && kind = server }',
        '{ span.rpc.system = "grpc" && kind = client && resource.service.name = "backstage" } > '
        '{ span.rpc.system = "grpc" && kind = server && resource.service.name = "lab-service" }',
        '{ resource.service.name = "lab-service" } >> { resource.service.name = "terraform-runner" } >> '
        '{ span.cloud.provider = "aws" && kind = client }',
        '{ kind = producer && span.messaging.system = "rabbitmq" } > { kind = consumer && resource.service.name = "search-indexer" }',
        '{ resource.service.name = "argocd-server" } >> { resource.service.name = "kube-apiserver" }',
        '{ span.argocd.sync.phase = "Succeeded" } > { resource.service.name = "argocd-application-controller" }',
    ]:
        assert search(spoor, tenant, q), q
    # A batch consumer links to the other messages of its batch, in other traces.
    linked = search(spoor, tenant, "{ kind = consumer && span.messaging.batch.message_count > 1 }")
    assert linked
    consumer = next(s for s in spans_of(spoor, tenant, linked[0]["traceID"]) if s["kind"] == "SPAN_KIND_CONSUMER")
    assert consumer["links"] and all(base64.b64decode(l["traceId"]).hex() != linked[0]["traceID"] for l in consumer["links"])
    # Healthy pipelines: deployments with lead times, none failed.
    d = dora(spoor, tenant)
    assert d["deployments"] >= 1 and d["failed_deployments"] == 0 and d["lead_time_seconds"]["median"] > 60, d


def test_seed_makes_a_run_reproducible(spoor: Spoor):
    a = demo(spoor, new_tenant(), "--seed", "7", "--scenario", "slow-database", duration="1s")
    b = demo(spoor, new_tenant(), "--seed", "7", "--scenario", "slow-database", duration="1s")
    strip = lambda out: [re.sub(r"^\S+ ", "", l) for l in out.splitlines()]  # noqa: E731 (timestamps differ)
    n = min(len(a.stdout.splitlines()), len(b.stdout.splitlines()))
    assert n > 0 and strip(a.stdout)[:n] == strip(b.stdout)[:n]


def test_slow_database_makes_one_statement_slow(spoor: Spoor):
    tenant = new_tenant()
    demo(spoor, tenant, "--scenario", "slow-database")
    traces = search(spoor, tenant, '{ span.db.system = "postgresql" && duration > 1s } | select(span.db.query.text)')
    statements = {
        a["value"]["stringValue"]
        for t in traces
        for ss in t["spanSets"]
        for s in ss["spans"]
        for a in s["attributes"]
        if a["key"] == "db.query.text"
    }
    assert len(traces) >= 3 and len(statements) == 1, statements


def test_error_origin_starts_in_one_service_and_surfaces_upstream(spoor: Spoor):
    tenant = new_tenant()
    demo(spoor, tenant, "--scenario", "error-origin")
    votes = origins(spoor, tenant, "{ status = error }", is_error, lambda s: s["service"])
    assert len(votes) == 1 and next(iter(votes)) in CALLEES, votes
    origin = next(iter(votes))
    # The origin's span carries the exception; the roots of its traces fail too.
    assert search(spoor, tenant, f'{{ resource.service.name = "{origin}" && event.exception.type != nil }}')
    # CI/CD runs its pipeline asynchronously, so a Harbor error stops at the pipeline.
    if origin != "harbor":
        roots = [
            s for t in search(spoor, tenant, "{ status = error }")
            for s in spans_of(spoor, tenant, t["traceID"]) if not s["parentSpanId"]
        ]  # fmt: skip
        assert any(is_error(s) for s in roots)


def test_cascading_failure_times_out_and_retries(spoor: Spoor):
    tenant = new_tenant()
    demo(spoor, tenant, "--scenario", "cascading-failure")
    assert search(spoor, tenant, '{ span.error.type = "timeout" && span.http.request.resend_count = 2 }')
    votes = origins(spoor, tenant, '{ span.error.type = "timeout" }', is_timeout, lambda s: s["attrs"]["peer.service"])
    assert len(votes) == 1 and next(iter(votes)) in CALLEES, votes
    # The stalled service keeps working past its caller's one-second timeout.
    stalled = next(iter(votes))
    assert search(spoor, tenant, f'{{ span.error.type = "timeout" }} > {{ resource.service.name = "{stalled}" && duration > 3s }}')


def test_bad_deploy_is_a_failed_deployment_and_an_incident_in_dora(spoor: Spoor):
    tenant = new_tenant()
    demo(spoor, tenant, "--scenario", "bad-deploy")
    d = dora(spoor, tenant)
    assert d["failed_deployments"] == 1 and d["incidents"] == 1 and d["change_failure_rate"] > 0, d
    listing = dora(spoor, tenant, "/api/dora/deployments")
    failed = [x for x in listing["deployments"] if x["outcome"] == "failure"]
    assert len(failed) == 1 and failed[0]["caused_incidents"], listing
    assert listing["incidents"][0]["cause_deployment_id"] == failed[0]["deployment_id"]
    assert listing["incidents"][0]["start"] > failed[0]["time"]


def test_noisy_tenant_sends_most_traffic_as_a_second_tenant(spoor: Spoor):
    tenant = new_tenant()
    r = demo(spoor, tenant, "--scenario", "noisy-tenant")
    per_tenant = dict(re.findall(r"([\w-]+): (\d+)", r.stderr.split("traces per tenant", 1)[1]))
    noisy = [t for t in per_tenant if t != tenant]
    assert len(noisy) == 1 and int(per_tenant[noisy[0]]) > int(per_tenant[tenant]), r.stderr
    ours, theirs = (len(search(spoor, t, "{ }", limit=500)) for t in (tenant, noisy[0]))
    assert theirs == int(per_tenant[noisy[0]]) and ours == int(per_tenant[tenant]) and theirs > ours


# ---------------------------------------------------------------------------------------
# Labs


def lab(spoor: Spoor, state: Path | None, *args: str) -> subprocess.CompletedProcess:
    where = ["--state", str(state)] if state else []
    return subprocess.run([str(SPOOR_BIN), "lab", *args, *where], capture_output=True, text=True, timeout=120)


def received(spoor: Spoor) -> Counter:
    """Spans received per tenant, from the server's own metrics."""
    r = http_get(f"{spoor.api_url}/metrics")
    assert r.status == 200
    found = re.findall(r'^spoor_spans_received_total\{tenant="([^"]+)"\} (\S+)$', r.body.decode(), re.M)
    return Counter({t: float(v) for t, v in found})


def right_and_wrong(spoor: Spoor, n: int, tenant: str, before: Counter) -> tuple[str, str]:
    """Lab n's answer from the API data, and a wrong one."""
    if n == 6:
        grown = received(spoor)
        grown.subtract(before)
        noisy = [t for t, _ in grown.most_common() if t != tenant][0]
        assert grown[noisy] > 0 and search(spoor, noisy, "{ }"), grown
        return noisy, tenant
    if n == 1:
        (origin, _), = origins(spoor, tenant, "{ status = error }", is_error, lambda s: s["service"]).most_common(1)
        return origin, next(c for c in CALLEES if c != origin)
    if n == 2:
        traces = search(spoor, tenant, '{ span.db.system = "postgresql" && duration > 1s } | select(span.db.collection.name)')
        tables = Counter(
            a["value"]["stringValue"]
            for t in traces for ss in t["spanSets"] for s in ss["spans"]
            for a in s["attributes"] if a["key"] == "db.collection.name"
        )  # fmt: skip
        table = tables.most_common(1)[0][0]
        return table, "posts" if table != "posts" else "channels"
    if n == 3:
        last = dora(spoor, tenant, "/api/dora/deployments")["deployments"][-1]
        lead = last["lead_time_seconds"]
        return f"{int(lead // 60)}m{round(lead % 60)}s", f"{round(lead + 60)}"
    if n == 4:
        votes = origins(spoor, tenant, '{ span.error.type = "timeout" }', is_timeout, lambda s: s["attrs"]["peer.service"])
        stalled = votes.most_common(1)[0][0]
        return stalled, next(c for c in CALLEES if c != stalled)
    listing = dora(spoor, tenant, "/api/dora/deployments")
    cause = listing["incidents"][-1]["cause_deployment_id"]
    return cause, next(d["deployment_id"] for d in listing["deployments"] if d["deployment_id"] != cause)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_lab_checks_the_answer_against_the_runs_data(spoor: Spoor, tmp_path: Path, n: int):
    tenant, state = new_tenant(), tmp_path / "lab.json"
    before = received(spoor)
    r = lab(spoor, state, "start", str(n), "--endpoint", f"http://{spoor.grpc_endpoint}", "--api", spoor.api_url,
            "--tenant", tenant, "--duration", "3s", "--rate", "10")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Question:" in r.stdout and f"spoor lab check {n}" in r.stdout, r.stdout
    assert json.loads(state.read_text())[str(n)]["tenant"] == tenant

    right, wrong = right_and_wrong(spoor, n, tenant, before)
    ok = lab(spoor, state, "check", str(n), right)
    assert ok.returncode == 0 and ok.stdout.startswith("Right!"), (right, ok.stdout, ok.stderr)
    bad = lab(spoor, state, "check", str(n), wrong)
    assert bad.returncode == 1 and bad.stdout.startswith("Not quite"), (wrong, bad.stdout, bad.stderr)


def test_lab_refuses_what_it_cannot_check(spoor: Spoor, tmp_path: Path):
    state = tmp_path / "lab.json"
    r = lab(spoor, state, "check", "1", "harbor")
    assert r.returncode == 1 and "has not been started" in r.stderr, r.stderr
    r = lab(spoor, state, "start", "9")
    assert r.returncode == 1 and "there is no lab 9" in r.stderr, r.stderr
    r = lab(spoor, None, "list")
    assert r.returncode == 0 and len(re.findall(r"^\d+\. ", r.stdout, re.M)) == 6, r.stdout

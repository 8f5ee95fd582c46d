"""DORA metrics from CI/CD traces, end to end (docs/dora.md).

A hand-computed fixture goes through the OpenTelemetry SDK: pipeline traces in the OpenTelemetry
CI/CD conventions and in the Jenkins plugin's legacy names, deployments to production and to
staging, failed ones (by `deployment.status` and by span status), a root span that arrives after
its deployment, deployments on both edges of the window, and incidents with and without a cause.
`/api/dora` must equal the hand-computed figures exactly: as sent, after a flush, after a
restart (also after a SIGKILL right after an acknowledgement), and on a server whose tail
sampling drops most of those traces. Then `spoor dora`'s output, `/api/dora/deployments` (with
the change-failure hints and the incidents), tenants kept apart, and the DORA series in the real
Prometheus, scraped from `/metrics/generated` and pushed by remote_write.

The window is the ten days [T0, T0 + 10 d), T0 a midnight ten days ago.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import SPOOR_BIN, RecordingExporter, Spoor, _free_ports, _wait_ready, http_get, http_request
from prometheus import ScrapeJob

S = 1_000_000_000
DAY = 86_400
T0 = (int(time.time()) // DAY - 10) * DAY
START, END = T0, T0 + 10 * DAY

# (name, deployment id, environment, service, end (unix s), lead time s or None, failed, vocabulary)
# P6's root span is sent after its deployment, in a later request.
PIPELINES = [
    ("P8", "dep-8", "production", "checkout", T0 - DAY, 240, False, "otel"),  # before the window
    ("P0", "dep-0", "production", "checkout", T0, 120, False, "otel"),  # on its start: in
    ("P1", "dep-1", "production", "checkout", T0 + 1 * DAY + 600, 600, False, "otel"),
    ("P2", "dep-2", "production", "checkout", T0 + 2 * DAY + 1800, 1800, False, "otel"),
    ("P3", "dep-3", "production", "checkout", T0 + 3 * DAY + 900, 900, True, "otel"),
    ("P4", "dep-4", "production", "cart", T0 + 4 * DAY + 3600, 3600, False, "jenkins"),
    ("P5", "dep-5", "production", "cart", T0 + 5 * DAY + 1200, 1200, True, "jenkins"),
    ("P6", "dep-6", "production", "cart", T0 + 6 * DAY + 7200, 7200, False, "otel-late-root"),
    ("P7", "dep-7", "staging", "checkout", T0 + 7 * DAY, 300, False, "otel"),
    ("P10", "dep-10", "production", "cart", T0 + 8 * DAY, 60, False, "jenkins"),
    ("P9", "dep-9", "production", "checkout", T0 + 10 * DAY, 480, False, "otel"),  # on its end: out
]
# (incident id, environment, service, opened, resolved, cause)
INCIDENTS = [
    ("INC-0", "production", "checkout", T0 - 2 * DAY, T0 - 2 * DAY + 99_999, ""),  # resolved before the window
    ("INC-1", "production", "checkout", T0 + 2 * DAY + 3600, T0 + 2 * DAY + 5400, "dep-2"),
    ("INC-2", "production", "cart", T0 + 5 * DAY + 2000, T0 + 5 * DAY + 2600, ""),
    ("INC-3", "production", "cart", T0 + 5 * DAY + 6000, T0 + 5 * DAY + 9000, "dep-5"),  # a failed one
    ("INC-4", "staging", "checkout", T0 + 7 * DAY + 100, T0 + 7 * DAY + 200, "dep-7"),
]

# By hand, production over [T0, T0+10d): P0 P1 P2 P3 P4 P5 P6 P10 (P8 before, P9 at the end).
# Successful: P0 P1 P2 P4 P6 P10, lead times 60 120 600 1800 3600 7200: median (600+1800)/2,
# p90 at rank 5·0.9 = 4.5: 3600 + 0.5·3600. Failed: P3, P5; INC-1 names the successful P2
# (INC-3 names P5, already failed): (2 + 1) / 8. Incidents INC-1..3: 1800, 600, 3000 s.
PRODUCTION = {
    "deployments": 8,
    "failed_deployments": 2,
    "deployment_frequency_per_day": 0.6,
    "lead_time_seconds": {"median": 1200.0, "p90": 5400.0},
    "change_failure_rate": 0.375,
    "time_to_restore_seconds": {"median": 1800.0},
    "incidents": 3,
    "levels": {
        "deployment_frequency": "high",
        "lead_time": "elite",
        "change_failure_rate": "medium",
        "time_to_restore": "elite",
    },
}
# Staging: P7 (lead 300), named by INC-4 (100 s).
STAGING = {
    "deployments": 1,
    "failed_deployments": 0,
    "deployment_frequency_per_day": 0.1,
    "lead_time_seconds": {"median": 300.0, "p90": 300.0},
    "change_failure_rate": 1.0,
    "time_to_restore_seconds": {"median": 100.0},
    "incidents": 1,
    "levels": {
        "deployment_frequency": "medium",
        "lead_time": "elite",
        "change_failure_rate": "low",
        "time_to_restore": "elite",
    },
}
# by=service in production. checkout: P0 P1 P2 (120 600 1800) and failed P3, INC-1 names P2.
# cart: P4 P6 P10 (3600 7200 60) and failed P5, INC-2 and INC-3 (600, 3000 s).
BY_SERVICE = {
    "checkout": (4, 1, 600.0, 0.5, 1, 1800.0),
    "cart": (4, 1, 3600.0, 0.25, 2, 1800.0),
}

TAIL_SAMPLING = """
processors:
  tail_sampling:
    decision_wait: 1s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
"""


@dataclass
class Server:
    """A `spoor serve` that can be stopped and started again on the same data dir."""

    spoor: Spoor
    config: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        s = self.spoor
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
        cmd = [
            str(SPOOR_BIN), "serve", "--config", str(self.config),
            "--data-dir", str(s.data_dir),
            "--otlp-grpc-listen", s.grpc_endpoint,
            "--otlp-http-listen", s.otlp_http_url.removeprefix("http://"),
            "--http-listen", s.api_url.removeprefix("http://"),
        ]  # fmt: skip
        with open(s.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        _wait_ready(self.proc, s)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final sync; only what was durable survives."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0, self.spoor.log_tail()


def launch(tmp_path_factory, name: str, extra_config: str = "", ports: list[int] | None = None) -> Server:
    base = tmp_path_factory.mktemp(name)
    grpc_port, http_port, api_port = ports or _free_ports(3)
    config = base / "spoor.yaml"
    config.write_text("metrics_generator:\n  collection_interval: 1s\n" + extra_config)
    spoor = Spoor(
        grpc_endpoint=f"127.0.0.1:{grpc_port}",
        otlp_http_url=f"http://127.0.0.1:{http_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        data_dir=base / "data",
        log_path=base / "spoor.log",
    )
    server = Server(spoor, config)
    server.start()
    return server


class Sender:
    """One TracerProvider per resource, each exporting over OTLP/gRPC with a recorded result."""

    def __init__(self, spoor: Spoor, tenant: str | None = None):
        self.spoor = spoor
        self.headers = {"x-scope-orgid": tenant} if tenant else None
        self.providers: dict[tuple, tuple[TracerProvider, RecordingExporter]] = {}

    def tracer(self, **resource: str):
        key = tuple(sorted(resource.items()))
        if key not in self.providers:
            inner = OTLPSpanExporter(endpoint=self.spoor.grpc_endpoint, insecure=True, headers=self.headers)
            exporter = RecordingExporter(inner)
            p = TracerProvider(resource=Resource.create(resource))
            p.add_span_processor(BatchSpanProcessor(exporter))
            self.providers[key] = (p, exporter)
        return self.providers[key][0].get_tracer("spoor.tests.dora")

    def flush(self) -> None:
        for p, exporter in self.providers.values():
            assert p.force_flush(30_000), "the SDK could not export its spans"
            failed = [r for r in exporter.results if r[1].name != "SUCCESS"]
            assert not failed, f"exports failed: {failed}\n{self.spoor.log_tail()}"

    def close(self) -> None:
        self.flush()
        for p, _ in self.providers.values():
            p.shutdown()


def send_fixture(spoor: Spoor) -> dict[str, str]:
    """Sends every pipeline and incident; returns the trace ID (hex) of each pipeline."""
    out = Sender(spoor)
    traces: dict[str, str] = {}
    late_roots = []
    for name, dep_id, env, service, end, lead, failed, vocabulary in PIPELINES:
        change = (end - lead) * S
        if vocabulary == "jenkins":
            # The Jenkins plugin: ci.pipeline.*, git.*, results in upper case, and the service
            # from the resource when the span names none (P4).
            t = out.tracer(**{"service.name": "cart" if name == "P4" else "jenkins"})
            root_attrs = {"ci.pipeline.name": "shop/cart", "ci.pipeline.run.number": name}
            deploy_attrs = {
                "ci.pipeline.name": "shop/cart",
                "ci.pipeline.task.type": "deploy",
                "ci.pipeline.run.result": "FAILURE" if failed else "SUCCESS",
                "git.branch": "main",
                "git.repository": "https://git.example/shop.git",
                "deployment.environment.name": env,
                "deployment.id": dep_id,
            }
            if name != "P4":
                deploy_attrs["deployment.name"] = service
        else:
            t = out.tracer(**{"service.name": "github-actions"})
            root_attrs = {"cicd.pipeline.name": "release", "cicd.pipeline.run.id": name}
            deploy_attrs = {
                "cicd.pipeline.name": "release",
                "cicd.pipeline.task.name": "deploy",
                "cicd.pipeline.task.type": "deploy",
                "cicd.pipeline.result": "failure" if failed else "success",
                "vcs.ref.head.revision": f"rev-{name}",
                "vcs.ref.head.name": "main",
                "vcs.repository.url.full": "https://git.example/shop",
                "deployment.environment.name": env,
                "deployment.id": dep_id,
                "deployment.name": service,
                "deployment.status": "failed" if failed else "succeeded",
            }
        root = t.start_span(f"push {name}", kind=SpanKind.SERVER, start_time=change, attributes=root_attrs)
        ctx = trace.set_span_in_context(root)
        build_attrs = {"cicd.pipeline.task.type": "build"}
        build = t.start_span("build", context=ctx, start_time=change + S, attributes=build_attrs)
        build.end(end_time=change + 2 * S)
        deploy = t.start_span("deploy", context=ctx, start_time=end * S - 30 * S, attributes=deploy_attrs)
        if failed and vocabulary == "jenkins":
            deploy.set_status(Status(StatusCode.ERROR, "rollout failed"))
        deploy.end(end_time=end * S)
        traces[name] = format(root.get_span_context().trace_id, "032x")
        if vocabulary == "otel-late-root":
            late_roots.append((root, end))
        else:
            root.end(end_time=end * S + S)
    out.flush()
    for root, end in late_roots:
        root.end(end_time=end * S + S)
    out.flush()
    for inc_id, env, service, opened, resolved, cause in INCIDENTS:
        attrs = {"incident.id": inc_id, "deployment.environment.name": env}
        if cause:
            attrs["incident.cause.deployment.id"] = cause
        if inc_id == "INC-2":
            # Where, from the resource.
            t = out.tracer(**{"service.name": service, "deployment.environment.name": env})
            attrs.pop("deployment.environment.name")
        else:
            t = out.tracer(**{"service.name": "incident-bot"})
            attrs["service.name"] = service
        span = t.start_span(f"incident {inc_id}", start_time=opened * S, attributes=attrs)
        span.end(end_time=resolved * S)
    # Ordinary spans of checkout around P1 (no DORA attribute), for the change-failure hints:
    # four before, all fine; four after, two failing.
    p1_end = next(p[4] for p in PIPELINES if p[0] == "P1")
    t = out.tracer(**{"service.name": "checkout"})
    for i, (offset, error) in enumerate([(-1800, False)] * 4 + [(600, False), (700, False), (800, True), (900, True)]):
        span = t.start_span(f"GET /cart/{i}", kind=SpanKind.SERVER, start_time=(p1_end + offset) * S)
        if error:
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end(end_time=(p1_end + offset) * S + 100_000_000)
    out.close()
    return traces


def dora(spoor: Spoor, path: str = "/api/dora", **params) -> dict:
    r = http_get(f"{spoor.api_url}{path}?{urllib.parse.urlencode(params)}")
    assert r.status == 200, f"{path} {params}: {r.status} {r.body[:300]!r}\n{spoor.log_tail()}"
    return json.loads(r.body)


def check_figures(spoor: Spoor) -> None:
    assert dora(spoor, environment="production", start=START, end=END) == PRODUCTION
    assert dora(spoor, environment="staging", start=START, end=END) == STAGING
    by = dora(spoor, environment="production", start=START, end=END, by="service")["services"]
    got = {
        s["service"]: (
            s["deployments"],
            s["failed_deployments"],
            s["lead_time_seconds"]["median"],
            s["change_failure_rate"],
            s["incidents"],
            s["time_to_restore_seconds"]["median"],
        )
        for s in by
    }
    assert got == BY_SERVICE
    # Nothing deployed in a window without deployments; levels say so.
    empty = dora(spoor, environment="production", start=T0 + 9 * DAY, end=T0 + 10 * DAY)
    assert (empty["deployments"], empty["change_failure_rate"], empty["lead_time_seconds"]) == (
        0,
        None,
        {"median": None, "p90": None},
    )
    assert empty["levels"] == {
        "deployment_frequency": "low",
        "lead_time": None,
        "change_failure_rate": None,
        "time_to_restore": None,
    }


@pytest.fixture(scope="module")
def plain(tmp_path_factory, prometheus_factory):
    """The server, and a Prometheus that scrapes it and receives its remote_write."""
    ports = _free_ports(3)
    job = ScrapeJob([f"127.0.0.1:{ports[2]}"], job_name="spoor", metrics_path="/metrics/generated")
    prom = prometheus_factory(scrape=[job])
    remote_write = f"  remote_write:\n    - url: {prom.remote_write_url}\n"
    server = launch(tmp_path_factory, "dora", remote_write, ports)
    try:
        traces = send_fixture(server.spoor)
        yield server, traces, prom
    finally:
        server.stop()


def test_figures_equal_the_hand_computed_ones(plain):
    server, _, _ = plain
    check_figures(server.spoor)


def test_bad_parameters_are_refused_by_name(plain):
    server, _, _ = plain
    for params, word in [
        ({"start": "soon"}, "start"),
        ({"start": END, "end": START}, "end must be greater than start"),
        ({"by": "team"}, "by"),
        ({"since": "3 fortnights"}, "since"),
    ]:
        r = http_get(f"{server.spoor.api_url}/api/dora?{urllib.parse.urlencode(params)}")
        assert r.status == 400 and word.encode() in r.body, (params, r.status, r.body)
    r = http_get(f"{server.spoor.api_url}/api/dora/deployments?hints=maybe")
    assert r.status == 400 and b"hints" in r.body


def test_deployments_carry_a_timeline_and_hints(plain):
    server, traces, _ = plain
    rows = dora(server.spoor, "/api/dora/deployments", environment="production", start=START, end=END)["deployments"]
    expected = [p for p in PIPELINES if p[2] == "production" and START <= p[4] < END]
    assert [r["trace_id"] for r in rows] == [traces[p[0]] for p in expected]
    for r, (name, dep_id, env, service, end, lead, failed, vocabulary) in zip(rows, expected):
        assert (r["time"], r["environment"], r["service"], r["deployment_id"]) == (end, env, service, dep_id)
        assert r["outcome"] == ("failure" if failed else "success")
        assert r["lead_time_seconds"] == lead and r["change_time"] == end - lead
        assert r["start"] == end - 30
        if vocabulary == "jenkins":
            assert (r["pipeline"], r["run_id"], r["branch"]) == ("shop/cart", "", "main")
            assert r["repository"] == "https://git.example/shop.git"
            assert r["result"] == ("failure" if failed else "success")
        else:
            got = (r["revision"], r["pipeline"], r["repository"])
            assert got == (f"rev-{name}", "release", "https://git.example/shop")
        assert r["caused_incidents"] == (["INC-1"] if name == "P2" else ["INC-3"] if name == "P5" else [])
        assert set(r["hints"]) == {"before", "after"}
    p1 = rows[1]["hints"]
    assert (p1["before"]["spans"], p1["before"]["error_ratio"]) == (4, 0.0)
    assert (p1["after"]["spans"], p1["after"]["error_ratio"]) == (4, 0.5)
    assert 0 < p1["before"]["p95_seconds"] <= 0.2
    # P0's hour has no checkout spans at all.
    assert rows[0]["hints"]["before"] == {"spans": 0, "error_ratio": None, "p95_seconds": None}
    listing = dora(server.spoor, "/api/dora/deployments", environment="production", start=START, end=END)
    incidents = [
        (i["incident_id"], i["service"], i["start"], i["end"], i["duration_seconds"], i["cause_deployment_id"])
        for i in listing["incidents"]
    ]
    assert incidents == [
        (inc, service, opened, resolved, resolved - opened, cause)
        for inc, env, service, opened, resolved, cause in INCIDENTS
        if env == "production" and START <= resolved < END
    ]
    newest = dora(server.spoor, "/api/dora/deployments", environment="production", start=START, end=END, limit=2)
    assert [r["trace_id"] for r in newest["deployments"]] == [r["trace_id"] for r in rows[-2:]]
    r = http_get(f"{server.spoor.api_url}/api/dora/deployments?limit=0")
    assert r.status == 400 and b"limit" in r.body
    plain_rows = dora(server.spoor, "/api/dora/deployments", environment="staging", start=START, end=END, hints="false")
    assert [("hints" in r, r["service"]) for r in plain_rows["deployments"]] == [(False, "checkout")]


def test_spoor_dora_prints_the_four_metrics(plain):
    server, _, _ = plain
    # The last 30 days hold P8 and P9 too: 10 production deployments, 8 successful (lead
    # times 60 120 240 480 600 1800 3600 7200, median 540 s), 2 failed plus P2 named by INC-1
    # (30 %), and INC-0..3 (600 1800 3000 99999 s, median 2400 s).
    cmd = [str(SPOOR_BIN), "dora", "--server", server.spoor.api_url, "--environment", "production", "--since", "30d"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "DORA metrics, environment production, service (all), last 30d"
    words = [line.split() for line in lines[1:]]
    assert words[0] == ["deployment", "frequency", "0.27", "per", "day", "10", "deployments,", "2", "failed", "high"]
    assert words[1][:5] == ["lead", "time", "for", "changes", "median"] and words[1][5] == "9m0s"
    assert words[1][-1] == "elite"
    assert words[2] == ["change", "failure", "rate", "30.0%", "high"]
    assert words[3] == ["time", "to", "restore", "median", "40m0s", "4", "incidents", "elite"]
    bad = subprocess.run([*cmd[:-1], "soon"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "since" in bad.stderr


def test_the_same_after_flush_and_restart(plain):
    server, _, _ = plain
    r = http_request("POST", f"{server.spoor.api_url}/flush", timeout=120)
    assert r.status == 204, r.body
    check_figures(server.spoor)
    server.stop()
    server.start()
    check_figures(server.spoor)


def test_the_same_when_tail_sampling_drops_most_traces(tmp_path_factory):
    server = launch(tmp_path_factory, "dora-sampled", TAIL_SAMPLING)
    try:
        traces = send_fixture(server.spoor)
        check_figures(server.spoor)
        # Only traces with an error are kept: P5 (the Jenkins failure with an error status)
        # stays; P1, say, is gone from storage once decided.
        deadline = time.monotonic() + 30
        while True:
            gone = http_get(f"{server.spoor.api_url}/api/traces/{traces['P1']}").status == 404
            kept = http_get(f"{server.spoor.api_url}/api/traces/{traces['P5']}").status == 200
            if gone and kept:
                break
            assert time.monotonic() < deadline, "tail sampling did not decide the pipelines"
            time.sleep(0.2)
        check_figures(server.spoor)
        server.stop()
        server.start()
        check_figures(server.spoor)
        # A crash right after the acknowledgement keeps the deployment.
        out = Sender(server.spoor)
        t = out.tracer(**{"service.name": "github-actions"})
        attrs = {"cicd.pipeline.task.type": "deploy", "deployment.environment.name": "canary"}
        t.start_span("deploy", start_time=(T0 + DAY) * S, attributes=attrs).end(end_time=(T0 + DAY + 5) * S)
        out.close()
        server.kill()
        server.start()
        canary = dora(server.spoor, environment="canary", start=START, end=END)
        assert (canary["deployments"], canary["failed_deployments"]) == (1, 0)
        check_figures(server.spoor)
    finally:
        server.stop()


@pytest.mark.parametrize("source", ['job="spoor"', 'job=""'])
def test_prometheus_has_the_dora_series(plain, source):
    """Scraped from /metrics/generated (job="spoor") and pushed by remote_write (no job)."""
    server, _, prom = plain

    def total(q: str, expected: float):
        q = q.replace("{environment", "{" + source + ",environment")
        return prom.wait_for(q, lambda r: len(r) == 1 and float(r[0]["value"][1]) == expected, timeout=60)

    # Every stored event counts (the series are not windowed): P8 and P9 too.
    deployments = prom.wait_for(f"spoor_dora_deployments_total{{{source}}}", lambda r: len(r) == 5, timeout=60)
    got = {
        (m["metric"]["environment"], m["metric"]["service"], m["metric"]["outcome"]): float(m["value"][1])
        for m in deployments
    }
    assert got == {
        ("production", "checkout", "success"): 5,  # P8 P0 P1 P2 P9
        ("production", "checkout", "failure"): 1,  # P3
        ("production", "cart", "success"): 3,  # P4 P6 P10
        ("production", "cart", "failure"): 1,  # P5
        ("staging", "checkout", "success"): 1,  # P7
    }
    total('spoor_dora_lead_time_seconds_count{environment="production",service="cart"}', 3)
    total('spoor_dora_lead_time_seconds_sum{environment="production",service="cart"}', 3600 + 7200 + 60)
    # checkout's lead times 240 120 600 1800 480: two at or under 5 minutes.
    total('spoor_dora_lead_time_seconds_bucket{environment="production",service="checkout",le="300"}', 2)
    total('sum(spoor_dora_incidents_total{environment="production"})', 4)
    total('spoor_dora_time_to_restore_seconds_sum{environment="staging",service="checkout"}', 100)
    # What a dashboard panel asks: the share of failed deployments, from the series alone.
    total(
        'sum(spoor_dora_deployments_total{environment="production",outcome="failure"})'
        ' / sum(spoor_dora_deployments_total{environment="production"})',
        0.2,
    )
    # The Grafana dashboard's queries over these series: test_grafana.py.


def test_tenants_keep_their_own_events(tmp_path_factory):
    server = launch(tmp_path_factory, "dora-tenants", "tenancy:\n  multitenancy_enabled: true\n")
    try:
        out = Sender(server.spoor, tenant="team-a")
        t = out.tracer(**{"service.name": "github-actions"})
        attrs = {
            "cicd.pipeline.task.type": "deploy",
            "deployment.environment.name": "production",
            "deployment.name": "cart",
        }
        t.start_span("deploy", start_time=(T0 + DAY) * S, attributes=attrs).end(end_time=(T0 + DAY + 5) * S)
        out.close()
        url = f"{server.spoor.api_url}/api/dora?start={START}&end={END}"
        for tenant, n in [("team-a", 1), ("team-b", 0), ("team-b|team-a", 1)]:
            r = http_get(url, {"x-scope-orgid": tenant})
            assert r.status == 200 and json.loads(r.body)["deployments"] == n, (tenant, r.status, r.body)
        assert http_get(url).status == 401
        scraped = http_get(f"{server.spoor.api_url}/metrics/generated").body.decode()
        series = 'environment="production",outcome="success",service="cart",tenant="team-a"'
        assert f"spoor_dora_deployments_total{{{series}}} 1" in scraped, scraped
        server.stop()
        server.start()
        r = http_get(url, {"x-scope-orgid": "team-a"})
        assert json.loads(r.body)["deployments"] == 1
    finally:
        server.stop()

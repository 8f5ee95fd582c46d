"""The instrumentation templates (templates/), run for real against Spoor.

The Python template runs under the `opentelemetry-instrument` CLI from PyPI (FastAPI, urllib and
sqlite3 instrumentations), the Node template under `node --require ./instrumentation.js` with
the OpenTelemetry Node SDK and auto-instrumentation from npm (installed by `npm ci` from its
lockfile; scripts/test does it). Each app exports OTLP/gRPC to a Spoor on 127.0.0.1, configured
only through the OTEL_* variables its README documents. One request to GET /orders/o-1 must
give one trace that TraceQL finds by route, with the server span at its root and, under it, the
database span, the manual span and the outbound call whose server side is in the same trace.
Every log line the request wrote carries that trace's ID in the form Grafana's Loki data source
links (deploy/grafana).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, Spoor, _free_ports, http_get

TEMPLATES = REPO / "templates"
APP_READY_TIMEOUT_S = 60.0
TRACE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module", params=["live"])
def storage(request: pytest.FixtureRequest) -> str:
    """Where the trace is read from does not matter here: live only."""
    return request.param


@dataclass
class SpanRow:
    service: str
    name: str
    kind: str
    span_id: str
    parent: str
    attributes: dict


def otel_env(spoor: Spoor, service: str, extra: dict[str, str]) -> dict[str, str]:
    """The variables the templates' READMEs document, and nothing of the test's own environment
    that could reconfigure the SDK."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPOOR"))}
    env.update(
        {
            "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{spoor.grpc_endpoint}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,service.version=1.2.3",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            # Export within a fraction of a second instead of the default 5 s.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "NO_PROXY": "127.0.0.1,localhost",
            **extra,
        }
    )
    return env


# Set by the tests for speed or the loopback, not something a deployment needs to know.
TEST_ONLY_VARIABLES = {"OTEL_BSP_SCHEDULE_DELAY", "OTEL_EXPORTER_OTLP_INSECURE"}


def check_documented(folder: Path, env: dict[str, str]) -> None:
    """Every OTEL_* variable the test sets is in the template's README."""
    readme = (folder / "README.md").read_text()
    missing = [k for k in env if k.startswith("OTEL_") and k not in TEST_ONLY_VARIABLES and k not in readme]
    assert not missing, f"{folder.name}/README.md does not document {missing}"


class App:
    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], port: int, log_path: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            out = {"stdout": log, "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL}
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, **out)
        deadline = time.monotonic() + APP_READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{cmd} exited with {self.proc.returncode}\n{self.log()}")
            try:
                if http_get(f"{self.url}/stock/warmup", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{cmd} not answering on {self.url} after {APP_READY_TIMEOUT_S}s\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def search(spoor: Spoor, q: str) -> list[dict]:
    r = http_get(f"{spoor.api_url}/api/search?" + urllib.parse.urlencode({"q": q, "limit": 20}))
    assert r.status == 200, f"{q}: {r.status} {r.body[:300]!r}"
    return json.loads(r.body)["traces"]


def wait_for_trace(spoor: Spoor, q: str, app: App) -> str:
    """The ID of the one trace `q` finds, once it is there."""
    deadline = time.monotonic() + TRACE_TIMEOUT_S
    while True:
        traces = search(spoor, q)
        if traces:
            assert len(traces) == 1, f"{q}: expected one trace, got {traces}"
            return traces[0]["traceID"]
        if time.monotonic() > deadline:
            pytest.fail(f"TraceQL {q}: nothing after {TRACE_TIMEOUT_S}s\napp log:\n{app.log()}\n{spoor.log_tail()}")
        time.sleep(0.2)


def _value(v: dict):
    return next(iter(v.values())) if v else None


def trace_spans(spoor: Spoor, trace_id: str) -> list[SpanRow]:
    r = http_get(f"{spoor.api_url}/api/v2/traces/{trace_id}")
    assert r.status == 200, f"trace {trace_id}: {r.status} {r.body[:300]!r}"
    rows = []
    for rs in json.loads(r.body)["trace"]["resourceSpans"]:
        resource = {a["key"]: _value(a["value"]) for a in rs["resource"].get("attributes", [])}
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                rows.append(
                    SpanRow(
                        service=resource.get("service.name", ""),
                        name=s["name"],
                        kind=s.get("kind", "SPAN_KIND_UNSPECIFIED"),
                        span_id=base64.b64decode(s["spanId"]).hex(),
                        parent=base64.b64decode(s.get("parentSpanId", "")).hex(),
                        attributes={**resource, **{a["key"]: _value(a["value"]) for a in s.get("attributes", [])}},
                    )
                )
    return rows


def check_order_trace(spoor: Spoor, app: App, service: str, route: str, stock_route: str, db_span: str) -> None:
    """Requests /orders/o-1 and checks its trace, found by TraceQL, and the app's log lines."""
    r = http_get(f"{app.url}/orders/o-1", timeout=30)
    assert r.status == 200 and json.loads(r.body)["in_stock"] is True, (r.status, r.body, app.log())
    q = f'{{ resource.service.name = "{service}" && kind = server && span.http.route = "{route}" }}'
    trace_id = wait_for_trace(spoor, q, app)
    spans = trace_spans(spoor, trace_id)
    shape = "\n".join(f"  {s.span_id} <- {s.parent or '-':16} {s.kind:20} {s.name}" for s in spans)
    # The whole shape, by TraceQL: the route's server span has the database span, the manual span
    # and the stock lookup's server span below it.
    for below in [f'{{ name = "{db_span}" }}', '{ name = "price order" }', f'{{ span.http.route = "{stock_route}" }}']:
        deadline = time.monotonic() + TRACE_TIMEOUT_S
        structural = f'{{ resource.service.name = "{service}" && span.http.route = "{route}" }} >> {below}'
        while [t["traceID"] for t in search(spoor, structural)] != [trace_id]:
            assert time.monotonic() < deadline, f"{structural} does not find {trace_id}:\n{shape}\n{app.log()}"
            time.sleep(0.2)
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent]
    assert len(roots) == 1, f"one root expected: {spans}"
    root = roots[0]
    assert (root.kind, root.attributes.get("http.route"), root.service) == ("SPAN_KIND_SERVER", route, service), root
    assert root.attributes.get("deployment.environment.name") == "test", "OTEL_RESOURCE_ATTRIBUTES were not applied"

    def under_root(s: SpanRow) -> bool:
        while s.parent:
            if s.parent == root.span_id:
                return True
            s = by_id[s.parent]  # a missing parent fails here: the trace must be whole
        return False

    names = {(s.name, s.kind) for s in spans if under_root(s)}
    assert (db_span, "SPAN_KIND_CLIENT") in names, f"no database span under the root:\n{shape}"
    assert ("price order", "SPAN_KIND_INTERNAL") in names, shape
    stock = [s for s in spans if s.kind == "SPAN_KIND_SERVER" and s.attributes.get("http.route") == stock_route]
    assert len(stock) == 1, shape
    # The stock server span hangs under the outbound client span, itself under the root.
    client = by_id[stock[0].parent]
    assert client.kind == "SPAN_KIND_CLIENT" and under_root(client), shape
    # Log lines: every line of this request has its trace ID, as Grafana's derived field reads it.
    sources = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/spoor.yaml").read_text())["datasources"]
    loki = next(d for d in sources if d["type"] == "loki")
    regex = loki["jsonData"]["derivedFields"][0]["matcherRegex"]
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in app.log().splitlines() if "order o-1" in line or "stock lookup for sku-42" in line]
        if len(lines) >= 2:
            break
        assert time.monotonic() < deadline, app.log()
        time.sleep(0.2)
    for line in lines:
        m = re.search(regex, line)
        assert m and m.group(1) == trace_id, f"log line without the trace ID {trace_id}: {line}"
        assert re.search(r"span_id=[0-9a-f]{16}\b", line) and "span_id=" + "0" * 16 not in line, line


def test_python_fastapi_template(spoor: Spoor, tmp_path: Path):
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    assert instrument.is_file(), "opentelemetry-distro is not installed: pip install -r tests/python/requirements.txt"
    (port,) = _free_ports(1)
    env = otel_env(spoor, "orders-py", {"SELF_URL": f"http://127.0.0.1:{port}"})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    check_documented(TEMPLATES / "python-fastapi", env)
    cmd = [str(instrument), "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
    app = App(cmd, TEMPLATES / "python-fastapi", env, port, tmp_path / "app.log")
    try:
        check_order_trace(spoor, app, "orders-py", "/orders/{order_id}", "/stock/{sku}", "SELECT")
    finally:
        app.stop()


def test_node_express_template(spoor: Spoor, tmp_path: Path):
    folder = TEMPLATES / "node-express"
    node = shutil.which("node")
    assert node, "node is not on PATH"
    if not (folder / "node_modules" / "@opentelemetry" / "sdk-node").is_dir():
        pytest.fail(f"run `npm ci --prefix {folder}` first (scripts/test does)")
    (port,) = _free_ports(1)
    env = otel_env(spoor, "orders-node", {"PORT": str(port), "HOST": "127.0.0.1"})
    check_documented(folder, env)
    cmd = [node, "--require", "./instrumentation.js", "app.js"]
    app = App(cmd, folder, env, port, tmp_path / "app.log")
    try:
        check_order_trace(spoor, app, "orders-node", "/orders/:id", "/stock/:sku", "SELECT orders")
    finally:
        app.stop()


# ---------------------------------------------------------------------------------------
# Java and Go: their dependencies cannot be fetched here (Maven Central, the Go module proxy),
# so the templates are parsed rather than built. Each checker is shown a broken file first, so a
# checker that accepts anything fails the test.


def test_java_spring_template_parses(tmp_path: Path):
    java = shutil.which("java")
    assert java, "java is not on PATH"
    checker = REPO / "tests" / "templates" / "ParseJava.java"
    broken = tmp_path / "Broken.java"
    broken.write_text("class Broken { void f() { int x = ; } }\n")
    out = subprocess.run([java, str(checker), str(broken)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Broken.java:1" in out.stdout, out.stdout + out.stderr
    folder = TEMPLATES / "java-spring"
    sources = sorted(str(p) for p in (folder / "src").rglob("*.java"))
    assert len(sources) >= 2, sources
    out = subprocess.run([java, str(checker), *sources], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    pom = ET.parse(folder / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    artifacts = {e.text for e in pom.findall(".//m:dependency/m:artifactId", ns)}
    assert {"spring-boot-starter-web", "opentelemetry-api"} <= artifacts, artifacts
    dockerfile = (folder / "Dockerfile").read_text()
    assert "JAVA_TOOL_OPTIONS=\"-javaagent:" in dockerfile and "opentelemetry-javaagent.jar" in dockerfile


def test_go_template_parses_and_is_formatted(tmp_path: Path):
    gofmt = shutil.which("gofmt")
    assert gofmt, "gofmt is not on PATH (scripts/test installs Debian's golang-go)"
    broken = tmp_path / "broken.go"
    broken.write_text("package main\n\nfunc main() {\n\tx := \n}\n")
    out = subprocess.run([gofmt, "-l", "-e", str(broken)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "broken.go:5" in out.stderr, out.stdout + out.stderr
    folder = TEMPLATES / "go"
    out = subprocess.run([gofmt, "-l", "-e", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "", f"gofmt: {out.stdout}{out.stderr}"
    main = (folder / "main.go").read_text()
    assert "otlptracegrpc.New" in main and "otelhttp.NewHandler" in main
    gomod = (folder / "go.mod").read_text()
    assert "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc" in gomod

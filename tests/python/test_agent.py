"""`spoor agent` end to end: the real OpenTelemetry Python SDK -> `spoor agent` -> `spoor serve`.

Every test starts its own processes on 127.0.0.1 (free ports, fresh data dirs under tmp_path,
output to a log file there) and stops them at the end:

- secrets are scrubbed by the agent before its persistent queue: nothing secret in the queue
  files, the server's WAL and blocks, the query results or either log (the server runs with its
  own scrubbing off, so what it stores is what the agent forwarded);
- the ADR sampling policy (errors, slow traces, 10 % of the rest) with tail sampling in the
  server behind the agent;
- a downstream outage: the agent acknowledges, queues on disk and retries; once the server is
  up every span arrives, also when the agent is killed with SIGKILL during the outage and
  restarted on the same data dir;
- trace-ID load balancing over two servers: each trace whole on exactly one of them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import (
    READY_TIMEOUT_S,
    SHUTDOWN_TIMEOUT_S,
    SPOOR_BIN,
    RecordingExporter,
    _free_ports,
    http_get,
    http_request,
)

# Fast retries so that an outage ends quickly once the server is back; never give up.
RETRY = "{initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0}"
# Server settings that keep block cutting and compaction out of the way.
SERVER_BASE = """\
blocks: {max_block_age_secs: 3600}
compaction: {enabled: false}
"""
AGENT_BATCH = """\
processors:
  batch: {send_batch_size: 512, timeout: 100ms}
"""
DELIVERY_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    """One `spoor serve` or `spoor agent` process; can be stopped, killed and started again
    on the same ports and data dir (its log is appended to)."""

    command: str  # "serve" | "agent"
    name: str
    config_path: Path
    data_dir: Path
    log_path: Path
    ports: tuple[int, int, int]  # OTLP/gRPC, OTLP/HTTP, HTTP API
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[2]}"

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"

    def log_tail(self, n: int = 40) -> str:
        return f"--- {self.name} log ({self.log_path}) ---\n" + "\n".join(self.log_text().splitlines()[-n:])

    def start(self) -> None:
        assert not self.running(), f"{self.name} is already running"
        grpc, otlp_http, api = self.ports
        cmd = [
            str(SPOOR_BIN), self.command,
            "--config", str(self.config_path),
            "--data-dir", str(self.data_dir),
            "--otlp-grpc-listen", f"127.0.0.1:{grpc}",
            "--otlp-http-listen", f"127.0.0.1:{otlp_http}",
            "--http-listen", f"127.0.0.1:{api}",
        ]  # fmt: skip
        # Only the configuration written here: SPOOR__* variables from the caller's shell would
        # change what is being tested.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited early with {self.popen.returncode}\n{self.log_tail()}")
            try:
                r = http_get(f"{self.api_url}/ready", timeout=1.0)
                if r.status == 200:
                    return
                last = f"{r.status} {r.body[:200]!r}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        pytest.fail(f"{self.name} not ready after {READY_TIMEOUT_S}s (last: {last})\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it does not exit in time)."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                return -999
        return self.popen.returncode

    def kill(self) -> None:
        assert self.running(), f"{self.name} is not running"
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def metrics(self) -> Metrics:
        r = http_get(f"{self.api_url}/metrics")
        assert r.status == 200, f"{self.name} /metrics: {r.status}\n{self.log_tail()}"
        return Metrics.parse(r.body.decode())


class Launcher:
    """Makes processes for one test and stops whatever still runs at its end."""

    def __init__(self, base: Path):
        self.base = base
        self.procs: list[Proc] = []

    def make(self, command: str, name: str, config: str, ports: tuple[int, int, int] | None = None) -> Proc:
        d = self.base / name
        d.mkdir()
        config_path = d / f"{command}.yaml"
        config_path.write_text(config)
        proc = Proc(command, name, config_path, d / "data", d / f"{name}.log", ports or tuple(_free_ports(3)))
        self.procs.append(proc)
        return proc

    def start(self, command: str, name: str, config: str) -> Proc:
        proc = self.make(command, name, config)
        proc.start()
        return proc

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.procs)

    def close(self) -> list[str]:
        problems = []
        for p in self.procs:
            if p.running():
                code = p.stop()
                if code != 0:
                    problems.append(f"{p.name} exited with {code} after SIGTERM\n{p.log_tail()}")
        return problems


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    if not SPOOR_BIN.is_file():
        pytest.fail(f"spoor binary not found at {SPOOR_BIN}; run `cargo build -p spoor` or set SPOOR_BIN")
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        problems = launcher.close()
    assert not problems, "\n".join(problems)


def server_config(extra: str = "") -> str:
    return SERVER_BASE + extra


def agent_config(server: Proc, exporter: str = "otlp") -> str:
    """One downstream: `otlp` (gRPC, uncompressed) or `otlphttp` (protobuf, gzip: the default)."""
    if exporter == "otlp":
        settings = f"endpoint: {server.grpc_endpoint}, compression: none"
    else:
        settings = f"endpoint: {server.otlp_http_url}"
    return f"""\
agent:
  exporters:
    {exporter}: {{{settings}, retry_on_failure: {RETRY}}}
{AGENT_BATCH}"""


# ---------------------------------------------------------------------------------------
# Prometheus text


@dataclass
class Metrics:
    samples: list[tuple[str, dict[str, str], float]]

    _LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
    _LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = cls._LINE.match(line)
            assert m, f"unparsable metrics line {line!r}"
            samples.append((m[1], dict(cls._LABEL.findall(m[2] or "")), float(m[3])))
        return cls(samples)

    def sum(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels`; NaN if none."""
        values = [v for n, ls, v in self.samples if n == name and all(ls.get(k) == x for k, x in labels.items())]
        return sum(values) if values else math.nan


# ---------------------------------------------------------------------------------------
# SDK and queries


def sdk(endpoint: str, service: str, batch: bool = True) -> tuple[TracerProvider, trace_api.Tracer, RecordingExporter]:
    """A tracer exporting over OTLP/gRPC to `endpoint`, recording every export's result."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    sent = RecordingExporter(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30))
    if batch:
        # A queue that never drops spans; batches of 512 spans, as the collector's defaults.
        processor = BatchSpanProcessor(
            sent, max_queue_size=1 << 20, max_export_batch_size=512, schedule_delay_millis=100
        )
    else:
        processor = SimpleSpanProcessor(sent)
    provider.add_span_processor(processor)
    return provider, provider.get_tracer("spoor.tests.agent", "1.0.0"), sent


def flush_all(provider: TracerProvider, sent: RecordingExporter, spans: int) -> None:
    """force_flush, and every span acknowledged (SUCCESS) exactly once."""
    assert provider.force_flush(60_000), "force_flush timed out"
    bad = [(n, r) for n, r in sent.results if r != SpanExportResult.SUCCESS]
    assert not bad, f"exports failed: {bad}"
    assert sum(n for n, _ in sent.results) == spans, f"exported {sum(n for n, _ in sent.results)} spans, not {spans}"


def hex_trace_id(span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def hex_span_id(span) -> str:
    return f"{span.get_span_context().span_id:016x}"


def spans_of(body: bytes) -> list[dict]:
    """Flat list of spans (with `_resource` attached) from a v1 JSON trace-by-ID response."""
    out = []
    for rs in json.loads(body)["batches"]:
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                out.append({**sp, "_resource": rs.get("resource", {})})
    return out


def get_trace(server: Proc, trace_id: str) -> list[dict] | None:
    """The trace's spans, or None on 404."""
    r = http_get(f"{server.api_url}/api/traces/{trace_id}", {"Accept": "application/json"})
    if r.status == 404:
        return None
    assert r.status == 200, f"GET trace {trace_id} on {server.name}: {r.status} {r.body[:300]!r}\n{server.log_tail()}"
    return spans_of(r.body)


def span_id_hex(span: dict) -> str:
    return base64.b64decode(span["spanId"]).hex()


def attrs(obj: dict) -> dict[str, object]:
    """OTLP JSON attributes as key -> plain value (strings, ints as str, ...)."""
    return {kv["key"]: next(iter(kv.get("value", {}).values()), None) for kv in obj.get("attributes", [])}


def search_ids(server: Proc, q: str, limit: int) -> set[str]:
    """Trace IDs (32 hex digits) matching a TraceQL query, over all time."""
    r = http_get(f"{server.api_url}/api/search?" + urllib.parse.urlencode({"q": q, "limit": str(limit)}), timeout=30)
    assert r.status == 200, f"search {q}: {r.status} {r.body[:300]!r}\n{server.log_tail()}"
    traces = json.loads(r.body)["traces"]
    ids = {t["traceID"].rjust(32, "0") for t in traces}
    assert len(ids) == len(traces), f"search {q}: a trace returned twice"
    assert len(ids) < limit, f"search {q}: limit {limit} reached, the result may be cut"
    return ids


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, logs: Callable[[], str], every: float = 0.1
) -> float:
    """Polls `check` until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(every)
    return time.monotonic() - start


def wait_delivered(servers: list[Proc], expected: dict[str, set[str]], logs: Callable[[], str]) -> dict[str, str]:
    """Polls trace by ID until every trace has all its expected span IDs on some server
    (duplicates allowed); returns trace ID -> name of the server that has it."""
    pending = dict(expected)
    where: dict[str, str] = {}
    last: dict[str, str] = {}

    def check() -> bool:
        for tid in list(pending):
            for s in servers:
                spans = get_trace(s, tid)
                got = {span_id_hex(sp) for sp in spans or []}
                if got:
                    last[tid] = f"{len(got)}/{len(pending[tid])} spans on {s.name}"
                assert got <= expected[tid], f"trace {tid} on {s.name} has unknown spans {got - expected[tid]}"
                if got == pending[tid]:
                    where[tid] = s.name
                    del pending[tid]
                    break
        return not pending

    def report() -> str:
        missing = sorted(pending)[:10]
        return f"{len(pending)} of {len(expected)} traces incomplete, e.g. " + ", ".join(
            f"{t} ({last.get(t, 'not found')})" for t in missing
        ) + "\n" + logs()

    wait_for("every trace to arrive whole", check, DELIVERY_TIMEOUT_S, report, every=0.2)
    return where


def queue_items(agent: Proc) -> float:
    return agent.metrics().sum("spoor_agent_queue_items")


def all_bytes(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------
# 1. Secrets never get past the agent's receiver


# What the SDK sends: each value must not appear anywhere downstream of the agent's receiver.
AUTH_HEADER = "Bearer sekrit-xyz-123"
COOKIE = "session=c00kie-monster-991"
SET_COOKIE = "id=s3t-c00kie-4242; HttpOnly"
DB_PASSWORD = "hunter2-pw-5150"
API_TOKEN = "tok-9f8e7d6c5b4a"
RESOURCE_SECRET = "res-s3cr3t-000"
CARD = "4111 1111 1111 1111"
EMAIL = "alice.liddell@example.com"
SQL = "SELECT id FROM users WHERE name = 'robert-tables-77' AND pin = 31337424242"
SECRETS = [
    "sekrit-xyz-123",
    "c00kie-monster-991",
    "s3t-c00kie-4242",
    DB_PASSWORD,
    API_TOKEN,
    RESOURCE_SECRET,
    CARD,
    CARD.replace(" ", ""),
    EMAIL,
    "alice.liddell",
    "robert-tables-77",
    "31337424242",
]
# Kept as they are: proves that the files searched for secrets do hold the spans.
MARKER = "marker-7c1f0d2e"


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
def test_agent_scrubs_before_its_queue(launcher: Launcher, exporter: str):
    # The server's own scrubbing is off: whatever it stores is what the agent forwarded.
    server = launcher.start("serve", "server", server_config("processors:\n  scrub: {enabled: false}\n"))
    agent = launcher.start("agent", "agent", agent_config(server, exporter))

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "deploy.secret": RESOURCE_SECRET}))
    sent = RecordingExporter(OTLPSpanExporter(endpoint=agent.grpc_endpoint, insecure=True, timeout=30))
    provider.add_span_processor(SimpleSpanProcessor(sent))
    tracer = provider.get_tracer("spoor.tests.agent")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as root:
        root.set_attributes(
            {
                "http.request.method": "POST",
                "http.request.header.authorization": AUTH_HEADER,
                "http.request.header.cookie": COOKIE,
                "http.response.header.set-cookie": SET_COOKIE,
                "auth.api_token": API_TOKEN,
                "test.marker": MARKER,
            }
        )
        with tracer.start_as_current_span("SELECT users", kind=SpanKind.CLIENT) as db:
            db.set_attributes(
                {
                    "db.system": "postgresql",
                    "db.statement": SQL,
                    "db.password": DB_PASSWORD,
                    "payment.note": f"paid with card {CARD} by {EMAIL}",
                }
            )
            db.add_event("login", {"user.email": EMAIL, "user.tier": "gold"})
    trace_id = hex_trace_id(root)
    flush_all(provider, sent, 2)
    provider.shutdown()

    wait_for("the trace on the server", lambda: get_trace(server, trace_id) is not None, 30, launcher.logs)
    # Everything of the trace: both spans (in one or more requests).
    wait_for("both spans", lambda: len(get_trace(server, trace_id)) == 2, 30, launcher.logs)

    def no_secrets(where: str, data: bytes) -> None:
        found = [s for s in SECRETS if s.encode() in data]
        assert not found, f"secrets {found} in {where}"

    def check_query_results(when: str) -> None:
        for path in ("/api/traces/", "/api/v2/traces/"):
            for accept in ("application/json", "application/protobuf"):
                r = http_get(f"{server.api_url}{path}{trace_id}", {"Accept": accept})
                assert r.status == 200, f"{when} GET {path} ({accept}): {r.status} {r.body[:200]!r}"
                assert MARKER.encode() in r.body, f"{when} GET {path} ({accept}): the marker is missing"
                no_secrets(f"{when} GET {path}{trace_id} ({accept})", r.body)
        spans = {s["name"]: s for s in get_trace(server, trace_id)}
        root_attrs, db_attrs = attrs(spans["POST /checkout"]), attrs(spans["SELECT users"])
        assert root_attrs == {"http.request.method": "POST", "test.marker": MARKER}, f"{when}: root {root_attrs}"
        assert db_attrs == {
            "db.system": "postgresql",
            "db.statement": "SELECT id FROM users WHERE name = ? AND pin = ?",
            "payment.note": "paid with card **** by ****@****",
        }, f"{when}: db span {db_attrs}"
        events = spans["SELECT users"].get("events", [])
        assert [attrs(e) for e in events] == [{"user.email": "****@****", "user.tier": "gold"}], f"{when}: {events}"
        resource = attrs(spans["POST /checkout"]["_resource"])
        assert resource.get("service.name") == "checkout" and "deploy.secret" not in resource, f"{when}: {resource}"

    check_query_results("before /flush")

    queue = all_bytes(agent.data_dir / "queue")
    assert any(p.suffix == ".wal" for p in queue) and any(p.suffix == ".acks" for p in queue), sorted(queue)
    assert any(MARKER.encode() in b for b in queue.values()), f"the marker is in no queue file: {sorted(queue)}"
    for p, b in all_bytes(agent.data_dir).items():
        no_secrets(f"agent file {p}", b)
    wal = all_bytes(server.data_dir / "wal")
    assert any(MARKER.encode() in b for b in wal.values()), f"the marker is in no server WAL file: {sorted(wal)}"
    for p, b in wal.items():
        no_secrets(f"server WAL file {p}", b)

    r = http_request("POST", f"{server.api_url}/flush", timeout=120)
    assert r.status == 204, f"POST /flush: {r.status} {r.body[:300]!r}\n{server.log_tail()}"
    assert list((server.data_dir / "blocks").rglob("meta.json")), "no block after /flush"
    check_query_results("after /flush")
    for p, b in all_bytes(server.data_dir).items():  # WAL and blocks
        no_secrets(f"server file {p}", b)

    m = agent.metrics()
    assert m.sum("spoor_processed_attributes_total", processor="scrub", action="deleted") >= 6, m.samples
    assert m.sum("spoor_processed_attributes_total", processor="scrub", action="masked") >= 3, m.samples
    # The logs last: whatever the processes wrote up to now, shutdown included.
    assert not launcher.close()
    for p in (agent, server):
        no_secrets(f"{p.name}'s log", p.log_path.read_bytes())


# ---------------------------------------------------------------------------------------
# 2. The ADR sampling policy behind an agent

TAIL_SAMPLING = """\
processors:
  tail_sampling:
    decision_wait: 1s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 1000}}
      - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""
N_ERROR, N_SLOW, N_NORMAL = 30, 30, 1000


def test_adr_sampling_policy_behind_the_agent(launcher: Launcher):
    server = launcher.start("serve", "server", server_config(TAIL_SAMPLING))
    agent = launcher.start("agent", "agent", agent_config(server))
    provider, tracer, sent = sdk(agent.grpc_endpoint, "shop")

    # Two spans per trace, the interesting one being the child; kinds interleaved so every
    # batch mixes them.
    ids: dict[str, set[str]] = {"error": set(), "slow": set(), "normal": set()}
    kinds = ["error"] * N_ERROR + ["slow"] * N_SLOW + ["normal"] * N_NORMAL
    kinds = [kinds[(i * 37) % len(kinds)] for i in range(len(kinds))]  # 37 is coprime to 1060
    assert sorted(kinds) == sorted(["error"] * N_ERROR + ["slow"] * N_SLOW + ["normal"] * N_NORMAL)
    now = time.time_ns()
    for i, kind in enumerate(kinds):
        start = now - 2_000_000_000 + i * 1000
        root = tracer.start_span(f"GET /item/{i}", kind=SpanKind.SERVER, start_time=start)
        ctx = trace_api.set_span_in_context(root)
        child = tracer.start_span("load item", context=ctx, start_time=start + 1_000)
        if kind == "error":
            child.set_status(Status(StatusCode.ERROR, "boom"))
        # Slow: the child takes 1.5 s; otherwise 2 ms.
        child.end(end_time=start + (1_500_000_000 if kind == "slow" else 2_000_000))
        root.end(end_time=start + (1_600_000_000 if kind == "slow" else 3_000_000))
        ids[kind].add(hex_trace_id(root))
    spans = 2 * len(kinds)
    flush_all(provider, sent, spans)
    provider.shutdown()

    def decided() -> bool:
        m = server.metrics()
        return m.sum("spoor_sampling_spans_total") == spans

    took = wait_for("tail-sampling decisions on every span", decided, 30, launcher.logs)
    m = server.metrics()
    assert m.sum("spoor_sampling_dropped_too_early_total") == 0, m.samples
    assert m.sum("spoor_sampling_new_traces_total") == len(kinds), m.samples

    errors = search_ids(server, "{ status = error }", 10_000)
    slow = search_ids(server, "{ duration > 1s }", 10_000)
    everything = search_ids(server, "{ }", 10_000)
    for kind, found in (("error", errors), ("slow", slow)):
        missing, extra = ids[kind] - found, found - ids[kind]
        assert not missing and not extra, f"{kind} traces: {len(missing)} missing, {len(extra)} extra"
    sent_ids = set().union(*ids.values())
    assert everything <= sent_ids, f"{len(everything - sent_ids)} traces found that were never sent"
    assert ids["error"] | ids["slow"] <= everything
    # Every sampled trace (two spans each) is searchable, and nothing else is.
    assert m.sum("spoor_sampling_spans_total", decision="sampled") == 2 * len(everything), m.samples
    kept = len(everything & ids["normal"])
    p = 0.10
    mean, sd = N_NORMAL * p, math.sqrt(N_NORMAL * p * (1 - p))
    assert abs(kept - mean) <= 5 * sd, f"{kept} of {N_NORMAL} normal traces kept; expected {mean:.0f} ± {5 * sd:.0f}"
    # Kept traces are whole.
    for tid in sorted(ids["error"])[:5] + sorted(ids["slow"])[:5] + sorted(everything & ids["normal"])[:5]:
        assert len(get_trace(server, tid) or []) == 2, tid
    print(f"\ndecisions {took:.1f}s after force_flush; kept {kept}/{N_NORMAL} normal traces")


# ---------------------------------------------------------------------------------------
# 3. Downstream outage

N_TRACES, SPANS_PER_TRACE = 200, 10


@pytest.mark.parametrize("agent_killed", [False, True], ids=["agent-up", "agent-sigkilled"])
def test_outage_queues_then_delivers(launcher: Launcher, agent_killed: bool):
    # The server's ports are chosen but nothing listens there yet.
    server = launcher.make("serve", "server", server_config())
    agent = launcher.start("agent", "agent", agent_config(server))

    provider, tracer, sent = sdk(agent.grpc_endpoint, "outage")
    expected: dict[str, set[str]] = {}
    for t in range(N_TRACES):
        with tracer.start_as_current_span(f"job {t}", kind=SpanKind.SERVER) as root:
            ids = {hex_span_id(root)}
            for s in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"step {s}") as child:
                    child.set_attribute("step", s)
                    ids.add(hex_span_id(child))
        expected[hex_trace_id(root)] = ids
    sent_at = time.monotonic()
    flush_all(provider, sent, N_TRACES * SPANS_PER_TRACE)  # all acknowledged by the agent
    provider.shutdown()

    m = agent.metrics()
    assert m.sum("spoor_agent_queue_items") > 0, m.samples
    retries = m.sum("spoor_agent_export_retries_total")
    wait_for(
        "export retries to grow",
        lambda: agent.metrics().sum("spoor_agent_export_retries_total") > (0 if math.isnan(retries) else retries),
        10,
        launcher.logs,
    )
    assert agent.metrics().sum("spoor_agent_export_delivered_total") == 0

    if agent_killed:
        agent.kill()
        agent.start()  # same ports, same data dir: the queue is read back from disk
        m = agent.metrics()
        assert m.sum("spoor_agent_queue_items") > 0, f"nothing queued after the restart: {m.samples}"

    time.sleep(max(0.0, 3.0 - (time.monotonic() - sent_at)))
    server.start()
    started = time.monotonic()
    wait_delivered([server], expected, launcher.logs)
    took = time.monotonic() - started
    wait_for("the agent's queue to drain", lambda: queue_items(agent) == 0, 30, launcher.logs)
    returned = sum(len(get_trace(server, tid)) for tid in expected)  # duplicates included
    print(f"\nall {N_TRACES} traces delivered {took:.1f}s after the server started; {returned} spans returned")


# ---------------------------------------------------------------------------------------
# 4. Load balancing by trace ID over two servers

LB_TRACES, LB_SPANS = 200, 5


def test_load_balancing_keeps_traces_whole(launcher: Launcher):
    servers = [launcher.start("serve", f"server-{x}", server_config()) for x in "ab"]
    hostnames = ", ".join(f'"{s.grpc_endpoint}"' for s in servers)
    agent = launcher.start(
        "agent",
        "agent",
        f"""\
agent:
  exporters:
    loadbalancing:
      routing_key: traceID
      protocol:
        otlp: {{compression: none, retry_on_failure: {RETRY}}}
      resolver:
        static: {{hostnames: [{hostnames}]}}
{AGENT_BATCH}""",
    )
    provider, tracer, sent = sdk(agent.grpc_endpoint, "balanced")

    # Every trace travels in two export requests: half its children first, the rest and the
    # root after a flush, so the agent must route both halves to the same server.
    expected: dict[str, set[str]] = {}
    open_spans = []
    for t in range(LB_TRACES):
        root = tracer.start_span(f"request {t}", kind=SpanKind.SERVER)
        ctx = trace_api.set_span_in_context(root)
        children = [tracer.start_span(f"part {c}", context=ctx) for c in range(LB_SPANS - 1)]
        expected[hex_trace_id(root)] = {hex_span_id(s) for s in [root, *children]}
        open_spans.append((root, children))
    for _, children in open_spans:
        for c in children[:2]:
            c.end()
    assert provider.force_flush(60_000)
    for root, children in open_spans:
        for c in children[2:]:
            c.end()
        root.end()
    flush_all(provider, sent, LB_TRACES * LB_SPANS)
    provider.shutdown()

    where = wait_delivered(servers, expected, launcher.logs)
    wait_for("the agent's queue to drain", lambda: queue_items(agent) == 0, 30, launcher.logs)
    per_server = {s.name: sum(1 for w in where.values() if w == s.name) for s in servers}
    assert all(n > 0 for n in per_server.values()), f"traces per server: {per_server}"
    for tid, name in where.items():
        other = next(s for s in servers if s.name != name)
        assert get_trace(other, tid) is None, f"trace {tid} is on {name} and also on {other.name}"
        assert len(get_trace(next(s for s in servers if s.name == name), tid)) == LB_SPANS, tid
    m = agent.metrics()
    assert m.sum("spoor_agent_backends") == 2, m.samples
    forwarded = {
        s.name: sum(
            v
            for n, ls, v in m.samples
            if n == "spoor_agent_forwarded_spans_total" and ls.get("endpoint", "").endswith(s.grpc_endpoint)
        )
        for s in servers
    }
    assert forwarded == {name: n * LB_SPANS for name, n in per_server.items()}, (forwarded, per_server)
    print(f"\ntraces per server: {per_server}")

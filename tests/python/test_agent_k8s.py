"""The agent's `k8s` resolver end to end, against a fake Kubernetes API server:

the real OpenTelemetry Python SDK -> `spoor agent` (the agent configuration shipped in
deploy/k8s, pointed at the fake API) -> two `spoor serve` backends.

Both backends run the store configuration shipped in deploy/k8s too (its own WAL each, blocks
in one shared bucket: moto's S3 here), as the `single` overlay's pods do. The fake API server
speaks HTTPS with a CA made here, checks the service-account bearer token and
serves `discovery.k8s.io/v1` EndpointSliceLists for the label selector
`kubernetes.io/service-name=spoor-headless`, as the real one does: one slice per backend (both
backends listen on 127.0.0.1, so each slice carries its backend's port under the port name
`otlp-grpc` the shipped configuration asks for), plus a terminating endpoint that must be left
out. The test checks that:

- every trace lands whole on the backend that the collector's ring (re-implemented below from
  its definition) picks among the ready endpoints, and on no other;
- marking a backend's endpoint not ready moves all new traffic to the other one;
- the token file is re-read (rotated tokens keep working);
- an API server that fails keeps the last good list (failures are counted, traffic flows);
- a backend that becomes ready again takes its share back;
- a backend that dies while in the ring: its parts are retried there until its endpoint is no
  longer ready, then routed again over the ring (all to the other backend), none lost;
- once both backends have flushed, every trace is found through either of them (the shared
  bucket), while before that each live trace is only on its owner;
- a missing token file stops the agent at start with an error naming it.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind

from conftest import SPOOR_BIN, Moto, _free_ports, http_request
from test_agent import (
    AGENT_BATCH,
    RETRY,
    Launcher,
    Proc,
    flush_all,
    get_trace,
    hex_span_id,
    hex_trace_id,
    launcher,  # noqa: F401 (the fixture)
    queue_items,
    sdk,
    span_id_hex,
    wait_delivered,
    wait_for,
)
from test_security import make_ca, make_leaf

REPO = Path(__file__).resolve().parents[2]
SERVICE = "spoor-headless"
NAMESPACE = "observability"
SLICES_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"

# ---------------------------------------------------------------------------------------
# The collector's ring, from its definition (crates/agent/src/ring.rs): 36000 positions, each
# endpoint claims CRC32(endpoint ‖ i) mod 36000 for i < 100 unless an earlier endpoint (sorted)
# has it; a key belongs to the first claimed position at or after CRC32(key) mod 36000.


def ring_owner(endpoints: list[str], trace_id_hex: str) -> str:
    taken: dict[int, str] = {}
    for e in sorted(set(endpoints)):
        for i in range(100):
            taken.setdefault(zlib.crc32(e.encode() + bytes([i])) % 36000, e)
    positions = sorted(taken)
    key = zlib.crc32(bytes.fromhex(trace_id_hex)) % 36000
    return taken[next((p for p in positions if p >= key), positions[0])]


# ---------------------------------------------------------------------------------------
# The fake API server


class FakeKubeApi:
    """EndpointSlices over HTTPS. `slices` is replaced wholesale by the test; `fail` makes every
    request a 500; `token` is the bearer token it accepts."""

    def __init__(self, cert: Path, key: Path, token: str):
        self.lock = threading.Lock()
        self.token = token
        self.slices: list[dict] = []
        self.fail = False
        self.requests: list[tuple[str, int]] = []  # (path with query, status)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 (http.server's name)
                status, body = api.answer(self.path, self.headers.get("Authorization", ""))
                with api.lock:
                    api.requests.append((self.path, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, authorization: str) -> tuple[int, dict]:
        with self.lock:
            if authorization != f"Bearer {self.token}":
                return 401, status_object(401, "Unauthorized")
            if self.fail:
                return 500, status_object(500, "etcdserver: request timed out")
            url = urllib.parse.urlsplit(path)
            selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
            if url.path != SLICES_PATH:
                return 404, status_object(404, f"no route {url.path}")
            items = [
                s
                for s in self.slices
                if selector == f"kubernetes.io/service-name={s['metadata']['labels']['kubernetes.io/service-name']}"
            ]
            return 200, {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }

    def set(self, slices: list[dict] | None = None, fail: bool | None = None, token: str | None = None) -> None:
        with self.lock:
            if slices is not None:
                self.slices = slices
            if fail is not None:
                self.fail = fail
            if token is not None:
                self.token = token

    def statuses(self) -> list[int]:
        with self.lock:
            return [s for _, s in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def status_object(code: int, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


def backend_slice(name: str, backend: Proc, ready: bool, service: str = SERVICE) -> dict:
    """One slice for one backend: its gRPC port under the name the agent asks for, its HTTP port
    under another name, and a terminating endpoint that is never ready."""
    grpc, http, _ = backend.ports
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["127.0.0.1"],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "targetRef": {"kind": "Pod", "name": f"{name}-pod"},
            },
            # Nothing listens there: if the agent used it, batches for it would never arrive.
            {"addresses": ["127.0.0.9"], "conditions": {"ready": False, "serving": False, "terminating": True}},
        ],  # fmt: skip
        "ports": [
            {"name": "otlp-http", "port": http, "protocol": "TCP"},
            {"name": "otlp-grpc", "port": grpc, "protocol": "TCP"},
        ],
    }


# ---------------------------------------------------------------------------------------
# The agent, as deploy/k8s configures it


def shipped_config(configmap: str, key: str) -> dict:
    """A configuration file from a ConfigMap of the rendered single overlay."""
    docs = yaml.safe_load_all((REPO / "deploy" / "k8s" / "rendered" / "single.yaml").read_text())
    cm = next(d for d in docs if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == configmap)
    return yaml.safe_load(cm["data"][key])


def shipped_agent_config() -> dict:
    return shipped_config("spoor-agent", "agent.yaml")


def store_yaml(moto: Moto, bucket: str) -> str:
    """The store pods' configuration, with the bucket at moto (credentials come from the
    environment, as the pods get them from the Secret spoor-bucket); listeners and data dir
    from the launcher's flags."""
    cfg = shipped_config("spoor", "config.yaml")
    del cfg["server"], cfg["storage"]["data_dir"]
    assert cfg["storage"]["backend"] == "s3" and cfg["compaction"] == {"enabled": False}, cfg
    cfg["storage"]["s3"].update(bucket=bucket, endpoint=moto.endpoint, allow_http=True)
    # Blocks only when the test flushes; other pods' blocks seen within a second.
    cfg["storage"]["blocklist_poll_secs"] = 1
    cfg["blocks"] = {"max_block_age_secs": 3600}
    return yaml.safe_dump(cfg)


def agent_yaml(api: FakeKubeApi, ca: Path, token_file: Path) -> str:
    cfg = shipped_agent_config()
    # What a pod gets from Kubernetes (the API's address, the service account's files and
    # namespace) comes from the test; the listeners and data dir from the launcher's flags.
    del cfg["server"], cfg["storage"]
    lb = cfg["agent"]["exporters"]["loadbalancing"]
    k8s = lb["resolver"]["k8s"]
    assert k8s == {"service": SERVICE, "port_name": "otlp-grpc", "interval": "10s"}, k8s
    k8s.update(api_server=api.url, ca_file=str(ca), token_file=str(token_file), namespace=NAMESPACE, interval="200ms")
    lb["protocol"]["otlp"]["retry_on_failure"] = yaml.safe_load(RETRY)
    cfg.pop("processors")
    return yaml.safe_dump(cfg) + AGENT_BATCH


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca_pem, ca_cert, ca_key = make_ca("fake kubernetes CA")
    leaf = make_leaf(ca_cert, ca_key, "kube-apiserver", server=True)
    paths = tmp_path / "ca.crt", tmp_path / "apiserver.crt", tmp_path / "apiserver.key"
    for path, data in zip(paths, (ca_pem.cert, leaf.cert, leaf.key)):
        path.write_bytes(data)
    return paths


def send_traces(agent: Proc, service: str, n: int, spans: int = 3) -> dict[str, set[str]]:
    """`n` traces of `spans` spans through the agent; trace ID -> span IDs."""
    provider, tracer, sent = sdk(agent.grpc_endpoint, service)
    expected: dict[str, set[str]] = {}
    for t in range(n):
        root = tracer.start_span(f"request {t}", kind=SpanKind.SERVER)
        ctx = trace_api.set_span_in_context(root)
        children = [tracer.start_span(f"part {c}", context=ctx) for c in range(spans - 1)]
        for c in children:
            c.end()
        root.end()
        expected[hex_trace_id(root)] = {hex_span_id(s) for s in [root, *children]}
    flush_all(provider, sent, n * spans)
    provider.shutdown()
    return expected


def check_placement(backends: list[Proc], ready: list[Proc], expected: dict[str, set[str]], logs) -> dict[str, int]:
    """Every trace whole on the ring's owner among the `ready` backends, and nowhere else."""
    where = wait_delivered(backends, expected, logs)
    endpoints = {b.grpc_endpoint: b.name for b in ready}
    for tid in expected:
        owner = endpoints[ring_owner(list(endpoints), tid)]
        assert where[tid] == owner, f"trace {tid} is on {where[tid]}, the ring says {owner}"
        for b in backends:
            if b.name != owner:
                assert get_trace(b, tid) is None, f"trace {tid} is on {owner} and also on {b.name}"
    return {b.name: sum(1 for w in where.values() if w == b.name) for b in backends}


def agent_metric(agent: Proc, name: str, **labels: str) -> float:
    return agent.metrics().sum(name, **labels)


# ---------------------------------------------------------------------------------------


def test_k8s_resolver_follows_endpointslices(
    launcher: Launcher,  # noqa: F811
    pki,
    tmp_path: Path,
    moto: Moto,
    monkeypatch: pytest.MonkeyPatch,
):
    ca, cert, key = pki
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    bucket = f"spoor-k8s-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    api = FakeKubeApi(cert, key, "token-one")
    try:
        a, b = (launcher.start("serve", f"server-{x}", store_yaml(moto, bucket)) for x in "ab")
        api.set(slices=[
            backend_slice("spoor-headless-a", a, ready=True),
            backend_slice("spoor-headless-b", b, ready=True),
            # Another Service's slice in the namespace: not selected.
            backend_slice("other-x", b, ready=True, service="other"),
        ])  # fmt: skip
        agent = launcher.start("agent", "agent", agent_yaml(api, ca, token_file))
        logs = launcher.logs
        wait_for("the ring to hold both backends", lambda: agent_metric(agent, "spoor_agent_backends") == 2, 15, logs)

        # 1. Both ready: every trace on the ring's owner.
        where_both = send_traces(agent, "k8s-both", 120)
        per_backend = check_placement([a, b], [a, b], where_both, logs)
        assert all(n > 0 for n in per_backend.values()), per_backend
        paths = {p for p, s in api.requests if s == 200}
        assert paths == {f"{SLICES_PATH}?labelSelector=kubernetes.io%2Fservice-name%3D{SERVICE}"}, paths

        # 2. b's pod stops being ready (and the token rotates): all new traffic goes to a.
        updates = agent_metric(agent, "spoor_agent_backend_updates_total")
        token_file.write_text("token-two\n")
        api.set(
            token="token-two",
            slices=[backend_slice("spoor-headless-a", a, True), backend_slice("spoor-headless-b", b, False)],
        )
        wait_for("the ring to drop b", lambda: agent_metric(agent, "spoor_agent_backends") == 1, 15, logs)
        assert agent_metric(agent, "spoor_agent_backend_updates_total") == updates + 1
        moved = send_traces(agent, "k8s-moved", 60)
        assert check_placement([a, b], [a], moved, logs) == {"server-a": 60, "server-b": 0}
        assert api.statuses()[-1] == 200, "the rotated token was not picked up"

        # 3. The API server fails: the last good list stays, failures are counted.
        failed_before = agent_metric(agent, "spoor_agent_resolutions_total", outcome="error")
        api.set(fail=True)
        wait_for(
            "failed lookups to be counted",
            lambda: agent_metric(agent, "spoor_agent_resolutions_total", outcome="error") >= failed_before + 3,
            15,
            logs,
        )
        assert agent_metric(agent, "spoor_agent_backends") == 1
        during = send_traces(agent, "k8s-outage", 20)
        assert check_placement([a, b], [a], during, logs) == {"server-a": 20, "server-b": 0}

        # 4. The API answers again and b is ready: it takes its share back.
        api.set(
            fail=False, slices=[backend_slice("spoor-headless-a", a, True), backend_slice("spoor-headless-b", b, True)]
        )
        wait_for("the ring to hold both again", lambda: agent_metric(agent, "spoor_agent_backends") == 2, 15, logs)
        where_back = send_traces(agent, "k8s-back", 120)
        back = check_placement([a, b], [a, b], where_back, logs)
        assert all(n > 0 for n in back.values()), back
        wait_for("the agent's queue to drain", lambda: queue_items(agent) == 0, 30, logs)
        m = agent.metrics()
        forwarded = {
            name: sum(
                v
                for n, ls, v in m.samples
                if n == "spoor_agent_forwarded_spans_total" and ls.get("endpoint", "").endswith(p.grpc_endpoint)
            )
            for name, p in (("server-a", a), ("server-b", b))
        }
        assert forwarded["server-b"] == 3 * (per_backend["server-b"] + back["server-b"]), (forwarded, per_backend, back)
        assert "127.0.0.9" not in str(m.samples), "a terminating endpoint was used"

        # 5. b's pod dies while it is in the ring (a lost node): its parts are retried against it
        #    until its endpoint stops being ready, then routed again: everything lands on a.
        b.kill()
        both = [a.grpc_endpoint, b.grpc_endpoint]
        retries = agent_metric(agent, "spoor_agent_export_retries_total")
        lost = send_traces(agent, "k8s-lost", 60)
        owned_by_b = [tid for tid in lost if ring_owner(both, tid) == b.grpc_endpoint]
        assert owned_by_b, "no trace of 60 belongs to b: the ring is broken"
        wait_for(
            "the agent to retry the dead backend",
            lambda: agent_metric(agent, "spoor_agent_export_retries_total") > retries,
            15,
            logs,
        )
        api.set(slices=[backend_slice("spoor-headless-a", a, True), backend_slice("spoor-headless-b", b, False)])
        assert check_placement([a], [a], lost, logs) == {"server-a": 60}
        assert agent_metric(agent, "spoor_agent_rerouted_spans_total") == 3 * len(owned_by_b)

        # b comes back on its volume (its WAL replayed) and takes its share again.
        b.start()
        api.set(slices=[backend_slice("spoor-headless-a", a, True), backend_slice("spoor-headless-b", b, True)])
        wait_for("the ring to hold both once more", lambda: agent_metric(agent, "spoor_agent_backends") == 2, 15, logs)
        wait_for("the agent's queue to drain", lambda: queue_items(agent) == 0, 30, logs)

        # 6. The shared bucket: once both have flushed, either answers for every trace (b's
        #    from before its death included: they were in its WAL).
        every = {**where_both, **moved, **during, **where_back, **lost}
        for server in (a, b):
            r = http_request("POST", f"{server.api_url}/flush", timeout=60)
            assert r.status == 204, f"POST /flush on {server.name}: {r.status} {r.body[:200]!r}"

        def both_answer() -> bool:
            return all(
                {span_id_hex(sp) for sp in get_trace(s, tid) or []} == spans
                for s in (a, b)
                for tid, spans in every.items()
            )

        wait_for("every trace through both backends", both_answer, 30, logs, every=0.5)
        assert moto.list_keys(bucket), "no block in the shared bucket"
    finally:
        api.close()


def test_missing_token_file_stops_the_agent(tmp_path: Path, pki):
    ca, cert, key = pki
    api = FakeKubeApi(cert, key, "t")
    try:
        config = tmp_path / "agent.yaml"
        config.write_text(agent_yaml(api, ca, tmp_path / "no-such-token"))
        grpc, http, admin = _free_ports(3)
        r = subprocess.run(
            [str(SPOOR_BIN), "agent", "--config", str(config), "--data-dir", str(tmp_path / "data"),
             "--otlp-grpc-listen", f"127.0.0.1:{grpc}", "--otlp-http-listen", f"127.0.0.1:{http}",
             "--http-listen", f"127.0.0.1:{admin}"],
            capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert r.returncode != 0
        assert f"resolver.k8s.token_file {tmp_path / 'no-such-token'}: cannot read it" in r.stderr, r.stderr
        assert not api.requests
    finally:
        api.close()


def test_ring_reimplementation_matches_known_owners():
    """The ring above agrees with the agent's own unit-tested one on a fixed case
    (crates/agent/src/ring.rs computes the same positions with crc32fast)."""
    eps = ["127.0.0.1:4317", "127.0.0.1:4318"]
    owners = {ring_owner(eps, f"{i:032x}") for i in range(200)}
    assert owners == set(eps)
    assert ring_owner(["x:1"], "00" * 16) == "x:1"
    # Order and duplicates do not matter.
    assert all(ring_owner(eps, f"{i:032x}") == ring_owner(eps[::-1] + eps, f"{i:032x}") for i in range(50))

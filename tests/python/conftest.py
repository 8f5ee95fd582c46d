"""Shared fixtures for the Python end-to-end tests: a real `spoor serve` process, a tiny HTTP
client for its query API, and where its blocks are kept.

The binary is taken from $SPOOR_BIN, defaulting to <repo>/target/debug/spoor (build it with
`cargo build -p spoor`).

Every module using the `spoor` fixture runs once per storage mode (the `storage` fixture):
  live   traces stay in the live head, as written;
  local  blocks in <data_dir>/blocks (the default local backend);
  s3     blocks in a bucket of a moto S3 server (one per session, from $SPOOR_MOTO_SERVER or the
         moto package of the Python running the tests), under a key prefix.
Tests call `spoor.flush_to_blocks()` once their traces are produced: in the block modes it
`POST /flush`es, so what is queried afterwards comes from blocks. A module can narrow the modes
by overriding `storage`, and change the server's configuration by overriding `spoor_env`.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

REPO = Path(__file__).resolve().parents[2]
SPOOR_BIN = Path(os.environ.get("SPOOR_BIN", REPO / "target" / "debug" / "spoor"))

READY_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 15.0
# POST /flush answers once the blocks are durable: writing Parquet and uploading it takes a while
# on a busy 2-core CI machine.
FLUSH_TIMEOUT_S = 120.0
MOTO_READY_TIMEOUT_S = 60.0

STORAGE_MODES = ["live", "local", "s3"]
# Without multi-tenancy every trace belongs to this tenant (and its blocks live under it).
SINGLE_TENANT = "single-tenant"
# The key prefix the s3 mode configures, so prefix handling is exercised there; local mode keeps
# the default (none).
S3_PREFIX = "spoor-e2e"
META_FILE = "meta.json"
DATA_FILE = "data.parquet"
FILTER_FILE = "filter.bin"

# tests/python/jaeger runs in a venv of its own (its exporters need an older SDK; see its
# requirements.txt, and scripts/test): a venv where they do not import leaves the directory out.
try:
    import opentelemetry.exporter.jaeger.proto.grpc  # noqa: F401
    import opentelemetry.exporter.jaeger.thrift  # noqa: F401
except Exception:
    collect_ignore = ["jaeger"]

# Never let a proxy from the environment intercept loopback traffic (urllib, requests and
# grpc all honour *_proxy variables).
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    """GET without raising on 4xx/5xx; header names are lower-cased."""
    return http_request("GET", url, headers, timeout=timeout)


def http_request(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None, timeout: float = 10.0
) -> Response:
    """Any request, without raising on 4xx/5xx; header names are lower-cased."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with _NO_PROXY.open(req, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


# ---------------------------------------------------------------------------------------
# Block storage as the tests see it: keys ("/"-separated, relative to the backend's root, so
# they start with the configured prefix) and their bytes.


class LocalStore:
    def __init__(self, root: Path):
        self.root = root

    def describe(self) -> str:
        return f"local directory {self.root}"

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix))

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def local_path(self, key: str) -> Path | None:
        return self.root / key


class S3Store:
    def __init__(self, moto: "Moto", bucket: str):
        self.moto = moto
        self.bucket = bucket

    def describe(self) -> str:
        return f"bucket {self.bucket} at {self.moto.endpoint}"

    def keys(self, prefix: str = "") -> list[str]:
        return self.moto.list_keys(self.bucket, prefix)

    def read(self, key: str) -> bytes:
        return self.moto.get(self.bucket, key)

    def local_path(self, key: str) -> Path | None:
        return None


BlockStore = LocalStore | S3Store


@dataclass(frozen=True)
class Block:
    tenant: str
    block_id: str
    files: dict[str, str]  # file name -> key


@dataclass(frozen=True)
class Spoor:
    grpc_endpoint: str  # host:port, for the gRPC exporter
    otlp_http_url: str  # base URL of the OTLP/HTTP receiver
    api_url: str  # base URL of the query API
    data_dir: Path
    log_path: Path
    storage: str = "live"  # one of STORAGE_MODES
    store: BlockStore | None = None  # where blocks go; None in live mode
    prefix: str = ""  # storage.prefix

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def flush(self) -> None:
        """POST /flush: every tenant's live traces into blocks; 204 once they are durable."""
        try:
            r = http_request("POST", f"{self.api_url}/flush", timeout=FLUSH_TIMEOUT_S)
        except OSError as e:
            pytest.fail(f"POST /flush failed: {e!r}\n{self.log_tail()}")
        assert r.status == 204, f"POST /flush: expected 204, got {r.status} {r.body[:300]!r}\n{self.log_tail()}"

    def flush_to_blocks(self) -> None:
        """In the block modes, flushes so that later queries are answered from blocks, and checks
        that a complete block exists; nothing in live mode."""
        if self.storage == "live":
            return
        self.flush()
        assert self.blocks(), f"POST /flush answered 204 but no block ({META_FILE}) is in {self.store.describe()}"

    def blocks(self) -> list[Block]:
        """Every complete block (one with its meta.json): keys <prefix>/<tenant>/<block-id>/<file>.
        Keys of any other shape are ignored here."""
        assert self.store is not None, "no blocks in live mode"
        root = f"{self.prefix}/" if self.prefix else ""
        by_dir: dict[tuple[str, str], dict[str, str]] = {}
        for key in self.store.keys(root):
            parts = key[len(root) :].split("/")
            if len(parts) == 3:
                by_dir.setdefault((parts[0], parts[1]), {})[parts[2]] = key
        return [Block(t, b, files) for (t, b), files in sorted(by_dir.items()) if META_FILE in files]


def _free_ports(n: int) -> list[int]:
    # Hold all sockets open together so the kernel hands out n distinct ports; there is a
    # small window between closing them and spoor binding, which is fine on a test machine.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs each module's storage modes one after the other, so every mode starts one server.
    pytest's own grouping (which this keeps within a mode) interleaves modes when a module has
    more than one parametrized module-scoped fixture, and would start some servers twice."""
    modules: dict[str, int] = {}

    def key(item: pytest.Item) -> tuple[int, int]:
        module = modules.setdefault(item.nodeid.split("::")[0], len(modules))
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("storage") if callspec else None
        return (module, STORAGE_MODES.index(mode) if mode in STORAGE_MODES else -1)

    items.sort(key=key)


@pytest.fixture(scope="session", autouse=True)
def _clean_environment():
    """OTEL_* variables would silently reconfigure the SDK and exporters; drop them."""
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith("OTEL_"):
                mp.delenv(k)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        yield


@pytest.fixture(scope="module", params=STORAGE_MODES)
def storage(request: pytest.FixtureRequest) -> str:
    """The storage mode of the module's server (see the module docstring)."""
    return request.param


@pytest.fixture(scope="module")
def spoor_env() -> dict[str, str]:
    """Extra SPOOR__… variables for the module's server; override in a module to change them."""
    return {}


@pytest.fixture(scope="module")
def spoor(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, storage: str, spoor_env: dict[str, str]
) -> Spoor:
    """A `spoor serve` process with a fresh data dir, shared by one test module."""
    if not SPOOR_BIN.is_file():
        pytest.fail(f"spoor binary not found at {SPOOR_BIN}; run `cargo build -p spoor` or set SPOOR_BIN")

    base = tmp_path_factory.mktemp(f"spoor-{storage}")
    data_dir = base / "data"
    log_path = base / "spoor.log"
    grpc_port, otlp_http_port, api_port = _free_ports(3)
    # Only the configuration chosen here: SPOOR__* variables from the caller's shell would change
    # what is being tested.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    store: BlockStore | None = None
    prefix = ""
    if storage == "local":
        env["SPOOR__STORAGE__BACKEND"] = "local"
        # storage.local.path left at its default, <data_dir>/blocks.
        store = LocalStore(data_dir / "blocks")
    elif storage == "s3":
        moto: Moto = request.getfixturevalue("moto")
        bucket = f"spoor-{uuid.uuid4().hex[:16]}"
        moto.create_bucket(bucket)
        env.update(moto.s3_env(bucket))
        prefix = S3_PREFIX
        env["SPOOR__STORAGE__PREFIX"] = prefix
        store = S3Store(moto, bucket)
    elif storage != "live":
        raise ValueError(f"unknown storage mode {storage!r}")
    env.update(spoor_env)
    server = Spoor(
        grpc_endpoint=f"127.0.0.1:{grpc_port}",
        otlp_http_url=f"http://127.0.0.1:{otlp_http_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        data_dir=data_dir,
        log_path=log_path,
        storage=storage,
        store=store,
        prefix=prefix,
    )
    cmd = [
        str(SPOOR_BIN), "serve",
        "--data-dir", str(data_dir),
        "--otlp-grpc-listen", server.grpc_endpoint,
        "--otlp-http-listen", f"127.0.0.1:{otlp_http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(proc, server)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"spoor did not exit within {SHUTDOWN_TIMEOUT_S}s of SIGTERM\n{server.log_tail()}")
    assert proc.returncode == 0, f"spoor exited with {proc.returncode} after SIGTERM\n{server.log_tail()}"


def _wait_ready(proc: subprocess.Popen, server: Spoor) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"spoor exited early with {proc.returncode}\n{server.log_tail()}")
        try:
            r = http_get(f"{server.api_url}/ready", timeout=1.0)
            if r.status == 200:
                return
            last = f"{r.status} {r.body[:200]!r}"
        except OSError as e:  # not listening yet
            last = repr(e)
        time.sleep(0.05)
    pytest.fail(f"spoor not ready after {READY_TIMEOUT_S}s (last: {last})\n{server.log_tail()}")


# ---------------------------------------------------------------------------------------
# moto: an in-memory S3 server


# moto checks no signature, but answers some operations (DELETE) with 403 unless the request
# looks signed. Without a content type urllib sends bodies as a form, which moto then parses
# away instead of storing.
_MOTO_HEADERS = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=" + "0" * 64,
    "Content-Type": "application/octet-stream",
}
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass
class Moto:
    endpoint: str  # http://127.0.0.1:PORT
    log_path: Path
    proc: subprocess.Popen = field(repr=False)

    def _request(self, method: str, path: str, body: bytes | None = None, ok=(200, 204)) -> Response:
        r = http_request(method, f"{self.endpoint}{path}", _MOTO_HEADERS, body, timeout=30.0)
        assert r.status in ok, f"moto {method} {path}: {r.status} {r.body[:300]!r}"
        return r

    def create_bucket(self, bucket: str) -> None:
        self._request("PUT", f"/{bucket}")

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            r = self._request("GET", f"/{bucket}?{urllib.parse.urlencode(query)}")
            root = ET.fromstring(r.body)
            keys += [e.text or "" for e in root.iter(f"{_S3_NS}Key")]
            if root.findtext(f"{_S3_NS}IsTruncated") != "true":
                return keys
            token = root.findtext(f"{_S3_NS}NextContinuationToken")
            assert token, "truncated S3 listing without a continuation token"

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self._request("PUT", f"/{bucket}/{urllib.parse.quote(key)}", body)

    def get(self, bucket: str, key: str) -> bytes:
        return self._request("GET", f"/{bucket}/{urllib.parse.quote(key)}").body

    def delete(self, bucket: str, key: str) -> None:
        self._request("DELETE", f"/{bucket}/{urllib.parse.quote(key)}")

    def s3_env(self, bucket: str) -> dict[str, str]:
        """The SPOOR__… variables that point a server's blocks at `bucket` here."""
        return {
            "SPOOR__STORAGE__BACKEND": "s3",
            "SPOOR__STORAGE__S3__BUCKET": bucket,
            "SPOOR__STORAGE__S3__ENDPOINT": self.endpoint,
            "SPOOR__STORAGE__S3__REGION": "us-east-1",
            "SPOOR__STORAGE__S3__ACCESS_KEY_ID": "test",
            "SPOOR__STORAGE__S3__SECRET_ACCESS_KEY": "test",
            "SPOOR__STORAGE__S3__ALLOW_HTTP": "true",
        }


def _moto_command() -> list[str]:
    """$SPOOR_MOTO_SERVER if set (what the Rust tests use), else the moto package of this Python.
    Missing moto fails the tests rather than skipping them."""
    explicit = os.environ.get("SPOOR_MOTO_SERVER")
    if explicit:
        if not Path(explicit).is_file():
            pytest.fail(f"SPOOR_MOTO_SERVER={explicit} does not exist")
        return [explicit]
    if importlib.util.find_spec("moto") is None:
        pytest.fail(f"moto is not installed for {sys.executable}: pip install -r tests/python/requirements.txt")
    return [sys.executable, "-m", "moto.server"]


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Moto:
    """One moto S3 server for the session (each server gets its own bucket)."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    (port,) = _free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*_moto_command(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Moto(endpoint, log_path, proc)
    try:
        deadline = time.monotonic() + MOTO_READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto exited early with {proc.returncode}\n{log_path.read_text(errors='replace')}")
            try:
                http_get(f"{endpoint}/", _MOTO_HEADERS, timeout=1.0)
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto not answering on {endpoint} after {MOTO_READY_TIMEOUT_S}s")
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RecordingExporter(SpanExporter):
    """Delegates to an OTLP exporter and records each result: the SDK only logs a failed
    export, and a test must not mistake a rejected batch for a Spoor query bug."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.results: list[tuple[int, SpanExportResult]] = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append((len(spans), result))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


# ---------------------------------------------------------------------------------------
# Prometheus: a real server (tests/python/prometheus.py)

# The servers started by prometheus_factory that are still running; their logs go into the
# report of a test that fails meanwhile.
_RUNNING_PROMETHEUS: list = []


@pytest.fixture(scope="module")
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory):
    """Starts real Prometheus servers: call it with `scrape=[ScrapeJob([...])]`, `rule_files=[...]`
    (and optionally `evaluation_interval`, `extra_args`); it returns a prometheus.Prometheus
    (`url`, `query`, `query_exemplars`, `series`, `wait_for`, `remote_write`, ...). Each runs on a
    free 127.0.0.1 port with the remote-write receiver and exemplar storage on, and is stopped
    (SIGTERM, then SIGKILL) at the end of the module. Module-scoped so that a module-scoped
    fixture can hold one server for its tests; a test that fails while one is running gets its
    log in the report."""
    from prometheus import PrometheusError, prometheus_binary, start_prometheus

    if prometheus_binary() is None:
        pytest.fail("prometheus not found on PATH (scripts/test installs Debian's package) and $PROMETHEUS_BIN unset")
    started = []

    def start(**kwargs):
        workdir = tmp_path_factory.mktemp("prometheus")
        try:
            prom = start_prometheus(workdir, **kwargs)
        except PrometheusError as e:
            pytest.fail(str(e))
        started.append(prom)
        _RUNNING_PROMETHEUS.append(prom)
        return prom

    yield start
    problems = []
    for prom in started:
        _RUNNING_PROMETHEUS.remove(prom)
        killed_at = prom.proc.poll()
        code = prom.stop()
        if killed_at is not None:
            problems.append(f"prometheus at {prom.url} had exited with {killed_at} before teardown\n{prom.log_tail()}")
        elif code != 0:
            problems.append(f"prometheus at {prom.url} exited with {code} after SIGTERM\n{prom.log_tail()}")
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Adds the log tail of every running Prometheus (prometheus_factory) to a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _RUNNING_PROMETHEUS:
        for prom in _RUNNING_PROMETHEUS:
            report.sections.append((f"prometheus log {prom.url} ({prom.log_path})", prom.log_tail(200)))

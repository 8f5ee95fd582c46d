"""Shared fixtures for the Python end-to-end tests: a real `spoor serve` process and a tiny
HTTP client for its query API.

The binary is taken from $SPOOR_BIN, defaulting to <repo>/target/debug/spoor (build it with
`cargo build -p spoor`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPOOR_BIN = Path(os.environ.get("SPOOR_BIN", REPO / "target" / "debug" / "spoor"))

READY_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 15.0

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
    req = urllib.request.Request(url, headers=headers or {}, method="GET")
    try:
        with _NO_PROXY.open(req, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@dataclass(frozen=True)
class Spoor:
    grpc_endpoint: str  # host:port, for the gRPC exporter
    otlp_http_url: str  # base URL of the OTLP/HTTP receiver
    api_url: str  # base URL of the query API
    data_dir: Path
    log_path: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"


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


@pytest.fixture(scope="module")
def spoor(tmp_path_factory: pytest.TempPathFactory) -> Spoor:
    """A `spoor serve` process with a fresh data dir, shared by one test module."""
    if not SPOOR_BIN.is_file():
        pytest.fail(f"spoor binary not found at {SPOOR_BIN}; run `cargo build -p spoor` or set SPOOR_BIN")

    base = tmp_path_factory.mktemp("spoor")
    data_dir = base / "data"
    log_path = base / "spoor.log"
    grpc_port, otlp_http_port, api_port = _free_ports(3)
    server = Spoor(
        grpc_endpoint=f"127.0.0.1:{grpc_port}",
        otlp_http_url=f"http://127.0.0.1:{otlp_http_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        data_dir=data_dir,
        log_path=log_path,
    )
    cmd = [
        str(SPOOR_BIN), "serve",
        "--data-dir", str(data_dir),
        "--otlp-grpc-listen", server.grpc_endpoint,
        "--otlp-http-listen", f"127.0.0.1:{otlp_http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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

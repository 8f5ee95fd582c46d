"""A real Prometheus server for the end-to-end tests: started on 127.0.0.1 with a generated
configuration in a temporary directory, queried over its HTTP API.

    prom = start_prometheus(workdir, scrape=[ScrapeJob(["127.0.0.1:3200"])], rule_files=[...])
    try:
        prom.wait_for('up{job="spoor"}', lambda r: r and r[0]["value"][1] == "1")
    finally:
        prom.stop()

Tests normally use the `prometheus_factory` fixture of conftest.py instead, which stops every
server it started and attaches their logs to a failed test's report.

The server runs with the remote-write receiver (POST /api/v1/write, see `remote_write`) and
exemplar storage on. The binary is $PROMETHEUS_BIN, else `prometheus` on PATH (scripts/test
installs Debian's package). Nothing here imports pytest: failures raise PrometheusError with the
tail of the server's log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

# Never let a proxy from the environment intercept loopback traffic.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PrometheusError(AssertionError):
    """A failed start, request or wait; the message ends with the server's log tail."""


def prometheus_binary() -> str | None:
    """$PROMETHEUS_BIN if set, else `prometheus` on PATH, else None."""
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


@dataclass
class ScrapeJob:
    """One scrape job. Prometheus negotiates the format itself (its Accept header prefers
    OpenMetrics, which is what carries exemplars), so there are no headers to set."""

    targets: Sequence[str]  # host:port
    job_name: str = "spoor"
    metrics_path: str = "/metrics"
    scrape_interval: str = "1s"
    params: dict[str, Sequence[str]] | None = None  # ?name=value query parameters
    scheme: str = "http"
    honor_labels: bool = False
    labels: dict[str, str] | None = None  # extra target labels

    def config(self) -> dict[str, Any]:
        static: dict[str, Any] = {"targets": list(self.targets)}
        if self.labels:
            static["labels"] = dict(self.labels)
        cfg: dict[str, Any] = {
            "job_name": self.job_name,
            "metrics_path": self.metrics_path,
            "scheme": self.scheme,
            "scrape_interval": self.scrape_interval,
            "scrape_timeout": self.scrape_interval,
            "honor_labels": self.honor_labels,
            "static_configs": [static],
        }
        if self.params:
            cfg["params"] = {k: list(v) for k, v in self.params.items()}
        return cfg


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes


def _request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None, method: str | None = None,
             timeout: float = 10.0, ca_file: Path | None = None) -> HttpResponse:  # fmt: skip
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    opener = _NO_PROXY
    if ca_file is not None:
        # A server with TLS (start_prometheus(tls=...)): trust the test's CA only.
        context = ssl.create_default_context(cafile=str(ca_file))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=timeout) as r:
            return HttpResponse(r.status, r.read())
    except urllib.error.HTTPError as e:
        return HttpResponse(e.code, e.read())


@dataclass
class Prometheus:
    url: str  # http://127.0.0.1:PORT
    workdir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)
    ca_file: Path | None = None  # with TLS: the CA its certificate chains to

    # --- process -------------------------------------------------------------------------

    def log_tail(self, n: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def _fail(self, message: str) -> PrometheusError:
        return PrometheusError(f"{message}\n--- prometheus log ({self.log_path}) ---\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit code. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def remote_write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    # --- HTTP API --------------------------------------------------------------------------

    def api(self, path: str, params: dict[str, Any] | Sequence[tuple[str, Any]] | None = None) -> Any:
        """GET /api/v1/<path>; returns `data` of a success answer, raises on anything else."""
        query = urllib.parse.urlencode(params or {}, doseq=True)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            r = _request(url, ca_file=self.ca_file)
        except OSError as e:
            raise self._fail(f"GET {url}: {e!r}") from e
        try:
            doc = json.loads(r.body)
        except ValueError:
            raise self._fail(f"GET {url}: {r.status}, not JSON: {r.body[:300]!r}") from None
        if r.status != 200 or doc.get("status") != "success":
            raise self._fail(f"GET {url}: {r.status} {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, promql: str, time: float | None = None) -> list[dict[str, Any]]:
        """An instant query (GET /api/v1/query). For a vector the result is a list of
        {"metric": {labels}, "value": [ts, "value string"]}; a scalar or string result is
        returned as its one-element list [ts, "value"]."""
        params = {"query": promql}
        if time is not None:
            params["time"] = f"{time:.3f}"
        data = self.api("query", params)
        if data["resultType"] in ("scalar", "string"):
            return [data["result"]]
        return data["result"]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """GET /api/v1/query_range: a list of {"metric": {...}, "values": [[ts, "v"], ...]}."""
        return self.api("query_range", {"query": promql, "start": start, "end": end, "step": step})["result"]

    def query_exemplars(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        """GET /api/v1/query_exemplars: a list of {"seriesLabels": {...}, "exemplars":
        [{"labels": {...}, "value": "1", "timestamp": 1.5}, ...]}."""
        return self.api("query_exemplars", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}"})

    def series(
        self, match: str | Iterable[str], start: float | None = None, end: float | None = None
    ) -> list[dict[str, str]]:
        """GET /api/v1/series: the label sets of the series matching one or more selectors."""
        matches = [match] if isinstance(match, str) else list(match)
        params: list[tuple[str, Any]] = [("match[]", m) for m in matches]
        if start is not None:
            params.append(("start", f"{start:.3f}"))
        if end is not None:
            params.append(("end", f"{end:.3f}"))
        return self.api("series", params)

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, with health, lastError and lastScrape."""
        return self.api("targets", {"state": "active"})["activeTargets"]

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups (GET /api/v1/rules), with each rule's health and lastError."""
        return self.api("rules")["groups"]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (GET /api/v1/alerts)."""
        return self.api("alerts")["alerts"]

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Runs `promql` until predicate(result) holds (by default: a non-empty result) and returns
        that result; raises with the last result, the targets' health and the log on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            if self.proc.poll() is not None:
                raise self._fail(f"prometheus exited with {self.proc.returncode} while waiting for {promql!r}")
            last = self.query(promql)
            if predicate(last):
                return last
            if time.monotonic() > deadline:
                try:
                    health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets()]
                except PrometheusError:
                    health = "<unavailable>"
                raise self._fail(
                    f"{promql!r}: condition not met after {timeout}s; last result {last!r}; targets {health}"
                )
            time.sleep(interval)

    def remote_write(self, series: Sequence["RemoteSeries"]) -> None:
        """POSTs a remote-write 1.0 request (snappy-compressed protobuf) to /api/v1/write."""
        import cramjam  # only needed here

        body = bytes(cramjam.snappy.compress_raw(encode_write_request(series)))
        headers = {
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        r = _request(self.remote_write_url, body, headers, method="POST", ca_file=self.ca_file)
        if r.status // 100 != 2:
            raise self._fail(f"remote write: {r.status} {r.body[:300]!r}")


def start_prometheus(
    workdir: Path,
    scrape: Sequence[ScrapeJob] = (),
    rule_files: Sequence[Path | str] = (),
    evaluation_interval: str = "1s",
    extra_args: Sequence[str] = (),
    tls: tuple[Path, Path, Path] | None = None,
) -> Prometheus:
    """Starts Prometheus on a free loopback port with its config, TSDB and log under `workdir`
    and waits for /-/ready. `rule_files` are loaded from where they are (e.g. the files of
    deploy/prometheus). Raises PrometheusError if it does not come up (the rule files and the
    configuration are checked at start: a bad one makes it exit). `tls` is (certificate, key,
    CA): Prometheus then serves HTTPS only (`--web.config.file` with `tls_server_config`)."""
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError("prometheus not found: install it (apt-get install prometheus) or set $PROMETHEUS_BIN")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": evaluation_interval},
        "rule_files": [str(Path(rf).resolve()) for rf in rule_files],
        "scrape_configs": [job.config() for job in scrape],
    }
    config_path = workdir / "prometheus.yml"
    # JSON is YAML: no YAML library needed.
    config_path.write_text(json.dumps(config, indent=2))
    port = free_port()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    if tls:
        web = {"tls_server_config": {"cert_file": str(tls[0]), "key_file": str(tls[1])}}
        (workdir / "web.yml").write_text(json.dumps(web))
        extra_args = [*extra_args, f"--web.config.file={workdir / 'web.yml'}"]
    log_path = workdir / "prometheus.log"
    cmd = [
        binary,
        f"--config.file={config_path}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={workdir / 'data'}",
        "--web.enable-remote-write-receiver",
        "--enable-feature=exemplar-storage",
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    ca_file = tls[2] if tls else None
    prom = Prometheus(url=url, workdir=workdir, config_path=config_path, log_path=log_path, proc=proc, ca_file=ca_file)
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while True:
        if proc.poll() is not None:
            raise prom._fail(f"prometheus exited early with {proc.returncode}: {' '.join(cmd)}")
        try:
            r = _request(f"{url}/-/ready", timeout=1.0, ca_file=ca_file)
            if r.status == 200:
                return prom
            last = f"{r.status} {r.body[:200]!r}"
        except OSError as e:
            last = repr(e)
        if time.monotonic() > deadline:
            prom.stop()
            raise prom._fail(f"prometheus not ready after {READY_TIMEOUT_S}s (last: {last})")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# Remote write 1.0 (prometheus/prompb), encoded by hand:
#   WriteRequest { repeated TimeSeries timeseries = 1; }
#   TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; repeated Exemplar exemplars = 3; }
#   Label        { string name = 1; string value = 2; }
#   Sample       { double value = 1; int64 timestamp = 2; }          timestamp in ms
#   Exemplar     { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }


@dataclass
class RemoteSeries:
    labels: dict[str, str]  # including __name__
    samples: Sequence[tuple[float, int]]  # (value, timestamp in ms)
    exemplars: Sequence[tuple[dict[str, str], float, int]] = ()  # (labels, value, timestamp ms)


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 as two's complement, 10 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _field_double(num: int, v: float) -> bytes:
    return _varint(num << 3 | 1) + struct.pack("<d", v)


def _field_varint(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(v)


def _labels(labels: dict[str, str]) -> bytes:
    # Prometheus expects labels sorted by name.
    return b"".join(
        _field_bytes(1, _field_bytes(1, k.encode()) + _field_bytes(2, v.encode())) for k, v in sorted(labels.items())
    )


def encode_write_request(series: Sequence[RemoteSeries]) -> bytes:
    out = bytearray()
    for s in series:
        ts = bytearray(_labels(s.labels))
        for value, t_ms in s.samples:
            ts += _field_bytes(2, _field_double(1, value) + _field_varint(2, t_ms))
        for ex_labels, value, t_ms in s.exemplars:
            ts += _field_bytes(3, _labels(ex_labels) + _field_double(2, value) + _field_varint(3, t_ms))
        out += _field_bytes(1, bytes(ts))
    return bytes(out)

"""remote_write over TLS to a real Prometheus (`--web.config.file` with `tls_server_config`):
the metrics generator's `https://` endpoint with `tls.ca_file` delivers; an endpoint that does
not trust the server's CA delivers nothing and says why. Certificates are made by the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from conftest import SPOOR_BIN, Spoor, _free_ports, _wait_ready, http_get
from test_security import make_ca, make_leaf


def test_remote_write_to_prometheus_over_tls(tmp_path, prometheus_factory):
    ca, ca_cert, ca_key = make_ca("remote-write CA")
    leaf = make_leaf(ca_cert, ca_key, "prometheus", server=True)
    other, _, _ = make_ca("a CA Prometheus does not use")
    for name, data in {"ca.pem": ca.cert, "prom.pem": leaf.cert, "prom-key.pem": leaf.key, "other.pem": other.cert}.items():
        (tmp_path / name).write_bytes(data)
    prom = prometheus_factory(tls=(tmp_path / "prom.pem", tmp_path / "prom-key.pem", tmp_path / "ca.pem"))
    assert prom.url.startswith("https://")
    grpc_port, http_port, api_port = _free_ports(3)
    config = tmp_path / "spoor.yaml"
    config.write_text(
        f"""
metrics_generator:
  collection_interval: 1s
  remote_write:
    - url: {prom.remote_write_url}
      name: prometheus-tls
      tls:
        ca_file: {tmp_path / "ca.pem"}
    - url: {prom.remote_write_url}
      name: untrusted
      max_retries: 0
      tls:
        ca_file: {tmp_path / "other.pem"}
"""
    )
    server = Spoor(
        grpc_endpoint=f"127.0.0.1:{grpc_port}",
        otlp_http_url=f"http://127.0.0.1:{http_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "spoor.log",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    cmd = [
        str(SPOOR_BIN), "serve", "--config", str(config), "--data-dir", str(server.data_dir),
        "--otlp-grpc-listen", server.grpc_endpoint, "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(proc, server)
        provider = TracerProvider(resource=Resource.create({"service.name": "tls-writer"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True, timeout=5))
        )
        with provider.get_tracer("rw-tls").start_as_current_span("GET /over-tls", kind=SpanKind.SERVER):
            pass
        provider.shutdown()
        q = 'sum(traces_spanmetrics_calls_total{service="tls-writer"})'
        prom.wait_for(q, lambda r: bool(r) and float(r[0]["value"][1]) >= 1, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            metrics = http_get(f"{server.api_url}/metrics").body.decode()
            ok = 'spoor_remote_write_requests_total{endpoint="prometheus-tls",outcome="ok"}' in metrics
            refused = 'endpoint="untrusted",outcome="failed' in metrics
            if ok and refused:
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.5)
        assert 'spoor_remote_write_requests_total{endpoint="untrusted",outcome="ok"}' not in metrics
        assert "certificate" in server.log_path.read_text().lower()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

"""The object store over TLS (`storage.s3.tls`, docs/security.md): moto serves HTTPS with a
certificate from the test's own CA; Spoor trusts that CA through `tls.ca_file`, writes blocks and
reads them back. Without the CA the store's certificate is refused. And through an mTLS gateway
in front of moto: a client certificate and a server name override."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import requests
from cryptography import x509
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import _MOTO_HEADERS, SPOOR_BIN, Spoor, _free_ports, _wait_ready, http_request
from test_security import make_ca, make_leaf


def start_spoor(tmp_path, name: str, env_extra: dict[str, str]):
    grpc_port, http_port, api_port = _free_ports(3)
    server = Spoor(
        grpc_endpoint=f"127.0.0.1:{grpc_port}",
        otlp_http_url=f"http://127.0.0.1:{http_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        data_dir=tmp_path / name,
        log_path=tmp_path / f"{name}.log",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update(env_extra)
    cmd = [
        str(SPOOR_BIN), "serve", "--data-dir", str(server.data_dir),
        "--otlp-grpc-listen", server.grpc_endpoint, "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return proc, server


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_blocks_go_to_an_https_store_that_trusts_the_test_ca(tmp_path):
    ca, ca_cert, ca_key = make_ca("object store CA")
    leaf = make_leaf(ca_cert, ca_key, "moto", server=True)
    for name, data in {"ca.pem": ca.cert, "moto.pem": leaf.cert, "moto-key.pem": leaf.key}.items():
        (tmp_path / name).write_bytes(data)
    (port,) = _free_ports(1)
    endpoint = f"https://127.0.0.1:{port}"
    with open(tmp_path / "moto.log", "wb") as log:
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port),
             "-c", str(tmp_path / "moto.pem"), "-k", str(tmp_path / "moto-key.pem")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    ca_file = str(tmp_path / "ca.pem")
    procs = [moto]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.put(f"{endpoint}/tls-blocks", headers=_MOTO_HEADERS, verify=ca_file, timeout=2)
                assert r.status_code == 200, r.text
                break
            except requests.exceptions.ConnectionError:
                assert time.monotonic() < deadline, (tmp_path / "moto.log").read_text()
                time.sleep(0.1)
        s3 = {
            "SPOOR__STORAGE__BACKEND": "s3",
            "SPOOR__STORAGE__S3__BUCKET": "tls-blocks",
            "SPOOR__STORAGE__S3__ENDPOINT": endpoint,
            "SPOOR__STORAGE__S3__ACCESS_KEY_ID": "test",
            "SPOOR__STORAGE__S3__SECRET_ACCESS_KEY": "test",
            "SPOOR__STORAGE__MAX_RETRIES": "0",
        }
        proc, server = start_spoor(tmp_path, "trusting", {**s3, "SPOOR__STORAGE__S3__TLS__CA_FILE": ca_file})
        procs.append(proc)
        _wait_ready(proc, server)
        provider = TracerProvider(resource=Resource.create({"service.name": "s3-tls"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.otlp_http_url}/v1/traces")))
        with provider.get_tracer("s3-tls").start_as_current_span("stored-over-tls") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
        assert http_request("POST", f"{server.api_url}/flush", timeout=120).status == 204, server.log_tail()
        listing = requests.get(f"{endpoint}/tls-blocks?list-type=2", headers=_MOTO_HEADERS, verify=ca_file, timeout=10)
        keys = [e.text for e in ET.fromstring(listing.content).iter() if e.tag.endswith("Key")]
        assert keys, listing.text
        stop(proc)
        # A fresh process (nothing live) reads the trace back from the HTTPS store.
        proc, server = start_spoor(tmp_path, "reader", {**s3, "SPOOR__STORAGE__S3__TLS__CA_FILE": ca_file})
        procs.append(proc)
        _wait_ready(proc, server)
        deadline = time.monotonic() + 30
        while (r := http_request("GET", f"{server.api_url}/api/v2/traces/{trace_id}")).status != 200:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        assert b"stored-over-tls" in r.body
        stop(proc)
        # Without the CA, the store's certificate is not trusted: flushing fails and says so.
        proc, server = start_spoor(tmp_path, "untrusting", s3)
        procs.append(proc)
        _wait_ready(proc, server)
        assert http_request("POST", f"{server.api_url}/flush", timeout=120).status in (204, 500, 503)
        deadline = time.monotonic() + 30
        while "certificate" not in server.log_path.read_text().lower():
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
    finally:
        for p in procs:
            stop(p)


class MtlsGateway:
    """A TLS front for moto that requires a client certificate from `ca` and presents one that
    names only `s3.gateway.internal` (so reaching it by IP needs tls.server_name_override), as an
    mTLS gateway in front of a private bucket does. It records the client certificates' names."""

    def __init__(self, upstream: str, cert: Path, key: Path, ca: Path):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.load_verify_locations(ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.clients: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        subject = dict(x[0] for x in tls.getpeercert()["subject"])
        self.clients.append(subject["commonName"])
        up = socket.create_connection(self.upstream)

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, tls), daemon=True).start()
        pump(tls, up)

    def close(self) -> None:
        self.listener.close()


def test_blocks_go_through_an_mtls_gateway_by_its_certificate_name(tmp_path, moto):
    """`storage.s3.tls` with a client certificate and a server name override: blocks are written
    and read back through a gateway that refuses clients without a certificate."""
    ca, ca_cert, ca_key = make_ca("gateway CA")
    gateway = make_leaf(ca_cert, ca_key, "gateway", server=True, names=[x509.DNSName("s3.gateway.internal")])
    client = make_leaf(ca_cert, ca_key, "spoor-blocks", server=False)
    files = {"ca.pem": ca.cert, "gw.pem": gateway.cert, "gw-key.pem": gateway.key,
             "client.pem": client.cert, "client-key.pem": client.key}  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    gw = MtlsGateway(moto.endpoint, tmp_path / "gw.pem", tmp_path / "gw-key.pem", tmp_path / "ca.pem")
    moto.create_bucket("mtls-blocks")
    s3 = {**moto.s3_env("mtls-blocks"), "SPOOR__STORAGE__S3__ENDPOINT": f"https://127.0.0.1:{gw.port}",
          "SPOOR__STORAGE__S3__ALLOW_HTTP": "false", "SPOOR__STORAGE__MAX_RETRIES": "0",
          "SPOOR__STORAGE__S3__TLS__CA_FILE": str(tmp_path / "ca.pem")}  # fmt: skip
    mtls = {**s3, "SPOOR__STORAGE__S3__TLS__CERT_FILE": str(tmp_path / "client.pem"),
            "SPOOR__STORAGE__S3__TLS__KEY_FILE": str(tmp_path / "client-key.pem"),
            "SPOOR__STORAGE__S3__TLS__SERVER_NAME_OVERRIDE": "s3.gateway.internal"}  # fmt: skip
    procs = []
    try:
        proc, server = start_spoor(tmp_path, "writer", mtls)
        procs.append(proc)
        _wait_ready(proc, server)
        provider = TracerProvider(resource=Resource.create({"service.name": "s3-mtls"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.otlp_http_url}/v1/traces")))
        with provider.get_tracer("s3-mtls").start_as_current_span("stored-through-mtls") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
        assert http_request("POST", f"{server.api_url}/flush", timeout=120).status == 204, server.log_tail()
        assert any(k.endswith("meta.json") for k in moto.list_keys("mtls-blocks")), server.log_tail()
        assert "spoor-blocks" in gw.clients
        stop(proc)
        # A fresh process reads the trace back through the gateway.
        proc, server = start_spoor(tmp_path, "reader", mtls)
        procs.append(proc)
        _wait_ready(proc, server)
        deadline = time.monotonic() + 30
        while (r := http_request("GET", f"{server.api_url}/api/v2/traces/{trace_id}")).status != 200:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        assert b"stored-through-mtls" in r.body
        stop(proc)
        # Without the client certificate the gateway refuses the handshake; without the name
        # override the gateway's certificate does not name 127.0.0.1. Each fails its flush, saying so.
        for name, env, says in [
            ("no-cert", {k: v for k, v in mtls.items() if "CERT_FILE" not in k and "KEY_FILE" not in k},
             "certificaterequired"),
            ("no-override", {k: v for k, v in mtls.items() if "SERVER_NAME" not in k},
             'certificate not valid for name "127.0.0.1"'),
        ]:
            proc, server = start_spoor(tmp_path, name, env)
            procs.append(proc)
            _wait_ready(proc, server)
            provider = TracerProvider(resource=Resource.create({"service.name": "s3-mtls"}))
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.otlp_http_url}/v1/traces")))
            provider.get_tracer("s3-mtls").start_span("never-stored").end()
            provider.shutdown()
            assert http_request("POST", f"{server.api_url}/flush", timeout=120).status in (500, 503), server.log_tail()
            deadline = time.monotonic() + 30
            while says not in server.log_path.read_text().lower():
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.2)
            stop(proc)
    finally:
        gw.close()
        for p in procs:
            stop(p)


def test_bad_s3_client_certificate_settings_stop_the_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    base = {"SPOOR__STORAGE__BACKEND": "s3", "SPOOR__STORAGE__S3__BUCKET": "b"}
    cases = [
        ({"SPOOR__STORAGE__S3__TLS__CERT_FILE": str(tmp_path / "c.pem")}, "cert_file and key_file go together"),
        ({"SPOOR__STORAGE__S3__TLS__CERT_FILE": str(tmp_path / "c.pem"),
          "SPOOR__STORAGE__S3__TLS__KEY_FILE": str(tmp_path / "k.pem")}, f"cannot read tls.cert_file {tmp_path / 'c.pem'}"),
    ]  # fmt: skip
    for extra, expect in cases:
        r = subprocess.run(
            [str(SPOOR_BIN), "serve", "--data-dir", str(tmp_path / "data"), "--http-listen", "127.0.0.1:0",
             "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"],
            env={**env, **base, **extra}, capture_output=True, timeout=30,
        )  # fmt: skip
        assert r.returncode != 0 and expect in r.stderr.decode() and "storage.s3" in r.stderr.decode(), r.stderr

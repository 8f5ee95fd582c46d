"""TLS, mTLS, tokens and tenants with the real OpenTelemetry Python SDK (docs/security.md).

The tests make their own CA, server and client certificates (the `cryptography` package), start
`spoor serve` with TLS on every listener and `auth.enabled`, and export through the SDK's gRPC
and HTTP exporters trusting that CA, with bearer tokens. Everything goes over 127.0.0.1.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import READY_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, SPOOR_BIN, _free_ports

GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

TOKENS = {
    "ingest-a": ("tok-ingest-a-5d1f0c2e", ["a"], ["ingest"]),
    "ingest-b": ("tok-ingest-b-9a7b3e44", ["b"], ["ingest"]),
    "read-a": ("tok-read-a-c4e8a1f0", ["a"], ["read"]),
    "read-b": ("tok-read-b-71d2be03", ["b"], ["read"]),
    "ops": ("tok-ops-all-e60f4a9b", ["*"], ["admin", "read"]),
}


def token(name: str) -> str:
    return TOKENS[name][0]


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(name)}"}


@pytest.fixture(scope="module", autouse=True)
def _own_trust_only():
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's `verify`, which is
    how the SDK's HTTP exporter passes `certificate_file`: keep them from replacing the test CA."""
    with pytest.MonkeyPatch.context() as mp:
        for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            mp.delenv(k, raising=False)
        yield


# ---------------------------------------------------------------------------------------
# Certificates


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_ca(cn: str) -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)), cert, key


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    server: bool,
    names: list[x509.GeneralName] | None = None,
) -> Pem:
    """A leaf certificate; a server's names are `names`, by default localhost and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        san = names or [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass
class Pki:
    dir: Path
    ca: Path
    ca_pem: bytes
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from a CA the server does not trust
    stranger_key: Path
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey

    def new_server_cert(self, cn: str) -> Pem:
        return make_leaf(self.ca_cert, self.ca_key, cn, server=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = make_ca("spoor test CA")
    server = make_leaf(ca_cert, ca_key, "spoor-server", server=True)
    client = make_leaf(ca_cert, ca_key, "spoor-client", server=False)
    _, other_cert, other_key = make_ca("some other CA")
    stranger = make_leaf(other_cert, other_key, "stranger", server=False)
    files = {
        "ca.pem": ca.cert,
        "server.pem": server.cert,
        "server-key.pem": server.key,
        "client.pem": client.cert,
        "client-key.pem": client.key,
        "stranger.pem": stranger.cert,
        "stranger-key.pem": stranger.key,
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Pki(
        d, d / "ca.pem", ca.cert, d / "server.pem", d / "server-key.pem", d / "client.pem", d / "client-key.pem",
        d / "stranger.pem", d / "stranger-key.pem", ca_cert, ca_key,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# A secured server


@dataclass
class Secured:
    grpc_port: int
    http_port: int
    api_port: int
    log_path: Path
    audit_path: Path
    client_cert: tuple[str, str] | None  # what requests present, when the server wants mTLS

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def otlp_http(self) -> str:
        return f"https://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _start(tmp: Path, pki: Pki, extra_env: dict[str, str], client_cert: tuple[str, str] | None):
    tokens_file = tmp / "tokens.yaml"
    tokens_file.write_text(
        "".join(
            f"- {{name: {n}, sha256: {hashlib.sha256(t.encode()).hexdigest()}, tenants: {json.dumps(ts)}, roles: [{', '.join(rs)}]}}\n"
            for n, (t, ts, rs) in TOKENS.items()
        )
    )
    grpc_port, http_port, api_port = _free_ports(3)
    server = Secured(grpc_port, http_port, api_port, tmp / "spoor.log", tmp / "audit.log", client_cert)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update(
        {
            "SPOOR__TENANCY__MULTITENANCY_ENABLED": "true",
            "SPOOR__AUTH__ENABLED": "true",
            "SPOOR__AUTH__TOKENS_FILE": str(tokens_file),
            "SPOOR__AUTH__AUDIT_LOG": str(server.audit_path),
            "SPOOR__SERVER__TLS__CERT_FILE": str(pki.server_cert),
            "SPOOR__SERVER__TLS__KEY_FILE": str(pki.server_key),
            "SPOOR__SERVER__TLS__RELOAD_INTERVAL": "1s",
        }
    )
    env.update(extra_env)
    cmd = [
        str(SPOOR_BIN), "serve", "--data-dir", str(tmp / "data"),
        "--otlp-grpc-listen", server.grpc_target,
        "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"spoor exited early with {proc.returncode}\n{server.log()}")
        try:
            if requests.get(f"{server.api}/ready", verify=str(pki.ca), cert=client_cert, timeout=1).status_code == 200:
                break
        except requests.exceptions.ConnectionError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"spoor not ready\n{server.log()}")
        time.sleep(0.05)
    return proc, server


def _stop(proc: subprocess.Popen, server: Secured) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, server.log()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    """TLS on every listener (no client certificates), auth on, two tenants."""
    proc, server = _start(tmp_path_factory.mktemp("secured"), pki, {}, None)
    yield server
    _stop(proc, server)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    """The same with client certificates required (server.tls.client_ca_file)."""
    client = (str(pki.client_cert), str(pki.client_key))
    env = {"SPOOR__SERVER__TLS__CLIENT_CA_FILE": str(pki.ca)}
    proc, server = _start(tmp_path_factory.mktemp("mtls"), pki, env, client)
    yield server
    _stop(proc, server)


# ---------------------------------------------------------------------------------------
# Spans and exporters


def make_spans(service: str) -> tuple[list[ReadableSpan], str]:
    """One small SDK trace; returns its spans and trace ID in hex."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("security-test")
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child"):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans()), format(root.get_span_context().trace_id, "032x")


def grpc_exporter(s: Secured, pki: Pki, headers: dict[str, str] | None, client: bool = False, **kw) -> GrpcSpanExporter:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem,
        private_key=pki.client_key.read_bytes() if client else None,
        certificate_chain=pki.client_cert.read_bytes() if client else None,
    )
    meta = {k.lower(): v for k, v in (headers or {}).items()}
    return GrpcSpanExporter(endpoint=f"https://{s.grpc_target}", credentials=creds, headers=meta, timeout=3, **kw)


def http_exporter(s: Secured, pki: Pki, headers: dict[str, str] | None, **kw) -> HttpSpanExporter:
    return HttpSpanExporter(endpoint=s.otlp_http, certificate_file=str(pki.ca), headers=headers or {}, timeout=5, **kw)


def raw_grpc(s: Secured, pki: Pki, spans: list[ReadableSpan], metadata: list[tuple[str, str]]):
    """One Export call with exactly this metadata; returns (code, details)."""
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
    with grpc.secure_channel(s.grpc_target, creds) as channel:
        export = channel.unary_unary(
            GRPC_EXPORT,
            request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        try:
            export(encode_spans(spans), metadata=metadata, timeout=5)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()


def api_get(s: Secured, pki: Pki, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(f"{s.api}{path}", headers=headers or {}, verify=str(pki.ca), cert=s.client_cert, timeout=10)


def span_count(v2: dict) -> int:
    return sum(len(ss.get("spans", [])) for rs in v2["trace"]["resourceSpans"] for ss in rs.get("scopeSpans", []))


# ---------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exports_over_tls_with_a_token_and_reads_back(secured: Secured, pki: Pki, transport: str):
    spans, trace_id = make_spans(f"tls-{transport}")
    make = grpc_exporter if transport == "grpc" else http_exporter
    exporter = make(secured, pki, bearer("ingest-a"))
    assert exporter.export(spans) == SpanExportResult.SUCCESS, secured.log()
    r = api_get(secured, pki, f"/api/v2/traces/{trace_id}", bearer("read-a"))
    assert r.status_code == 200, r.text
    assert span_count(r.json()) == 2
    # The other tenant's reader does not see it: not found, and nothing in its search.
    assert api_get(secured, pki, f"/api/v2/traces/{trace_id}", bearer("read-b")).status_code == 404
    found = api_get(secured, pki, "/api/search?q=%7B%7D&limit=100", bearer("read-b")).json()
    assert trace_id not in [t["traceID"].rjust(32, "0") for t in found.get("traces", [])]
    values = api_get(secured, pki, "/api/v2/search/tag/resource.service.name/values", bearer("read-b")).text
    assert f"tls-{transport}" not in values


def test_wrong_token_and_wrong_role_are_refused(secured: Secured, pki: Pki):
    spans, _ = make_spans("refused")
    # HTTP: 401 for an unknown token (with a challenge), 403 for a read token; the message says
    # why and never repeats the token.
    body = encode_spans(spans).SerializeToString()
    ct = {"Content-Type": "application/x-protobuf"}
    for headers, status, why in [
        ({}, 401, "missing credentials"),
        ({"Authorization": "Bearer guessed-token-123"}, 401, "unknown token"),
        (bearer("read-a"), 403, "does not have the ingest role"),
        ({**bearer("ingest-a"), "X-Scope-OrgID": "b"}, 403, 'may not use tenant "b"'),
    ]:
        r = requests.post(secured.otlp_http, data=body, headers={**ct, **headers}, verify=str(pki.ca), timeout=10)
        assert r.status_code == status, r.text
        assert why.encode() in r.content and b"guessed-token-123" not in r.content, r.content
        if status == 401:
            assert "Bearer" in r.headers.get("WWW-Authenticate", "")
    # gRPC: UNAUTHENTICATED vs PERMISSION_DENIED.
    code, details = raw_grpc(secured, pki, spans, [("authorization", "Bearer guessed-token-123")])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown token" in details and "guessed" not in details
    code, details = raw_grpc(secured, pki, spans, [])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "missing credentials" in details
    code, details = raw_grpc(secured, pki, spans, [("authorization", f"Bearer {token('read-a')}")])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "ingest role" in details, details
    # The SDK exporters give up on them (FAILURE), as they should on a permanent refusal.
    assert grpc_exporter(secured, pki, {"Authorization": "Bearer nope"}).export(spans) == SpanExportResult.FAILURE
    assert http_exporter(secured, pki, bearer("read-a")).export(spans) == SpanExportResult.FAILURE


def test_plaintext_clients_get_nothing(secured: Secured, pki: Pki):
    spans, _ = make_spans("plaintext")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{secured.api_port}/ready", timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"http://127.0.0.1:{secured.http_port}/v1/traces", data=b"", timeout=5)
    insecure = GrpcSpanExporter(endpoint=f"http://{secured.grpc_target}", insecure=True, headers=bearer("ingest-a"), timeout=2)
    assert insecure.export(spans) == SpanExportResult.FAILURE


def test_flush_needs_admin(secured: Secured, pki: Pki):
    url = f"{secured.api}/flush"
    post = lambda h: requests.post(url, headers=h, verify=str(pki.ca), timeout=120)  # noqa: E731
    assert post({}).status_code == 401
    r = post(bearer("read-a"))
    assert r.status_code == 403 and "admin role" in r.text
    assert post(bearer("ops")).status_code == 204
    # Still readable from blocks, still tenant-bound.
    spans, trace_id = make_spans("after-flush")
    assert http_exporter(secured, pki, bearer("ingest-b")).export(spans) == SpanExportResult.SUCCESS
    assert post(bearer("ops")).status_code == 204
    assert api_get(secured, pki, f"/api/v2/traces/{trace_id}", bearer("read-b")).status_code == 200
    assert api_get(secured, pki, f"/api/v2/traces/{trace_id}", bearer("read-a")).status_code == 404


def test_audit_lines_name_who_and_never_the_token(secured: Secured, pki: Pki):
    api_get(secured, pki, "/api/search?q=%7B+resource.service.name+%3D+%22audit%22+%7D", bearer("read-b"))
    text = secured.audit_path.read_text()
    for t, _, _ in TOKENS.values():
        assert t not in text
    lines = [json.loads(line) for line in text.splitlines()]
    search = [l for l in lines if l["route"] == "/api/search" and l["who"] == "read-b"]
    assert search and search[-1]["query"] == '{ resource.service.name = "audit" }' and search[-1]["tenant"] == "b"
    assert search[-1]["results"] == 0 and search[-1]["status"] == 200


def _served_cert(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_certificates_reload_without_restart(secured: Secured, pki: Pki):
    before = _served_cert(secured.api_port, pki.ca)
    assert before == _der(pki.server_cert.read_bytes())
    # Bad files: logged, and the old certificate keeps being served.
    old_cert, old_key = pki.server_cert.read_bytes(), pki.server_key.read_bytes()
    pki.server_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    deadline = time.monotonic() + 20
    while "cannot reload TLS certificates" not in secured.log():
        assert time.monotonic() < deadline, secured.log()
        time.sleep(0.1)
    assert _served_cert(secured.api_port, pki.ca) == before
    # A new pair takes over on every listener; the SDK keeps exporting.
    renewed = pki.new_server_cert("spoor-server-renewed")
    pki.server_key.write_bytes(renewed.key)
    pki.server_cert.write_bytes(renewed.cert)
    try:
        for port in (secured.api_port, secured.http_port, secured.grpc_port):
            deadline = time.monotonic() + 20
            while _served_cert(port, pki.ca) != _der(renewed.cert):
                assert time.monotonic() < deadline, f"port {port} still serves the old certificate\n{secured.log()}"
                time.sleep(0.1)
        spans, _ = make_spans("after-reload")
        assert grpc_exporter(secured, pki, bearer("ingest-a")).export(spans) == SpanExportResult.SUCCESS
    finally:
        pki.server_cert.write_bytes(old_cert)
        pki.server_key.write_bytes(old_key)


def test_mtls_requires_a_trusted_client_certificate(mtls: Secured, pki: Pki):
    ca = str(pki.ca)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{mtls.api}/ready", verify=ca, timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{mtls.api}/ready", verify=ca, cert=(str(pki.stranger_cert), str(pki.stranger_key)), timeout=5)
    assert requests.get(f"{mtls.api}/ready", verify=ca, cert=mtls.client_cert, timeout=5).status_code == 200
    spans, trace_id = make_spans("mtls")
    assert grpc_exporter(mtls, pki, bearer("ingest-a")).export(spans) == SpanExportResult.FAILURE
    assert grpc_exporter(mtls, pki, bearer("ingest-a"), client=True).export(spans) == SpanExportResult.SUCCESS
    cert = {"client_certificate_file": str(pki.client_cert), "client_key_file": str(pki.client_key)}
    spans2, trace2 = make_spans("mtls-http")
    assert http_exporter(mtls, pki, bearer("ingest-a")).export(spans2) == SpanExportResult.FAILURE
    assert http_exporter(mtls, pki, bearer("ingest-a"), **cert).export(spans2) == SpanExportResult.SUCCESS
    for t in (trace_id, trace2):
        assert api_get(mtls, pki, f"/api/v2/traces/{t}", bearer("read-a")).status_code == 200
    # A certificate is not a token: without one the request is still 401.
    assert api_get(mtls, pki, f"/api/v2/traces/{trace_id}").status_code == 401


def test_min_version_13_refuses_tls12(tmp_path: Path, pki: Pki):
    proc, server = _start(tmp_path, pki, {"SPOOR__SERVER__HTTP_TLS__CERT_FILE": str(pki.server_cert), "SPOOR__SERVER__HTTP_TLS__KEY_FILE": str(pki.server_key), "SPOOR__SERVER__HTTP_TLS__MIN_VERSION": "1.3"}, None)  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", server.api_port), timeout=5) as sock:
                with ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
                    pass
        # TLS 1.2 still works on the listeners that keep server.tls's default minimum.
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                assert tls.version() == "TLSv1.2"
    finally:
        _stop(proc, server)


def test_key_not_matching_the_certificate_stops_the_start(tmp_path: Path, pki: Pki):
    other = pki.new_server_cert("other")
    (tmp_path / "other-key.pem").write_bytes(other.key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update(
        {
            "SPOOR__SERVER__TLS__CERT_FILE": str(pki.server_cert),
            "SPOOR__SERVER__TLS__KEY_FILE": str(tmp_path / "other-key.pem"),
        }
    )
    grpc_port, http_port, api_port = _free_ports(3)
    cmd = [str(SPOOR_BIN), "serve", "--data-dir", str(tmp_path / "data"),
           "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}", "--otlp-http-listen", f"127.0.0.1:{http_port}",
           "--http-listen", f"127.0.0.1:{api_port}"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "do not make a usable pair" in err and "other-key.pem" in err, err


# ---------------------------------------------------------------------------------------
# The agent's exporters as TLS clients


def _run_agent(tmp: Path, exporter: str, settings: str):
    """`spoor agent` with plaintext receivers forwarding through `exporter` with `settings`."""
    config = tmp / "agent.yaml"
    config.write_text(
        f"""\
agent:
  exporters:
    {exporter}: {{{settings}, retry_on_failure: {{initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0}}}}
processors:
  batch: {{send_batch_size: 512, timeout: 100ms}}
"""
    )
    grpc_port, http_port, api_port = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    cmd = [str(SPOOR_BIN), "agent", "--config", str(config), "--data-dir", str(tmp / "agent-data"),
           "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}", "--otlp-http-listen", f"127.0.0.1:{http_port}",
           "--http-listen", f"127.0.0.1:{api_port}"]  # fmt: skip
    log_path = tmp / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"agent exited early\n{log_path.read_text()}")
        try:
            if requests.get(f"http://127.0.0.1:{api_port}/ready", timeout=1).status_code == 200:
                break
        except requests.exceptions.ConnectionError:
            pass
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return proc, grpc_port, log_path


@pytest.mark.parametrize(
    "case",
    ["otlp-ca", "otlphttp-ca", "otlp-mtls", "otlp-skip-verify"],
)
def test_agent_exports_over_tls(tmp_path: Path, pki: Pki, secured: Secured, mtls: Secured, case: str):
    exporter = "otlphttp" if case.startswith("otlphttp") else "otlp"
    target = mtls if case == "otlp-mtls" else secured
    endpoint = f"https://{target.grpc_target}" if exporter == "otlp" else f"https://127.0.0.1:{target.http_port}"
    tls = {
        "otlp-ca": f"{{ca_file: {pki.ca}}}",
        "otlphttp-ca": f"{{ca_file: {pki.ca}}}",
        "otlp-mtls": f"{{ca_file: {pki.ca}, cert_file: {pki.client_cert}, key_file: {pki.client_key}}}",
        "otlp-skip-verify": "{insecure_skip_verify: true}",
    }[case]
    settings = f'endpoint: "{endpoint}", tls: {tls}, headers: {{authorization: "Bearer {token("ingest-a")}"}}'
    proc, agent_grpc, log_path = _run_agent(tmp_path, exporter, settings)
    try:
        spans, trace_id = make_spans(f"via-agent-{case}")
        sdk = GrpcSpanExporter(endpoint=f"http://127.0.0.1:{agent_grpc}", insecure=True, timeout=5)
        assert sdk.export(spans) == SpanExportResult.SUCCESS
        deadline = time.monotonic() + 30
        while api_get(target, pki, f"/api/v2/traces/{trace_id}", bearer("read-a")).status_code != 200:
            assert time.monotonic() < deadline, f"not delivered over TLS\n{log_path.read_text()}\n{target.log()}"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S)


def test_agent_refuses_bad_client_tls_settings(tmp_path: Path):
    config = tmp_path / "agent.yaml"
    for settings, expect in [
        ("endpoint: https://127.0.0.1:1, tls: {ca_file: /nonexistent/ca.pem}", "cannot read tls.ca_file /nonexistent/ca.pem"),
        ("endpoint: http://127.0.0.1:1, tls: {insecure_skip_verify: true}", "is plaintext but tls is set"),
        ("endpoint: https://127.0.0.1:1, tls: {cert_file: /x.pem}", "cert_file and key_file go together"),
    ]:
        config.write_text(f"agent:\n  exporters:\n    otlp: {{{settings}}}\n")
        grpc_port, http_port, api_port = _free_ports(3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
        cmd = [str(SPOOR_BIN), "agent", "--config", str(config), "--data-dir", str(tmp_path / "d"),
               "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}", "--otlp-http-listen", f"127.0.0.1:{http_port}",
               "--http-listen", f"127.0.0.1:{api_port}"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
        assert done.returncode != 0 and expect in done.stderr.decode(), (settings, done.stderr.decode())


def _cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SPOOR_TOKEN", "SPOOR_CA_FILE")}
    if token is not None:
        env["SPOOR_TOKEN"] = token
    return subprocess.run([str(SPOOR_BIN), *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_reads_and_writes_a_secured_server(secured: Secured, pki: Pki):
    """`spoor trace`, `spoor query` and `spoor loadgen` reach a server with TLS and auth on:
    the token from SPOOR_TOKEN (or --token), the server's CA from --ca-file."""
    spans, trace_id = make_spans("cli-secured")
    assert grpc_exporter(secured, pki, bearer("ingest-a")).export(spans) == SpanExportResult.SUCCESS
    server = ["--server", secured.api, "--ca-file", str(pki.ca), "--tenant", "a"]
    shown = _cli("trace", trace_id, *server, token=token("read-a"))
    assert shown.returncode == 0, shown.stderr
    assert "root" in shown.stdout and "child" in shown.stdout, shown.stdout
    found = _cli("query", '{ resource.service.name = "cli-secured" }', *server, "--json", "--token", token("read-a"))
    assert found.returncode == 0, found.stderr
    assert trace_id in [t["traceID"].rjust(32, "0") for t in json.loads(found.stdout)["traces"]]
    # The other tenant's reader, no token, and no CA: each refused, saying why.
    other = _cli("trace", trace_id, "--server", secured.api, "--ca-file", str(pki.ca), "--tenant", "b", token=token("read-b"))
    assert other.returncode != 0 and "not found" in other.stderr, other.stderr
    anonymous = _cli("trace", trace_id, *server)
    assert anonymous.returncode != 0 and "401" in anonymous.stderr, anonymous.stderr
    untrusted = _cli("trace", trace_id, "--server", secured.api, "--tenant", "a", token=token("read-a"))
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr
    # loadgen over TLS with an ingest token: every span acknowledged, and readable.
    sent = _cli(
        "loadgen", "--endpoint", f"https://{secured.grpc_target}", "--ca-file", str(pki.ca), "--tenant", "a",
        "--spans", "200", "--connections", "1", "--json", token=token("ingest-a"),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["spans_failed"] == 0 and summary["spans_accepted"] >= 200, summary

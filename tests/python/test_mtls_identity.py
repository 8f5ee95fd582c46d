"""mTLS identities (docs/security.md): with client certificates required, a certificate whose
common name or subject alternative name (DNS, URI, e-mail) is some entry's `client_cert` is
that entry, with no bearer token. The test makes its CA and certificates itself and talks to
Spoor with the OpenTelemetry SDK's gRPC exporter and with requests.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from conftest import READY_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, SPOOR_BIN, _free_ports
from test_security import _key_pem, _name, make_ca, make_leaf, make_spans

SPIFFE = "spiffe://shop.example/ns/observability/sa/grafana"


def client_leaf(ca_cert, ca_key, cn: str, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("mtls-id")
    ca, ca_cert, ca_key = make_ca("mtls identity CA")
    server = make_leaf(ca_cert, ca_key, "spoor-server", server=True)
    certs = {
        "collector": client_leaf(ca_cert, ca_key, "collector-7", []),
        "grafana": client_leaf(ca_cert, ca_key, "grafana-pod", [x509.UniformResourceIdentifier(SPIFFE)]),
        "nobody": client_leaf(ca_cert, ca_key, "nobody", [x509.DNSName("nobody.shop.example")]),
    }
    (d / "ca.pem").write_bytes(ca.cert)
    (d / "server.pem").write_bytes(server.cert)
    (d / "server-key.pem").write_bytes(server.key)
    for name, (cert, key) in certs.items():
        (d / f"{name}.pem").write_bytes(cert)
        (d / f"{name}-key.pem").write_bytes(key)
    digest = hashlib.sha256(b"tok-reader-b-31f9").hexdigest()
    (d / "tokens.yaml").write_text(
        "- {name: collector, client_cert: collector-7, tenants: [a], roles: [ingest]}\n"
        f"- {{name: grafana, client_cert: '{SPIFFE}', tenants: [a], roles: [read]}}\n"
        f"- {{name: reader-b, sha256: {digest}, tenants: [b], roles: [read]}}\n"
    )
    grpc_port, http_port, api_port = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update(
        {
            "SPOOR__TENANCY__MULTITENANCY_ENABLED": "true",
            "SPOOR__AUTH__ENABLED": "true",
            "SPOOR__AUTH__TOKENS_FILE": str(d / "tokens.yaml"),
            "SPOOR__AUTH__AUDIT_LOG": str(d / "audit.log"),
            "SPOOR__SERVER__TLS__CERT_FILE": str(d / "server.pem"),
            "SPOOR__SERVER__TLS__KEY_FILE": str(d / "server-key.pem"),
            "SPOOR__SERVER__TLS__CLIENT_CA_FILE": str(d / "ca.pem"),
        }
    )
    cmd = [
        str(SPOOR_BIN), "serve", "--data-dir", str(d / "data"),
        "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}",
        "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    log_path = d / "spoor.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    api = f"https://127.0.0.1:{api_port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert proc.poll() is None, log_path.read_text()
        try:
            cert = (str(d / "grafana.pem"), str(d / "grafana-key.pem"))
            if requests.get(f"{api}/ready", verify=str(d / "ca.pem"), cert=cert, timeout=1).status_code == 200:
                break
        except requests.exceptions.ConnectionError:
            pass
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    yield d, grpc_port, api
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def exporter(d: Path, port: int, who: str, headers: dict[str, str] | None = None) -> GrpcSpanExporter:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.pem").read_bytes(),
        private_key=(d / f"{who}-key.pem").read_bytes(),
        certificate_chain=(d / f"{who}.pem").read_bytes(),
    )
    return GrpcSpanExporter(endpoint=f"https://127.0.0.1:{port}", credentials=creds, headers=headers or {}, timeout=5)


def get(d: Path, api: str, who: str, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    cert = (str(d / f"{who}.pem"), str(d / f"{who}-key.pem"))
    return requests.get(f"{api}{path}", headers=headers or {}, verify=str(d / "ca.pem"), cert=cert, timeout=10)


def test_client_certificates_are_identities(setup):
    d, grpc_port, api = setup
    spans, trace_id = make_spans("mtls-identity")
    # The collector's certificate (by its common name) may ingest into tenant a, with no token.
    assert exporter(d, grpc_port, "collector").export(spans) == SpanExportResult.SUCCESS
    # Grafana's (by its SPIFFE URI) may read tenant a, and nothing else.
    deadline = time.monotonic() + 10
    while (r := get(d, api, "grafana", f"/api/v2/traces/{trace_id}")).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert "mtls-identity" in r.text
    r = get(d, api, "grafana", "/flush")
    assert r.status_code == 403 and 'token "grafana" does not have the admin role' in r.text
    assert exporter(d, grpc_port, "grafana").export(spans) == SpanExportResult.FAILURE
    r = get(d, api, "collector", "/api/search")
    assert r.status_code == 403 and "read role" in r.text
    # A certificate naming no entry, and no token: 401 naming the certificate.
    r = get(d, api, "nobody", "/api/search")
    assert r.status_code == 401 and "nobody.shop.example" in r.text and "names no entry" in r.text, r.text
    # A token, when sent, decides (and a wrong one is not rescued by the certificate).
    r = get(d, api, "grafana", f"/api/v2/traces/{trace_id}", {"Authorization": "Bearer tok-reader-b-31f9"})
    assert r.status_code == 404
    r = get(d, api, "grafana", "/api/search", {"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "unknown token" in r.text
    audit = (d / "audit.log").read_text()
    assert '"who":"grafana"' in audit

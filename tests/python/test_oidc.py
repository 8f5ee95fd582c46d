"""OIDC bearer tokens (auth.oidc, docs/security.md) with the real OpenTelemetry Python SDK.

The test is its own identity provider: it makes RSA and EC keys (the `cryptography` package),
publishes them as a JSON Web Key Set (a file, or a URL served on 127.0.0.1), and signs JWTs
with them. Spoor must accept the good ones on OTLP/gRPC, OTLP/HTTP and the query API, and
refuse every bad one with 401 and a message naming what is wrong, never the token.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import READY_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, SPOOR_BIN, _free_ports

ISSUER = "https://idp.example.test/realms/spoor"
AUDIENCE = "spoor-api"
GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass
class Key:
    kid: str
    alg: str
    private: object

    def jwk(self) -> dict:
        pub = self.private.public_key()
        if self.alg == "RS256":
            nums = pub.public_numbers()
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": _int(nums.n), "e": _int(nums.e)}
        nums = pub.public_numbers()
        return {
            "kty": "EC", "kid": self.kid, "use": "sig", "crv": "P-256",
            "x": b64(nums.x.to_bytes(32, "big")), "y": b64(nums.y.to_bytes(32, "big")),
        }  # fmt: skip

    def sign(self, claims: dict, header: dict | None = None) -> str:
        h = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        signed = f"{b64(json.dumps(h).encode())}.{b64(json.dumps(claims).encode())}".encode()
        if self.alg == "RS256":
            sig = self.private.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self.private.sign(signed, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signed.decode()}.{b64(sig)}"


def rsa_key(kid: str) -> Key:
    return Key(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> Key:
    return Key(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def jwks(*keys: Key) -> bytes:
    return json.dumps({"keys": [k.jwk() for k in keys]}).encode()


def claims(**over) -> dict:
    now = int(time.time())
    c = {
        "iss": ISSUER, "aud": [AUDIENCE, "account"], "sub": "alice", "iat": now, "nbf": now - 5,
        "exp": now + 600, "spoor": {"tenants": ["a"]}, "roles": ["ingest", "read", "offline_access"],
    }  # fmt: skip
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


# ---------------------------------------------------------------------------------------
# The server


@dataclass
class Server:
    grpc_port: int
    http_port: int
    api_port: int
    log_path: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(f"{self.api}{path}", headers=headers, timeout=10)


def start(tmp: Path, oidc_env: dict[str, str], config: str | None = None) -> tuple[subprocess.Popen, Server]:
    grpc_port, http_port, api_port = _free_ports(3)
    server = Server(grpc_port, http_port, api_port, tmp / "spoor.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update(
        {
            "SPOOR__TENANCY__MULTITENANCY_ENABLED": "true",
            "SPOOR__AUTH__ENABLED": "true",
            "SPOOR__AUTH__AUDIT_LOG": str(tmp / "audit.log"),
            "SPOOR__AUTH__OIDC__ISSUER_URL": ISSUER,
            "SPOOR__AUTH__OIDC__AUDIENCE": AUDIENCE,
            "SPOOR__AUTH__OIDC__TENANTS_CLAIM": "spoor.tenants",
            "SPOOR__AUTH__OIDC__LEEWAY": "5s",
            **oidc_env,
        }
    )
    cmd = [
        str(SPOOR_BIN), "serve", "--data-dir", str(tmp / "data"),
        "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}",
        "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    if config is not None:
        (tmp / "spoor.yaml").write_text(config)
        cmd += ["--config", str(tmp / "spoor.yaml")]
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"spoor exited early with {proc.returncode}\n{server.log()}")
        try:
            if requests.get(f"{server.api}/ready", timeout=1).status_code == 200:
                break
        except requests.exceptions.ConnectionError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"spoor not ready\n{server.log()}")
        time.sleep(0.05)
    return proc, server


def stop(proc: subprocess.Popen, server: Server) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, server.log()


@dataclass
class FileIdp:
    server: Server
    jwks_file: Path
    rsa: Key
    ec: Key


@pytest.fixture(scope="module")
def file_idp(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("oidc-file")
    idp = FileIdp(None, tmp / "jwks.json", rsa_key("rsa-1"), ec_key("ec-1"))  # type: ignore[arg-type]
    idp.jwks_file.write_bytes(jwks(idp.rsa, idp.ec))
    proc, idp.server = start(tmp, {"SPOOR__AUTH__OIDC__JWKS_FILE": str(idp.jwks_file)})
    yield idp
    stop(proc, idp.server)


def make_spans(service: str) -> tuple[list[ReadableSpan], str]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("oidc-test")
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child"):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans()), format(root.get_span_context().trace_id, "032x")


def raw_grpc(s: Server, spans: list[ReadableSpan], token: str):
    with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as channel:
        export = channel.unary_unary(
            GRPC_EXPORT,
            request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        try:
            export(encode_spans(spans), metadata=[("authorization", f"Bearer {token}")], timeout=5)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()


def wait_for_trace(s: Server, trace_id: str, token: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        r = s.get(f"/api/v2/traces/{trace_id}", token)
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_sdk_exports_with_a_jwt_and_reads_back(file_idp: FileIdp, transport: str, alg: str):
    s = file_idp.server
    key = file_idp.rsa if alg == "RS256" else file_idp.ec
    token = key.sign(claims())
    spans, trace_id = make_spans(f"oidc-{transport}-{alg}")
    headers = {"authorization": f"Bearer {token}"}
    if transport == "grpc":
        exporter = GrpcSpanExporter(endpoint=f"http://127.0.0.1:{s.grpc_port}", insecure=True, headers=headers, timeout=5)
    else:
        exporter = HttpSpanExporter(endpoint=f"http://127.0.0.1:{s.http_port}/v1/traces", headers=headers, timeout=5)
    assert exporter.export(spans) == SpanExportResult.SUCCESS, s.log()
    # The tenant came from the token's (nested) claim: tenant a holds the trace, b does not.
    trace = wait_for_trace(s, trace_id, token)
    assert sum(len(ss["spans"]) for rs in trace["trace"]["resourceSpans"] for ss in rs["scopeSpans"]) == 2
    other = key.sign(claims(spoor={"tenants": ["b"]}))
    assert s.get(f"/api/v2/traces/{trace_id}", other).status_code == 404
    found = s.get("/api/search?q=%7B%7D&limit=100", token).json()
    assert trace_id in [t["traceID"].rjust(32, "0") for t in found["traces"]]
    # The audit log names the subject, never the token.
    audit = (s.log_path.parent / "audit.log").read_text()
    assert '"oidc:alice"' in audit and token not in audit and token.split(".")[2] not in audit


def test_bad_tokens_are_refused_with_a_reason(file_idp: FileIdp):
    s, key = file_idp.server, file_idp.rsa
    now = int(time.time())
    good = key.sign(claims())
    h, p, sig = good.split(".")
    forged_payload = b64(json.dumps(claims(spoor={"tenants": ["*"]})).encode())
    stranger = rsa_key("rsa-1")  # same kid, other key: a forgery
    cases = [
        (key.sign(claims(exp=now - 3600)), "expired"),
        (key.sign(claims(nbf=now + 3600)), "not valid yet"),
        (key.sign(claims(exp=None)), "no exp"),
        (key.sign(claims(aud="someone-else")), "audience"),
        (key.sign(claims(iss="https://evil.example.test")), "issued by"),
        (f"{h}.{forged_payload}.{sig}", "bad JWT signature"),
        (stranger.sign(claims()), "bad JWT signature"),
        (rsa_key("rsa-9").sign(claims()), 'key "rsa-9"'),
        (key.sign(claims(), {"alg": "HS256"}), "not accepted"),
        (key.sign(claims(), {"alg": "none"}), "not accepted"),
    ]
    for token, why in cases:
        r = s.get("/api/search?q=%7B%7D", token)
        assert r.status_code == 401, (why, r.status_code, r.text)
        assert why in r.text, (why, r.text)
        assert token not in r.text and token.split(".")[2] not in r.text
        assert "Bearer" in r.headers.get("WWW-Authenticate", "")
    spans, _ = make_spans("refused")
    code, details = raw_grpc(s, spans, key.sign(claims(exp=now - 3600)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in details, details
    body = encode_spans(spans).SerializeToString()
    r = requests.post(
        f"http://127.0.0.1:{s.http_port}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key.sign(claims(aud='x'))}"},
        timeout=5,
    )
    assert r.status_code == 401 and b"audience" in r.content, r.content
    # A valid token without the role, or for another tenant: 403.
    reader = key.sign(claims(roles=["read"]))
    code, details = raw_grpc(s, spans, reader)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "ingest role" in details, details
    r = requests.get(
        f"{s.api}/api/search", headers={"Authorization": f"Bearer {good}", "X-Scope-OrgID": "b"}, timeout=5
    )
    assert r.status_code == 403 and 'may not use tenant "b"' in r.text, r.text


def test_key_file_changes_take_effect(file_idp: FileIdp):
    s = file_idp.server
    newer = ec_key("ec-2")
    token = newer.sign(claims())
    assert s.get("/api/search?q=%7B%7D", token).status_code == 401
    file_idp.jwks_file.write_bytes(jwks(file_idp.rsa, file_idp.ec, newer))
    deadline = time.monotonic() + 10
    while s.get("/api/search?q=%7B%7D", token).status_code != 200:
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.2)
    # A broken file is logged and the keys in force stay.
    file_idp.jwks_file.write_text("{not json")
    time.sleep(2.5)
    assert s.get("/api/search?q=%7B%7D", token).status_code == 200
    assert "cannot reload the OIDC key set" in s.log()
    file_idp.jwks_file.write_bytes(jwks(file_idp.rsa, file_idp.ec, newer))


class _Jwks(http.server.BaseHTTPRequestHandler):
    body = b"{}"
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_key_set_from_a_url_is_fetched_and_refreshed_on_an_unknown_kid(tmp_path: Path):
    first, second = rsa_key("url-1"), ec_key("url-2")
    _Jwks.body = jwks(first)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/protocol/openid-connect/certs"
    proc, s = start(tmp_path, {"SPOOR__AUTH__OIDC__JWKS_URL": url, "SPOOR__AUTH__OIDC__JWKS_REFRESH_INTERVAL": "1h"})
    try:
        assert s.get("/api/search?q=%7B%7D", first.sign(claims())).status_code == 200, s.log()
        # The provider rolls its key: a token with the new kid makes Spoor fetch again.
        _Jwks.body = jwks(first, second)
        before = _Jwks.hits
        assert s.get("/api/search?q=%7B%7D", second.sign(claims())).status_code == 200, s.log()
        assert _Jwks.hits == before + 1
        # Made-up kids do not make Spoor hammer the provider.
        for i in range(5):
            r = s.get("/api/search?q=%7B%7D", ec_key(f"made-up-{i}").sign(claims()))
            assert r.status_code == 401 and "does not hold" in r.text
        assert _Jwks.hits <= before + 2
    finally:
        stop(proc, s)
        httpd.shutdown()


def test_bad_oidc_configuration_stops_the_start(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    base = {
        "SPOOR__AUTH__ENABLED": "true",
        "SPOOR__AUTH__OIDC__ISSUER_URL": ISSUER,
        "SPOOR__AUTH__OIDC__AUDIENCE": AUDIENCE,
    }
    (tmp_path / "empty.json").write_text('{"keys": []}')
    for extra, why in [
        ({}, "exactly one of jwks_file and jwks_url"),
        ({"SPOOR__AUTH__OIDC__JWKS_FILE": str(tmp_path / "missing.json")}, "missing.json"),
        ({"SPOOR__AUTH__OIDC__JWKS_FILE": str(tmp_path / "empty.json")}, "no RSA or EC"),
        ({"SPOOR__AUTH__OIDC__JWKS_URL": "ftp://idp/keys"}, "http:// or https://"),
    ]:
        r = subprocess.run(
            [str(SPOOR_BIN), "serve", "--data-dir", str(tmp_path / "data"), "--http-listen", "127.0.0.1:0",
             "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"],
            env={**env, **base, **extra}, capture_output=True, timeout=30,
        )  # fmt: skip
        assert r.returncode != 0 and why in r.stderr.decode() + r.stdout.decode(), (why, r.stderr)


RESTRICTIONS = """
auth:
  oidc:
    restrictions:
      - claim: groups
        value: contractors
        mask: [span.customer.segment]
        spans: '{ resource.service.name = "oidc-visible" }'
      - claim: spoor.department
        value: support
        mask: [span.customer.segment]
"""


def test_restrictions_by_claim_mask_and_hide(tmp_path: Path):
    """`auth.oidc.restrictions`: the first rule whose claim holds the value gives the token a
    mask and a span filter, as a tokens-file entry has them."""
    key = rsa_key("rsa-r")
    (tmp_path / "jwks.json").write_bytes(jwks(key))
    proc, s = start(tmp_path, {"SPOOR__AUTH__OIDC__JWKS_FILE": str(tmp_path / "jwks.json")}, RESTRICTIONS)
    try:
        writer = key.sign(claims(roles=["ingest"]))
        ids = {}
        for service in ("oidc-visible", "oidc-hidden"):
            memory = InMemorySpanExporter()
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(memory))
            with provider.get_tracer("oidc-test").start_as_current_span(f"{service}-root") as root:
                root.set_attribute("customer.segment", "platinum-4711")
            provider.shutdown()
            ids[service] = format(root.get_span_context().trace_id, "032x")
            exporter = HttpSpanExporter(
                endpoint=f"http://127.0.0.1:{s.http_port}/v1/traces", headers={"authorization": f"Bearer {writer}"}
            )
            assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS, s.log()
        staff = key.sign(claims(roles=["read"], groups=["staff"]))
        contractor = key.sign(claims(roles=["read"], groups=["staff", "contractors"]))
        support = key.sign(claims(roles=["read"], spoor={"tenants": ["a"], "department": "support"}))
        # No rule matches: everything.
        full = wait_for_trace(s, ids["oidc-visible"], staff)
        assert "platinum-4711" in json.dumps(full)
        # The contractor rule: masked on the visible service, and the other service's span is a
        # placeholder with nothing of its own.
        r = s.get(f"/api/v2/traces/{ids['oidc-visible']}", contractor)
        assert r.status_code == 200 and "platinum-4711" not in r.text and "[masked]" in r.text, r.text
        assert "oidc-visible-root" in r.text
        r = s.get(f"/api/v2/traces/{ids['oidc-hidden']}", contractor)
        assert r.status_code == 200 and "oidc-hidden-root" not in r.text and "platinum-4711" not in r.text, r.text
        # The support rule (a nested claim): masked, nothing hidden.
        r = s.get(f"/api/v2/traces/{ids['oidc-hidden']}", support)
        assert r.status_code == 200 and "oidc-hidden-root" in r.text and "platinum-4711" not in r.text, r.text
        # A masked key cannot be probed through search.
        probe = s.get("/api/search?q=" + requests.utils.quote('{ span.customer.segment = "platinum-4711" }'), support)
        assert probe.status_code == 403, probe.text
    finally:
        stop(proc, s)


def test_bad_restrictions_stop_the_start(tmp_path: Path):
    (tmp_path / "jwks.json").write_bytes(jwks(rsa_key("rsa-b")))
    bad = "auth:\n  oidc:\n    restrictions:\n      - {claim: groups, value: x, mask: [customer.segment]}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update({
        "SPOOR__AUTH__ENABLED": "true", "SPOOR__AUTH__OIDC__ISSUER_URL": ISSUER,
        "SPOOR__AUTH__OIDC__AUDIENCE": AUDIENCE, "SPOOR__AUTH__OIDC__JWKS_FILE": str(tmp_path / "jwks.json"),
    })  # fmt: skip
    (tmp_path / "bad.yaml").write_text(bad)
    r = subprocess.run(
        [str(SPOOR_BIN), "serve", "--config", str(tmp_path / "bad.yaml"), "--data-dir", str(tmp_path / "data"),
         "--http-listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode != 0 and "auth.oidc.restrictions[0]" in r.stderr, r.stderr

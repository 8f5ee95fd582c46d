"""S3 server-side encryption (`storage.s3.sse`, docs/configuration.md): every object Spoor writes
asks for it, which the store (moto here) records on the object and reports on HEAD."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.parse

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import _MOTO_HEADERS, SPOOR_BIN, Spoor, _free_ports, _wait_ready, http_request

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/0d7c4f6e-5b1a-4c8e-9f00-5e5e5e5e5e5e"


@pytest.mark.parametrize(
    "sse, header, key_id",
    [({"TYPE": "SSE-S3"}, "AES256", None), ({"TYPE": "SSE-KMS", "KMS_KEY_ID": KMS_KEY}, "aws:kms", KMS_KEY)],
)
def test_blocks_are_written_with_server_side_encryption(tmp_path, moto, sse, header, key_id):
    bucket = f"sse-{header.replace(':', '-').lower()}"
    moto.create_bucket(bucket)
    grpc_port, http_port, api_port = _free_ports(3)
    server = Spoor(
        grpc_endpoint=f"127.0.0.1:{grpc_port}",
        otlp_http_url=f"http://127.0.0.1:{http_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "spoor.log",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update(moto.s3_env(bucket))
    env.update({f"SPOOR__STORAGE__S3__SSE__{k}": v for k, v in sse.items()})
    cmd = [
        str(SPOOR_BIN), "serve", "--data-dir", str(server.data_dir),
        "--otlp-grpc-listen", server.grpc_endpoint, "--otlp-http-listen", f"127.0.0.1:{http_port}",
        "--http-listen", f"127.0.0.1:{api_port}",
    ]  # fmt: skip
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(proc, server)
        provider = TracerProvider(resource=Resource.create({"service.name": "sse"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.otlp_http_url}/v1/traces")))
        with provider.get_tracer("sse").start_as_current_span("encrypted-at-the-store"):
            pass
        provider.shutdown()
        assert http_request("POST", f"{server.api_url}/flush", timeout=120).status == 204, server.log_tail()
        keys = moto.list_keys(bucket)
        assert keys, server.log_tail()
        for key in keys:
            r = http_request("HEAD", f"{moto.endpoint}/{bucket}/{urllib.parse.quote(key)}", _MOTO_HEADERS)
            assert r.status == 200, key
            assert r.headers.get("x-amz-server-side-encryption") == header, (key, r.headers)
            if key_id:
                assert r.headers.get("x-amz-server-side-encryption-aws-kms-key-id") == key_id, (key, r.headers)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_bad_sse_settings_stop_the_start(tmp_path, moto):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR__")}
    env.update(moto.s3_env("sse-bad"))
    for extra, why in [
        ({"SPOOR__STORAGE__S3__SSE__TYPE": "SSE-C"}, "use SSE-S3 or SSE-KMS"),
        ({"SPOOR__STORAGE__S3__SSE__KMS_KEY_ID": KMS_KEY}, "needs sse.type: SSE-KMS"),
    ]:
        r = subprocess.run(
            [str(SPOOR_BIN), "serve", "--data-dir", str(tmp_path / "data"), "--http-listen", "127.0.0.1:0",
             "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"],
            env={**env, **extra}, capture_output=True, timeout=30,
        )  # fmt: skip
        assert r.returncode != 0 and why in r.stderr.decode(), (why, r.stderr)

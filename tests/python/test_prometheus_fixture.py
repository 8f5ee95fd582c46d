"""Self-test of the real-Prometheus fixture (conftest.prometheus_factory, prometheus.py): data
goes in by remote write and by scraping, and comes back out through the query API, exemplars
included. The integration tests of Spoor's metrics rely on all of these paths."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prometheus import RemoteSeries, ScrapeJob, encode_write_request

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def prom(prometheus_factory):
    """A Prometheus with nothing to scrape, for remote writes."""
    return prometheus_factory()


def test_encode_write_request_bytes():
    # One series {__name__="a", b="c"} with the sample (1.5, 1000): hand-checked against the
    # protobuf wire format (field 1 TimeSeries -> field 1 Labels, field 2 Sample).
    got = encode_write_request([RemoteSeries({"b": "c", "__name__": "a"}, [(1.5, 1000)])])
    label_name = b"\x0a\x08__name__\x12\x01a"
    label_b = b"\x0a\x01b\x12\x01c"
    sample = b"\x09" + b"\x00\x00\x00\x00\x00\x00\xf8\x3f" + b"\x10\xe8\x07"  # double 1.5, varint 1000
    ts = b"\x0a" + bytes([len(label_name)]) + label_name + b"\x0a" + bytes([len(label_b)]) + label_b
    ts += b"\x12" + bytes([len(sample)]) + sample
    assert got == b"\x0a" + bytes([len(ts)]) + ts


def test_remote_write_then_query(prom):
    now = time.time()
    prom.remote_write(
        [
            RemoteSeries(
                {"__name__": "spoor_fixture_selftest", "service": "checkout", "tenant": "acme"},
                [(42.5, int(now * 1000))],
            )
        ]
    )
    result = prom.query('spoor_fixture_selftest{service="checkout"}', time=now)
    assert len(result) == 1, result
    assert result[0]["metric"] == {"__name__": "spoor_fixture_selftest", "service": "checkout", "tenant": "acme"}
    assert float(result[0]["value"][1]) == 42.5

    series = prom.series("spoor_fixture_selftest", start=now - 60, end=now + 60)
    assert series == [{"__name__": "spoor_fixture_selftest", "service": "checkout", "tenant": "acme"}]
    # wait_for returns the result that satisfied the predicate.
    got = prom.wait_for("sum(spoor_fixture_selftest)", lambda r: r and float(r[0]["value"][1]) == 42.5, timeout=5)
    assert got[0]["metric"] == {}


def test_remote_write_exemplar(prom):
    now = time.time()
    t_ms = int(now * 1000)
    prom.remote_write(
        [
            RemoteSeries(
                {"__name__": "spoor_fixture_exemplar_total", "service": "checkout"},
                [(7.0, t_ms)],
                exemplars=[({"trace_id": TRACE_ID}, 0.25, t_ms)],
            )
        ]
    )
    data = prom.query_exemplars("spoor_fixture_exemplar_total", now - 60, now + 60)
    assert len(data) == 1, data
    assert data[0]["seriesLabels"] == {"__name__": "spoor_fixture_exemplar_total", "service": "checkout"}
    (exemplar,) = data[0]["exemplars"]
    assert exemplar["labels"] == {"trace_id": TRACE_ID}
    assert float(exemplar["value"]) == 0.25
    assert abs(float(exemplar["timestamp"]) - t_ms / 1000) < 0.002


def test_query_errors_raise(prom):
    with pytest.raises(AssertionError, match="bad_data"):
        prom.query("sum(")


# ---------------------------------------------------------------------------------------
# Scraping


OPENMETRICS_EXPOSITION = b"""# HELP spoor_fixture_requests Requests.
# TYPE spoor_fixture_requests counter
spoor_fixture_requests_total{kind="openmetrics"} 5 # {trace_id="%s"} 1.0
# EOF
""" % TRACE_ID.encode()


class _Exporter(BaseHTTPRequestHandler):
    """Serves OpenMetrics with an exemplar (Prometheus asks for it first in its Accept header;
    exemplars exist only in that format) and records each request's path, query and Accept."""

    requests: list[tuple[str, dict[str, list[str]], str]] = []

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        accept = self.headers.get("Accept", "")
        type(self).requests.append((url.path, urllib.parse.parse_qs(url.query), accept))
        if url.path != "/custom/metrics":
            self.send_error(404)
            return
        body, ctype = OPENMETRICS_EXPOSITION, "application/openmetrics-text; version=1.0.0; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def exporter() -> Iterator[str]:
    """A tiny /custom/metrics endpoint on a loopback port; yields host:port."""
    _Exporter.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_scrape_openmetrics_with_exemplar(prometheus_factory, exporter):
    prom = prometheus_factory(
        scrape=[
            ScrapeJob(
                [exporter],
                job_name="fixture",
                metrics_path="/custom/metrics",
                scrape_interval="1s",
                params={"tenant": ["acme"]},
            )
        ]
    )
    up = prom.wait_for('up{job="fixture"}', lambda r: r and r[0]["value"][1] == "1", timeout=30)
    assert up[0]["metric"]["instance"] == exporter

    result = prom.wait_for('spoor_fixture_requests_total{job="fixture"}', timeout=30)
    assert result[0]["metric"] == {
        "__name__": "spoor_fixture_requests_total",
        "instance": exporter,
        "job": "fixture",
        "kind": "openmetrics",
    }
    assert float(result[0]["value"][1]) == 5

    # The path, the params and Prometheus' own Accept header (OpenMetrics preferred) arrived.
    path, query, accept = _Exporter.requests[0]
    assert path == "/custom/metrics"
    assert query == {"tenant": ["acme"]}
    assert "application/openmetrics-text" in accept

    # The scraped exemplar was stored (exemplar storage is on).
    now = time.time()
    deadline = time.monotonic() + 10
    while True:
        data = prom.query_exemplars("spoor_fixture_requests_total", now - 300, now + 60)
        if data or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert data, f"no exemplar stored; targets: {prom.targets()}"
    assert data[0]["exemplars"][0]["labels"] == {"trace_id": TRACE_ID}
    assert float(data[0]["exemplars"][0]["value"]) == 1.0

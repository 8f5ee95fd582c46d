"""Blocks are plain Parquet: after `POST /flush`, every block is read back with two independent
readers (pyarrow and DuckDB) and checked against what the OpenTelemetry SDK sent.

Two tenants (multi-tenancy on, `X-Scope-OrgID`) send traces that cross three services and carry
every attribute type, events, links and an error; tenant-a through OTLP/gRPC, tenant-b through
OTLP/HTTP. Blocks must hold exactly the spans sent (one row per span), sorted by trace ID then
start time, under `<prefix>/<tenant>/<block-id>/`, with a `meta.json` that agrees with the data.

Runs against local blocks and S3 blocks (moto). Column names other than `trace_id` come from
the block format's schema (crates/block/src/schema.rs); see SPAN_ID_COLUMNS and START_COLUMNS.
"""

from __future__ import annotations

import collections
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from conftest import DATA_FILE, FILTER_FILE, META_FILE, Block, RecordingExporter, Spoor

TENANTS = {"tenant-a": "grpc", "tenant-b": "http"}  # tenant -> OTLP transport
TRACES_PER_TENANT = {"tenant-a": 7, "tenant-b": 3}
SERVICES = ["frontend", "cart", "payments"]

# Columns the checks need besides `trace_id`, as named in crates/block/src/schema.rs (SPAN_ID,
# START). A schema without them fails the test and prints the schema.
SPAN_ID_COLUMNS = ["span_id"]
START_COLUMNS = ["start_unix_nano"]

ATTRIBUTES: dict[str, Any] = {
    "str": "hello",
    "str.empty": "",
    "str.unicode": "naïve ☃ 日本語",
    "bool": True,
    "bool.false": False,
    "int": 42,
    "int.max": 2**63 - 1,
    "int.min": -(2**63),
    "float": 3.14159,
    "float.inf": float("inf"),
    "bytes": b"\x00\xffbinary",
    "str.list": ["a", "", "ç"],
    "bool.list": [True, False],
    "int.list": [1, -2, 2**63 - 1],
    "float.list": [0.5, -1.0],
    "list.empty": [],
    "none": None,
    "list.mixed": [1, "two", 3.0, True, None],
    "map": {"k": "v", "n": 1, "inner": {"flag": False}},
}


@pytest.fixture(scope="module", params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def spoor_env() -> dict[str, str]:
    return {
        "SPOOR__TENANCY__MULTITENANCY_ENABLED": "true",
        # Compaction would merge and delete blocks while they are being read.
        "SPOOR__COMPACTION__ENABLED": "false",
    }


# ---------------------------------------------------------------------------------------
# Sending


def exporter_for(spoor: Spoor, tenant: str) -> SpanExporter:
    if TENANTS[tenant] == "grpc":
        return GrpcSpanExporter(
            endpoint=spoor.grpc_endpoint, insecure=True, timeout=10, headers=(("x-scope-orgid", tenant),)
        )
    session = requests.Session()
    session.trust_env = False  # ignore any proxy settings for loopback
    return HttpSpanExporter(
        endpoint=f"{spoor.otlp_http_url}/v1/traces", timeout=10, session=session, headers={"X-Scope-OrgID": tenant}
    )


def one_trace(tracers: dict[str, otel_trace.Tracer], rng: random.Random, n: int, error: bool) -> None:
    """frontend -> cart -> its database, frontend -> payments: six spans over three services, so a
    trace arrives in several export requests."""
    fe, cart, pay = (tracers[s] for s in SERVICES)
    other = SpanContext(rng.getrandbits(128) | 1, rng.getrandbits(64) | 1, True, TraceFlags(TraceFlags.SAMPLED))
    with fe.start_as_current_span(f"GET /checkout/{n}", kind=SpanKind.SERVER, attributes=ATTRIBUTES) as root:
        root.add_event("request.received", {"bytes": 512, "gzip": True, "ratio": 0.5, "encodings": ["gzip"]})
        with fe.start_as_current_span("POST cart", kind=SpanKind.CLIENT):
            with cart.start_as_current_span("POST /cart", kind=SpanKind.SERVER, attributes={"cart.items": n}):
                with cart.start_as_current_span(
                    "SELECT items",
                    kind=SpanKind.CLIENT,
                    links=[Link(other, {"link.reason": "batched-with", "link.n": n})],
                ) as db:
                    db.set_attributes({"db.system": "postgresql", "db.rows": [n, n + 1]})
                    db.add_event("retry")
        with fe.start_as_current_span("POST payments", kind=SpanKind.CLIENT):
            with pay.start_as_current_span("POST /pay", kind=SpanKind.SERVER) as p:
                if error:
                    try:
                        raise RuntimeError("card declined")
                    except RuntimeError as e:
                        p.record_exception(e, attributes={"attempt": 1})
                    p.set_status(Status(StatusCode.ERROR, "card declined"))
        root.set_status(Status(StatusCode.OK))


def send(spoor: Spoor, tenant: str, traces: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    providers, recorders, tracers = [], [], {}
    for service in SERVICES:
        provider = TracerProvider(resource=Resource.create({"service.name": service, "tenant.label": tenant}))
        recorder = RecordingExporter(exporter_for(spoor, tenant))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.add_span_processor(BatchSpanProcessor(recorder))
        providers.append(provider)
        recorders.append(recorder)
        tracers[service] = provider.get_tracer("spoor.tests.blocks", "1.0.0")
    rng = random.Random()
    for n in range(traces):
        one_trace(tracers, rng, n, error=(n == 1))
    for provider in providers:
        assert provider.force_flush(30_000), "force_flush timed out"
    results = [r for rec in recorders for r in rec.results]
    assert results and all(r == SpanExportResult.SUCCESS for _, r in results), f"{tenant}: export failed: {results}"
    spans = list(memory.get_finished_spans())
    assert sum(n for n, _ in results) == len(spans) == 6 * traces
    for provider in providers:
        provider.shutdown()
    return spans


@dataclass
class Sent:
    spans: list[ReadableSpan]

    def ids(self) -> collections.Counter:
        """(trace ID, span ID) as lowercase hex, each once."""
        return collections.Counter(
            (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in self.spans
        )

    def trace_ids(self) -> set[str]:
        return {f"{s.context.trace_id:032x}" for s in self.spans}


@dataclass
class ReadBlock:
    block: Block
    meta: dict
    table: pa.Table  # data.parquet through pyarrow
    path: Path  # data.parquet as a local file, for DuckDB


@pytest.fixture(scope="module")
def sent(spoor: Spoor) -> dict[str, Sent]:
    """Each tenant's traces, sent and then flushed into blocks."""
    out = {tenant: Sent(send(spoor, tenant, TRACES_PER_TENANT[tenant])) for tenant in TENANTS}
    spoor.flush_to_blocks()
    return out


@pytest.fixture(scope="module")
def blocks(spoor: Spoor, sent: dict[str, Sent], tmp_path_factory: pytest.TempPathFactory) -> list[ReadBlock]:
    """Every block, its meta.json parsed and data.parquet read with pyarrow."""
    tmp = tmp_path_factory.mktemp("blocks")
    out = []
    for b in spoor.blocks():
        assert DATA_FILE in b.files, f"block {b.tenant}/{b.block_id} has a meta but no {DATA_FILE}: {b.files}"
        data = spoor.store.read(b.files[DATA_FILE])
        path = spoor.store.local_path(b.files[DATA_FILE])
        if path is None:
            path = tmp / f"{b.tenant}-{b.block_id}.parquet"
            path.write_bytes(data)
        meta = json.loads(spoor.store.read(b.files[META_FILE]))
        out.append(ReadBlock(b, meta, pq.read_table(io.BytesIO(data)), path))
    return out


def of_tenant(blocks: list[ReadBlock], tenant: str) -> list[ReadBlock]:
    mine = [b for b in blocks if b.block.tenant == tenant]
    assert mine, f"no block for {tenant}; blocks: {[(b.block.tenant, b.block.block_id) for b in blocks]}"
    return mine


def column(schema: pa.Schema, candidates: list[str], what: str) -> str:
    for name in candidates:
        if name in schema.names:
            return name
    pytest.fail(f"no {what} column (tried {candidates}) in the block schema:\n{schema}")


def hexes(values: list[bytes | None]) -> list[str]:
    return [v.hex() if v is not None else "<null>" for v in values]


# ---------------------------------------------------------------------------------------
# Layout and meta.json


def test_blocks_land_under_their_tenant_only(spoor: Spoor, blocks: list[ReadBlock]):
    root = f"{spoor.prefix}/" if spoor.prefix else ""
    keys = spoor.store.keys()
    assert all(k.startswith(root) for k in keys), f"keys outside the prefix {root!r}: {keys}"
    tenant_dirs = {k[len(root) :].split("/")[0] for k in keys}
    assert tenant_dirs == set(TENANTS), f"top-level directories under {root!r}: {sorted(tenant_dirs)}"
    assert {b.block.tenant for b in blocks} == set(TENANTS)
    for b in blocks:
        where = f"{b.block.tenant}/{b.block.block_id}"
        assert {DATA_FILE, FILTER_FILE, META_FILE} <= set(b.block.files), f"{where}: {sorted(b.block.files)}"
        assert spoor.store.read(b.block.files[FILTER_FILE]), f"{where}: empty {FILTER_FILE}"
        assert b.meta["tenant"] == b.block.tenant, f"{where}: meta.tenant is {b.meta['tenant']!r}"
        assert b.meta["block_id"] == b.block.block_id, f"{where}: meta.block_id is {b.meta['block_id']!r}"


@pytest.mark.parametrize("tenant", TENANTS)
def test_meta_json_agrees_with_the_data(blocks: list[ReadBlock], tenant: str):
    for b in of_tenant(blocks, tenant):
        where = f"{tenant}/{b.block.block_id}"
        assert b.meta["spans"] == b.table.num_rows, f"{where}: meta.spans {b.meta['spans']}, rows {b.table.num_rows}"
        traces = len(set(b.table.column("trace_id").to_pylist()))
        assert b.meta["traces"] == traces, f"{where}: meta.traces {b.meta['traces']}, distinct trace IDs {traces}"
        # Queries skip blocks by these bounds, so every span must start inside them.
        starts = b.table.column(column(b.table.schema, START_COLUMNS, "start time")).to_pylist()
        lo, hi = b.meta["start_unix_nano"], b.meta["end_unix_nano"]
        first, last = min(starts), max(starts)
        assert lo <= first and last <= hi, f"{where}: spans start in {first}..{last}, meta says {lo}..{hi}"
        missing = [d["column"] for d in b.meta.get("dedicated_columns", []) if d["column"] not in b.table.schema.names]
        assert not missing, f"{where}: meta.dedicated_columns names columns the data lacks: {missing}"


# ---------------------------------------------------------------------------------------
# pyarrow


@pytest.mark.parametrize("tenant", TENANTS)
def test_pyarrow_one_row_per_span_sent(blocks: list[ReadBlock], sent: dict[str, Sent], tenant: str):
    mine = of_tenant(blocks, tenant)
    rows = sum(b.table.num_rows for b in mine)
    n_sent = len(sent[tenant].spans)
    assert rows == n_sent, f"{tenant}: {rows} rows in {len(mine)} blocks, {n_sent} spans sent"

    got: collections.Counter = collections.Counter()
    for b in mine:
        span_col = column(b.table.schema, SPAN_ID_COLUMNS, "span ID")
        ids = zip(hexes(b.table.column("trace_id").to_pylist()), hexes(b.table.column(span_col).to_pylist()))
        got.update(ids)
    expected = sent[tenant].ids()
    assert got == expected, (
        f"{tenant}: missing {sorted((expected - got).elements())}, unexpected {sorted((got - expected).elements())}"
    )


@pytest.mark.parametrize("tenant", TENANTS)
def test_pyarrow_sorted_by_trace_id_then_start(blocks: list[ReadBlock], tenant: str):
    for b in of_tenant(blocks, tenant):
        where = f"{tenant}/{b.block.block_id}"
        field = b.table.schema.field("trace_id")
        assert field.type == pa.binary(16), f"{where}: trace_id is {field.type}, not a 16-byte fixed binary"
        start = column(b.table.schema, START_COLUMNS, "start time")
        keys = list(zip(b.table.column("trace_id").to_pylist(), b.table.column(start).to_pylist()))
        assert all(k is not None and s is not None for k, s in keys), f"{where}: null trace_id or {start}"
        bad = [i for i in range(1, len(keys)) if keys[i - 1] > keys[i]]
        assert not bad, f"{where}: rows {bad[:5]} are out of (trace_id, {start}) order"


# ---------------------------------------------------------------------------------------
# DuckDB


@pytest.mark.parametrize("tenant", TENANTS)
def test_duckdb_reads_the_same_spans(blocks: list[ReadBlock], sent: dict[str, Sent], tenant: str):
    con = duckdb.connect()
    got: collections.Counter = collections.Counter()
    for b in of_tenant(blocks, tenant):
        where = f"{tenant}/{b.block.block_id}"
        span_col = column(b.table.schema, SPAN_ID_COLUMNS, "span ID")
        start = column(b.table.schema, START_COLUMNS, "start time")
        scan = "read_parquet(?, file_row_number = true)"
        counts = con.execute(f"SELECT count(*), count(DISTINCT trace_id) FROM {scan}", [str(b.path)])
        ((rows, traces),) = counts.fetchall()
        assert rows == b.meta["spans"], f"{where}: DuckDB counts {rows} rows, meta.spans is {b.meta['spans']}"
        assert traces == b.meta["traces"], f"{where}: DuckDB counts {traces} traces, meta.traces is {b.meta['traces']}"
        # Row order as stored: each row against the one before it.
        ((unsorted,),) = con.execute(
            f"""SELECT count(*) FROM (
                    SELECT trace_id, "{start}" AS start,
                           lag(trace_id) OVER w AS prev_id, lag("{start}") OVER w AS prev_start
                    FROM {scan} WINDOW w AS (ORDER BY file_row_number))
                WHERE prev_id > trace_id OR (prev_id = trace_id AND prev_start > start)""",
            [str(b.path)],
        ).fetchall()
        assert unsorted == 0, f"{where}: DuckDB finds {unsorted} rows out of (trace_id, {start}) order"
        pairs = con.execute(f'SELECT lower(hex(trace_id)), lower(hex("{span_col}")) FROM {scan}', [str(b.path)])
        got.update(pairs.fetchall())
    expected = sent[tenant].ids()
    assert got == expected, (
        f"{tenant}: missing {sorted((expected - got).elements())}, unexpected {sorted((got - expected).elements())}"
    )

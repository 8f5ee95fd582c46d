"""A minimal FastAPI service, instrumented from the outside by `opentelemetry-instrument`.

Nothing here imports an exporter or a tracer provider: the OpenTelemetry distro configures them
from OTEL_* variables, and the FastAPI, urllib and sqlite3 instrumentations make the spans. One
request to GET /orders/{order_id} gives one trace:

    GET /orders/{order_id}      SERVER   (FastAPI)
    ├── SELECT orders           CLIENT   (sqlite3: a real database call)
    ├── price order             INTERNAL (a manual span, for work no library sees)
    └── GET                     CLIENT   (urllib: a call to this service's /stock/{sku})
        └── GET /stock/{sku}    SERVER   (FastAPI, in the same trace through the traceparent header)

Every log line carries the current trace_id and span_id, so Grafana links logs and traces.
"""

import logging
import os
import sqlite3
import urllib.request

from fastapi import FastAPI, HTTPException
from opentelemetry import trace


class TraceContext(logging.Filter):
    """Puts the current span's IDs on every record (zeros outside a span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x")
        record.span_id = format(ctx.span_id, "016x")
        return True


handler = logging.StreamHandler()
handler.addFilter(TraceContext())
handler.setFormatter(
    logging.Formatter("%(asctime)s %(levelname)s %(name)s trace_id=%(trace_id)s span_id=%(span_id)s %(message)s")
)
log = logging.getLogger("orders")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False

tracer = trace.get_tracer("orders")
app = FastAPI(title="orders")

# Where this service reaches itself for the stock lookup (in a real service: another service).
SELF_URL = os.environ.get("SELF_URL", "http://127.0.0.1:8000")

db = sqlite3.connect(":memory:", check_same_thread=False)
db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, sku TEXT, quantity INTEGER)")
db.executemany("INSERT INTO orders VALUES (?, ?, ?)", [("o-1", "sku-42", 2), ("o-2", "sku-7", 1)])


@app.get("/orders/{order_id}")
def get_order(order_id: str) -> dict:
    # A plain `def`: FastAPI runs it in a thread (the context goes with it), so the blocking
    # urllib call below does not stall the event loop that answers it.
    # Through a cursor: the sqlite3 instrumentation traces cursor.execute, not the connection's
    # execute shortcut.
    row = db.cursor().execute("SELECT sku, quantity FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        log.warning("order %s not found", order_id)
        raise HTTPException(status_code=404, detail=f"no order {order_id}")
    sku, quantity = row
    with tracer.start_as_current_span("price order", attributes={"order.id": order_id, "order.quantity": quantity}):
        price = 9.5 * quantity
    with urllib.request.urlopen(f"{SELF_URL}/stock/{sku}", timeout=5) as r:
        in_stock = r.read() == b'{"sku":"%s","in_stock":true}' % sku.encode()
    log.info("order %s: %s x%d, %.2f, in stock: %s", order_id, sku, quantity, price, in_stock)
    return {"order": order_id, "sku": sku, "quantity": quantity, "price": price, "in_stock": in_stock}


@app.get("/stock/{sku}")
def get_stock(sku: str) -> dict:
    log.info("stock lookup for %s", sku)
    return {"sku": sku, "in_stock": True}

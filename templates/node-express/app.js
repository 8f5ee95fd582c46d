// A minimal Express service. The spans come from the auto-instrumentation loaded by
// instrumentation.js, plus two made here. One GET /orders/:id gives one trace:
//
//   GET /orders/:id        SERVER   (http + express)
//   ├── SELECT orders      CLIENT   (manual: a database call, here a Map)
//   ├── price order        INTERNAL (manual: work no library sees)
//   └── GET                CLIENT   (http: a call to this service's /stock/:sku)
//       └── GET /stock/:sku SERVER  (same trace through the traceparent header)
//
// Every log line carries the current trace_id and span_id, so Grafana links logs and traces.
'use strict';

const http = require('node:http');
const express = require('express');
const { trace, SpanKind, SpanStatusCode } = require('@opentelemetry/api');

const PORT = Number(process.env.PORT || 8080);
// Where this service reaches itself for the stock lookup (in a real service: another service).
const SELF_URL = process.env.SELF_URL || `http://127.0.0.1:${PORT}`;
const tracer = trace.getTracer('orders');
const orders = new Map([
  ['o-1', { sku: 'sku-42', quantity: 2 }],
  ['o-2', { sku: 'sku-7', quantity: 1 }],
]);

function log(level, message) {
  const ctx = trace.getActiveSpan()?.spanContext();
  const ids = `trace_id=${ctx?.traceId ?? '0'.repeat(32)} span_id=${ctx?.spanId ?? '0'.repeat(16)}`;
  console.log(`${new Date().toISOString()} ${level} orders ${ids} ${message}`);
}

function getJson(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${url}: ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}

const app = express();

app.get('/orders/:id', async (req, res) => {
  const order = tracer.startActiveSpan(
    'SELECT orders',
    { kind: SpanKind.CLIENT, attributes: { 'db.system.name': 'memory', 'db.query.text': 'SELECT sku, quantity FROM orders WHERE id = ?' } },
    (span) => {
      const found = orders.get(req.params.id);
      span.end();
      return found;
    },
  );
  if (!order) {
    log('WARN', `order ${req.params.id} not found`);
    res.status(404).json({ error: `no order ${req.params.id}` });
    return;
  }
  const price = tracer.startActiveSpan('price order', { attributes: { 'order.id': req.params.id, 'order.quantity': order.quantity } }, (span) => {
    span.end();
    return 9.5 * order.quantity;
  });
  try {
    const stock = await getJson(`${SELF_URL}/stock/${order.sku}`);
    log('INFO', `order ${req.params.id}: ${order.sku} x${order.quantity}, ${price.toFixed(2)}, in stock: ${stock.in_stock}`);
    res.json({ order: req.params.id, sku: order.sku, quantity: order.quantity, price, in_stock: stock.in_stock });
  } catch (e) {
    trace.getActiveSpan()?.setStatus({ code: SpanStatusCode.ERROR, message: String(e) });
    log('ERROR', `stock lookup failed: ${e}`);
    res.status(502).json({ error: String(e) });
  }
});

app.get('/stock/:sku', (req, res) => {
  log('INFO', `stock lookup for ${req.params.sku}`);
  res.json({ sku: req.params.sku, in_stock: true });
});

app.listen(PORT, process.env.HOST || '0.0.0.0', () => log('INFO', `listening on ${PORT}`));

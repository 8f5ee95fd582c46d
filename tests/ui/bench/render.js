// Benchmark: how long the trace view takes to show a 10K-span trace in Chromium, and how
// smoothly it scrolls. Not a test (no timing assertions): it prints the figures that
// docs/performance.md records.
//
//   cargo build -p spoor && npm ci --prefix tests/ui && node tests/ui/bench/render.js
//
// Env: SPOOR_BIN (default target/debug/spoor), SPANS (10000), RUNS (5), CHROMIUM.
import { trace, context, SpanKind } from '@opentelemetry/api';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { chromium } from 'playwright-core';
import { startSpoor } from '../e2e/server.js';

const SPANS = Number(process.env.SPANS ?? 10000);
const RUNS = Number(process.env.RUNS ?? 5);
const SERVICES = ['gateway', 'orders', 'cart', 'payment', 'inventory', 'shipping', 'users', 'search'];

/** A deterministic PRNG (mulberry32), so every run renders the same trace. */
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sends one trace of `n` spans: a tree with fan-out 1–6, children inside their parent. */
async function sendBigTrace(otlp, n) {
  const providers = new Map(
    SERVICES.map((svc) => {
      const exporter = new OTLPTraceExporter({ url: `${otlp}/v1/traces`, timeoutMillis: 60000 });
      const processor = new BatchSpanProcessor(exporter, { maxQueueSize: n + 1, maxExportBatchSize: 1000, scheduledDelayMillis: 100 });
      return [svc, new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': svc }), spanProcessors: [processor] })];
    }),
  );
  const rand = rng(42);
  const t0 = Date.now() - 120_000;
  const total = 60_000; // ms
  const root = { s: 0, e: total, svc: 'gateway', name: 'GET /checkout' };
  const nodes = [root];
  // Breadth first: each span gets 1–6 children in its interval until there are n spans.
  for (let i = 0; nodes.length < n; i++) {
    const p = nodes[i];
    const kids = 1 + Math.floor(rand() * 6);
    for (let k = 0; k < kids && nodes.length < n; k++) {
      const len = (p.e - p.s) * (0.05 + rand() * 0.5);
      const s = p.s + rand() * (p.e - p.s - len);
      const svc = rand() < 0.3 ? SERVICES[Math.floor(rand() * SERVICES.length)] : p.svc;
      nodes.push({ s, e: s + len, svc, name: `${svc} op ${Math.floor(rand() * 40)}`, parent: p });
    }
  }
  for (const node of nodes) {
    const ctx = node.parent ? trace.setSpan(context.active(), node.parent.span) : context.active();
    node.span = providers.get(node.svc).getTracer('bench').startSpan(node.name, { kind: SpanKind.INTERNAL, startTime: t0 + node.s, attributes: { 'bench.i': nodes.indexOf(node) } }, ctx);
  }
  for (const node of nodes) node.span.end(t0 + node.e);
  for (const p of providers.values()) await p.forceFlush();
  for (const p of providers.values()) await p.shutdown();
  return root.span.spanContext().traceId;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const spoor = await startSpoor();
try {
  const id = await sendBigTrace(spoor.otlp, SPANS);
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const results = [];
  for (let run = 0; run < RUNS; run++) {
    await page.goto(`${spoor.base}/trace/${id}`);
    // Navigation start → the waterfall's rows painted (two frames after they exist).
    const shown = await page.waitForFunction(
      () =>
        document.querySelector('.waterfall .row') &&
        new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(() => ok(performance.now())))),
      null,
      { timeout: 120_000 },
    );
    const total = await shown.jsonValue();
    const fetched = await page.evaluate(() => {
      const e = performance.getEntriesByType('resource').find((r) => r.name.includes('/api/v2/traces/'));
      return e ? { start: e.startTime, end: e.responseEnd } : null;
    });
    const header = await page.locator('.trace-head').textContent();
    if (!header.includes(`${SPANS} spans`)) throw new Error(`the view does not show ${SPANS} spans: ${header}`);
    const rows = await page.$$eval('.waterfall .row', (r) => r.length);
    // Scroll the whole waterfall in 100 steps, one frame each: the frame times.
    const frames = await page.evaluate(async () => {
      const w = document.querySelector('.waterfall');
      const times = [];
      for (let i = 1; i <= 100; i++) {
        const before = performance.now();
        w.scrollTop = (w.scrollHeight * i) / 100;
        await new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
        times.push(performance.now() - before);
      }
      return times;
    });
    const flame = await page.evaluate(async () => {
      const before = performance.now();
      [...document.querySelectorAll('button')].find((b) => b.textContent === 'Flame graph').click();
      await new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
      return performance.now() - before;
    });
    results.push({ total, fetch: fetched ? fetched.end - fetched.start : NaN, render: fetched ? total - fetched.end : NaN, rows, scrollMean: frames.reduce((a, b) => a + b, 0) / frames.length, scrollMax: Math.max(...frames), flame });
  }
  await browser.close();
  const m = (k) => Math.round(median(results.map((r) => r[k])));
  console.log(JSON.stringify({ spans: SPANS, runs: RUNS, results }, null, 1));
  console.log(
    `${SPANS} spans, median of ${RUNS}: shown ${m('total')} ms after navigation (trace fetch ${m('fetch')} ms, ` +
      `parse + layout + paint ${m('render')} ms); ${m('rows')} rows in the DOM; ` +
      `scrolling: two frames per step ${m('scrollMean')} ms mean, ${m('scrollMax')} ms worst; flame graph ${m('flame')} ms`,
  );
} finally {
  await spoor.stop();
}

// The traces the end-to-end test sends, with the OpenTelemetry JS SDK over OTLP/HTTP
// (protobuf). One provider per service, so each span carries its service's resource.
import { trace, context, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';

/**
 * A checkout: frontend calls cart and payment in parallel; payment queries its database and
 * then runs a fraud check. The critical path is the checkout, the payment call, the charge,
 * the account query and the fraud check; the cart call (overlapping the payment call, ending
 * first) and the audit log (inside the payment call) are off it.
 * [name, service, parent name, start ms, end ms, kind, error]
 */
export const CHECKOUT = [
  ['GET /checkout', 'frontend', null, 0, 300, SpanKind.SERVER],
  ['call cart', 'frontend', 'GET /checkout', 10, 80, SpanKind.CLIENT],
  ['GET /cart', 'cart', 'call cart', 15, 75, SpanKind.SERVER],
  ['redis GET', 'cart', 'GET /cart', 20, 30, SpanKind.CLIENT],
  ['call payment', 'frontend', 'GET /checkout', 20, 290, SpanKind.CLIENT],
  ['POST /charge', 'payment', 'call payment', 25, 285, SpanKind.SERVER],
  ['SELECT accounts', 'payment', 'POST /charge', 30, 120, SpanKind.CLIENT],
  ['fraud check', 'payment', 'POST /charge', 130, 280, SpanKind.INTERNAL],
  ['audit log', 'frontend', 'GET /checkout', 100, 150, SpanKind.INTERNAL, true],
];
export const CRITICAL = ['GET /checkout', 'call payment', 'POST /charge', 'SELECT accounts', 'fraud check'];

/** The same checkout with the fraud check `slowMs` slower (and everything above it). */
export function slowed(slowMs) {
  return CHECKOUT.map(([name, svc, parent, s, e, kind, err]) => {
    if (name === 'fraud check') return [name, svc, parent, s, e + slowMs, kind, err];
    if (['GET /checkout', 'call payment', 'POST /charge'].includes(name)) return [name, svc, parent, s, e + slowMs, kind, err];
    return [name, svc, parent, s, e, kind, err];
  });
}

/**
 * Sends traces built from span tables; returns their trace IDs (hex).
 * @param {string} otlp  base URL of OTLP/HTTP
 * @param {any[][][]} tables
 * @param {Record<string, string>} [headers]
 */
export async function sendTraces(otlp, tables, headers = {}) {
  /** @type {Map<string, BasicTracerProvider>} */
  const providers = new Map();
  const provider = (svc) => {
    if (!providers.has(svc)) {
      const exporter = new OTLPTraceExporter({ url: `${otlp}/v1/traces`, headers });
      providers.set(svc, new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': svc }), spanProcessors: [new SimpleSpanProcessor(exporter)] }));
    }
    return providers.get(svc);
  };
  const ids = [];
  const base = Date.now() - 60_000;
  tables.forEach((table, i) => {
    const t0 = base + i * 1000;
    const spans = new Map();
    for (const [name, svc, parent, s, e, kind, err] of table) {
      const ctx = parent ? trace.setSpan(context.active(), spans.get(parent)) : context.active();
      const span = provider(svc).getTracer('spoor-ui-e2e').startSpan(name, { kind, startTime: t0 + s, attributes: { 'test.step': name } }, ctx);
      if (err) span.setStatus({ code: SpanStatusCode.ERROR, message: 'audit store down' });
      if (name === 'fraud check') span.addEvent('model scored', { score: 0.2 }, t0 + s + 5);
      spans.set(name, span);
    }
    // End children first, as a real process would.
    for (const [name, , , , e] of [...table].reverse()) spans.get(name).end(t0 + e);
    ids.push(spans.get(table[0][0]).spanContext().traceId);
  });
  for (const p of providers.values()) await p.forceFlush();
  for (const p of providers.values()) await p.shutdown();
  return ids;
}

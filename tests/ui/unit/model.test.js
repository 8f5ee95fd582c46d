import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTrace, idToHex } from '../../../crates/server/ui/js/model.js';

const b64 = (hex) => Buffer.from(hex, 'hex').toString('base64');
const TRACE = '0af7651916cd43dd8448eb211c80319c';

/** Tempo's v2 answer for spans given as [span, parent, start ns offset, end ns offset, service]. */
function v2(rows) {
  const base = 1_700_000_000_000_000_000n;
  const bySvc = new Map();
  for (const [id, parent, s, e, svc] of rows) {
    const span = { traceId: b64(TRACE), spanId: b64(id), name: `op-${id.slice(-2)}`, kind: 'SPAN_KIND_SERVER', startTimeUnixNano: String(base + BigInt(s)), endTimeUnixNano: String(base + BigInt(e)), status: { code: 'STATUS_CODE_ERROR', message: 'boom' } };
    if (parent) span.parentSpanId = b64(parent);
    bySvc.set(svc, [...(bySvc.get(svc) ?? []), span]);
  }
  return {
    trace: {
      resourceSpans: [...bySvc].map(([svc, spans]) => ({
        resource: { attributes: [{ key: 'service.name', value: { stringValue: svc } }, { key: 'k8s.pod', value: { intValue: '3' } }] },
        scopeSpans: [{ scope: { name: 'lib', version: '1.0' }, spans }],
      })),
    },
  };
}

test('Tempo v2 JSON: base64 IDs, nanosecond strings past 2^53, tree and orphans', () => {
  const t = parseTrace(
    v2([
      ['00000000000000a1', '', 0, 1_000_000_000, 'shop'],
      ['00000000000000a2', '00000000000000a1', 5, 500_000_001, 'db'],
      ['00000000000000a3', '00000000000000ff', 10, 20, 'db'],
    ]),
  );
  assert.equal(t.traceId, TRACE);
  assert.equal(t.spans.length, 3);
  assert.deepEqual(t.roots.map((r) => [r.id, r.orphan]), [['00000000000000a1', false], ['00000000000000a3', true]]);
  const child = t.byId.get('00000000000000a2');
  assert.equal(child.parent.id, '00000000000000a1');
  assert.equal(child.depth, 1);
  // Offsets stay exact although the absolute times do not fit a double.
  assert.equal(child.start, 5);
  assert.equal(child.duration, 499_999_996);
  assert.equal(t.duration, 1_000_000_000);
  assert.equal(child.service, 'db');
  assert.equal(child.kind, 'server');
  assert.equal(child.status, 'error');
  assert.equal(child.statusMessage, 'boom');
  assert.deepEqual(child.resource.find((a) => a.key === 'k8s.pod').value, 3);
  assert.equal(child.scope.version, '1.0');
  assert.deepEqual(t.services, ['shop', 'db']);
});

test('bad input does not throw: missing fields, bad times, end before start', () => {
  const t = parseTrace({ trace: { resourceSpans: [{ scopeSpans: [{ spans: [{ spanId: 'not base64!', startTimeUnixNano: 'x', endTimeUnixNano: '5' }, { spanId: b64('0000000000000001'), startTimeUnixNano: '10', endTimeUnixNano: '3' }] }] }] } });
  assert.equal(t.spans.length, 2);
  assert.ok(t.spans.every((s) => s.duration >= 0));
  assert.equal(t.spans[0].service, 'unknown');
  assert.equal(parseTrace({}).spans.length, 0);
  assert.equal(idToHex(TRACE.toUpperCase()), TRACE);
  assert.equal(idToHex(''), '');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareTraces, keyed, summarize } from '../../../crates/server/ui/js/compare.js';
import { trace } from './helpers.js';

const MS = 1e6;
const byName = (rows) => Object.fromEntries(rows.map((r) => [`${r.name}`, r]));

test('spans align by service, operation and occurrence, whatever their IDs and times', () => {
  const a = trace([
    ['r', '', 0, 100 * MS, 'shop', 'GET /cart'],
    ['q1', 'r', 10 * MS, 20 * MS, 'db', 'SELECT'],
    ['q2', 'r', 30 * MS, 40 * MS, 'db', 'SELECT'],
  ]);
  const b = trace([
    ['R', '', 5 * MS, 305 * MS, 'shop', 'GET /cart'],
    ['Q1', 'R', 15 * MS, 25 * MS, 'db', 'SELECT'],
    ['Q2', 'R', 35 * MS, 245 * MS, 'db', 'SELECT'],
  ]);
  const rows = compareTraces(a.roots, b.roots);
  assert.equal(rows.length, 3);
  assert.equal(rows[1].a.id, 'q1');
  assert.equal(rows[1].b.id, 'Q1');
  assert.equal(rows[1].change, 'same');
  assert.equal(rows[2].b.id, 'Q2');
  assert.equal(rows[2].change, 'slower');
  assert.equal(rows[2].delta, 200 * MS);
  assert.equal(rows[0].change, 'slower');
});

test('new and missing spans, in tree order', () => {
  const a = trace([
    ['r', '', 0, 100 * MS, 'shop', 'checkout'],
    ['cache', 'r', 1 * MS, 2 * MS, 'redis', 'GET'],
    ['pay', 'r', 10 * MS, 50 * MS, 'pay', 'charge'],
  ]);
  const b = trace([
    ['r', '', 0, 100 * MS, 'shop', 'checkout'],
    ['pay', 'r', 10 * MS, 50 * MS, 'pay', 'charge'],
    ['fraud', 'pay', 12 * MS, 30 * MS, 'fraud', 'score'],
  ]);
  const rows = compareTraces(a.roots, b.roots);
  const n = byName(rows);
  assert.equal(n.GET.change, 'missing');
  assert.equal(n.score.change, 'new');
  assert.equal(n.charge.change, 'same');
  assert.deepEqual(rows.map((r) => r.name), ['checkout', 'GET', 'charge', 'score'], 'a new span follows its parent');
});

test('faster needs both the ratio and the minimum delta', () => {
  const a = trace([['r', '', 0, 100 * MS, 's', 'op'], ['x', 'r', 0, 10 * MS, 's', 'tiny'], ['y', 'r', 0, 50 * MS, 's', 'big']]);
  const b = trace([['r', '', 0, 100 * MS, 's', 'op'], ['x', 'r', 0, 9.5 * MS, 's', 'tiny'], ['y', 'r', 0, 20 * MS, 's', 'big']]);
  const n = byName(compareTraces(a.roots, b.roots));
  assert.equal(n.tiny.change, 'same', '0.5ms is under the 1ms minimum');
  assert.equal(n.big.change, 'faster');
  assert.equal(n.big.delta, -30 * MS);
});

test('a missing parent makes an extra root, aligned among the roots', () => {
  const a = trace([['r', '', 0, 10 * MS, 's', 'op'], ['o', 'lost', 2 * MS, 3 * MS, 't', 'late']]);
  const b = trace([['r', '', 0, 10 * MS, 's', 'op'], ['o2', 'lost2', 2 * MS, 8 * MS, 't', 'late']]);
  const n = byName(compareTraces(a.roots, b.roots));
  assert.equal(n.late.change, 'slower');
  assert.equal(n.late.depth, 0);
});

test('clock skew does not change alignment: occurrence follows start order within siblings', () => {
  // B's clock for db is skewed 1s early; the two SELECTs keep their order, so they still pair.
  const a = trace([['r', '', 0, 100 * MS, 'shop', 'GET'], ['1', 'r', 10 * MS, 20 * MS, 'db', 'SELECT'], ['2', 'r', 30 * MS, 35 * MS, 'db', 'SELECT']]);
  const b = trace([['r', '', 0, 100 * MS, 'shop', 'GET'], ['1', 'r', -990 * MS, -980 * MS, 'db', 'SELECT'], ['2', 'r', -970 * MS, -965 * MS, 'db', 'SELECT']]);
  const rows = compareTraces(a.roots, b.roots);
  assert.deepEqual(rows.map((r) => r.change), ['same', 'same', 'same']);
});

test('keys escape separators, so names with slashes cannot collide', () => {
  const t = trace([['r', '', 0, 1, 'a/b', 'c'], ['s', '', 0, 1, 'a', 'b/c']]);
  const keys = keyed(t.roots).map((k) => k.key);
  assert.equal(new Set(keys).size, 2);
});

test('summary totals per service and operation, most changed first', () => {
  const a = trace([['r', '', 0, 10 * MS, 's', 'op'], ['x', 'r', 0, 1 * MS, 'db', 'q'], ['y', 'r', 1 * MS, 2 * MS, 'db', 'q']]);
  const b = trace([['r', '', 0, 10 * MS, 's', 'op'], ['x', 'r', 0, 5 * MS, 'db', 'q']]);
  const s = summarize(compareTraces(a.roots, b.roots));
  assert.deepEqual(s[0], { service: 'db', name: 'q', countA: 2, countB: 1, totalA: 2 * MS, totalB: 5 * MS });
});

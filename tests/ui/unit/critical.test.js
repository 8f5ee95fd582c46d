import { test } from 'node:test';
import assert from 'node:assert/strict';
import { criticalPath, selfTimeOnPath } from '../../../crates/server/ui/js/critical.js';
import { trace } from './helpers.js';

const ids = (t) => [...criticalPath(t.roots).ids].sort();

/** The segments of one root's walk tile the root's interval exactly. */
function assertTiles(t, root) {
  const segs = criticalPath([root]).segments;
  let at = root.start;
  for (const s of segs) {
    assert.equal(s.start, at, `gap or overlap at ${at}: ${JSON.stringify(segs)}`);
    at = s.end;
  }
  assert.equal(at, root.end);
}

test('sequential children are all on the path', () => {
  const t = trace([['root', '', 0, 100], ['a', 'root', 10, 40], ['b', 'root', 40, 90]]);
  assert.deepEqual(ids(t), ['a', 'b', 'root']);
  const self = selfTimeOnPath(criticalPath(t.roots));
  assert.equal(self.get('root'), 10 + 0 + 10);
  assert.equal(self.get('a'), 30);
  assert.equal(self.get('b'), 50);
  assertTiles(t, t.roots[0]);
});

test('of overlapping siblings, the one that ended last decides; the one it hides is off the path', () => {
  // a [10,80] and b [20,60] run in parallel: b ends inside a, so only a is on the path.
  const t = trace([['root', '', 0, 100], ['a', 'root', 10, 80], ['b', 'root', 20, 60], ['c', 'root', 0, 5]]);
  assert.deepEqual(ids(t), ['a', 'c', 'root']);
  assertTiles(t, t.roots[0]);
});

test('an async child that ends after its parent counts only up to the parent end', () => {
  // The parent returns at 50; its async child runs to 200. The root waits for `later` instead.
  const t = trace([
    ['root', '', 0, 300],
    ['parent', 'root', 0, 50],
    ['async', 'parent', 40, 200],
    ['later', 'root', 60, 280],
  ]);
  const p = criticalPath(t.roots);
  assert.ok(p.ids.has('async'), 'the async child is the parent\'s last work');
  const seg = p.segments.filter((s) => s.id === 'async');
  assert.deepEqual(seg, [{ id: 'async', start: 40, end: 50 }], 'clamped to the parent end');
  assert.ok(p.ids.has('later'));
  assertTiles(t, t.roots[0]);
});

test('an async child that starts after its parent ended is not on the path', () => {
  const t = trace([['root', '', 0, 100], ['parent', 'root', 0, 50], ['fire-and-forget', 'parent', 60, 90]]);
  assert.deepEqual(ids(t), ['parent', 'root']);
});

test('clock skew: a child starting before its parent is clamped to the parent', () => {
  const t = trace([['root', '', 100, 200], ['skewed', 'root', 80, 150], ['tail', 'root', 150, 190]]);
  const p = criticalPath(t.roots);
  assert.deepEqual([...p.ids].sort(), ['root', 'skewed', 'tail']);
  assert.deepEqual(p.segments.find((s) => s.id === 'skewed'), { id: 'skewed', start: 100, end: 150 });
  assertTiles(t, t.roots[0]);
});

test('spans whose parent is missing are roots of their own path', () => {
  const t = trace([['root', '', 0, 100], ['a', 'root', 0, 100], ['orphan', 'gone', 30, 60], ['orphan-child', 'orphan', 35, 55]]);
  assert.equal(t.roots.length, 2);
  assert.ok(t.roots[1].orphan);
  assert.deepEqual(ids(t), ['a', 'orphan', 'orphan-child', 'root']);
});

test('nested path follows the deepest last-finishing chain', () => {
  const t = trace([
    ['root', '', 0, 100],
    ['a', 'root', 0, 95],
    ['a1', 'a', 5, 30],
    ['a2', 'a', 30, 90],
    ['a2x', 'a2', 35, 50],
    ['a2y', 'a2', 40, 85],
    ['b', 'root', 10, 20],
  ]);
  assert.deepEqual(ids(t), ['a', 'a1', 'a2', 'a2y', 'root']);
  assertTiles(t, t.roots[0]);
});

test('a 10K-deep chain does not overflow the stack', () => {
  const rows = [['s0', '', 0, 20000]];
  for (let i = 1; i < 10000; i++) rows.push([`s${i}`, `s${i - 1}`, i, 20000 - i]);
  const t = trace(rows);
  assert.equal(criticalPath(t.roots).ids.size, 10000);
});

test('a parent loop (bad input) is cut into a root instead of hanging', () => {
  const t = trace([['a', 'b', 0, 10], ['b', 'a', 1, 9], ['c', '', 0, 5]]);
  assert.equal(t.spans.length, 3);
  assert.equal(t.roots.length, 2);
  assert.equal(criticalPath(t.roots).ids.size, 3);
});

test('flame rows: parallel siblings get their own rows, children stay below their parent', async () => {
  const { flameRows } = await import('../../../crates/server/ui/js/flame.js');
  const t = trace([['root', '', 0, 100], ['a', 'root', 10, 60], ['b', 'root', 20, 90], ['c', 'root', 70, 80], ['a1', 'a', 15, 50]]);
  const rows = flameRows(t.spans);
  const r = Object.fromEntries([...rows].map(([s, n]) => [s.id, n]));
  assert.equal(r.root, 0);
  assert.equal(r.a, 1);
  assert.notEqual(r.b, r.a, 'b overlaps a');
  assert.equal(r.c, 1, 'c fits after a ended');
  assert.ok(r.a1 > r.a);
  for (const [s, n] of rows) for (const [o, m] of rows) if (s !== o && n === m) assert.ok(s.end <= o.start || o.end <= s.start, `${s.id} and ${o.id} overlap in row ${n}`);
});

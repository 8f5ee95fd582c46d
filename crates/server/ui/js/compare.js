// @ts-check
// Two traces side by side: spans aligned by where they sit in the tree. Pure; see docs/ui.md.
//
// A span's key is its parent's key, then its (service, operation), then its occurrence index
// among the siblings with the same (service, operation) in start order. So the third `SELECT`
// of `db` under the second `GET /cart` of `shop` in A meets the same one in B, whatever the
// span IDs (which always differ between traces) and whatever the start times (which shift).
// Roots are keyed the same way among the roots; a span whose parent is missing is a root.

/**
 * @typedef {{ id: string, name: string, service: string, start: number, end: number, children: Node[] }} Node
 * @typedef {'same' | 'slower' | 'faster' | 'new' | 'missing'} Change
 * @typedef {{ key: string, depth: number, service: string, name: string,
 *   a: Node | null, b: Node | null, durationA: number, durationB: number,
 *   delta: number, ratio: number, change: Change }} Row
 */

/**
 * Keys every span of a forest, in tree order.
 * @param {Node[]} roots
 * @returns {{ key: string, depth: number, node: Node }[]}
 */
export function keyed(roots) {
  /** @type {{ key: string, depth: number, node: Node }[]} */
  const out = [];
  const visit = (/** @type {string} */ prefix, /** @type {number} */ depth, /** @type {Node[]} */ nodes) => {
    const seen = new Map();
    const sorted = [...nodes].sort((x, y) => x.start - y.start || x.end - y.end);
    return sorted.map((n) => {
      const id = `${n.service}\u0000${n.name}`;
      const i = seen.get(id) ?? 0;
      seen.set(id, i + 1);
      return { key: `${prefix}/${escapeKey(n.service)}:${escapeKey(n.name)}#${i}`, depth, node: n };
    });
  };
  // Depth first, without recursion: a deep trace must not overflow the stack.
  /** @type {{ key: string, depth: number, node: Node }[]} */
  const todo = visit('', 0, roots).reverse();
  while (todo.length) {
    const item = /** @type {{ key: string, depth: number, node: Node }} */ (todo.pop());
    out.push(item);
    const kids = visit(item.key, item.depth + 1, item.node.children);
    for (let i = kids.length - 1; i >= 0; i--) todo.push(kids[i]);
  }
  return out;
}

/** @param {string} s */
function escapeKey(s) {
  return s.replace(/[\\/:#]/g, (c) => `\\${c}`);
}

/**
 * Aligns B against A. A span is slower or faster when its duration changed by at least `ratio`
 * of A's and by at least `minDelta` (in the traces' time unit), else the same.
 * @param {Node[]} rootsA
 * @param {Node[]} rootsB
 * @param {{ ratio?: number, minDelta?: number }} [opts]
 * @returns {Row[]} in A's tree order, each B-only span after its nearest preceding aligned row
 */
export function compareTraces(rootsA, rootsB, opts = {}) {
  const ratio = opts.ratio ?? 0.1;
  const minDelta = opts.minDelta ?? 1e6;
  const a = keyed(rootsA);
  const b = keyed(rootsB);
  const bByKey = new Map(b.map((x) => [x.key, x]));
  const aKeys = new Set(a.map((x) => x.key));
  /** @type {Row[]} */
  const rows = [];
  const row = (/** @type {string} */ key, /** @type {number} */ depth, /** @type {Node|null} */ na, /** @type {Node|null} */ nb) => {
    const durationA = na ? na.end - na.start : 0;
    const durationB = nb ? nb.end - nb.start : 0;
    const delta = durationB - durationA;
    /** @type {Change} */
    let change = 'same';
    if (!na) change = 'new';
    else if (!nb) change = 'missing';
    else if (Math.abs(delta) >= minDelta && Math.abs(delta) >= ratio * durationA) change = delta > 0 ? 'slower' : 'faster';
    const n = /** @type {Node} */ (na ?? nb);
    return { key, depth, service: n.service, name: n.name, a: na, b: nb, durationA, durationB, delta, ratio: durationA > 0 ? durationB / durationA : Infinity, change };
  };
  // B-only spans go right after the row of their parent's key (or their preceding B sibling),
  // so they appear where they sit in B's tree.
  /** @type {Map<string, { key: string, depth: number, node: Node }[]>} */
  const extraAfter = new Map();
  let last = '';
  for (const x of b) {
    if (!aKeys.has(x.key)) {
      const list = extraAfter.get(last) ?? [];
      list.push(x);
      extraAfter.set(last, list);
    } else {
      last = x.key;
    }
  }
  for (const x of extraAfter.get('') ?? []) rows.push(row(x.key, x.depth, null, x.node));
  for (const x of a) {
    rows.push(row(x.key, x.depth, x.node, bByKey.get(x.key)?.node ?? null));
    for (const y of extraAfter.get(x.key) ?? []) rows.push(row(y.key, y.depth, null, y.node));
  }
  return rows;
}

/**
 * Per (service, operation): counts and total durations in A and B, most changed first.
 * @param {Row[]} rows
 */
export function summarize(rows) {
  /** @type {Map<string, { service: string, name: string, countA: number, countB: number, totalA: number, totalB: number }>} */
  const m = new Map();
  for (const r of rows) {
    const k = `${r.service}\u0000${r.name}`;
    const e = m.get(k) ?? { service: r.service, name: r.name, countA: 0, countB: 0, totalA: 0, totalB: 0 };
    if (r.a) (e.countA++, (e.totalA += r.durationA));
    if (r.b) (e.countB++, (e.totalB += r.durationB));
    m.set(k, e);
  }
  return [...m.values()].sort((x, y) => Math.abs(y.totalB - y.totalA) - Math.abs(x.totalB - x.totalA));
}

// @ts-check
// Service map (`/services`): the edges of Jaeger's dependencies API (a parent span of one
// service calling a child span of another), each with its request rate, error rate and p95
// latency from TraceQL metrics over the same window; click a service for its health.

import { get } from '../api.js';
import { instantBy } from '../metrics.js';
import { h, fill, errorBox } from '../dom.js';
import { duration, num, rangeSeconds } from '../format.js';
import { quote } from '../traceql.js';
import { navigate } from '../session.js';

const SVG = 'http://www.w3.org/2000/svg';
const RANGES = ['15m', '1h', '6h', '24h'];

/** An SVG element. @param {string} tag @param {Record<string, any>} [attrs] @param {...(Node|string)} kids */
function s(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  for (const k of kids) e.append(k);
  return e;
}

/**
 * Columns for a layered layout: each service one column right of the furthest caller that
 * reaches it (cycles are cut where they close).
 * @param {string[]} nodes @param {{ parent: string, child: string }[]} edges
 */
export function layers(nodes, edges) {
  /** @type {Map<string, number>} */
  const level = new Map(nodes.map((n) => [n, 0]));
  // Bellman-Ford style relaxation, at most |nodes| rounds, so a cycle cannot loop forever.
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const e of edges) {
      if (e.parent === e.child) continue;
      const want = (level.get(e.parent) ?? 0) + 1;
      if (want > (level.get(e.child) ?? 0) && want < nodes.length) {
        level.set(e.child, want);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return level;
}

/**
 * @param {HTMLElement} main
 * @param {string[]} _args
 * @param {URLSearchParams} params
 */
export async function render(main, _args, params) {
  const range = RANGES.includes(params.get('range') ?? '') ? /** @type {string} */ (params.get('range')) : '1h';
  const secs = /** @type {number} */ (rangeSeconds(range));
  const end = Math.floor(Date.now() / 1000);
  const start = end - secs;
  const select = /** @type {HTMLSelectElement} */ (h('select', { 'aria-label': 'Time range' }, ...RANGES.map((r) => h('option', { value: r }, `Last ${r}`))));
  select.value = range;
  select.addEventListener('change', () => navigate(`/services?range=${select.value}`));
  fill(main, h('h1', null, 'Service map'), h('div.toolbar', null, select), h('p.hint', null, 'Loading…'));

  /** @type {{ parent: string, child: string, callCount: number }[]} */
  let deps;
  try {
    const r = await get('/api/dependencies', { endTs: end * 1000, lookback: secs * 1000 });
    deps = Array.isArray(r) ? r : (r.data ?? []);
  } catch (e) {
    fill(main, h('h1', null, 'Service map'), h('div.toolbar', null, select), errorBox(e));
    return;
  }
  const svc = 'resource.service.name';
  // Per service: its spans' rate and error rate, and per edge (by the parent service) the
  // child spans' rate, error rate and p95. Metrics failing leave the numbers out, not the map.
  /** @type {Map<string, number>} */
  let rate = new Map();
  /** @type {Map<string, number>} */
  let errs = new Map();
  try {
    [rate, errs] = await Promise.all([
      instantBy(`{ } | rate() by (${svc})`, start, end, svc),
      instantBy(`{ status = error } | rate() by (${svc})`, start, end, svc),
    ]);
  } catch {
    // numbers left out
  }
  const parents = [...new Set(deps.map((d) => d.parent))];
  /** @type {Map<string, { rate?: number, errors?: number, p95?: number }>} */
  const edgeStats = new Map();
  await Promise.all(
    parents.map(async (p) => {
      const base = `{ ${svc} = ${quote(p)} } > { ${svc} != ${quote(p)}`;
      try {
        const [r, e, l] = await Promise.all([
          instantBy(`${base} } | rate() by (${svc})`, start, end, svc),
          instantBy(`${base} && status = error } | rate() by (${svc})`, start, end, svc),
          instantBy(`${base} } | quantile_over_time(duration, .95) by (${svc})`, start, end, svc),
        ]);
        for (const d of deps.filter((x) => x.parent === p)) edgeStats.set(`${p}->${d.child}`, { rate: r.get(d.child), errors: e.get(d.child) ?? 0, p95: l.get(d.child) });
      } catch {
        // numbers left out
      }
    }),
  );

  const nodes = [...new Set([...deps.flatMap((d) => [d.parent, d.child]), ...rate.keys()])].sort();
  if (!nodes.length) {
    fill(main, h('h1', null, 'Service map'), h('div.toolbar', null, select), h('p.hint', null, `No spans in the last ${range}.`));
    return;
  }
  const level = layers(nodes, deps);
  /** @type {Map<number, string[]>} */
  const columns = new Map();
  for (const n of nodes) {
    const l = level.get(n) ?? 0;
    columns.set(l, [...(columns.get(l) ?? []), n]);
  }
  const W = 170, H = 46, GX = 110, GY = 40;
  /** @type {Map<string, { x: number, y: number }>} */
  const pos = new Map();
  for (const [l, col] of columns) col.forEach((n, i) => pos.set(n, { x: 20 + l * (W + GX), y: 20 + i * (H + GY) }));
  const width = 40 + (Math.max(...columns.keys()) + 1) * (W + GX);
  const height = 40 + Math.max(...[...columns.values()].map((c) => c.length)) * (H + GY);

  const svg = s('svg', { class: 'map', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'Service map' });
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', fill: 'currentColor' }))));
  const edgeLabel = (/** @type {string} */ key, /** @type {number} */ calls) => {
    const st = edgeStats.get(key) ?? {};
    const parts = [st.rate !== undefined ? `${num(st.rate)}/s` : `${calls} calls`];
    if (st.rate) parts.push(`${num(((st.errors ?? 0) / st.rate) * 100)}% err`);
    if (st.p95 !== undefined) parts.push(`p95 ${duration(st.p95 * 1e9)}`);
    return parts.join(' · ');
  };
  for (const d of deps) {
    const a = pos.get(d.parent);
    const b = pos.get(d.child);
    if (!a || !b) continue;
    const key = `${d.parent}->${d.child}`;
    const st = edgeStats.get(key);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    const self = d.parent === d.child;
    const path = self ? `M${a.x + W / 2},${a.y} c 30,-40 60,-10 ${W / 2 - 10},${H / 2}` : `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`;
    svg.append(
      s(
        'g',
        { class: `edge${st && st.errors ? ' err' : ''}`, 'data-edge': key },
        s('path', { d: path, 'marker-end': 'url(#arrow)' }),
        s('text', { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, 'text-anchor': 'middle' }, edgeLabel(key, d.callCount)),
      ),
    );
  }
  for (const n of nodes) {
    const p = /** @type {{x: number, y: number}} */ (pos.get(n));
    const r = rate.get(n) ?? 0;
    const e = errs.get(n) ?? 0;
    const a = s(
      'a',
      { href: `/services/${encodeURIComponent(n)}`, 'data-service': n },
      s(
        'g',
        { class: `node${e > 0 ? ' err' : ''}` },
        s('rect', { x: p.x, y: p.y, width: W, height: H, rx: 6 }),
        s('text', { x: p.x + 10, y: p.y + 18, 'font-weight': 600 }, n.length > 24 ? `${n.slice(0, 23)}…` : n),
        s('text', { x: p.x + 10, y: p.y + 36 }, `${num(r)} spans/s · ${r ? num((e / r) * 100) : 0}% err`),
      ),
    );
    svg.append(a);
  }
  // Links in an SVG are followed by the page's router like any other.
  svg.addEventListener('click', (ev) => {
    const a = ev.target instanceof Element ? ev.target.closest('a') : null;
    const href = a?.getAttribute('href');
    if (href) {
      ev.preventDefault();
      navigate(href);
    }
  });
  const table = h(
    'table.edges',
    null,
    h('caption', null, 'Calls between services'),
    h('thead', null, h('tr', null, ...['Caller', 'Callee', 'Calls', 'Rate', 'Error rate', 'p95'].map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      null,
      ...deps.map((d) => {
        const st = edgeStats.get(`${d.parent}->${d.child}`) ?? {};
        return h(
          'tr',
          { dataset: { edge: `${d.parent}->${d.child}` } },
          h('td', null, h('a', { href: `/services/${encodeURIComponent(d.parent)}` }, d.parent)),
          h('td', null, h('a', { href: `/services/${encodeURIComponent(d.child)}` }, d.child)),
          h('td.num', null, d.callCount),
          h('td.num', null, st.rate !== undefined ? `${num(st.rate)}/s` : '–'),
          h('td.num', null, st.rate ? `${num(((st.errors ?? 0) / st.rate) * 100)}%` : '–'),
          h('td.num', null, st.p95 !== undefined ? duration(st.p95 * 1e9) : '–'),
        );
      }),
    ),
  );
  fill(main, h('h1', null, 'Service map'), h('div.toolbar', null, select, h('span.hint', null, `${nodes.length} services, ${deps.length} edges, last ${range}`)), svg, table);
}

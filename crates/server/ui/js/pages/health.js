// @ts-check
// Service health (`/services/<name>`): RED charts from TraceQL metrics (rate, errors, p50/p95/
// p99 over time), top operations, and the slowest and failing traces.

import { get } from '../api.js';
import { h, fill, errorBox } from '../dom.js';
import { anyValue } from '../model.js';
import { duration, num, rangeSeconds, time } from '../format.js';
import { quote } from '../traceql.js';
import { instantBy } from '../metrics.js';
import { navigate } from '../session.js';

const SVG = 'http://www.w3.org/2000/svg';
const RANGES = ['15m', '1h', '6h', '24h'];

/** @param {string} tag @param {Record<string, any>} [attrs] @param {...(Node|string)} kids */
function s(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const k of kids) e.append(k);
  return e;
}

/**
 * A line chart of series; `fmt` formats the y values.
 * @param {string} title
 * @param {{ name: string, points: [number, number][] }[]} series
 * @param {(v: number) => string} fmt
 */
function chart(title, series, fmt) {
  const W = 400, H = 160, L = 56, B = 18;
  const all = series.flatMap((x) => x.points);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  if (!all.length) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'none in this range'));
  } else {
    const x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
    const y1 = Math.max(...all.map((p) => p[1]), 1e-12);
    const X = (/** @type {number} */ t) => L + ((t - x0) / Math.max(x1 - x0, 1)) * (W - L - 6);
    const Y = (/** @type {number} */ v) => H - B - (v / y1) * (H - B - 8);
    svg.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B }), s('line', { class: 'axis', x1: L, y1: 4, x2: L, y2: H - B }));
    svg.append(s('text', { x: L - 4, y: 12, 'text-anchor': 'end' }, fmt(y1)), s('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, fmt(0)));
    const hhmm = (/** @type {number} */ t) => new Date(t).toTimeString().slice(0, 5);
    svg.append(s('text', { x: L, y: H - 4 }, hhmm(x0)), s('text', { x: W - 4, y: H - 4, 'text-anchor': 'end' }, hhmm(x1)));
    series.forEach((ser, i) => svg.append(s('polyline', { class: `s${i}`, points: ser.points.map(([t, v]) => `${X(t).toFixed(1)},${Y(v).toFixed(1)}`).join(' ') })));
  }
  return h(
    'div.chart',
    { dataset: { chart: title } },
    h('h2', null, title),
    series.length > 1 ? h('div.keys', null, ...series.map((x, i) => h('span', null, h('span.chip', { style: { background: ['var(--accent)', 'var(--crit)', 'var(--err)'][i] } }), x.name))) : null,
    svg,
  );
}

/**
 * A range query's series as [ms, value] points, keyed by one label (or `__name__`).
 * @param {any} r @param {string} label
 */
function seriesOf(r, label) {
  return (r.series ?? []).map((/** @type {any} */ x) => {
    const l = (x.labels ?? []).find((/** @type {any} */ y) => y.key === label);
    return {
      name: l ? String(anyValue(l.value)) : '',
      points: (x.samples ?? []).map((/** @type {any} */ p) => /** @type {[number, number]} */ ([Number(p.timestampMs), Number(p.value ?? 0)])).filter((/** @type {[number, number]} */ p) => Number.isFinite(p[1])),
    };
  });
}

/**
 * @param {HTMLElement} main
 * @param {string[]} args
 * @param {URLSearchParams} params
 */
export async function render(main, [name], params) {
  const range = RANGES.includes(params.get('range') ?? '') ? /** @type {string} */ (params.get('range')) : '1h';
  const entry = params.get('spans') !== 'all';
  const secs = /** @type {number} */ (rangeSeconds(range));
  const end = Math.floor(Date.now() / 1000);
  const start = end - secs;
  const svc = `resource.service.name = ${quote(name)}`;
  // Entry spans (server, consumer) are the service's requests; all spans include its own calls.
  const base = entry ? `${svc} && (kind = server || kind = consumer)` : svc;
  const rangeSel = /** @type {HTMLSelectElement} */ (h('select', { 'aria-label': 'Time range' }, ...RANGES.map((r) => h('option', { value: r }, `Last ${r}`))));
  rangeSel.value = range;
  const spansSel = /** @type {HTMLSelectElement} */ (
    h('select', { 'aria-label': 'Spans' }, h('option', { value: 'entry' }, 'Server and consumer spans'), h('option', { value: 'all' }, 'All spans'))
  );
  spansSel.value = entry ? 'entry' : 'all';
  const go = () => navigate(`/services/${encodeURIComponent(name)}?range=${rangeSel.value}${spansSel.value === 'all' ? '&spans=all' : ''}`);
  rangeSel.addEventListener('change', go);
  spansSel.addEventListener('change', go);
  const charts = h('div.charts', null, h('p.hint', null, 'Loading…'));
  const ops = h('section');
  const slow = h('section');
  const failing = h('section');
  fill(
    main,
    h('h1', null, `Service ${name}`),
    h('div.toolbar', null, h('a', { href: '/services' }, '← Service map'), rangeSel, spansSel, h('a', { href: `/?${new URLSearchParams({ q: `{ ${svc} }`, range })}` }, 'Search its traces')),
    charts,
    h('div.charts', null, ops, h('div', null, slow, failing)),
  );

  const range_ = (/** @type {string} */ q) => get('/api/metrics/query_range', { q, start, end });
  try {
    const [rate, errors, lat] = await Promise.all([
      range_(`{ ${base} } | rate()`),
      range_(`{ ${base} && status = error } | rate()`),
      range_(`{ ${base} } | quantile_over_time(duration, .5, .95, .99)`),
    ]);
    const latSeries = seriesOf(lat, 'p').map((x) => ({ ...x, name: `p${Math.round(Number(x.name) * 100)}` }));
    fill(
      charts,
      chart('Rate', seriesOf(rate, '__name__').map((x) => ({ ...x, name: 'spans/s' })), (v) => `${num(v)}/s`),
      chart('Errors', seriesOf(errors, '__name__').map((x) => ({ ...x, name: 'errors/s' })), (v) => `${num(v)}/s`),
      chart('Latency', latSeries, (v) => duration(v * 1e9)),
    );
  } catch (e) {
    fill(charts, errorBox(e));
  }

  try {
    const [r, e, p95] = await Promise.all([
      instantBy(`{ ${base} } | rate() by (name)`, start, end, 'name'),
      instantBy(`{ ${base} && status = error } | rate() by (name)`, start, end, 'name'),
      instantBy(`{ ${base} } | quantile_over_time(duration, .95) by (name)`, start, end, 'name'),
    ]);
    const rows = [...r.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
    fill(
      ops,
      h('h2', null, 'Top operations'),
      rows.length
        ? h(
            'table.ops',
            null,
            h('thead', null, h('tr', null, ...['Operation', 'Rate', 'Error rate', 'p95'].map((c) => h('th', { scope: 'col' }, c)))),
            h(
              'tbody',
              null,
              ...rows.map(([op, v]) =>
                h(
                  'tr',
                  { dataset: { operation: op } },
                  h('td', null, h('a', { href: `/?${new URLSearchParams({ q: `{ ${svc} && name = ${quote(op)} }`, range })}` }, op)),
                  h('td.num', null, `${num(v)}/s`),
                  h('td.num', null, `${num(((e.get(op) ?? 0) / v) * 100)}%`),
                  h('td.num', null, p95.has(op) ? duration((p95.get(op) ?? 0) * 1e9) : '–'),
                ),
              ),
            ),
          )
        : h('p.hint', null, 'No operations in this range.'),
    );
    // The slowest: traces with a span of the service near or above its p95. Quantiles come
    // from power-of-two buckets, so the bound is halved (one bucket down) to be sure the
    // slowest spans are inside it; the search's answers are then sorted by duration.
    const overall = await instantBy(`{ ${base} } | quantile_over_time(duration, .95) by (resource.service.name)`, start, end, 'resource.service.name');
    const threshold = overall.get(name);
    const slowQ = threshold ? `{ ${base} && duration >= ${Math.floor(threshold * 5e5)}us }` : `{ ${base} }`;
    await traceList(slow, 'Slowest traces', slowQ, start, end, true);
  } catch (e) {
    fill(ops, errorBox(e));
  }
  await traceList(failing, 'Failing traces', `{ ${svc} && status = error }`, start, end, false);
}

/**
 * @param {HTMLElement} into @param {string} title @param {string} q
 * @param {number} start @param {number} end @param {boolean} byDuration
 */
async function traceList(into, title, q, start, end, byDuration) {
  try {
    const r = await get('/api/search', { q, start, end, limit: 50, spss: 1 });
    const traces = [...(r.traces ?? [])];
    if (byDuration) traces.sort((a, b) => (b.durationMs ?? 0) - (a.durationMs ?? 0));
    fill(
      into,
      h('h2', null, title),
      traces.length
        ? h(
            'ul.tracelist',
            { dataset: { list: title } },
            ...traces.slice(0, 10).map((t) => {
              const id = String(t.traceID ?? '').padStart(32, '0');
              return h('li', null, h('a', { href: `/trace/${id}` }, `${t.rootServiceName ?? '?'}: ${t.rootTraceName ?? '?'}`), ` ${duration((t.durationMs ?? 0) * 1e6)} · ${time(t.startTimeUnixNano ?? 0)}`);
            }),
          )
        : h('p.hint', null, 'None in this range.'),
      h('a', { href: `/?${new URLSearchParams({ q })}` }, 'Open as a search'),
    );
  } catch (e) {
    fill(into, h('h2', null, title), errorBox(e));
  }
}

// @ts-check
// Compare (`/compare/<a>/<b>`): two traces aligned by service and operation along the tree
// (js/compare.js), with what is new, missing, slower or faster, and by how much.

import { get } from '../api.js';
import { h, fill, errorBox } from '../dom.js';
import { parseTrace } from '../model.js';
import { compareTraces, summarize } from '../compare.js';
import { duration, serviceColor } from '../format.js';

/** @param {number} delta @param {number} base */
function deltaText(delta, base) {
  if (delta === 0) return '0';
  const pct = base > 0 ? ` (${delta > 0 ? '+' : ''}${Math.round((delta / base) * 100)}%)` : '';
  return `${delta > 0 ? '+' : ''}${duration(delta)}${pct}`;
}

/**
 * @param {HTMLElement} main
 * @param {string[]} args
 */
export async function render(main, [idA, idB]) {
  fill(main, h('p.hint', null, 'Loading both traces…'));
  let a, b;
  try {
    [a, b] = await Promise.all([idA, idB].map((id) => get(`/api/v2/traces/${encodeURIComponent(id)}`).then(parseTrace)));
  } catch (e) {
    fill(main, h('h1', null, 'Compare traces'), errorBox(e));
    return;
  }
  const rows = compareTraces(a.roots, b.roots);
  const counts = { new: 0, missing: 0, slower: 0, faster: 0, same: 0 };
  for (const r of rows) counts[r.change]++;
  const only = /** @type {HTMLSelectElement} */ (
    h('select', { 'aria-label': 'Show' }, h('option', { value: 'all' }, 'All spans'), h('option', { value: 'changed' }, 'Changed only'))
  );
  const tbody = h('tbody');
  // Both traces on one time scale, so a slower span's bar is visibly longer in B.
  const scale = Math.max(a.duration, b.duration, 1);
  const bar = (/** @type {import('../compare.js').Node | null} */ n, /** @type {string} */ cls) =>
    n
      ? h(`div.cbar.${cls}`, { style: { left: `${(n.start / scale) * 100}%`, width: `${Math.max(((n.end - n.start) / scale) * 100, 0.2)}%`, background: serviceColor(n.service) } })
      : null;
  const paint = () => {
    fill(
      tbody,
      ...rows
        .filter((r) => only.value === 'all' || r.change !== 'same')
        .map((r) =>
          h(
            'tr',
            { class: `c-${r.change}`, dataset: { name: r.name, service: r.service, change: r.change, delta: String(r.delta) } },
            h(
              'td',
              null,
              h('span', { style: { paddingLeft: `${r.depth * 14}px` } }),
              h('span.chip', { style: { background: serviceColor(r.service) } }),
              h('span.svc', null, `${r.service} `),
              r.name,
            ),
            h('td.num', null, r.a ? duration(r.durationA) : '–'),
            h('td.num', null, r.b ? duration(r.durationB) : '–'),
            h('td.num', null, r.a && r.b ? deltaText(r.delta, r.durationA) : ''),
            h('td', null, h(`span.change.${r.change}`, null, r.change)),
            h('td.ctime', { 'aria-hidden': 'true' }, bar(r.a, 'a'), bar(r.b, 'b')),
          ),
        ),
    );
  };
  only.addEventListener('change', paint);
  paint();
  const summary = summarize(rows).filter((s) => s.totalA !== s.totalB || s.countA !== s.countB).slice(0, 10);
  const side = (/** @type {string} */ id, /** @type {import('../model.js').Trace} */ t) =>
    h('span', null, h('a.mono', { href: `/trace/${id}` }, id), ` ${t.roots[0]?.service}: ${t.roots[0]?.name} · ${duration(t.duration)} · ${t.spans.length} spans`);
  fill(
    main,
    h('h1', null, 'Compare traces'),
    h('div', null, h('strong', null, 'A '), side(idA, a)),
    h('div', null, h('strong', null, 'B '), side(idB, b)),
    h(
      'p',
      null,
      `B is ${deltaText(b.duration - a.duration, a.duration)} against A. `,
      `${counts.slower} slower, ${counts.faster} faster, ${counts.new} new, ${counts.missing} missing, ${counts.same} the same.`,
    ),
    summary.length
      ? h(
          'details',
          { open: true },
          h('summary', null, 'Most changed operations'),
          h(
            'table.summary',
            null,
            h('thead', null, h('tr', null, ...['Service', 'Operation', 'Count A', 'Count B', 'Total A', 'Total B', 'Δ'].map((c) => h('th', { scope: 'col' }, c)))),
            h(
              'tbody',
              null,
              ...summary.map((s) =>
                h('tr', null, h('td', null, s.service), h('td', null, s.name), h('td.num', null, s.countA), h('td.num', null, s.countB), h('td.num', null, duration(s.totalA)), h('td.num', null, duration(s.totalB)), h('td.num', null, deltaText(s.totalB - s.totalA, s.totalA))),
              ),
            ),
          ),
        )
      : null,
    h('div.toolbar', null, only),
    h(
      'table.compare',
      null,
      h('caption.visually-hidden', null, 'Spans of A and B aligned by service and operation'),
      h('thead', null, h('tr', null, ...['Span', 'A', 'B', 'B − A', 'Change', 'Timeline (A above, B below)'].map((c) => h('th', { scope: 'col' }, c)))),
      tbody,
    ),
  );
}

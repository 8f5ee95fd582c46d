// @ts-check
// Trace view (`/trace/<id>`): a virtualised waterfall (only the rows in view exist in the DOM,
// at a fixed row height, so 10K spans scroll smoothly), a collapsible tree, service colours,
// the critical path, a flame-graph mode, span details, and search/highlight by attribute.

import { get } from '../api.js';
import { h, fill, errorBox } from '../dom.js';
import { parseTrace, attr } from '../model.js';
import { criticalPath, selfTimeOnPath } from '../critical.js';
import { duration, time, serviceColor } from '../format.js';
import { flameGraph } from '../flame.js';
import { uiConfig, navigate } from '../session.js';

const ROW_H = 24;
const OVERSCAN = 10;

/** The trace-to-logs link of the configuration, or null. @param {string} traceId @param {string} spanId */
export function logsUrl(traceId, spanId) {
  const t = uiConfig.traceToLogsUrl;
  if (!t) return null;
  return t.replaceAll('${traceId}', encodeURIComponent(traceId)).replaceAll('${spanId}', encodeURIComponent(spanId));
}

/**
 * Which spans a highlight query matches: `key=value` matches an attribute (span, resource or
 * the intrinsics name/service/kind/status), anything else a substring of the name, service or
 * any attribute value.
 * @param {import('../model.js').Trace} trace
 * @param {string} text
 * @returns {Set<string> | null}
 */
export function findSpans(trace, text) {
  const t = text.trim();
  if (!t) return null;
  const out = new Set();
  const kv = /^([^=]+?)\s*=\s*(.*)$/.exec(t);
  for (const s of trace.spans) {
    let ok;
    if (kv) {
      const key = kv[1].trim().replace(/^(span|resource)?\./, '');
      const want = kv[2].trim().replace(/^"(.*)"$/, '$1');
      const intrinsic = { name: s.name, service: s.service, kind: s.kind, status: s.status, 'service.name': s.service }[key];
      const v = intrinsic ?? attr(s, key);
      ok = v !== undefined && String(v) === want;
    } else {
      const low = t.toLowerCase();
      ok =
        s.name.toLowerCase().includes(low) ||
        s.service.toLowerCase().includes(low) ||
        s.id === low ||
        s.attributes.some((a) => String(a.value).toLowerCase().includes(low));
    }
    if (ok) out.add(s.id);
  }
  return out;
}

/**
 * @param {HTMLElement} main
 * @param {string[]} args
 * @param {URLSearchParams} params
 */
export async function render(main, [id], params) {
  fill(main, h('p.hint', null, `Loading trace ${id}…`));
  const ac = new AbortController();
  let json;
  try {
    json = await get(`/api/v2/traces/${encodeURIComponent(id)}`, {}, { signal: ac.signal });
  } catch (e) {
    fill(main, h('h1', null, `Trace ${id}`), errorBox(e));
    return;
  }
  const trace = parseTrace(json);
  if (!trace.spans.length) {
    fill(main, h('h1', null, `Trace ${id}`), errorBox('the trace has no spans'));
    return;
  }
  return view(main, trace, id, params);
}

/**
 * @param {HTMLElement} main
 * @param {import('../model.js').Trace} trace
 * @param {string} id
 * @param {URLSearchParams} params
 */
export function view(main, trace, id, params) {
  for (const svc of trace.services) serviceColor(svc);
  const path = criticalPath(trace.roots);
  const onPath = selfTimeOnPath(path);
  const root = trace.roots[0];
  const traceId = trace.traceId || id;
  /** @type {Set<string>} */
  const collapsed = new Set();
  let selected = params.get('span') ?? '';
  let showCritical = true;
  /** @type {Set<string> | null} */
  let matches = null;
  let mode = params.get('view') === 'flame' ? 'flame' : 'waterfall';

  // --- the visible rows: tree order minus collapsed subtrees
  /** @type {import('../model.js').Span[]} */
  let visible = [];
  const recompute = () => {
    visible = [];
    let skipDepth = Infinity;
    for (const s of trace.spans) {
      if (s.depth > skipDepth) continue;
      skipDepth = Infinity;
      visible.push(s);
      if (collapsed.has(s.id)) skipDepth = s.depth;
    }
    spacer.style.height = `${visible.length * ROW_H}px`;
  };

  const total = Math.max(trace.duration, 1);
  const scroller = h('div.waterfall', { tabindex: 0, role: 'tree', 'aria-label': 'Spans (arrow keys move, left/right collapse and expand, Enter shows details)' });
  const spacer = h('div.spacer');
  scroller.appendChild(spacer);
  const details = h('aside.details', { 'aria-label': 'Span details' });
  const flameCanvas = /** @type {HTMLCanvasElement} */ (h('canvas.flame', { role: 'img', 'aria-label': 'Flame graph of the trace' }));

  /** One waterfall row. @param {import('../model.js').Span} s @param {number} i */
  const row = (s, i) => {
    const hasKids = s.children.length > 0;
    const left = (s.start / total) * 100;
    const width = Math.max((s.duration / total) * 100, 0.1);
    const crit = showCritical && path.ids.has(s.id);
    const e = h(
      'div.row',
      {
        role: 'treeitem',
        'aria-level': s.depth + 1,
        'aria-selected': String(s.id === selected),
        'aria-expanded': hasKids ? String(!collapsed.has(s.id)) : undefined,
        dataset: { spanId: s.id, depth: String(s.depth), parentId: s.parent ? s.parent.id : '', name: s.name, critical: String(crit) },
        style: { top: `${i * ROW_H}px` },
        onclick: () => select(s.id),
      },
      h(
        'div.name',
        { style: { paddingLeft: `${s.depth * 14}px` }, title: `${s.service}: ${s.name}` },
        h('span.toggle', { onclick: (/** @type {Event} */ ev) => (ev.stopPropagation(), toggle(s.id)) }, hasKids ? (collapsed.has(s.id) ? '▸' : '▾') : ''),
        h('span.chip', { style: { background: serviceColor(s.service) } }),
        h('span.svc', null, s.service),
        h('span.span-name', null, s.name),
        s.orphan ? h('span.hint', { title: 'its parent span is not in this trace' }, ' (orphan)') : null,
        crit ? h('span.crit-mark', { title: `on the critical path for ${duration(onPath.get(s.id) ?? 0)}` }, '◆') : null,
      ),
      h(
        'div.timeline',
        null,
        h('div.bar', { style: { left: `${left}%`, width: `${width}%`, background: serviceColor(s.service) } }),
        h('span.label', { style: left + width > 80 ? { right: `calc(${100 - left}% + 4px)` } : { left: `calc(${left + width}% + 4px)` } }, duration(s.duration)),
      ),
    );
    if (s.status === 'error') e.classList.add('has-error');
    if (crit) e.classList.add('critical');
    if (matches) e.classList.add(matches.has(s.id) ? 'match' : 'dim');
    return e;
  };

  let drawn = { from: -1, to: -1 };
  const paint = (force = false) => {
    const from = Math.max(0, Math.floor(scroller.scrollTop / ROW_H) - OVERSCAN);
    const to = Math.min(visible.length, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW_H) + OVERSCAN);
    if (!force && from === drawn.from && to === drawn.to) return;
    drawn = { from, to };
    const rows = [];
    for (let i = from; i < to; i++) rows.push(row(visible[i], i));
    spacer.replaceChildren(...rows);
  };
  let frame = 0;
  scroller.addEventListener('scroll', () => {
    if (!frame) frame = requestAnimationFrame(() => ((frame = 0), paint()));
  });

  const toggle = (/** @type {string} */ sid) => {
    if (collapsed.has(sid)) collapsed.delete(sid);
    else collapsed.add(sid);
    recompute();
    paint(true);
  };

  const select = (/** @type {string} */ sid, scroll = false) => {
    selected = sid;
    const s = trace.byId.get(sid);
    const u = new URL(location.href);
    u.searchParams.set('span', sid);
    history.replaceState(null, '', u);
    if (s && scroll) {
      // Expand the ancestors, so the row exists.
      for (let p = s.parent; p; p = p.parent) collapsed.delete(p.id);
      recompute();
      const i = visible.indexOf(s);
      if (i * ROW_H < scroller.scrollTop || (i + 1) * ROW_H > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = i * ROW_H - scroller.clientHeight / 2;
    }
    paint(true);
    if (flame) flame.draw();
    showDetails(s);
  };

  /** @param {import('../model.js').Attr[]} list */
  const attrTable = (list) =>
    list.length
      ? h('table', null, h('tbody', null, ...list.map((a) => h('tr', null, h('td', null, a.key), h('td.mono', null, typeof a.value === 'object' ? JSON.stringify(a.value) : String(a.value))))))
      : h('p.hint', null, 'none');

  /** @param {import('../model.js').Span | undefined} s */
  const showDetails = (s) => {
    if (!s) {
      fill(details, h('p.hint', null, 'Select a span to see its details.'));
      return;
    }
    const logs = logsUrl(traceId, s.id);
    fill(
      details,
      h('h2', null, s.name),
      h(
        'table',
        null,
        h(
          'tbody',
          null,
          ...[
            ['Service', s.service],
            ['Kind', s.kind],
            ['Status', s.status + (s.statusMessage ? `: ${s.statusMessage}` : '')],
            ['Start', `${duration(s.start)} after the trace's start (${time(s.startUnixNano)})`],
            ['Duration', duration(s.duration)],
            ['Critical path', path.ids.has(s.id) ? `yes, ${duration(onPath.get(s.id) ?? 0)} of its own time` : 'no'],
            ['Span ID', s.id],
            ['Parent', s.parentId ? (s.parent ? s.parentId : `${s.parentId} (not in this trace)`) : '–'],
          ].map(([k, v]) => h('tr', null, h('td', null, k), h('td', null, v))),
        ),
      ),
      logs ? h('p', null, h('a', { href: logs, target: '_blank', rel: 'noopener' }, 'Logs for this span')) : null,
      h('h3', null, 'Span attributes'),
      attrTable(s.attributes),
      h('h3', null, 'Resource'),
      attrTable(s.resource),
      h('h3', null, `Scope ${s.scope.name}${s.scope.version ? ` ${s.scope.version}` : ''}`),
      attrTable(s.scope.attributes),
      h('h3', null, `Events (${s.events.length})`),
      ...s.events.map((ev) => h('div.event', null, h('strong', null, `${duration(ev.time - s.start)} `), ev.name, attrTable(ev.attributes))),
      h('h3', null, `Links (${s.links.length})`),
      ...s.links.map((l) => h('div.link', null, h('a', { href: `/trace/${l.traceId}${l.spanId ? `?span=${l.spanId}` : ''}` }, `trace ${l.traceId}`), attrTable(l.attributes))),
    );
  };

  // --- keyboard: the waterfall is one tab stop; arrows move the selection
  scroller.addEventListener('keydown', (ev) => {
    const i = Math.max(0, visible.findIndex((s) => s.id === selected));
    const s = visible[i];
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      const next = visible[Math.min(visible.length - 1, Math.max(0, i + (ev.key === 'ArrowDown' ? 1 : -1)))];
      if (next) select(next.id, true);
    } else if (ev.key === 'ArrowLeft' && s) {
      if (s.children.length && !collapsed.has(s.id)) toggle(s.id);
      else if (s.parent) select(s.parent.id, true);
    } else if (ev.key === 'ArrowRight' && s && collapsed.has(s.id)) toggle(s.id);
    else if (ev.key === 'Home' && visible[0]) select(visible[0].id, true);
    else if (ev.key === 'End' && visible.length) select(visible[visible.length - 1].id, true);
    else return;
    ev.preventDefault();
  });

  // --- toolbar
  const findInput = /** @type {HTMLInputElement} */ (h('input', { type: 'search', placeholder: 'Find spans: text or key=value', 'aria-label': 'Find spans', size: 32 }));
  const findCount = h('span.hint');
  findInput.addEventListener('input', () => {
    matches = findSpans(trace, findInput.value);
    findCount.textContent = matches ? `${matches.size} match${matches.size === 1 ? '' : 'es'}` : '';
    paint(true);
    if (flame) flame.draw();
  });
  findInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && matches && matches.size) {
      const order = trace.spans.filter((s) => matches?.has(s.id));
      const at = order.findIndex((s) => s.id === selected);
      select(order[(at + 1) % order.length].id, true);
    }
  });
  const critToggle = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', checked: true }));
  critToggle.addEventListener('change', () => {
    showCritical = critToggle.checked;
    paint(true);
  });
  const modeButtons = ['waterfall', 'flame'].map((m) =>
    h('button', { type: 'button', 'aria-pressed': String(mode === m), onclick: () => setMode(m) }, m === 'flame' ? 'Flame graph' : 'Waterfall'),
  );
  /** @type {{ draw: () => void, destroy: () => void } | null} */
  let flame = null;
  const body = h('div.trace-body');
  const setMode = (/** @type {string} */ m) => {
    mode = m;
    for (const b of modeButtons) b.setAttribute('aria-pressed', String(b.textContent === (m === 'flame' ? 'Flame graph' : 'Waterfall')));
    const u = new URL(location.href);
    if (m === 'flame') u.searchParams.set('view', 'flame');
    else u.searchParams.delete('view');
    history.replaceState(null, '', u);
    if (m === 'flame') {
      fill(body, flameCanvas, details);
      if (!flame) flame = flameGraph(flameCanvas, trace, { critical: path.ids, onSelect: (sid) => select(sid), selected: () => selected, matches: () => matches });
      flame.draw();
    } else {
      fill(body, h('div', null, ruler(), scroller), details);
      paint(true);
    }
  };
  const compareInput = /** @type {HTMLInputElement} */ (h('input', { placeholder: 'other trace ID', 'aria-label': 'Compare with trace ID', size: 34 }));
  const compareForm = h(
    'form',
    { onsubmit: (/** @type {Event} */ ev) => (ev.preventDefault(), compareInput.value.trim() && navigate(`/compare/${traceId}/${compareInput.value.trim()}`)) },
    compareInput,
    h('button', { type: 'submit' }, 'Compare'),
  );

  const ruler = () =>
    h(
      'div.ruler',
      null,
      h('span', null, 'Span'),
      h('div.ticks', null, ...[0, 0.25, 0.5, 0.75, 1].map((f) => h('span', { style: { left: `${f * 100}%`, transform: f === 1 ? 'translateX(-100%)' : f === 0 ? 'none' : undefined } }, duration(f * total)))),
    );

  const errors = trace.spans.filter((s) => s.status === 'error').length;
  const logs = logsUrl(traceId, '');
  fill(
    main,
    h(
      'div.trace-head',
      null,
      h('h1', null, `${root.service}: ${root.name}`),
      h('span.mono', null, traceId),
      h('span', null, `${duration(trace.duration)} · ${trace.spans.length} spans · ${trace.services.length} services`),
      errors ? h('span.err', null, `${errors} error${errors === 1 ? '' : 's'}`) : null,
      h('span', null, time(trace.startUnixNano)),
      logs ? h('a', { href: logs, target: '_blank', rel: 'noopener' }, 'Logs for this trace') : null,
    ),
    h('div.legend', null, ...trace.services.map((svc) => h('span', null, h('span.chip', { style: { background: serviceColor(svc) } }), svc))),
    h(
      'div.toolbar',
      null,
      h('div.modes', { role: 'group', 'aria-label': 'View' }, ...modeButtons),
      findInput,
      findCount,
      h('label', null, critToggle, ' Critical path'),
      h('button', { type: 'button', onclick: () => (collapsed.clear(), recompute(), paint(true)) }, 'Expand all'),
      h('button', { type: 'button', onclick: () => (trace.spans.forEach((s) => s.children.length && s.depth >= 1 && collapsed.add(s.id)), recompute(), paint(true)) }, 'Collapse'),
      compareForm,
    ),
    body,
  );
  recompute();
  setMode(mode);
  if (selected && trace.byId.has(selected)) select(selected, true);
  else showDetails(undefined);
  const onTheme = () => paint(true);
  window.addEventListener('spoor:theme', onTheme);
  return () => {
    window.removeEventListener('spoor:theme', onTheme);
    if (flame) flame.destroy();
  };
}

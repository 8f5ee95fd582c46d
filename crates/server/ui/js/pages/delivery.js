// @ts-check
// Delivery (`/delivery?environment=&service=&range=30d`): the four DORA figures and their
// levels (`/api/dora`), the same per service (`by=service`), and a timeline of the window's
// deployments (`/api/dora/deployments`): marks by time coloured and shaped by outcome, each
// with its lead time back to its change, the incidents as spans of time, and a deployment's
// details with its change-failure hints and a link to its pipeline's trace. A table lists the
// same deployments for screen readers. The computation is in ../delivery.js.

import { get } from '../api.js';
import { h, fill, errorBox } from '../dom.js';
import { navigate } from '../session.js';
import * as D from '../delivery.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 1000;

/** An SVG element. @param {string} tag @param {Record<string, any>} [attrs] @param {...(Node|string)} kids */
function s(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  for (const k of kids) e.append(k);
  return e;
}

/** A mark's shape: outcome is told by shape as well as colour, for those who cannot tell the colours apart. @param {string} kind @param {number} x @param {number} y */
function shape(kind, x, y) {
  if (kind === 'failed') return s('path', { class: 'shape', d: `M${x} ${y - 7}L${x + 7} ${y}L${x} ${y + 7}L${x - 7} ${y}Z` });
  if (kind === 'incident') return s('path', { class: 'shape', d: `M${x} ${y - 8}L${x + 7} ${y + 6}L${x - 7} ${y + 6}Z` });
  return s('circle', { class: 'shape', cx: x, cy: y, r: 5.5 });
}

/** @param {string} level @param {string} [label] */
function badge(level, label) {
  return h(`span.level.${level || 'none'}`, { dataset: { level: level || '' } }, label ?? D.levelText(level));
}

/**
 * @param {HTMLElement} main
 * @param {string[]} _args
 * @param {URLSearchParams} params
 */
export async function render(main, _args, params) {
  const { range, start, end } = D.timeWindow(params.get('range'), Date.now() / 1000);
  const environment = params.get('environment') ?? '';
  const service = params.get('service') ?? '';
  const filter = { environment, service, start, end };

  const rangeSel = /** @type {HTMLSelectElement} */ (h('select', { 'aria-label': 'Time range' }, ...D.RANGES.map((r) => h('option', { value: r }, `Last ${r}`))));
  rangeSel.value = range;
  const envSel = /** @type {HTMLSelectElement} */ (h('select', { 'aria-label': 'Environment' }, h('option', { value: '' }, 'All environments')));
  const svcSel = /** @type {HTMLSelectElement} */ (h('select', { 'aria-label': 'Service' }, h('option', { value: '' }, 'All services')));
  const go = () => {
    const q = new URLSearchParams();
    if (envSel.value) q.set('environment', envSel.value);
    if (svcSel.value) q.set('service', svcSel.value);
    q.set('range', rangeSel.value);
    navigate(`/delivery?${q}`);
  };
  for (const sel of [rangeSel, envSel, svcSel]) sel.addEventListener('change', go);

  const figures = h('section.dora-figures', { 'aria-label': 'DORA figures' }, h('p.hint', null, 'Loading…'));
  const timeline = h('section.delivery-timeline', null, h('h2', null, 'Deployments'));
  const details = h('aside.deploy-details', { 'aria-live': 'polite', hidden: true });
  const list = h('section');
  const perService = h('section');
  fill(
    main,
    h('h1', null, 'Delivery'),
    h('div.toolbar', { dataset: { start: String(start), end: String(end) } }, envSel, svcSel, rangeSel),
    figures,
    timeline,
    details,
    list,
    perService,
  );

  // The pickers' lists: every environment and service of the window, whatever is picked now
  // (the API has no list of its own); hints are left out, they are not needed for names.
  get('/api/dora/deployments', { start, end, hints: 'false' })
    .then((all) => {
      const { environments, services } = D.choices(all.deployments ?? [], all.incidents ?? []);
      // A value from the URL that is not (or no longer) in the data stays pickable.
      if (environment && !environments.includes(environment)) environments.push(environment);
      if (service && !services.includes(service)) services.push(service);
      envSel.append(...environments.map((e) => h('option', { value: e }, e)));
      svcSel.append(...services.map((x) => h('option', { value: x }, x)));
      envSel.value = environment;
      svcSel.value = service;
    })
    .catch(() => {
      // Left with "all"; the sections below show the API's error.
    });

  const [summary, listing, byService] = await Promise.allSettled([
    get('/api/dora', filter),
    get('/api/dora/deployments', filter),
    get('/api/dora', { ...filter, by: 'service' }),
  ]);

  if (summary.status === 'fulfilled') {
    fill(
      figures,
      ...D.figureCards(summary.value).map((c) =>
        h(
          'div.dora-figure',
          { dataset: { figure: c.key, value: c.value === null ? '' : String(c.value), level: c.level ?? '' } },
          h('h2', null, c.title),
          h('div.figure-value', null, c.text),
          badge(c.level ?? ''),
          h('div.hint', null, c.detail),
        ),
      ),
    );
  } else fill(figures, errorBox(summary.reason));

  if (listing.status === 'fulfilled') {
    /** @type {D.Deployment[]} */
    const deployments = listing.value.deployments ?? [];
    /** @type {D.Incident[]} */
    const incidents = listing.value.incidents ?? [];
    drawTimeline(timeline, details, deployments, incidents, start, end);
    fill(list, ...tables(deployments, incidents, (i) => show(details, deployments, i, timeline)));
  } else fill(timeline, h('h2', null, 'Deployments'), errorBox(listing.reason));

  if (byService.status === 'fulfilled') fill(perService, serviceTable(byService.value.services ?? []));
  else fill(perService, h('h2', null, 'By service'), errorBox(byService.reason));
}

/**
 * @param {HTMLElement} into @param {HTMLElement} details
 * @param {D.Deployment[]} deployments @param {D.Incident[]} incidents @param {number} start @param {number} end
 */
function drawTimeline(into, details, deployments, incidents, start, end) {
  const L = D.layout(deployments, incidents, { start, end, width: WIDTH, fit: true });
  const svg = s('svg', { class: 'timeline', viewBox: `0 0 ${WIDTH} ${L.height}`, role: 'group', 'aria-label': `Timeline: ${deployments.length} deployments and ${incidents.length} incidents; arrow keys move between deployments, Enter shows one` });
  for (const lane of L.lanes) {
    svg.append(s('line', { class: 'lane', x1: 120, y1: lane.y, x2: WIDTH - 16, y2: lane.y }), s('text', { class: 'lane-label', x: 112, y: lane.y + 4, 'text-anchor': 'end' }, lane.service));
  }
  if (L.incidentLanes.length) svg.append(s('text', { class: 'lane-label', x: 112, y: L.incidentLanes[0] + 4, 'text-anchor': 'end' }, 'incidents'));
  svg.append(s('line', { class: 'axis', x1: 120, y1: L.axisY, x2: WIDTH - 16, y2: L.axisY }));
  for (const t of L.ticks) {
    svg.append(s('line', { class: 'tick', x1: t.x, y1: 0, x2: t.x, y2: L.axisY }), s('text', { class: 'tick-label', x: t.x, y: L.axisY + 14, 'text-anchor': 'middle' }, t.label));
  }
  for (const b of L.bars) {
    const inc = incidents[b.index];
    svg.append(
      s(
        'g',
        { class: 'incident', 'data-incident': inc.incident_id },
        s('title', {}, `Incident ${inc.incident_id} (${inc.service || 'no service'}, ${inc.environment || 'no environment'}): ${D.when(inc.start)} → ${D.when(inc.end)}, ${D.seconds(inc.duration_seconds)}${inc.cause_deployment_id ? `; caused by ${inc.cause_deployment_id}` : ''}`),
        s('rect', { x: b.x0, y: b.y, width: b.x1 - b.x0, height: b.h, rx: 2 }),
        s('text', { x: b.labelX, y: b.y + b.h - 5, 'text-anchor': b.labelAnchor }, inc.incident_id),
      ),
    );
  }
  /** @type {SVGGElement[]} */
  const gs = [];
  for (const m of L.marks) {
    const d = deployments[m.index];
    const label = `${d.service} ${d.revision ? d.revision.slice(0, 12) : ''} to ${d.environment}, ${D.kindText(m.kind)}, ${D.when(d.time)}, lead time ${D.seconds(d.lead_time_seconds)}`;
    const g = /** @type {SVGGElement} */ (
      s('g', { class: `deploy ${m.kind}`, tabindex: gs.length === 0 ? 0 : -1, role: 'button', 'aria-label': label, 'data-index': m.index, 'data-kind': m.kind, 'data-trace-id': d.trace_id, 'data-environment': d.environment, 'data-service': d.service })
    );
    if (m.leadX !== null) g.append(s('line', { class: 'lead', x1: m.leadX, y1: m.y, x2: m.x, y2: m.y }), s('line', { class: 'lead', x1: m.leadX, y1: m.y - 4, x2: m.leadX, y2: m.y + 4 }));
    g.append(s('title', {}, label), shape(m.kind, m.x, m.y));
    gs.push(g);
    svg.append(g);
  }
  // One tab stop for the whole timeline (roving tabindex); the arrows move along it in time.
  const focus = (/** @type {number} */ i) => {
    gs.forEach((g, j) => g.setAttribute('tabindex', j === i ? '0' : '-1'));
    gs[i].focus();
  };
  gs.forEach((g, i) => {
    const open = () => {
      focus(i);
      show(details, deployments, Number(g.dataset.index), into);
    };
    g.addEventListener('click', open);
    g.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        open();
        return;
      }
      const to = D.step(ev.key, i, gs.length);
      if (to !== null) {
        ev.preventDefault();
        focus(to);
      }
    });
  });
  const legend = h(
    'div.legend',
    null,
    h('span', null, h('span.key.ok'), 'succeeded'),
    h('span', null, h('span.key.failed'), 'failed'),
    h('span', null, h('span.key.incident'), 'caused an incident'),
    h('span', null, h('span.key.lead'), 'lead time (change → deployment)'),
    h('span', null, h('span.key.incident-bar'), 'incident (opened → resolved)'),
    h('span.hint', null, `From ${D.when(L.start)} to ${D.when(L.end)}, around the window's events.`),
  );
  fill(into, h('h2', null, 'Deployments'), legend, deployments.length || incidents.length ? svg : h('p.hint', null, 'No deployments or incidents in this window.'));
}

/**
 * A deployment's details, with the hints before and after and the change highlighted.
 * @param {HTMLElement} details @param {D.Deployment[]} deployments @param {number} index @param {HTMLElement} timeline
 */
function show(details, deployments, index, timeline) {
  const d = deployments[index];
  for (const g of timeline.querySelectorAll('g.deploy')) g.classList.toggle('selected', g.getAttribute('data-index') === String(index));
  const kind = D.markKind(d);
  const rows = /** @type {[string, any][]} */ ([
    ['Service', d.service || '–'],
    ['Revision', h('span.mono', null, d.revision || '–')],
    ['Environment', d.environment],
    ['Outcome', h(`span.outcome.${kind}`, null, D.kindText(kind))],
    ['Deployed', D.when(d.time)],
    ['Lead time', d.lead_time_seconds === null ? 'unknown (the pipeline’s root span has not arrived)' : `${D.seconds(d.lead_time_seconds)} (change at ${D.when(d.change_time)})`],
    ['Branch', d.branch || '–'],
    ['Pipeline', [d.pipeline, d.run_id && `run ${d.run_id}`, d.result && `result ${d.result}`].filter(Boolean).join(', ') || '–'],
    ['Deployment ID', d.deployment_id || '–'],
    ['Incidents it caused', d.caused_incidents.length ? d.caused_incidents.join(', ') : 'none'],
  ]);
  const hints = D.hintRows(d.hints);
  fill(
    details,
    h('h2', null, `Deployment of ${d.service || 'unknown service'}`),
    h('table.kv', null, h('tbody', null, ...rows.map(([k, v]) => h('tr', null, h('th', { scope: 'row' }, k), h('td', null, v))))),
    h('h3', null, 'Change-failure hints (the hour before and after)'),
    hints
      ? h(
          'table.hints',
          null,
          h('thead', null, h('tr', null, ...['', 'Before', 'After', 'Change'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            null,
            ...hints.map((r) => h(`tr.${r.change}`, { dataset: { hint: r.key, change: r.change } }, h('th', { scope: 'row' }, r.title), h('td.num', null, r.before), h('td.num', null, r.after), h('td', null, r.key === 'spans' ? '' : r.change))),
          ),
        )
      : h('p.hint', null, 'No hints: only the newest deployments of a listing get them (dora.max_hinted_deployments).'),
    d.trace_id ? h('p', null, h('a.trace-link', { href: `/trace/${d.trace_id}` }, 'Open the pipeline’s trace')) : null,
    h('button', { type: 'button', onclick: () => (details.hidden = true) }, 'Close'),
  );
  details.hidden = false;
}

/**
 * The deployments and incidents as tables, the timeline's text equivalent.
 * @param {D.Deployment[]} deployments @param {D.Incident[]} incidents @param {(i: number) => void} open
 */
function tables(deployments, incidents, open) {
  const hintCell = (/** @type {D.Deployment} */ d, /** @type {'error_ratio' | 'p95_seconds'} */ key) => {
    const r = D.hintRows(d.hints)?.find((x) => x.key === key);
    return r ? h(`td.num.${r.change}`, null, `${r.before} → ${r.after}`) : h('td.num', null, '–');
  };
  const order = deployments.map((d, i) => ({ d, i })).sort((a, b) => b.d.time - a.d.time);
  return [
    h('h2', null, 'Deployment list'),
    deployments.length
      ? h(
          'table.deployments',
          null,
          h('thead', null, h('tr', null, ...['Time (UTC)', 'Service', 'Environment', 'Revision', 'Outcome', 'Lead time', 'Error ratio before → after', 'p95 before → after', 'Trace'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            null,
            ...order.map(({ d, i }) => {
              const kind = D.markKind(d);
              return h(
                'tr',
                { dataset: { kind, index: String(i) } },
                h('td', null, h('button.linkish', { type: 'button', onclick: () => open(i), 'aria-label': `Details of the deployment of ${d.service} at ${D.when(d.time)}` }, D.when(d.time))),
                h('td', null, d.service),
                h('td', null, d.environment),
                h('td.mono', null, d.revision ? d.revision.slice(0, 12) : '–'),
                h(`td.outcome.${kind}`, null, D.kindText(kind)),
                h('td.num', null, D.seconds(d.lead_time_seconds)),
                hintCell(d, 'error_ratio'),
                hintCell(d, 'p95_seconds'),
                h('td', null, d.trace_id ? h('a', { href: `/trace/${d.trace_id}` }, 'trace') : '–'),
              );
            }),
          ),
        )
      : h('p.hint', null, 'No deployments in this window.'),
    h('h2', null, 'Incidents'),
    incidents.length
      ? h(
          'table.incidents',
          null,
          h('thead', null, h('tr', null, ...['Incident', 'Service', 'Environment', 'Opened (UTC)', 'Resolved (UTC)', 'Time to restore', 'Caused by'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            null,
            ...incidents.map((inc) =>
              h(
                'tr',
                { dataset: { incident: inc.incident_id } },
                h('td', null, inc.trace_id ? h('a', { href: `/trace/${inc.trace_id}` }, inc.incident_id) : inc.incident_id),
                h('td', null, inc.service || '–'),
                h('td', null, inc.environment || '–'),
                h('td', null, D.when(inc.start)),
                h('td', null, D.when(inc.end)),
                h('td.num', null, D.seconds(inc.duration_seconds)),
                h('td', null, inc.cause_deployment_id || '–'),
              ),
            ),
          ),
        )
      : h('p.hint', null, 'No incidents resolved in this window.'),
  ];
}

/** The per-service figures of `by=service`. @param {D.Figures[]} services */
function serviceTable(services) {
  if (!services.length) return [h('h2', null, 'By service'), h('p.hint', null, 'No services with deployments or incidents in this window.')];
  return [
    h('h2', null, 'By service'),
    h(
      'table.dora-services',
      null,
      h('thead', null, h('tr', null, ...['Service', 'Deployments', 'Deployment frequency', 'Lead time', 'Change failure rate', 'Time to restore'].map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        null,
        ...services.map((f) => {
          const cards = D.figureCards(f);
          return h(
            'tr',
            { dataset: { service: f.service ?? '' } },
            h('td', null, h('a', { href: `/services/${encodeURIComponent(f.service ?? '')}` }, f.service ?? '')),
            h('td.num', null, `${f.deployments} (${f.failed_deployments} failed)`),
            ...cards.map((c) => h('td', { dataset: { figure: c.key } }, `${c.text} `, badge(c.level ?? ''))),
          );
        }),
      ),
    ),
  ];
}

// @ts-check
// Search (`/`): a TraceQL editor or a simple form that writes the TraceQL, a time range, and
// the results newest first. The URL holds the query (`/?q=...&start=&end=` or `&range=1h`), so
// every search is a link.

import { get } from '../api.js';
import { h, fill, errorBox } from '../dom.js';
import { traceqlEditor } from '../editor.js';
import { buildQuery } from '../traceql.js';
import { duration, time, rangeSeconds } from '../format.js';
import { navigate } from '../session.js';

const RANGES = ['15m', '1h', '6h', '24h', '7d'];

/** `datetime-local` value of unix seconds, local time. @param {number} s */
function localInput(s) {
  const d = new Date(s * 1000);
  const p = (/** @type {number} */ n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/**
 * @param {HTMLElement} main
 * @param {string[]} _args
 * @param {URLSearchParams} params
 */
export async function render(main, _args, params) {
  const q = params.get('q') ?? '{}';
  const startParam = Number(params.get('start'));
  const endParam = Number(params.get('end'));
  const custom = startParam > 0 && endParam > startParam;
  const range = params.get('range') && rangeSeconds(params.get('range') ?? '') ? /** @type {string} */ (params.get('range')) : '1h';
  const limit = Math.min(Math.max(Number(params.get('limit')) || 20, 1), 1000);
  const mode = params.get('mode') === 'form' ? 'form' : 'traceql';

  const rangeSelect = /** @type {HTMLSelectElement} */ (
    h('select', { 'aria-label': 'Time range' }, ...RANGES.map((r) => h('option', { value: r }, `Last ${r}`)), h('option', { value: 'custom' }, 'Custom…'))
  );
  rangeSelect.value = custom ? 'custom' : range;
  const from = /** @type {HTMLInputElement} */ (h('input', { type: 'datetime-local', 'aria-label': 'From' }));
  const to = /** @type {HTMLInputElement} */ (h('input', { type: 'datetime-local', 'aria-label': 'To' }));
  const now = Math.floor(Date.now() / 1000);
  from.value = localInput(custom ? startParam : now - (rangeSeconds(range) ?? 3600));
  to.value = localInput(custom ? endParam : now);
  const customBox = h('span.custom', { hidden: !custom }, from, ' – ', to);
  rangeSelect.addEventListener('change', () => (customBox.hidden = rangeSelect.value !== 'custom'));
  const limitInput = /** @type {HTMLInputElement} */ (h('input', { type: 'number', min: 1, max: 1000, value: limit, 'aria-label': 'Limit', class: 'narrow' }));

  /** The window as unix seconds. */
  const timeRange = () => {
    if (rangeSelect.value === 'custom') {
      const s = Math.floor(new Date(from.value).getTime() / 1000);
      const e = Math.floor(new Date(to.value).getTime() / 1000);
      return { start: s, end: e };
    }
    const e = Math.floor(Date.now() / 1000);
    return { start: e - (rangeSeconds(rangeSelect.value) ?? 3600), end: e };
  };

  const editor = traceqlEditor({ value: q, onSubmit: () => submit(), range: timeRange });
  const formError = h('div.form-error', { role: 'alert' });

  // The simple form: fields that write the TraceQL.
  const field = (/** @type {string} */ label, /** @type {string} */ name, /** @type {string} */ placeholder, list = '') =>
    h('label', null, label, h('input', { name, placeholder, list: list || undefined }));
  const services = h('datalist', { id: 'dl-services' });
  const operations = h('datalist', { id: 'dl-operations' });
  const form = /** @type {HTMLFormElement} */ (
    h(
      'form.simple',
      { hidden: mode !== 'form', onsubmit: (/** @type {Event} */ e) => (e.preventDefault(), submit()) },
      field('Service', 'service', 'any', 'dl-services'),
      field('Operation', 'operation', 'any', 'dl-operations'),
      field('Tags', 'tags', 'http.status_code=500 error=true'),
      field('Min duration', 'minDuration', '100ms'),
      field('Max duration', 'maxDuration', '5s'),
      services,
      operations,
      h('button', { type: 'submit' }, 'Write query & search'),
    )
  );
  const loadNames = async () => {
    const { start, end } = timeRange();
    for (const [tag, dl] of /** @type {[string, HTMLElement][]} */ ([['resource.service.name', services], ['name', operations]])) {
      try {
        const r = await get(`/api/v2/search/tag/${tag}/values`, { start, end });
        fill(dl, ...(r.tagValues ?? []).map((/** @type {{value: string}} */ v) => h('option', { value: v.value })));
      } catch {
        // Suggestions only: the form works without them.
      }
    }
  };
  if (mode === 'form') loadNames();

  const modeButtons = h(
    'div.modes',
    { role: 'group', 'aria-label': 'Query mode' },
    h('button', { type: 'button', 'aria-pressed': String(mode === 'traceql'), onclick: () => setMode('traceql') }, 'TraceQL'),
    h('button', { type: 'button', 'aria-pressed': String(mode === 'form'), onclick: () => setMode('form') }, 'Form'),
  );
  const setMode = (/** @type {string} */ m) => {
    form.hidden = m !== 'form';
    for (const b of modeButtons.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.textContent === (m === 'form' ? 'Form' : 'TraceQL')));
    if (m === 'form') loadNames();
  };

  const results = h('section.results', { 'aria-live': 'polite' });
  const compareButton = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', disabled: true }, 'Compare selected'));

  const submit = () => {
    formError.textContent = '';
    let query = editor.value();
    if (!form.hidden) {
      const data = new FormData(form);
      try {
        query = buildQuery(Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v)])));
      } catch (e) {
        formError.textContent = e instanceof Error ? e.message : String(e);
        return;
      }
      editor.set(query);
    }
    const u = new URLSearchParams({ q: query });
    if (rangeSelect.value === 'custom') {
      const { start, end } = timeRange();
      if (!(end > start)) {
        formError.textContent = 'the range must end after it starts';
        return;
      }
      u.set('start', String(start));
      u.set('end', String(end));
    } else u.set('range', rangeSelect.value);
    if (Number(limitInput.value) !== 20) u.set('limit', limitInput.value);
    if (!form.hidden) u.set('mode', 'form');
    navigate(`/?${u}`);
  };

  fill(
    main,
    h('h1.visually-hidden', null, 'Search traces'),
    h(
      'div.searchbar',
      null,
      modeButtons,
      editor.root,
      h('div.controls', null, rangeSelect, customBox, h('label', null, 'Limit ', limitInput), h('button.primary', { type: 'button', onclick: submit }, 'Search')),
    ),
    form,
    formError,
    h('div.toolbar', null, compareButton),
    results,
  );

  if (!params.has('q')) {
    fill(results, h('p.hint', null, 'Write a TraceQL query (Ctrl+Space suggests attributes and values) or use the form, then press Enter.'));
    return;
  }
  const { start, end } = custom ? { start: startParam, end: endParam } : timeRange();
  fill(results, h('p.hint', null, 'Searching…'));
  const ac = new AbortController();
  try {
    const r = await get('/api/search', { q, start, end, limit, spss: 3 }, { signal: ac.signal });
    showResults(results, r.traces ?? [], compareButton);
  } catch (e) {
    if (!(e instanceof DOMException)) fill(results, errorBox(e));
  }
  return () => ac.abort();
}

/** The matched spans a search returned for a trace, one per line, for the Matched cell's tooltip. @param {any} t */
function matchedSpans(t) {
  const lines = [];
  for (const set of t.spanSets ?? []) {
    for (const sp of set.spans ?? []) lines.push(`${sp.name ?? sp.spanID} (${duration(Number(sp.durationNanos ?? 0))})`);
  }
  return lines.join('\n');
}

/**
 * @param {HTMLElement} results
 * @param {any[]} traces
 * @param {HTMLButtonElement} compareButton
 */
function showResults(results, traces, compareButton) {
  const rows = traces
    .map((t) => {
      const stats = Object.values(t.serviceStats ?? {});
      const spans = stats.reduce((n, s) => n + (s.spanCount ?? 0), 0);
      const errors = stats.reduce((n, s) => n + (s.errorCount ?? 0), 0);
      const matched = (t.spanSets ?? []).reduce((n, s) => n + (s.matched ?? s.spans?.length ?? 0), 0);
      let start = 0n;
      try {
        start = BigInt(t.startTimeUnixNano ?? 0);
      } catch {
        // shown as 0
      }
      return { id: String(t.traceID ?? '').padStart(32, '0'), t, spans, errors, matched, start, durationNs: (t.durationMs ?? 0) * 1e6 };
    })
    .sort((a, b) => (b.start > a.start ? 1 : b.start < a.start ? -1 : 0));
  if (!rows.length) {
    fill(results, h('p.hint', null, 'No traces match in this range.'));
    return;
  }
  /** @type {Set<string>} */
  const chosen = new Set();
  compareButton.onclick = () => {
    const [a, b] = [...chosen];
    if (a && b) navigate(`/compare/${a}/${b}`);
  };
  const table = h(
    'table.traces',
    null,
    h('caption.visually-hidden', null, 'Matching traces, newest first'),
    h(
      'thead',
      null,
      h('tr', null, ...['', 'Root service', 'Root name', 'Start', 'Duration', 'Spans', 'Errors', 'Matched', 'Trace ID'].map((c) => h('th', { scope: 'col' }, c))),
    ),
    h(
      'tbody',
      null,
      ...rows.map((r) => {
        const check = /** @type {HTMLInputElement} */ (
          h('input', {
            type: 'checkbox',
            'aria-label': `Select ${r.id} for compare`,
            onchange: () => {
              if (check.checked) chosen.add(r.id);
              else chosen.delete(r.id);
              compareButton.disabled = chosen.size !== 2;
            },
          })
        );
        return h(
          'tr',
          { dataset: { traceId: r.id } },
          h('td', null, check),
          h('td', null, r.t.rootServiceName ?? '<root span not yet received>'),
          h('td', null, h('a', { href: `/trace/${r.id}` }, r.t.rootTraceName ?? '–')),
          h('td', null, time(r.start)),
          h('td.num', null, duration(r.durationNs)),
          h('td.num', null, r.spans || '–'),
          h('td', null, r.errors ? h('span.err', { title: `${r.errors} spans with status error` }, `✕ ${r.errors}`) : ''),
          h('td.num', { title: matchedSpans(r.t) }, r.matched),
          h('td.mono', null, h('a', { href: `/trace/${r.id}` }, r.id.slice(0, 16))),
        );
      }),
    ),
  );
  fill(results, h('p.count', null, `${rows.length} traces`), table);
}

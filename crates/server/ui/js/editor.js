// @ts-check
// The TraceQL editor: a textarea over a highlighted copy of its text (the textarea's own text
// is transparent, its caret is not), and an autocomplete list fed by the tag APIs.

import { h } from './dom.js';
import { completionContext, tokenize, INTRINSICS, quote } from './traceql.js';
import { get } from './api.js';

/**
 * @param {{ value: string, onSubmit: () => void, range: () => { start: number, end: number } }} opts
 * @returns {{ root: HTMLElement, input: HTMLTextAreaElement, value: () => string, set: (v: string) => void }}
 */
export function traceqlEditor(opts) {
  const highlight = h('pre.hl', { 'aria-hidden': 'true' });
  const input = /** @type {HTMLTextAreaElement} */ (
    h('textarea', { spellcheck: false, rows: 2, 'aria-label': 'TraceQL query', 'aria-autocomplete': 'list', 'aria-controls': 'ac-list', autocomplete: 'off' })
  );
  input.value = opts.value;
  const list = h('ul.ac', { id: 'ac-list', role: 'listbox', hidden: true });
  const root = h('div.editor', null, highlight, input, list);

  const paint = () => {
    highlight.replaceChildren(...tokenize(input.value).map((t) => (t.type === 'space' ? document.createTextNode(t.text) : h(`span.t-${t.type}`, null, t.text))), document.createTextNode('\n'));
    highlight.scrollTop = input.scrollTop;
  };
  paint();

  /** @type {{ label: string, insert: string }[]} */
  let items = [];
  let active = 0;
  /** @type {{ from: number } | null} */
  let ctx = null;
  let seq = 0;
  /** @type {Map<string, string[]>} */
  const cache = new Map();

  const cached = async (/** @type {string} */ key, /** @type {() => Promise<string[]>} */ load) => {
    if (!cache.has(key)) cache.set(key, await load());
    return /** @type {string[]} */ (cache.get(key));
  };

  const close = () => {
    list.hidden = true;
    items = [];
    input.removeAttribute('aria-activedescendant');
  };
  const show = () => {
    list.replaceChildren(
      ...items.map((it, i) =>
        h('li', { id: `ac-${i}`, role: 'option', 'aria-selected': String(i === active), onmousedown: (/** @type {Event} */ e) => (e.preventDefault(), accept(i)) }, it.label),
      ),
    );
    list.hidden = items.length === 0;
    if (items.length) input.setAttribute('aria-activedescendant', `ac-${active}`);
  };
  const accept = (/** @type {number} */ i) => {
    const it = items[i];
    if (!it || !ctx) return;
    const end = input.selectionStart;
    input.value = input.value.slice(0, ctx.from) + it.insert + input.value.slice(end);
    const pos = ctx.from + it.insert.length;
    input.setSelectionRange(pos, pos);
    close();
    paint();
  };

  const suggest = async () => {
    const mySeq = ++seq;
    const c = completionContext(input.value, input.selectionStart);
    if (!c) return close();
    const { start, end } = opts.range();
    let found = [];
    try {
      if (c.kind === 'tag') {
        const scopes = await cached(`tags:${start}`, async () => {
          const r = await get('/api/v2/search/tags', { start, end });
          const out = [];
          for (const s of r.scopes ?? []) {
            if (s.name === 'intrinsic') out.push(...(s.tags ?? []));
            else for (const t of s.tags ?? []) out.push(`${s.name}.${t}`);
          }
          return out;
        });
        const all = [...new Set([...scopes, ...INTRINSICS])];
        const p = c.prefix;
        found = all
          .flatMap((t) => {
            // `.foo` matches any scope's foo; a scoped prefix matches that scope.
            if (p.startsWith('.')) return t.includes('.') && !t.startsWith('.') ? [`.${t.slice(t.indexOf('.') + 1)}`] : [];
            return [t];
          })
          .filter((t, i, a) => a.indexOf(t) === i && t.startsWith(p) && t !== p)
          .slice(0, 50)
          .map((t) => ({ label: t, insert: t }));
      } else {
        const tag = c.tag;
        const values = await cached(`values:${tag}:${start}`, async () => {
          const r = await get(`/api/v2/search/tag/${encodeURIComponent(tag)}/values`, { start, end });
          return (r.tagValues ?? []).map((/** @type {{type: string, value: string}} */ v) => (v.type === 'string' ? quote(v.value) : v.value));
        });
        const p = c.quoted ? `"${c.prefix}` : c.prefix;
        found = values.filter((v) => v.startsWith(p) || v.startsWith(`"${p}`)).slice(0, 50).map((v) => ({ label: v, insert: v }));
      }
    } catch {
      found = [];
    }
    if (mySeq !== seq) return;
    ctx = c;
    items = found;
    active = 0;
    show();
  };

  input.addEventListener('input', () => {
    paint();
    suggest();
  });
  input.addEventListener('scroll', () => (highlight.scrollTop = input.scrollTop));
  input.addEventListener('blur', () => setTimeout(close, 100));
  input.addEventListener('keydown', (ev) => {
    if (!list.hidden && items.length) {
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        active = (active + (ev.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
        show();
        ev.preventDefault();
        return;
      }
      if (ev.key === 'Enter' || ev.key === 'Tab') {
        accept(active);
        ev.preventDefault();
        return;
      }
      if (ev.key === 'Escape') {
        close();
        ev.preventDefault();
        return;
      }
    }
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      close();
      opts.onSubmit();
    } else if (ev.key === ' ' && ev.ctrlKey) {
      ev.preventDefault();
      suggest();
    }
  });
  return {
    root,
    input,
    value: () => input.value,
    set: (v) => {
      input.value = v;
      paint();
    },
  };
}

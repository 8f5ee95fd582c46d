// @ts-check
// A tiny element builder: every text goes through textContent, so nothing from a trace (span
// names, attribute values) is ever parsed as HTML.

/**
 * @param {string} tag  `div.class1.class2`
 * @param {Record<string, any> | null} [props]
 * @param {...(Node | string | number | null | undefined | false | (Node|string)[])} children
 * @returns {HTMLElement}
 */
export function h(tag, props, ...children) {
  const [name, ...classes] = tag.split('.');
  const e = document.createElement(name || 'div');
  if (classes.length) e.className = classes.join(' ');
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(e.style, v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e && typeof v !== 'string') /** @type {any} */ (e)[k] = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

/** @param {Node} e @param {any[]} children */
function append(e, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(e, c);
    else e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's content. @param {Element} e @param {...any} children */
export function fill(e, ...children) {
  e.replaceChildren();
  append(e, children);
  return e;
}

/** A link the page's router handles without reloading. @param {string} href @param {...any} children */
export function link(href, ...children) {
  return h('a', { href }, ...children);
}

/** An error box. @param {unknown} err */
export function errorBox(err) {
  const msg = err instanceof Error ? err.message : String(err);
  return h('div.error', { role: 'alert' }, msg);
}

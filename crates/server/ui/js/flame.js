// @ts-check
// The flame graph: one canvas, spans as rectangles by time (x) and depth (y), coloured by
// service; critical-path spans outlined. A canvas draws 10K spans in one pass where 10K DOM
// nodes would not stay smooth.

import { serviceColor, duration } from './format.js';

const ROW = 18;

/**
 * The row of each span: below its parent, and further down while that row already holds a
 * span overlapping it in time (parallel siblings must not hide each other). Each row keeps its
 * spans' intervals sorted; they never overlap, so a binary search finds the neighbours.
 * @param {import('./model.js').Span[]} spans in tree order
 * @returns {Map<import('./model.js').Span, number>}
 */
export function flameRows(spans) {
  /** @type {Map<import('./model.js').Span, number>} */
  const row = new Map();
  /** @type {[number, number][][]} */
  const taken = [];
  const free = (/** @type {number} */ r, /** @type {number} */ s, /** @type {number} */ e) => {
    const list = taken[r] ?? [];
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid][0] < s) lo = mid + 1;
      else hi = mid;
    }
    const before = list[lo - 1];
    const after = list[lo];
    return { ok: !(before && before[1] > s) && !(after && after[0] < e), at: lo };
  };
  for (const s of spans) {
    let r = s.parent ? /** @type {number} */ (row.get(s.parent)) + 1 : 0;
    // A zero-length span still occupies a sliver, so it is not drawn over another.
    const end = Math.max(s.end, s.start + 1e-3);
    for (;;) {
      const f = free(r, s.start, end);
      if (f.ok) {
        (taken[r] ??= []).splice(f.at, 0, [s.start, end]);
        break;
      }
      r++;
    }
    row.set(s, r);
  }
  return row;
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {import('./model.js').Trace} trace
 * @param {{ critical: Set<string>, onSelect: (id: string) => void, selected: () => string, matches: () => Set<string> | null }} opts
 * @returns {{ draw: () => void, destroy: () => void }}
 */
export function flameGraph(canvas, trace, opts) {
  const tip = document.createElement('div');
  tip.className = 'tooltip';
  tip.hidden = true;
  document.body.appendChild(tip);
  const rows = flameRows(trace.spans);
  const maxDepth = Math.max(0, ...rows.values());
  const total = Math.max(trace.duration, 1);

  const draw = () => {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const hgt = Math.max(canvas.clientHeight, (maxDepth + 1) * ROW + 4);
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
    canvas.style.height = `${hgt}px`;
    const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, w, hgt);
    const styles = getComputedStyle(document.documentElement);
    const crit = styles.getPropertyValue('--crit').trim() || '#d97706';
    const fg = styles.getPropertyValue('--fg').trim() || '#000';
    const sel = opts.selected();
    const matches = opts.matches();
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    for (const s of trace.spans) {
      const x = (s.start / total) * w;
      const wd = Math.max((s.duration / total) * w, 1);
      const y = /** @type {number} */ (rows.get(s)) * ROW + 2;
      ctx.globalAlpha = matches && !matches.has(s.id) ? 0.3 : 1;
      ctx.fillStyle = serviceColor(s.service);
      ctx.fillRect(x, y, wd, ROW - 2);
      if (opts.critical.has(s.id) || s.id === sel) {
        ctx.strokeStyle = s.id === sel ? fg : crit;
        ctx.lineWidth = 2;
        ctx.strokeRect(x + 1, y + 1, Math.max(wd - 2, 1), ROW - 4);
      }
      if (wd > 40) {
        ctx.fillStyle = '#fff';
        ctx.save();
        ctx.beginPath();
        ctx.rect(x, y, wd, ROW - 2);
        ctx.clip();
        ctx.fillText(s.name, x + 3, y + ROW / 2 - 1);
        ctx.restore();
      }
    }
    ctx.globalAlpha = 1;
  };

  /** The span under a point, by depth then time. @param {MouseEvent} ev */
  const hit = (ev) => {
    const r = canvas.getBoundingClientRect();
    const depth = Math.floor((ev.clientY - r.top - 2) / ROW);
    const t = ((ev.clientX - r.left) / r.width) * total;
    const slack = (2 / r.width) * total;
    return trace.spans.find((s) => rows.get(s) === depth && s.start - slack <= t && t <= s.end + slack);
  };
  const move = (/** @type {MouseEvent} */ ev) => {
    const s = hit(ev);
    tip.hidden = !s;
    if (s) {
      tip.textContent = `${s.service}: ${s.name} (${duration(s.duration)})`;
      tip.style.left = `${ev.clientX + 12}px`;
      tip.style.top = `${ev.clientY + 12}px`;
    }
  };
  const click = (/** @type {MouseEvent} */ ev) => {
    const s = hit(ev);
    if (s) opts.onSelect(s.id);
  };
  const leave = () => (tip.hidden = true);
  canvas.addEventListener('mousemove', move);
  canvas.addEventListener('click', click);
  canvas.addEventListener('mouseleave', leave);
  const ro = new ResizeObserver(() => draw());
  ro.observe(canvas);
  window.addEventListener('spoor:theme', draw);
  return {
    draw,
    destroy: () => {
      ro.disconnect();
      window.removeEventListener('spoor:theme', draw);
      tip.remove();
    },
  };
}

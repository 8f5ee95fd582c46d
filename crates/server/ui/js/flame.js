// @ts-check
// The flame graph: one canvas, spans as rectangles by time (x) and depth (y), coloured by
// service; critical-path spans outlined. A canvas draws 10K spans in one pass where 10K DOM
// nodes would not stay smooth.

import { serviceColor, duration } from './format.js';

const ROW = 18;

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
  const maxDepth = trace.spans.reduce((m, s) => Math.max(m, s.depth), 0);
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
      const y = s.depth * ROW + 2;
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
    return trace.spans.find((s) => s.depth === depth && s.start - slack <= t && t <= s.end + slack);
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

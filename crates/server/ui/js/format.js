// @ts-check
// Numbers and times for people. Pure.

/** A duration in nanoseconds, short: 950ns, 12.3µs, 4.56ms, 1.2s, 3m 4s. @param {number} ns */
export function duration(ns) {
  if (!Number.isFinite(ns)) return '–';
  const a = Math.abs(ns);
  const sign = ns < 0 ? '-' : '';
  if (a < 1e3) return `${sign}${Math.round(a)}ns`;
  if (a < 1e6) return `${sign}${trim(a / 1e3)}µs`;
  if (a < 1e9) return `${sign}${trim(a / 1e6)}ms`;
  if (a < 60e9) return `${sign}${trim(a / 1e9)}s`;
  const m = Math.floor(a / 60e9);
  return `${sign}${m}m ${Math.round((a - m * 60e9) / 1e9)}s`;
}

/** @param {number} x */
function trim(x) {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** A unix-nanosecond time as local date and time with milliseconds. @param {bigint | string | number} ns */
export function time(ns) {
  let ms;
  try {
    ms = Number(BigInt(ns) / 1000000n);
  } catch {
    return String(ns);
  }
  const d = new Date(ms);
  const p = (/** @type {number} */ n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Relative age: "3m ago". @param {number} ms unix milliseconds */
export function ago(ms, now = Date.now()) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** A rate or count with at most 3 significant digits. @param {number} x */
export function num(x) {
  if (!Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e6) return `${(x / 1e6).toPrecision(3)}M`;
  if (a >= 1e3) return `${(x / 1e3).toPrecision(3)}k`;
  return a >= 100 ? x.toFixed(0) : x.toPrecision(3).replace(/\.?0+$/, '');
}

// Twelve hues that stay apart from each other on light and dark backgrounds.
const PALETTE = ['#3b82f6', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#06b6d4', '#ec4899', '#84cc16', '#f97316', '#6366f1', '#14b8a6', '#a855f7'];
/** @type {Map<string, string>} */
const assigned = new Map();

/**
 * A colour per service: the first twelve services seen in this page's session get distinct
 * palette colours (so a trace's few services never share one); later ones a hue from a hash.
 * @param {string} s
 */
export function serviceColor(s) {
  let c = assigned.get(s);
  if (!c) {
    if (assigned.size < PALETTE.length) c = PALETTE[assigned.size];
    else {
      let h = 2166136261;
      for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
      c = `hsl(${(h >>> 0) % 360} 62% 52%)`;
    }
    assigned.set(s, c);
  }
  return c;
}

/** A relative range such as `1h` or `15m` as seconds; null when it is not one. @param {string} r */
export function rangeSeconds(r) {
  const m = /^(\d+)(m|h|d)$/.exec(r);
  if (!m) return null;
  return Number(m[1]) * { m: 60, h: 3600, d: 86400 }[/** @type {'m'|'h'|'d'} */ (m[2])];
}

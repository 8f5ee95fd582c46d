// @ts-check
// TraceQL metrics as the pages use them.

import { get } from './api.js';
import { anyValue } from './model.js';

/**
 * An instant metrics query's series as label value → value, for one `by()` label.
 * @param {string} q @param {number} start @param {number} end @param {string} label
 * @returns {Promise<Map<string, number>>}
 */
export async function instantBy(q, start, end, label) {
  const r = await get('/api/metrics/query', { q, start, end });
  /** @type {Map<string, number>} */
  const out = new Map();
  for (const series of r.series ?? []) {
    const l = (series.labels ?? []).find((/** @type {any} */ x) => x.key === label);
    if (!l) continue;
    out.set(String(anyValue(l.value)), Number(series.value ?? 0));
  }
  return out;
}

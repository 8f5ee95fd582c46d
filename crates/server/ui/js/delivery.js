// @ts-check
// The delivery page's computation, pure so that Node's unit tests run it: the DORA figures as
// text, the marks of the deployment timeline and where they go, the incidents' spans, the
// time axis, and how a deployment's change-failure hints changed across it.
// Shapes are those of `GET /api/dora` and `GET /api/dora/deployments` (docs/dora.md).

/**
 * @typedef {{ spans: number, error_ratio: number | null, p95_seconds: number | null }} HintWindow
 * @typedef {{ before: HintWindow, after: HintWindow }} Hints
 * @typedef {{
 *   time: number, start: number, service: string, environment: string, outcome: string,
 *   revision: string, branch: string, repository: string, change_id: string, pipeline: string,
 *   run_id: string, result: string, deployment_id: string, lead_time_seconds: number | null,
 *   change_time: number | null, caused_incidents: string[], trace_id: string, span_id: string,
 *   hints?: Hints }} Deployment
 * @typedef {{ incident_id: string, start: number, end: number, duration_seconds: number,
 *   service: string, environment: string, cause_deployment_id: string, trace_id: string,
 *   span_id: string }} Incident
 * @typedef {'elite' | 'high' | 'medium' | 'low'} Level
 * @typedef {{ deployments: number, failed_deployments: number, deployment_frequency_per_day: number,
 *   lead_time_seconds: { median: number | null, p90: number | null }, change_failure_rate: number | null,
 *   time_to_restore_seconds: { median: number | null }, incidents: number,
 *   levels: { deployment_frequency: Level | null, lead_time: Level | null, change_failure_rate: Level | null, time_to_restore: Level | null },
 *   service?: string }} Figures
 */

/** The time ranges the page offers; the API takes any, the page keeps a short list. */
export const RANGES = ['7d', '30d', '90d', '180d', '365d'];
export const DEFAULT_RANGE = '30d';

/** The levels best first, as docs/dora.md lists them. */
export const LEVELS = /** @type {const} */ (['elite', 'high', 'medium', 'low']);

/** A level for people: "Elite", or "no data" where the API has none (a figure without data). @param {string | null | undefined} level */
export function levelText(level) {
  return level ? level[0].toUpperCase() + level.slice(1) : 'no data';
}

/** A span of seconds, short: 45s, 12m, 3.5h, 2.1d. Null (no data) is "–". @param {number | null | undefined} s */
export function seconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  const a = Math.abs(s);
  const sign = s < 0 ? '-' : '';
  const one = (/** @type {number} */ x) => (x >= 10 ? x.toFixed(0) : x.toFixed(1).replace(/\.0$/, ''));
  if (a < 60) return `${sign}${one(a)}s`;
  if (a < 3600) return `${sign}${one(a / 60)}m`;
  if (a < 86400) return `${sign}${one(a / 3600)}h`;
  return `${sign}${one(a / 86400)}d`;
}

/** A ratio as a percentage with at most one decimal: 0.375 → "37.5%". @param {number | null | undefined} r */
export function percent(r) {
  if (r === null || r === undefined || !Number.isFinite(r)) return '–';
  return `${(r * 100).toFixed(1).replace(/\.0$/, '')}%`;
}

/**
 * Deployments per day for people. Below one a day the week reads better ("2.1/week"), below one
 * a week the 30-day month (the levels' own units).
 * @param {number} perDay
 */
export function frequency(perDay) {
  if (!Number.isFinite(perDay)) return '–';
  const fmt = (/** @type {number} */ x) => (x >= 10 ? x.toFixed(0) : x.toFixed(2).replace(/\.?0+$/, ''));
  if (perDay === 0) return 'none';
  if (perDay >= 1) return `${fmt(perDay)}/day`;
  if (perDay * 7 >= 1) return `${fmt(perDay * 7)}/week`;
  return `${fmt(perDay * 30)}/month`;
}

/**
 * The four figures of an answer of `/api/dora`, in the order DORA names them: key (the
 * `levels` key), title, the raw value (null without data), its text, its level, and a detail.
 * @param {Figures} f
 */
export function figureCards(f) {
  return [
    {
      key: 'deployment_frequency',
      title: 'Deployment frequency',
      value: f.deployment_frequency_per_day,
      text: frequency(f.deployment_frequency_per_day),
      level: f.levels.deployment_frequency,
      detail: `${f.deployments - f.failed_deployments} successful of ${f.deployments}`,
    },
    {
      key: 'lead_time',
      title: 'Lead time for changes',
      value: f.lead_time_seconds.median,
      text: seconds(f.lead_time_seconds.median),
      level: f.levels.lead_time,
      detail: `median; p90 ${seconds(f.lead_time_seconds.p90)}`,
    },
    {
      key: 'change_failure_rate',
      title: 'Change failure rate',
      value: f.change_failure_rate,
      text: percent(f.change_failure_rate),
      level: f.levels.change_failure_rate,
      detail: `${f.failed_deployments} failed, of ${f.deployments}`,
    },
    {
      key: 'time_to_restore',
      title: 'Time to restore',
      value: f.time_to_restore_seconds.median,
      text: seconds(f.time_to_restore_seconds.median),
      level: f.levels.time_to_restore,
      detail: `median of ${f.incidents} incident${f.incidents === 1 ? '' : 's'}`,
    },
  ];
}

/**
 * How a deployment is marked: `failed` (its own outcome), `incident` (successful, but named as
 * the cause of an incident: it counts as a change failure too), or `ok`.
 * @param {Deployment} d
 * @returns {'failed' | 'incident' | 'ok'}
 */
export function markKind(d) {
  if (d.outcome === 'failure') return 'failed';
  if ((d.caused_incidents ?? []).length > 0) return 'incident';
  return 'ok';
}

/** The text of a mark kind, for labels and the table. @param {'failed' | 'incident' | 'ok'} k */
export function kindText(k) {
  return k === 'failed' ? 'failed' : k === 'incident' ? 'succeeded, caused an incident' : 'succeeded';
}

/**
 * Environments and services to pick from: those of the deployments and incidents given (the
 * API has no list of its own), sorted, empty names left out.
 * @param {Deployment[]} deployments @param {Incident[]} incidents
 */
export function choices(deployments, incidents) {
  const env = new Set(), svc = new Set();
  for (const x of [...deployments, ...incidents]) {
    if (x.environment) env.add(x.environment);
    if (x.service) svc.add(x.service);
  }
  return { environments: [...env].sort(), services: [...svc].sort() };
}

// A change in a hint counts only past these, so noise in a quiet hour is not highlighted: the
// error ratio by one percentage point, p95 by a fifth and by at least a millisecond.
const RATIO_STEP = 0.01;
const P95_SHARE = 0.2;
const P95_MIN = 0.001;

/**
 * The change of one hint across a deployment: `worse`, `better`, `same`, or `unknown` when a
 * window had no spans (nothing to compare).
 * @param {'error_ratio' | 'p95_seconds'} key @param {number | null | undefined} before @param {number | null | undefined} after
 * @returns {'worse' | 'better' | 'same' | 'unknown'}
 */
export function change(key, before, after) {
  if (before === null || before === undefined || after === null || after === undefined) return 'unknown';
  const d = after - before;
  const big = key === 'error_ratio' ? Math.abs(d) >= RATIO_STEP : Math.abs(d) >= Math.max(P95_SHARE * before, P95_MIN);
  if (!big) return 'same';
  return d > 0 ? 'worse' : 'better';
}

/**
 * The hints as rows for the details: error ratio and p95, before and after, with the change.
 * Null when the API gave none (only the newest deployments get hints).
 * @param {Hints | undefined} hints
 */
export function hintRows(hints) {
  if (!hints) return null;
  return [
    { key: 'error_ratio', title: 'Error ratio', before: percent(hints.before.error_ratio), after: percent(hints.after.error_ratio), change: change('error_ratio', hints.before.error_ratio, hints.after.error_ratio) },
    {
      key: 'p95_seconds',
      title: 'p95 duration',
      before: p95(hints.before.p95_seconds),
      after: p95(hints.after.p95_seconds),
      change: change('p95_seconds', hints.before.p95_seconds, hints.after.p95_seconds),
    },
    { key: 'spans', title: 'Spans', before: String(hints.before.spans), after: String(hints.after.spans), change: /** @type {const} */ ('same') },
  ];
}

/** A p95 in seconds, to milliseconds under a second. @param {number | null | undefined} s */
function p95(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  // Number() drops trailing zeros of the fraction only (a regex would also eat 100's).
  if (s < 1) return `${Number((s * 1000).toPrecision(3))}ms`;
  return seconds(s);
}

/**
 * Where everything goes on the timeline (SVG user units, times in unix seconds).
 * - One lane per service (sorted), holding its deployments: a mark at the deployment's time and
 *   a lead-time line back to its change time (clamped to the window's start).
 * - Below them, the incidents as bars from opened to resolved, packed into as few lanes as
 *   keep overlapping incidents apart.
 * - With `fit`, the axis spans only the events (changes included) and a margin, inside the
 *   window: a day of deployments in a 30-day window would otherwise be one blot of marks.
 * @param {Deployment[]} deployments @param {Incident[]} incidents
 * @param {{ start: number, end: number, width: number, left?: number, right?: number, lane?: number, top?: number, fit?: boolean }} o
 */
export function layout(deployments, incidents, o) {
  const left = o.left ?? 120, right = o.right ?? 16, laneH = o.lane ?? 28, top = o.top ?? 8;
  const { start, end } = o.fit ? fit(deployments, incidents, o.start, o.end) : o;
  const span = Math.max(end - start, 1);
  const x = (/** @type {number} */ t) => left + ((Math.min(Math.max(t, start), end) - start) / span) * (o.width - left - right);
  const services = [...new Set(deployments.map((d) => d.service))].sort();
  const laneOf = new Map(services.map((s, i) => [s, i]));
  const marks = deployments
    .map((d, index) => ({ d, index }))
    .sort((a, b) => a.d.time - b.d.time || a.index - b.index)
    .map(({ d, index }) => {
      const lane = /** @type {number} */ (laneOf.get(d.service));
      const y = top + lane * laneH + laneH / 2;
      return {
        index,
        kind: markKind(d),
        x: x(d.time),
        y,
        leadX: d.change_time === null || d.change_time === undefined ? null : x(d.change_time),
      };
    });
  const incTop = top + services.length * laneH + (services.length ? 8 : 0);
  /** @type {number[]} the end of the last incident of each incident lane */
  const laneEnds = [];
  const bars = incidents
    .map((inc, index) => ({ inc, index }))
    .sort((a, b) => a.inc.start - b.inc.start || a.index - b.index)
    .map(({ inc, index }) => {
      let lane = laneEnds.findIndex((e) => e <= inc.start);
      if (lane < 0) lane = laneEnds.push(inc.end) - 1;
      else laneEnds[lane] = inc.end;
      const x0 = x(inc.start);
      // A short incident still gets a bar one can see and click.
      const x1 = Math.max(x(inc.end), x0 + 3);
      // The label goes left of a bar that ends near the right edge, so it is not cut off.
      const labelLeft = x1 > o.width - right - 60;
      return { index, lane, x0, x1, y: incTop + lane * laneH + 4, h: laneH - 8, labelX: labelLeft ? x0 - 3 : x1 + 3, labelAnchor: labelLeft ? 'end' : 'start' };
    });
  const height = incTop + laneEnds.length * laneH + 24;
  return {
    lanes: services.map((s, i) => ({ service: s, y: top + i * laneH + laneH / 2 })),
    incidentLanes: laneEnds.map((_, i) => incTop + i * laneH + laneH / 2),
    marks,
    bars,
    axisY: height - 20,
    height,
    start,
    end,
    ticks: ticks(start, end).map((t) => ({ t, x: x(t), label: tickLabel(t) })),
  };
}

/**
 * The span of the events inside [start, end] with a margin of a tenth of it (at least an
 * hour) on each side; the whole window when there are none.
 * @param {Deployment[]} deployments @param {Incident[]} incidents @param {number} start @param {number} end
 */
export function fit(deployments, incidents, start, end) {
  const times = [
    ...deployments.flatMap((d) => (d.change_time === null || d.change_time === undefined ? [d.time] : [d.time, d.change_time])),
    ...incidents.flatMap((i) => [i.start, i.end]),
  ].map((t) => Math.min(Math.max(t, start), end));
  if (!times.length) return { start, end };
  const lo = Math.min(...times), hi = Math.max(...times);
  const pad = Math.max((hi - lo) / 10, 3600);
  return { start: Math.max(start, lo - pad), end: Math.min(end, hi + pad) };
}

const DAY = 86400;

const HOUR = 3600;

/**
 * Axis ticks inside [start, end], at most `max`: whole UTC hours (every 1, 2, 3, 6 or 12) for
 * a short span, else UTC midnights every 1, 2, 7, 14, 30, 60 or 90 days.
 * @param {number} start @param {number} end @param {number} [max]
 */
export function ticks(start, end, max = 10) {
  const len = end - start;
  const steps = [HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 60 * DAY, 90 * DAY];
  const step = steps.find((s) => len / s <= max) ?? Math.ceil(len / max / DAY) * DAY;
  const out = [];
  // Hours align to their step (00:00, 06:00, …); days start at the first midnight.
  const first = step < DAY ? Math.ceil(start / step) * step : Math.ceil(start / DAY) * DAY;
  for (let t = first; t <= end; t += step) out.push(t);
  return out;
}

/** A tick's label: the date at midnight, the hour otherwise ("Dec 07", "06:00"). @param {number} t unix seconds */
export function tickLabel(t) {
  if (t % DAY === 0) return dayLabel(t);
  return new Date(t * 1000).toISOString().slice(11, 16);
}

/** A UTC date, short: "Dec 07". @param {number} t unix seconds */
export function dayLabel(t) {
  const d = new Date(t * 1000);
  return `${['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, '0')}`;
}

/** A unix-seconds time as UTC date and time to the second. @param {number | null | undefined} t */
export function when(t) {
  if (t === null || t === undefined || !Number.isFinite(t)) return '–';
  return new Date(Math.round(t * 1000)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/**
 * The mark keyboard focus moves to from `at` (an index into the marks, in time order) by a key:
 * ←/→ one, Home/End the ends. Null for any other key.
 * @param {string} key @param {number} at @param {number} count
 */
export function step(key, at, count) {
  if (count === 0) return null;
  switch (key) {
    case 'ArrowLeft':
    case 'ArrowUp':
      return Math.max(0, at - 1);
    case 'ArrowRight':
    case 'ArrowDown':
      return Math.min(count - 1, at + 1);
    case 'Home':
      return 0;
    case 'End':
      return count - 1;
    default:
      return null;
  }
}

/**
 * The window of a range such as `30d` ending at `now` (unix seconds, whole), and the range
 * itself: unknown ranges fall back to the default, so a hand-edited link still shows a page.
 * @param {string | null} range @param {number} now
 */
export function timeWindow(range, now) {
  const r = range && RANGES.includes(range) ? range : DEFAULT_RANGE;
  const end = Math.floor(now);
  return { range: r, start: end - Number(r.slice(0, -1)) * DAY, end };
}

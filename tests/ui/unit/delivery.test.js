// The delivery page's pure computation: figures as text, marks, the timeline's layout, the
// incidents' lanes, axis ticks, hint changes, keyboard steps and the window of a range.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as D from '../../../crates/server/ui/js/delivery.js';

const DAY = 86400;
const T0 = 1_765_065_600; // a UTC midnight (2025-12-07)

/** A deployment as `/api/dora/deployments` lists it, with only what a test sets differing. */
function dep(over) {
  return {
    time: T0, start: T0 - 60, service: 'checkout', environment: 'production', outcome: 'success', revision: 'abc', branch: 'main',
    repository: '', change_id: '', pipeline: 'p', run_id: '1', result: 'success', deployment_id: 'd', lead_time_seconds: 600,
    change_time: T0 - 600, caused_incidents: [], trace_id: 't', span_id: 's', ...over,
  };
}

/** An incident as the same answer lists it. */
function inc(id, start, end, over = {}) {
  return { incident_id: id, start, end, duration_seconds: end - start, service: 'checkout', environment: 'production', cause_deployment_id: '', trace_id: '', span_id: '', ...over };
}

test('figures read as DORA names them, with their levels; no data is said so', () => {
  // The example answer of docs/dora.md.
  const f = {
    deployments: 8, failed_deployments: 2, deployment_frequency_per_day: 0.6, lead_time_seconds: { median: 1200, p90: 5400 },
    change_failure_rate: 0.375, time_to_restore_seconds: { median: 1800 }, incidents: 3,
    levels: { deployment_frequency: 'high', lead_time: 'elite', change_failure_rate: 'medium', time_to_restore: 'elite' },
  };
  const cards = D.figureCards(f);
  assert.deepEqual(cards.map((c) => c.key), ['deployment_frequency', 'lead_time', 'change_failure_rate', 'time_to_restore']);
  assert.deepEqual(cards.map((c) => c.text), ['4.2/week', '20m', '37.5%', '30m']);
  assert.deepEqual(cards.map((c) => c.value), [0.6, 1200, 0.375, 1800]);
  assert.deepEqual(cards.map((c) => D.levelText(c.level)), ['High', 'Elite', 'Medium', 'Elite']);
  assert.equal(cards[1].detail, 'median; p90 1.5h');
  const empty = D.figureCards({
    deployments: 0, failed_deployments: 0, deployment_frequency_per_day: 0, lead_time_seconds: { median: null, p90: null },
    change_failure_rate: null, time_to_restore_seconds: { median: null }, incidents: 0,
    levels: { deployment_frequency: 'low', lead_time: null, change_failure_rate: null, time_to_restore: null },
  });
  assert.deepEqual(empty.map((c) => c.text), ['none', '–', '–', '–']);
  assert.deepEqual(empty.map((c) => D.levelText(c.level)), ['Low', 'no data', 'no data', 'no data']);
});

test('durations, rates and frequencies', () => {
  assert.deepEqual([45, 90, 600, 5400, 36000, 2.5 * DAY].map(D.seconds), ['45s', '1.5m', '10m', '1.5h', '10h', '2.5d']);
  assert.equal(D.seconds(null), '–');
  assert.deepEqual([0, 0.05, 1 / 3, 1].map(D.percent), ['0%', '5%', '33.3%', '100%']);
  assert.deepEqual([3, 1, 0.5, 1 / 7, 0.1, 1 / 30].map(D.frequency), ['3/day', '1/day', '3.5/week', '1/week', '3/month', '1/month']);
});

test('a failed deployment is marked failed even when an incident names it; a successful one named by an incident is marked too', () => {
  assert.equal(D.markKind(dep({})), 'ok');
  assert.equal(D.markKind(dep({ outcome: 'failure' })), 'failed');
  assert.equal(D.markKind(dep({ outcome: 'failure', caused_incidents: ['INC-3'] })), 'failed');
  assert.equal(D.markKind(dep({ caused_incidents: ['INC-1'] })), 'incident');
});

test('pickers list the environments and services of deployments and incidents', () => {
  const c = D.choices([dep({}), dep({ service: 'cart', environment: 'staging' }), dep({ service: '' })], [inc('I', 0, 1, { service: 'db', environment: '' })]);
  assert.deepEqual(c, { environments: ['production', 'staging'], services: ['cart', 'checkout', 'db'] });
});

test('hints: a change counts past a point of error ratio or a fifth of p95; an empty window is unknown', () => {
  assert.equal(D.change('error_ratio', 0, 0.25), 'worse');
  assert.equal(D.change('error_ratio', 0.2, 0.205), 'same');
  assert.equal(D.change('error_ratio', 0.3, 0.1), 'better');
  assert.equal(D.change('p95_seconds', 0.1, 0.3), 'worse');
  assert.equal(D.change('p95_seconds', 0.1, 0.11), 'same');
  assert.equal(D.change('p95_seconds', 0.0001, 0.0005), 'same', 'below a millisecond is noise');
  assert.equal(D.change('p95_seconds', null, 0.3), 'unknown');
  const rows = D.hintRows({ before: { spans: 4, error_ratio: 0, p95_seconds: 0.1 }, after: { spans: 4, error_ratio: 0.5, p95_seconds: 0.1 } });
  assert.deepEqual(rows?.map((r) => [r.key, r.before, r.after, r.change]), [
    ['error_ratio', '0%', '50%', 'worse'],
    ['p95_seconds', '100ms', '100ms', 'same'],
    ['spans', '4', '4', 'same'],
  ]);
  assert.equal(D.hintRows(undefined), null);
});

test('layout: a lane per service, marks in time order at their times, lead lines back to the change', () => {
  const deps = [
    dep({ service: 'cart', time: T0 + 2 * DAY, change_time: T0 + 2 * DAY - 3600 }),
    dep({ time: T0 + DAY, change_time: T0 - DAY, outcome: 'failure' }), // change before the window
    dep({ time: T0 + 3 * DAY, change_time: null, lead_time_seconds: null, caused_incidents: ['I'] }),
  ];
  const L = D.layout(deps, [], { start: T0, end: T0 + 4 * DAY, width: 520, left: 120, right: 0, lane: 20, top: 0 });
  assert.deepEqual(L.lanes, [{ service: 'cart', y: 10 }, { service: 'checkout', y: 30 }]);
  // 400 units for 4 days: 100 a day.
  assert.deepEqual(L.marks.map((m) => [m.index, m.kind, m.x, m.y, m.leadX]), [
    [1, 'failed', 220, 30, 120],
    [0, 'ok', 320, 10, 320 - 100 / 24],
    [2, 'incident', 420, 30, null],
  ]);
  assert.deepEqual(L.incidentLanes, []);
  // Four days: a tick every twelve hours.
  assert.deepEqual(L.ticks.map((t) => [t.t, t.x]), [0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => [T0 + i * 43200, 120 + i * 50]));
});

test('layout: overlapping incidents take separate lanes, later ones reuse freed lanes, short ones stay visible', () => {
  const incs = [inc('A', T0, T0 + 2 * DAY), inc('B', T0 + DAY, T0 + DAY + 60), inc('C', T0 + 3 * DAY, T0 + 3 * DAY + 1)];
  const L = D.layout([dep({ time: T0 + DAY })], incs, { start: T0, end: T0 + 4 * DAY, width: 520, left: 120, right: 0, lane: 20, top: 0 });
  assert.deepEqual(L.bars.map((b) => [b.index, b.lane]), [[0, 0], [1, 1], [2, 0]]);
  assert.equal(L.bars[0].x1 - L.bars[0].x0, 200);
  assert.ok(L.bars[2].x1 - L.bars[2].x0 >= 3, 'a one-second incident is at least 3 units wide');
  // The incident lanes sit below the one service lane.
  assert.ok(L.incidentLanes[0] > L.lanes[0].y && L.incidentLanes.length === 2);
  assert.ok(L.axisY > L.incidentLanes[1]);
});

test('ticks: whole UTC hours or midnights, at most ten', () => {
  assert.deepEqual(D.ticks(T0 + 1, T0 + 3 * DAY), [1, 2, 3, 4, 5, 6].map((i) => T0 + i * 43200));
  assert.deepEqual(D.ticks(T0 + 1, T0 + 5 * 3600), [1, 2, 3, 4, 5].map((i) => T0 + i * 3600));
  assert.deepEqual([T0, T0 + 6 * 3600].map(D.tickLabel), ['Dec 07', '06:00']);
  const month = D.ticks(T0, T0 + 30 * DAY);
  assert.ok(month.length <= 10 && month.every((t) => t % DAY === 0), `${month}`);
  assert.equal(month[1] - month[0], 7 * DAY);
  assert.equal(D.dayLabel(T0), 'Dec 07');
  assert.equal(D.when(T0 + 3661.4), '2025-12-07 01:01:01 UTC');
});

test('fit: the axis spans the events and a margin, inside the window', () => {
  const deps = [dep({ time: T0 + 10 * DAY, change_time: T0 + 10 * DAY - 7200 }), dep({ time: T0 + 10 * DAY + 3600, change_time: null })];
  // Three hours of events: an hour's margin each side.
  assert.deepEqual(D.fit(deps, [], T0, T0 + 30 * DAY), { start: T0 + 10 * DAY - 3 * 3600, end: T0 + 10 * DAY + 2 * 3600 });
  // Ten days of events (an incident included): a day's margin, cut at the window.
  assert.deepEqual(D.fit(deps, [inc('I', T0, T0 + 60)], T0, T0 + 30 * DAY), { start: T0, end: T0 + 11 * DAY + 3600 + 3600 / 10 });
  assert.deepEqual(D.fit([], [], T0, T0 + DAY), { start: T0, end: T0 + DAY });
  const L = D.layout(deps, [], { start: T0, end: T0 + 30 * DAY, width: 520, left: 120, right: 0, fit: true });
  assert.deepEqual([L.start, L.end, L.marks[0].leadX, L.marks[1].x], [T0 + 10 * DAY - 3 * 3600, T0 + 10 * DAY + 2 * 3600, 200, 440]);
});

test('keyboard steps along the marks and stops at the ends', () => {
  assert.equal(D.step('ArrowRight', 0, 3), 1);
  assert.equal(D.step('ArrowRight', 2, 3), 2);
  assert.equal(D.step('ArrowLeft', 0, 3), 0);
  assert.equal(D.step('End', 0, 3), 2);
  assert.equal(D.step('Home', 2, 3), 0);
  assert.equal(D.step('a', 1, 3), null);
  assert.equal(D.step('ArrowRight', 0, 0), null);
});

test('a range is a window ending now; an unknown one falls back to 30 days', () => {
  assert.deepEqual(D.timeWindow('7d', T0 + 0.5), { range: '7d', start: T0 - 7 * DAY, end: T0 });
  assert.deepEqual(D.timeWindow('forever', T0), { range: '30d', start: T0 - 30 * DAY, end: T0 });
  assert.deepEqual(D.timeWindow(null, T0), { range: '30d', start: T0 - 30 * DAY, end: T0 });
});

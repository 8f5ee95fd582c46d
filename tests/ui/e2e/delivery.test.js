// The delivery page end to end: CI/CD pipeline traces and an incident sent with the
// OpenTelemetry JS SDK in the OpenTelemetry CI/CD conventions (docs/dora.md), then `/delivery`
// in Chromium. Every figure the test expects is the API's own answer for the page's window:
// the page must show what `/api/dora` and `/api/dora/deployments` say, nothing computed apart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { trace, context, SpanStatusCode } from '@opentelemetry/api';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { startSpoor, REPO } from './server.js';
import { figureCards, kindText, change } from '../../../crates/server/ui/js/delivery.js';

const SHOTS = join(REPO, 'target/ui-screenshots');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const MIN = 60_000;
const HOUR = 60 * MIN;

// Pipelines: [deployment id, deployed service, environment, status, deploy end (ms before now)].
// dep-2 fails; INC-1 names dep-3, which succeeded, as its cause; dep-4 goes to staging.
const PIPELINES = [
  ['dep-1', 'checkout', 'production', 'succeeded', 5 * HOUR],
  ['dep-2', 'checkout', 'production', 'failed', 4 * HOUR],
  ['dep-3', 'checkout', 'production', 'succeeded', 3 * HOUR],
  ['dep-4', 'cart', 'staging', 'succeeded', 2 * HOUR],
];
const INCIDENT = { id: 'INC-1', cause: 'dep-3', opened: 3 * HOUR - 10 * MIN, resolved: 3 * HOUR - 40 * MIN };

let spoor;
let browser;
let page;
/** deployment id → the pipeline's trace ID */
const traceOf = new Map();
const errors = [];

/** A provider whose spans carry `resource`; flushed and shut down by `sendFixture`. */
function provider(resource, otlp, all) {
  const p = new BasicTracerProvider({
    resource: resourceFromAttributes(resource),
    spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: `${otlp}/v1/traces` }))],
  });
  all.push(p);
  return p.getTracer('spoor-ui-e2e');
}

/**
 * Each pipeline is a trace as a CI system sends it: a push root span (the change), a build and
 * a deploy task. The incident is a span from the incident tool. The checkout service's own
 * spans around dep-3, fine before and failing after, give its change-failure hints something
 * to show.
 */
async function sendFixture(otlp) {
  const now = Date.now();
  const providers = [];
  const ci = provider({ 'service.name': 'ci', 'cicd.pipeline.name': 'shop' }, otlp, providers);
  PIPELINES.forEach(([id, service, env, status, endAgo], i) => {
    const end = now - endAgo;
    const push = ci.startSpan('push', { startTime: end - 20 * MIN, attributes: { 'cicd.pipeline.run.id': String(i + 1), 'vcs.ref.head.revision': `${id}0c0ffee`.padEnd(40, '0'), 'vcs.ref.head.name': 'main' } });
    const ctx = trace.setSpan(context.active(), push);
    const build = ci.startSpan('build', { startTime: end - 18 * MIN, attributes: { 'cicd.pipeline.task.type': 'build' } }, ctx);
    build.end(end - 10 * MIN);
    const deploy = ci.startSpan(
      `deploy ${service}`,
      {
        startTime: end - 8 * MIN,
        attributes: {
          'cicd.pipeline.task.type': 'deploy',
          'deployment.environment.name': env,
          'deployment.status': status,
          'deployment.id': id,
          'deployment.name': service,
          'vcs.ref.head.revision': `${id}0c0ffee`.padEnd(40, '0'),
        },
      },
      ctx,
    );
    if (status === 'failed') deploy.setStatus({ code: SpanStatusCode.ERROR, message: 'rollout timed out' });
    deploy.end(end);
    push.end(end);
    traceOf.set(id, push.spanContext().traceId);
  });
  const pager = provider({ 'service.name': 'pager' }, otlp, providers);
  const inc = pager.startSpan('incident INC-1', {
    startTime: now - INCIDENT.opened,
    attributes: { 'incident.id': INCIDENT.id, 'incident.cause.deployment.id': INCIDENT.cause, 'deployment.environment.name': 'production', 'service.name': 'checkout' },
  });
  inc.end(now - INCIDENT.resolved);
  const svc = provider({ 'service.name': 'checkout' }, otlp, providers);
  const dep3 = now - 3 * HOUR;
  for (const [offset, ms, failed] of [[-40 * MIN, 80, false], [-20 * MIN, 90, false], [10 * MIN, 400, true], [20 * MIN, 450, true]]) {
    const s = svc.startSpan('POST /checkout', { startTime: dep3 + offset });
    if (failed) s.setStatus({ code: SpanStatusCode.ERROR });
    s.end(dep3 + offset + ms);
  }
  for (const p of providers) await p.forceFlush();
  for (const p of providers) await p.shutdown();
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  spoor = await startSpoor();
  await sendFixture(spoor.otlp);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
});

after(async () => {
  await browser?.close();
  await spoor?.stop();
});

/** The API's answer for the window and filters the page shows (read off the page itself). */
async function api(path, extra = {}) {
  const w = await page.locator('.toolbar').evaluate((e) => ({ start: e.dataset.start, end: e.dataset.end }));
  const q = new URLSearchParams({ ...w, ...Object.fromEntries(new URL(page.url()).searchParams), ...extra });
  q.delete('range');
  const r = await fetch(`${spoor.base}${path}?${q}`);
  assert.equal(r.status, 200, await r.clone().text());
  return r.json();
}

test('the delivery page shows the DORA figures, the timeline and a deployment with its trace', async () => {
  await page.goto(`${spoor.base}/delivery?environment=production&range=30d`);
  await page.waitForSelector('.dora-figure');
  await page.waitForSelector('svg.timeline g.deploy');
  assert.equal(await page.locator('nav a[data-nav="delivery"]').getAttribute('aria-current'), '');

  // The four figures: value, text and level exactly as /api/dora answers for this window.
  const dora = await api('/api/dora');
  assert.equal(dora.deployments, 3, 'the fixture reached the store');
  const shown = await page.$$eval('.dora-figure', (fs) => fs.map((f) => ({ key: f.dataset.figure, value: f.dataset.value, level: f.dataset.level, text: f.querySelector('.figure-value')?.textContent })));
  assert.deepEqual(
    shown,
    figureCards(dora).map((c) => ({ key: c.key, value: c.value === null ? '' : String(c.value), level: c.level ?? '', text: c.text })),
  );

  // One mark per deployment; the failed one and the one an incident names marked as such.
  const listing = await api('/api/dora/deployments');
  const marks = await page.$$eval('svg.timeline g.deploy', (gs) => gs.map((g) => ({ kind: g.dataset.kind, trace: g.dataset.traceId })));
  assert.equal(marks.length, listing.deployments.length);
  assert.deepEqual(marks.map((m) => m.trace).sort(), listing.deployments.map((d) => d.trace_id).sort());
  assert.deepEqual(marks.filter((m) => m.kind === 'failed').map((m) => m.trace), listing.deployments.filter((d) => d.outcome === 'failure').map((d) => d.trace_id));
  assert.deepEqual(marks.filter((m) => m.kind === 'failed').map((m) => m.trace), [traceOf.get('dep-2')]);
  assert.deepEqual(marks.filter((m) => m.kind === 'incident').map((m) => m.trace), [traceOf.get('dep-3')]);
  // Lead times are drawn back to the change.
  assert.equal(await page.locator('svg.timeline g.deploy line.lead').count(), 2 * listing.deployments.filter((d) => d.change_time !== null).length);

  // The incident: a span on the timeline and a row naming its cause.
  assert.deepEqual(listing.incidents.map((i) => i.incident_id), [INCIDENT.id]);
  await page.locator(`svg.timeline g.incident[data-incident="${INCIDENT.id}"] rect`).waitFor();
  assert.match(await page.locator(`table.incidents tr[data-incident="${INCIDENT.id}"]`).textContent(), new RegExp(INCIDENT.cause));
  // The screen-reader table lists the same deployments.
  assert.equal(await page.locator('table.deployments tbody tr').count(), listing.deployments.length);
  // The per-service table, from by=service.
  const byService = await api('/api/dora', { by: 'service' });
  assert.deepEqual(await page.$$eval('table.dora-services tbody tr', (r) => r.map((x) => x.dataset.service)), byService.services.map((s) => s.service));

  // Details of the deployment an incident names, with its hints and its change highlighted.
  const d3 = listing.deployments.find((d) => d.deployment_id === 'dep-3');
  // The mark itself (the group also spans its lead-time line).
  await page.locator(`svg.timeline g.deploy[data-trace-id="${d3.trace_id}"] .shape`).click();
  const details = page.locator('aside.deploy-details');
  await details.getByRole('heading', { name: `Deployment of ${d3.service}` }).waitFor();
  const text = await details.textContent();
  for (const want of [d3.service, d3.revision, d3.environment, kindText('incident'), INCIDENT.id]) assert.ok(text.includes(want), `details show ${want}`);
  assert.ok(d3.hints, 'the API hinted dep-3');
  for (const key of ['error_ratio', 'p95_seconds']) {
    assert.equal(await details.locator(`tr[data-hint="${key}"]`).getAttribute('data-change'), change(key, d3.hints.before[key], d3.hints.after[key]), key);
  }
  assert.equal(await details.locator('tr[data-hint="error_ratio"]').getAttribute('data-change'), 'worse', 'the failing hour after dep-3 is highlighted');
  await page.screenshot({ path: join(SHOTS, 'delivery.png'), fullPage: true });

  // The trace link opens the whole pipeline.
  const link = details.getByRole('link', { name: 'Open the pipeline’s trace' });
  assert.equal(await link.getAttribute('href'), `/trace/${d3.trace_id}`);
  await link.click();
  await page.waitForSelector('.waterfall .row');
  assert.deepEqual((await page.$$eval('.waterfall .row', (r) => r.map((x) => x.dataset.name))).sort(), ['build', 'deploy checkout', 'push']);
});

test('the timeline works from the keyboard, and the pickers filter', async () => {
  await page.goto(`${spoor.base}/delivery?environment=production`);
  await page.waitForSelector('svg.timeline g.deploy');
  const listing = await api('/api/dora/deployments');
  const inTime = [...listing.deployments].sort((a, b) => a.time - b.time);
  // One tab stop: the first mark; → moves to the next in time, Enter opens it.
  const first = page.locator('svg.timeline g.deploy[tabindex="0"]');
  assert.equal(await first.count(), 1);
  await first.focus();
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('Enter');
  const details = page.locator('aside.deploy-details');
  await details.locator('a.trace-link').waitFor();
  assert.equal(await details.locator('a.trace-link').getAttribute('href'), `/trace/${inTime[1].trace_id}`);
  assert.match(await details.textContent(), new RegExp(kindText('failed')));

  // The pickers offer every environment and service of the window, and filter by URL.
  const envs = await page.getByLabel('Environment').locator('option').evaluateAll((o) => o.map((x) => x.getAttribute('value')));
  assert.deepEqual(envs, ['', 'production', 'staging']);
  await page.getByLabel('Environment').selectOption('staging');
  await page.waitForURL(/environment=staging/);
  // The new page's marks, not the old page's still on screen.
  await page.waitForFunction(() => {
    const gs = [...document.querySelectorAll('svg.timeline g.deploy')];
    return gs.length > 0 && gs.every((g) => g.getAttribute('data-environment') === 'staging');
  });
  const staging = await api('/api/dora/deployments');
  assert.equal(await page.locator('svg.timeline g.deploy').count(), staging.deployments.length);
  assert.deepEqual(staging.deployments.map((d) => d.environment), ['staging']);
  const dora = await api('/api/dora');
  assert.equal(await page.locator('.dora-figure[data-figure="lead_time"]').getAttribute('data-value'), String(dora.lead_time_seconds.median));

  // The dark theme.
  await page.getByRole('button', { name: 'Switch theme' }).click();
  await page.goto(`${spoor.base}/delivery?environment=production`);
  await page.waitForSelector('svg.timeline g.deploy');
  await page.screenshot({ path: join(SHOTS, 'delivery-dark.png'), fullPage: true });
  await page.getByRole('button', { name: 'Switch theme' }).click();
});

test('no script errors on the delivery page', () => {
  assert.deepEqual(errors, []);
});

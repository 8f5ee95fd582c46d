// The web UI end to end: real `spoor serve`, traces from the OpenTelemetry JS SDK, and the
// pages driven in Debian's Chromium by Playwright. Screenshots go to target/ui-screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startSpoor, REPO } from './server.js';
import { sendTraces, CHECKOUT, CRITICAL, slowed } from './traces.js';

const SHOTS = join(REPO, 'target/ui-screenshots');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

let spoor;
let browser;
let page;
let ids;
const errors = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  spoor = await startSpoor('ui:\n  trace_to_logs_url: "https://logs.example/search?trace=${traceId}&span=${spanId}"\n');
  ids = await sendTraces(spoor.otlp, [CHECKOUT, slowed(200)]);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
});

after(async () => {
  await browser?.close();
  await spoor?.stop();
});

const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

test('search finds both checkouts, newest first, and links them', async () => {
  await page.goto(`${spoor.base}/`);
  const editor = page.getByLabel('TraceQL query');
  await editor.fill('{ resource.service.name = "frontend" && name = "GET /checkout" }');
  await editor.press('Enter');
  await page.waitForSelector('table.traces tbody tr');
  assert.match(page.url(), /\?q=%7B\+resource\.service\.name/);
  const rows = await page.$$eval('table.traces tbody tr', (trs) => trs.map((tr) => ({ id: tr.dataset.traceId, text: tr.textContent })));
  assert.deepEqual(rows.map((r) => r.id), [ids[1], ids[0]], 'newest first');
  // The matched spans, named in the Matched cell's tooltip.
  const matched = await page.$$eval('table.traces tbody tr td:nth-child(8)', (tds) => tds.map((td) => [td.textContent, td.title]));
  assert.deepEqual(matched, [['1', 'GET /checkout (500ms)'], ['1', 'GET /checkout (300ms)']]);
  for (const r of rows) {
    assert.match(r.text, /frontend/);
    assert.match(r.text, /GET \/checkout/);
    assert.match(r.text, /✕ 1/, 'the audit log error is marked');
  }
  // Autocomplete from the tag APIs: attribute names, then values of the attribute.
  await editor.fill('{ resource.serv');
  await editor.press('End');
  await editor.press('Control+Space');
  await page.getByRole('option', { name: 'resource.service.name' }).waitFor();
  await editor.press('Enter');
  assert.equal(await editor.inputValue(), '{ resource.service.name');
  await editor.pressSequentially(' = "pay');
  await page.getByRole('option', { name: '"payment"' }).waitFor();
  await editor.press('Tab');
  assert.equal(await editor.inputValue(), '{ resource.service.name = "payment"');
  await editor.fill('{ resource.service.name = "frontend" && name = "GET /checkout" }');
  // The highlighted editor colours the attribute and the string.
  assert.ok(await page.$('.editor .t-attribute'));
  assert.ok(await page.$('.editor .t-string'));
  await shot('search');
  // The URL is a deep link: loading it again shows the same results.
  await page.goto(page.url());
  await page.waitForSelector('table.traces tbody tr');
  assert.equal(await page.$$eval('table.traces tbody tr', (t) => t.length), 2);
  // An explicit window in the URL (unix seconds) sets the custom range; a window before the
  // traces finds nothing.
  const now = Math.floor(Date.now() / 1000);
  const q = encodeURIComponent('{ name = "GET /checkout" }');
  await page.goto(`${spoor.base}/?q=${q}&start=${now - 600}&end=${now + 60}`);
  await page.waitForSelector('table.traces tbody tr');
  assert.equal(await page.getByLabel('Time range').inputValue(), 'custom');
  assert.equal(await page.$$eval('table.traces tbody tr', (t) => t.length), 2);
  await page.goto(`${spoor.base}/?q=${q}&start=${now - 7200}&end=${now - 3600}`);
  await page.getByText('No traces match in this range.').waitFor();
});

test('the form mode writes the TraceQL', async () => {
  await page.goto(`${spoor.base}/?mode=form`);
  await page.getByLabel('Service', { exact: true }).fill('payment');
  await page.getByLabel('Min duration').fill('100ms');
  await page.getByRole('button', { name: 'Write query & search' }).click();
  await page.waitForSelector('table.traces tbody tr');
  assert.equal(await page.getByLabel('TraceQL query').inputValue(), '{ resource.service.name = "payment" && duration >= 100ms }');
  assert.equal(await page.$$eval('table.traces tbody tr', (t) => t.length), 2);
});

test('the trace view shows every span, nested as sent, with the critical path', async () => {
  await page.goto(`${spoor.base}/trace/${ids[0]}`);
  await page.waitForSelector('.waterfall .row');
  const rows = await page.$$eval('.waterfall .row', (rs) =>
    rs.map((r) => ({ id: r.dataset.spanId, parent: r.dataset.parentId, name: r.dataset.name, depth: Number(r.dataset.depth), critical: r.dataset.critical === 'true' })),
  );
  assert.equal(rows.length, CHECKOUT.length);
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const [name, , parent] of CHECKOUT) {
    const r = rows.find((x) => x.name === name);
    assert.ok(r, `span ${name} shown`);
    assert.equal(parent ? byId.get(r.parent)?.name : undefined, parent ?? undefined, `parent of ${name}`);
    const depth = (n) => (CHECKOUT.find((x) => x[0] === n)[2] ? 1 + depth(CHECKOUT.find((x) => x[0] === n)[2]) : 0);
    assert.equal(r.depth, depth(name), `depth of ${name}`);
    assert.equal(r.critical, CRITICAL.includes(name), `${name} ${CRITICAL.includes(name) ? 'on' : 'off'} the critical path`);
  }
  // Rows come in tree order: every span right below its parent's subtree start.
  assert.deepEqual(rows.slice(0, 4).map((r) => r.name), ['GET /checkout', 'call cart', 'GET /cart', 'redis GET']);
  await shot('trace');

  // Details: attributes, the event, resource, and the logs link with both IDs.
  await page.locator('.row', { hasText: 'fraud check' }).click();
  const details = page.locator('aside.details');
  await details.getByText('model scored').waitFor();
  assert.match(await details.textContent(), /test\.step/);
  const fraud = rows.find((r) => r.name === 'fraud check');
  assert.equal(await details.getByRole('link', { name: 'Logs for this span' }).getAttribute('href'), `https://logs.example/search?trace=${ids[0]}&span=${fraud.id}`);

  // Collapse with the keyboard: select the root, ArrowLeft folds its subtree.
  await page.locator('.row', { hasText: 'GET /checkout' }).first().click();
  await page.locator('.waterfall').press('ArrowLeft');
  assert.equal(await page.$$eval('.waterfall .row', (r) => r.length), 1);
  await page.locator('.waterfall').press('ArrowRight');
  assert.equal(await page.$$eval('.waterfall .row', (r) => r.length), CHECKOUT.length);
  // ArrowDown walks the rows; the details follow the selection.
  await page.locator('.waterfall').press('ArrowDown');
  assert.equal(await page.$eval('.waterfall .row[aria-selected="true"]', (r) => r.dataset.name), 'call cart');
  assert.equal(await page.locator('aside.details h2').textContent(), 'call cart');

  // Find spans by attribute.
  await page.getByLabel('Find spans').fill('test.step=redis GET');
  assert.deepEqual(await page.$$eval('.waterfall .row.match', (r) => r.map((x) => x.dataset.name)), ['redis GET']);
  await page.getByLabel('Find spans').fill('');

  await page.getByRole('button', { name: 'Flame graph' }).click();
  await page.waitForSelector('canvas.flame');
  await shot('trace-flame');

  // The other theme (headless Chromium prefers light), remembered across pages.
  await page.getByRole('button', { name: 'Waterfall' }).click();
  await page.getByRole('button', { name: 'Switch theme' }).click();
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bg, 'rgb(18, 22, 28)');
  await shot('trace-dark');
  await page.getByRole('button', { name: 'Switch theme' }).click();
});

test('compare shows the slowed span and by how much', async () => {
  await page.goto(`${spoor.base}/compare/${ids[0]}/${ids[1]}`);
  await page.waitForSelector('table.compare tbody tr');
  const rows = await page.$$eval('table.compare tbody tr', (trs) => trs.map((t) => ({ name: t.dataset.name, change: t.dataset.change, delta: Number(t.dataset.delta), text: t.textContent })));
  const fraud = rows.find((r) => r.name === 'fraud check');
  assert.equal(fraud.change, 'slower');
  assert.equal(fraud.delta, 200e6);
  assert.match(fraud.text, /\+200ms \(\+133%\)/);
  assert.equal(rows.find((r) => r.name === 'redis GET').change, 'same');
  assert.equal(rows.length, CHECKOUT.length);
  await shot('compare');
});

test('the service map shows the calls between services, and a service its health', async () => {
  await page.goto(`${spoor.base}/services`);
  await page.waitForSelector('svg.map g.edge');
  const edges = await page.$$eval('svg.map g.edge', (g) => g.map((e) => e.getAttribute('data-edge')).sort());
  // Calls inside a service are not edges of the map.
  assert.deepEqual(edges, ['frontend->cart', 'frontend->payment']);
  const label = await page.locator('svg.map g.edge[data-edge="frontend->payment"] text').textContent();
  assert.match(label, /\/s · 0% err · p95 /);
  await shot('services');

  await page.locator('svg.map a[data-service="payment"]').click();
  await page.waitForSelector('.chart svg polyline');
  await page.waitForSelector('table.ops tbody tr');
  assert.deepEqual(await page.$$eval('table.ops tbody tr', (r) => r.map((x) => x.dataset.operation)), ['POST /charge']);
  await page.waitForSelector('[data-list="Slowest traces"] li');
  await shot('service-health');
});

test('no script errors on any page', () => {
  assert.deepEqual(errors, []);
});

// The web UI with auth and multi-tenancy on: the page loads without a token, asks for one,
// offers the token's tenants, and every query goes out with the token and the chosen tenant.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startSpoor, REPO } from './server.js';
import { sendTraces, CHECKOUT } from './traces.js';

const SHOTS = join(REPO, 'target/ui-screenshots');
const sha = (t) => createHash('sha256').update(t).digest('hex');
const READER = 'reader-token-5b1f0c9e';
const WRITER = 'writer-token-77aa01d3';

let spoor;
let browser;
const errors = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const tokens =
    `- {name: reader, sha256: ${sha(READER)}, tenants: [team-a, team-b], roles: [read]}\n` +
    `- {name: writer, sha256: ${sha(WRITER)}, tenants: ["*"], roles: [ingest]}\n`;
  spoor = await startSpoor('tenancy:\n  multitenancy_enabled: true\nauth:\n  enabled: true\n  tokens_file: $DIR/tokens.yaml\n  audit_log: ""\n', { 'tokens.yaml': tokens });
  const rename = (svc) => CHECKOUT.map(([n, s, ...rest]) => [n, s === 'frontend' ? svc : s, ...rest]);
  await sendTraces(spoor.otlp, [rename('frontend-a')], { Authorization: `Bearer ${WRITER}`, 'X-Scope-OrgID': 'team-a' });
  await sendTraces(spoor.otlp, [rename('frontend-b')], { Authorization: `Bearer ${WRITER}`, 'X-Scope-OrgID': 'team-b' });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await spoor?.stop();
});

test('the page asks for a token, lists its tenants, and queries the chosen one', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${spoor.base}/?q=${encodeURIComponent('{ name = "GET /checkout" }')}`);
  // No token yet: the page itself loaded, and the refused query opens the token dialog.
  const dialog = page.getByRole('dialog', { name: 'API token' });
  await dialog.waitFor();
  await page.getByLabel('Token', { exact: true }).fill(READER);
  await page.getByRole('button', { name: 'Save' }).click();
  const picker = page.locator('#tenant');
  await picker.waitFor();
  assert.deepEqual(await picker.locator('option').allTextContents(), ['team-a', 'team-b']);
  assert.equal(await page.evaluate(() => localStorage.getItem('spoor.token')), READER);

  await page.waitForSelector('table.traces tbody tr');
  assert.match(await page.locator('table.traces tbody').textContent(), /frontend-a/);
  assert.doesNotMatch(await page.locator('table.traces tbody').textContent(), /frontend-b/);

  await picker.selectOption('team-b');
  await page.waitForFunction(() => document.querySelector('table.traces tbody')?.textContent?.includes('frontend-b'));
  assert.doesNotMatch(await page.locator('table.traces tbody').textContent(), /frontend-a/);
  await page.screenshot({ path: join(SHOTS, 'auth-tenants.png') });

  // The choice survives a reload; the trace opens with the same token and tenant.
  await page.reload();
  await page.waitForSelector('table.traces tbody tr a');
  assert.equal(await picker.inputValue(), 'team-b');
  await page.locator('table.traces tbody tr a').first().click();
  await page.waitForSelector('.waterfall .row');
  assert.equal(await page.$$eval('.waterfall .row', (r) => r.length), CHECKOUT.length);
  await page.close();
  assert.deepEqual(errors, []);
});

test('multi-tenancy without auth: no token button, the tenant is typed', async () => {
  const open = await startSpoor('tenancy:\n  multitenancy_enabled: true\n');
  try {
    await sendTraces(open.otlp, [CHECKOUT], { 'X-Scope-OrgID': 'blue' });
    const page = await browser.newPage();
    await page.goto(`${open.base}/?q=${encodeURIComponent('{ name = "GET /checkout" }')}`);
    const field = page.locator('#tenant-text');
    await field.waitFor();
    assert.equal(await page.locator('#token-button').isVisible(), false);
    assert.equal(await page.locator('#tenant').isVisible(), false, 'no list to pick from');
    // Until a tenant is named the page says so instead of asking the server.
    await page.getByText('choose a tenant').waitFor();
    await field.fill('blue');
    await field.press('Enter');
    await page.waitForSelector('table.traces tbody tr');
    assert.match(await page.locator('table.traces tbody').textContent(), /frontend/);
    await page.close();
  } finally {
    await open.stop();
  }
});

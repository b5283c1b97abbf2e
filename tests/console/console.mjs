// The operator console in a real browser: headless Chromium (Debian's, driven by
// playwright-core) against a running engine's /console/ and its API.
//
//   CONSOLE_URL=http://127.0.0.1:PORT CONSOLE_KEY=sk_... CONSOLE_PROGRAM=prog_... \
//   CONSOLE_CUSTOMER=cus_... SCREENSHOT_DIR=/tmp/shots node tests/console/console.mjs
//
// CHROMIUM overrides the browser's path (default /usr/bin/chromium). The customer must have an
// account in a program with tiers and `pendingDays`, with some award transactions, below the
// top tier. The test writes to the engine: one adjustment of +37 points to that account (and
// one refused adjustment), and a manual tier (the top one). Exit status 0 when every step
// passed; the last line is "N passed, N failed".
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`console.mjs: set ${name} (see the head of this file)`);
    process.exit(2);
  }
  return v;
}

const BASE = env('CONSOLE_URL').replace(/\/+$/, '');
const KEY = env('CONSOLE_KEY');
const PROGRAM = env('CONSOLE_PROGRAM');
const CUSTOMER = env('CONSOLE_CUSTOMER');
const SHOTS = process.env.SCREENSHOT_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), 'screenshots');
const ORIGIN = new URL(BASE).origin;
const ADJUST = 37;
const REASON = 'console test';
const TIER_REASON = 'console test: goodwill';
const TIER_UNTIL = '2099-01-01T00:00';
fs.mkdirSync(SHOTS, { recursive: true });

// ---- the API, called by the test itself (node's fetch) ----

async function call(method, p, body, key = KEY) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method === 'POST' && p.startsWith('/v1/accounts/')) headers['Idempotency-Key'] = randomUUID();
  const res = await fetch(BASE + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch (e) { /* not JSON */ }
  return { status: res.status, json, text };
}

async function apiGet(p) {
  const r = await call('GET', p);
  assert.equal(r.status, 200, `GET ${p}: ${r.status} ${r.text.slice(0, 500)}`);
  return r.json;
}

async function apiPost(p, body) {
  const r = await call('POST', p, body);
  assert.equal(r.status, 200, `POST ${p}: ${r.status} ${r.text.slice(0, 500)}`);
  return r.json;
}

async function accountOf(customer) {
  const list = await apiGet(`/v1/accounts?program=${encodeURIComponent(PROGRAM)}&customer=${encodeURIComponent(customer)}`);
  assert.equal(list.data.length, 1, `one account of ${customer} in ${PROGRAM}: ${JSON.stringify(list)}`);
  return list.data[0];
}

/** Polls an async predicate until it holds (bounded); for the API side, which has no page to wait on. */
async function until(what, predicate, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await predicate();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A number as the console prints it: "1,234", "+37", "−12" (U+2212), "—" (none). */
function parseShown(text) {
  const t = text.trim().replace(/,/g, '').replace(/\u2212/g, '-').replace(/^\+/, '');
  assert.match(t, /^-?\d+$/, `a number on the page: ${JSON.stringify(text)}`);
  return Number(t);
}

// ---- the browser ----

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(30000);

// Everything the page does is watched: the key must never reach a URL (of the page or of any
// request) or the console; nothing is fetched from another origin; every API call carries
// the key as a Bearer header; no uncaught error.
const problems = [];
let expectedAuth = `Bearer ${KEY}`;
page.on('framenavigated', (frame) => {
  if (frame === page.mainFrame() && frame.url().includes(KEY)) problems.push(`the key is in the page URL ${frame.url()}`);
});
page.on('request', (req) => {
  const u = req.url();
  if (u.includes(KEY)) problems.push(`the key is in a request URL: ${u}`);
  if (!u.startsWith('data:') && !u.startsWith('blob:') && new URL(u).origin !== ORIGIN) problems.push(`a request to another origin: ${u}`);
  if (new URL(u).pathname.startsWith('/v1/') && req.headers().authorization !== expectedAuth) {
    problems.push(`an API request without the key as Bearer: ${req.method()} ${u}`);
  }
});
page.on('console', (msg) => {
  if (msg.text().includes(KEY)) problems.push('the key was written to the browser console');
  if (msg.type() === 'error' && !/status of 40[0-9]/.test(msg.text())) problems.push(`console error: ${msg.text()}`);
});
page.on('pageerror', (e) => problems.push(`uncaught error in the page: ${e.message}`));

function checkUrl() {
  assert.ok(!page.url().includes(KEY), `the key is in the page URL ${page.url()}`);
  assert.deepEqual(problems, [], problems.join('\n'));
}

async function shot(name, fullPage = true) {
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file, fullPage });
  console.log(`  screenshot ${file}`);
}

async function waitTestIdText(testid, want, timeout = 30000) {
  await page.waitForFunction(([id, w]) => {
    const el = document.querySelector(`[data-testid="${id}"]`);
    return el && el.textContent.trim() === w;
  }, [testid, String(want)], { timeout });
}

async function shownText(testid) {
  return (await page.getByTestId(testid).first().textContent()).trim();
}

// ---- the steps ----

let passed = 0;
let failed = 0;
const steps = [];
const step = (name, fn) => steps.push({ name, fn });
const ctx = {};

step('key form: the key goes to sessionStorage only, never to a URL', async () => {
  await page.goto(`${BASE}/console/`);
  checkUrl();
  await page.getByTestId('key-input').waitFor();
  await page.getByTestId('key-input').fill(KEY);
  await page.getByTestId('key-submit').click();
  await page.getByTestId('program-select').locator(`option[value="${PROGRAM}"]`).waitFor({ state: 'attached' });
  checkUrl();
  const stored = await page.evaluate((k) => ({
    session: Object.keys(sessionStorage).some((n) => sessionStorage.getItem(n) === k),
    local: Object.keys(localStorage).some((n) => (localStorage.getItem(n) || '').includes(k)),
    cookie: document.cookie.includes(k),
  }), KEY);
  assert.deepEqual(stored, { session: true, local: false, cookie: false }, 'where the key is kept');
  const cookies = await context.cookies();
  assert.ok(!cookies.some((c) => c.value.includes(KEY)), 'no cookie holds the key');
});

step(`overview of ${PROGRAM}: tier counts equal the stats, charts drawn, phone layout`, async () => {
  await page.getByTestId('program-select').selectOption(PROGRAM);
  await page.getByTestId('nav-overview').click();
  await page.waitForURL((u) => u.hash === `#/overview/${encodeURIComponent(PROGRAM)}`);
  checkUrl();
  const stats = await apiGet(`/v1/programs/${encodeURIComponent(PROGRAM)}/stats`);
  const programs = await apiGet('/v1/programs?limit=100');
  const prog = programs.data.find((p) => p.id === PROGRAM);
  assert.ok(prog, `${PROGRAM} in GET /v1/programs`);
  ctx.program = prog;
  const names = new Set([...((prog.tierConfig && prog.tierConfig.tiers) || []).map((t) => t.name), ...Object.keys(stats.membersByTier || {})]);
  assert.ok(names.size > 0, 'the program has tiers');
  for (const name of names) {
    const cell = page.getByTestId(`tier-count-${name}`);
    await cell.waitFor();
    const want = String((stats.membersByTier || {})[name] ?? 0);
    assert.equal((await cell.textContent()).trim(), want, `members of tier ${name}`);
  }
  assert.equal(await page.locator('[data-testid^="tier-count-"]').count(), names.size, 'one count per tier');
  await page.locator('[data-testid="points-chart"] canvas').first().waitFor();
  const box = await page.locator('[data-testid="points-chart"] canvas').first().boundingBox();
  assert.ok(box && box.width > 0 && box.height > 0, `the points chart's canvas has a size: ${JSON.stringify(box)}`);
  const tierBox = await page.locator('[data-testid="tier-chart"] svg').boundingBox();
  assert.ok(tierBox && tierBox.width > 0 && tierBox.height > 0, 'the tier bar chart has a size');
  await page.getByTestId('rewards-table').waitFor();
  await page.getByTestId('at-risk-table').waitFor();
  await shot('overview.png');

  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForFunction(() => document.documentElement.scrollWidth <= 391, null, { timeout: 10000 })
    .catch(() => {});
  const sw = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(sw <= 390 + 1, `no horizontal scroll on a phone: scrollWidth ${sw}`);
  const phoneBox = await page.locator('[data-testid="points-chart"] canvas').first().boundingBox();
  assert.ok(phoneBox && phoneBox.width > 0 && phoneBox.width <= 390, `the chart fits the phone: ${JSON.stringify(phoneBox)}`);
  await shot('overview-phone.png');
  await page.setViewportSize({ width: 1280, height: 900 });
  checkUrl();
});

step(`member ${CUSTOMER}: balance and ledger as the API has them, every row with its why`, async () => {
  await page.getByTestId('nav-member').click();
  await page.getByTestId('member-search').fill(CUSTOMER);
  await page.getByTestId('member-search-submit').click();
  await page.waitForURL((u) => u.hash.startsWith('#/member/loy_'));
  checkUrl();
  const account = await accountOf(CUSTOMER);
  assert.ok(page.url().endsWith(`#/member/${account.id}`), `the member page of ${account.id}: ${page.url()}`);
  const txs = await apiGet(`/v1/points_transactions?account=${account.id}&limit=100`);
  assert.ok(txs.data.some((t) => t.type === 'award'), `${CUSTOMER} has award transactions`);
  ctx.account = account;
  ctx.balance = account.balance;
  ctx.rows = txs.data.length;
  await waitTestIdText('balance', account.balance);
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="ledger"] tbody tr[data-tx]').length === n, txs.data.length);
  // Pending points (pendingDays): the pending balance beside the balance, a badge on each
  // pending award or reversal.
  assert.ok(account.pendingBalance !== undefined, `the program holds awards as pending: ${JSON.stringify(account)}`);
  const pendingShown = (await shownText('pending-balance')).replace(/[^0-9]/g, '');
  assert.equal(pendingShown, String(account.pendingBalance), 'the pending balance as the API has it');
  const pendingRows = txs.data.filter((t) => t.status === 'pending').map((t) => t.id);
  assert.ok(pendingRows.length > 0, 'some transactions are pending');
  const badged = await page.$$eval('[data-testid="ledger"] tbody tr[data-tx]', (rows) =>
    rows.filter((r) => r.querySelector('[data-testid="tx-pending"]')).map((r) => r.dataset.tx));
  assert.deepEqual(badged, pendingRows, 'a pending badge on each pending transaction, and only there');
  const shown = await page.$$eval('[data-testid="ledger"] tbody tr[data-tx]', (rows) => rows.map((r) => ({
    id: r.dataset.tx, why: (r.querySelector('[data-testid="why"] .why-text') || r.querySelector('[data-testid="why"]')).textContent.trim(),
  })));
  assert.deepEqual(shown.map((r) => r.id), txs.data.map((t) => t.id), 'the ledger lists the API\'s transactions, newest first');
  for (const r of shown) assert.ok(r.why.length > 0, `transaction ${r.id} has a why`);
  assert.equal(await page.locator('[data-testid="ledger"] [data-testid="why"] details').count(), txs.data.length, 'every why has its raw JSON');
  await page.getByTestId('lots').waitFor();
  const lots = await apiGet(`/v1/accounts/${account.id}/lots?limit=100`);
  if (lots.data.length) {
    assert.equal(await page.locator('[data-testid="lots"] tbody tr:not(.empty)').count(), lots.data.length, 'one row per lot');
  }
  assert.ok((await shownText('tier')).length > 0, 'the tier box says something');
  await shot('member.png');
});

step(`adjust +${ADJUST}: the console shows the new balance, the API agrees, the ledger says why`, async () => {
  const want = ctx.balance + ADJUST;
  await page.getByTestId('adjust-points').fill(String(ADJUST));
  await page.getByTestId('adjust-reason').fill(REASON);
  await page.getByTestId('adjust-submit').click();
  await waitTestIdText('balance', want);
  checkUrl();
  const account = await until(`the API's balance ${want}`, async () => {
    const a = await apiGet(`/v1/accounts/${ctx.account.id}`);
    return a.balance === want ? a : null;
  });
  assert.equal(account.balance, want);
  await page.waitForFunction((reason) => {
    const row = document.querySelector('[data-testid="ledger"] tbody tr[data-tx]');
    return row && row.querySelector('[data-testid="why"]').textContent.includes(reason);
  }, REASON);
  const txs = await apiGet(`/v1/points_transactions?account=${ctx.account.id}&limit=100`);
  const newest = txs.data[0];
  assert.equal(newest.type, 'adjustment');
  assert.equal(newest.points, ADJUST);
  assert.equal(await page.locator('[data-testid="ledger"] tbody tr[data-tx]').first().getAttribute('data-tx'), newest.id,
    'the newest ledger row is the adjustment');
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="ledger"] tbody tr[data-tx]').length === n, txs.data.length);
  await shot('member-after-adjust.png');

  // A refusal is shown, with its code; nothing changes.
  await page.getByTestId('adjust-points').fill(String(-(want + 1000000)));
  await page.getByTestId('adjust-reason').fill('console test refusal');
  await page.getByTestId('adjust-submit').click();
  await page.getByTestId('action-error').waitFor();
  const refusal = await shownText('action-error');
  assert.match(refusal, /insufficient_points/, `the refusal is shown with its code: ${refusal}`);
  assert.equal(await shownText('balance'), String(want));
  assert.equal((await apiGet(`/v1/accounts/${ctx.account.id}`)).balance, want);
  ctx.balance = want;
  checkUrl();
});

step('set the top tier by hand: the member shows it as manual with its reason, the API agrees', async () => {
  const prog = await apiGet(`/v1/programs/${encodeURIComponent(PROGRAM)}`);
  const top = prog.tierConfig.tiers.slice().sort((a, b) => b.rank - a.rank)[0];
  const before = await apiGet(`/v1/accounts/${ctx.account.id}`);
  assert.notEqual(before.tier && before.tier.name, top.name, `${CUSTOMER} starts below ${top.name}`);
  assert.equal(await page.getByTestId('tier-manual').count(), 0, 'no manual badge before');
  await page.getByTestId('tier-set-tier').selectOption(top.name);
  await page.getByTestId('tier-set-until').fill(TIER_UNTIL);
  await page.getByTestId('tier-set-reason').fill(TIER_REASON);
  await page.getByTestId('tier-set-submit').click();
  await page.getByTestId('action-ok').waitFor();
  await waitTestIdText('tier-name', top.name);
  await page.getByTestId('tier-manual').waitFor();
  const fact = await shownText('manual-tier');
  assert.ok(fact.startsWith(top.name) && fact.includes(TIER_REASON), `the manual tier fact: ${fact}`);
  assert.ok(fact.includes(TIER_UNTIL.replace('T', ' ') + ' UTC'), `until shown in UTC, as typed: ${fact}`);
  assert.equal(await shownText('tier-manual'), 'manual', 'the tier held is the one set by hand');
  const account = await until(`the API's tier ${top.name}`, async () => {
    const a = await apiGet(`/v1/accounts/${ctx.account.id}`);
    return a.tier && a.tier.name === top.name ? a : null;
  });
  assert.equal(account.manualTier.tier, top.name);
  assert.equal(account.manualTier.reason, TIER_REASON);
  assert.equal(Date.parse(account.manualTier.until), Date.parse(TIER_UNTIL + ':00Z'), `until ${account.manualTier.until}`);
  assert.equal(account.balance, ctx.balance, 'a tier change moves no points');
  await shot('member-tier-set.png');
});

step('simulate a payment: the rules table matches the API\'s simulation; nothing is written', async () => {
  await page.getByTestId('nav-simulate').click();
  await page.waitForURL((u) => u.hash === '#/simulate');
  checkUrl();
  const tag = randomUUID().slice(0, 8);
  const envelope = {
    id: `sim_console_${tag}`, type: 'payment.completed', created: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    data: { id: `pay_sim_${tag}`, customer: CUSTOMER, amount: 12345, currency: ctx.program.currency },
  };
  const input = page.getByTestId('simulate-input');
  const prefill = JSON.parse(await input.inputValue());
  assert.equal(prefill.type, 'payment.completed', 'the textarea holds an example payment');
  assert.equal(prefill.data.currency, ctx.program.currency, 'the example is in the program\'s currency');
  await input.fill(JSON.stringify(envelope, null, 2));
  await page.getByTestId('simulate-submit').click();
  await page.locator('[data-testid="rules"] tbody tr[data-rule]').first().waitFor();
  const shown = await page.locator('[data-testid="rules"] tbody tr[data-rule]').count();
  assert.ok(shown >= 1, 'at least one rule row');
  const sim = await apiPost('/v1/simulate', envelope);
  assert.equal(sim.object, 'simulation');
  assert.equal(shown, sim.rules.length, 'one row per rule of the API\'s answer');
  assert.equal(await page.locator('[data-testid="sim-transactions"] tbody tr[data-tx]').count(), sim.transactions.length,
    'one row per would-be transaction');
  const whys = await page.$$eval('[data-testid="sim-transactions"] [data-testid="why"]', (els) => els.map((e) => e.textContent.trim()));
  for (const w of whys) assert.ok(w.length > 0, 'every would-be transaction has a why');
  const account = await apiGet(`/v1/accounts/${ctx.account.id}`);
  assert.equal(account.balance, ctx.balance, 'the simulation changed no balance');
  checkUrl();
});

step('backtest with every rule multiplier doubled: charts drawn, a rule that awarded differs', async () => {
  const programs = (await apiGet('/v1/programs?limit=100')).data;
  const double = (m) => (m === undefined || m === null ? 2 : typeof m === 'number' ? m * 2 : String(Number(m) * 2));
  const candidate = {
    programs: programs.map((p) => {
      const c = { ...p };
      delete c.object;
      c.earningRules = (c.earningRules || []).map((r) => ({ ...r, multiplier: double(r.multiplier) }));
      return c;
    }),
  };
  await page.getByTestId('nav-backtest').click();
  await page.waitForURL((u) => u.hash === '#/backtest');
  checkUrl();
  const prefill = JSON.parse(await page.getByTestId('backtest-input').inputValue());
  assert.deepEqual(prefill.programs.map((p) => p.id), programs.map((p) => p.id), 'the textarea holds the current programs');
  await page.getByTestId('backtest-input').fill(JSON.stringify(candidate, null, 2));
  await page.getByTestId('backtest-submit').click();
  await page.getByTestId('backtest-charts').waitFor({ timeout: 180000 });
  const boxes = await page.$$eval('[data-testid="backtest-charts"] canvas, [data-testid="backtest-charts"] svg', (els) =>
    els.map((e) => { const r = e.getBoundingClientRect(); return { w: r.width, h: r.height }; }));
  assert.ok(boxes.some((b) => b.w > 0 && b.h > 0), `a chart with a size in backtest-charts: ${JSON.stringify(boxes)}`);
  assert.ok(await page.locator('[data-testid="backtest-charts"] canvas').count() >= 1, 'the days line chart (uPlot) is drawn');
  const rows = await page.$$eval(`[data-testid="backtest-charts"] [data-program="${PROGRAM}"] [data-testid="backtest-rules"] tbody tr[data-rule]`,
    (trs) => trs.map((tr) => ({ rule: tr.dataset.rule, cells: [...tr.querySelectorAll('td')].slice(1).map((td) => td.textContent) })));
  assert.ok(rows.length > 0, `per-rule rows for ${PROGRAM}`);
  const table = rows.map((r) => ({ rule: r.rule, baseline: parseShown(r.cells[0]), candidate: parseShown(r.cells[1]), difference: parseShown(r.cells[2]) }));
  const awarded = table.filter((r) => r.baseline > 0);
  assert.ok(awarded.length > 0, `a rule that awarded: ${JSON.stringify(table)}`);
  assert.ok(awarded.some((r) => r.difference !== 0), `a rule that awarded differs: ${JSON.stringify(table)}`);
  const bt = await apiPost('/v1/backtest', { config: candidate });
  const api = bt.programs.find((p) => p.program === PROGRAM);
  assert.deepEqual(table, api.rules.map((r) => ({ rule: r.rule, baseline: r.baseline, candidate: r.candidate, difference: r.difference })),
    'the per-rule table is the API\'s');
  await shot('backtest.png');
  checkUrl();
});

step('forget the key; a wrong key shows the error on the key form', async () => {
  await page.getByTestId('forget-key').click();
  await page.getByTestId('key-input').waitFor();
  assert.equal(await page.evaluate((k) => Object.keys(sessionStorage).some((n) => sessionStorage.getItem(n) === k), KEY), false,
    'the key is gone from sessionStorage');
  const wrong = 'sk_console_wrong_' + randomUUID().slice(0, 8);
  expectedAuth = `Bearer ${wrong}`;
  await page.getByTestId('key-input').fill(wrong);
  await page.getByTestId('key-submit').click();
  await page.getByTestId('key-error').waitFor();
  assert.ok((await shownText('key-error')).length > 0, 'the 401 message is shown');
  assert.ok(await page.getByTestId('key-input').isVisible(), 'the key form is shown again');
  assert.ok(!page.url().includes(wrong), 'the wrong key is not in the URL either');
  checkUrl();
});

for (const { name, fn } of steps) {
  if (failed) {
    console.log(`skip - ${name}`);
    continue;
  }
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}\n  ${String(e && e.stack || e).split('\n').join('\n  ')}`);
    try {
      await shot('failure.png');
      console.log(`  at ${page.url()}`);
    } catch (e2) { /* the page is gone */ }
  }
}
await browser.close();
const skipped = steps.length - passed - failed;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);

// The gateway's technician page in a real browser on a phone-sized screen
// (Debian's chromium, driven by playwright-core): login, the overview,
// pairing (with the key the gateway makes, shown once), removal with
// its confirmation, the language switch, a test
// alarm and logout, without JavaScript on the page, with axe-core's WCAG
// 2.1 AA checks on every page in both languages, no sideways scrolling at
// 360 px, and touch targets of at least 44 px.
//
// Started by tests/tests/technician_browser.rs, which runs a backend and a
// gateway and makes the technician. Prints `CHECK ok|FAIL name — detail`
// per check and `DONE passed=n failed=n`; exit code 0 only when none
// failed.
//
// Environment:
//   TRYGG_TECH_URL        https://127.0.0.1:PORT (the gateway's own certificate)
//   TRYGG_TECH_USER       the technician's username
//   TRYGG_TECH_PASSWORD   and password
//   TRYGG_CHROMIUM        the browser (default /usr/bin/chromium)

import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_PATH = require.resolve('axe-core/axe.min.js');
const WCAG_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
const BASE = (process.env.TRYGG_TECH_URL || '').replace(/\/$/, '');
const USER = process.env.TRYGG_TECH_USER || '';
const PASSWORD = process.env.TRYGG_TECH_PASSWORD || '';
const CHROMIUM = process.env.TRYGG_CHROMIUM || '/usr/bin/chromium';

const counts = { passed: 0, failed: 0 };
const say = (line) => process.stdout.write(line + '\n');
class Assertion extends Error {}
function assert(cond, msg) { if (!cond) throw new Assertion(msg); }

async function check(name, fn) {
  try {
    const detail = await fn();
    counts.passed++;
    say(`CHECK ok ${name}${detail ? ' — ' + detail : ''}`);
    return true;
  } catch (e) {
    counts.failed++;
    say(`CHECK FAIL ${name} — ${String(e instanceof Assertion ? e.message : e.stack).replace(/\n/g, '\n    ')}`);
    return false;
  }
}

async function axeCheck(page, label) {
  await page.addScriptTag({ path: AXE_PATH });
  const result = await page.evaluate(async (tags) => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return r.violations.map((v) => `[${v.impact}] ${v.id}: ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  }, WCAG_TAGS);
  assert(result.length === 0, `WCAG 2.1 AA violations on ${label}:\n  ${result.join('\n  ')}`);
  return `${label}: no violations`;
}

/** Nothing wider than the screen, and every control at least 44 px high. */
async function phoneFit(page, label) {
  const r = await page.evaluate(() => {
    const small = [...document.querySelectorAll('button, a.button, input:not([type=hidden]), select')]
      .filter((e) => e.getBoundingClientRect().height < 44)
      .map((e) => e.id || e.outerHTML.slice(0, 80));
    // Text running out of its box (a long key, an id) shows as an element
    // wider inside than its box.
    const spill = [...document.querySelectorAll('main *')]
      .filter((e) => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible' && e.clientWidth > 0)
      .map((e) => e.id || e.className || e.tagName);
    return { wide: document.documentElement.scrollWidth, view: window.innerWidth, small, spill };
  });
  assert(r.wide <= r.view, `${label}: ${r.wide} px wide on a ${r.view} px screen (sideways scrolling)`);
  assert(r.spill.length === 0, `${label}: text runs out of its box in ${r.spill.join(', ')}`);
  assert(r.small.length === 0, `${label}: touch targets under 44 px: ${r.small.join(', ')}`);
  return `${label}: fits ${r.view} px, targets >= 44 px`;
}

if (!BASE || !USER) {
  say('CHECK FAIL setup — TRYGG_TECH_URL and TRYGG_TECH_USER must be set (run through cargo test -p trygg-tests --test technician_browser)');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// A phone: 360 x 740, touch, JavaScript off (the page needs none). The
// gateway's certificate is its own: the Rust tests check it and its
// fingerprint; here the browser is told to accept it. bypassCSP lets axe
// be injected (the page's policy rightly forbids scripts).
const context = await browser.newContext({
  viewport: { width: 360, height: 740 },
  isMobile: true,
  hasTouch: true,
  locale: 'nb-NO',
  ignoreHTTPSErrors: true,
  bypassCSP: true,
  javaScriptEnabled: true, // for axe and the checks only; the page has no script
});
const page = await context.newPage();

try {
  await check('the page has no script of its own', async () => {
    await page.goto(`${BASE}/login`);
    const n = await page.evaluate(() => document.querySelectorAll('script').length);
    assert(n === 0, `${n} script element(s) on /login`);
    const csp = (await (await page.request.get(`${BASE}/login`)).headers())['content-security-policy'] || '';
    assert(csp.includes("default-src 'none'"), `CSP: ${csp}`);
  });

  for (const lang of ['nb', 'en']) {
    await check(`login page (${lang}): axe and phone fit`, async () => {
      await page.goto(`${BASE}/lang/${lang}?back=/login`);
      assert(await page.getAttribute('html', 'lang') === lang, `html lang is not ${lang}`);
      await axeCheck(page, `/login (${lang})`);
      return phoneFit(page, `/login (${lang})`);
    });
  }

  await check('a wrong password shows the error, accessibly', async () => {
    await page.fill('#username', USER);
    await page.fill('#password', 'not the password');
    await Promise.all([page.waitForNavigation(), page.click('#login-button')]);
    const text = await page.textContent('#login-error');
    assert(/Wrong username or password/.test(text || ''), `no login error: ${text}`);
    assert(await page.getAttribute('#login-error', 'role') === 'alert', 'the error is no alert');
    return axeCheck(page, '/login with an error');
  });

  await check('login leads to the overview with devices and status', async () => {
    await page.fill('#username', USER);
    await page.fill('#password', PASSWORD);
    await Promise.all([page.waitForNavigation(), page.click('#login-button')]);
    assert(new URL(page.url()).pathname === '/', `at ${page.url()}`);
    const cards = await page.locator('#devices li.card').count();
    assert(cards >= 1, 'no device cards');
    assert(await page.locator('#uplink').count() === 1, 'no uplink status');
    return `${cards} devices`;
  });

  for (const lang of ['en', 'nb']) {
    await check(`overview (${lang}): axe and phone fit`, async () => {
      await page.goto(`${BASE}/lang/${lang}?back=/`);
      assert(await page.getAttribute('html', 'lang') === lang, `html lang is not ${lang}`);
      await axeCheck(page, `/ (${lang})`);
      return phoneFit(page, `/ (${lang})`);
    });
  }

  await check('the language switch goes to the other language and back to the same page', async () => {
    await page.goto(`${BASE}/devices/new`);
    await Promise.all([page.waitForNavigation(), page.click('#lang-switch')]);
    assert(new URL(page.url()).pathname === '/devices/new', `at ${page.url()}`);
    assert(await page.getAttribute('html', 'lang') === 'en', 'not English after the switch');
  });

  await check('pair a device with the form', async () => {
    await page.goto(`${BASE}/devices/new`);
    await axeCheck(page, '/devices/new');
    await phoneFit(page, '/devices/new');
    await page.fill('#id', 'button-9');
    await page.selectOption('#type', 'pull_cord');
    await page.fill('#room', 'bathroom');
    await page.fill('#resident', 'r-7f3a');
    await Promise.all([page.waitForNavigation(), page.click('#pair-button')]);
    // No key typed in: the gateway made one and shows it this once.
    const key = (await page.textContent('#device-key')) || '';
    assert(key.length >= 16, `no generated key shown: ${await page.textContent('main')}`);
    await axeCheck(page, 'the generated key');
    await phoneFit(page, 'the generated key');
    await Promise.all([page.waitForNavigation(), page.click('#continue')]);
    assert(new URL(page.url()).pathname === '/devices/button-9', `at ${page.url()}`);
    assert(/Paired/.test(await page.textContent('#message') || ''), 'no "Paired" message');
    assert((await page.textContent('.room')) === 'bathroom', 'room not shown');
    await axeCheck(page, '/devices/button-9');
    return phoneFit(page, '/devices/button-9');
  });

  await check('remove asks first, then removes', async () => {
    await Promise.all([page.waitForNavigation(), page.click('#remove-link')]);
    assert(new URL(page.url()).pathname === '/devices/button-9/remove', `at ${page.url()}`);
    await axeCheck(page, '/devices/button-9/remove');
    await phoneFit(page, '/devices/button-9/remove');
    await Promise.all([page.waitForNavigation(), page.click('#remove-confirm')]);
    assert(/Removed: button-9/.test(await page.textContent('#message') || ''), 'no "Removed" message');
    const gone = await page.request.get(`${BASE}/devices/button-9`);
    assert(gone.status() === 404, `button-9 still there: ${gone.status()}`);
  });

  await check('a test alarm from the overview is confirmed, with its time', async () => {
    await page.goto(`${BASE}/`);
    await Promise.all([page.waitForNavigation({ timeout: 40000 }), page.click('#test-alarm-button')]);
    assert(await page.getAttribute('#test-result', 'data-confirmed') === 'true', await page.textContent('main'));
    const text = await page.textContent('#test-result');
    await axeCheck(page, 'the test alarm result');
    return text;
  });

  await check('logout ends the session', async () => {
    await page.goto(`${BASE}/`);
    await Promise.all([page.waitForNavigation(), page.click('#logout-button')]);
    assert(new URL(page.url()).pathname === '/login', `at ${page.url()}`);
    await page.goto(`${BASE}/`);
    assert(new URL(page.url()).pathname === '/login', 'the overview opened after logout');
  });
} finally {
  await browser.close();
}

say(`DONE passed=${counts.passed} failed=${counts.failed}`);
process.exit(counts.failed === 0 ? 0 : 1);

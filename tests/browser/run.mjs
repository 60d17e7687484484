#!/usr/bin/env node
// Drives Debian's headless Chromium through one scenario for the browser tests
// (tests/e2e/browser.rs). A thin driver on purpose: it does the steps and reports what it saw;
// every judgement is made in Rust.
//
// Usage: node run.mjs < scenario.json   (or: node run.mjs '<scenario JSON>')
//
// Scenario:
//   url          the page to open first (required)
//   locale       e.g. "de-DE": sent as Accept-Language and used as navigator.language ("en-US")
//   viewport     [width, height] in CSS pixels ([1280, 800])
//   javascript   false runs the pages with JavaScript disabled (true)
//   screenshots  the folder that relative screenshot paths are in (the working directory)
//   steps        a list of one-key objects, done in order:
//     {"click": sel} {"check": sel} {"uncheck": sel} {"fill": [sel, value]} {"select": [sel, value]}
//     {"press": key or [keys]}   keys go to whatever has focus, e.g. "Tab", "Shift+Tab", "Enter"
//     {"type": text}   types text, a key press per character, into whatever has focus
//     {"tab_to": sel}  presses Tab until an element matching sel has focus (at most 40 times);
//                      its result: what had focus after each press, as "focused" tells it
//     {"reload": true} {"goto": url} {"viewport": [width, height]}
//     {"text": sel}  inner text    {"checked": sel}  bool    {"value": sel}  input value
//     {"count": sel} matches       {"focused": true}  what has focus: {tag, type, name, value, text}
//     {"title": true} {"url": true} {"screenshot": path} {"axe": true}  axe-core's violations
//     {"aria": sel}  what assistive technology is told of it: Playwright's ARIA snapshot (YAML
//                    lines of role "accessible name")
//
// Prints one JSON object on stdout: {title, url, results (one per step, null for actions),
// requests [{method, url, status, type, bytes, step, failure}] (step: the index of the step
// that made the request, null while `url` opens; bytes: the body as received, decoded),
// console [{type, text}], error (set when a step failed; the exit status is then 1)}.
//
// Actions wait for any page load they start, so a step after a form submission sees the new
// page. axe-core needs JavaScript in the page, so with JavaScript disabled it judges a copy of
// the current document in a context of its own, which this run's requests do not include.

import { readFileSync, mkdirSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
// How long an action may take to start a page load before we take it that it started none.
const SETTLE_MS = 150;
const TIMEOUT_MS = 15000;

const scenario = JSON.parse(process.argv[2] ?? readFileSync(0, 'utf8'));
const output = { title: null, url: null, results: [], requests: [], console: [], error: null };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const [width, height] = scenario.viewport ?? [1280, 800];
  const locale = scenario.locale ?? 'en-US';
  const javascript = scenario.javascript ?? true;
  const context = await browser.newContext({ viewport: { width, height }, locale, javaScriptEnabled: javascript });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  // The index of the step being done, null while `url` opens: what each request is filed under.
  let current = null;
  // Main-frame navigations started and documents loaded, to wait out a load an action began.
  let navigations = 0;
  let loads = 0;
  const recorded = new Map();
  const isPageLoad = (request) => request.isNavigationRequest() && request.frame() === page.mainFrame();
  context.on('request', (request) => {
    const entry = { method: request.method(), url: request.url(), status: null, type: request.resourceType(), bytes: 0, step: current };
    recorded.set(request, entry);
    output.requests.push(entry);
    // A redirect is the same navigation going on, with one load at its end.
    if (isPageLoad(request) && !request.redirectedFrom()) navigations += 1;
  });
  // Bodies still being read, awaited before the report is printed.
  const reading = new Set();
  context.on('response', (response) => {
    const entry = recorded.get(response.request());
    if (!entry) return;
    entry.status = response.status();
    const read = response.body()
      .then((body) => { entry.bytes = body.length; })
      // Redirects and aborted loads have no body.
      .catch(() => {})
      .finally(() => reading.delete(read));
    reading.add(read);
  });
  context.on('requestfailed', (request) => {
    const entry = recorded.get(request);
    if (entry) entry.failure = request.failure()?.errorText ?? 'failed';
    if (isPageLoad(request)) loads += 1;
  });
  page.on('load', () => { loads += 1; });
  page.on('console', (message) => output.console.push({ type: message.type(), text: message.text() }));
  page.on('pageerror', (error) => output.console.push({ type: 'pageerror', text: String(error) }));

  const settle = async () => {
    await page.waitForTimeout(SETTLE_MS);
    const deadline = Date.now() + TIMEOUT_MS;
    while (loads < navigations && Date.now() < deadline) await page.waitForTimeout(20);
    await page.waitForLoadState('load');
  };
  const screenshot = async (path) => {
    const target = resolve(scenario.screenshots ?? '.', path);
    mkdirSync(dirname(target), { recursive: true });
    // Written aside and renamed, so two tests taking the same picture never leave a torn file.
    const aside = `${target}.${process.pid}.tmp`;
    await page.screenshot({ path: aside, type: 'png', fullPage: true });
    renameSync(aside, target);
    return target;
  };
  const axe = async () => {
    // axe-core runs in the page, which a page without JavaScript cannot do: it is then judged
    // as a copy of its current document, served from memory in a context of its own.
    let judged = page;
    let copy = null;
    if (!javascript) {
      copy = await browser.newContext({ viewport: page.viewportSize(), locale });
      judged = await copy.newPage();
      const html = await page.content();
      await judged.route(page.url(), (route) => route.fulfill({ contentType: 'text/html; charset=utf-8', body: html }));
      await judged.goto(page.url());
    }
    try {
      await judged.evaluate(AXE_SOURCE);
      const report = await judged.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
      return report.violations.map(({ id, impact, help, nodes }) => ({
        id, impact, help, targets: nodes.map((node) => node.target.join(' ')),
      }));
    } finally {
      await copy?.close();
    }
  };
  // Locators work in pages without JavaScript where page.evaluate would hang: ask through one.
  const focused = (selector) => page.locator(':focus').evaluateAll((elements, selector) => elements.map((element) => ({
    tag: element.tagName.toLowerCase(),
    type: element.getAttribute('type'),
    name: element.getAttribute('name'),
    value: element.getAttribute('value'),
    text: element.innerText ?? '',
    matches: typeof selector === 'string' && element.matches(selector),
  }))[0] ?? null, selector);
  const tabTo = async (selector) => {
    const path = [];
    while (path.length < 40) {
      await page.keyboard.press('Tab');
      const now = await focused(selector);
      path.push(now);
      if (now?.matches) return path.map(({ matches, ...element }) => element);
    }
    throw new Error(`${selector} never had focus; Tab went through ${JSON.stringify(path.slice(0, 8))} …`);
  };

  const actions = {
    click: async (selector) => page.locator(selector).click(),
    check: async (selector) => page.locator(selector).check(),
    uncheck: async (selector) => page.locator(selector).uncheck(),
    fill: async ([selector, value]) => page.locator(selector).fill(value),
    select: async ([selector, value]) => { await page.locator(selector).selectOption(value); },
    press: async (keys) => {
      for (const [index, key] of [keys].flat().entries()) {
        if (index > 0) await settle();
        await page.keyboard.press(key);
      }
    },
    type: async (text) => page.keyboard.type(text),
    reload: async () => page.reload(),
    goto: async (url) => page.goto(url),
    viewport: async ([w, h]) => page.setViewportSize({ width: w, height: h }),
  };
  const queries = {
    text: (selector) => page.locator(selector).innerText(),
    checked: (selector) => page.locator(selector).isChecked(),
    value: (selector) => page.locator(selector).inputValue(),
    count: (selector) => page.locator(selector).count(),
    focused: async () => {
      const element = await focused();
      if (element) delete element.matches;
      return element;
    },
    tab_to: tabTo,
    title: () => page.title(),
    url: () => page.url(),
    screenshot,
    axe,
    aria: (selector) => page.locator(selector).ariaSnapshot(),
  };

  try {
    await page.goto(scenario.url);
    for (const [index, step] of (scenario.steps ?? []).entries()) {
      const [[name, argument]] = Object.entries(step);
      current = index;
      if (actions[name]) {
        await actions[name](argument);
        await settle();
        output.results.push(null);
      } else if (queries[name]) {
        output.results.push(await queries[name](argument));
      } else {
        throw new Error(`unknown step ${JSON.stringify(step)}`);
      }
    }
    await page.waitForLoadState('networkidle').catch(() => {});
    await Promise.all([...reading]);
  } catch (error) {
    output.error = `step ${output.results.length} (${JSON.stringify((scenario.steps ?? [])[output.results.length] ?? 'open')}): ${error.message}`;
  }
  output.title = await page.title().catch(() => null);
  output.url = page.url();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(output));
process.exitCode = output.error ? 1 : 0;

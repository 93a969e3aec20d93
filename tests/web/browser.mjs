// Headless Chromium for the browser tests (Debian's, driven by
// playwright-core): pages that record every request leaving the test
// server's origin and every page error, for the tests to assert none.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Launch Chromium for pages served by `server` ({url}). */
export async function launch(server) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  const external = [];
  const pageErrors = [];
  /** A page in a fresh context (`contextOptions` as playwright's newContext). */
  async function newPage(contextOptions = {}) {
    const context = await browser.newContext(contextOptions);
    const page = await context.newPage();
    // Observed, not intercepted (interception would slow every load down).
    page.on('request', (r) => {
      const url = r.url();
      if (!(url.startsWith(server.url + '/') || url.startsWith('blob:') || url.startsWith('data:'))) external.push(url);
    });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('response', (r) => r.status() >= 400 && pageErrors.push(`HTTP ${r.status()} ${r.url()}`));
    // (Chromium also logs failed loads to the console, without the URL.)
    page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && pageErrors.push(m.text()));
    return page;
  }
  return { browser, newPage, external, pageErrors, close: () => browser.close() };
}

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { runDir } from './tools.js';

/** Where page screenshots go (git-ignored, like all of .run/). */
export const screenshotDir = join(runDir, 'screenshots');

/** Debian's Chromium (scripts/tools.sh debian_packages); a test that needs it fails without it. */
export function chromiumPath(): string {
  const found = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
  if (!found) throw new Error('Chromium is missing: run `make tools` (Debian package chromium)');
  return found;
}

/** Headless Chromium driven by playwright-core (no browser download: the Debian build). */
export function startChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    // Root in a container: no user-namespace sandbox; /dev/shm may be small.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
}

/** A full-page PNG under .run/screenshots/<name>.png; returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(screenshotDir, { recursive: true });
  const path = join(screenshotDir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

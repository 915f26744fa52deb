// Helpers for driving JupyterLab in the browser tests.
import { APIRequestContext, expect, Locator, Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

export const TOKEN = process.env.LAB_TOKEN || 'burstlab-ui-test-token';

/** A fresh named workspace (no restored tabs), logged in with ?token= (which sets the cookie). */
export async function openLab(page: Page, workspace: string): Promise<void> {
  const ws = workspace.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  await page.goto(`/lab/workspaces/${ws}?reset&token=${TOKEN}`);
  await page.locator('#jupyterlab-splash').waitFor({ state: 'detached', timeout: 60000 });
  await expect(page.locator('.jp-Launcher')).toBeVisible({ timeout: 60000 });
}

/** New notebook from the launcher; returns it once its kernel is idle (a run before that is dropped). */
export async function newNotebook(page: Page): Promise<Locator> {
  await page.locator('.jp-LauncherCard[data-category="Notebook"]').first().click();
  const nb = page.locator('.jp-NotebookPanel').last();
  const status = page.locator('#jp-main-statusbar');
  await expect(status).toContainText('| Idle', { timeout: 60000 });
  await expect(status).not.toContainText(/Connecting|Initializing|Starting/);
  return nb;
}

export function cell(nb: Locator, index: number): Locator {
  return nb.locator('.jp-Cell').nth(index);
}

/** Type `lines` into cell `index` (creating cells below as needed), leaving the cell in edit mode. */
export async function typeCell(page: Page, nb: Locator, index: number, lines: string[]): Promise<Locator> {
  const cells = nb.locator('.jp-Cell');
  while ((await cells.count()) <= index) {
    await cells.last().locator('.cm-content').click();
    await page.keyboard.press('Escape');
    await page.keyboard.press('b');
  }
  const c = cells.nth(index);
  await c.locator('.cm-content').click();
  // One input event for the whole source, as a paste: no per-key round trips (typing a line key by key took
  // seconds), and no auto-indent or auto-closed brackets to work around.
  await page.keyboard.insertText(lines.join('\n'));
  return c;
}

/** The source of a cell as the editor shows it. */
export async function cellSource(c: Locator): Promise<string> {
  const lines = await c.locator('.cm-content .cm-line').allInnerTexts();
  return lines.join('\n');
}

export async function runCell(page: Page, c: Locator): Promise<void> {
  await c.locator('.cm-content').click();
  await page.keyboard.press('Control+Enter');
}

/** The prompt count ("[3]:") once the cell has finished. */
export async function waitExecuted(c: Locator, timeout = 60000): Promise<void> {
  await expect(c.locator('.jp-InputPrompt')).toHaveText(/\[\d+\]:/, { timeout });
}

/** GET {base}burstlab/api/{path} with the token, as the REST API's clients do. */
export async function api<T>(request: APIRequestContext, path: string): Promise<T> {
  const r = await request.get(`/burstlab/api/${path}`, { headers: { Authorization: `token ${TOKEN}` } });
  expect(r.ok(), `${path}: ${r.status()} ${await r.text()}`).toBeTruthy();
  return (await r.json()) as T;
}

/** The agent badge's text: the CSS `content` of the prompt's ::after, as the computed style gives it. */
export async function badgeText(c: Locator): Promise<string> {
  return c.locator('.jp-InputPrompt').evaluate(el => getComputedStyle(el, '::after').content);
}

/** The badge sits under the execution count, inside the prompt column, with AA contrast (4.5:1). */
export async function expectBadgeBesidePrompt(c: Locator): Promise<void> {
  const facts = await c.locator('.jp-InputPrompt').evaluate(el => {
    const after = getComputedStyle(el, '::after');
    const range = document.createRange();
    range.selectNodeContents(el); // the count's text (the ::after box is not part of the range)
    const text = range.getBoundingClientRect();
    const box = el.getBoundingClientRect();
    const rgb = (s: string) => (s.match(/[\d.]+/g) || []).map(Number);
    const lum = (c: number[]) => {
      const [r, g, b] = c.slice(0, 3).map(v => {
        const x = v / 255;
        return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const fg = lum(rgb(after.color));
    const bg = lum(rgb(after.backgroundColor));
    return {
      contrast: (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05),
      fontPx: parseFloat(after.fontSize),
      promptHeight: box.height,
      textBottom: text.bottom - box.top,
      lineHeight: parseFloat(getComputedStyle(el).lineHeight) || 17
    };
  });
  expect(facts.contrast, JSON.stringify(facts)).toBeGreaterThanOrEqual(4.5);
  expect(facts.fontPx).toBeGreaterThanOrEqual(10);
  // The prompt grew to hold the badge under the count: taller than the count's own line.
  expect(facts.promptHeight, JSON.stringify(facts)).toBeGreaterThan(facts.lineHeight * 2);
}

// Screenshots go to test-results/shots; with UPDATE_SCREENSHOTS=1 also to docs/screenshots/ (the docs' pictures).
const SHOTS = path.resolve(__dirname, '..', 'test-results', 'shots');
const DOCS = path.resolve(__dirname, '..', '..', '..', 'docs', 'screenshots');
export async function shot(target: Page | Locator, name: string): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  await target.screenshot({ path: file });
  if (process.env.UPDATE_SCREENSHOTS) {
    fs.mkdirSync(DOCS, { recursive: true });
    fs.copyFileSync(file, path.join(DOCS, name));
  }
}

/** From now on, record the text of every notification shown (a toast can be gone before a test looks). */
export async function recordToasts(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { burstlabToasts?: string[] };
    if (w.burstlabToasts) {
      w.burstlabToasts.length = 0;
      return;
    }
    const seen: string[] = [];
    w.burstlabToasts = seen;
    new MutationObserver(() => {
      for (const t of Array.from(document.querySelectorAll('.Toastify__toast'))) {
        const text = t.textContent ?? '';
        if (!seen.includes(text)) {
          seen.push(text);
        }
      }
    }).observe(document.body, { childList: true, subtree: true });
  });
}

/** The notifications recorded since `recordToasts`. */
export async function toastsSeen(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { burstlabToasts?: string[] }).burstlabToasts ?? []);
}

/**
 * Release what a spec held on the suite's one server: every running session and every budget of the test user (the
 * specs after it, Notebook 7's above all, find the GPUs free and no budget in force).
 */
export async function releaseAll(request: APIRequestContext): Promise<void> {
  const headers = { Authorization: `token ${TOKEN}` };
  const sessions = (await api<{ sessions: { id: string }[] }>(request, 'sessions')).sessions;
  for (const s of sessions) {
    await request.delete(`/burstlab/api/sessions/${encodeURIComponent(s.id)}`, { headers });
  }
  const budgets = (await api<{ budgets: { scope: string; name: string }[] }>(request, 'budgets')).budgets;
  for (const b of budgets) {
    await request.delete(`/burstlab/api/budgets/${b.scope}/${encodeURIComponent(b.name)}`, { headers });
  }
}

// Helpers for driving JupyterLab in the browser tests.
import { APIRequestContext, expect, Locator, Page } from '@playwright/test';

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
  for (let i = 0; i < lines.length; i++) {
    if (i > 0) {
      await page.keyboard.press('Enter');
      await page.keyboard.press('Home'); // no auto-indent surprises
    }
    await page.keyboard.type(lines[i]);
  }
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

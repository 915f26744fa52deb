// The burstlab kernels (docs/kernels.md): JupyterLab's launcher shows "Python 3 (burstlab · H100)" and "(… · A100)"
// (lab_config.py installs them for the declared types); one opens a notebook whose own kernel runs on a leased GPU,
// which the status bar meters; a budget's hard stop on it is told by a notification; a start a budget refuses shows
// burstlab's message, not a generic kernel error.
import { expect, Page, test } from '@playwright/test';

import { api, openLab, recordToasts, releaseAll, runCell, shot, TOKEN, typeCell, waitExecuted } from './lab';

const AUTH = { Authorization: `token ${TOKEN}` };
const REFUSED = 'refused-by-budget.ipynb';

test.describe.configure({ mode: 'serial' });

let page: Page;
/** The server's root folder as the kernels' sessions name their notebooks (JPY_SESSION_NAME is a full path). */
let root = '';

async function budget(notebook: string, limitUsd: number | null): Promise<void> {
  const route = `/burstlab/api/budgets/notebook/${encodeURIComponent(notebook)}`;
  const r =
    limitUsd === null
      ? await page.request.delete(route, { headers: AUTH })
      : await page.request.put(route, { headers: AUTH, data: { limit_usd: limitUsd, soft_fraction: 0.8 } });
  expect(r.ok(), `${route}: ${r.status()} ${await r.text()}`).toBeTruthy();
}

test.beforeAll(async ({ browser }) => {
  page = await browser.newPage();
});

test.afterAll(async () => {
  await releaseAll(page.request).catch(() => undefined); // the next spec finds the GPUs free, no budget set
  await page?.close();
});

test('the launcher shows the burstlab kernels; one runs a notebook on a leased H100, metered; a budget stop is told', async () => {
  await openLab(page, 'burstlab-kernels');
  const cards = page.locator('.jp-LauncherCard[data-category="Notebook"]');
  await expect(cards.filter({ hasText: 'Python 3 (burstlab · H100)' })).toHaveCount(1);
  await expect(cards.filter({ hasText: 'Python 3 (burstlab · A100)' })).toHaveCount(1);
  await shot(page.locator('.jp-Launcher-content, .jp-Launcher').first(), 'launcher-kernels.png');

  await cards.filter({ hasText: 'Python 3 (burstlab · H100)' }).click();
  const status = page.locator('#jp-main-statusbar');
  await expect(status).toContainText('Python 3 (burstlab · H100) | Idle', { timeout: 60000 });
  await expect(status).not.toContainText(/Connecting|Initializing|Starting/);
  const nb = page.locator('.jp-NotebookPanel').last();
  const path = (await page.locator('.lm-TabBar-tab.jp-mod-current .lm-TabBar-tabLabel').first().textContent())!.trim();
  const c = await typeCell(page, nb, 0, ['import os', "os.environ['CUDA_VISIBLE_DEVICES']"]);
  await runCell(page, c);
  await waitExecuted(c, 60000);
  await expect(c.locator('.jp-OutputArea-executeResult')).toHaveText(/'\d+'/); // the kernel holds one GPU
  await expect(page.locator("#burstlab-status")).toHaveText(/^H100 · \d+s · \$\d+\.\d+( · \$[\d.]+ left)?$/);
  const sessions = (await api<{ sessions: { notebook: string; gpu_type: string }[] }>(page.request, 'sessions')).sessions;
  // Attributed to the notebook (the server names it in JPY_SESSION_NAME).
  const mine = sessions.filter(s => s.notebook.endsWith(path));
  expect(mine.map(s => s.gpu_type), JSON.stringify(sessions)).toEqual(['H100']);
  root = mine[0].notebook.slice(0, -path.length);

  // A budget set below what the notebook has spent stops its kernel's session at once: the server records why
  // (ended_by "budget") and the lab says so, with the numbers.
  await recordToasts(page);
  await budget(mine[0].notebook, 0.000001);
  const told = page.locator('.Toastify__toast', { hasText: `burstlab stopped the H100 session of ${path}` });
  await expect(told).toContainText(/Budget \S+ spent \(\$[\d.]+ of \$[\d.]+\)/, { timeout: 30000 });
  await expect(page.locator('#burstlab-status')).toBeHidden();
  await budget(mine[0].notebook, null);
});

test('a kernel start a budget refuses shows burstlab\'s message', async () => {
  // A notebook on the H100 kernel whose budget is already spent (a limit below one second of an H100).
  const notebook = `${root}${REFUSED}`;
  await budget(notebook, 0.000001);
  const created = await page.request.put(`/api/contents/${REFUSED}`, {
    headers: AUTH,
    data: {
      type: 'notebook',
      format: 'json',
      content: {
        nbformat: 4,
        nbformat_minor: 5,
        metadata: { kernelspec: { name: 'burstlab-h100', display_name: 'Python 3 (burstlab · H100)', language: 'python' } },
        cells: []
      }
    }
  });
  expect(created.ok(), await created.text()).toBeTruthy();
  try {
    await page.goto(`/lab/workspaces/burstlab-refused/tree/${REFUSED}?reset&token=${TOKEN}`);
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('Error Starting Kernel', { timeout: 60000 });
    // burstlab's own words: which budget, what is spent, how to go on.
    await expect(dialog).toContainText(/budget/i);
    await expect(dialog).toContainText(REFUSED);
    await expect(dialog).not.toContainText('Unhandled error');
    // All of it reads, what to do included: the message wraps inside the dialog instead of running off it.
    await expect(dialog).toContainText('Raise it with `%gpu budget AMOUNT`');
    const message = dialog.locator('.jp-Dialog-body pre').first();
    expect(await message.evaluate(el => el.scrollWidth <= el.clientWidth + 1)).toBeTruthy();
    await shot(dialog.locator('.jp-Dialog-content'), 'kernel-refused.png');
    await dialog.locator('.jp-Dialog-button').last().click();
  } finally {
    await budget(notebook, null);
  }
});

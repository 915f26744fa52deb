import { expect, Locator, Page, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { api, badgeText, cellSource, expectBadgeBesidePrompt, newNotebook, openLab, releaseAll, runCell, TOKEN, typeCell, waitExecuted } from './lab';

// Screenshots go to test-results/; with UPDATE_SCREENSHOTS=1 also to docs/screenshots/ (the README's pictures).
const SHOTS = path.resolve(__dirname, '..', 'test-results', 'shots');
const DOCS = path.resolve(__dirname, '..', '..', '..', 'docs', 'screenshots');
async function shot(target: Page | Locator, name: string, clip?: { x: number; y: number; width: number; height: number }): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  await (clip ? (target as Page).screenshot({ path: file, clip }) : target.screenshot({ path: file }));
  if (process.env.UPDATE_SCREENSHOTS) {
    fs.mkdirSync(DOCS, { recursive: true });
    fs.copyFileSync(file, path.join(DOCS, name));
  }
}

interface ISession {
  id: string;
  gpu_type: string;
  notebook: string;
  state: string;
}

test.describe.configure({ mode: 'serial' });

let page: Page;
let nb: Locator;

test.beforeAll(async ({ browser }) => {
  page = await browser.newPage();
  await openLab(page, 'burstlab-ui');
  nb = await newNotebook(page);
});

test.afterAll(async () => {
  await releaseAll(page.request).catch(() => undefined); // the next spec finds the GPUs free, no budget set
  await page?.close();
});

test('a %%gpu cell shows in the status bar, ticking, and the panel stops it', async () => {
  const setup = await typeCell(page, nb, 0, ['%load_ext burstlab', 'here = "local kernel"']);
  await runCell(page, setup);
  await waitExecuted(setup);

  const gpuCell = await typeCell(page, nb, 1, ['%%gpu H100', 'import os', "os.environ['CUDA_VISIBLE_DEVICES']"]);
  await runCell(page, gpuCell);
  await waitExecuted(gpuCell, 90000);
  // The cell ran on a kernel that holds one GPU: CUDA_VISIBLE_DEVICES names it.
  await expect(gpuCell.locator('.jp-OutputArea-executeResult')).toHaveText(/'\d+'/);

  const status = page.locator('#burstlab-status');
  await expect(status).toHaveText(/^H100 · \d+s · \$\d+\.\d+$/);
  const first = (await status.textContent())!;
  await expect(status).not.toHaveText(first, { timeout: 5000 }); // the clock ticks
  const bar = await page.locator('#jp-main-statusbar').boundingBox();
  await shot(page, 'statusbar.png', { x: 0, y: bar!.y, width: 640, height: bar!.height });

  await status.click();
  const panel = page.locator('#burstlab-panel');
  await expect(panel).toBeVisible();
  const row = panel.locator('.burstlab-session', { hasText: 'H100' });
  await expect(row).toHaveCount(1);
  await expect(panel.locator('[data-section="hosts"] [data-gpu-type="H100"]')).toContainText('declared');
  // The price per GPU-hour, before anything is spent: 0.001097 $/s (the default H100 rate) = $3.95/h.
  await expect(panel.locator('[data-section="hosts"] [data-gpu-type="H100"] .burstlab-price')).toHaveText('$3.95/h');
  const hosts = (await api<{ hosts: { type: string; microusd_per_hour: number }[] }>(page.request, 'hosts')).hosts;
  expect(hosts.find(h => h.type === 'H100')?.microusd_per_hour).toEqual(3949200);
  await expect(row).toContainText(/releases in 10 min/); // idle_timeout 600 s, nothing ran since the cell
  await shot(page, 'lab.png');
  await shot(panel, 'panel.png');

  const before = (await api<{ sessions: ISession[] }>(page.request, 'sessions')).sessions;
  expect(before.map(s => s.gpu_type)).toEqual(['H100']);
  await row.locator('.burstlab-stop').click();
  // A session holds the notebook's variables: the panel asks first.
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText('Stop the H100 session?');
  await dialog.locator('.jp-mod-accept').click();
  await expect(panel.locator('.burstlab-session')).toHaveCount(0);
  await expect(status).toBeHidden();
  expect((await api<{ sessions: ISession[] }>(page.request, 'sessions')).sessions).toEqual([]);

  // The cell's next run starts a new session.
  await runCell(page, gpuCell);
  await waitExecuted(gpuCell, 90000);
  await expect(status).toHaveText(/^H100 · /);
  const after = (await api<{ sessions: ISession[] }>(page.request, 'sessions')).sessions;
  expect(after).toHaveLength(1);
  expect(after[0].id).not.toEqual(before[0].id);
});

test('"Run on GPU ▸ A100" from the cell menu runs the cell through %%gpu A100 without editing it', async () => {
  const lines = ['import os', "os.environ.get('CUDA_VISIBLE_DEVICES', 'no GPU here')"];
  const c = await typeCell(page, nb, 2, lines);
  await runCell(page, c);
  await waitExecuted(c);
  await expect(c.locator('.jp-OutputArea-executeResult')).toHaveText(/'no GPU here'/);

  await c.locator('.cm-content').click({ button: 'right' });
  await page.locator('.lm-Menu-item', { hasText: 'Run on GPU' }).first().hover();
  const a100 = page.locator('#burstlab-run-on-gpu-menu .lm-Menu-item', { hasText: 'A100' });
  await expect(a100).toContainText('A100 (1/1 free) · $2.10/h');
  await a100.click();
  await expect(c.locator('.jp-OutputArea-executeResult')).toHaveText(/'\d+'/, { timeout: 90000 });
  await expect(c.locator('.jp-OutputArea-output').first()).toContainText('A100 (declared)');
  expect(await cellSource(c)).toEqual(lines.join('\n'));

  // The cell toolbar's GPU button opens the same menu.
  await c.locator('.jp-cell-toolbar [data-command="burstlab:run-on-gpu-menu"]').click();
  await expect(page.locator('#burstlab-run-on-gpu-menu .lm-Menu-item')).toHaveText([/^A100 \(0\/1 free\)/, /^H100 \(1\/2 free\)/]);
  await page.keyboard.press('Escape');

  const sessions = (await api<{ sessions: ISession[] }>(page.request, 'sessions')).sessions;
  expect(sessions.map(s => s.gpu_type).sort()).toEqual(['A100', 'H100']);
  expect(sessions.every(s => s.notebook.endsWith('Untitled.ipynb'))).toBeTruthy();
  await expect(page.locator('#burstlab-status')).toHaveText(/^(H100 \+ A100|A100 \+ H100) · \d+s · \$/);
});

test('an agent-written cell shows a badge and runs in the sandbox', async () => {
  const lines = ["print('here' in globals(), 'sandboxed')"];
  const c = await typeCell(page, nb, 3, lines);
  await c.locator('.cm-content').click({ button: 'right' });
  await page.locator('.lm-Menu-item', { hasText: 'Mark as agent-written' }).click();
  await expect(c).toHaveAttribute('data-burstlab-agent', 'sandbox');
  expect(await badgeText(c)).toMatch(/^"agent.*→ sandbox"$/s);
  await expectBadgeBesidePrompt(c);

  await runCell(page, c);
  await waitExecuted(c, 90000);
  // The notebook kernel has `here`; the sandbox kernel does not.
  await expect(c.locator('.jp-OutputArea-output').last()).toContainText('False sandboxed');
  expect(await cellSource(c)).toEqual(lines.join('\n'));
  const boxes = (await api<{ sandboxes: { id: string; notebook: string }[] }>(page.request, 'sandboxes')).sandboxes;
  expect(boxes.length).toBeGreaterThan(0);

  const panel = page.locator('#burstlab-panel');
  await page.locator('#burstlab-status').click();
  await expect(panel.locator('.burstlab-sandbox')).toHaveCount(boxes.length);
  await expect(panel.locator('.burstlab-sandbox').first()).toContainText('no network');

  // "Run in this kernel" overrides the routing for one run.
  await c.locator('.cm-content').click({ button: 'right' });
  await page.locator('.lm-Menu-item', { hasText: 'Run in this kernel' }).click();
  await expect(c.locator('.jp-OutputArea-output').last()).toContainText('True sandboxed');
});

test('a fan-out shows in the panel with its progress', async () => {
  const c = await typeCell(page, nb, 4, [
    'import time',
    'sum(burstlab.map(lambda x: (time.sleep(0.2), x * 2)[1], range(8), gpu="H100"))'
  ]);
  await c.locator('.cm-content').click(); // the local kernel runs burstlab.map: setup cell imported nothing
  await page.keyboard.press('Control+Home');
  await page.keyboard.insertText('import burstlab; ');
  await runCell(page, c);
  await waitExecuted(c, 90000);
  await expect(c.locator('.jp-OutputArea-executeResult')).toHaveText(/\b56$/);
  const map = page.locator('#burstlab-panel .burstlab-map').first();
  await expect(map).toContainText('8/8');
  await expect(map).toHaveAttribute('data-state', 'done');
  await expect(map.locator('[role="progressbar"]')).toHaveAttribute('aria-valuenow', '8');

  // A budget set through the API shows with what is left.
  const put = await page.request.put('/burstlab/api/budgets/user/ui-tester', {
    headers: { Authorization: `token ${TOKEN}` },
    data: { limit_usd: 5, soft_fraction: 0.8 }
  });
  expect(put.ok(), await put.text()).toBeTruthy();
  const budget = page.locator('#burstlab-panel .burstlab-budget');
  await expect(budget).toContainText('user: ui-tester');
  await expect(budget).toContainText('$5.00');
  // The status bar counts down what the budget leaves.
  await expect(page.locator('#burstlab-status')).toHaveText(/ · \$4\.\d\d left$/);
  await shot(page, 'lab.png');
  await shot(page.locator('#burstlab-panel'), 'panel.png');
});

test('errors from the server are shown, not swallowed', async () => {
  // The documented error body ({"message", "reason"}) from a stop that fails, and from a section that fails.
  await page.route(/\/burstlab\/api\/sessions\/[^/?]+(\?|$)/, route =>
    route.request().method() === 'DELETE'
      ? route.fulfill({
          status: 409,
          contentType: 'application/json',
          body: JSON.stringify({ message: 'session is busy: try again in a moment', reason: 'Conflict' })
        })
      : route.fallback()
  );
  await page.route(/\/burstlab\/api\/maps(\?|$)/, route =>
    route.fulfill({ status: 500, contentType: 'application/json', body: JSON.stringify({ message: 'scheduler unreachable: tcp://x', reason: 'x' }) })
  );
  const panel = page.locator('#burstlab-panel');
  await panel.locator('.burstlab-session .burstlab-stop').first().click();
  await page.locator('.jp-Dialog .jp-mod-accept').click();
  await expect(page.locator('.Toastify__toast', { hasText: 'session is busy: try again in a moment' })).toBeVisible();
  await expect(panel.locator('[data-section="maps"] .burstlab-error')).toHaveText('scheduler unreachable: tcp://x');
  await expect(panel.locator('.burstlab-session')).toHaveCount(2); // nothing was stopped
  await page.unrouteAll();
  await expect(panel.locator('[data-section="maps"] .burstlab-error')).toHaveCount(0);
});

test('the agentCells setting sends agent cells to the notebook kernel instead', async () => {
  const put = await page.request.put('/lab/api/settings/burstlab-lab:plugin', {
    headers: { Authorization: `token ${TOKEN}` },
    data: { raw: JSON.stringify({ refreshInterval: 1, agentCells: 'kernel' }) }
  });
  expect(put.ok(), await put.text()).toBeTruthy();
  await nb.locator('.jp-Cell').first().locator('.cm-content').click();
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+s'); // keep the notebook's cells (and the agent mark) across the reload
  const dialog = page.locator('.jp-Dialog .jp-mod-accept');
  if (await dialog.isVisible({ timeout: 2000 }).catch(() => false)) {
    await dialog.click();
  }
  await expect(page.locator('.jp-NotebookPanel-tab, .lm-TabBar-tab.jp-mod-current').first()).not.toHaveClass(/jp-mod-dirty/);
  await page.goto(`/lab/workspaces/burstlab-ui?token=${TOKEN}`); // the same workspace: the notebook comes back
  const status = page.locator('#jp-main-statusbar');
  await expect(status).toContainText('| Idle', { timeout: 60000 });
  const c = page.locator('.jp-NotebookPanel').last().locator('.jp-Cell').nth(3);
  await expect(c).toHaveAttribute('data-burstlab-agent', 'kernel');
  expect(await badgeText(c)).toEqual('"agent"');
  await runCell(page, c);
  await expect(c.locator('.jp-OutputArea-output').last()).toContainText('True sandboxed');
});

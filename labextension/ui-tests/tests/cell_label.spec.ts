// A %%gpu cell's "ran on" label: shown under the cell, kept in the cell's metadata (burstlab.ran) when the
// notebook is saved, shown again when it is reopened; readable (axe-core) in the light and dark themes.
import { expect, Page, test } from '@playwright/test';
import * as path from 'path';

import { cell, runCell, TOKEN, waitExecuted } from './lab';

const NAME = 'cell-label.ipynb';
const MIME = 'application/vnd.burstlab.cell+json';
const AUTH = { Authorization: `token ${TOKEN}` };
const LABEL = /^ran on H100 \(declared\) @ \S+ · \d+ s held · \$\d+\.\d+ so far$/;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Notebook = { cells: { source: string; metadata: any; outputs: any[] }[] };

let page: Page;

function code(source: string) {
  return { cell_type: 'code', source, metadata: {}, outputs: [], execution_count: null };
}

/** Open the notebook in a fresh workspace and wait for its kernel to be idle. */
async function openNotebook(): Promise<void> {
  await page.goto(`/lab/workspaces/cell-label/tree/${NAME}?reset&token=${TOKEN}`);
  await page.locator('#jupyterlab-splash').waitFor({ state: 'detached', timeout: 60000 });
  await expect(page.locator('.jp-NotebookPanel')).toBeVisible({ timeout: 60000 });
  await expect(page.locator('#jp-main-statusbar')).toContainText('| Idle', { timeout: 60000 });
}

async function saved(): Promise<Notebook> {
  const r = await page.request.get(`/api/contents/${NAME}?content=1`, { headers: AUTH });
  if (!r.ok()) {
    throw new Error(`GET /api/contents/${NAME}: ${r.status()} ${await r.text()}`);
  }
  return ((await r.json()) as { content: Notebook }).content;
}

async function setTheme(theme: string): Promise<void> {
  if ((await page.locator('body').getAttribute('data-jp-theme-name')) === theme) {
    return;
  }
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Settings$/ }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Theme$/ }).hover();
  await page.locator('.lm-Menu-itemLabel', { hasText: new RegExp(`^${theme}$`) }).click();
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-name', theme);
  await page.waitForFunction(() => !document.body.classList.contains('jp-mod-themeTransition'), null, { timeout: 5000 }).catch(() => undefined);
}

/** axe-core's WCAG 2 A/AA violations on the label. */
async function axeOnLabel(): Promise<string[]> {
  if (!(await page.evaluate(() => 'axe' in window))) {
    await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  }
  return page.evaluate(async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const result = await (window as any).axe.run(
      { include: [['.jp-burstlab-ran']] },
      { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa'] }, resultTypes: ['violations'] }
    );
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return result.violations.flatMap((v: any) => v.nodes.map((n: any) => `${v.id}: ${n.failureSummary}`));
  });
}

test.beforeAll(async ({ browser }) => {
  page = await browser.newPage();
  const notebook = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } },
    cells: [code('%load_ext burstlab'), code('%%gpu H100 --wait 60\n6 * 7'), code('%gpu stop all')]
  };
  const r = await page.request.put(`/api/contents/${NAME}`, {
    headers: AUTH,
    data: { type: 'notebook', format: 'json', content: notebook }
  });
  expect(r.ok(), `${r.status()} ${await r.text()}`).toBeTruthy();
});

test.afterAll(async () => {
  await setTheme('JupyterLab Light').catch(() => undefined);
  await page?.close();
});

test('a %%gpu cell shows where it ran and what it cost under the cell, saved in its metadata', async () => {
  await openNotebook();
  const nb = page.locator('.jp-NotebookPanel');
  const setup = cell(nb, 0);
  await runCell(page, setup);
  await waitExecuted(setup);
  const gpuCell = cell(nb, 1);
  await runCell(page, gpuCell);
  await waitExecuted(gpuCell, 120000);
  await expect(gpuCell.locator('.jp-OutputArea-executeResult')).toHaveText(/\b42$/);

  // The label, under the cell's input; the text/plain footer is not shown beside it.
  const label = gpuCell.locator('.jp-burstlab-ran');
  await expect(label).toHaveText(LABEL);
  const text = (await label.textContent())!;
  // Last under the cell: below its input and below its Out[n] (which the kernel sends after the label).
  const value = (await gpuCell.locator('.jp-OutputArea-executeResult').boundingBox())!;
  const box = (await label.boundingBox())!;
  expect(box.y).toBeGreaterThanOrEqual(value.y + value.height - 1);
  await expect(gpuCell.locator('.jp-OutputArea')).not.toContainText('[H100 (declared) on ');
  await gpuCell.screenshot({ path: path.resolve(__dirname, '..', 'test-results', 'shots', 'cell-label.png') });

  for (const theme of ['JupyterLab Dark', 'JupyterLab Light']) {
    await setTheme(theme);
    expect(await axeOnLabel(), theme).toEqual([]);
  }

  // Saved: the record is in the cell's metadata and its output, with the numbers the label shows.
  await gpuCell.locator('.jp-InputPrompt').click();
  await page.keyboard.press('Control+s');
  // (a read while the server is still writing the file answers 400 "Unreadable Notebook": poll again)
  const ranText = async () => (await saved().catch(() => undefined))?.cells[1].metadata?.burstlab?.ran?.text;
  await expect.poll(ranText, { timeout: 30000 }).toBe(text);
  const content = await saved();
  const ran = content.cells[1].metadata.burstlab.ran;
  expect(ran.gpu).toBe('H100 (declared)');
  expect(ran.spec).toBe('H100');
  expect(text).toContain(`@ ${ran.host} · ${ran.held_s} s held`);
  expect(Number.isInteger(ran.cost_microusd)).toBeTruthy();
  const outputs = content.cells[1].outputs.filter(o => o.data && MIME in o.data);
  expect(outputs).toHaveLength(1);
  expect(outputs[0].data[MIME]).toEqual(ran);
  expect(outputs[0].data['text/plain']).toMatch(/^\[H100 \(declared\) on \S+ · \d+ s held · \$\d+\.\d+ so far\]$/);
  expect(content.cells[0].metadata?.burstlab?.ran).toBeUndefined(); // a cell that did not run through %%gpu

  // Reopened from disk: the label is back without running anything.
  await openNotebook();
  await expect(cell(page.locator('.jp-NotebookPanel'), 1).locator('.jp-burstlab-ran')).toHaveText(text);

  const stop = cell(page.locator('.jp-NotebookPanel'), 2);
  await runCell(page, stop);
  await waitExecuted(stop);
  await expect(stop.locator('.jp-OutputArea')).toContainText('Released');
});

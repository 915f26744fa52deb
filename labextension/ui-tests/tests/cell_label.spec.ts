// A %%gpu cell's "ran on" label: the cell's own time and cost, then its session's so far; shown under the cell,
// kept in the cell's metadata (burstlab.ran) when the notebook is saved, shown again when it is reopened; readable
// (axe-core) in the light and dark themes. Then the notebook's own `%gpu stop` raises no notification, while stops
// made by others are named from the server's record of who ended the session (ended_by).
import { expect, Page, test } from '@playwright/test';

import { cell, recordToasts, releaseAll, runCell, shot, toastsSeen, TOKEN, waitExecuted } from './lab';

const NAME = 'cell-label.ipynb';
const MIME = 'application/vnd.burstlab.cell+json';
const AUTH = { Authorization: `token ${TOKEN}` };
const OWN = /^ran on H100 \(declared\) @ \S+ · [\d.]+ s · \$\d+\.\d{4}$/;
const SESSION = /^ · session H100: \d+ s held, \$\d+\.\d{4} so far$/;

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
    cells: [code('%load_ext burstlab'), code('%%gpu H100 --wait 60\n6 * 7'), code('%%gpu H100\n7 * 6'), code('%gpu stop all')]
  };
  const r = await page.request.put(`/api/contents/${NAME}`, {
    headers: AUTH,
    data: { type: 'notebook', format: 'json', content: notebook }
  });
  expect(r.ok(), `${r.status()} ${await r.text()}`).toBeTruthy();
});

test.afterAll(async () => {
  await releaseAll(page.request).catch(() => undefined); // the next spec finds the GPUs free, no budget set
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

  // The label, under the cell's input: the cell's own time and cost, then the session's so far, muted. The
  // text/plain footer is not shown beside it.
  const label = gpuCell.locator('.jp-burstlab-ran');
  await expect(label.locator('.jp-burstlab-ran-cell')).toHaveText(OWN);
  await expect(label.locator('.jp-burstlab-ran-session')).toHaveText(SESSION);
  const text = (await label.textContent())!;
  const own = (await label.locator('.jp-burstlab-ran-cell').textContent())!;
  // Last under the cell: below its input and below its Out[n] (which the kernel sends after the label).
  const value = (await gpuCell.locator('.jp-OutputArea-executeResult').boundingBox())!;
  const box = (await label.boundingBox())!;
  expect(box.y).toBeGreaterThanOrEqual(value.y + value.height - 1);
  await expect(gpuCell.locator('.jp-OutputArea')).not.toContainText('[H100 (declared) on ');

  // A second, warm cell on the same session: its own share is its own, the session's figure has grown.
  const warm = cell(nb, 2);
  await runCell(page, warm);
  await waitExecuted(warm, 60000);
  await expect(warm.locator('.jp-burstlab-ran-cell')).toHaveText(OWN);

  for (const theme of ['JupyterLab Dark', 'JupyterLab Light']) {
    await setTheme(theme);
    expect(await axeOnLabel(), theme).toEqual([]);
    await shot(nb.locator('.jp-Cell').nth(1), theme.endsWith('Dark') ? 'cell-label-dark.png' : 'cell-label-light.png');
  }

  // Saved: the record is in the cell's metadata and its output, with the numbers the label shows.
  await gpuCell.locator('.jp-InputPrompt').click();
  await page.keyboard.press('Control+s');
  // (a read while the server is still writing the file answers 400 "Unreadable Notebook": poll again)
  const ranText = async () => (await saved().catch(() => undefined))?.cells[1].metadata?.burstlab?.ran?.text;
  await expect.poll(ranText, { timeout: 30000 }).toBe(own);
  const content = await saved();
  const ran = content.cells[1].metadata.burstlab.ran;
  expect(ran.gpu).toBe('H100 (declared)');
  expect(ran.spec).toBe('H100');
  expect(text).toBe(`${ran.text} · ${ran.session_text}`);
  expect(own).toBe(ran.text);
  expect(text).toContain(`@ ${ran.host} · ${(ran.cell_ms / 1000).toFixed(1)} s · `);
  expect(ran.session_text).toContain(`${ran.held_s} s held`);
  expect(Number.isInteger(ran.cost_microusd) && Number.isInteger(ran.cell_cost_microusd)).toBeTruthy();
  // The cell's cost is its time at the session's rate (to the micro-dollar); the session's so far is more.
  expect(Math.abs(ran.cell_cost_microusd - (ran.cell_ms * ran.rate_nusd_per_s) / 1e6)).toBeLessThanOrEqual(ran.rate_nusd_per_s / 1e6 + 1);
  const warmRan = content.cells[2].metadata.burstlab.ran;
  expect(warmRan.interval_id).toBe(ran.interval_id);
  expect(warmRan.cell_cost_microusd).toBeLessThan(warmRan.cost_microusd);
  expect(warmRan.cost_microusd).toBeGreaterThanOrEqual(ran.cost_microusd);
  const outputs = content.cells[1].outputs.filter(o => o.data && MIME in o.data);
  expect(outputs).toHaveLength(1);
  expect(outputs[0].data[MIME]).toEqual(ran);
  expect(outputs[0].data['text/plain']).toMatch(
    /^\[H100 \(declared\) on \S+ · this cell [\d.]+ s, \$\d+\.\d+ · session \d+ s held, \$\d+\.\d+ so far\]$/
  );
  expect(content.cells[0].metadata?.burstlab?.ran).toBeUndefined(); // a cell that did not run through %%gpu

  // Reopened from disk (its tab closed, the file opened again from the file browser, which reads it from the
  // server; no page reload): the label is back without running anything.
  await page.locator('.lm-TabBar-tab.jp-mod-current .lm-TabBar-tabCloseIcon').first().click();
  await expect(page.locator('.jp-NotebookPanel')).toHaveCount(0);
  const listing = page.locator('.jp-DirListing-item', { hasText: NAME });
  if (!(await listing.isVisible())) {
    await page.locator('.jp-SideBar [data-id="filebrowser"]').click();
  }
  await listing.dblclick();
  await expect(cell(page.locator('.jp-NotebookPanel'), 1).locator('.jp-burstlab-ran')).toHaveText(text);
  await expect(page.locator('#jp-main-statusbar')).toContainText('| Idle', { timeout: 60000 });

  // `%gpu stop` in a cell of this notebook: its own doing, so no notification. The lab knows from the server's
  // record of who ended the session (ended_by "user"), seen in a poll after the session left the running list.
  await recordToasts(page);
  const sessionsPoll = (test: (s: { id: string; ended_by: string }[]) => boolean) =>
    page.waitForResponse(async r => r.url().includes('/burstlab/api/sessions?ended=1') && test((await r.json()).sessions), {
      timeout: 30000
    });
  const recorded = sessionsPoll(s => s.some(x => x.id && x.ended_by === 'user'));
  const stop = cell(page.locator('.jp-NotebookPanel'), 3);
  await runCell(page, stop);
  await waitExecuted(stop);
  await expect(stop.locator('.jp-OutputArea')).toContainText('Released');
  await recorded;
  await sessionsPoll(() => true); // one more poll: the model has looked at that record
  await expect(page.locator('#burstlab-status')).toBeHidden();

  // A stop made by another client (the REST API) and one from the panel of another tab: both notify, in words
  // taken from the server's record. Two sessions of this notebook, seen running by the lab, then both stopped.
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) {
    const made = await page.request.post('/burstlab/api/sessions', { headers: AUTH, data: { gpu: 'H100', notebook: NAME } });
    expect(made.ok(), await made.text()).toBeTruthy();
    ids.push(((await made.json()) as { id: string }).id);
  }
  await sessionsPoll(s => ids.every(id => s.some(x => x.id === id && !x.ended_by)));
  await sessionsPoll(() => true); // the lab has them as running
  for (const [id, from] of [[ids[0], ''], [ids[1], '?from=panel']]) {
    const del = await page.request.delete(`/burstlab/api/sessions/${id}${from}`, { headers: AUTH });
    expect(del.ok(), await del.text()).toBeTruthy();
  }
  for (const words of [
    /Stopped by another client \(stopped through the REST API by \S+\): the H100 session of cell-label\.ipynb\./,
    /Stopped from the burstlab panel in another tab: the H100 session of cell-label\.ipynb\./
  ]) {
    await expect(page.locator('.Toastify__toast', { hasText: words })).toBeVisible({ timeout: 30000 });
  }
  const toasts = await toastsSeen(page);
  // Those two, and nothing for the `%gpu stop`.
  expect(toasts.filter(t => /session of cell-label/.test(t)), toasts.join('\n')).toHaveLength(2);
});

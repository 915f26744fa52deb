// Notebook 7: the cost meter sits in the top bar (Notebook has no status bar) and the panel in the left sidebar.
// Runs when NOTEBOOK7=1, against the suite's one server (Notebook 7's pages come from the same server as JupyterLab's),
// after the other specs have released what they held.
import { expect, test } from '@playwright/test';

import { TOKEN } from './lab';

const NB = '';
const AUTH = { Authorization: `token ${TOKEN}` };

test('Notebook 7: the meter in the top bar, the panel in the left sidebar, no axe violations', async ({ page }) => {
  // A notebook to open; the session is started for it through the API, as an agent would.
  const created = await page.request.put(`${NB}/api/contents/nb7.ipynb`, {
    headers: AUTH,
    data: { type: 'notebook', content: {
      cells: [],
      metadata: { kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' } },
      nbformat: 4,
      nbformat_minor: 5
    } }
  });
  expect(created.ok(), await created.text()).toBeTruthy();
  await page.goto(`${NB}/notebooks/nb7.ipynb?token=${TOKEN}`);
  await expect(page.locator('.jp-NotebookPanel')).toBeVisible({ timeout: 60000 });
  const session = await page.request.post(`${NB}/burstlab/api/sessions`, {
    headers: AUTH,
    data: { gpu: 'A100', notebook: 'nb7.ipynb' }
  });
  expect(session.ok(), await session.text()).toBeTruthy();

  const meter = page.locator('#burstlab-status');
  await expect(meter).toHaveText(/^A100 · \d+s · \$\d+\.\d+$/);
  const box = (await meter.boundingBox())!;
  const top = (await page.locator('#top-panel-wrapper, #top-panel').first().boundingBox())!;
  expect(box.y + box.height).toBeLessThanOrEqual(top.y + top.height + 1); // in the top bar

  await meter.click();
  const panel = page.locator('#burstlab-panel');
  await expect(panel).toBeVisible();
  expect((await panel.boundingBox())!.x).toBeLessThan(400); // the left sidebar
  await expect(panel.locator('.burstlab-session', { hasText: 'A100' })).toHaveCount(1);
  await expect(panel.locator('[data-gpu-type="A100"] .burstlab-price')).toHaveText('$2.10/h');

  await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const r = await (window as any).axe.run(
      { include: [['#burstlab-panel'], ['#burstlab-status']] },
      { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa'] }, resultTypes: ['violations'] }
    );
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return r.violations.flatMap((v: any) => v.nodes.map((n: any) => `${v.id}: ${n.target.join(' ')}`));
  });
  expect(violations).toEqual([]);

  // Stop from the panel; the meter goes.
  await panel.locator('.burstlab-session .burstlab-stop').click();
  await page.locator('.jp-Dialog .jp-mod-accept').click();
  await expect(panel.locator('.burstlab-session')).toHaveCount(0);
  await expect(meter).toBeHidden();
});

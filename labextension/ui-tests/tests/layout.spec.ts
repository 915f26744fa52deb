// The panel at narrow widths, in light and dark themes, checked by axe-core; money in the status bar; notifications
// for stops made elsewhere. Runs after burstlab.spec.ts against the same server (H100:2, A100:1 declared).
import { expect, Locator, Page, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { api, newNotebook, openLab, releaseAll, runCell, TOKEN, typeCell, waitExecuted } from './lab';

const DOCS = path.resolve(__dirname, '..', '..', '..', 'docs', 'screenshots');
const SHOTS = path.resolve(__dirname, '..', 'test-results', 'shots');
async function shot(target: Page | Locator, name: string): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  await target.screenshot({ path: file });
  if (process.env.UPDATE_SCREENSHOTS) {
    fs.mkdirSync(DOCS, { recursive: true });
    fs.copyFileSync(file, path.join(DOCS, name));
  }
}

const AUTH = { Authorization: `token ${TOKEN}` };
const LONG_NOTEBOOK = 'experiments/a-directory-with-a-rather-long-name/agent-run-2026-11-28-with-an-even-longer-name.ipynb';
const LONG_FN = 'summarise_the_measurements_of_each_run_with_a_long_name';

test.describe.configure({ mode: 'serial' });

let page: Page;
let nb: Locator;
let nbPath: string;
let sessionId: string;

/** Drag the sidebar's split handle until the panel is `width` px wide (as a user resizes it). */
async function setPanelWidth(width: number): Promise<void> {
  const panel = page.locator('#burstlab-panel');
  for (let i = 0; i < 4; i++) {
    const box = (await panel.boundingBox())!;
    const delta = width - box.width;
    if (Math.abs(delta) < 1) {
      return;
    }
    const handle = page.locator('#jp-main-split-panel > .lm-SplitPanel-handle').first();
    const h = (await handle.boundingBox())!;
    await page.mouse.move(h.x + h.width / 2, h.y + h.height / 2);
    await page.mouse.down();
    await page.mouse.move(h.x + h.width / 2 + delta, h.y + h.height / 2, { steps: 4 });
    await page.mouse.up();
  }
  const final = (await panel.boundingBox())!.width;
  expect(Math.abs(final - width), `panel is ${final}px, wanted ${width}px`).toBeLessThan(2);
}

/**
 * Every element of the panel stays inside the panel; an element whose content is wider than its box is an
 * ellipsis with the full text in its tooltip; no button is cut.
 */
async function overflowReport(): Promise<string[]> {
  return page.locator('#burstlab-panel').evaluate(panel => {
    const pr = panel.getBoundingClientRect();
    const bad: string[] = [];
    const name = (el: Element) =>
      `<${el.tagName.toLowerCase()} class="${el.getAttribute('class') ?? ''}">${(el.textContent ?? '').slice(0, 40)}`;
    if (panel.scrollWidth > panel.clientWidth + 1) {
      bad.push(`the panel scrolls sideways (${panel.scrollWidth} > ${panel.clientWidth})`);
    }
    for (const el of Array.from(panel.querySelectorAll('*'))) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) {
        continue;
      }
      if (r.left < pr.left - 0.5 || r.right > pr.right + 0.5) {
        bad.push(`${name(el)} sticks out of the panel (${r.left.toFixed(0)}–${r.right.toFixed(0)} in ${pr.left.toFixed(0)}–${pr.right.toFixed(0)})`);
      }
      const html = el as HTMLElement;
      if (html.clientWidth > 0 && html.scrollWidth > html.clientWidth + 1) {
        const style = getComputedStyle(html);
        const ellipsis = style.textOverflow === 'ellipsis' && style.overflowX === 'hidden' && !!html.title;
        if (!ellipsis || el.tagName === 'BUTTON') {
          bad.push(`${name(el)} overflows its box (${html.scrollWidth} > ${html.clientWidth})`);
        }
      }
      const parent = el.parentElement;
      if (el.tagName === 'BUTTON' && parent) {
        const p = parent.getBoundingClientRect();
        if (r.right > p.right + 0.5 || r.left < p.left - 0.5) {
          bad.push(`${name(el)} is cut by its row`);
        }
      }
    }
    return bad;
  });
}

/** axe-core (injected from node_modules) on the panel and the status-bar item: WCAG 2.x A/AA rules. */
async function axeViolations(): Promise<string[]> {
  if (!(await page.evaluate(() => 'axe' in window))) {
    await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') });
  }
  return page.evaluate(async () => {
    const include = ['#burstlab-panel', '#burstlab-status'].filter(s => document.querySelector(s)).map(s => [s]);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const result = await (window as any).axe.run(
      { include },
      { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa'] }, resultTypes: ['violations'] }
    );
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return result.violations.flatMap((v: any) =>
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      v.nodes.map((n: any) => `${v.id}: ${n.target.join(' ')}: ${n.failureSummary.replace(/\s+/g, ' ')}`)
    );
  });
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

async function post<T>(route: string, data: unknown): Promise<T> {
  const r = await page.request.post(`/burstlab/api/${route}`, { headers: AUTH, data });
  expect(r.ok(), `${route}: ${r.status()} ${await r.text()}`).toBeTruthy();
  return (await r.json()) as T;
}

async function put(route: string, data: unknown): Promise<void> {
  const r = await page.request.put(`/burstlab/api/${route}`, { headers: AUTH, data });
  expect(r.ok(), `${route}: ${r.status()} ${await r.text()}`).toBeTruthy();
}

test.beforeAll(async ({ browser }) => {
  page = await browser.newPage();
  await openLab(page, 'burstlab-layout');
  nb = await newNotebook(page);
  nbPath = (await page.locator('.lm-TabBar-tab.jp-mod-current .lm-TabBar-tabLabel').first().textContent())!.trim();
  // JupyterLab's themes stop the sidebar at 250 px (--jp-sidebar-min-width); custom CSS and other shells go lower.
  await page.addStyleTag({ content: 'body { --jp-sidebar-min-width: 150px; }' });
});

test.afterAll(async () => {
  await releaseAll(page.request).catch(() => undefined); // the next spec finds the GPUs free, no budget set
  await setTheme('JupyterLab Light').catch(() => undefined);
  await page?.close();
});

test('a full panel lays out at 200, 250 and 400 px in light, dark and high-contrast, with no axe violations', async () => {
  // Something in every section: a session of this notebook, a sandbox and a budget with long names, a running map.
  await put('budgets/user/ui-tester', { limit_usd: 5, soft_fraction: 0.8 });
  sessionId = (await post<{ id: string }>('sessions', { gpu: 'H100', notebook: nbPath })).id;
  await post('sandboxes', { notebook: LONG_NOTEBOOK, timeout: 30 });
  await put(`budgets/notebook/${encodeURIComponent(LONG_NOTEBOOK)}`, { limit_usd: 2, soft_fraction: 0.8 });
  const c = await typeCell(page, nb, 0, [
    'import burstlab, time',
    `def ${LONG_FN}(x):`,
    '    time.sleep(300); return x',
    `burstlab.map(${LONG_FN}, range(6), max_workers=2)`
  ]);
  await runCell(page, c);

  const status = page.locator('#burstlab-status');
  await expect(status).toHaveText(/^H100 · \d+s · \$\d+\.\d+ · \$\d+\.\d\d left$/);
  await status.click();
  const panel = page.locator('#burstlab-panel');
  const map = panel.locator('.burstlab-map', { hasText: LONG_FN });
  await expect(map).toHaveAttribute('data-state', 'running');
  await expect(map.locator('.burstlab-cancel')).toBeVisible();
  await expect(panel.locator(`.burstlab-session[data-session-id="${sessionId}"]`)).toContainText(/releases in \d+ min/);
  await expect(panel.locator('.burstlab-sandbox').first()).toBeVisible();

  for (const theme of ['JupyterLab Light', 'JupyterLab Dark']) {
    await setTheme(theme);
    for (const width of [200, 250, 400]) {
      await setPanelWidth(width);
      expect(await overflowReport(), `${theme}, ${width}px`).toEqual([]);
      // Long names end in an ellipsis with the full name as a tooltip.
      const fn = map.locator('.burstlab-name');
      await expect(fn).toHaveAttribute('title', new RegExp(LONG_FN));
      if (width < 400) {
        expect(await fn.evaluate(el => el.scrollWidth > el.clientWidth)).toBeTruthy();
      }
      expect(await axeViolations(), `${theme}, ${width}px`).toEqual([]);
    }
    await setPanelWidth(250);
    await shot(panel, theme.endsWith('Dark') ? 'panel-dark.png' : 'panel-light.png');
    await shot(page, theme.endsWith('Dark') ? 'lab-dark.png' : 'lab-light.png');
  }
  await setTheme('JupyterLab Dark High Contrast');
  await setPanelWidth(250);
  expect(await overflowReport(), 'high contrast').toEqual([]);
  expect(await axeViolations(), 'high contrast').toEqual([]);
  await setTheme('JupyterLab Light');
});

test('the status bar turns amber at the warning and red at the limit, readable in both themes', async () => {
  const status = page.locator('#burstlab-status');
  // Its text sits on the same line as its neighbours' (the kernel status item).
  const middle = async (l: Locator) => {
    const b = (await l.boundingBox())!;
    return b.y + b.height / 2;
  };
  const neighbour = page.locator('#jp-main-statusbar .jp-StatusBar-TextItem').first();
  expect(Math.abs((await middle(status)) - (await middle(neighbour)))).toBeLessThan(1.5);
  await put(`budgets/notebook/${encodeURIComponent(nbPath)}`, { limit_usd: 50, soft_fraction: 0.000001 });
  await expect(status).toHaveAttribute('data-state', 'warning');
  await expect(status).toHaveText(/ · \$\d+\.\d\d left$/);
  for (const theme of ['JupyterLab Light', 'JupyterLab Dark']) {
    await setTheme(theme);
    expect(await axeViolations(), `warning, ${theme}`).toEqual([]);
  }
  // The limit, as the server reports it once spending reaches it (the browser's view of GET budgets).
  await page.route(/\/burstlab\/api\/budgets(\?|$)/, async route => {
    const real = await route.fetch();
    const body = (await real.json()) as { budgets: { name: string; state: string; remaining_microusd: number; spent_microusd: number; limit_microusd: number }[] };
    for (const b of body.budgets) {
      if (b.name === nbPath) {
        Object.assign(b, { state: 'exceeded', spent_microusd: b.limit_microusd, remaining_microusd: 0 });
      }
    }
    await route.fulfill({ response: real, json: body });
  });
  await expect(status).toHaveAttribute('data-state', 'exceeded');
  await expect(status).toHaveText(/ · \$0\.000 left$/);
  for (const theme of ['JupyterLab Dark', 'JupyterLab Light']) {
    await setTheme(theme);
    expect(await axeViolations(), `exceeded, ${theme}`).toEqual([]);
  }
  await page.unrouteAll();
  await page.request.delete(`/burstlab/api/budgets/notebook/${encodeURIComponent(nbPath)}`, { headers: AUTH });
  await expect(status).toHaveAttribute('data-state', 'ok');
});

test('Stop asks first; a budget stop and a map cancelled elsewhere are notifications; a cancelled map is not green', async () => {
  const panel = page.locator('#burstlab-panel');
  const row = panel.locator(`.burstlab-session[data-session-id="${sessionId}"]`);
  await row.locator('.burstlab-stop').click();
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText('Stop the H100 session?');
  await dialog.locator('.jp-mod-reject').click();
  await expect(dialog).toHaveCount(0);
  await expect(row).toHaveCount(1); // still running

  // A budget that runs out a second or so from now (1500 µ$: 1.4 s of an H100): the server stops the session; the
  // tab says why.
  await put(`budgets/notebook/${encodeURIComponent(nbPath)}`, { limit_usd: 50, soft_fraction: 0.8 });
  const budgets = (await api<{ budgets: { name: string; spent_microusd: number }[] }>(page.request, 'budgets')).budgets;
  const spent = budgets.find(b => b.name === nbPath)!.spent_microusd;
  await put(`budgets/notebook/${encodeURIComponent(nbPath)}`, { limit_usd: (spent + 1500) / 1e6, soft_fraction: 0.8 });
  const stop = page.locator('.Toastify__toast', { hasText: 'burstlab stopped the H100 session' });
  await expect(stop).toContainText(/Budget \S+ spent \(\$[\d.]+ of \$[\d.]+\): burstlab stopped the H100 session/, {
    timeout: 60000
  });
  await expect(stop.locator('button', { hasText: 'Open panel' })).toBeVisible();
  await expect(row).toHaveCount(0);
  await expect(page.locator('#burstlab-status')).toBeHidden();
  // "Raise budget" in the notification asks for the new limit and sets it.
  await stop.locator('button', { hasText: 'Raise budget' }).click();
  const ask = page.locator('.jp-Dialog');
  await expect(ask).toContainText(`Raise the budget of ${nbPath}`);
  await ask.locator('input').fill('1.5');
  await ask.locator('.jp-mod-accept').click();
  const raised = panel.locator('.burstlab-budget', { hasText: `notebook: ${nbPath}` });
  await expect(raised).toContainText('of $1.50');
  await expect(raised).toHaveAttribute('data-state', 'ok');
  await page.request.delete(`/burstlab/api/budgets/notebook/${encodeURIComponent(nbPath)}`, { headers: AUTH });
  await expect(panel.locator('.burstlab-budget-exceeded')).toHaveCount(0);

  // Another client cancels the map: this tab says so, with a way to the panel.
  const maps = (await api<{ maps: { id: string; name: string; state: string }[] }>(page.request, 'maps')).maps;
  const running = maps.find(m => m.name === LONG_FN && m.state === 'running')!;
  expect(running).toBeTruthy();
  const del = await page.request.delete(`/burstlab/api/maps/${running.id}`, { headers: AUTH });
  expect(del.ok(), await del.text()).toBeTruthy();
  const toast = page.locator('.Toastify__toast', { hasText: 'Fan-out cancelled from another tab or client' });
  await expect(toast).toContainText(/cancelled from another tab or client at \d+\/6: summarise_/);
  await expect(toast.locator('button', { hasText: 'Open panel' })).toBeVisible();
  const map = panel.locator(`.burstlab-map[data-map-id="${running.id}"]`);
  await expect(map).toHaveAttribute('data-state', 'cancelled');
  const colours = await map.locator('.burstlab-bar-done').evaluate(el => {
    const probe = document.createElement('div');
    probe.style.background = 'var(--jp-success-color1)';
    document.body.appendChild(probe);
    const green = getComputedStyle(probe).backgroundColor;
    probe.remove();
    return { bar: getComputedStyle(el).backgroundColor, green };
  });
  expect(colours.bar).not.toEqual(colours.green);
});

test("a kernel restarted from this tab ends its GPU session without a notification; others' stops still notify", async () => {
  const panel = page.locator('#burstlab-panel');
  await waitExecuted(nb.locator('.jp-Cell').nth(0), 60000); // the cancelled map's cell has ended
  const gpu = await typeCell(page, nb, 1, ['%load_ext burstlab']);
  await runCell(page, gpu);
  await waitExecuted(gpu);
  const held = await typeCell(page, nb, 2, ['%%gpu H100', '1 + 1']);
  await runCell(page, held);
  await waitExecuted(held, 90000);
  const row = panel.locator('.burstlab-session', { hasText: nbPath });
  await expect(row).toHaveCount(1);

  // Every notification shown from here on is recorded (a 10 s toast could be gone before the end of the test).
  await page.evaluate(() => {
    const seen: string[] = [];
    (window as unknown as { burstlabToasts: string[] }).burstlabToasts = seen;
    new MutationObserver(() => {
      for (const t of Array.from(document.querySelectorAll('.Toastify__toast'))) {
        const text = t.textContent ?? '';
        if (!seen.includes(text)) {
          seen.push(text);
        }
      }
    }).observe(document.body, { childList: true, subtree: true });
  });
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  await page.locator('.lm-Menu-itemLabel', { hasText: /^Restart Kernel…$/ }).click();
  await page.locator('.jp-Dialog .jp-mod-accept').click();
  await expect(row).toHaveCount(0, { timeout: 60000 }); // the kernel took its session with it
  await expect(page.locator('#jp-main-statusbar')).toContainText('| Idle', { timeout: 60000 });

  // A stop made elsewhere after that still notifies, and it is the only "stopped elsewhere" news.
  const fn = await typeCell(page, nb, 3, [
    'import burstlab, time',
    'def wait_a_while(x):',
    '    time.sleep(300); return x',
    'burstlab.map(wait_a_while, range(2))'
  ]);
  await runCell(page, fn);
  const map = panel.locator('.burstlab-map[data-state="running"]', { hasText: 'wait_a_while' });
  await expect(map).toHaveCount(1, { timeout: 60000 });
  const id = await map.getAttribute('data-map-id');
  const del = await page.request.delete(`/burstlab/api/maps/${id}`, { headers: AUTH });
  expect(del.ok(), await del.text()).toBeTruthy();
  await expect(page.locator('.Toastify__toast', { hasText: 'wait_a_while' })).toContainText('cancelled from another tab or client');
  const toasts = await page.evaluate(() => (window as unknown as { burstlabToasts: string[] }).burstlabToasts);
  expect(toasts.some(t => t.includes('wait_a_while'))).toBeTruthy(); // the recorder saw the one that was due
  expect(toasts.filter(t => t.includes('Stopped outside this tab'))).toEqual([]);

});

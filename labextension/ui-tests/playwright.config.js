// Browser tests against a real JupyterLab with burstlab, in Debian's Chromium (no browser download).
const os = require('os');
const path = require('path');
const fs = require('fs');

const port = process.env.LAB_PORT || '8899';
const url = `http://127.0.0.1:${port}`;
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'burstlab-ui-home-'));
// One server for every spec: JupyterLab, and Notebook 7's pages (/tree, /notebooks/…) from the same server when the
// `notebook` package is installed (its server extension is enabled by its own jupyter_server_config.d file);
// tests/notebook7.spec.ts runs when NOTEBOOK7=1 (the pytest wrapper sets it when `notebook` is importable).
const env = {
  ...process.env,
  BURSTLAB_DECLARED_GPUS: 'H100:2,A100:1',
  BURSTLAB_USER: 'ui-tester'
};
const servers = [
  {
    command: `jupyter lab --config ${path.join(__dirname, 'lab_config.py')}`,
    url: `${url}/api/status`,
    timeout: 120 * 1000,
    reuseExistingServer: false,
    stdout: process.env.LAB_LOG ? 'pipe' : 'ignore',
    stderr: 'pipe',
    gracefulShutdown: { signal: 'SIGTERM', timeout: 15 * 1000 },
    env: { ...env, LAB_PORT: port, BURSTLAB_HOME: home }
  }
];

module.exports = {
  testDir: './tests',
  // Without the Notebook 7 server there is nothing for its spec to drive (the pytest wrapper says which ran).
  testIgnore: process.env.NOTEBOOK7 === '1' ? [] : ['**/notebook7.spec.ts'],
  timeout: 120 * 1000,
  expect: { timeout: 30 * 1000 },
  workers: 1,
  retries: 0,
  reporter: [['list']],
  outputDir: './test-results',
  webServer: servers,
  use: {
    baseURL: url,
    headless: true,
    viewport: { width: 1400, height: 1000 },
    video: 'off',
    trace: 'off',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    }
  }
};

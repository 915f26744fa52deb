// burstlab-lab: GPUs, sessions, fan-outs, sandboxes and cost where the notebook user works.
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, InputDialog, Notification, showDialog } from '@jupyterlab/apputils';
import { CodeCell } from '@jupyterlab/cells';
import { INotebookCellExecutor, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Menu } from '@lumino/widgets';

import {
  AgentBadges,
  AgentRouting,
  createCellExecutor,
  isAgentCell,
  isGpuType,
  runCellsThrough,
  selectedCells,
  setAgentCell
} from './cells';
import { formatClock, formatMoney, formatRate, shortName } from './format';
import { gpuIcon, sandboxIcon } from './icons';
import { messageOf } from './api';
import { BurstlabModel, IStopEvent } from './model';
import { IBudget } from './types';
import { BurstlabPanel } from './panel';
import { GpuStatus } from './statusbar';
import { Ticker } from './ticker';

export namespace CommandIDs {
  export const openPanel = 'burstlab:open-panel';
  export const refresh = 'burstlab:refresh';
  export const runOnGpu = 'burstlab:run-on-gpu';
  export const runOnGpuMenu = 'burstlab:run-on-gpu-menu';
  export const runInSandbox = 'burstlab:run-in-sandbox';
  export const runInKernel = 'burstlab:run-in-kernel';
  export const toggleAgentCell = 'burstlab:toggle-agent-cell';
  export const noGpuTypes = 'burstlab:no-gpu-types';
}

const PLUGIN_ID = 'burstlab-lab:plugin';
const CELL_SELECTOR = '.jp-Notebook .jp-CodeCell';

/** Settings shared by the plugins of this package (filled from the settings registry once it answers). */
const config = {
  defaultGpuType: '',
  refreshInterval: 3,
  agentCells: 'sandbox' as AgentRouting,
  confirmStop: true,
  notifyStops: true
};

/**
 * The notification for a stop the user did not make in this tab: what happened first (JupyterLab cuts a
 * notification's message at 140 characters), then which one (name, start time, notebook).
 */
export function describeStop(e: IStopEvent, now = Date.now()): { level: 'info' | 'warning' | 'error'; message: string } {
  const nb = e.notebook ? shortName(e.notebook) : '';
  const m = e.map;
  const which = m ? `${m.name || m.id} (started ${formatClock(m.started, now)}${nb ? `, ${nb}` : ''})` : '';
  const at = m ? `at ${m.done}/${m.total}` : '';
  const session = `${e.what}${nb ? ` of ${nb}` : ''}`;
  const spent = e.budget
    ? `Budget ${e.budget.scope === 'user' ? e.budget.name : shortName(e.budget.name)} spent ` +
      `(${formatMoney(e.budget.spent_microusd)} of ${formatMoney(e.budget.limit_microusd)})`
    : '';
  const idle = e.session?.idle_timeout ?? 0;
  switch (e.cause) {
    case 'budget':
      return {
        level: 'warning',
        message:
          e.kind === 'map'
            ? `${spent}: fan-out cancelled ${at}: ${which}.`
            : `${spent || 'A budget ran out'}: burstlab stopped ${session}. Raise the budget to go on.`
      };
    case 'idle':
      return {
        level: 'info',
        message: `Released after ${idle >= 60 ? `${Math.round(idle / 60)} min` : `${Math.round(idle)} s`} idle: ${session}. Its variables are gone; the next %%gpu cell starts a new session.`
      };
    case 'panel':
      return { level: 'info', message: `Stopped from the burstlab panel in another tab: ${session}.` };
    case 'elsewhere':
      return {
        level: 'info',
        message: e.why
          ? `Stopped by another client (${e.why}): ${session}.`
          : `Stopped outside this tab (another tab, the API, or its kernel went away): ${session}.`
      };
    case 'cancelled':
      return { level: 'warning', message: `Fan-out cancelled from another tab or client ${at}: ${which}.` };
    case 'failed':
      return e.kind === 'session'
        ? { level: 'error', message: `Could not start ${session}: ${e.why ?? 'its environment failed'}.` }
        : { level: 'error', message: `Fan-out failed (${m?.failed} of ${m?.total} inputs): ${which}.` };
    case 'lost':
      return e.kind === 'session'
        ? { level: 'error', message: `Lost ${session}: ${e.why || 'its host or kernel went away'}. Its variables are gone.` }
        : { level: 'error', message: `Fan-out lost ${at} (its notebook went away): ${which}.` };
    default:
      return { level: 'info', message: `Ended: ${e.kind === 'map' ? which : session}.` };
  }
}

/** In an "Error Starting Kernel" dialog holding a burstlab error, "%%" back to "%" (see the observer in `activate`). */
export function unescapeKernelError(node: Node): void {
  if (!(node instanceof HTMLElement) || !node.classList.contains('jp-Dialog')) {
    return;
  }
  if (!/Error Starting Kernel/.test(node.querySelector('.jp-Dialog-header')?.textContent ?? '')) {
    return;
  }
  node.querySelectorAll('.jp-Dialog-body pre').forEach(pre => {
    const text = pre.textContent ?? '';
    if (/%%/.test(text) && /\b(BudgetExceeded|CapacityError|NoGpuError|GpuSpecError)\b/.test(text)) {
      pre.textContent = text.replace(/%{2,}/g, '%');
    }
  });
}

/**
 * Runs notebook cells: JupyterLab's own executor for every cell, except agent-written cells, which go through
 * `%%sandbox` while the `agentCells` setting says "sandbox". package.json disables the core executor plugin
 * (`@jupyterlab/notebook-extension:cell-executor`) so that this one provides the token.
 */
const executorPlugin: JupyterFrontEndPlugin<INotebookCellExecutor> = {
  id: 'burstlab-lab:cell-executor',
  description: 'Runs agent-written cells in a burstlab sandbox; every other cell as JupyterLab does.',
  autoStart: true,
  provides: INotebookCellExecutor,
  activate: (): INotebookCellExecutor => createCellExecutor(() => config.agentCells)
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'burstlab: GPU status bar item, side panel, Run on GPU / Run in sandbox, agent-cell badges.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ISettingRegistry, ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const { commands, shell } = app;
    const model = new BurstlabModel({ serverSettings: app.serviceManager.serverSettings, interval: config.refreshInterval });
    const ticker = new Ticker();
    const showError = (message: string) => {
      Notification.error(message, { autoClose: 10000 });
    };
    let settingsRef: ISettingRegistry.ISettings | null = null;
    const confirm = async (title: string, body: string, action: string): Promise<boolean> => {
      if (!config.confirmStop) {
        return true;
      }
      const result = await showDialog({
        title,
        body,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: action })],
        checkbox: { label: 'Do not ask again', caption: 'Sets the burstlab setting "confirmStop" to false' },
        defaultButton: 0
      });
      if (result.button.accept && result.isChecked && settingsRef) {
        void settingsRef.set('confirmStop', false);
      }
      return result.button.accept;
    };

    // Side panel.
    const panel = new BurstlabPanel({ model, ticker, onError: showError, confirm });
    shell.add(panel, 'left', { rank: 850, type: 'burstlab' });
    restorer?.add(panel, 'burstlab-panel');

    // "Raise budget": ask for the new limit, then PUT it (the next %%gpu cell runs again).
    const raiseBudget = async (budget: IBudget): Promise<void> => {
      const who = budget.scope === 'user' ? `your budget (${budget.name})` : `the budget of ${shortName(budget.name)}`;
      // A text field, not a number field: a number field's step of 1 refuses cents.
      const result = await InputDialog.getText({
        title: `Raise ${who}`,
        label: `New limit in US dollars (now ${formatMoney(budget.limit_microusd)}, spent ${formatMoney(budget.spent_microusd)})`,
        text: String(Math.ceil((2 * Math.max(budget.limit_microusd, budget.spent_microusd)) / 1e4) / 100 || 1),
        okLabel: 'Set limit'
      });
      if (!result.button.accept || result.value === null) {
        return;
      }
      const usd = Number(result.value.trim().replace(/^\$/, ''));
      if (!result.value.trim() || !Number.isFinite(usd) || usd < 0) {
        showError(`"${result.value}" is not an amount of US dollars; the budget is unchanged.`);
        return;
      }
      try {
        const b = await model.setBudget(budget, usd);
        Notification.success(`Budget ${shortName(b.name)}: ${formatMoney(b.limit_microusd)}, ${formatMoney(b.remaining_microusd)} left.`, {
          autoClose: 5000
        });
      } catch (error) {
        showError(messageOf(error));
      }
    };

    // A burstlab kernel that did not start (a budget's refusal, no free GPU) is shown in JupyterLab's own "Error
    // Starting Kernel" dialog. Its "%" arrives escaped, more than once (the provisioner escapes it for tornado, whose
    // HTTPError.log_message, which jupyter_server answers with, escapes it again): "%%%%gpu budget". Say burstlab's
    // words as written.
    new MutationObserver(records => {
      for (const record of records) {
        record.addedNodes.forEach(node => {
          if (node instanceof HTMLElement && node.classList.contains('jp-Dialog')) {
            // Its content renders (React) a moment after the dialog is attached: look while it does.
            const inner = new MutationObserver(() => unescapeKernelError(node));
            inner.observe(node, { childList: true, subtree: true });
            unescapeKernelError(node);
            setTimeout(() => inner.disconnect(), 5000);
          }
        });
      }
    }).observe(document.body, { childList: true });

    // Stops this tab did not make: a notification with what happened and a way to the panel.
    model.stopped.connect((_, event) => {
      if (!config.notifyStops) {
        return;
      }
      const { level, message } = describeStop(event);
      const budget = event.cause === 'budget' ? event.budget : undefined;
      const actions: Notification.IAction[] = [
        { label: 'Open panel', callback: () => void commands.execute(CommandIDs.openPanel) }
      ];
      if (budget) {
        actions.unshift({ label: 'Raise budget', callback: () => void raiseBudget(budget) });
      }
      Notification.emit(message, level, { autoClose: level === 'info' ? 10000 : false, actions });
    });

    // The cost meter: JupyterLab's status bar; Notebook 7 has none, so its top bar.
    const status = new GpuStatus(model, tracker, ticker, () => void commands.execute(CommandIDs.openPanel));
    if (statusBar) {
      statusBar.registerStatusItem('burstlab-lab:status', {
        item: status,
        align: 'left',
        rank: 50,
        isActive: () => status.hasContent,
        activeStateChanged: status.stateChanged
      });
    } else {
      status.addClass('burstlab-mod-top');
      status.setHidden(!status.hasContent);
      status.stateChanged.connect(() => status.setHidden(!status.hasContent));
      shell.add(status, 'top', { rank: 1000 });
    }

    // The notebook the user works in: the current one, or the last one focused.
    const currentPanel = (): NotebookPanel | null => tracker.currentWidget;
    const gpuTypeFor = (args: { type?: unknown }): string | null => {
      const wanted = args.type ?? (config.defaultGpuType || model.gpuTypes[0]);
      return isGpuType(wanted) ? wanted : null;
    };
    const runThrough = (magicLine: string) => {
      const nb = currentPanel();
      if (!nb) {
        return;
      }
      runCellsThrough(nb, selectedCells(nb.content), magicLine).catch(reason => showError(String(reason?.message ?? reason)));
    };

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Show the burstlab panel',
      caption: 'GPUs, sessions, fan-outs, sandboxes, bill and budgets',
      icon: gpuIcon,
      execute: () => shell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh burstlab',
      execute: () => model.refresh()
    });
    commands.addCommand(CommandIDs.runOnGpu, {
      label: args => {
        const type = gpuTypeFor(args);
        if (!args.type) {
          return type ? `Run on GPU (${type})` : 'Run on GPU';
        }
        const hosts = model.hosts.filter(h => h.type === args.type);
        const free = hosts.reduce((n, h) => n + h.free, 0);
        const count = hosts.reduce((n, h) => n + h.count, 0);
        return hosts.length
          ? `${args.type} (${free}/${count} free) · ${formatRate(hosts[0].microusd_per_hour)}`
          : String(args.type);
      },
      caption: args => `Run the selected cell through %%gpu ${gpuTypeFor(args) ?? 'TYPE'}, without editing it`,
      icon: args => (args.type ? undefined : gpuIcon),
      isEnabled: args => !!currentPanel() && gpuTypeFor(args) !== null,
      execute: args => {
        const type = gpuTypeFor(args);
        if (!type) {
          showError(
            model.errors.hosts ?? 'burstlab: no GPU type to run on; this workspace lists none (see the burstlab panel).'
          );
          return;
        }
        runThrough(`%%gpu ${type}`);
      }
    });
    commands.addCommand(CommandIDs.noGpuTypes, {
      label: () => (model.errors.hosts ? 'GPU types unavailable (see the burstlab panel)' : 'No GPU types in this workspace'),
      isEnabled: () => false,
      execute: () => undefined
    });

    // "Run on GPU ▸ H100 / A100 / …", filled from GET hosts.
    const gpuMenu = new Menu({ commands });
    gpuMenu.id = 'burstlab-run-on-gpu-menu';
    gpuMenu.title.label = 'Run on GPU';
    gpuMenu.title.icon = gpuIcon;
    let shownTypes = '\0';
    const fillGpuMenu = () => {
      const types = model.gpuTypes;
      if (types.join(',') === shownTypes) {
        return;
      }
      shownTypes = types.join(',');
      gpuMenu.clearItems();
      if (!types.length) {
        gpuMenu.addItem({ command: CommandIDs.noGpuTypes });
      }
      for (const type of types) {
        gpuMenu.addItem({ command: CommandIDs.runOnGpu, args: { type } });
      }
    };
    fillGpuMenu();
    model.changed.connect(fillGpuMenu);

    commands.addCommand(CommandIDs.runOnGpuMenu, {
      label: 'Run on GPU…',
      caption: 'Run the selected cell on a GPU (%%gpu TYPE) without editing it',
      icon: gpuIcon,
      isEnabled: () => !!currentPanel(),
      execute: async () => {
        // Fresh free counts in the labels (a menu does not relabel while open); never wait long for them.
        await Promise.race([model.refresh(), new Promise(resolve => setTimeout(resolve, 1500))]);
        const active = currentPanel()?.content.activeCell?.node;
        const anchor =
          active?.querySelector('.jp-cell-toolbar [data-command="burstlab:run-on-gpu-menu"]') ??
          active?.querySelector('.jp-cell-toolbar') ??
          active;
        const rect = anchor?.getBoundingClientRect();
        gpuMenu.open(rect ? rect.left : window.innerWidth / 2, rect ? rect.bottom : window.innerHeight / 2);
      }
    });
    commands.addCommand(CommandIDs.runInSandbox, {
      label: 'Run in sandbox',
      caption: 'Run the selected cell through %%sandbox (an isolated kernel), without editing it',
      icon: sandboxIcon,
      isEnabled: () => !!currentPanel(),
      execute: () => runThrough('%%sandbox')
    });
    commands.addCommand(CommandIDs.runInKernel, {
      label: 'Run in this kernel (not the sandbox)',
      caption: 'Run an agent-written cell in the notebook kernel this once',
      isVisible: () => {
        const cell = currentPanel()?.content.activeCell;
        return !!cell && isAgentCell(cell.model) && config.agentCells === 'sandbox';
      },
      execute: async () => {
        const nb = currentPanel();
        const cell = nb?.content.activeCell;
        if (!nb || !cell) {
          return;
        }
        await CodeCell.execute(cell as CodeCell, nb.sessionContext).catch(reason =>
          showError(String(reason?.message ?? reason))
        );
      }
    });
    commands.addCommand(CommandIDs.toggleAgentCell, {
      label: () => {
        const cell = currentPanel()?.content.activeCell;
        return cell && isAgentCell(cell.model) ? 'Unmark as agent-written' : 'Mark as agent-written';
      },
      caption: 'Set or clear the cell metadata burstlab.agent',
      isEnabled: () => currentPanel()?.content.activeCell?.model.type === 'code',
      execute: () => {
        const cell = currentPanel()?.content.activeCell;
        if (cell && cell.model.type === 'code') {
          setAgentCell(cell.model, !isAgentCell(cell.model));
        }
      }
    });

    app.contextMenu.addItem({ type: 'separator', selector: CELL_SELECTOR, rank: 20 });
    app.contextMenu.addItem({ type: 'submenu', submenu: gpuMenu, selector: CELL_SELECTOR, rank: 20.1 });
    app.contextMenu.addItem({ command: CommandIDs.runInSandbox, selector: CELL_SELECTOR, rank: 20.2 });
    app.contextMenu.addItem({ command: CommandIDs.runInKernel, selector: CELL_SELECTOR, rank: 20.3 });
    app.contextMenu.addItem({ command: CommandIDs.toggleAgentCell, selector: CELL_SELECTOR, rank: 20.4 });

    if (palette) {
      const category = 'burstlab';
      for (const command of [
        CommandIDs.openPanel,
        CommandIDs.refresh,
        CommandIDs.runOnGpu,
        CommandIDs.runInSandbox,
        CommandIDs.toggleAgentCell
      ]) {
        palette.addItem({ command, category });
      }
    }

    // A kernel this tab restarts or shuts down takes its GPU sessions and fan-outs with it: no notification.
    const watchKernel = (nb: NotebookPanel) => {
      nb.sessionContext.statusChanged.connect((_, status) => {
        if (['restarting', 'autorestarting', 'terminating', 'dead'].includes(status)) {
          model.expectEnds(nb.context.path);
        }
      });
      nb.sessionContext.kernelChanged.connect((_, change) => {
        if (change.oldValue) {
          model.expectEnds(nb.context.path); // shut down, or another kernel picked
        }
      });
    };
    tracker.widgetAdded.connect((_, nb) => watchKernel(nb));
    tracker.forEach(watchKernel);

    // Agent badges on every notebook.
    const badges = new Set<AgentBadges>();
    tracker.widgetAdded.connect((_, nb) => {
      const b = new AgentBadges(nb, () => config.agentCells);
      badges.add(b);
      nb.disposed.connect(() => badges.delete(b));
    });
    tracker.forEach(nb => badges.add(new AgentBadges(nb, () => config.agentCells)));

    // Settings: read when the registry answers; nothing here waits for it.
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          settingsRef = settings;
          const apply = () => {
            const type = settings.get('defaultGpuType').composite;
            config.defaultGpuType = typeof type === 'string' ? type : '';
            const interval = Number(settings.get('refreshInterval').composite);
            config.refreshInterval = Number.isFinite(interval) && interval >= 1 ? interval : 3;
            config.agentCells = settings.get('agentCells').composite === 'kernel' ? 'kernel' : 'sandbox';
            config.confirmStop = settings.get('confirmStop').composite !== false;
            config.notifyStops = settings.get('notifyStops').composite !== false;
            model.interval = config.refreshInterval;
            badges.forEach(b => b.schedule());
            commands.notifyCommandChanged();
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => console.error(`burstlab-lab: could not load settings: ${reason}`));
    }
  }
};

export default [executorPlugin, plugin];

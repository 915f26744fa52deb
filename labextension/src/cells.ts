// Running a cell through `%%gpu TYPE` or `%%sandbox` without editing it, and routing agent-written cells.
import { Cell, CodeCell, ICellModel } from '@jupyterlab/cells';
import { KernelError, INotebookCellExecutor, Notebook, NotebookPanel, runCell } from '@jupyterlab/notebook';
import { OutputArea } from '@jupyterlab/outputarea';
import { Kernel, KernelMessage } from '@jupyterlab/services';

import { recordRan } from './ranlabel';

/** Cell metadata that marks a cell as written by an agent: `{"burstlab": {"agent": true}}`. */
export const AGENT_METADATA_KEY = 'burstlab';

export type AgentRouting = 'sandbox' | 'kernel';

export function isAgentCell(model: ICellModel): boolean {
  if (model.type !== 'code') {
    return false;
  }
  const meta = model.getMetadata(AGENT_METADATA_KEY) as { agent?: unknown } | undefined;
  return !!meta && typeof meta === 'object' && meta.agent === true;
}

/** Mark or unmark a cell as agent-written (keeps other keys under `burstlab`). */
export function setAgentCell(model: ICellModel, agent: boolean): void {
  const meta = { ...((model.getMetadata(AGENT_METADATA_KEY) as object | undefined) ?? {}) } as Record<string, unknown>;
  if (agent) {
    meta.agent = true;
  } else {
    delete meta.agent;
  }
  if (Object.keys(meta).length) {
    model.setMetadata(AGENT_METADATA_KEY, meta);
  } else {
    model.deleteMetadata(AGENT_METADATA_KEY);
  }
}

/** A GPU type as the server names it; anything else is refused before it reaches the kernel. */
export function isGpuType(type: unknown): type is string {
  return typeof type === 'string' && /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(type);
}

const ROUTING_MAGIC = /^\s*%%(gpu|sandbox)\b[^\n]*(\n|$)/;

/** The code the kernel runs for `source` sent through `magicLine` (a `%%gpu`/`%%sandbox` first line is replaced). */
export function throughMagic(source: string, magicLine: string): string {
  return `${magicLine}\n${source.replace(ROUTING_MAGIC, '')}`;
}

/** Does the cell already say where it runs (its first line is a cell magic)? */
export function startsWithCellMagic(source: string): boolean {
  return /^\s*%%/.test(source);
}

/**
 * Loads the burstlab IPython extension in the kernel, quietly (no output, no execution count, no history).
 * A kernel without burstlab gets an error that names the fix.
 */
async function ensureBurstlab(cell: CodeCell, kernel: Kernel.IKernelConnection): Promise<boolean> {
  const future = kernel.requestExecute({
    code: "get_ipython().extension_manager.load_extension('burstlab')",
    silent: true,
    store_history: false,
    allow_stdin: false,
    stop_on_error: false
  });
  const reply = (await future.done) as KernelMessage.IExecuteReplyMsg;
  if (reply.content.status === 'ok') {
    return true;
  }
  const content = reply.content as KernelMessage.IReplyErrorContent;
  const message =
    `burstlab could not be loaded in this notebook's kernel (${content.ename}: ${content.evalue}). ` +
    "Install burstlab into the kernel's Python environment (pip install burstlab) or pick a kernel that has it.";
  cell.model.sharedModel.transact(() => cell.model.clearExecution(), false);
  cell.outputArea.model.add({ output_type: 'error', ename: 'BurstlabNotLoaded', evalue: message, traceback: [message] });
  return false;
}

/** Like `CodeCell.execute`, but the kernel runs `code` instead of the cell's source; the cell is not edited. */
async function executeCode(
  cell: CodeCell,
  sessionContext: NotebookPanel['sessionContext'],
  code: string,
  metadata: Record<string, unknown>
): Promise<KernelMessage.IExecuteReplyMsg | undefined> {
  const model = cell.model;
  const kernel = sessionContext.session?.kernel;
  if (!model.sharedModel.getSource().trim() || !kernel) {
    model.sharedModel.transact(() => model.clearExecution(), false);
    return undefined;
  }
  model.sharedModel.transact(
    () => {
      model.clearExecution();
      cell.outputHidden = false;
    },
    false,
    'silent-change'
  );
  model.executionState = 'running';
  model.trusted = true;
  let future: typeof cell.outputArea.future | undefined;
  try {
    if (!(await ensureBurstlab(cell, kernel))) {
      model.executionState = 'idle';
      return undefined;
    }
    const msgPromise = OutputArea.execute(code, cell.outputArea, sessionContext, {
      ...model.metadata,
      ...metadata,
      cellId: model.sharedModel.getId()
    });
    future = cell.outputArea.future;
    const msg = (await msgPromise) as KernelMessage.IExecuteReplyMsg;
    model.executionCount = msg.content.execution_count;
    return msg;
  } catch (e) {
    if (future && !cell.isDisposed && cell.outputArea.future === future) {
      model.executionState = 'idle';
    }
    throw e;
  }
}

/**
 * `runCell` from @jupyterlab/notebook with the kernel running `throughMagic(source, magicLine)`: the same checks
 * (kernel terminating, pending input, no kernel yet), the same callbacks, the same error handling.
 */
export async function runCellThrough(options: INotebookCellExecutor.IRunCellOptions, magicLine: string): Promise<boolean> {
  const { cell, notebook, onCellExecuted, onCellExecutionScheduled, sessionContext, sessionDialogs } = options;
  if (cell.model.type !== 'code' || !sessionContext || !cell.model.sharedModel.getSource().trim()) {
    return runCell(options);
  }
  if (sessionContext.isTerminating || sessionContext.pendingInput) {
    return runCell(options); // shows the same dialogs and refuses in the same way
  }
  if (sessionContext.hasNoKernel) {
    const shouldSelect = await sessionContext.startKernel();
    if (shouldSelect && sessionDialogs) {
      await sessionDialogs.selectKernel(sessionContext);
    }
  }
  const codeCell = cell as CodeCell;
  if (sessionContext.hasNoKernel) {
    codeCell.model.sharedModel.transact(() => codeCell.model.clearExecution());
    return true;
  }
  const deletedCells = notebook.deletedCells;
  onCellExecutionScheduled({ cell });
  let ran = false;
  try {
    const code = throughMagic(cell.model.sharedModel.getSource(), magicLine);
    const reply = await executeCode(codeCell, sessionContext, code, { deletedCells }).finally(() => recordRan(cell));
    deletedCells.splice(0, deletedCells.length);
    if (cell.isDisposed) {
      ran = false;
    } else if (!reply || reply.content.status === 'ok') {
      ran = !!reply;
    } else {
      throw new KernelError(reply.content);
    }
  } catch (reason) {
    if (cell.isDisposed || (reason as Error).message?.startsWith('Canceled')) {
      ran = false;
    } else {
      onCellExecuted({ cell, success: false, error: reason as KernelError });
      throw reason;
    }
  }
  if (ran) {
    onCellExecuted({ cell, success: true });
  }
  return ran;
}

/**
 * The notebook cell executor: agent-written cells go through `%%sandbox` when routing says so (and the cell does
 * not already start with a cell magic); every other cell runs exactly as JupyterLab's own executor runs it.
 */
export function createCellExecutor(routing: () => AgentRouting): INotebookCellExecutor {
  return Object.freeze({
    runCell: (options: INotebookCellExecutor.IRunCellOptions): Promise<boolean> => {
      const { cell } = options;
      if (
        routing() === 'sandbox' &&
        isAgentCell(cell.model) &&
        !startsWithCellMagic(cell.model.sharedModel.getSource())
      ) {
        return runCellThrough(options, '%%sandbox');
      }
      return runCell(options).finally(() => recordRan(cell));
    }
  });
}

/** Run cells of a notebook panel through `magicLine`, one after the other (as the toolbar and menus do). */
export async function runCellsThrough(panel: NotebookPanel, cells: readonly Cell[], magicLine: string): Promise<void> {
  const notebook: Notebook = panel.content;
  for (const cell of cells) {
    if (cell.model.type !== 'code') {
      continue;
    }
    const ok = await runCellThrough(
      {
        cell,
        notebook: notebook.model!,
        notebookConfig: notebook.notebookConfig,
        onCellExecuted: () => undefined,
        onCellExecutionScheduled: () => undefined,
        sessionContext: panel.sessionContext
      },
      magicLine
    );
    if (!ok) {
      break;
    }
  }
}

/** The selected code cells of a notebook (the active one when none is selected). */
export function selectedCells(notebook: Notebook): Cell[] {
  const cells = notebook.widgets.filter(c => notebook.isSelectedOrActive(c));
  return cells.length ? cells : notebook.activeCell ? [notebook.activeCell] : [];
}

/**
 * Keeps the agent badge on the cells of one notebook in step with their metadata and the routing setting.
 * The badge is drawn by CSS inside the cell's prompt, under the execution count (`.jp-InputPrompt::after`,
 * from the cell's `data-burstlab-agent`), so it is in the prompt's flow: it never covers the count, and the
 * prompt grows to hold it. The prompt's tooltip explains it.
 */
export class AgentBadges {
  constructor(
    private readonly _panel: NotebookPanel,
    private readonly _routing: () => AgentRouting
  ) {
    const schedule = () => this.schedule();
    _panel.content.modelContentChanged.connect(schedule);
    _panel.content.model?.cells.changed.connect(schedule);
    _panel.content.model?.metadataChanged.connect(schedule);
    _panel.content.activeCellChanged.connect(schedule);
    _panel.context.ready.then(schedule).catch(() => undefined);
    this.schedule();
  }

  schedule(): void {
    if (this._pending || this._panel.isDisposed) {
      return;
    }
    this._pending = true;
    requestAnimationFrame(() => {
      this._pending = false;
      this.apply();
    });
  }

  apply(): void {
    if (this._panel.isDisposed) {
      return;
    }
    const sandbox = this._routing() === 'sandbox';
    for (const cell of this._panel.content.widgets) {
      const agent = isAgentCell(cell.model);
      cell.toggleClass('burstlab-agent-cell', agent);
      const prompt = cell.node.querySelector('.jp-InputPrompt') as HTMLElement | null;
      if (!agent) {
        if (cell.node.dataset.burstlabAgent) {
          delete cell.node.dataset.burstlabAgent;
          prompt?.removeAttribute('title');
        }
        continue;
      }
      const routed = sandbox && !startsWithCellMagic(cell.model.sharedModel.getSource());
      cell.node.dataset.burstlabAgent = routed ? 'sandbox' : 'kernel';
      prompt?.setAttribute(
        'title',
        routed
          ? 'Written by an agent (metadata burstlab.agent = true): runs in a sandbox kernel through %%sandbox. ' +
              'Change this with the burstlab setting "agentCells".'
          : 'Written by an agent (metadata burstlab.agent = true).'
      );
    }
  }

  private _pending = false;
}

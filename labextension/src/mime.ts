// The label under a %%gpu cell: "ran on H100 @ host · 2.1 s · $0.0023" (the cell's own time and cost), then, muted,
// "session H100: 31 s held, $0.0340 so far", from the display the magic
// publishes (burstlab/magics/gpu.py `_footer`). A mime extension, so JupyterLab and Notebook 7 render it
// wherever a notebook is open, including one reopened from disk (the output is saved with the notebook).
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

/** The display's mimetype; its JSON is also kept in the cell's metadata as `burstlab.ran`. */
export const CELL_MIME = 'application/vnd.burstlab.cell+json';

/**
 * Where a %%gpu cell ran, the cell's own share of its session (the time its session was billed while the cell ran
 * and its cost at the ledger's rate) and, second, what the session had cost when the cell ended. Records saved
 * before the cell's own share existed have no `cell_*` fields (their `text` is the session's figures).
 */
export interface IRanRecord {
  gpu: string;
  spec: string;
  host: string;
  cell_ms?: number;
  cell_cost_microusd?: number;
  rate_nusd_per_s?: number;
  held_s: number;
  cost_microusd: number;
  interval_id?: string;
  at: string;
  text: string;
  session_text?: string;
}

export function isRanRecord(value: unknown): value is IRanRecord {
  const r = value as IRanRecord | null;
  return !!r && typeof r === 'object' && typeof r.text === 'string' && typeof r.gpu === 'string';
}

/** A small muted line of text (JupyterLab's own font and colour variables; see style/base.css). */
export class RanLabel extends Widget implements IRenderMime.IRenderer {
  constructor() {
    super();
    this.addClass('jp-burstlab-ran');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const record = model.data[CELL_MIME];
    if (!isRanRecord(record)) {
      this.node.textContent = String(model.data['text/plain'] ?? '');
      return;
    }
    this.node.textContent = '';
    const own = document.createElement('span');
    own.className = 'jp-burstlab-ran-cell';
    own.textContent = record.text;
    this.node.appendChild(own);
    if (record.session_text) {
      const session = document.createElement('span');
      session.className = 'jp-burstlab-ran-session';
      session.textContent = ` · ${record.session_text}`;
      this.node.appendChild(session);
    }
    this.node.title =
      (record.cell_ms !== undefined
        ? `This cell: ${(record.cell_ms / 1000).toFixed(1)} s of its session's time on ${record.gpu} (${record.host}), ` +
          `billed at the ledger's rate. `
        : '') +
      `Session ${record.spec}: ${record.held_s} s held, cost so far as this cell ended (${record.at}). ` +
      "Saved in the cell's metadata as burstlab.ran.";
  }
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [CELL_MIME],
  createRenderer: () => new RanLabel()
};

const extension: IRenderMime.IExtension = {
  id: 'burstlab-lab:cell-label',
  description: 'Shows where a %%gpu cell ran and what it cost, as a small label under the cell.',
  rendererFactory,
  rank: 0, // before text/plain, which every other frontend shows instead
  dataType: 'json'
};

export default extension;

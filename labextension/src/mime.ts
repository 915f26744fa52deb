// The label under a %%gpu cell: "ran on H100 @ host · 31 s held · $0.034 so far", from the display the magic
// publishes (burstlab/magics/gpu.py `_footer`). A mime extension, so JupyterLab and Notebook 7 render it
// wherever a notebook is open, including one reopened from disk (the output is saved with the notebook).
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

/** The display's mimetype; its JSON is also kept in the cell's metadata as `burstlab.ran`. */
export const CELL_MIME = 'application/vnd.burstlab.cell+json';

/** Where a %%gpu cell ran and what its session had cost when the cell ended. */
export interface IRanRecord {
  gpu: string;
  spec: string;
  host: string;
  held_s: number;
  cost_microusd: number;
  at: string;
  text: string;
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
    this.node.textContent = record.text;
    this.node.title =
      `${record.gpu} on ${record.host}, session ${record.spec}: ${record.held_s} s held, ` +
      `cost so far as this cell ended (${record.at}). Saved in the cell's metadata as burstlab.ran.`;
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

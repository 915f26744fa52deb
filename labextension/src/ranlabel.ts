// Keeps a %%gpu cell's "ran on" record in its metadata (`burstlab.ran`), so it is saved with the notebook.
import { Cell, ICodeCellModel } from '@jupyterlab/cells';

import { CELL_MIME, IRanRecord, isRanRecord } from './mime';

export const RAN_METADATA_KEY = 'burstlab';

/** The last burstlab cell record among a cell's outputs, or undefined. */
export function ranRecordOf(cell: Cell): IRanRecord | undefined {
  if (cell.model.type !== 'code' || cell.isDisposed) {
    return undefined;
  }
  const outputs = (cell.model as ICodeCellModel).outputs;
  for (let i = outputs.length - 1; i >= 0; i--) {
    const record = outputs.get(i).data[CELL_MIME];
    if (isRanRecord(record)) {
      return record;
    }
  }
  return undefined;
}

/**
 * After a cell ran: `burstlab.ran` = the record its outputs carry, or no `ran` when this run published none (it
 * did not run through %%gpu, was interrupted, or its session was lost). Other keys under `burstlab` are kept.
 */
export function recordRan(cell: Cell): void {
  if (cell.model.type !== 'code' || cell.isDisposed) {
    return;
  }
  const record = ranRecordOf(cell);
  const old = (cell.model.getMetadata(RAN_METADATA_KEY) as Record<string, unknown> | undefined) ?? {};
  if (!record && !('ran' in old)) {
    return;
  }
  const meta: Record<string, unknown> = { ...old };
  if (record) {
    meta.ran = { ...record };
  } else {
    delete meta.ran;
  }
  if (Object.keys(meta).length) {
    cell.model.setMetadata(RAN_METADATA_KEY, meta);
  } else {
    cell.model.deleteMetadata(RAN_METADATA_KEY);
  }
}

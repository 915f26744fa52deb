// The status-bar item: the GPUs the current notebook holds and what they cost, ticking every second.
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { formatDuration, formatMoney, sameNotebook } from './format';
import { BurstlabModel, liveSession } from './model';
import { Ticker } from './ticker';
import { ISession } from './types';

/** "H100 · 3m12s · $0.21" for the sessions of one notebook; '' when it holds none. */
export function describeSessions(sessions: ISession[], fetchedAt: number, now = Date.now()): string {
  if (!sessions.length) {
    return '';
  }
  let seconds = 0;
  let microusd = 0;
  const gpus: string[] = [];
  for (const s of sessions) {
    const live = liveSession(s, fetchedAt, now);
    seconds = Math.max(seconds, live.seconds);
    microusd += live.microusd;
    gpus.push(s.count > 1 ? `${s.gpu_type}×${s.count}` : s.gpu_type);
  }
  return `${gpus.join(' + ')} · ${formatDuration(seconds)} · ${formatMoney(microusd)}`;
}

export class GpuStatus extends Widget {
  constructor(
    private readonly _model: BurstlabModel,
    private readonly _tracker: INotebookTracker,
    ticker: Ticker,
    onClick: () => void
  ) {
    super();
    this.id = 'burstlab-status';
    this.addClass('burstlab-status');
    this.node.setAttribute('role', 'button');
    this.node.addEventListener('click', onClick);
    this._model.changed.connect(this.render, this);
    this._tracker.currentChanged.connect(this.render, this);
    ticker.ticked.connect(this.render, this);
  }

  /** Whether the item has something to show (the status bar hides it otherwise). */
  get hasContent(): boolean {
    return this._text !== '';
  }

  get stateChanged(): ISignal<this, void> {
    return this._stateChanged;
  }

  /** The sessions that belong to the notebook the user is working in. */
  currentSessions(): ISession[] {
    const path = this._tracker.currentWidget?.context.path;
    return this._model.sessions.filter(s => s.state === 'running' && sameNotebook(s.notebook, path));
  }

  /** Redraw from the model (after each poll, each tick and when another notebook becomes current). */
  render(): void {
    const sessions = this.currentSessions();
    let text = describeSessions(sessions, this._model.sessionsAt);
    let title = sessions.length
      ? `burstlab: ${sessions.map(s => `${s.spec} on ${s.host}${s.declared ? ' (declared)' : ''}`).join(', ')} held by this notebook. Click for the burstlab panel.`
      : '';
    const error = this._model.errors.sessions;
    this.node.classList.toggle('burstlab-mod-error', !!error && !text);
    if (error && !text) {
      text = 'burstlab ⚠';
      title = error;
    }
    if (text !== this._text) {
      const had = this.hasContent;
      this._text = text;
      this.node.textContent = text;
      if (had !== this.hasContent) {
        this._stateChanged.emit();
      }
    }
    this.node.title = title;
  }

  private _text = '';
  private _stateChanged = new Signal<this, void>(this);
}

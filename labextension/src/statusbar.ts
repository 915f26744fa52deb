// The status-bar item: the GPUs the current notebook holds and what they cost, ticking every second.
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { formatDuration, formatMoney, sameNotebook } from './format';
import { BurstlabModel, liveSession } from './model';
import { Ticker } from './ticker';
import { IBudget, ISession } from './types';

export type MeterState = 'ok' | 'warning' | 'exceeded';

/**
 * The budgets over the notebook at `path` (the user's, and the notebook's own), ticking down with the running
 * sessions between polls: what the tightest leaves, and the worst state of any (past its warning, or its limit).
 */
export function budgetLeft(
  budgets: IBudget[],
  sessions: ISession[],
  path: string | null | undefined,
  fetchedAt: number,
  now = Date.now()
): { left: number; state: MeterState; budget: IBudget } | null {
  let best: { left: number; state: MeterState; budget: IBudget } | null = null;
  for (const b of budgets) {
    if (b.scope !== 'user' && !sameNotebook(b.name, path)) {
      continue;
    }
    // Spending since the budgets were read: the live part of the sessions this budget covers.
    let extra = 0;
    for (const s of sessions) {
      if (s.state === 'running' && (b.scope === 'user' || s.notebook === b.name || sameNotebook(s.notebook, path))) {
        extra += liveSession(s, fetchedAt, now).microusd - s.cost_microusd;
      }
    }
    const spent = b.spent_microusd + extra;
    const left = b.limit_microusd - spent;
    const state: MeterState =
      b.state === 'exceeded' || left <= 0
        ? 'exceeded'
        : b.state === 'warning' || spent >= b.soft_fraction * b.limit_microusd
          ? 'warning'
          : 'ok';
    const rank = { ok: 0, warning: 1, exceeded: 2 };
    if (!best || left < best.left) {
      best = { left, state: best && rank[best.state] > rank[state] ? best.state : state, budget: b };
    } else if (rank[state] > rank[best.state]) {
      best.state = state; // the tightest budget's money, the worst budget's colour
    }
  }
  return best;
}

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
    this.node.tabIndex = 0;
    this.node.addEventListener('click', onClick);
    this.node.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        onClick();
      }
    });
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
      ? `burstlab: ${sessions.map(s => `${s.spec} on ${s.host}${s.declared ? ' (declared)' : ''}`).join(', ')} held by this notebook.`
      : '';
    let state: MeterState = 'ok';
    if (text) {
      const path = this._tracker.currentWidget?.context.path;
      const budget = budgetLeft(this._model.budgets, this._model.sessions, path, this._model.sessionsAt);
      if (budget) {
        const b = budget.budget;
        text += ` · ${formatMoney(Math.max(0, budget.left))} left`;
        state = budget.state;
        title +=
          ` Budget ${b.scope === 'user' ? `of ${b.name}` : `of this notebook`}: ${formatMoney(b.limit_microusd)}` +
          (state === 'exceeded'
            ? ', spent: burstlab stops what it pays for.'
            : state === 'warning'
              ? `, past its ${Math.round(b.soft_fraction * 100)}% warning.`
              : '.');
      }
      title += ' Click for the burstlab panel.';
    }
    this.node.dataset.state = state;
    this.node.classList.toggle('burstlab-mod-warning', state === 'warning');
    this.node.classList.toggle('burstlab-mod-exceeded', state === 'exceeded');
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

// What the lab knows about burstlab: polled from the REST API with backoff, standing by while the tab is hidden.
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { messageOf, requestAPI } from './api';
import { IBudget, IHost, IMap, ISandbox, ISession, IUsage } from './types';

/** The resources the panel shows; `sessions` and `hosts` are also polled while the panel is closed. */
export type Section = 'sessions' | 'hosts' | 'maps' | 'sandboxes' | 'usage' | 'budgets';

const ALWAYS: Section[] = ['sessions', 'hosts'];
const PANEL: Section[] = ['sessions', 'hosts', 'maps', 'sandboxes', 'usage', 'budgets'];
/** The bill covers this many days back. */
export const BILL_DAYS = 30;

export class BurstlabModel implements IDisposable {
  constructor(options: { serverSettings?: ServerConnection.ISettings; interval?: number } = {}) {
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._interval = Math.max(1, options.interval ?? 3);
    this._poll = new Poll({
      auto: true,
      factory: () => this._fetch(),
      frequency: { interval: this._interval * 1000, backoff: true, max: 60 * 1000 },
      name: 'burstlab-lab:model',
      standby: 'when-hidden'
    });
  }

  sessions: ISession[] = [];
  hosts: IHost[] = [];
  maps: IMap[] = [];
  sandboxes: ISandbox[] = [];
  usage: IUsage | null = null;
  budgets: IBudget[] = [];
  /** The last error per section (the server's message), cleared by the next success. */
  errors: Partial<Record<Section, string>> = {};
  /** Date.now() when `sessions` was last fetched: the clock that live durations and costs tick from. */
  sessionsAt = 0;
  /** Whether at least one answer has arrived. */
  loaded = false;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Refresh interval in seconds (the poll backs off from it on errors, up to a minute). */
  get interval(): number {
    return this._interval;
  }
  set interval(seconds: number) {
    this._interval = Math.max(1, seconds);
    this._poll.frequency = { ...this._poll.frequency, interval: this._interval * 1000 };
  }

  /** While the panel is shown, everything is polled; otherwise only sessions and hosts. */
  get panelActive(): boolean {
    return this._panelActive;
  }
  set panelActive(active: boolean) {
    if (active === this._panelActive) {
      return;
    }
    this._panelActive = active;
    if (active) {
      void this.refresh();
    }
  }

  /** GPU types, in the server's order, without duplicates. */
  get gpuTypes(): string[] {
    return [...new Set(this.hosts.map(h => h.type))];
  }

  /** Poll now; resolves when that poll tick is done. Never rejects (errors land in `errors`). */
  async refresh(): Promise<void> {
    await this._poll.refresh();
    try {
      await this._poll.tick;
    } catch {
      // reported through `errors`
    }
  }

  /** DELETE sessions/{id}; throws the server's message. */
  async stopSession(id: string): Promise<ISession> {
    const s = await requestAPI<ISession>(`sessions/${encodeURIComponent(id)}`, { method: 'DELETE' }, this._settings);
    this.sessions = this.sessions.filter(x => x.id !== id);
    this._changed.emit();
    void this.refresh();
    return s;
  }

  /** DELETE sandboxes/{id}. */
  async closeSandbox(id: string): Promise<ISandbox> {
    const s = await requestAPI<ISandbox>(`sandboxes/${encodeURIComponent(id)}`, { method: 'DELETE' }, this._settings);
    this.sandboxes = this.sandboxes.filter(x => x.id !== id);
    this._changed.emit();
    void this.refresh();
    return s;
  }

  /** DELETE maps/{id}: cancel a running fan-out. */
  async cancelMap(id: string): Promise<void> {
    await requestAPI<unknown>(`maps/${encodeURIComponent(id)}`, { method: 'DELETE' }, this._settings);
    void this.refresh();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _fetch(): Promise<void> {
    const wanted = this._panelActive ? PANEL : ALWAYS;
    const results = await Promise.allSettled(wanted.map(section => this._load(section)));
    results.forEach((result, i) => {
      if (result.status === 'rejected') {
        this.errors[wanted[i]] = messageOf(result.reason);
      } else {
        delete this.errors[wanted[i]];
      }
    });
    this.loaded = true;
    this._changed.emit();
    if (results.every(r => r.status === 'rejected')) {
      // Nothing answered: let the poll back off until the server is back.
      throw new Error(this.errors.sessions ?? 'burstlab: no answer');
    }
  }

  private async _load(section: Section): Promise<void> {
    const s = this._settings;
    switch (section) {
      case 'sessions': {
        const r = await requestAPI<{ sessions: ISession[] }>('sessions', {}, s);
        this.sessions = r.sessions ?? [];
        this.sessionsAt = Date.now();
        break;
      }
      case 'hosts':
        this.hosts = (await requestAPI<{ hosts: IHost[] }>('hosts', {}, s)).hosts ?? [];
        break;
      case 'maps':
        this.maps = (await requestAPI<{ maps: IMap[] }>('maps', {}, s)).maps ?? [];
        break;
      case 'sandboxes':
        this.sandboxes = (await requestAPI<{ sandboxes: ISandbox[] }>('sandboxes', {}, s)).sandboxes ?? [];
        break;
      case 'usage': {
        const since = Date.now() / 1000 - BILL_DAYS * 86400;
        this.usage = await requestAPI<IUsage>(`usage?since=${since.toFixed(0)}`, {}, s);
        break;
      }
      case 'budgets':
        this.budgets = (await requestAPI<{ budgets: IBudget[] }>('budgets', {}, s)).budgets ?? [];
        break;
    }
  }

  private _settings: ServerConnection.ISettings;
  private _interval: number;
  private _panelActive = false;
  private _poll: Poll;
  private _changed = new Signal<this, void>(this);
}

/** A session's seconds held and cost, ticking on from the last poll at the rate the server billed so far. */
export function liveSession(s: ISession, fetchedAt: number, now = Date.now()): { seconds: number; microusd: number } {
  const extra = Math.max(0, (now - fetchedAt) / 1000);
  const rate = s.billed_s > 0 ? s.cost_microusd / s.billed_s : 0;
  return { seconds: s.billed_s + extra, microusd: s.cost_microusd + rate * extra };
}

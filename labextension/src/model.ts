// What the lab knows about burstlab: polled from the REST API with backoff, standing by while the tab is hidden.
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { messageOf, requestAPI } from './api';
import { sameNotebook } from './format';
import { IBudget, IHost, IMap, ISandbox, ISession, IUsage } from './types';

/** The resources the panel shows; all but `usage` are also polled while the panel is closed. */
export type Section = 'sessions' | 'hosts' | 'maps' | 'sandboxes' | 'usage' | 'budgets';

/** What the status bar, the Run on GPU menu and the stop notifications need, panel open or not. */
const ALWAYS: Section[] = ['sessions', 'hosts', 'maps', 'sandboxes', 'budgets'];
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
  /** Sessions that ended in the last few minutes, as the server recorded it (who or what ended each), by id. */
  ended = new Map<string, ISession>();
  hosts: IHost[] = [];
  maps: MapView[] = [];
  sandboxes: ISandbox[] = [];
  usage: IUsage | null = null;
  budgets: IBudget[] = [];
  /** The last error per section (the server's message), cleared by the next success. */
  errors: Partial<Record<Section, string>> = {};
  /** Date.now() when `sessions` was last fetched: the clock that live durations and costs tick from. */
  sessionsAt = 0;
  /** Whether at least one answer has arrived. */
  loaded = false;

  /** Whether the server records who or what ended each session (`ended_by`): then the lab never guesses. */
  get recordsEnds(): boolean {
    return this._recordsEnds;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Something this tab did not ask for ended: a session, a fan-out or a sandbox (see `IStopEvent`). */
  get stopped(): ISignal<this, IStopEvent> {
    return this._stopped;
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
    this._mine.add(`session/${id}`);
    const s = await requestAPI<ISession>(
      `sessions/${encodeURIComponent(id)}?from=panel`,
      { method: 'DELETE' },
      this._settings
    );
    this.sessions = this.sessions.filter(x => x.id !== id);
    this._changed.emit();
    void this.refresh();
    return s;
  }

  /** DELETE sandboxes/{id}. */
  async closeSandbox(id: string): Promise<ISandbox> {
    this._mine.add(`sandbox/${id}`);
    const s = await requestAPI<ISandbox>(`sandboxes/${encodeURIComponent(id)}`, { method: 'DELETE' }, this._settings);
    this.sandboxes = this.sandboxes.filter(x => x.id !== id);
    this._changed.emit();
    void this.refresh();
    return s;
  }

  /**
   * This tab is restarting or shutting down the kernel of the notebook at `path`: the sessions and fan-outs that
   * notebook holds now end by the user's own hand, so their ends raise no notification (later ones still do).
   */
  expectEnds(path: string): void {
    for (const x of this.sessions) {
      if (sameNotebook(x.notebook, path)) {
        this._mine.add(`session/${x.id}`);
      }
    }
    for (const m of this.maps) {
      if (m.state === 'running' && sameNotebook(m.notebook, path)) {
        this._mine.add(`map/${m.id}`);
      }
    }
  }

  /** PUT budgets/{scope}/{name}: set a budget's limit (US dollars), keeping its warning fraction. */
  async setBudget(budget: IBudget, limitUsd: number): Promise<IBudget> {
    const b = await requestAPI<IBudget>(
      `budgets/${encodeURIComponent(budget.scope)}/${encodeURIComponent(budget.name)}`,
      {
        method: 'PUT',
        body: JSON.stringify({ limit_usd: limitUsd, soft_fraction: budget.soft_fraction, period: budget.period ?? '' })
      },
      this._settings
    );
    void this.refresh();
    return b;
  }

  /** DELETE maps/{id}: cancel a running fan-out. */
  async cancelMap(id: string): Promise<void> {
    this._mine.add(`map/${id}`);
    await requestAPI<unknown>(`maps/${encodeURIComponent(id)}?from=panel`, { method: 'DELETE' }, this._settings);
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
    const before = { sessions: this.sessions, maps: this.maps, sandboxes: this.sandboxes, loaded: { ...this._seen } };
    const results = await Promise.allSettled(wanted.map(section => this._load(section)));
    results.forEach((result, i) => {
      if (result.status === 'rejected') {
        this.errors[wanted[i]] = messageOf(result.reason);
      } else {
        delete this.errors[wanted[i]];
      }
    });
    this.loaded = true;
    const answered = wanted.filter((_, i) => results[i].status === 'fulfilled');
    // A session gone without its ended record yet (its holder publishes it once the GPUs are free, a moment after
    // the session leaves the running list) is looked at again for a few polls: the server's record says who or
    // what ended it. A server too old to record it (no `ended_by` field) leaves the guess from the lists.
    const waited = this._unexplained;
    this._unexplained = [];
    const pending = (event: IStopEvent, tries: number) => this._unexplained.push({ ...event, tries });
    for (const event of waited) {
      if (this._mine.has(`${event.kind}/${event.id}`)) {
        continue;
      }
      const record = answered.includes('sessions') ? this.ended.get(event.id) : undefined;
      if (record) {
        const known = endedEvent(event, record, this.budgets);
        if (known) {
          this._stopped.emit(known);
        }
      } else if ((event.tries ?? 0) < UNEXPLAINED_POLLS && this._recordsEnds) {
        pending(event, (event.tries ?? 0) + 1);
      } else {
        const budget = answered.includes('budgets') ? spentBudget(this.budgets, event.notebook) : undefined;
        this._stopped.emit(budget ? { ...event, cause: 'budget', budget } : event);
      }
    }
    for (const event of stopEvents(before, this, answered, Date.now())) {
      if (this._mine.has(`${event.kind}/${event.id}`)) {
        continue;
      }
      if (event.kind === 'session' && event.cause === 'elsewhere') {
        pending(event, 0);
      } else {
        this._stopped.emit(event);
      }
    }
    wanted.forEach((section, i) => {
      if (results[i].status === 'fulfilled') {
        this._seen[section] = true;
      }
    });
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
        const all = (await requestAPI<{ sessions: ISession[] }>('sessions?ended=1', {}, s)).sessions ?? [];
        this.sessions = all.filter(x => !x.ended_by && x.state === 'running');
        this.ended = new Map(all.filter(x => !!x.ended_by).map(x => [x.id, x]));
        this._recordsEnds = all.some(x => 'ended_by' in x);
        this.sessionsAt = Date.now();
        break;
      }
      case 'hosts':
        this.hosts = (await requestAPI<{ hosts: IHost[] }>('hosts', {}, s)).hosts ?? [];
        break;
      case 'maps':
        this.maps = ((await requestAPI<{ maps: IMap[] }>('maps', {}, s)).maps ?? []).map(mapView);
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
  private _stopped = new Signal<this, IStopEvent>(this);
  /** `kind/id` of what this tab stopped, closed or cancelled itself (no notification for those). */
  private _mine = new Set<string>();
  /** Sessions that ended with no cause seen yet, looked at again after the next polls. */
  private _unexplained: (IStopEvent & { tries?: number })[] = [];
  /** Whether the server records who or what ended a session (`ended_by`). */
  private _recordsEnds = false;
  /** Sections answered at least once: a first answer is a baseline, not a change. */
  private _seen: Partial<Record<Section, boolean>> = {};
}

type Counted = 'name' | 'notebook' | 'total' | 'done' | 'failed' | 'running' | 'started' | 'cost_microusd';

/** A map as the panel shows it: a missing count reads 0, a missing name or notebook ''. */
export type MapView = Omit<IMap, Counted> & {
  name: string;
  notebook: string;
  total: number;
  done: number;
  failed: number;
  running: number;
  started: number;
  cost_microusd: number;
};

export function mapView(m: IMap): MapView {
  return {
    ...m,
    name: m.name ?? '',
    notebook: m.notebook ?? '',
    total: m.total ?? 0,
    done: m.done ?? 0,
    failed: m.failed ?? 0,
    running: m.running ?? 0,
    started: m.started ?? 0,
    cost_microusd: m.cost_microusd ?? 0
  };
}

/** Why something ended: for a session, what the server recorded (`ended_by`); else what the API lists tell. */
export type StopCause = 'budget' | 'idle' | 'elsewhere' | 'panel' | 'cancelled' | 'failed' | 'lost' | 'closed';

/** Polls a vanished session waits for its ended record before the lab guesses why it ended. */
const UNEXPLAINED_POLLS = 3;

/**
 * The notification due for a session that ended as `record` says (the server's `ended_by`), or null where its own
 * notebook ended it (`%gpu stop`, its kernel shutting down or restarting): that is the user's own doing.
 */
export function endedEvent(event: IStopEvent, record: ISession, budgets: IBudget[]): IStopEvent | null {
  const base = { ...event, session: { ...(event.session ?? record), ...record }, why: record.why };
  switch (record.ended_by) {
    case 'user':
    case 'closed':
      return null;
    case 'budget':
      return { ...base, cause: 'budget', budget: spentBudget(budgets, record.notebook) };
    case 'idle':
      return { ...base, cause: 'idle' };
    case 'panel':
      return { ...base, cause: 'panel' };
    case 'lost':
      return { ...base, cause: 'lost' };
    case 'error':
      return { ...base, cause: 'failed' };
    default:
      return { ...base, cause: 'elsewhere' };
  }
}

/** A stop the user did not make in this tab. */
export interface IStopEvent {
  kind: 'session' | 'map' | 'sandbox';
  id: string;
  cause: StopCause;
  /** The notebook it belonged to (a server-side path or a name given through the API). */
  notebook: string;
  /** What it was, in user words: "the H100 session", "fan-out f (started 14:03)". */
  what: string;
  /** The spent budget, for cause `budget` (a session's: where the lab found it among the budgets). */
  budget?: IBudget;
  /** A session's end in the holder's words, as the server recorded it ("released after 600 s idle"). */
  why?: string;
  session?: ISession;
  map?: MapView;
}

/** The spent budget (user-wide, or of `notebook`) that stopped something, if any. */
export function spentBudget(budgets: IBudget[], notebook: string): IBudget | undefined {
  return budgets.find(
    b => b.state === 'exceeded' && (b.scope === 'user' || b.name === notebook || sameNotebook(notebook, b.name))
  );
}

/**
 * What ended between two polls, and the likely cause (pure: compares the lists before and after). Only
 * sections answered this time and the time before are compared.
 */
export function stopEvents(
  before: { sessions: ISession[]; maps: MapView[]; sandboxes: ISandbox[]; loaded: Partial<Record<Section, boolean>> },
  after: {
    sessions: ISession[];
    maps: MapView[];
    sandboxes: ISandbox[];
    budgets: IBudget[];
    ended?: Map<string, ISession>;
    recordsEnds?: boolean;
  },
  answered: Section[],
  now: number
): IStopEvent[] {
  const events: IStopEvent[] = [];
  const fresh = (section: Section) => answered.includes(section) && !!before.loaded[section];
  if (fresh('sessions')) {
    const still = new Set(after.sessions.map(s => s.id));
    for (const s of before.sessions) {
      if (s.state !== 'running' || still.has(s.id)) {
        continue;
      }
      const event: IStopEvent = { kind: 'session', id: s.id, cause: 'elsewhere', notebook: s.notebook, what: `the ${s.spec} session`, session: s };
      const record = after.ended?.get(s.id);
      if (record) {
        // The server says who or what ended it.
        const known = endedEvent(event, record, after.budgets);
        if (known) {
          events.push(known);
        }
        continue;
      }
      if (after.recordsEnds) {
        events.push(event); // its record comes with a later poll (the caller waits for it)
        continue;
      }
      // A server that does not record ends: guess from the budgets and the idle clock.
      const budget = spentBudget(after.budgets, s.notebook);
      const idle =
        s.idle_timeout > 0 && s.idle_since !== null && now / 1000 >= s.idle_since + s.idle_timeout - 2;
      events.push({ ...event, cause: budget ? 'budget' : idle ? 'idle' : 'elsewhere', budget });
    }
  }
  if (fresh('maps')) {
    const was = new Map(before.maps.map(m => [m.id, m]));
    for (const m of after.maps) {
      const prev = was.get(m.id);
      if (prev?.state !== 'running' || m.state === 'running' || m.state === 'done') {
        continue;
      }
      const budget = m.state === 'cancelled' ? spentBudget(after.budgets, m.notebook) : undefined;
      events.push({
        kind: 'map',
        id: m.id,
        cause: budget ? 'budget' : (m.state as StopCause),
        notebook: m.notebook,
        what: `fan-out ${m.name || m.id}`,
        budget,
        map: m
      });
    }
  }
  if (fresh('sandboxes')) {
    const still = new Set(after.sandboxes.filter(b => b.state === 'running').map(b => b.id));
    for (const b of before.sandboxes) {
      if (b.state !== 'running' || still.has(b.id)) {
        continue;
      }
      const budget = spentBudget(after.budgets, b.notebook);
      if (budget) {
        // A sandbox closed by its own notebook or agent is routine; one a budget closed is news.
        events.push({ kind: 'sandbox', id: b.id, cause: 'budget', notebook: b.notebook, what: `sandbox ${b.id.slice(0, 12)}`, budget });
      }
    }
  }
  return events;
}

/** A session's seconds held and cost, ticking on from the last poll at the rate the server billed so far. */
export function liveSession(s: ISession, fetchedAt: number, now = Date.now()): { seconds: number; microusd: number } {
  const extra = Math.max(0, (now - fetchedAt) / 1000);
  const rate = s.billed_s > 0 ? s.cost_microusd / s.billed_s : 0;
  return { seconds: s.billed_s + extra, microusd: s.cost_microusd + rate * extra };
}

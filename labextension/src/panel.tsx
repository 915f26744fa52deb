// The side panel: inventory, sessions, fan-outs, sandboxes, the bill and budgets, all from the REST API.
// Every row is a wrapping flex line (no tables): at any width from 200 px nothing is cut off; names that do
// not fit end in an ellipsis and carry their full text as a tooltip.
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { messageOf } from './api';
import { formatBytes, formatClock, formatCountdown, formatDuration, formatMoney, formatRate, shortName } from './format';
import { BILL_DAYS, BurstlabModel, liveSession, MapView, Section } from './model';
import { gpuIcon } from './icons';
import { Ticker } from './ticker';
import { IBudget, IHost, ISandbox, ISession, IUsageTotals } from './types';

export interface IPanelOptions {
  model: BurstlabModel;
  ticker: Ticker;
  /** Shows an error from an action (stop, close, cancel) to the user. */
  onError: (message: string) => void;
  /** Asks before an action that throws state away; resolves false to leave things as they are. */
  confirm: (title: string, body: string, action: string) => Promise<boolean>;
}

export class BurstlabPanel extends ReactWidget {
  constructor(private readonly _options: IPanelOptions) {
    super();
    this.id = 'burstlab-panel';
    this.addClass('burstlab-panel');
    this.title.icon = gpuIcon;
    this.title.caption = 'burstlab: GPUs, sessions, sandboxes and cost';
  }

  protected onAfterShow(): void {
    this._options.model.panelActive = true;
  }

  protected onAfterHide(): void {
    this._options.model.panelActive = false;
  }

  render(): JSX.Element {
    const { model, ticker } = this._options;
    return (
      <UseSignal signal={model.changed}>
        {() => (
          <UseSignal signal={ticker.ticked} initialArgs={Date.now()}>
            {(_, now) => <PanelBody {...this._options} now={now ?? Date.now()} />}
          </UseSignal>
        )}
      </UseSignal>
    );
  }
}

type Props = IPanelOptions & { now: number };

function PanelBody(props: Props): JSX.Element {
  const { model } = props;
  return (
    <div className="burstlab-panel-body">
      <header className="burstlab-header">
        <h2>burstlab</h2>
        <button className="jp-Button burstlab-refresh" title="Refresh now" onClick={() => void model.refresh()}>
          Refresh
        </button>
      </header>
      {!model.loaded && <p className="burstlab-muted">Loading…</p>}
      <PanelSection name="hosts" title="GPUs" model={model}>
        <Inventory hosts={model.hosts} />
      </PanelSection>
      <PanelSection name="sessions" title="Sessions" model={model}>
        <Sessions {...props} />
      </PanelSection>
      <PanelSection name="maps" title="Fan-outs" model={model}>
        <Maps {...props} />
      </PanelSection>
      <PanelSection name="sandboxes" title="Sandboxes" model={model}>
        <Sandboxes {...props} />
      </PanelSection>
      <PanelSection name="budgets" title="Budgets" model={model}>
        <Budgets budgets={model.budgets} />
      </PanelSection>
      <PanelSection name="usage" title={`Bill (last ${BILL_DAYS} days)`} model={model}>
        <Bill totals={model.usage?.totals ?? null} />
      </PanelSection>
    </div>
  );
}

function PanelSection(props: {
  name: Section;
  title: string;
  model: BurstlabModel;
  children: React.ReactNode;
}): JSX.Element {
  const error = props.model.errors[props.name];
  return (
    <section className="burstlab-section" data-section={props.name}>
      <h3>{props.title}</h3>
      {error && (
        <div className="burstlab-error" role="alert">
          {error}
        </div>
      )}
      {props.children}
    </section>
  );
}

/** Text that ends in an ellipsis when it does not fit, with the whole of it as a tooltip. */
function Clip(props: { text: string; title?: string; className?: string; strong?: boolean }): JSX.Element {
  const className = `burstlab-ellipsis ${props.className ?? ''}`;
  return props.strong ? (
    <strong className={className} title={props.title ?? props.text}>
      {props.text}
    </strong>
  ) : (
    <span className={className} title={props.title ?? props.text}>
      {props.text}
    </span>
  );
}

/** A button that runs an action once (after a confirmation, if given), shows it is busy, and reports a failure. */
function ActionButton(props: {
  label: string;
  busyLabel: string;
  className: string;
  title: string;
  action: () => Promise<unknown>;
  confirm?: () => Promise<boolean>;
  onError: (message: string) => void;
}): JSX.Element {
  const [busy, setBusy] = React.useState(false);
  return (
    <button
      className={`jp-Button burstlab-action ${props.className}`}
      title={props.title}
      disabled={busy}
      onClick={async () => {
        if (props.confirm && !(await props.confirm())) {
          return;
        }
        setBusy(true);
        try {
          await props.action();
        } catch (error) {
          props.onError(messageOf(error));
        } finally {
          setBusy(false);
        }
      }}
    >
      {busy ? props.busyLabel : props.label}
    </button>
  );
}

function SourceLabel(props: { host: IHost }): JSX.Element {
  const h = props.host;
  return (
    <span
      className={`burstlab-chip burstlab-source-${h.declared ? 'declared' : 'detected'}`}
      title={h.declared ? 'Declared in configuration: no CUDA device behind it' : `Detected through ${h.source}`}
    >
      {h.declared ? 'declared' : h.source}
    </span>
  );
}

function Inventory(props: { hosts: IHost[] }): JSX.Element {
  if (!props.hosts.length) {
    return <p className="burstlab-muted">No GPUs in this workspace.</p>;
  }
  return (
    <ul className="burstlab-list">
      {props.hosts.map(h => (
        <li key={`${h.type}/${h.host}`} className="burstlab-gpu" data-gpu-type={h.type}>
          <div className="burstlab-row">
            <Clip text={h.type} strong className="burstlab-name" />
            <span className="burstlab-price" title={`${h.type}: ${formatRate(h.microusd_per_hour)} per GPU`}>
              {formatRate(h.microusd_per_hour)}
            </span>
            <span className="burstlab-num" title={`${h.free} of ${h.count} free, ${h.count - h.free} held`}>
              {h.free}/{h.count} free
            </span>
          </div>
          <div className="burstlab-row burstlab-sub">
            <Clip text={h.host} title={`host ${h.host}`} className="burstlab-muted" />
            <SourceLabel host={h} />
          </div>
        </li>
      ))}
    </ul>
  );
}

/** "releases in 8 min" for an idle session; '' while a cell runs on it or when it never idles out. */
export function idleCountdown(s: ISession, now: number): string {
  if (!s.idle_timeout || s.idle_since === null || s.idle_since === undefined) {
    return '';
  }
  return `releases in ${formatCountdown(s.idle_since + s.idle_timeout - now / 1000)}`;
}

function Sessions(props: Props): JSX.Element {
  const { model, now, onError, confirm } = props;
  const sessions = model.sessions.filter(s => s.state === 'running');
  if (!sessions.length) {
    return (
      <p className="burstlab-muted">
        No GPU sessions. A <code>%%gpu H100</code> cell starts one.
      </p>
    );
  }
  let total = 0;
  return (
    <>
      <ul className="burstlab-list">
        {sessions.map(s => {
          const live = liveSession(s, model.sessionsAt, now);
          total += live.microusd;
          const idle = idleCountdown(s, now);
          return (
            <li key={s.id} className="burstlab-session" data-session-id={s.id}>
              <div className="burstlab-row">
                <Clip
                  text={`${s.spec} @${s.host}`}
                  title={`${s.spec} on ${s.host}${s.declared ? ' (declared GPUs)' : ''}, started by ${s.origin === 'kernel' ? 'a notebook' : 'the REST API'}`}
                  strong
                  className="burstlab-name"
                />
                <span className="burstlab-num burstlab-held" title="held for">
                  {formatDuration(live.seconds)}
                </span>
                <span className="burstlab-num burstlab-cost" title="cost so far">
                  {formatMoney(live.microusd)}
                </span>
              </div>
              <div className="burstlab-row burstlab-sub">
                <Clip text={shortName(s.notebook)} title={s.notebook} className="burstlab-muted" />
                {idle && (
                  <span className="burstlab-idle" title={`Released after ${formatDuration(s.idle_timeout)} idle`}>
                    {idle}
                  </span>
                )}
                <ActionButton
                  label="Stop"
                  busyLabel="Stopping…"
                  className="burstlab-stop"
                  title={`Stop this session and free its GPUs (${s.spec}); the notebook's next %%gpu cell starts a new one`}
                  confirm={() =>
                    confirm(
                      `Stop the ${s.spec} session?`,
                      `${shortName(s.notebook)} holds variables in this session's kernel; they are lost when it stops. ` +
                        'The next %%gpu cell starts a fresh session.',
                      'Stop'
                    )
                  }
                  action={() => model.stopSession(s.id)}
                  onError={onError}
                />
              </div>
            </li>
          );
        })}
      </ul>
      <div className="burstlab-row burstlab-total">
        <span>total</span>
        <span className="burstlab-num">{formatMoney(total)}</span>
      </div>
    </>
  );
}

/** Seconds until a running map is done, from its pace so far; null before the first input finishes. */
export function mapEta(m: MapView, now: number): number | null {
  const elapsed = now / 1000 - m.started;
  const finished = m.done + m.failed;
  if (m.state !== 'running' || finished <= 0 || elapsed <= 0 || finished >= m.total) {
    return null;
  }
  return ((m.total - finished) * elapsed) / finished;
}

const MAP_STATE_WORDS: Record<string, string> = {
  running: 'running',
  done: 'done',
  failed: 'failed',
  cancelled: 'cancelled',
  lost: 'lost (its notebook went away)'
};

function Maps(props: Props): JSX.Element {
  const { model, now, onError } = props;
  const maps: MapView[] = model.maps;
  if (!maps.length) {
    return (
      <p className="burstlab-muted">
        No fan-outs. <code>burstlab.map(fn, items, gpu=…)</code> starts one.
      </p>
    );
  }
  return (
    <ul className="burstlab-list">
      {maps.map(m => {
        const eta = mapEta(m, now);
        const pct = Math.round((100 * m.done) / Math.max(1, m.total));
        return (
          <li key={m.id} className="burstlab-map" data-map-id={m.id} data-state={m.state}>
            <div className="burstlab-row">
              <Clip text={m.name || m.id} title={`${m.name || m.id} (${m.id})`} strong className="burstlab-name" />
              <span className="burstlab-muted" title={new Date(m.started * 1000).toString()}>
                {formatClock(m.started, now)}
              </span>
              <span className={`burstlab-chip burstlab-state burstlab-state-${m.state}`}>
                {MAP_STATE_WORDS[m.state] ?? m.state}
              </span>
            </div>
            <div className="burstlab-row burstlab-sub">
              <Clip text={shortName(m.notebook)} title={m.notebook} className="burstlab-muted" />
              <span className="burstlab-muted">{m.gpu ?? 'CPU'}</span>
            </div>
            <div className="burstlab-row">
              <div
                className={`burstlab-bar burstlab-bar-${m.state}`}
                role="progressbar"
                aria-label={`${m.name || m.id}: ${m.done} of ${m.total} done`}
                aria-valuemin={0}
                aria-valuemax={Math.max(1, m.total)}
                aria-valuenow={m.done}
              >
                <div className="burstlab-bar-done" style={{ width: `${pct}%` }} />
              </div>
              <span className="burstlab-num burstlab-count">
                {m.done}/{m.total}
              </span>
            </div>
            <div className="burstlab-row burstlab-sub">
              {m.failed > 0 && <span className="burstlab-failed">{m.failed} failed</span>}
              {m.running > 0 && <span className="burstlab-muted">{m.running} running</span>}
              {eta !== null && <span className="burstlab-muted burstlab-eta">ETA {formatDuration(eta)}</span>}
              <span className="burstlab-num" title="cost so far">
                {formatMoney(m.cost_microusd)}
              </span>
              {m.state === 'running' && (
                <ActionButton
                  label="Cancel"
                  busyLabel="Cancelling…"
                  className="burstlab-cancel"
                  title="Cancel the inputs not yet done; the finished results stay available in the notebook"
                  action={() => model.cancelMap(m.id)}
                  onError={onError}
                />
              )}
            </div>
          </li>
        );
      })}
    </ul>
  );
}

function describeLimits(s: ISandbox): string {
  const l = s.limits ?? {};
  const parts: string[] = [];
  if (l.timeout) {
    parts.push(`timeout ${l.timeout}s`);
  }
  if (l.memory) {
    parts.push(`memory ${formatBytes(l.memory)}`);
  }
  if (l.cpus) {
    parts.push(`${l.cpus} CPU`);
  }
  if (l.pids) {
    parts.push(`${l.pids} pids`);
  }
  if (l.output) {
    parts.push(`output ${formatBytes(l.output)}`);
  }
  parts.push(s.network ? 'network on' : 'no network');
  return parts.join(' · ');
}

function Sandboxes(props: Props): JSX.Element {
  const { model, onError, confirm } = props;
  const boxes = model.sandboxes.filter(s => s.state === 'running');
  if (!boxes.length) {
    return (
      <p className="burstlab-muted">
        No sandboxes. <code>%%sandbox</code> cells and agents start them.
      </p>
    );
  }
  return (
    <ul className="burstlab-list">
      {boxes.map(s => (
        <li key={s.id} className="burstlab-sandbox" data-sandbox-id={s.id}>
          <div className="burstlab-row">
            <Clip text={s.id.slice(0, 12)} title={s.id} strong className="burstlab-name" />
            <Clip text={shortName(s.notebook)} title={s.notebook} className="burstlab-muted" />
            <ActionButton
              label="Close"
              busyLabel="Closing…"
              className="burstlab-close"
              title="Close this sandbox (its files and state are gone)"
              confirm={() =>
                confirm(
                  'Close this sandbox?',
                  `Its kernel's variables and the files in its work directory (${shortName(s.notebook)}) are gone once it closes.`,
                  'Close'
                )
              }
              action={() => model.closeSandbox(s.id)}
              onError={onError}
            />
          </div>
          <div className="burstlab-limits">{describeLimits(s)}</div>
          {s.usage && (
            <div className="burstlab-muted burstlab-limits">
              used {(s.usage.cpu_s ?? 0).toFixed(1)} CPU s · {formatDuration(s.usage.wall_s ?? 0)} wall · peak{' '}
              {formatBytes(s.usage.memory_peak ?? 0)}
            </div>
          )}
        </li>
      ))}
    </ul>
  );
}

function Breakdown(props: { title: string; items: Record<string, number>; sort: 'cost' | 'key' }): JSX.Element | null {
  const entries = Object.entries(props.items ?? {});
  if (!entries.length) {
    return null;
  }
  entries.sort(props.sort === 'cost' ? (a, b) => b[1] - a[1] : (a, b) => (a[0] < b[0] ? 1 : -1));
  return (
    <div className="burstlab-breakdown" data-breakdown={props.title}>
      <div className="burstlab-row burstlab-head">
        <span>by {props.title}</span>
      </div>
      {entries.map(([key, microusd]) => (
        <div className="burstlab-row burstlab-kv" key={key}>
          <Clip text={props.title === 'notebook' ? shortName(key) : key} title={key} />
          <span className="burstlab-num">{formatMoney(microusd)}</span>
        </div>
      ))}
    </div>
  );
}

function Bill(props: { totals: IUsageTotals | null }): JSX.Element {
  const t = props.totals;
  if (!t) {
    return <p className="burstlab-muted">—</p>;
  }
  return (
    <div className="burstlab-bill">
      <p className="burstlab-total">
        Total <strong>{formatMoney(t.cost_microusd)}</strong> for {formatDuration(t.billed_s)} billed
      </p>
      <Breakdown title="kind" items={t.by_kind} sort="cost" />
      <Breakdown title="notebook" items={t.by_notebook} sort="cost" />
      <Breakdown title="day" items={t.by_day} sort="key" />
    </div>
  );
}

const BUDGET_WORDS: Record<string, string> = { ok: 'ok', warning: 'warning', exceeded: 'spent' };

function Budgets(props: { budgets: IBudget[] }): JSX.Element {
  if (!props.budgets.length) {
    return <p className="burstlab-muted">No budgets set.</p>;
  }
  return (
    <ul className="burstlab-list">
      {props.budgets.map(b => (
        <li key={`${b.scope}/${b.name}`} className={`burstlab-budget burstlab-budget-${b.state}`} data-state={b.state}>
          <div className="burstlab-row">
            <Clip text={`${b.scope}: ${shortName(b.name)}`} title={`${b.scope} budget ${b.name}`} strong className="burstlab-name" />
            <span className={`burstlab-chip burstlab-state burstlab-state-${b.state}`}>{BUDGET_WORDS[b.state] ?? b.state}</span>
          </div>
          <div className="burstlab-row burstlab-sub">
            <span>
              {formatMoney(b.spent_microusd)} of {formatMoney(b.limit_microusd)}
            </span>
            <span className="burstlab-num burstlab-left">{formatMoney(Math.max(0, b.remaining_microusd))} left</span>
          </div>
        </li>
      ))}
    </ul>
  );
}

// The side panel: inventory, sessions, fan-outs, sandboxes, the bill and budgets, all from the REST API.
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { messageOf } from './api';
import { formatBytes, formatDuration, formatMoney } from './format';
import { BILL_DAYS, BurstlabModel, liveSession, Section } from './model';
import { gpuIcon } from './icons';
import { Ticker } from './ticker';
import { IBudget, IHost, IMap, ISandbox, ISession, IUsageTotals } from './types';

export interface IPanelOptions {
  model: BurstlabModel;
  ticker: Ticker;
  /** Shows an error from an action (stop, close, cancel) to the user. */
  onError: (message: string) => void;
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

function PanelBody(props: IPanelOptions & { now: number }): JSX.Element {
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
      <Section name="hosts" title="GPUs" model={model}>
        <Inventory hosts={model.hosts} sessions={model.sessions} />
      </Section>
      <Section name="sessions" title="Sessions" model={model}>
        <Sessions {...props} />
      </Section>
      <Section name="maps" title="Fan-outs" model={model}>
        <Maps {...props} />
      </Section>
      <Section name="sandboxes" title="Sandboxes" model={model}>
        <Sandboxes {...props} />
      </Section>
      <Section name="usage" title={`Bill (last ${BILL_DAYS} days)`} model={model}>
        <Bill totals={model.usage?.totals ?? null} />
      </Section>
      <Section name="budgets" title="Budgets" model={model}>
        <Budgets budgets={model.budgets} />
      </Section>
    </div>
  );
}

function Section(props: { name: Section; title: string; model: BurstlabModel; children: React.ReactNode }): JSX.Element {
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

/** A button that runs an action once, shows it is busy, and reports a failure instead of swallowing it. */
function ActionButton(props: {
  label: string;
  busyLabel: string;
  className: string;
  title: string;
  action: () => Promise<unknown>;
  onError: (message: string) => void;
}): JSX.Element {
  const [busy, setBusy] = React.useState(false);
  return (
    <button
      className={`jp-Button burstlab-action ${props.className}`}
      title={props.title}
      disabled={busy}
      onClick={async () => {
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

function shortName(path: string): string {
  if (!path) {
    return '—';
  }
  const parts = path.split('/');
  return parts[parts.length - 1] || path;
}

function Inventory(props: { hosts: IHost[]; sessions: ISession[] }): JSX.Element {
  if (!props.hosts.length) {
    return <p className="burstlab-muted">No GPUs in this workspace.</p>;
  }
  const types = new Map<string, IHost[]>();
  for (const h of props.hosts) {
    types.set(h.type, [...(types.get(h.type) ?? []), h]);
  }
  return (
    <table className="burstlab-table">
      <thead>
        <tr>
          <th>type</th>
          <th>free</th>
          <th>held</th>
          <th>host</th>
          <th>found by</th>
        </tr>
      </thead>
      <tbody>
        {[...types.entries()].map(([type, hosts]) =>
          hosts.map((h, i) => (
            <tr key={`${type}/${h.host}`} data-gpu-type={type}>
              <td>{i === 0 ? type : ''}</td>
              <td className="burstlab-num">
                {h.free}/{h.count}
              </td>
              <td className="burstlab-num">{h.count - h.free}</td>
              <td>{h.host}</td>
              <td>
                <span className={`burstlab-source burstlab-source-${h.declared ? 'declared' : 'detected'}`}>
                  {h.declared ? 'declared' : `detected (${h.source})`}
                </span>
              </td>
            </tr>
          ))
        )}
      </tbody>
    </table>
  );
}

function Sessions(props: IPanelOptions & { now: number }): JSX.Element {
  const { model, now, onError } = props;
  const sessions = model.sessions.filter(s => s.state === 'running');
  if (!sessions.length) {
    return <p className="burstlab-muted">No GPU sessions. A <code>%%gpu H100</code> cell starts one.</p>;
  }
  let total = 0;
  return (
    <table className="burstlab-table">
      <thead>
        <tr>
          <th>GPUs · notebook</th>
          <th className="burstlab-num">held</th>
          <th className="burstlab-num">cost</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {sessions.map(s => {
          const live = liveSession(s, model.sessionsAt, now);
          total += live.microusd;
          return (
            <tr key={s.id} className="burstlab-session" data-session-id={s.id}>
              <td title={`${s.spec} on ${s.host}${s.declared ? ' (declared GPUs)' : ''}, ${s.origin}; ${s.notebook}`}>
                <div>
                  {s.spec}
                  <span className="burstlab-muted"> @{s.host}</span>
                </div>
                <div className="burstlab-muted burstlab-ellipsis">{shortName(s.notebook)}</div>
              </td>
              <td className="burstlab-num">{formatDuration(live.seconds)}</td>
              <td className="burstlab-num">{formatMoney(live.microusd)}</td>
              <td>
                <ActionButton
                  label="Stop"
                  busyLabel="Stopping…"
                  className="burstlab-stop"
                  title={`Stop this session and free its GPUs (${s.spec}); the notebook's next %%gpu cell starts a new one`}
                  action={() => model.stopSession(s.id)}
                  onError={onError}
                />
              </td>
            </tr>
          );
        })}
      </tbody>
      <tfoot>
        <tr>
          <td colSpan={2}>total</td>
          <td className="burstlab-num">{formatMoney(total)}</td>
          <td />
        </tr>
      </tfoot>
    </table>
  );
}

function Maps(props: IPanelOptions): JSX.Element {
  const { model, onError } = props;
  const maps: IMap[] = model.maps;
  if (!maps.length) {
    return <p className="burstlab-muted">No fan-outs. <code>burstlab.map(fn, items, gpu=…)</code> starts one.</p>;
  }
  return (
    <ul className="burstlab-list">
      {maps.map(m => (
        <li key={m.id} className="burstlab-map" data-map-id={m.id} data-state={m.state}>
          <div className="burstlab-row">
            <strong>{m.name || m.id}</strong>
            <span className="burstlab-muted">
              {m.gpu ?? 'CPU'} · {shortName(m.notebook)} · {m.state}
            </span>
          </div>
          <div className="burstlab-row">
            <progress max={Math.max(1, m.total)} value={m.done} />
            <span className="burstlab-num">
              {m.done}/{m.total}
              {m.failed ? ` (${m.failed} failed)` : ''}
              {m.running ? ` · ${m.running} running` : ''} · {formatMoney(m.cost_microusd)}
            </span>
            {m.state === 'running' && (
              <ActionButton
                label="Cancel"
                busyLabel="Cancelling…"
                className="burstlab-cancel"
                title="Cancel the inputs not yet done"
                action={() => model.cancelMap(m.id)}
                onError={onError}
              />
            )}
          </div>
        </li>
      ))}
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

function Sandboxes(props: IPanelOptions): JSX.Element {
  const { model, onError } = props;
  const boxes = model.sandboxes.filter(s => s.state === 'running');
  if (!boxes.length) {
    return <p className="burstlab-muted">No sandboxes. <code>%%sandbox</code> cells and agents start them.</p>;
  }
  return (
    <ul className="burstlab-list">
      {boxes.map(s => (
        <li key={s.id} className="burstlab-sandbox" data-sandbox-id={s.id}>
          <div className="burstlab-row">
            <strong title={s.id}>{s.id.slice(0, 12)}</strong>
            <span className="burstlab-muted burstlab-ellipsis" title={s.notebook}>
              {shortName(s.notebook)}
            </span>
            <ActionButton
              label="Close"
              busyLabel="Closing…"
              className="burstlab-close"
              title="Close this sandbox (its files and state are gone)"
              action={() => model.closeSandbox(s.id)}
              onError={onError}
            />
          </div>
          <div className="burstlab-limits">{describeLimits(s)}</div>
          {s.usage && (
            <div className="burstlab-muted">
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
    <table className="burstlab-table burstlab-breakdown" data-breakdown={props.title}>
      <thead>
        <tr>
          <th>{props.title}</th>
          <th className="burstlab-num">cost</th>
        </tr>
      </thead>
      <tbody>
        {entries.map(([key, microusd]) => (
          <tr key={key}>
            <td title={key}>{props.title === 'notebook' ? shortName(key) : key}</td>
            <td className="burstlab-num">{formatMoney(microusd)}</td>
          </tr>
        ))}
      </tbody>
    </table>
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

function Budgets(props: { budgets: IBudget[] }): JSX.Element {
  if (!props.budgets.length) {
    return <p className="burstlab-muted">No budgets set.</p>;
  }
  return (
    <table className="burstlab-table">
      <thead>
        <tr>
          <th>budget</th>
          <th className="burstlab-num">spent</th>
          <th className="burstlab-num">limit</th>
          <th className="burstlab-num">left</th>
        </tr>
      </thead>
      <tbody>
        {props.budgets.map(b => (
          <tr key={`${b.scope}/${b.name}`} className={`burstlab-budget burstlab-budget-${b.state}`}>
            <td>
              {b.scope}: {shortName(b.name)}
            </td>
            <td className="burstlab-num">{formatMoney(b.spent_microusd)}</td>
            <td className="burstlab-num">{formatMoney(b.limit_microusd)}</td>
            <td className="burstlab-num">{formatMoney(b.remaining_microusd)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

// The shapes of docs/api.md, as the frontend reads them.

export interface IHost {
  type: string;
  host: string;
  count: number;
  free: number;
  source: 'nvml' | 'declared' | 'dask' | string;
  declared: boolean;
  /** The price of one GPU of this type for an hour, in micro-dollars. */
  microusd_per_hour: number;
}

export interface ISession {
  id: string;
  spec: string;
  gpu_type: string;
  count: number;
  declared: boolean;
  host: string;
  user: string;
  notebook: string;
  started: number;
  state: 'running' | 'stopped' | 'lost';
  billed_s: number;
  cost_microusd: number;
  origin: 'server' | 'kernel';
  /** Seconds idle after which the session is released (0: never). */
  idle_timeout: number;
  /** When the session last went idle (seconds since the epoch); null while a cell runs on it. */
  idle_since: number | null;
  /**
   * Who or what ended it ('' while it runs; `GET sessions?ended=1` lists ended ones a few minutes more): its own
   * notebook ('user': %gpu stop; 'closed': its kernel shut down or restarted), the lab's panel, another client,
   * a budget, the idle release, a lost host or kernel, or a failed start.
   */
  ended_by: '' | 'user' | 'closed' | 'panel' | 'client' | 'budget' | 'idle' | 'lost' | 'error';
  /** The holder's words for why it ended ("released after 600 s idle"); '' while it runs. */
  why: string;
  /** When it ended (seconds since the epoch); null while it runs. */
  ended: number | null;
  /** Whether its kernel runs in the session jail (its user's uid and work dir, only its GPUs). */
  isolated: boolean;
  /** How it is isolated (uid, work dir, device nodes), or why not. */
  isolation: string;
}

/** Whether the workspace's GPU session kernels run in the session jail (GET workspace). */
export interface ISessionIsolation {
  setting: 'auto' | 'on' | 'off';
  enabled: boolean;
  reason: string;
}

export interface ISandboxLimits {
  timeout?: number | null;
  memory?: number | null;
  pids?: number | null;
  cpus?: number | null;
  output?: number | null;
  work_size?: number | null;
  tmp_size?: number | null;
  max_upload?: number | null;
  max_download?: number | null;
}

export interface ISandbox {
  id: string;
  user: string;
  notebook: string;
  state: 'running' | 'paused' | 'closed';
  created: number;
  network: boolean;
  limits: ISandboxLimits;
  usage?: { cpu_s?: number; wall_s?: number; memory_peak?: number };
}

/** A fan-out; the counts and times are null where an older or broken peer left them out. */
export interface IMap {
  id: string;
  name: string | null;
  user: string;
  notebook: string | null;
  gpu: string | null;
  total: number | null;
  done: number | null;
  failed: number | null;
  running: number | null;
  state: 'running' | 'done' | 'failed' | 'cancelled' | 'lost';
  started: number | null;
  cost_microusd: number | null;
}

export interface IUsageTotals {
  billed_s: number;
  cost_microusd: number;
  by_kind: Record<string, number>;
  by_notebook: Record<string, number>;
  by_day: Record<string, number>;
}

export interface IUsage {
  records: unknown[];
  totals: IUsageTotals;
}

export interface IBudget {
  scope: 'user' | 'notebook';
  name: string;
  limit_microusd: number;
  soft_fraction: number;
  spent_microusd: number;
  remaining_microusd: number;
  state: 'ok' | 'warning' | 'exceeded';
  period: '' | 'day' | 'week' | 'month';
}

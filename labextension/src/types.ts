// The shapes of docs/api.md, as the frontend reads them.

export interface IHost {
  type: string;
  host: string;
  count: number;
  free: number;
  source: 'nvml' | 'declared' | 'dask' | string;
  declared: boolean;
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
  state: 'running' | 'closed';
  created: number;
  network: boolean;
  limits: ISandboxLimits;
  usage?: { cpu_s?: number; wall_s?: number; memory_peak?: number };
}

export interface IMap {
  id: string;
  name: string;
  user: string;
  notebook: string;
  gpu: string | null;
  total: number;
  done: number;
  failed: number;
  running: number;
  state: 'running' | 'done' | 'failed' | 'cancelled';
  started: number;
  cost_microusd: number;
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
}

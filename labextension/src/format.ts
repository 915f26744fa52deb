// Display helpers: durations, money (integer micro-dollars), sizes.

/** 12s, 3m12s, 1h03m. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  }
  const h = Math.floor(s / 3600);
  return `${h}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** $0.21 (cents), with one more digit under ten cents so a fresh session visibly ticks. */
export function formatMoney(microusd: number): string {
  const usd = Math.abs(microusd) / 1e6;
  return `${microusd < 0 ? '-' : ''}$${usd.toFixed(usd < 0.1 ? 3 : 2)}`;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '—';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

/** Is `notebook` (a server-side path, often absolute) the lab document at `path` (relative to the root)? */
export function sameNotebook(notebook: string | null | undefined, path: string | null | undefined): boolean {
  if (!notebook || !path) {
    return false;
  }
  const a = notebook.replace(/\\/g, '/');
  const b = path.replace(/\\/g, '/').replace(/^\/+/, '');
  return a === b || a.endsWith(`/${b}`);
}

/** $3.95/h from micro-dollars per hour. */
export function formatRate(microusdPerHour: number): string {
  return `$${(microusdPerHour / 1e6).toFixed(2)}/h`;
}

/** "8 min", "45 s", "2 h 05 min": a countdown a person reads at a glance. */
export function formatCountdown(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.ceil(s / 60)} min`;
  }
  const h = Math.floor(s / 3600);
  return `${h} h ${String(Math.round((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** 14:03 for an epoch time today; Nov 27 14:03 before that. */
export function formatClock(epochSeconds: number, now = Date.now()): string {
  const d = new Date(epochSeconds * 1000);
  const hm = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  if (new Date(now).toDateString() === d.toDateString()) {
    return hm;
  }
  return `${d.toLocaleString('en', { month: 'short' })} ${d.getDate()} ${hm}`;
}

/** The last part of a path ("—" for none). */
export function shortName(path: string | null | undefined): string {
  if (!path) {
    return '—';
  }
  const parts = path.split('/');
  return parts[parts.length - 1] || path;
}

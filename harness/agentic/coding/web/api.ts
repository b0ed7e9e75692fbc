// Typed client of the tollgate admin API (src/admin.rs). The throughput chart
// (web/throughput.ts) goes through these functions only, so a change of a route or of a field
// is made here and in admin.rs. web/dashboard.ts still has its own fetchJson and QuotaRow
// (with lastSeen, which admin.rs no longer sends); moving it here replaces fetchJson by getJson.

export const ADMIN_API_BASE = "/admin/v1";

// A request that has not answered within this many seconds is aborted.
export const REQUEST_TIMEOUT_S = 6;

// Retries of a failed GET (network error or 5xx) before the error reaches the caller.
export const MAX_RETRIES = 2;

// Wait before the first retry; the second waits twice as long.
export const RETRY_DELAY_MS = 350;

export interface QuotaRow {
  key: string;
  hash: string;
  tokens: number;
  burst: number;
}

export interface MemoryInfo {
  bytes: number;
  buckets: number;
  largest_shard: number;
  shards: number;
}

export interface UpstreamHealth {
  name: string;
  address: string;
  healthy: boolean;
  latencyMs: number;
}

export class AdminApiError extends Error {
  constructor(
    readonly path: string,
    readonly status: number | null,
    message: string,
  ) {
    super(`${path}: ${message}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// One GET with the timeout; throws AdminApiError.
async function getOnce(url: string, path: string): Promise<Response> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT_S);
  try {
    const resp = await fetch(url, { signal: ctrl.signal, headers: { accept: "application/json" } });
    if (!resp.ok) {
      throw new AdminApiError(path, resp.status, `HTTP ${resp.status}`);
    }
    return resp;
  } catch (e) {
    if (e instanceof AdminApiError) {
      throw e;
    }
    throw new AdminApiError(path, null, ctrl.signal.aborted ? "timed out" : String(e));
  } finally {
    clearTimeout(timer);
  }
}

function retryable(e: unknown): boolean {
  return e instanceof AdminApiError && (e.status === null || e.status >= 500);
}

// GET `path` under the admin base with retries; the parsed JSON body.
export async function getJson<T>(path: string): Promise<T> {
  const url = `${ADMIN_API_BASE}${path}`;
  for (let attempt = 0; ; attempt++) {
    try {
      const resp = await getOnce(url, path);
      return (await resp.json()) as T;
    } catch (e) {
      if (attempt >= MAX_RETRIES || !retryable(e)) {
        throw e;
      }
      await sleep(RETRY_DELAY_MS * 2 ** attempt);
    }
  }
}

export function getQuotas(): Promise<QuotaRow[]> {
  return getJson<QuotaRow[]>("/quotas");
}

export function getMemory(): Promise<MemoryInfo> {
  return getJson<MemoryInfo>("/memory");
}

export function getUpstreams(): Promise<UpstreamHealth[]> {
  return getJson<UpstreamHealth[]>("/upstreams");
}

// The counters of the Prometheus exposition at /metrics (outside the JSON base).
export async function getCounters(): Promise<Map<string, number>> {
  const resp = await getOnce("/metrics", "/metrics");
  return parseCounters(await resp.text());
}

// `tollgate_throttled_total 17` lines into a map; comments, histograms and labels skipped.
export function parseCounters(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.includes("{")) {
      continue;
    }
    const [name, value] = line.trim().split(/\s+/);
    if (name && value !== undefined && !Number.isNaN(Number(value))) {
      out.set(name, Number(value));
    }
  }
  return out;
}

// The shard balance as the ratio of the largest shard to the mean (1 is perfect).
export function shardImbalance(m: MemoryInfo): number {
  if (m.buckets === 0 || m.shards === 0) {
    return 1;
  }
  return m.largest_shard / (m.buckets / m.shards);
}

// Admin dashboard of the tollgate proxy: polls the admin API and renders the per-key quota
// table and the upstream health list. Plain DOM, no framework, so it can be served by the
// admin port itself.

export const REFRESH_INTERVAL_MS = 15000;

// Keys whose remaining tokens fall below this share of the burst are highlighted.
export const LOW_QUOTA_SHARE = 0.2;

// Rows shown in the quota table before "show all".
export const QUOTA_ROWS_SHOWN = 40;

const ADMIN_BASE = "/admin/v1";

export interface QuotaRow {
  key: string;
  tokens: number;
  burst: number;
  lastSeen: string;
}

export interface UpstreamHealth {
  name: string;
  address: string;
  healthy: boolean;
  latencyMs: number;
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function quotaShare(row: QuotaRow): number {
  return row.burst > 0 ? row.tokens / row.burst : 0;
}

export function renderQuotaTable(rows: QuotaRow[], memoryBytes: number, showAll: boolean): HTMLElement {
  const table = document.createElement("table");
  table.className = "quota";
  const caption = document.createElement("caption");
  caption.textContent = `${rows.length} keys, limiter memory ${formatBytes(memoryBytes)}`;
  table.appendChild(caption);
  const sorted = [...rows].sort((a, b) => quotaShare(a) - quotaShare(b));
  const shown = showAll ? sorted : sorted.slice(0, QUOTA_ROWS_SHOWN);
  for (const row of shown) {
    const tr = document.createElement("tr");
    if (quotaShare(row) < LOW_QUOTA_SHARE) {
      tr.className = "low";
    }
    for (const text of [row.key, row.tokens.toFixed(1), String(row.burst), row.lastSeen]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    table.appendChild(tr);
  }
  return table;
}

export function renderUpstreams(list: UpstreamHealth[]): HTMLElement {
  const ul = document.createElement("ul");
  ul.className = "upstreams";
  for (const u of list) {
    const li = document.createElement("li");
    li.className = u.healthy ? "up" : "down";
    li.textContent = `${u.name} (${u.address}) ${u.healthy ? `${u.latencyMs} ms` : "down"}`;
    ul.appendChild(li);
  }
  return ul;
}

async function fetchJson<T>(path: string): Promise<T> {
  const resp = await fetch(`${ADMIN_BASE}${path}`, { headers: { accept: "application/json" } });
  if (!resp.ok) {
    throw new Error(`${path}: HTTP ${resp.status}`);
  }
  return (await resp.json()) as T;
}

export async function refresh(root: HTMLElement, showAll: boolean): Promise<void> {
  const [quotas, memory, upstreams] = await Promise.all([
    fetchJson<QuotaRow[]>("/quotas"),
    fetchJson<{ bytes: number }>("/memory"),
    fetchJson<UpstreamHealth[]>("/upstreams"),
  ]);
  root.replaceChildren(renderQuotaTable(quotas, memory.bytes, showAll), renderUpstreams(upstreams));
}

export function start(root: HTMLElement): () => void {
  let showAll = false;
  root.addEventListener("click", (e) => {
    if ((e.target as HTMLElement).id === "show-all") {
      showAll = !showAll;
      void refresh(root, showAll);
    }
  });
  void refresh(root, showAll);
  const timer = window.setInterval(() => void refresh(root, showAll), REFRESH_INTERVAL_MS);
  return () => window.clearInterval(timer);
}

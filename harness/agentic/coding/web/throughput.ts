// Throughput chart of the tollgate dashboard: samples the proxy's counters from /metrics
// (through web/api.ts) and draws requests per second and the throttled share as SVG
// sparklines. The counters are cumulative, so a rate is the difference of two samples.

import { getCounters } from "./api";

// Time between two samples of the counters.
export const SAMPLE_INTERVAL_MS = 5000;

// Samples kept: 12 minutes at one sample every 5 seconds.
export const HISTORY_POINTS = 144;

// Size of each sparkline in pixels.
export const SPARK_WIDTH = 288;
export const SPARK_HEIGHT = 42;

// A throttled share at or above this is drawn in the warning colour (the alert in
// deploy/alerts.yaml fires at the same share).
export const THROTTLED_WARN_SHARE = 0.07;

const FORWARDED = "tollgate_forwarded_total";
const THROTTLED = "tollgate_throttled_total";

export interface Sample {
  atMs: number;
  forwarded: number;
  throttled: number;
}

export interface Point {
  requestsPerSec: number;
  throttledShare: number;
}

// Per second between two samples; 0 when the proxy restarted (a counter went down).
export function ratePerSecond(prev: number, cur: number, dtMs: number): number {
  if (dtMs <= 0 || cur < prev) {
    return 0;
  }
  return ((cur - prev) * 1000) / dtMs;
}

// One point per pair of consecutive samples.
export function toPoints(samples: Sample[]): Point[] {
  const points: Point[] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    const dt = b.atMs - a.atMs;
    const fwd = ratePerSecond(a.forwarded, b.forwarded, dt);
    const thr = ratePerSecond(a.throttled, b.throttled, dt);
    const total = fwd + thr;
    points.push({ requestsPerSec: total, throttledShare: total > 0 ? thr / total : 0 });
  }
  return points;
}

// The SVG path of values scaled into the sparkline box (the largest value at the top).
export function sparklinePath(values: number[], width = SPARK_WIDTH, height = SPARK_HEIGHT): string {
  if (values.length < 2) {
    return "";
  }
  const max = Math.max(...values, 1e-9);
  const step = width / (values.length - 1);
  return values
    .map((v, i) => {
      const x = (i * step).toFixed(1);
      const y = (height - (v / max) * height).toFixed(1);
      return `${i === 0 ? "M" : "L"}${x},${y}`;
    })
    .join(" ");
}

function spark(values: number[], warn: boolean, title: string): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", String(SPARK_WIDTH));
  svg.setAttribute("height", String(SPARK_HEIGHT));
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", sparklinePath(values));
  path.setAttribute("class", warn ? "spark warn" : "spark");
  const t = document.createElementNS(ns, "title");
  t.textContent = title;
  svg.append(t, path);
  return svg;
}

// Draws the two sparklines of the points into root.
export function renderThroughput(root: HTMLElement, points: Point[]): void {
  const last = points[points.length - 1];
  const share = last ? last.throttledShare : 0;
  root.replaceChildren(
    spark(points.map((p) => p.requestsPerSec), false, `${last ? last.requestsPerSec.toFixed(0) : 0} req/s`),
    spark(points.map((p) => p.throttledShare), share >= THROTTLED_WARN_SHARE, `${(100 * share).toFixed(1)}% throttled`),
  );
}

// Samples every SAMPLE_INTERVAL_MS and redraws; returns a function that stops it.
export function startThroughput(root: HTMLElement): () => void {
  const samples: Sample[] = [];
  const tick = async () => {
    try {
      const c = await getCounters();
      samples.push({ atMs: Date.now(), forwarded: c.get(FORWARDED) ?? 0, throttled: c.get(THROTTLED) ?? 0 });
      if (samples.length > HISTORY_POINTS + 1) {
        samples.shift();
      }
      renderThroughput(root, toPoints(samples));
    } catch (e) {
      root.dataset.error = String(e);
    }
  };
  void tick();
  const timer = window.setInterval(() => void tick(), SAMPLE_INTERVAL_MS);
  return () => window.clearInterval(timer);
}

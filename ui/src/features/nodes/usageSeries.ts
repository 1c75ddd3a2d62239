// Turns a usage window (GET /nodes/{id}/usage) into the series the charts draw and the tables
// list: rates per second by method, errors, latency percentiles, height against the network's
// head. Pure, so it is tested without a browser.
import type { NodeUsage, UsagePoint } from '../../api/types';

/** Methods drawn on their own line; the rest are summed as `other`. */
export const CHART_METHODS = 5;

export interface Series {
  name: string;
  /** One value per x; `null` where the step has none. */
  values: (number | null)[];
}

export interface Chart {
  /** Start of each step, unix ms. */
  xs: number[];
  series: Series[];
}

const rate = (count: number, secs: number) => (secs > 0 ? count / secs : 0);

/** The methods with the most calls in the window, most first (ties by name), at most `limit`, and whether others exist. */
export function topMethods(usage: NodeUsage, limit = CHART_METHODS): { top: string[]; rest: boolean } {
  const all = Object.entries(usage.totals.methods)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([m]) => m);
  // Keep `other` (the runtime's own bucket) with the rest, drawn last.
  const named = all.filter((m) => m !== 'other');
  const top = named.slice(0, limit);
  return { top, rest: named.length > limit || all.includes('other') };
}

/** Calls per second of each top method (and `other`) per step. */
export function requestRates(usage: NodeUsage): Chart {
  const { top, rest } = topMethods(usage);
  const xs = usage.points.map((p) => p.at);
  const series: Series[] = top.map((m) => ({ name: m, values: usage.points.map((p) => rate(p.methods[m] ?? 0, usage.step_secs)) }));
  if (rest) {
    const others = (p: UsagePoint) => Object.entries(p.methods).reduce((sum, [m, n]) => (top.includes(m) ? sum : sum + n), 0);
    series.push({ name: 'other', values: usage.points.map((p) => rate(others(p), usage.step_secs)) });
  }
  return { xs, series };
}

/** Errors and refused calls per second per step. */
export function errorRates(usage: NodeUsage): Chart {
  return {
    xs: usage.points.map((p) => p.at),
    series: [
      { name: 'errors', values: usage.points.map((p) => rate(p.errors, usage.step_secs)) },
      { name: 'refused', values: usage.points.map((p) => rate(p.refused, usage.step_secs)) },
    ],
  };
}

/** Latency percentiles in milliseconds (steps without calls have none). */
export function latencies(usage: NodeUsage): Chart {
  const ms = (us: number | null) => (us === null ? null : us / 1000);
  return {
    xs: usage.points.map((p) => p.at),
    series: [
      { name: 'p50', values: usage.points.map((p) => ms(p.latency_p50_us)) },
      { name: 'p99', values: usage.points.map((p) => ms(p.latency_p99_us)) },
    ],
  };
}

/** The node's height and the network's head at each step. */
export function heights(usage: NodeUsage): Chart {
  return {
    xs: usage.points.map((p) => p.at),
    series: [
      { name: 'node', values: usage.points.map((p) => p.block) },
      { name: 'network head', values: usage.points.map((p) => p.head) },
    ],
  };
}

/** Blocks behind the head at a step, where both are known. */
export function blocksBehind(p: UsagePoint): number | null {
  return p.block === null || p.head === null ? null : Math.max(0, p.head - p.block);
}

export interface Scaled {
  /** SVG path data: one `M … L …` run per stretch of consecutive steps. */
  paths: string[];
}

/**
 * Scales a series into a `width × height` box (y up), breaking the line where a value is
 * missing or steps were skipped (the API leaves out steps without a sample).
 */
export function linePaths(xs: number[], values: (number | null)[], domain: { x0: number; x1: number; y0: number; y1: number }, box: { width: number; height: number }, stepMs: number): string[] {
  const sx = (x: number) => (domain.x1 === domain.x0 ? box.width / 2 : ((x - domain.x0) / (domain.x1 - domain.x0)) * box.width);
  const sy = (y: number) => (domain.y1 === domain.y0 ? box.height / 2 : box.height - ((y - domain.y0) / (domain.y1 - domain.y0)) * box.height);
  const paths: string[] = [];
  let run: string[] = [];
  let lastX: number | null = null;
  xs.forEach((x, i) => {
    const v = values[i];
    const gap = lastX !== null && x - lastX > stepMs * 1.5;
    if (v === null || v === undefined || gap) {
      if (run.length) paths.push(run.join(' '));
      run = [];
    }
    if (v !== null && v !== undefined) {
      run.push(`${run.length ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(v).toFixed(1)}`);
      lastX = x;
    } else {
      lastX = null;
    }
  });
  if (run.length) paths.push(run.join(' '));
  // A lone point has no length: draw it as a dot-sized segment.
  return paths.map((p) => (p.includes('L') ? p : `${p} l0.01,0`));
}

/** The y range of a chart: from 0 (or the lowest value, for heights) to the highest. */
export function yDomain(series: Series[], fromZero: boolean): { y0: number; y1: number } {
  const values = series.flatMap((s) => s.values).filter((v): v is number => v !== null);
  if (values.length === 0) return { y0: 0, y1: 1 };
  const max = Math.max(...values);
  const min = fromZero ? 0 : Math.min(...values);
  return { y0: min, y1: max === min ? min + 1 : max };
}

// Charts of what a node's endpoint served over a window: requests per second by method, errors,
// latency percentiles, height against the network's head. Hand-drawn SVG lines: a window has at
// most 168 steps, so a charting library (uPlot 1.6.32: 21.5 KB gzipped, canvas) would buy nothing here
// but weight and a canvas that neither screen readers nor the tests can read. Every chart has a
// table with the same numbers (loaded with this module only when the usage section is opened).
import { useId } from 'react';
import type { NodeUsage } from '../../api/types';
import { blocksBehind, errorRates, heights, latencies, linePaths, requestRates, yDomain, type Chart } from './usageSeries';

const WIDTH = 320;
const HEIGHT = 96;
const PAD = 4;
const COLORS = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#64748b'];

function time(ms: number, window: NodeUsage['window']): string {
  const d = new Date(ms);
  return window === '7d' || window === '24h'
    ? d.toLocaleString('en-US', { weekday: 'short', hour: '2-digit', minute: '2-digit', hour12: false })
    : d.toLocaleTimeString('en-US', { hour: '2-digit', minute: '2-digit', hour12: false });
}

const num = (v: number, digits = 2) => v.toLocaleString('en-US', { maximumFractionDigits: digits });

export function LineChart({ title, chart, unit, usage, fromZero = true, testId }: { title: string; chart: Chart; unit: string; usage: NodeUsage; fromZero?: boolean; testId: string }) {
  const id = useId();
  const { y0, y1 } = yDomain(chart.series, fromZero);
  const domain = { x0: usage.from, x1: usage.to, y0, y1 };
  // Inset so that a dot at an edge (the newest step) is drawn whole.
  const box = { width: WIDTH - 2 * PAD, height: HEIGHT - 2 * PAD };
  const empty = chart.xs.length === 0;
  const summary = chart.series
    .map((s) => {
      const vals = s.values.filter((v): v is number => v !== null);
      return vals.length ? `${s.name}: up to ${num(Math.max(...vals))} ${unit}` : `${s.name}: none`;
    })
    .join('; ');
  return (
    <figure className="chart" data-testid={testId}>
      <figcaption id={`${id}-title`}>
        {title} <span className="muted">({unit})</span>
      </figcaption>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-labelledby={`${id}-title`} aria-describedby={`${id}-desc`} preserveAspectRatio="none">
        <desc id={`${id}-desc`}>{empty ? 'No samples in this window.' : `Over the last ${usage.window}: ${summary}. The table below has every step.`}</desc>
        <line x1={0} y1={HEIGHT - 0.5} x2={WIDTH} y2={HEIGHT - 0.5} className="chart-axis" />
        <g transform={`translate(${PAD},${PAD})`}>
        {chart.series.map((s, i) =>
          linePaths(chart.xs, s.values, domain, box, usage.step_secs * 1000).map((d, j) => (
            // A lone step (no neighbour to join) is drawn as a dot: a round cap on a tiny segment.
            <path key={`${s.name}-${j}`} d={d} fill="none" stroke={COLORS[i % COLORS.length]} strokeWidth={d.includes('L') ? 1.5 : 6} strokeLinecap="round" strokeLinejoin="round" vectorEffect="non-scaling-stroke" data-series={s.name} />
          )),
        )}
        </g>
      </svg>
      <div className="chart-scale muted" aria-hidden="true">
        <span>
          {num(y0)}–{num(y1)} {unit}
        </span>
        <span>
          {time(usage.from, usage.window)} – {time(usage.to, usage.window)}
        </span>
      </div>
      <ul className="chart-legend">
        {chart.series.map((s, i) => (
          <li key={s.name}>
            <span className="swatch" style={{ background: COLORS[i % COLORS.length] }} aria-hidden="true" />
            {s.name}
          </li>
        ))}
      </ul>
    </figure>
  );
}

function latencyText(us: number | null): string {
  if (us === null) return '—';
  return us >= 1000 ? `${num(us / 1000)} ms` : `${us} µs`;
}

/** Per step: calls, errors, refused, latency. The text alternative of the rate and latency charts. */
export function StepTable({ usage }: { usage: NodeUsage }) {
  return (
    <table data-testid="latency-table">
      <caption>Calls and latency per {usage.step_secs / 60}-minute step</caption>
      <thead>
        <tr>
          <th scope="col">Step</th>
          <th scope="col">Requests</th>
          <th scope="col">Errors</th>
          <th scope="col">Refused</th>
          <th scope="col">p50</th>
          <th scope="col">p99</th>
        </tr>
      </thead>
      <tbody>
        {usage.points.map((p) => (
          <tr key={p.at}>
            <th scope="row">
              <time dateTime={new Date(p.at).toISOString()}>{time(p.at, usage.window)}</time>
            </th>
            <td>{p.requests.toLocaleString('en-US')}</td>
            <td>{p.errors.toLocaleString('en-US')}</td>
            <td>{p.refused.toLocaleString('en-US')}</td>
            <td>{latencyText(p.latency_p50_us)}</td>
            <td>{latencyText(p.latency_p99_us)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Per step: the node's height, the network's head and the distance between them. */
export function HeightTable({ usage }: { usage: NodeUsage }) {
  const sampled = usage.points.filter((p) => p.block !== null || p.head !== null);
  return (
    <table data-testid="height-table">
      <caption>Height against the network's head</caption>
      <thead>
        <tr>
          <th scope="col">Step</th>
          <th scope="col">Node</th>
          <th scope="col">Network head</th>
          <th scope="col">Blocks behind</th>
          <th scope="col">Head age</th>
        </tr>
      </thead>
      <tbody>
        {sampled.map((p) => {
          const behind = blocksBehind(p);
          return (
            <tr key={p.at}>
              <th scope="row">
                <time dateTime={new Date(p.at).toISOString()}>{time(p.at, usage.window)}</time>
              </th>
              <td>{p.block === null ? '—' : p.block.toLocaleString('en-US')}</td>
              <td>{p.head === null ? '—' : p.head.toLocaleString('en-US')}</td>
              <td>{behind === null ? '—' : behind.toLocaleString('en-US')}</td>
              <td>{p.behind_seconds === null ? '—' : `${p.behind_seconds} s`}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** The four charts, each followed by (or sharing) its table. */
export default function UsageCharts({ usage }: { usage: NodeUsage }) {
  return (
    <div className="usage-charts" data-testid="usage-charts">
      <LineChart title="Requests per second by method" chart={requestRates(usage)} unit="req/s" usage={usage} testId="chart-requests" />
      <LineChart title="Errors and refused calls per second" chart={errorRates(usage)} unit="calls/s" usage={usage} testId="chart-errors" />
      <LineChart title="Latency p50 and p99" chart={latencies(usage)} unit="ms" usage={usage} testId="chart-latency" />
      <details className="chart-table">
        <summary>Calls and latency per step, as a table</summary>
        <StepTable usage={usage} />
      </details>
      <LineChart title="Height against the network's head" chart={heights(usage)} unit="block" usage={usage} fromZero={false} testId="chart-height" />
      <details className="chart-table">
        <summary>Height and lag per step, as a table</summary>
        <HeightTable usage={usage} />
      </details>
    </div>
  );
}

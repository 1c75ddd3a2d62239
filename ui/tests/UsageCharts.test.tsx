import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api/client';
import { ApiProvider } from '../src/api/ApiContext';
import type { NodeUsage, UsagePoint } from '../src/api/types';
import UsageCharts from '../src/features/nodes/UsageCharts';
import { Insights } from '../src/features/nodes/NodeInsights';
import { errorRates, heights, latencies, linePaths, requestRates, topMethods, yDomain } from '../src/features/nodes/usageSeries';

const T0 = Date.UTC(2026, 11, 1, 12, 0);
const point = (minute: number, p: Partial<UsagePoint>): UsagePoint => ({
  at: T0 + minute * 60_000,
  requests: 0,
  errors: 0,
  refused: 0,
  bytes_in: 0,
  bytes_out: 0,
  methods: {},
  latency_p50_us: null,
  latency_p99_us: null,
  block: null,
  head: null,
  behind_seconds: null,
  ...p,
});

// Minutes 0, 1 and 3 (minute 2 had no sample): 10 calls, 1 error, 2 refused.
const usage: NodeUsage = {
  node_id: 'n1',
  window: '1h',
  step_secs: 60,
  from: T0,
  to: T0 + 60 * 60_000,
  totals: { requests: 10, errors: 1, refused: 2, bytes_in: 0, bytes_out: 0, methods: { eth_blockNumber: 5, eth_chainId: 3, eth_getBalance: 2 }, latency_p50_us: 500, latency_p99_us: 10_000 },
  points: [
    point(0, { requests: 6, methods: { eth_blockNumber: 3, eth_chainId: 3 }, latency_p50_us: 500, latency_p99_us: 2_000, block: 100, head: 100, behind_seconds: 1 }),
    point(1, { requests: 2, errors: 1, methods: { eth_blockNumber: 2 }, latency_p50_us: 250, latency_p99_us: 10_000, block: 104, head: 110, behind_seconds: 30 }),
    point(3, { requests: 2, refused: 2, methods: { eth_getBalance: 2 }, latency_p50_us: 1_000, latency_p99_us: 1_000, block: 120, head: 121, behind_seconds: 2 }),
  ],
};

describe('usage series', () => {
  it('gives calls per second per method, with the rest as other', () => {
    const rates = requestRates(usage);
    expect(rates.series.map((s) => s.name)).toEqual(['eth_blockNumber', 'eth_chainId', 'eth_getBalance']);
    expect(rates.series[0]?.values).toEqual([3 / 60, 2 / 60, 0]);
    const many: NodeUsage = { ...usage, totals: { ...usage.totals, methods: { a: 9, b: 8, c: 7, d: 6, e: 5, f: 4, other: 3 } }, points: [point(0, { methods: { a: 9, b: 8, c: 7, d: 6, e: 5, f: 4, other: 3 } })] };
    expect(topMethods(many)).toEqual({ top: ['a', 'b', 'c', 'd', 'e'], rest: true });
    const other = requestRates(many).series.find((s) => s.name === 'other');
    expect(other?.values).toEqual([(4 + 3) / 60]);
  });

  it('gives errors, latency in ms and heights against the head', () => {
    expect(errorRates(usage).series.map((s) => s.values)).toEqual([
      [0, 1 / 60, 0],
      [0, 0, 2 / 60],
    ]);
    expect(latencies(usage).series[1]?.values).toEqual([2, 10, 1]);
    expect(heights(usage).series.map((s) => s.values)).toEqual([
      [100, 104, 120],
      [100, 110, 121],
    ]);
    expect(yDomain(heights(usage).series, false)).toEqual({ y0: 100, y1: 121 });
    expect(yDomain([], true)).toEqual({ y0: 0, y1: 1 });
  });

  it('breaks a line where a step is missing or has no value', () => {
    const domain = { x0: T0, x1: T0 + 3 * 60_000, y0: 0, y1: 10 };
    const box = { width: 300, height: 100 };
    const xs = usage.points.map((p) => p.at);
    expect(linePaths(xs, [0, 10, 5], domain, box, 60_000)).toEqual(['M0.0,100.0 L100.0,0.0', 'M300.0,50.0 l0.01,0']);
    expect(linePaths(xs.slice(0, 2), [null, 10], domain, box, 60_000)).toEqual(['M100.0,0.0 l0.01,0']);
  });
});

describe('UsageCharts', () => {
  it('draws each chart with a text alternative and tables of the same numbers', () => {
    render(<UsageCharts usage={usage} />);
    for (const [id, name] of [
      ['chart-requests', 'Requests per second by method (req/s)'],
      ['chart-errors', 'Errors and refused calls per second (calls/s)'],
      ['chart-latency', 'Latency p50 and p99 (ms)'],
      ['chart-height', "Height against the network's head (block)"],
    ] as const) {
      const figure = screen.getByTestId(id);
      const img = within(figure).getByRole('img', { name });
      expect(img.querySelector('desc')?.textContent).toContain('last 1h');
    }
    const lines = [...screen.getByTestId('chart-requests').querySelectorAll('path')].map((p) => p.getAttribute('data-series'));
    // eth_blockNumber is drawn in two runs (minute 2 has no sample), the others likewise.
    expect(lines.filter((s) => s === 'eth_blockNumber')).toHaveLength(2);
    expect(new Set(lines)).toEqual(new Set(['eth_blockNumber', 'eth_chainId', 'eth_getBalance']));
    const heightRows = within(screen.getByTestId('height-table')).getAllByRole('row').slice(1).map((r) => [...r.querySelectorAll('td')].map((c) => c.textContent));
    expect(heightRows).toEqual([
      ['100', '100', '0', '1 s'],
      ['104', '110', '6', '30 s'],
      ['120', '121', '1', '2 s'],
    ]);
    const stepRows = within(screen.getByTestId('latency-table')).getAllByRole('row').slice(1).map((r) => [...r.querySelectorAll('td')].map((c) => c.textContent));
    expect(stepRows).toEqual([
      ['6', '0', '0', '500 µs', '2 ms'],
      ['2', '1', '0', '250 µs', '10 ms'],
      ['2', '0', '2', '1 ms', '1 ms'],
    ]);
  });

  it('says so when the window has no samples', () => {
    render(<UsageCharts usage={{ ...usage, points: [] }} />);
    expect(screen.getByTestId('chart-latency').querySelector('desc')?.textContent).toBe('No samples in this window.');
    expect(screen.getByTestId('chart-latency').querySelectorAll('path')).toHaveLength(0);
  });

  it('loads the chosen window (lazily loaded charts included)', async () => {
    const paths: string[] = [];
    const client = new ApiClient('/api/v1', async (input) => {
      const url = new URL(String(input), 'http://x');
      paths.push(url.pathname + url.search);
      const window = url.searchParams.get('window') as NodeUsage['window'];
      return Response.json({ ...usage, window });
    });
    render(
      <QueryClientProvider client={new QueryClient()}>
        <ApiProvider client={client}>
          <Insights id="n1" />
        </ApiProvider>
      </QueryClientProvider>,
    );
    await screen.findByTestId('chart-requests');
    expect(screen.getByRole('button', { name: '1h' }).getAttribute('aria-pressed')).toBe('true');
    await userEvent.click(screen.getByRole('button', { name: '7d' }));
    await waitFor(() => expect(screen.getByTestId('usage-table').querySelector('caption')?.textContent).toBe('Requests in the last 7d, by method'));
    expect(paths).toEqual(['/api/v1/nodes/n1/usage?window=1h', '/api/v1/nodes/n1/usage?window=7d']);
    expect(screen.getByRole('button', { name: '7d' }).getAttribute('aria-pressed')).toBe('true');
  });
});

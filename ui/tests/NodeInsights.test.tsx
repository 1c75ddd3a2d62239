import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api/client';
import { ApiProvider } from '../src/api/ApiContext';
import type { NodeLogs, NodeUsage } from '../src/api/types';
import { Insights } from '../src/features/nodes/NodeInsights';

const usage: NodeUsage = {
  node_id: 'n1',
  window: '1h',
  step_secs: 60,
  from: 0,
  to: 60_000,
  totals: { requests: 9, errors: 1, refused: 0, bytes_in: 580, bytes_out: 404, methods: { eth_blockNumber: 4, eth_chainId: 3, eth_getBalance: 1, net_version: 1 }, latency_p50_us: 500, latency_p99_us: 10_000 },
  points: [],
};
const logs: NodeLogs = { node_id: 'n1', lines: ['[INFO] started', 'dial http://n1:[redacted]@127.0.0.1/'] };

describe('node usage and logs', () => {
  it('shows the request mix by method as a table, then the last log lines on demand', async () => {
    const paths: string[] = [];
    const client = new ApiClient('/api/v1', async (input) => {
      const url = new URL(String(input), 'http://x');
      paths.push(url.pathname + url.search);
      return Response.json(url.pathname.endsWith('/usage') ? usage : logs);
    });
    render(
      <QueryClientProvider client={new QueryClient()}>
        <ApiProvider client={client}>
          <Insights id="n1" />
        </ApiProvider>
      </QueryClientProvider>,
    );
    const table = await screen.findByTestId('usage-table');
    const rows = within(table).getAllByRole('row').map((r) => r.textContent);
    expect(rows).toContain('eth_blockNumber4');
    expect(rows).toContain('eth_chainId3');
    expect(screen.getByTestId('usage-total').textContent).toBe('9');
    expect(screen.getByTestId('usage-errors').textContent).toBe('1');
    expect(paths).toEqual(['/api/v1/nodes/n1/usage?window=1h']);
    await userEvent.click(screen.getByRole('button', { name: 'Show logs' }));
    await waitFor(() => expect(screen.getByTestId('node-logs').textContent).toContain('[INFO] started'));
    expect(paths).toContain('/api/v1/nodes/n1/logs?lines=100');
  });
});

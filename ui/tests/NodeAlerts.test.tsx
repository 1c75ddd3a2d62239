import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { ReactNode } from 'react';
import { describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api/client';
import { ApiProvider } from '../src/api/ApiContext';
import type { Alert, Node, NodeAlerts, ProgressEvent } from '../src/api/types';
import { ToastProvider } from '../src/components/Toasts';
import { NodeCard } from '../src/features/nodes/NodeCard';
import { applyProgress } from '../src/features/nodes/useNodeEvents';

const lag: Alert = {
  id: 7,
  node_id: 'n1',
  kind: 'lag_seconds',
  message: "the node's head block is 9 s old (rule: more than 3 s)",
  fired_at: Date.UTC(2026, 10, 23, 9, 40),
  resolved_at: null,
};

const node: Node = {
  id: 'n1',
  name: 'hoodi-node',
  network: 'hoodi',
  engine: 'erigon',
  mode: 'dedicated',
  prune: 'full',
  state: 'running',
  reason: null,
  url: null,
  ws_url: null,
  auth: null,
  block: 150,
  sync: null,
  billing: null,
  held: false,
  replaces: null,
  replaced_by: null,
  health: null,
  engine_version: null,
  limits: null,
  endpoint_limits: null,
  methods: null,
  allow_origins: null,
  allow_ips: null,
  warnings: [],
  peers: null,
  behind_seconds: 9,
  behind_blocks: null,
  lagging: true,
  created_at: Date.UTC(2026, 10, 23, 9, 30),
  updated_at: Date.UTC(2026, 10, 23, 9, 31),
  stopped_at: null,
  alerts: [lag],
};

const alerts: NodeAlerts = {
  node_id: 'n1',
  rules: { lag_blocks: 40, lag_seconds: 120, runway_secs: 3600, failed: true, replaced: true },
  active: [lag],
  recent: [lag, { ...lag, id: 3, kind: 'lag_blocks', resolved_at: Date.UTC(2026, 10, 23, 9, 35) }],
};

type Call = { method: string; path: string; body?: unknown };

function renderCard(n: Node, calls: Call[], answer: (call: Call) => Response) {
  const client = new ApiClient('/api/v1', async (input, init) => {
    const call: Call = {
      method: init?.method ?? 'GET',
      path: new URL(String(input), 'http://x').pathname,
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
    };
    calls.push(call);
    return answer(call);
  });
  const wrap = ({ children }: { children: ReactNode }) => (
    <QueryClientProvider client={new QueryClient()}>
      <ApiProvider client={client}>
        <ToastProvider>{children}</ToastProvider>
      </ApiProvider>
    </QueryClientProvider>
  );
  return render(<NodeCard node={n} />, { wrapper: wrap });
}

describe('alerts on the node card', () => {
  it('shows active alerts at once, announced, with a count badge', () => {
    renderCard(node, [], () => Response.json(alerts));
    const list = screen.getByRole('alert', { name: 'Active alerts' });
    expect(within(list).getByTestId('node-alert').textContent).toContain('Head too old');
    expect(within(list).getByTestId('node-alert').textContent).toContain('9 s old (rule: more than 3 s)');
    expect(screen.getByTestId('node-alerting').textContent).toBe('1 alert');
  });

  it('shows no alert block when none is active', () => {
    renderCard({ ...node, alerts: [], lagging: false }, [], () => Response.json(alerts));
    expect(screen.queryByTestId('node-alerts')).toBeNull();
    expect(screen.queryByTestId('node-alerting')).toBeNull();
  });

  it('edits the rules: an empty threshold is off, and the server sees exactly what was set', async () => {
    const calls: Call[] = [];
    renderCard(node, calls, (call) =>
      call.method === 'PUT' ? Response.json({ ...alerts, rules: call.body }) : Response.json(alerts),
    );
    await userEvent.click(screen.getByText('Alerts'));
    const blocks = await screen.findByLabelText('Blocks behind');
    expect((blocks as HTMLInputElement).value).toBe('40');
    expect(screen.getByTestId('alerts-recent').textContent).toContain('active');
    await userEvent.clear(blocks);
    await userEvent.type(blocks, '5');
    await userEvent.clear(screen.getByLabelText('Runway seconds'));
    await userEvent.click(screen.getByLabelText('When it is replaced'));
    await userEvent.click(screen.getByRole('button', { name: 'Save rules' }));
    await waitFor(() => expect(calls.find((c) => c.method === 'PUT')).toBeTruthy());
    expect(calls.find((c) => c.method === 'PUT')).toEqual({
      method: 'PUT',
      path: '/api/v1/nodes/n1/alerts',
      body: { lag_blocks: 5, lag_seconds: 120, runway_secs: null, failed: true, replaced: false },
    });
    await screen.findByText('Saved.');
    expect((screen.getByLabelText('Blocks behind') as HTMLInputElement).value).toBe('5');
  });

  it("shows the server's refusal of a bad rule, and refuses text before sending", async () => {
    const calls: Call[] = [];
    renderCard(node, calls, (call) =>
      call.method === 'PUT'
        ? Response.json({ error: { code: 'invalid_alert_rules', message: 'runway_secs must be from 60 to 2592000 (or null: off), not 5' } }, { status: 400 })
        : Response.json(alerts),
    );
    await userEvent.click(screen.getByText('Alerts'));
    const runway = await screen.findByLabelText('Runway seconds');
    await userEvent.clear(runway);
    await userEvent.type(runway, 'soon');
    await userEvent.click(screen.getByRole('button', { name: 'Save rules' }));
    expect(screen.getByTestId('alert-rules-error').textContent).toContain('whole numbers');
    expect(calls.some((c) => c.method === 'PUT')).toBe(false);
    await userEvent.clear(runway);
    await userEvent.type(runway, '5');
    await userEvent.click(screen.getByRole('button', { name: 'Save rules' }));
    await waitFor(() => expect(screen.getByTestId('alert-rules-error').textContent).toContain('runway_secs must be from 60'));
  });

  it('takes the active alerts from each progress event', () => {
    const event: ProgressEvent = {
      node_id: 'n1', block: 151, sync: null, health: null, behind_seconds: 1, behind_blocks: null, peers: null,
      lagging: false, usage: null, alerts: [], at: 0,
    };
    expect(applyProgress([node], event)?.[0]?.alerts).toEqual([]);
    expect(applyProgress([{ ...node, alerts: [] }], { ...event, alerts: [lag] })?.[0]?.alerts).toEqual([lag]);
  });
});

import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { cleanup, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { ReactNode } from 'react';
import { describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api/client';
import { ApiProvider } from '../src/api/ApiContext';
import type { Node, ProgressEvent } from '../src/api/types';
import { ToastProvider } from '../src/components/Toasts';
import { NodeCard } from '../src/features/nodes/NodeCard';
import { syncView } from '../src/features/nodes/format';
import { shellQuote, snippet } from '../src/features/nodes/snippets';
import { applyProgress } from '../src/features/nodes/useNodeEvents';

const running: Node = {
  id: 'n1',
  name: 'mainnet-amber-42',
  network: 'mainnet',
  engine: 'erigon',
  mode: 'shared',
  prune: 'full',
  state: 'running',
  reason: null,
  url: 'http://127.0.0.1:8081/n1/',
  ws_url: 'ws://127.0.0.1:8081/n1/',
  auth: { user: 'n1', password: 's3cr3t-Pass' },
  block: 150,
  sync: { starting_block: 0, current_block: 150, highest_block: 600, stages: [{ name: 'Headers', block: 600 }, { name: 'Execution', block: 150 }] },
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
  behind_seconds: null,
  behind_blocks: null,
  lagging: false,
  created_at: Date.UTC(2026, 10, 23, 9, 30),
  updated_at: Date.UTC(2026, 10, 23, 9, 31),
  stopped_at: null,
  alerts: [],
};

/** A progress event as the server sends it: every field, these set. */
function progress(fields: Partial<ProgressEvent> & { node_id: string }): ProgressEvent {
  return { block: null, sync: null, health: null, behind_seconds: null, behind_blocks: null, peers: null, lagging: false, usage: null, alerts: [], at: 0, ...fields };
}

function renderCard(node: Node, calls: { method: string; path: string }[] = []) {
  const client = new ApiClient('/api/v1', async (input, init) => {
    calls.push({ method: init?.method ?? 'GET', path: new URL(String(input), 'http://x').pathname });
    return Response.json({ ...node, state: 'stopping' }, { status: 202 });
  });
  const queryClient = new QueryClient();
  const wrap = ({ children }: { children: ReactNode }) => (
    <QueryClientProvider client={queryClient}>
      <ApiProvider client={client}>
        <ToastProvider>{children}</ToastProvider>
      </ApiProvider>
    </QueryClientProvider>
  );
  return render(<NodeCard node={node} />, { wrapper: wrap });
}

describe('NodeCard', () => {
  it('shows a running node: state, engine, sync progress with stage, endpoints and masked password', async () => {
    renderCard(running);
    expect(screen.getByTestId('node-state').textContent).toBe('Running');
    expect(screen.getByText(/mainnet · erigon · shared · full/)).toBeTruthy();
    const bar = screen.getByRole('progressbar');
    expect(bar.getAttribute('aria-valuenow')).toBe('25');
    expect(bar.getAttribute('aria-valuetext')).toBe('Block 150 of 600 · stage Execution');
    expect(screen.getByTestId('field-url').textContent).toBe(running.url);
    expect(screen.getByTestId('field-websocket-url').textContent).toBe(running.ws_url);
    expect(screen.getByTestId('field-username').textContent).toBe('n1');
    const password = screen.getByTestId('field-password');
    expect(password.textContent).not.toContain('s3cr3t');
    await userEvent.click(screen.getByRole('button', { name: 'Reveal' }));
    expect(password.textContent).toBe('s3cr3t-Pass');
    expect(screen.getByText('Created').nextElementSibling?.querySelector('time')?.getAttribute('dateTime')).toBe('2026-11-23T09:30:00.000Z');
  });

  it('fills the snippets with the credentials', async () => {
    renderCard(running);
    expect(screen.getByTestId('snippet-curl').textContent).toContain(`-u 'n1:s3cr3t-Pass'`);
    await userEvent.click(screen.getByRole('tab', { name: 'web3.py' }));
    expect(screen.getByTestId('snippet-web3.py').textContent).toContain('"auth": ("n1", "s3cr3t-Pass")');
  });

  it('stops only after confirmation', async () => {
    const calls: { method: string; path: string }[] = [];
    renderCard(running, calls);
    await userEvent.click(screen.getByRole('button', { name: 'Stop' }));
    expect(calls).toEqual([]);
    const confirm = screen.getByRole('group', { name: 'Confirm stop' });
    await userEvent.click(within(confirm).getByRole('button', { name: 'Cancel' }));
    expect(calls).toEqual([]);
    await userEvent.click(screen.getByRole('button', { name: 'Stop' }));
    await userEvent.click(screen.getByRole('button', { name: 'Stop node' }));
    await waitFor(() => expect(calls).toEqual([{ method: 'POST', path: '/api/v1/nodes/n1/stop' }]));
  });

  it('shows why a node failed, no credentials, and offers Delete instead of Stop', async () => {
    const calls: { method: string; path: string }[] = [];
    renderCard({ ...running, state: 'failed', reason: 'erigon exited: bad flag', url: null, ws_url: null, auth: null, stopped_at: Date.UTC(2026, 10, 23, 10) }, calls);
    expect(screen.getByRole('note').textContent).toContain('erigon exited: bad flag');
    expect(screen.queryByTestId('field-password')).toBeNull();
    expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull();
    expect(screen.getByText('Stopped')).toBeTruthy();
    await userEvent.click(screen.getByRole('button', { name: 'Delete' }));
    await waitFor(() => expect(calls).toEqual([{ method: 'DELETE', path: '/api/v1/nodes/n1' }]));
  });
});

describe('NodeCard on Golem', () => {
  it('shows the agreed price, the spend against the budget, its runway and the provider', () => {
    renderCard({
      ...running,
      billing: {
        provider_id: '0xabc',
        provider_name: 'erigolem-provider-0xabc',
        agreement_id: 'ag1',
        price_per_hour: '0.3600000000000000288',
        start_fee: '0.5',
        price_per_request: null,
        spent: '0.62',
        budget_spent: '0.62',
        budget: '5',
        payable: '0.7',
        served_secs: 1200,
        runway_secs: 7500,
        settled: false,
        refused: 'debit note d1: 9 GLM is more than the agreed price allows',
      },
    });
    expect(screen.getByTestId('node-price').textContent).toBe('0.36 GLM/h + 0.5 GLM start');
    expect(screen.getByTestId('node-spent').textContent).toBe('0.62 of 5 GLM · budget lasts 2 h 5 min');
    expect(screen.getByText('erigolem-provider-0xabc')).toBeTruthy();
    expect(screen.getByTestId('node-refused').textContent).toContain('more than the agreed price');
  });

  it('offers Stop on a failed node that still holds its agreement, and shows its replacement', async () => {
    const calls: { method: string; path: string }[] = [];
    const failed = { ...running, state: 'failed' as const, reason: 'the node stopped answering', url: null, ws_url: null, auth: null };
    renderCard({ ...failed, held: true, replaced_by: 'n2' }, calls);
    expect(screen.getByTestId('node-replaced-by').textContent).toBe('n2');
    await userEvent.click(screen.getByRole('button', { name: 'Stop' }));
    expect(screen.getByRole('group', { name: 'Confirm stop' }).textContent).toContain('its agreement with the provider');
    await userEvent.click(screen.getByRole('button', { name: 'Stop node' }));
    await waitFor(() => expect(calls).toContainEqual({ method: 'POST', path: '/api/v1/nodes/n1/stop' }));
  });

  it('shows what replacements spent of the shared budget', () => {
    renderCard({
      ...running,
      replaces: 'n0',
      billing: {
        provider_id: '0xdef',
        provider_name: null,
        agreement_id: 'ag2',
        price_per_hour: '0.2',
        start_fee: '0',
        price_per_request: '0.00001',
        spent: '0.1',
        budget_spent: '0.35',
        budget: '2',
        payable: '0.12',
        served_secs: 60,
        runway_secs: null,
        settled: false,
        refused: null,
      },
    });
    expect(screen.getByTestId('node-price').textContent).toBe('0.2 GLM/h + 0.00001 GLM per request');
    expect(screen.getByTestId('node-spent').textContent).toBe('0.35 of 2 GLM (this node 0.1, the rest its predecessors)');
    expect(screen.getByTestId('node-replaces').textContent).toBe('n0');
  });
});

describe('NodeCard lag, release and limits', () => {
  const synced: Node = {
    ...running,
    mode: 'dedicated',
    sync: null,
    engine_version: '3.6.1',
    peers: 7,
    behind_seconds: 12,
    behind_blocks: null,
    lagging: false,
    limits: { block_range: 10000, logs_max_results: 100000, batch_limit: 1000, batch_concurrency: 4, max_concurrency: null },
    warnings: [],
  };

  it('shows the release, how far behind the head is, and the RPC limits of a node keeping up', () => {
    renderCard(synced);
    expect(screen.getByText(/mainnet · erigon 3\.6\.1 · dedicated · full/)).toBeTruthy();
    expect(screen.queryByTestId('node-lagging')).toBeNull();
    expect(screen.getByTestId('node-behind').textContent).toBe('12 s behind · 7 peers');
    expect(screen.getByTestId('node-limits').textContent).toBe('eth_getLogs blocks ≤ 10,000 · logs ≤ 100,000 · batch ≤ 1,000');
  });

  it('shows a node that fell behind as lagging, live from a progress event, and says by how much', () => {
    renderCard(synced);
    const next = applyProgress([synced], progress({ node_id: 'n1', block: 150, sync: null, behind_seconds: 300, behind_blocks: 25, peers: 7, lagging: true, at: 0 }))!;
    cleanup();
    renderCard(next[0]!);
    expect(screen.getByTestId('node-lagging').textContent).toBe('Lagging');
    expect(screen.getByTestId('node-lag').textContent).toContain('5 min behind (25 blocks)');
    expect(screen.queryByTestId('node-behind')).toBeNull();
    const caughtUp = applyProgress(next, progress({ node_id: 'n1', block: 180, sync: null, behind_seconds: 10, lagging: false, at: 0 }))!;
    expect(caughtUp[0]!.lagging).toBe(false);
  });

  it('shows limits a release does not have as no limit, and the runtime warnings', () => {
    renderCard({
      ...synced,
      engine_version: '3.9.0',
      limits: { block_range: null, logs_max_results: null, batch_limit: 1000, batch_concurrency: 4, max_concurrency: null },
      warnings: ["Erigon 3.9.0 is newer than the newest release this runtime knows (3.6): it runs with 3.6's command line"],
    });
    expect(screen.getByTestId('node-limits').textContent).toBe('eth_getLogs blocks: no limit · logs: no limit · batch ≤ 1,000');
    expect(screen.getByTestId('node-warning').textContent).toContain('newer than the newest release');
  });

  it("shows the endpoint's limits and allowlists, and what no allowlist means", () => {
    renderCard({
      ...running,
      endpoint_limits: { requests_per_sec: 100, burst: 200, max_concurrent: 16, max_body_bytes: 1 << 20, max_batch: 100, max_websockets: 16 },
      methods: ['eth_blockNumber', 'eth_*'],
      allow_origins: ['https://app.example.org'],
      allow_ips: ['10.0.0.0/8', '203.0.113.7'],
    });
    expect(screen.getByTestId('node-endpoint-limits').textContent).toBe('100 req/s (burst 200) · 16 at once · body ≤ 1 MiB · batch ≤ 100 · 16 WebSockets');
    expect(screen.getByTestId('node-methods').textContent).toBe('eth_blockNumber, eth_*');
    expect(screen.getByTestId('node-allow-origins').textContent).toBe('https://app.example.org');
    expect(screen.getByTestId('node-allow-ips').textContent).toBe('10.0.0.0/8, 203.0.113.7');
    cleanup();
    renderCard({ ...running, state: 'stopped', endpoint_limits: { requests_per_sec: 1, burst: 1, max_concurrent: 1, max_body_bytes: 1, max_batch: 1, max_websockets: 1 } });
    expect(screen.getByTestId('node-methods').textContent).toBe('any the provider allows');
    expect(screen.queryByTestId('node-allow-origins')).toBeNull();
    expect(screen.queryByTestId('node-endpoint-limits')).toBeNull();
  });

  it('does not show lag on a stopped node', () => {
    renderCard({ ...synced, state: 'stopped', lagging: true, url: null, ws_url: null, auth: null });
    expect(screen.queryByTestId('node-lagging')).toBeNull();
    expect(screen.queryByTestId('node-limits')).toBeNull();
  });
});

describe('node helpers', () => {
  it('shows a synced dev chain as a full bar at its head', () => {
    expect(syncView({ state: 'running', block: 7, sync: null })).toMatchObject({ fraction: 1, synced: true, current: 7 });
    expect(syncView({ state: 'starting', block: null, sync: null })).toMatchObject({ fraction: null });
  });
  it('shows a running node whose checks fail as unhealthy, and clears it when it answers', () => {
    const next = applyProgress([running], progress({ node_id: 'n1', block: 150, sync: null, health: 'not answering (1 of 3 checks failed)', at: 0 }))!;
    expect(next[0]!.health).toContain('not answering');
    renderCard(next[0]!);
    expect(screen.getByTestId('node-health').textContent).toContain('not answering (1 of 3');
    const healed = applyProgress(next, progress({ node_id: 'n1', block: 151, sync: null, at: 0 }))!;
    expect(healed[0]!.health).toBeNull();
  });
  it('applies progress events to the right node only', () => {
    const other = { ...running, id: 'n2' };
    const next = applyProgress([running, other], progress({ node_id: 'n1', block: 200, sync: null, at: 0 }))!;
    expect(next[0]!.block).toBe(200);
    expect(next[1]).toBe(other);
  });
  it('quotes shell values safely', () => {
    expect(shellQuote(`a'b`)).toBe(`'a'\\''b'`);
    expect(snippet('curl', 'http://h/x/', { user: 'u', password: `p'q` })).toContain(`-u 'u:p'\\''q'`);
  });
});

import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { ReactNode } from 'react';
import { describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api/client';
import { ApiProvider } from '../src/api/ApiContext';
import type { NetworkOffer } from '../src/api/types';
import { ToastProvider } from '../src/components/Toasts';
import { StartNodeForm } from '../src/features/nodes/StartNodeForm';

const source = 'docs.erigon.tech hardware requirements (Erigon 3.5.2, 2026-07-19; erigontech/erigon PR #22640)';
const mainnet: NetworkOffer = {
  network: 'mainnet',
  modes: ['dedicated'],
  engine: 'erigon',
  engine_version: '3.6.1',
  prunes: ['full', 'archive', 'minimal', 'blocks'],
  disk: [
    { prune: 'full', bytes: 419_040_000_000, basis: 'measured', source },
    { prune: 'archive', bytes: 2_030_000_000_000, basis: 'measured', source },
    { prune: 'minimal', bytes: 378_970_000_000, basis: 'measured', source },
    { prune: 'blocks', bytes: 2_030_000_000_000, basis: 'at_most', source },
  ],
};
const dev: NetworkOffer = { network: 'dev', modes: ['dedicated'], engine: 'anvil', engine_version: '1.7.1', prunes: [], disk: [] };

function renderForm(offers: NetworkOffer[], posted: unknown[] = []) {
  const client = new ApiClient('/api/v1', async (input, init) => {
    const path = new URL(String(input), 'http://x').pathname;
    if (path === '/api/v1/networks') return Response.json(offers);
    posted.push(JSON.parse(String(init?.body)));
    return Response.json({ id: 'n1', name: 'x', state: 'pending' }, { status: 201 });
  });
  const wrap = ({ children }: { children: ReactNode }) => (
    <QueryClientProvider client={new QueryClient()}>
      <ApiProvider client={client}>
        <ToastProvider>{children}</ToastProvider>
      </ApiProvider>
    </QueryClientProvider>
  );
  return render(<StartNodeForm />, { wrapper: wrap });
}

describe('StartNodeForm', () => {
  it('shows the disk each prune mode takes before an archive node is started', async () => {
    const posted: unknown[] = [];
    renderForm([mainnet, dev], posted);
    const prune = await screen.findByRole('combobox', { name: 'Prune' });
    const options = [...prune.querySelectorAll('option')].map((o) => o.textContent);
    expect(options).toEqual(['full (~419 GB)', 'archive (~2.03 TB)', 'minimal (~379 GB)', 'blocks (≤ 2.03 TB)']);
    expect(screen.getByTestId('disk-estimate').textContent).toContain('about 419 GB for mainnet in full mode');
    expect(screen.getByTestId('disk-estimate').textContent).toContain('Erigon 3.6.1');
    await userEvent.selectOptions(prune, 'archive');
    expect(screen.getByTestId('disk-estimate').textContent).toContain('about 2.03 TB for mainnet in archive mode');
    expect(screen.getByTestId('disk-estimate').getAttribute('title')).toContain('PR #22640');
    await userEvent.selectOptions(prune, 'blocks');
    expect(screen.getByTestId('disk-estimate').textContent).toContain('at most 2.03 TB');
    await userEvent.click(screen.getByRole('button', { name: 'Start node' }));
    await waitFor(() => expect(posted).toMatchObject([{ network: 'mainnet', prune: 'blocks' }]));
  });

  it('offers only the prune modes the network has, and none for the dev chain', async () => {
    renderForm([{ ...mainnet, prunes: ['full', 'archive', 'minimal'], disk: mainnet.disk!.slice(0, 3) }, dev]);
    const prune = await screen.findByRole('combobox', { name: 'Prune' });
    expect([...prune.querySelectorAll('option')].map((o) => o.value)).toEqual(['full', 'archive', 'minimal']);
    await userEvent.selectOptions(screen.getByRole('combobox', { name: 'Network' }), 'dev');
    expect(screen.queryByRole('combobox', { name: 'Prune' })).toBeNull();
    expect(screen.queryByTestId('disk-estimate')).toBeNull();
  });
});

describe('StartNodeForm allowlists', () => {
  it('sends the typed allowlists, and holds a bad entry at its field', async () => {
    const posted: unknown[] = [];
    renderForm([dev], posted);
    await userEvent.click(await screen.findByText('Restrict the endpoint (optional)'));
    const methods = screen.getByRole('textbox', { name: /Only these methods/ });
    await userEvent.type(methods, 'eth_chainId, eth.call');
    expect(screen.getByRole('alert').textContent).toBe('"eth.call" is not a method name (eth_call) or a namespace (eth_*)');
    expect(methods.getAttribute('aria-invalid')).toBe('true');
    expect(screen.getByRole('button', { name: 'Start node' })).toHaveProperty('disabled', true);
    await userEvent.clear(methods);
    await userEvent.type(methods, 'eth_blockNumber, eth_getBalance');
    await userEvent.type(screen.getByRole('textbox', { name: /Only these origins/ }), 'https://app.example.org');
    expect(screen.queryByRole('alert')).toBeNull();
    await userEvent.click(screen.getByRole('button', { name: 'Start node' }));
    await waitFor(() => expect(posted).toEqual([{ network: 'dev', name: expect.any(String), mode: 'dedicated', methods: ['eth_blockNumber', 'eth_getBalance'], allow_origins: ['https://app.example.org'] }]));
  });
});

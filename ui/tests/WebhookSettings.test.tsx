import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { ReactNode } from 'react';
import { describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api/client';
import { ApiProvider } from '../src/api/ApiContext';
import type { WebhookDelivery } from '../src/api/types';
import { ToastProvider } from '../src/components/Toasts';
import { WebhookSettings } from '../src/features/nodes/WebhookSettings';

type Call = { method: string; path: string; body?: unknown };

const delivered: WebhookDelivery = {
  id: 'd1',
  event: 'test',
  state: 'delivered',
  attempts: 3,
  last_status: 200,
  last_error: null,
  created_at: 0,
  next_attempt_at: null,
  delivered_at: 1,
};

function renderPanel(calls: Call[], answer: (call: Call) => Response) {
  const client = new ApiClient('/api/v1', async (input, init) => {
    const call: Call = { method: init?.method ?? 'GET', path: new URL(String(input), 'http://x').pathname, body: init?.body ? JSON.parse(String(init.body)) : undefined };
    calls.push(call);
    return answer(call);
  });
  const wrap = ({ children }: { children: ReactNode }) => (
    <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
      <ApiProvider client={client}>
        <ToastProvider>{children}</ToastProvider>
      </ApiProvider>
    </QueryClientProvider>
  );
  return render(<WebhookSettings />, { wrapper: wrap });
}

describe('the alert webhook', () => {
  it('sets a webhook, shows its secret once, sends a test event and lists the deliveries', async () => {
    const calls: Call[] = [];
    let set = false;
    renderPanel(calls, (call) => {
      if (call.path === '/api/v1/me/webhook' && call.method === 'GET')
        return set ? Response.json({ url: 'https://hooks.example.com/a', created_at: 0, secret_rotated_at: 0 }) : Response.json({ error: { code: 'no_webhook', message: 'you have no webhook' } }, { status: 404 });
      if (call.method === 'PUT') {
        set = true;
        return Response.json({ url: (call.body as { url: string }).url, secret: 'whsec_abc', created_at: 0, secret_rotated_at: 0 });
      }
      if (call.method === 'POST') return Response.json({ ...delivered, state: 'pending', attempts: 0 }, { status: 202 });
      return Response.json([delivered]);
    });
    await userEvent.click(screen.getByText('Alert webhook'));
    const url = await screen.findByPlaceholderText('https://example.com/hooks/erigolem');
    await userEvent.type(url, 'https://hooks.example.com/a');
    await userEvent.click(screen.getByRole('button', { name: 'Save webhook' }));
    expect((await screen.findByTestId('webhook-secret')).textContent).toContain('whsec_abc');
    expect(calls.find((c) => c.method === 'PUT')?.body).toEqual({ url: 'https://hooks.example.com/a', rotate_secret: false });
    await userEvent.click(screen.getByRole('button', { name: 'Send test event' }));
    await waitFor(() => expect(calls.some((c) => c.method === 'POST' && c.path === '/api/v1/me/webhook/test')).toBe(true));
    const table = await screen.findByTestId('webhook-deliveries');
    expect(table.textContent).toContain('delivered');
    expect(table.textContent).toContain('3');
    expect(table.textContent).toContain('200');
  });

  it("shows the server's refusal of a private address", async () => {
    const calls: Call[] = [];
    renderPanel(calls, (call) =>
      call.method === 'PUT'
        ? Response.json({ error: { code: 'invalid_webhook_url', message: '127.0.0.1 is not a public address' } }, { status: 400 })
        : Response.json({ error: { code: 'no_webhook', message: 'none' } }, { status: 404 }),
    );
    await userEvent.click(screen.getByText('Alert webhook'));
    await userEvent.type(await screen.findByPlaceholderText('https://example.com/hooks/erigolem'), 'http://127.0.0.1:9/');
    await userEvent.click(screen.getByRole('button', { name: 'Save webhook' }));
    await waitFor(() => expect(calls.map((c) => c.method)).toContain('PUT'));
    expect((await screen.findByTestId('webhook-error')).textContent).toContain('not a public address');
    expect(screen.queryByTestId('webhook-secret')).toBeNull();
  });
});

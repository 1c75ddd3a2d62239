// A node's usage and allowlists in a real browser against a real `erigolem serve` (local backend,
// runtime, guard, Nginx, anvil): a known request mix sent through the node's URL is what the usage
// chart's table shows, by method; a method allowlist typed into the start form is on the card and
// enforced at the node's URL.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, KEYS, openBrowser, startServer, waitFor, type Server } from './harness';

let server: Server;


beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startServer();
});

afterAll(async () => {
  await server?.stop();
});

interface NodeJson {
  id: string;
  url: string | null;
  auth: { user: string; password: string } | null;
  methods: string[] | null;
}

async function signIn(page: Page): Promise<void> {
  await page.goto(server.url);
  await page.getByRole('button', { name: 'Sign in with Ethereum' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor({ timeout: 15_000 });
}

/** The card of the newest node once it runs, and the node as the API shows it to its owner. */
async function runningNode(page: Page): Promise<{ card: Locator; node: NodeJson }> {
  const card = page.locator('article.node-card').first();
  await waitFor('the node to run', async () => ((await card.getAttribute('data-state')) === 'running' ? true : undefined), 45_000);
  const id = await card.getAttribute('data-node-id');
  const node = await page.evaluate(async (nodeId) => (await (await fetch(`/api/v1/nodes/${nodeId}`)).json()) as NodeJson, id);
  return { card, node };
}

/** One JSON-RPC call through the node's URL with its credentials, as a user's program sends it. */
async function call(node: NodeJson, method: string, params: unknown[] = []): Promise<{ result?: unknown; error?: { code: number; message: string } }> {
  const r = await fetch(node.url!, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${btoa(`${node.auth!.user}:${node.auth!.password}`)}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  return (await r.json()) as { result?: unknown; error?: { code: number; message: string } };
}

describe('usage and allowlists in the UI', () => {
  it('charts a known request mix and its table shows exactly those counts by method', async () => {
    const browser = await openBrowser(KEYS.alice, 'sign');
    const { page } = browser;
    try {
      await signIn(page);
      await page.getByRole('form', { name: 'Start node' }).getByRole('button', { name: 'Start node' }).click();
      const { card, node } = await runningNode(page);
      const mix: [string, unknown[], number][] = [
        ['eth_blockNumber', [], 5],
        ['eth_chainId', [], 3],
        ['eth_getBalance', ['0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266', 'latest'], 2],
      ];
      for (const [method, params, times] of mix) {
        for (let i = 0; i < times; i++) {
          const answer = await call(node, method, params);
          expect(answer.error, method).toBeUndefined();
        }
      }
      await card.getByText('Usage and logs').click();
      const table = card.getByTestId('usage-table');
      // Recorded at the next STATUS poll (2 s), shown at the next refresh (10 s).
      await waitFor('the mix in the usage table', async () => ((await card.getByTestId('usage-total').textContent()) === '10' ? true : undefined), 40_000);
      const rows = await table.locator('tbody tr').evaluateAll((trs) => trs.map((tr) => [tr.querySelector('th')?.textContent, tr.querySelector('td')?.textContent]));
      expect(Object.fromEntries(rows)).toEqual({ eth_blockNumber: '5', eth_chainId: '3', eth_getBalance: '2' });
      expect(await card.getByTestId('usage-errors').textContent()).toBe('0');
      // The chart is drawn: a line per method, named by its caption and legend.
      const chart = card.getByTestId('chart-requests');
      await chart.getByRole('img', { name: /Requests per second by method/ }).waitFor();
      const drawn = await chart.locator('path').evaluateAll((ps) => [...new Set(ps.map((p) => p.getAttribute('data-series')))].sort());
      expect(drawn).toEqual(['eth_blockNumber', 'eth_chainId', 'eth_getBalance']);
      expect(await chart.locator('.chart-legend li').allTextContents()).toEqual(['eth_blockNumber', 'eth_chainId', 'eth_getBalance']);
      await card.getByTestId('chart-height').getByRole('img').waitFor();
      // The height table has the node's sampled blocks.
      await card.getByText('Height and lag per step, as a table').click();
      expect(await card.getByTestId('height-table').locator('tbody tr').count()).toBeGreaterThan(0);
      // Another window keeps the same counts (nothing else was sent).
      await card.getByRole('button', { name: '24h' }).click();
      await waitFor('the 24h window', async () => ((await table.locator('caption').textContent())?.includes('24h') ? true : undefined));
      expect(await card.getByTestId('usage-total').textContent()).toBe('10');
      await card.screenshot({ path: join(ARTIFACTS, 'node-usage.png') });
      expect(browser.cspViolations).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it('starts a node with a method allowlist from the form, shows it on the card, and its URL refuses the rest', async () => {
    const browser = await openBrowser(KEYS.bob, 'sign');
    const { page } = browser;
    try {
      await signIn(page);
      const form = page.getByRole('form', { name: 'Start node' });
      await form.getByText('Restrict the endpoint (optional)').click();
      const methods = form.getByRole('textbox', { name: /Only these methods/ });
      await methods.fill('eth_blockNumber, eth.chainId');
      await form.getByRole('alert').waitFor();
      expect(await form.getByRole('button', { name: 'Start node' }).isDisabled()).toBe(true);
      await methods.fill('eth_blockNumber');
      await form.getByRole('button', { name: 'Start node' }).click();
      const { card, node } = await runningNode(page);
      expect(await card.getByTestId('node-methods').textContent()).toBe('eth_blockNumber');
      expect(node.methods).toEqual(['eth_blockNumber']);
      await card.getByTestId('node-endpoint-limits').waitFor();
      expect(await card.getByTestId('node-endpoint-limits').textContent()).toMatch(/req\/s .* at once .* batch/);
      expect((await call(node, 'eth_blockNumber')).result).toMatch(/^0x[0-9a-f]+$/);
      const refused = await call(node, 'eth_chainId');
      expect(refused.error?.code).toBe(-32601);
      expect(refused.error?.message).toContain('allowlist');
      expect(browser.cspViolations).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});

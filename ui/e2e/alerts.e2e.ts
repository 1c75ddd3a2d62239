// A lag alert on the node card: a node whose engine (fake-erigon, the stand-in for the erigon
// binary) falls behind shows its alert on the card, pushed by the event stream, and its rules are
// editable there; the webhook panel refuses a private address by default.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, KEYS, binary, openBrowser, startServer, waitFor, type Server } from './harness';

let server: Server;
let bins: string;

beforeAll(async () => {
  // An `erigon` that syncs at once, then stops following the chain after 3 s (one block a second).
  bins = mkdtempSync(join(tmpdir(), 'erigolem-e2e-erigon-'));
  const erigon = join(bins, 'erigon');
  writeFileSync(
    erigon,
    `#!/bin/sh\nFAKE_ERIGON_VERSION=3.6.1 FAKE_ERIGON_ROLE=erigon FAKE_ERIGON_SYNC_TARGET=100 FAKE_ERIGON_SYNC_RATE=1000 FAKE_ERIGON_SLOT_SECS=1 FAKE_ERIGON_LAG_AFTER_SECS=3 exec ${binary('fake-erigon')} "$@"\n`,
  );
  chmodSync(erigon, 0o755);
  server = await startServer(['--erigon', erigon]);
});

afterAll(async () => {
  await server?.stop();
  if (bins) rmSync(bins, { recursive: true, force: true });
});

async function signIn(page: Page): Promise<void> {
  await page.goto(server.url);
  await page.getByRole('button', { name: 'Sign in with Ethereum' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor({ timeout: 15_000 });
}

describe('alerts in the web UI', () => {
  it('shows a lag alert on the node card and lets the rules be edited', async () => {
    const browser = await openBrowser(KEYS.alice, 'sign');
    const { page } = browser;
    try {
      await signIn(page);
      // Created through the API with the session cookie (the form has no alert rules): a rule
      // that a 3 s old head block breaks.
      const status = await page.evaluate(async () => {
        const r = await fetch('/api/v1/nodes', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ network: 'hoodi', alerts: { lag_blocks: null, lag_seconds: 3, runway_secs: null, failed: true, replaced: true } }),
        });
        return r.status;
      });
      expect(status).toBe(201);
      const card = page.locator('article.node-card').first();
      await waitFor('the node to run', async () => ((await card.getAttribute('data-state')) === 'running' ? true : undefined), 45_000);
      const alert = card.getByTestId('node-alert');
      await alert.waitFor({ timeout: 45_000 });
      expect(await alert.getAttribute('data-kind')).toBe('lag_seconds');
      expect(await alert.textContent()).toContain('Head too old');
      expect(await alert.textContent()).toContain('rule: more than 3 s');
      expect(await card.getByRole('alert', { name: 'Active alerts' }).count()).toBe(1);
      expect(await card.getByTestId('node-alerting').textContent()).toBe('1 alert');
      await card.screenshot({ path: join(ARTIFACTS, 'node-card-alert.png') });

      // The rules, as set at create time, and editable.
      await card.getByText('Alerts', { exact: true }).click();
      const seconds = card.getByLabel('Seconds behind');
      await seconds.waitFor();
      expect(await seconds.inputValue()).toBe('3');
      expect(await card.getByLabel('Blocks behind').inputValue()).toBe('');
      await card.getByLabel('Blocks behind').fill('0');
      await card.getByRole('button', { name: 'Save rules' }).click();
      await card.getByTestId('alert-rules-error').waitFor();
      expect(await card.getByTestId('alert-rules-error').textContent()).toContain('lag_blocks must be from 1');
      await card.getByLabel('Blocks behind').fill('40');
      await card.getByRole('button', { name: 'Save rules' }).click();
      await card.getByText('Saved.').waitFor();
      const rules = await page.evaluate(async (id) => (await (await fetch(`/api/v1/nodes/${id}/alerts`)).json()) as { rules: { lag_blocks: number | null } }, await card.getAttribute('data-node-id'));
      expect(rules.rules.lag_blocks).toBe(40);

      // The webhook panel: a loopback URL is refused by the server's default (no
      // --webhook-allow-private), with the reason on the page.
      await page.getByText('Alert webhook').click();
      await page.getByPlaceholder('https://example.com/hooks/erigolem').fill('http://127.0.0.1:9/hook');
      await page.getByRole('button', { name: 'Save webhook' }).click();
      await page.getByTestId('webhook-error').waitFor();
      expect(await page.getByTestId('webhook-error').textContent()).toContain('not a public address');
      expect(browser.cspViolations).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});

// The Golem path in a real browser: a node bought from a provider on a local Golem network shows
// its price and what was paid, and stopping it pays the provider.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, openBrowser, startGolemStack, waitFor, type Server } from './harness';

let stack: Server;

beforeAll(async () => {
  stack = await startGolemStack();
}, 90_000);

afterAll(async () => {
  await stack?.stop();
});

describe('web UI on the golem backend', () => {
  it('starts a node on a Golem provider, shows its price and spend, and stops it', async () => {
    const browser = await openBrowser(KEYS.alice, 'sign');
    const { page } = browser;
    try {
      await page.goto(stack.url);
      await page.getByRole('button', { name: 'Sign in with Ethereum' }).click();
      await page.getByRole('button', { name: 'Sign out' }).waitFor({ timeout: 15_000 });
      // The market's price range for the chosen network.
      await waitFor('the market price', async () => {
        await page.reload();
        return (await page.getByTestId('price-range').count()) > 0 ? true : undefined;
      }, 20_000);
      expect(await page.getByTestId('price-range').textContent()).toContain('0.36 GLM/h');

      await page.getByLabel('Budget (GLM)').fill('2');
      await page.getByRole('form', { name: 'Start node' }).getByRole('button', { name: 'Start node' }).click();
      const card = page.locator('article.node-card').first();
      await waitFor('the node to run on Golem', async () => ((await card.getAttribute('data-state')) === 'running' ? true : undefined), 60_000);
      expect(await card.getByTestId('node-price').textContent()).toBe('0.36 GLM/h + 0.01 GLM start');
      expect(await card.getByTestId('node-spent').textContent()).toMatch(/of 2 GLM · budget lasts/);

      await card.getByRole('button', { name: 'Stop' }).click();
      await card.getByRole('button', { name: 'Stop node' }).click();
      await page.getByRole('tab', { name: /Stopped/ }).click();
      const stopped = page.locator('article.node-card[data-state="stopped"]').first();
      await stopped.waitFor({ timeout: 30_000 });
      // The final invoice is paid: the card says so.
      await waitFor('the invoice to be paid', async () => {
        await page.reload();
        await page.getByRole('tab', { name: /Stopped/ }).click();
        const spent = await page.locator('article.node-card[data-state="stopped"]').first().getByTestId('node-spent').textContent();
        return spent?.includes('paid') ? true : undefined;
      }, 30_000);
    } finally {
      await browser.close();
    }
  });
});

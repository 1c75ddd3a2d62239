// Starts a real `erigolem serve` (local backend, dev chain) on free ports and Debian's Chromium through
// playwright-core, with an injected EIP-1193 wallet backed by a real private key. Everything started
// here is ended by its PID (process group) in `stop()`.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { hexToString, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

export const REPO = resolve(import.meta.dirname, '../..');
export const ARTIFACTS = resolve(import.meta.dirname, 'artifacts');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** The flags CI needs: root, no GPU, and nothing that reaches for the network on its own. */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** anvil's public dev keys: real secp256k1 keys, so the server verifies real signatures. */
export const KEYS = {
  alice: '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  bob: '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
} as const satisfies Record<string, Hex>;

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? ok(address.port) : fail(new Error('no port'))));
    });
  });
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const server = createServer();
    server.once('error', () => ok(false));
    server.listen(port, '127.0.0.1', () => server.close(() => ok(true)));
  });
}

/** A block of `count` consecutive free ports below the ephemeral range (where port-0 binds land). */
async function freePortBlock(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 10000);
    let ok = true;
    for (let p = base; p < base + count && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error('no free port block');
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

export function binary(name: string): string {
  const path = join(REPO, 'target', 'debug', name);
  if (!existsSync(path)) throw new Error(`${path} is missing: build with \`cargo build --bins\` (scripts/test.sh does)`);
  return path;
}

export interface Server {
  url: string;
  process: ChildProcess;
  log: string[];
  stop(): Promise<void>;
}

/** Starts `erigolem serve` with the local backend and the dev chain (and `extraArgs`); resolves once /healthz answers. */
export async function startServer(extraArgs: string[] = []): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), 'erigolem-e2e-'));
  const port = await freePort();
  const gateway = await freePort();
  const maxNodes = 4;
  const nodePorts = await freePortBlock(12 * maxNodes);
  const anvil = join(REPO, '.tools', 'bin', 'anvil');
  const args = [
    'serve',
    '--listen', `127.0.0.1:${port}`,
    '--data-dir', dataDir,
    '--gateway-listen', `127.0.0.1:${gateway}`,
    '--max-nodes', String(maxNodes),
    '--node-ports', String(nodePorts),
    '--runtime', binary('ya-runtime-erigon'),
    ...(existsSync(anvil) ? ['--anvil', anvil] : []),
    ...extraArgs,
  ];
  const log: string[] = [];
  // Its own process group, so that stop() reaches the server's Nginx and runtimes too.
  const child = spawn(binary('erigolem'), args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
  child.stdout?.on('data', (d: Buffer) => log.push(d.toString()));
  child.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  const stop = async () => {
    if (child.exitCode === null && child.pid) {
      process.kill(child.pid, 'SIGTERM');
      const timeout = new Promise<'timeout'>((ok) => setTimeout(() => ok('timeout'), 10_000));
      if ((await Promise.race([exited, timeout])) === 'timeout') process.kill(-child.pid, 'SIGKILL');
    }
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // The group is gone already.
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await waitFor('erigolem serve /healthz', async () => {
      if (child.exitCode !== null) throw new Error(`erigolem exited with ${child.exitCode}:\n${log.join('')}`);
      const r = await fetch(`${url}/healthz`);
      return r.ok ? true : undefined;
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, process: child, log, stop };
}

/**
 * Starts the whole Golem path (`cargo build --examples` builds it): a local Golem network, a
 * provider running `erigolem-provider run`, and `erigolem serve --backend golem`. Resolves with the
 * server's URL once it prints it.
 */
export async function startGolemStack(): Promise<Server> {
  const log: string[] = [];
  const child = spawn(join(REPO, 'target', 'debug', 'examples', 'golem-stack'), [], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info' },
  });
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`golem-stack did not start:\n${log.join('')}`)), 60_000);
    child.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
    child.stdout?.on('data', (d: Buffer) => {
      log.push(d.toString());
      const found = /ERIGOLEM_URL=(\S+)/.exec(log.join(''));
      if (found?.[1]) {
        clearTimeout(timer);
        ok(found[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`golem-stack exited with ${code}:\n${log.join('')}`));
    });
  });
  const stop = async () => {
    if (child.exitCode === null && child.pid) {
      process.kill(child.pid, 'SIGTERM');
      const timeout = new Promise<'timeout'>((ok) => setTimeout(() => ok('timeout'), 20_000));
      if ((await Promise.race([exited, timeout])) === 'timeout') process.kill(-child.pid, 'SIGKILL');
    }
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // The group is gone already.
    }
  };
  return { url, process: child, log, stop };
}

export type WalletBehaviour = 'sign' | 'reject' | 'none';

/**
 * A fresh Chromium profile; with a wallet (announced by EIP-6963 and as window.ethereum) unless 'none'.
 * `cspViolations` collects what the server's Content-Security-Policy blocked on any page (the
 * `securitypolicyviolation` events and the console's reports): the built UI must need none.
 */
export async function openBrowser(key: Hex, behaviour: WalletBehaviour, viewport = { width: 1280, height: 900 }): Promise<{ context: BrowserContext; page: Page; cspViolations: string[]; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'erigolem-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
  });
  const cspViolations: string[] = [];
  await context.exposeBinding('__erigolemCspViolation', (_source, report: string) => {
    cspViolations.push(report);
  });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      void (window as any).__erigolemCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  context.on('console', (msg) => {
    if (msg.type() === 'error' && msg.text().includes('Content Security Policy')) cspViolations.push(msg.text());
  });
  if (behaviour !== 'none') {
    const account = privateKeyToAccount(key);
    await context.exposeBinding('__erigolemWalletSign', async (_source, messageHex: Hex) => {
      if (behaviour === 'reject') throw new Error('4001');
      return account.signMessage({ message: hexToString(messageHex) });
    });
    await context.addInitScript(
      ({ address }) => {
        const provider = {
          isTestWallet: true,
          async request({ method, params }: { method: string; params?: unknown[] }) {
            switch (method) {
              case 'eth_requestAccounts':
              case 'eth_accounts':
                return [address];
              case 'eth_chainId':
                return '0x1';
              case 'personal_sign':
                try {
                  // eslint-disable-next-line @typescript-eslint/no-explicit-any
                  return await (window as any).__erigolemWalletSign((params as string[])[0]);
                } catch {
                  throw Object.assign(new Error('User rejected the request.'), { code: 4001 });
                }
              default:
                throw Object.assign(new Error(`unsupported ${method}`), { code: 4200 });
            }
          },
          on() {},
          removeListener() {},
        };
        const info = { uuid: '7b1f3c1e-0000-4000-8000-000000000001', name: 'Test Wallet', icon: 'data:image/svg+xml,<svg xmlns="http://www.w3.org/2000/svg"/>', rdns: 'network.erigolem.test' };
        const announce = () => window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info, provider }) }));
        window.addEventListener('eip6963:requestProvider', announce);
        announce();
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        (window as any).ethereum = provider;
      },
      { address: account.address },
    );
  }
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    cspViolations,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

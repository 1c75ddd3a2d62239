import { describe, expect, it } from 'vitest';
import { verifyMessage, type EIP1193Provider, type Hex, hexToString } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { parseSiweMessage } from 'viem/siwe';
import { ApiClient, ApiError } from '../src/api/client';
import { signIn, SignInError, type SignInState, USER_REJECTED, REQUEST_PENDING } from '../src/features/auth/siwe';
import { fromAnnouncements } from '../src/features/auth/wallets';

// anvil's well-known dev key #0: a real secp256k1 key, so signatures are real.
const KEY = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80' as const;
const account = privateKeyToAccount(KEY);
const target = { domain: 'erigolem.test:8080', uri: 'http://erigolem.test:8080' };

/** An EIP-1193 wallet backed by the key; `refuse` makes a method fail with an RPC error code. */
function wallet(options: { refuse?: Record<string, number>; signWith?: Hex } = {}): EIP1193Provider {
  const signer = options.signWith ? privateKeyToAccount(options.signWith) : account;
  return {
    request: async ({ method, params }: { method: string; params?: unknown[] }) => {
      const code = options.refuse?.[method];
      if (code !== undefined) throw Object.assign(new Error(`refused ${method}`), { code });
      switch (method) {
        case 'eth_requestAccounts':
          return [account.address.toLowerCase()];
        case 'eth_chainId':
          return '0x1';
        case 'personal_sign':
          return signer.signMessage({ message: hexToString((params as [Hex])[0]) });
        default:
          throw new Error(`unexpected ${method}`);
      }
    },
    on: () => {},
    removeListener: () => {},
  } as unknown as EIP1193Provider;
}

/** A server that checks the signature like the real one does (recovering the address). */
function server(): { client: ApiClient; logins: { message: string; signature: Hex }[] } {
  const logins: { message: string; signature: Hex }[] = [];
  const client = new ApiClient('/api/v1', async (input, init) => {
    const path = new URL(String(input), 'http://x').pathname;
    if (path.endsWith('/auth/nonce')) return Response.json({ nonce: 'Abc123def456ghij', expires_at: 0 });
    const body = JSON.parse(String(init?.body)) as { message: string; signature: Hex };
    logins.push(body);
    const parsed = parseSiweMessage(body.message);
    const ok = await verifyMessage({ address: parsed.address!, message: body.message, signature: body.signature });
    if (!ok) return Response.json({ error: { code: 'signature_mismatch', message: 'signature does not match' } }, { status: 401 });
    return Response.json({ address: parsed.address, token: 't', expires_at: 1 });
  });
  return { client, logins };
}

describe('sign-in with Ethereum', () => {
  it('signs an EIP-4361 message with personal_sign and logs in, going through each state', async () => {
    const { client, logins } = server();
    const states: SignInState['kind'][] = [];
    const session = await signIn(wallet(), client, target, (s) => states.push(s.kind));
    expect(session.address).toBe(account.address);
    expect(states).toEqual(['connecting', 'signing', 'verifying']);
    const message = parseSiweMessage(logins[0]!.message);
    expect(message).toMatchObject({
      address: account.address,
      domain: 'erigolem.test:8080',
      uri: 'http://erigolem.test:8080',
      chainId: 1,
      nonce: 'Abc123def456ghij',
      version: '1',
    });
  });

  it('reports a rejected connection or signature as rejected', async () => {
    for (const method of ['eth_requestAccounts', 'personal_sign']) {
      const error = await signIn(wallet({ refuse: { [method]: USER_REJECTED } }), server().client, target, () => {}).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SignInError);
      expect((error as SignInError).state.kind).toBe('rejected');
    }
  });

  it('reports a request already open in the wallet as pending', async () => {
    const error = (await signIn(wallet({ refuse: { eth_requestAccounts: REQUEST_PENDING } }), server().client, target, () => {}).catch((e: unknown) => e)) as SignInError;
    expect(error.state.kind).toBe('connecting');
    expect(error.message).toMatch(/already open/);
  });

  it('reports a signature from another account as the wrong account', async () => {
    const other = '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d' as const;
    const error = (await signIn(wallet({ signWith: other }), server().client, target, () => {}).catch((e: unknown) => e)) as SignInError;
    expect(error.state).toEqual({ kind: 'wrong_account', expected: account.address });
  });

  it('passes other server refusals on with their message', async () => {
    const client = new ApiClient('/api/v1', async (input) =>
      String(input).endsWith('/auth/nonce')
        ? Response.json({ nonce: 'Abc123def456ghij', expires_at: 0 })
        : Response.json({ error: { code: 'domain_mismatch', message: 'the message names another domain' } }, { status: 401 }),
    );
    const error = (await signIn(wallet(), client, target, () => {}).catch((e: unknown) => e)) as SignInError;
    expect(error.state).toEqual({ kind: 'failed', message: 'the message names another domain' });
    expect(error).not.toBeInstanceOf(ApiError);
  });
});

describe('wallet discovery', () => {
  const provider = wallet();
  it('lists announced wallets and ignores the injected one then', () => {
    const details = [
      { info: { uuid: 'u1', name: 'Rabby', icon: 'data:,', rdns: 'io.rabby' }, provider },
      { info: { uuid: 'u2', name: 'MetaMask', icon: 'data:,', rdns: 'io.metamask' }, provider },
    ];
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    expect(fromAnnouncements(details as any, provider).map((w) => w.name)).toEqual(['Rabby', 'MetaMask']);
  });
  it('falls back to window.ethereum, and to nothing', () => {
    expect(fromAnnouncements([], provider).map((w) => w.id)).toEqual(['injected']);
    expect(fromAnnouncements([], undefined)).toEqual([]);
  });
});

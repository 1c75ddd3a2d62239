// The Sign-In with Ethereum flow, independent of React so that each state can be tested:
// accounts → chain id → nonce → EIP-4361 message (viem's SIWE helper) → personal_sign → login.
import { getAddress, stringToHex, type EIP1193Provider, type Hex } from 'viem';
import { createSiweMessage } from 'viem/siwe';
import { ApiError, type ApiClient } from '../../api/client';
import type { LoginResponse } from '../../api/types';

/** What the sign-in is doing or why it stopped; the landing page shows one message per state. */
export type SignInState =
  | { kind: 'idle' }
  | { kind: 'no_wallet' }
  | { kind: 'choosing' }
  | { kind: 'connecting' }
  | { kind: 'signing'; address: string }
  | { kind: 'verifying'; address: string }
  | { kind: 'rejected' }
  | { kind: 'wrong_account'; expected: string }
  | { kind: 'expired' }
  | { kind: 'failed'; message: string };

/** EIP-1193 error code for "the user rejected the request". */
export const USER_REJECTED = 4001;
/** EIP-1193 / MetaMask code for "a request of this kind is already pending". */
export const REQUEST_PENDING = -32002;

export const SIWE_STATEMENT = 'Sign in to Erigolem to start and manage your Ethereum nodes.';

export interface SignInTarget {
  /** `host[:port]` of the page, which the server checks against its public URL. */
  domain: string;
  /** The page's origin. */
  uri: string;
}

export class SignInError extends Error {
  readonly state: SignInState;
  constructor(state: SignInState, message: string) {
    super(message);
    this.state = state;
  }
}

function rpcErrorCode(e: unknown): number | undefined {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

function walletError(e: unknown): SignInError {
  switch (rpcErrorCode(e)) {
    case USER_REJECTED:
      return new SignInError({ kind: 'rejected' }, 'You rejected the request in your wallet.');
    case REQUEST_PENDING:
      return new SignInError({ kind: 'connecting' }, 'A request is already open in your wallet: finish it there.');
    default:
      return new SignInError(
        { kind: 'failed', message: (e as Error)?.message ?? String(e) },
        `The wallet failed: ${(e as Error)?.message ?? String(e)}`,
      );
  }
}

export function buildMessage(params: {
  address: string;
  chainId: number;
  nonce: string;
  target: SignInTarget;
  issuedAt?: Date;
}): string {
  return createSiweMessage({
    address: getAddress(params.address),
    chainId: params.chainId,
    domain: params.target.domain,
    uri: params.target.uri,
    nonce: params.nonce,
    statement: SIWE_STATEMENT,
    version: '1',
    issuedAt: params.issuedAt ?? new Date(),
  });
}

/**
 * Runs the whole flow and reports each state through `onState`. Resolves with the session on success;
 * rejects with a SignInError whose `state` says what went wrong.
 */
export async function signIn(
  provider: EIP1193Provider,
  api: ApiClient,
  target: SignInTarget,
  onState: (state: SignInState) => void,
): Promise<LoginResponse> {
  onState({ kind: 'connecting' });
  let accounts: readonly string[];
  let chainHex: string;
  try {
    accounts = await provider.request({ method: 'eth_requestAccounts' });
    chainHex = await provider.request({ method: 'eth_chainId' });
  } catch (e) {
    throw walletError(e);
  }
  const account = accounts[0];
  if (!account) {
    throw new SignInError({ kind: 'failed', message: 'no account' }, 'The wallet gave no account: unlock it and try again.');
  }
  const address = getAddress(account);
  const { nonce } = await api.nonce();
  const message = buildMessage({ address, chainId: Number.parseInt(chainHex, 16), nonce, target });
  onState({ kind: 'signing', address });
  let signature: Hex;
  try {
    signature = await provider.request({ method: 'personal_sign', params: [stringToHex(message), address] });
  } catch (e) {
    throw walletError(e);
  }
  onState({ kind: 'verifying', address });
  try {
    return await api.login(message, signature);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'signature_mismatch') {
      // The wallet signed with another account than the one it reported.
      throw new SignInError({ kind: 'wrong_account', expected: address }, `The signature is not from ${address}: sign with that account.`);
    }
    if (e instanceof ApiError) {
      throw new SignInError({ kind: 'failed', message: e.message }, e.message);
    }
    throw e;
  }
}

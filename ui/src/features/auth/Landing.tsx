import { useEffect, useState } from 'react';
import { rememberedAddress } from './session';
import type { SignInState } from './siwe';
import { useSignIn } from './useSignIn';
import { watchWallets, type Wallet } from './wallets';

/** How long to wait for EIP-6963 announcements before saying that no wallet is installed. */
const DISCOVERY_MS = 400;

function shortAddress(address: string): string {
  return `${address.slice(0, 6)}…${address.slice(-4)}`;
}

export function stateMessage(state: SignInState): { text: string; tone: 'info' | 'error' } | null {
  switch (state.kind) {
    case 'idle':
    case 'choosing':
      return null;
    case 'no_wallet':
      return { text: 'No Ethereum wallet found in this browser. Install one (for example MetaMask or Rabby) and reload the page.', tone: 'error' };
    case 'connecting':
      return { text: 'Waiting for your wallet: approve the connection there.', tone: 'info' };
    case 'signing':
      return { text: `Sign the message in your wallet to sign in as ${shortAddress(state.address)}.`, tone: 'info' };
    case 'verifying':
      return { text: 'Checking the signature…', tone: 'info' };
    case 'rejected':
      return { text: 'You rejected the request in your wallet. Nothing was signed; try again when ready.', tone: 'error' };
    case 'wrong_account':
      return { text: `The wallet signed with another account than ${shortAddress(state.expected)}. Switch to that account in the wallet, or sign in again.`, tone: 'error' };
    case 'expired':
      return { text: 'Your session expired. Sign in again to see your nodes.', tone: 'error' };
    case 'failed':
      return { text: `Sign-in failed: ${state.message}`, tone: 'error' };
  }
}

export function Landing() {
  const [wallets, setWallets] = useState<Wallet[] | null>(null);
  const { state, setState, signIn, busy } = useSignIn(rememberedAddress() ? { kind: 'expired' } : { kind: 'idle' });

  useEffect(() => {
    let found: Wallet[] = [];
    const stop = watchWallets((w) => {
      found = w;
      setWallets(w);
    });
    // Wallets announce themselves at once; give them a moment before declaring there is none.
    const timer = setTimeout(() => setWallets(found), DISCOVERY_MS);
    return () => {
      stop();
      clearTimeout(timer);
    };
  }, []);

  const start = () => {
    const only = wallets?.length === 1 ? wallets[0] : undefined;
    if (!wallets || wallets.length === 0) {
      setState({ kind: 'no_wallet' });
    } else if (only) {
      signIn(only);
    } else {
      setState({ kind: 'choosing' });
    }
  };
  const message = stateMessage(state);

  return (
    <main className="landing">
      <section className="hero">
        <h1>Ethereum nodes on demand</h1>
        <p className="lead">
          Erigolem starts an Erigon node for you on the Golem Network. Sign in with your wallet, click <em>Start node</em>,
          and get an HTTP and WebSocket JSON-RPC URL with its own username and password within seconds. Watch it sync,
          stop it when you are done; the provider is paid in GLM in the background.
        </p>
        <button type="button" className="button primary large" onClick={start} disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in with Ethereum'}
        </button>
        {message && (
          <p className={`notice notice-${message.tone}`} role={message.tone === 'error' ? 'alert' : 'status'} data-testid="signin-state" data-state={state.kind}>
            {message.text}
          </p>
        )}
        {state.kind === 'choosing' && wallets && (
          <div className="wallet-chooser" role="group" aria-label="Choose a wallet">
            {wallets.map((w) => (
              <button key={w.id} type="button" className="button wallet" onClick={() => signIn(w)}>
                {w.icon && <img src={w.icon} alt="" width={24} height={24} />}
                {w.name}
              </button>
            ))}
          </div>
        )}
      </section>
      <section className="features" aria-label="What you get">
        <div>
          <h2>Real endpoints</h2>
          <p>HTTP and WebSocket JSON-RPC behind Nginx, with credentials only you see.</p>
        </div>
        <div>
          <h2>Live sync</h2>
          <p>Block height and Erigon&apos;s sync stages, pushed to this page as they change.</p>
        </div>
        <div>
          <h2>Pay as you go</h2>
          <p>Providers on the Golem Network are paid per hour in GLM; stop a node and paying stops.</p>
        </div>
      </section>
    </main>
  );
}

// Wallet discovery: EIP-6963 announcements (several wallets → the user chooses), with the legacy
// injected `window.ethereum` as a fallback for wallets that do not announce themselves.
import { createStore, type EIP6963ProviderDetail } from 'mipd';
import type { EIP1193Provider } from 'viem';

export interface Wallet {
  /** Stable per page load: the EIP-6963 uuid, or `injected`. */
  id: string;
  name: string;
  icon?: string;
  provider: EIP1193Provider;
}

export const INJECTED_WALLET_ID = 'injected';

declare global {
  interface Window {
    ethereum?: EIP1193Provider;
  }
}

export function fromAnnouncements(
  details: readonly EIP6963ProviderDetail[],
  injected: EIP1193Provider | undefined,
): Wallet[] {
  const wallets: Wallet[] = details.map((d) => ({
    id: d.info.uuid,
    name: d.info.name,
    icon: d.info.icon,
    provider: d.provider as unknown as EIP1193Provider,
  }));
  // The injected provider is usually one of the announced ones; only list it when nothing announced.
  if (wallets.length === 0 && injected) {
    wallets.push({ id: INJECTED_WALLET_ID, name: 'Browser wallet', provider: injected });
  }
  return wallets;
}

/** Watches for wallets; calls `onChange` with the current list now and whenever it changes. */
export function watchWallets(onChange: (wallets: Wallet[]) => void): () => void {
  const store = createStore();
  const unsubscribe = store.subscribe((details) => onChange(fromAnnouncements(details, window.ethereum)), {
    emitImmediately: true,
  });
  return () => {
    unsubscribe();
    store.destroy();
  };
}

import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import { rememberSignIn } from './session';
import { signIn, SignInError, type SignInState } from './siwe';
import type { Wallet } from './wallets';

/** Signs in with the chosen wallet; `state` says what is happening for the landing page. */
export function useSignIn(initial: SignInState = { kind: 'idle' }) {
  const api = useApi();
  const queryClient = useQueryClient();
  const [state, setState] = useState<SignInState>(initial);
  const mutation = useMutation({
    mutationFn: (wallet: Wallet) =>
      signIn(wallet.provider, api, { domain: window.location.host, uri: window.location.origin }, setState),
    onSuccess: (session) => {
      rememberSignIn(session.address);
      setState({ kind: 'idle' });
      queryClient.setQueryData(queryKeys.me, { address: session.address });
    },
    onError: (e) => {
      setState(e instanceof SignInError ? e.state : { kind: 'failed', message: (e as Error).message });
    },
  });
  return { state, setState, signIn: mutation.mutate, busy: mutation.isPending };
}

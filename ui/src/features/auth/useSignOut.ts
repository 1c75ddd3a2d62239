import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import { forgetSignIn } from './session';

export function useSignOut() {
  const api = useApi();
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: () => api.logout().catch(() => undefined),
    onSettled: () => {
      forgetSignIn();
      queryClient.clear();
      queryClient.setQueryData(queryKeys.me, null);
    },
  });
}

import { useQuery } from '@tanstack/react-query';
import { ApiError } from '../../api/client';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { Me } from '../../api/types';

/** The signed-in user, or null when there is no (valid) session. */
export function useMe() {
  const api = useApi();
  return useQuery<Me | null, ApiError>({
    queryKey: queryKeys.me,
    queryFn: async () => {
      try {
        return await api.me();
      } catch (e) {
        if (e instanceof ApiError && e.isUnauthorized) return null;
        throw e;
      }
    },
    staleTime: Infinity,
    retry: false,
  });
}

import { useQuery } from '@tanstack/react-query';
import type { ApiError } from '../../api/client';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { NetworkOffer } from '../../api/types';

/** What the backend can start now (GET /api/v1/networks). */
export function useNetworks(enabled = true) {
  const api = useApi();
  return useQuery<NetworkOffer[], ApiError>({
    queryKey: queryKeys.networks,
    queryFn: () => api.networks(),
    enabled,
    staleTime: 60_000,
  });
}

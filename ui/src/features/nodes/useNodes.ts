import { useQuery } from '@tanstack/react-query';
import type { ApiError } from '../../api/client';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { Node } from '../../api/types';

/** The caller's nodes, newest first. Kept fresh by the event stream (useNodeEvents), not by polling. */
export function useNodes(enabled = true) {
  const api = useApi();
  return useQuery<Node[], ApiError>({
    queryKey: queryKeys.nodes,
    queryFn: () => api.nodes(),
    enabled,
    staleTime: Infinity,
  });
}

import { useMutation, useQueryClient } from '@tanstack/react-query';
import type { ApiError } from '../../api/client';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { Node } from '../../api/types';

export function useStopNode() {
  const api = useApi();
  const queryClient = useQueryClient();
  return useMutation<Node, ApiError, string>({
    mutationFn: (id) => api.stopNode(id),
    onSuccess: (node) => {
      queryClient.setQueryData<Node[]>(queryKeys.nodes, (nodes = []) => nodes.map((n) => (n.id === node.id ? node : n)));
    },
  });
}

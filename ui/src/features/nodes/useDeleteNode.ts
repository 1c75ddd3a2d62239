import { useMutation, useQueryClient } from '@tanstack/react-query';
import type { ApiError } from '../../api/client';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { Node } from '../../api/types';

export function useDeleteNode() {
  const api = useApi();
  const queryClient = useQueryClient();
  return useMutation<void, ApiError, string>({
    mutationFn: (id) => api.deleteNode(id),
    onSuccess: (_, id) => {
      queryClient.setQueryData<Node[]>(queryKeys.nodes, (nodes = []) => nodes.filter((n) => n.id !== id));
    },
  });
}

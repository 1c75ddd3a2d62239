import { useMutation, useQueryClient } from '@tanstack/react-query';
import type { ApiError } from '../../api/client';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { CreateNodeRequest, Node } from '../../api/types';

export function useCreateNode() {
  const api = useApi();
  const queryClient = useQueryClient();
  return useMutation<Node, ApiError, CreateNodeRequest>({
    mutationFn: (request) => api.createNode(request),
    onSuccess: (node) => {
      queryClient.setQueryData<Node[]>(queryKeys.nodes, (nodes = []) => [node, ...nodes.filter((n) => n.id !== node.id)]);
    },
  });
}

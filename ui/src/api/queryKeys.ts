// One place for TanStack Query keys, so invalidation and cache updates cannot drift apart.
export const queryKeys = {
  me: ['me'] as const,
  networks: ['networks'] as const,
  nodes: ['nodes'] as const,
};

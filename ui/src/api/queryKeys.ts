// One place for TanStack Query keys, so invalidation and cache updates cannot drift apart.
export const queryKeys = {
  me: ['me'] as const,
  networks: ['networks'] as const,
  nodes: ['nodes'] as const,
  usage: (id: string, window: string) => ['usage', id, window] as const,
  logs: (id: string) => ['logs', id] as const,
  alerts: (id: string) => ['alerts', id] as const,
  webhook: ['webhook'] as const,
  deliveries: ['webhook', 'deliveries'] as const,
};

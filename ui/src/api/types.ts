// Shapes of the Erigolem REST API (docs/server.md, /api/v1/openapi.json).

export type NodeState = 'pending' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface SyncStage {
  name: string;
  block: number;
}

export interface SyncProgress {
  starting_block: number;
  current_block: number;
  highest_block: number;
  stages?: SyncStage[];
}

export interface Credentials {
  user: string;
  password: string;
}

export interface Node {
  id: string;
  name: string;
  network: string;
  engine: string | null;
  mode: string;
  prune: string;
  state: NodeState;
  reason: string | null;
  url: string | null;
  ws_url: string | null;
  auth: Credentials | null;
  block: number | null;
  sync: SyncProgress | null;
  /** Unix milliseconds. */
  created_at: number;
  updated_at: number;
  stopped_at: number | null;
}

/** What a backend can start; the golem backend adds the market's price range. */
export interface NetworkOffer {
  network: string;
  modes: string[];
  engine: string;
  price?: { min_per_hour: number; max_per_hour: number; currency: string };
}

export interface CreateNodeRequest {
  name?: string;
  network: string;
  mode?: string;
  prune?: string;
  max_price_per_hour?: number;
}

export interface NonceResponse {
  nonce: string;
  expires_at: number;
}

export interface LoginResponse {
  address: string;
  token: string;
  expires_at: number;
}

export interface Me {
  address: string;
}

/** `event: transition` on /api/v1/events. */
export interface TransitionEvent {
  id: number;
  node_id: string;
  state: NodeState;
  reason: string | null;
  at: number;
}

/** `event: progress` on /api/v1/events. */
export interface ProgressEvent {
  node_id: string;
  block: number | null;
  sync: SyncProgress | null;
  at: number;
}

export const ACTIVE_STATES: readonly NodeState[] = ['pending', 'starting', 'running', 'stopping'];
export const PRUNE_MODES = ['full', 'archive', 'minimal'] as const;

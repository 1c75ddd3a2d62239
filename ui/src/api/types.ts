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

/** Price and spend of a node on Golem (golem backend only). */
export interface Billing {
  provider_id: string;
  provider_name: string | null;
  agreement_id: string;
  /** GLM per hour. */
  price_per_hour: number;
  start_fee: number;
  /** GLM paid so far. */
  spent: number;
  budget: number;
  /** Seconds the rest of the budget pays for, while the node runs. */
  runway_secs: number | null;
  settled: boolean;
  /** The last payment request above the agreed price, refused, and why. */
  refused: string | null;
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
  billing?: Billing | null;
  /** Set while a running node's status checks fail (it is failed after three), with why. */
  health?: string | null;
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
  price?: { min_per_hour: number; max_per_hour: number; currency: string; providers: number };
}

export interface CreateNodeRequest {
  name?: string;
  network: string;
  mode?: string;
  prune?: string;
  /** Golem: GLM to set aside for the node (capped at the server's budget). */
  budget?: number;
  /** Golem: the highest price per hour to accept. */
  max_price_per_hour?: number;
  /** Replace the node with a new one (same name and network) if it fails while running. */
  auto_replace?: boolean;
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
  health?: string | null;
  at: number;
}

export const ACTIVE_STATES: readonly NodeState[] = ['pending', 'starting', 'running', 'stopping'];
export const PRUNE_MODES = ['full', 'archive', 'minimal'] as const;

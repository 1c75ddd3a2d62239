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

/** The JSON-RPC limits a node enforces (`null`: none in its Erigon release). */
export interface RpcLimits {
  /** Most blocks one eth_getLogs / trace_filter range may span. */
  block_range: number | null;
  /** Most logs one query returns. */
  logs_max_results: number | null;
  /** Most requests in one JSON-RPC batch. */
  batch_limit: number | null;
  /** Requests of one batch served in parallel. */
  batch_concurrency: number | null;
  /** Requests served at once (null: Erigon's default). */
  max_concurrency: number | null;
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
  /** The engine's release the node runs, e.g. Erigon `3.6.1`. */
  engine_version?: string | null;
  limits?: RpcLimits | null;
  /** What the provider's runtime warns about (e.g. an Erigon newer than it knows). */
  warnings?: string[];
  peers?: number | null;
  /** Age of the node's head block in seconds. */
  behind_seconds?: number | null;
  /** Blocks between the node's head and the network's, while it syncs. */
  behind_blocks?: number | null;
  /** More than the server's thresholds behind. */
  lagging?: boolean;
  block: number | null;
  sync: SyncProgress | null;
  /** Unix milliseconds. */
  created_at: number;
  updated_at: number;
  stopped_at: number | null;
}

/** Disk one node takes in one prune mode: Erigon's published figure (`at_most`: an upper bound). */
export interface DiskEstimate {
  prune: string;
  bytes: number;
  basis: 'measured' | 'at_most';
  source: string;
}

/** What a backend can start; the golem backend adds the market's price range. */
export interface NetworkOffer {
  network: string;
  modes: string[];
  engine: string;
  price?: { min_per_hour: number; max_per_hour: number; currency: string; providers: number };
  /** Prune modes a node of this network can have (none for the dev chain). */
  prunes?: string[];
  engine_version?: string | null;
  disk?: DiskEstimate[];
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
  behind_seconds?: number | null;
  behind_blocks?: number | null;
  peers?: number | null;
  lagging?: boolean;
  at: number;
}

export const ACTIVE_STATES: readonly NodeState[] = ['pending', 'starting', 'running', 'stopping'];
export const PRUNE_MODES = ['full', 'archive', 'minimal', 'blocks'] as const;

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

/** An amount of GLM as the API sends it: a decimal string (`"0.25"`), never a float. */
export type Glm = string;

/** Price and spend of a node on Golem (golem backend only). */
export interface Billing {
  provider_id: string;
  /** What the provider calls itself: shown, never trusted. */
  provider_name: string | null;
  agreement_id: string;
  /** GLM per hour. */
  price_per_hour: Glm;
  start_fee: Glm;
  price_per_request: Glm | null;
  /** GLM paid on this node's agreements. */
  spent: Glm;
  /** GLM paid on the node and its replacements: what counts against the budget. */
  budget_spent: Glm;
  budget: Glm;
  /** The most its agreement may be paid now (start fee + price × time served + slack). */
  payable: Glm;
  served_secs: number;
  /** Seconds the rest of the budget pays for, while the node runs. */
  runway_secs: number | null;
  settled: boolean;
  /** The last payment request refused (not paid), and why. */
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
  /** The backend still holds something for the node (an agreement, a runtime): Stop ends it. */
  held?: boolean;
  /** The failed node this one replaced, and the node that replaced this one. */
  replaces?: string | null;
  replaced_by?: string | null;
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
  price?: { min_per_hour: Glm; max_per_hour: Glm; min_start_fee: Glm; currency: string; providers: number };
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
  /** Golem: GLM for the node and its replacements (at most the server's budget). */
  budget?: Glm;
  /** Golem: the highest price per hour to accept. */
  max_price_per_hour?: Glm;
  /** Golem: the highest start fee to accept. */
  max_start_fee?: Glm;
  /** Golem: how many hours it will run (offers are compared on start fee + price × hours). */
  expected_hours?: number;
  /** Replace the node with a new one (same name and network) if it fails while running. */
  auto_replace?: boolean;
}

/** `GET /api/v1/billing`: what nodes may cost here, and what you spent this period. */
export interface BillingTerms {
  pays: boolean;
  currency: string;
  budget: Glm;
  max_price_per_hour: Glm | null;
  max_start_fee: Glm | null;
  max_price_per_request: Glm | null;
  expected_hours: number;
  expected_requests_per_hour: number;
  payment_slack: Glm;
  max_replacements: number;
  spend_period_secs: number;
  period_started_at: number;
  you: { spent: Glm | null; cap: Glm | null; reached: boolean };
  server: { spent: Glm | null; cap: Glm | null; reached: boolean };
}

/** What a GLM amount typed into a form must look like (the server parses it the same way). */
export const GLM_PATTERN = '[0-9]{1,12}(\\.[0-9]{1,18})?';

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

// Typed client for the Erigolem REST API. Every failure becomes an ApiError carrying the server's
// stable `error.code`, so the UI can tell "session expired" from "network down" from "bad input".
import type {
  AlertRules,
  CreateNodeRequest,
  LoginResponse,
  Me,
  NetworkOffer,
  Node,
  NodeAlerts,
  NodeLogs,
  NodeUsage,
  NonceResponse,
  UsageWindow,
  Webhook,
  WebhookDelivery,
} from './types';

export const API_BASE = '/api/v1';

/** Codes the client itself produces (the server's are in docs/server.md). */
export const CLIENT_ERROR = {
  network: 'network_error',
  badResponse: 'bad_response',
} as const;

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }

  get isUnauthorized(): boolean {
    return this.status === 401;
  }
}

type Fetch = typeof fetch;

export class ApiClient {
  private readonly base: string;
  private readonly fetchImpl: Fetch;

  constructor(base: string = API_BASE, fetchImpl: Fetch = (...args) => fetch(...args)) {
    this.base = base;
    this.fetchImpl = fetchImpl;
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.base}${path}`, {
        method,
        credentials: 'same-origin',
        headers: body === undefined ? { Accept: 'application/json' } : { Accept: 'application/json', 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, CLIENT_ERROR.network, `cannot reach the server: ${(e as Error).message}`);
    }
    if (response.status === 204) {
      return undefined as T;
    }
    let payload: unknown;
    try {
      payload = await response.json();
    } catch {
      throw new ApiError(response.status, CLIENT_ERROR.badResponse, `the server answered ${response.status} without JSON`);
    }
    if (!response.ok) {
      const error = (payload as { error?: { code?: string; message?: string } }).error;
      throw new ApiError(
        response.status,
        error?.code ?? CLIENT_ERROR.badResponse,
        error?.message ?? `the server answered ${response.status}`,
      );
    }
    return payload as T;
  }

  nonce(): Promise<NonceResponse> {
    return this.request('GET', '/auth/nonce');
  }

  login(message: string, signature: string): Promise<LoginResponse> {
    return this.request('POST', '/auth/login', { message, signature });
  }

  logout(): Promise<void> {
    return this.request('POST', '/auth/logout');
  }

  me(): Promise<Me> {
    return this.request('GET', '/me');
  }

  networks(): Promise<NetworkOffer[]> {
    return this.request('GET', '/networks');
  }

  nodes(): Promise<Node[]> {
    return this.request('GET', '/nodes');
  }

  createNode(request: CreateNodeRequest): Promise<Node> {
    return this.request('POST', '/nodes', request);
  }

  usage(id: string, window: UsageWindow): Promise<NodeUsage> {
    return this.request('GET', `/nodes/${encodeURIComponent(id)}/usage?window=${window}`);
  }

  logs(id: string, lines: number): Promise<NodeLogs> {
    return this.request('GET', `/nodes/${encodeURIComponent(id)}/logs?lines=${lines}`);
  }

  alerts(id: string): Promise<NodeAlerts> {
    return this.request('GET', `/nodes/${encodeURIComponent(id)}/alerts`);
  }

  setAlertRules(id: string, rules: AlertRules): Promise<NodeAlerts> {
    return this.request('PUT', `/nodes/${encodeURIComponent(id)}/alerts`, rules);
  }

  webhook(): Promise<Webhook> {
    return this.request('GET', '/me/webhook');
  }

  setWebhook(url: string, rotateSecret: boolean): Promise<Webhook> {
    return this.request('PUT', '/me/webhook', { url, rotate_secret: rotateSecret });
  }

  deleteWebhook(): Promise<void> {
    return this.request('DELETE', '/me/webhook');
  }

  testWebhook(): Promise<WebhookDelivery> {
    return this.request('POST', '/me/webhook/test');
  }

  deliveries(): Promise<WebhookDelivery[]> {
    return this.request('GET', '/me/webhook/deliveries');
  }

  stopNode(id: string): Promise<Node> {
    return this.request('POST', `/nodes/${encodeURIComponent(id)}/stop`);
  }

  deleteNode(id: string): Promise<void> {
    return this.request('DELETE', `/nodes/${encodeURIComponent(id)}`);
  }

  /** The URL of the server-sent event stream (transitions and progress of the caller's nodes). */
  eventsUrl(): string {
    return `${this.base}/events`;
  }
}

export const api = new ApiClient();

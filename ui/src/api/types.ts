// Shapes of the Erigolem REST API: generated from the server's OpenAPI document
// (docs/openapi.json → schema.ts by scripts/api-types.sh), never written by hand here.
import type { components } from './schema';

type Schemas = components['schemas'];

export type NodeState = Schemas['NodeState'];
export type SyncStage = Schemas['SyncStage'];
export type SyncProgress = Schemas['SyncProgress'];
export type Credentials = Schemas['Credentials'];
/** An amount of GLM as the API sends it: a decimal string (`"0.25"`), never a float. */
export type Glm = Schemas['Glm'];
export type Billing = Schemas['Billing'];
export type RpcLimits = Schemas['RpcLimits'];
export type Node = Schemas['Node'];
export type DiskEstimate = Schemas['DiskEstimate'];
export type NetworkOffer = Schemas['NetworkOffer'];
export type Network = Schemas['Network'];
export type Mode = Schemas['Mode'];
export type Prune = Schemas['Prune'];
export type CreateNodeRequest = Schemas['CreateNode'];
export type BillingTerms = Schemas['BillingTerms'];
export type NonceResponse = Schemas['NonceResponse'];
export type LoginResponse = Schemas['LoginResponse'];
export type Me = Schemas['MeResponse'];
export type ErrorCode = Schemas['ErrorCode'];
/** `event: transition` on /api/v1/events. */
export type TransitionEvent = Schemas['TransitionEvent'];
/** `event: progress` on /api/v1/events. */
export type ProgressEvent = Schemas['ProgressEvent'];
export type UsageDelta = Schemas['UsageDelta'];
export type UsageWindow = Schemas['UsageWindow'];
export type NodeUsage = Schemas['NodeUsage'];
export type UsagePoint = Schemas['UsagePoint'];
export type NodeLogs = Schemas['NodeLogs'];
export type Alert = Schemas['Alert'];
export type AlertType = Schemas['AlertType'];
export type AlertRules = Schemas['AlertRules'];
export type NodeAlerts = Schemas['NodeAlerts'];
export type Webhook = Schemas['Webhook'];
export type WebhookDelivery = Schemas['WebhookDelivery'];

/** What a GLM amount typed into a form must look like (the server parses it the same way). */
export const GLM_PATTERN = '[0-9]{1,12}(\\.[0-9]{1,18})?';

export const ACTIVE_STATES: readonly NodeState[] = ['pending', 'starting', 'running', 'stopping'];
export { pruneValues as PRUNE_MODES, usageWindowValues as USAGE_WINDOWS } from './schema';

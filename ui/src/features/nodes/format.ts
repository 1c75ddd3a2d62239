import type { Glm, Node, NodeState } from '../../api/types';

/** Shown next to the state badge; the colour comes from the CSS class `state-<state>`. */
export const STATE_LABEL: Record<NodeState, string> = {
  pending: 'Pending',
  starting: 'Starting',
  running: 'Running',
  stopping: 'Stopping',
  stopped: 'Stopped',
  failed: 'Failed',
};

export function formatTime(ms: number, locale?: string): string {
  return new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(ms));
}

export function formatBlock(block: number, locale?: string): string {
  return new Intl.NumberFormat(locale).format(block);
}

export interface SyncView {
  /** 0..1, or null when unknown. */
  fraction: number | null;
  current: number | null;
  highest: number | null;
  stage: string | null;
  synced: boolean;
}

/** What the progress bar shows: Erigon's sync (current/highest, stage) or, once synced, the head. */
export function syncView(node: Pick<Node, 'block' | 'sync' | 'state'>): SyncView {
  const sync = node.sync;
  if (sync && sync.highest_block > 0) {
    const span = sync.highest_block - sync.starting_block;
    const fraction = span > 0 ? (sync.current_block - sync.starting_block) / span : sync.current_block >= sync.highest_block ? 1 : 0;
    const stage = sync.stages?.find((s) => s.block < sync.highest_block)?.name ?? null;
    return {
      fraction: Math.max(0, Math.min(1, fraction)),
      current: sync.current_block,
      highest: sync.highest_block,
      stage,
      synced: false,
    };
  }
  if (node.state === 'running' && node.block !== null) {
    return { fraction: 1, current: node.block, highest: node.block, stage: null, synced: true };
  }
  return { fraction: null, current: node.block, highest: null, stage: null, synced: false };
}

/** A name like `dev-amber-fox-42`: readable, unlikely to repeat. */
const WORDS = ['amber', 'brisk', 'cedar', 'delta', 'ember', 'frost', 'gale', 'harbor', 'iris', 'jade', 'kite', 'lumen', 'maple', 'nova', 'onyx', 'pine'];
export function defaultNodeName(network: string, random: () => number = Math.random): string {
  const word = WORDS[Math.floor(random() * WORDS.length)];
  const n = Math.floor(random() * 90) + 10;
  return `${network}-${word}-${n}`;
}

/**
 * A GLM amount (the API's decimal string) for people: 4 significant digits. The string goes to
 * `Intl.NumberFormat` as it is (it formats decimal strings exactly), never through a float.
 */
export function formatGlm(amount: Glm, locale?: string): string {
  // ES2023's Intl.NumberFormat takes decimal strings; TypeScript's ES2022 lib types only numbers.
  const format = new Intl.NumberFormat(locale, { maximumSignificantDigits: 4 }).format as unknown as (value: string) => string;
  return format(amount);
}

/** Whether a GLM amount is zero. */
export function isZeroGlm(amount: Glm): boolean {
  return /^0*(\.0*)?$/.test(amount);
}

/** `2 h 5 min`, `45 min`, `30 s`. */
export function formatDuration(secs: number): string {
  if (secs >= 3600) return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
  if (secs >= 60) return `${Math.floor(secs / 60)} min`;
  return `${Math.floor(secs)} s`;
}

/** `419 GB`, `2.03 TB`: decimal units, as Erigon publishes its figures. */
export function formatBytes(bytes: number, locale?: string): string {
  const units: [number, string][] = [
    [1e12, 'TB'],
    [1e9, 'GB'],
    [1e6, 'MB'],
  ];
  for (const [size, unit] of units) {
    if (bytes >= size) return `${new Intl.NumberFormat(locale, { maximumSignificantDigits: 3 }).format(bytes / size)} ${unit}`;
  }
  return `${bytes} B`;
}

/** How far behind a node is: `12 s`, `3 min`, `2 h`, with the block gap when it is known. */
export function lagText(node: Pick<Node, 'behind_seconds' | 'behind_blocks'>): string | null {
  const secs = node.behind_seconds;
  const age = secs == null ? null : secs < 120 ? `${secs} s` : secs < 7200 ? `${Math.floor(secs / 60)} min` : `${Math.floor(secs / 3600)} h`;
  const blocks = node.behind_blocks ? `${formatBlock(node.behind_blocks)} blocks` : null;
  if (age && blocks) return `${age} behind (${blocks})`;
  if (age) return `${age} behind`;
  if (blocks) return `${blocks} behind`;
  return null;
}

/** One line for a node's RPC limits: `eth_getLogs ranges ≤ 10,000 blocks · ≤ 100,000 logs · batches ≤ 1,000`. */
export function limitsText(limits: NonNullable<Node['limits']>): string {
  const n = (v: number | null, what: string) => (v === null ? `${what}: no limit` : `${what} ≤ ${formatBlock(v)}`);
  const parts = [n(limits.block_range, 'eth_getLogs blocks'), n(limits.logs_max_results, 'logs'), n(limits.batch_limit, 'batch')];
  if (limits.max_concurrency !== null) parts.push(`concurrency ≤ ${formatBlock(limits.max_concurrency)}`);
  return parts.join(' · ');
}

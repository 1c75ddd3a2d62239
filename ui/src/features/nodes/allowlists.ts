// The endpoint allowlists of the start form (methods, origins, client addresses): parsed from
// what was typed and checked the way the server checks them (crates/primitives/src/access.rs,
// crates/server/src/access.rs), so a mistake is shown at the field. The server stays the judge:
// whatever it refuses still comes back as an error.
import type { Node } from '../../api/types';

/** Most entries in one list, and the longest entry (the server's MAX_ALLOWLIST and MAX_ENTRY_CHARS). */
export const MAX_ENTRIES = 100;
export const MAX_ENTRY_CHARS = 300;

export type AllowlistKind = 'methods' | 'allow_origins' | 'allow_ips';

const METHOD = /^[A-Za-z0-9_]{1,128}$/;
const ORIGIN = /^(https?):\/\/(\*\.)?([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:(\d{1,5}))?$/i;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function isIpv6(s: string): boolean {
  if (!/^[0-9A-Fa-f:.]+$/.test(s) || !s.includes(':')) return false;
  const halves = s.split('::');
  if (halves.length > 2) return false;
  const groups = halves.flatMap((h) => (h === '' ? [] : h.split(':')));
  const last = groups[groups.length - 1];
  const v4Tail = last !== undefined && last.includes('.');
  if (v4Tail && !IPV4.test(last)) return false;
  const hex = v4Tail ? groups.slice(0, -1) : groups;
  if (!hex.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  const count = hex.length + (v4Tail ? 2 : 0);
  return halves.length === 2 ? count < 8 : count === 8;
}

export function validMethod(s: string): boolean {
  const name = s.endsWith('*') ? s.slice(0, -1) : s;
  return METHOD.test(name) && (!s.endsWith('*') || name.endsWith('_'));
}

export function validOrigin(s: string): boolean {
  const m = ORIGIN.exec(s);
  if (!m) return false;
  const port = m[6];
  return port === undefined || Number(port) <= 65535;
}

export function validIp(s: string): boolean {
  const [addr, prefix, ...more] = s.split('/');
  if (more.length || addr === undefined) return false;
  const v4 = IPV4.test(addr);
  if (!v4 && !isIpv6(addr)) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (v4 ? 32 : 128);
}

const CHECK: Record<AllowlistKind, { valid: (s: string) => boolean; expected: string }> = {
  methods: { valid: validMethod, expected: 'a method name (eth_call) or a namespace (eth_*)' },
  allow_origins: { valid: validOrigin, expected: 'scheme://host[:port], e.g. https://app.example.org or https://*.example.org' },
  allow_ips: { valid: validIp, expected: 'an address (203.0.113.7) or a CIDR block (10.0.0.0/8)' },
};

/** Entries separated by commas, spaces or new lines; an empty text is "any" (`undefined`). */
export function parseAllowlist(kind: AllowlistKind, text: string): { list?: string[]; error?: string } {
  const entries = text.split(/[\s,]+/).filter((e) => e !== '');
  if (entries.length === 0) return {};
  if (entries.length > MAX_ENTRIES) return { error: `${entries.length} entries; at most ${MAX_ENTRIES}` };
  const { valid, expected } = CHECK[kind];
  for (const e of entries) {
    if (e.length > MAX_ENTRY_CHARS) return { error: `an entry has more than ${MAX_ENTRY_CHARS} characters` };
    if (!valid(e)) return { error: `${JSON.stringify(e)} is not ${expected}` };
  }
  return { list: [...new Set(entries)] };
}

/** What the card says of a list: its entries, or what absence means. */
export function allowlistText(list: string[] | null | undefined, any: string): string {
  return list && list.length ? list.join(', ') : any;
}

/** `100 req/s (burst 200) · 16 at once · body ≤ 1 MiB · batch ≤ 100 · 16 WebSockets`. */
export function endpointLimitsText(l: NonNullable<Node['endpoint_limits']>): string {
  const body = l.max_body_bytes >= 1 << 20 && l.max_body_bytes % (1 << 20) === 0 ? `${l.max_body_bytes >> 20} MiB` : `${l.max_body_bytes.toLocaleString('en-US')} bytes`;
  const n = (v: number) => v.toLocaleString('en-US');
  return `${n(l.requests_per_sec)} req/s (burst ${n(l.burst)}) · ${n(l.max_concurrent)} at once · body ≤ ${body} · batch ≤ ${n(l.max_batch)} · ${n(l.max_websockets)} WebSockets`;
}

import { describe, expect, it } from 'vitest';
import { endpointLimitsText, parseAllowlist } from '../src/features/nodes/allowlists';

// The same entries the server's tests accept and refuse (crates/primitives/src/access.rs,
// crates/server/src/access.rs).
describe('allowlists typed into the start form', () => {
  it('accepts what the endpoint guard enforces, deduplicated', () => {
    expect(parseAllowlist('methods', ' eth_blockNumber, eth_*\nnet_version eth_blockNumber')).toEqual({ list: ['eth_blockNumber', 'eth_*', 'net_version'] });
    expect(parseAllowlist('allow_origins', 'https://app.example.org http://localhost:3000 https://*.example.org http://[::1]:8080')).toEqual({
      list: ['https://app.example.org', 'http://localhost:3000', 'https://*.example.org', 'http://[::1]:8080'],
    });
    expect(parseAllowlist('allow_ips', '203.0.113.7, 10.0.0.0/8, 2001:db8::/32, ::1, ::ffff:10.0.0.1')).toEqual({ list: ['203.0.113.7', '10.0.0.0/8', '2001:db8::/32', '::1', '::ffff:10.0.0.1'] });
    expect(parseAllowlist('methods', '  ')).toEqual({});
  });

  it('refuses what the server refuses, naming the entry', () => {
    const bad: [Parameters<typeof parseAllowlist>[0], string][] = [
      ['methods', '*'],
      ['methods', 'eth*'],
      ['methods', 'eth.call'],
      ['methods', 'a"b'],
      ['methods', 'eth_*_x'],
      ['methods', 'a'.repeat(129)],
      ['allow_origins', 'example.org'],
      ['allow_origins', 'ftp://x'],
      ['allow_origins', 'https://'],
      ['allow_origins', 'https://a*.b'],
      ['allow_origins', 'https://x:99999'],
      ['allow_origins', 'https://a.org/path'],
      ['allow_origins', 'javascript:alert(1)'],
      ['allow_ips', '10.0.0.0/33'],
      ['allow_ips', '10.0.0/8'],
      ['allow_ips', 'x'],
      ['allow_ips', '10.0.0.1/'],
      ['allow_ips', '10.0.0.1/+8'],
      ['allow_ips', '::/129'],
      ['allow_ips', '256.1.1.1'],
      ['allow_ips', '1:2:3:4:5:6:7:8:9'],
    ];
    for (const [kind, entry] of bad) {
      const { list, error } = parseAllowlist(kind, entry);
      expect(list, `${kind} ${entry}`).toBeUndefined();
      expect(error, `${kind} ${entry}`).toContain(entry.length > 128 ? '' : JSON.stringify(entry));
    }
    const many = Array.from({ length: 101 }, (_, i) => `m_${i}`).join(',');
    expect(parseAllowlist('methods', many).error).toBe('101 entries; at most 100');
    expect(parseAllowlist('methods', 'a'.repeat(301)).error).toBe('an entry has more than 300 characters');
  });

  it('shows the endpoint limits in words', () => {
    expect(endpointLimitsText({ requests_per_sec: 100, burst: 200, max_concurrent: 16, max_body_bytes: 1 << 20, max_batch: 100, max_websockets: 16 })).toBe(
      '100 req/s (burst 200) · 16 at once · body ≤ 1 MiB · batch ≤ 100 · 16 WebSockets',
    );
  });
});

// What a running node served (requests by method, errors, latency over the last hour) and its
// last log lines, fetched only while the section is open.
import { useQuery } from '@tanstack/react-query';
import { useState } from 'react';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { NodeUsage } from '../../api/types';

const LOG_LINES = 100;

function latency(us: number | null): string {
  if (us === null) return '—';
  return us >= 1000 ? `${(us / 1000).toLocaleString('en-US')} ms` : `${us} µs`;
}

export function UsageTable({ usage }: { usage: NodeUsage }) {
  const methods = Object.entries(usage.totals.methods).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return (
    <table data-testid="usage-table">
      <caption>Requests in the last {usage.window}, by method</caption>
      <thead>
        <tr>
          <th scope="col">Method</th>
          <th scope="col">Requests</th>
        </tr>
      </thead>
      <tbody>
        {methods.map(([method, count]) => (
          <tr key={method}>
            <th scope="row">{method}</th>
            <td>{count.toLocaleString('en-US')}</td>
          </tr>
        ))}
      </tbody>
      <tfoot>
        <tr>
          <th scope="row">Total</th>
          <td data-testid="usage-total">{usage.totals.requests.toLocaleString('en-US')}</td>
        </tr>
        <tr>
          <th scope="row">Errors</th>
          <td data-testid="usage-errors">{usage.totals.errors.toLocaleString('en-US')}</td>
        </tr>
        <tr>
          <th scope="row">Latency p50 / p99</th>
          <td>
            {latency(usage.totals.latency_p50_us)} / {latency(usage.totals.latency_p99_us)}
          </td>
        </tr>
      </tfoot>
    </table>
  );
}

export function Insights({ id }: { id: string }) {
  const api = useApi();
  const [showLogs, setShowLogs] = useState(false);
  const usage = useQuery({ queryKey: queryKeys.usage(id, '1h'), queryFn: () => api.usage(id, '1h'), refetchInterval: 10_000 });
  const logs = useQuery({ queryKey: queryKeys.logs(id), queryFn: () => api.logs(id, LOG_LINES), enabled: showLogs, refetchInterval: showLogs ? 5_000 : false });
  return (
    <>
      {usage.data ? <UsageTable usage={usage.data} /> : usage.isError ? <p role="alert">{usage.error.message}</p> : <p className="muted">Loading usage…</p>}
      <button type="button" className="button" aria-expanded={showLogs} onClick={() => setShowLogs((v) => !v)}>
        {showLogs ? 'Hide logs' : 'Show logs'}
      </button>
      {showLogs && (logs.data ? <pre className="logs" data-testid="node-logs" tabIndex={0} aria-label="Last log lines">{logs.data.lines.join('\n')}</pre> : logs.isError ? <p role="alert">{logs.error.message}</p> : <p className="muted">Loading logs…</p>)}
    </>
  );
}

export function NodeInsights({ id }: { id: string }) {
  const [open, setOpen] = useState(false);
  return (
    <details className="node-insights" onToggle={(e) => setOpen((e.currentTarget as HTMLDetailsElement).open)}>
      <summary>Usage and logs</summary>
      {open && <Insights id={id} />}
    </details>
  );
}

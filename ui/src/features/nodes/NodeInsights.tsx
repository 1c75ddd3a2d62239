// What a running node served over a window (charts of requests by method, errors, latency and
// height, each with a table) and its last log lines, fetched only while the section is open. The
// chart code is its own chunk, loaded the first time the section opens.
import { useQuery } from '@tanstack/react-query';
import { lazy, Suspense, useState } from 'react';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import { USAGE_WINDOWS, type NodeUsage, type UsageWindow } from '../../api/types';

const UsageCharts = lazy(() => import('./UsageCharts'));

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

function WindowPicker({ value, onChange }: { value: UsageWindow; onChange: (w: UsageWindow) => void }) {
  return (
    <div className="window-picker" role="group" aria-label="Usage window">
      {USAGE_WINDOWS.map((w) => (
        <button key={w} type="button" className={w === value ? 'tab active' : 'tab'} aria-pressed={w === value} onClick={() => onChange(w)}>
          {w}
        </button>
      ))}
    </div>
  );
}

export function Insights({ id }: { id: string }) {
  const api = useApi();
  const [showLogs, setShowLogs] = useState(false);
  const [usageWindow, setUsageWindow] = useState<UsageWindow>('1h');
  const usage = useQuery({ queryKey: queryKeys.usage(id, usageWindow), queryFn: () => api.usage(id, usageWindow), refetchInterval: 10_000, placeholderData: (previous) => previous });
  const logs = useQuery({ queryKey: queryKeys.logs(id), queryFn: () => api.logs(id, LOG_LINES), enabled: showLogs, refetchInterval: showLogs ? 5_000 : false });
  return (
    <>
      <WindowPicker value={usageWindow} onChange={setUsageWindow} />
      {usage.data ? (
        <>
          <Suspense fallback={<p className="muted">Loading charts…</p>}>
            <UsageCharts usage={usage.data} />
          </Suspense>
          <UsageTable usage={usage.data} />
        </>
      ) : usage.isError ? (
        <p role="alert">{usage.error.message}</p>
      ) : (
        <p className="muted">Loading usage…</p>
      )}
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

// A node's alerts on its card: the active ones always in sight, and its rules (and recent
// alerts) in a section that is fetched only while open.
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState, type FormEvent } from 'react';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { Alert, AlertRules, AlertType, NodeAlerts } from '../../api/types';
import { formatTime } from './format';

export const ALERT_LABEL: Record<AlertType, string> = {
  lag_blocks: 'Behind in blocks',
  lag_seconds: 'Head too old',
  runway: 'Budget running out',
  failed: 'Failed',
  replaced: 'Replaced',
};

/** The node's active alerts, announced to screen readers as they appear. */
export function ActiveAlerts({ alerts }: { alerts: readonly Alert[] }) {
  if (alerts.length === 0) return null;
  return (
    <ul className="alerts" role="alert" aria-label="Active alerts" data-testid="node-alerts">
      {alerts.map((a) => (
        <li key={a.id} className="alert-active" data-testid="node-alert" data-kind={a.kind}>
          <strong>Alert · {ALERT_LABEL[a.kind]}:</strong> {a.message}{' '}
          <span className="muted">since {formatTime(a.fired_at)}</span>
        </li>
      ))}
    </ul>
  );
}

/** A threshold input's text as a rule: empty is off. */
function parseRule(text: string): number | null | 'bad' {
  const t = text.trim();
  if (t === '') return null;
  if (!/^[0-9]{1,12}$/.test(t)) return 'bad';
  return Number(t);
}

function RulesForm({ id, data }: { id: string; data: NodeAlerts }) {
  const api = useApi();
  const queryClient = useQueryClient();
  const r = data.rules;
  const [blocks, setBlocks] = useState(r.lag_blocks?.toString() ?? '');
  const [seconds, setSeconds] = useState(r.lag_seconds?.toString() ?? '');
  const [runway, setRunway] = useState(r.runway_secs?.toString() ?? '');
  const [failed, setFailed] = useState(r.failed);
  const [replaced, setReplaced] = useState(r.replaced);
  const [error, setError] = useState<string | null>(null);
  const save = useMutation({
    mutationFn: (rules: AlertRules) => api.setAlertRules(id, rules),
    onSuccess: (next) => {
      setError(null);
      queryClient.setQueryData(queryKeys.alerts(id), next);
    },
    onError: (e: Error) => setError(e.message),
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const [b, s, w] = [parseRule(blocks), parseRule(seconds), parseRule(runway)];
    if (b === 'bad' || s === 'bad' || w === 'bad') {
      setError('Thresholds are whole numbers (empty: off).');
      return;
    }
    save.mutate({ lag_blocks: b, lag_seconds: s, runway_secs: w, failed, replaced });
  };
  return (
    <form className="alert-rules" onSubmit={submit} aria-label="Alert rules">
      <label>
        More than <input inputMode="numeric" value={blocks} onChange={(e) => setBlocks(e.target.value)} aria-label="Blocks behind" size={6} /> blocks
        behind
      </label>
      <label>
        Head older than <input inputMode="numeric" value={seconds} onChange={(e) => setSeconds(e.target.value)} aria-label="Seconds behind" size={6} /> s
      </label>
      <label>
        Budget lasts less than <input inputMode="numeric" value={runway} onChange={(e) => setRunway(e.target.value)} aria-label="Runway seconds" size={8} /> s
      </label>
      <label>
        <input type="checkbox" checked={failed} onChange={(e) => setFailed(e.target.checked)} /> When it fails
      </label>
      <label>
        <input type="checkbox" checked={replaced} onChange={(e) => setReplaced(e.target.checked)} /> When it is replaced
      </label>
      <p className="muted">An empty threshold turns its alert off.</p>
      <button type="submit" className="button" disabled={save.isPending}>
        Save rules
      </button>
      {save.isSuccess && !error && <span role="status"> Saved.</span>}
      {error && (
        <p className="error-reason" role="alert" data-testid="alert-rules-error">
          {error}
        </p>
      )}
    </form>
  );
}

/** "Alerts" on the card: rules (editable) and the recent alerts. */
export function AlertSettings({ id }: { id: string }) {
  const api = useApi();
  const [open, setOpen] = useState(false);
  const alerts = useQuery({ queryKey: queryKeys.alerts(id), queryFn: () => api.alerts(id), enabled: open });
  return (
    <details className="node-alert-settings" onToggle={(e) => setOpen((e.target as HTMLDetailsElement).open)}>
      <summary>Alerts</summary>
      {alerts.isPending && open && <p className="muted">Loading…</p>}
      {alerts.isError && <p className="error-reason">{alerts.error.message}</p>}
      {alerts.data && (
        <>
          <RulesForm id={id} data={alerts.data} />
          {alerts.data.recent.length > 0 && (
            <table data-testid="alerts-recent">
              <caption>Recent alerts</caption>
              <thead>
                <tr>
                  <th scope="col">Alert</th>
                  <th scope="col">Fired</th>
                  <th scope="col">Resolved</th>
                </tr>
              </thead>
              <tbody>
                {alerts.data.recent.map((a) => (
                  <tr key={a.id}>
                    <th scope="row" title={a.message}>
                      {ALERT_LABEL[a.kind]}
                    </th>
                    <td>{formatTime(a.fired_at)}</td>
                    <td>{a.resolved_at === null ? 'active' : formatTime(a.resolved_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </details>
  );
}

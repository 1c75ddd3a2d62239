// The user's webhook, where alerts of all their nodes are delivered (signed): its URL, a new
// secret shown once, a test event and the delivery log. Fetched only while the section is open.
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState, type FormEvent } from 'react';
import { ApiError } from '../../api/client';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { Webhook } from '../../api/types';
import { CopyButton } from '../../components/CopyButton';
import { formatTime } from './format';

function Form({ current }: { current: Webhook | null }) {
  const api = useApi();
  const queryClient = useQueryClient();
  const [url, setUrl] = useState(current?.url ?? '');
  const [secret, setSecret] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const save = useMutation({
    mutationFn: ({ rotate }: { rotate: boolean }) => api.setWebhook(url, rotate),
    onSuccess: (hook) => {
      setError(null);
      setSecret(hook.secret ?? null);
      queryClient.setQueryData(queryKeys.webhook, hook);
    },
    onError: (e: Error) => setError(e.message),
  });
  const test = useMutation({
    mutationFn: () => api.testWebhook(),
    onSuccess: () => void queryClient.invalidateQueries({ queryKey: queryKeys.deliveries }),
    onError: (e: Error) => setError(e.message),
  });
  const remove = useMutation({
    mutationFn: () => api.deleteWebhook(),
    onSuccess: () => {
      setUrl('');
      setSecret(null);
      queryClient.setQueryData(queryKeys.webhook, null);
    },
    onError: (e: Error) => setError(e.message),
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    save.mutate({ rotate: false });
  };
  return (
    <form onSubmit={submit} aria-label="Webhook" className="alert-rules">
      <label>
        URL <input type="text" inputMode="url" autoComplete="url" value={url} onChange={(e) => setUrl(e.target.value)} placeholder="https://example.com/hooks/erigolem" size={40} required />
      </label>
      <div>
        <button type="submit" className="button" disabled={save.isPending}>
          Save webhook
        </button>{' '}
        {current && (
          <>
            <button type="button" className="button" onClick={() => save.mutate({ rotate: true })}>
              New secret
            </button>{' '}
            <button type="button" className="button" onClick={() => test.mutate()}>
              Send test event
            </button>{' '}
            <button type="button" className="button danger-outline" onClick={() => remove.mutate()}>
              Remove
            </button>
          </>
        )}
      </div>
      {secret && (
        <p role="status" data-testid="webhook-secret">
          Signing secret (shown once; verify <code>X-Erigolem-Signature</code> with it): <code>{secret}</code> <CopyButton value={secret} label="webhook secret" />
        </p>
      )}
      {error && (
        <p className="error-reason" role="alert" data-testid="webhook-error">
          {error}
        </p>
      )}
    </form>
  );
}

function Deliveries() {
  const api = useApi();
  const deliveries = useQuery({ queryKey: queryKeys.deliveries, queryFn: () => api.deliveries(), refetchInterval: 5_000 });
  if (!deliveries.data?.length) return null;
  return (
    <table data-testid="webhook-deliveries">
      <caption>Deliveries</caption>
      <thead>
        <tr>
          <th scope="col">Event</th>
          <th scope="col">State</th>
          <th scope="col">Attempts</th>
          <th scope="col">Last answer</th>
          <th scope="col">Next attempt</th>
        </tr>
      </thead>
      <tbody>
        {deliveries.data.map((d) => (
          <tr key={d.id}>
            <th scope="row">{d.event}</th>
            <td>{d.state === 'gave_up' ? 'gave up' : d.state}</td>
            <td>{d.attempts}</td>
            <td>{[d.last_status, d.last_error].filter((x) => x !== null).join(': ')}</td>
            <td>{d.next_attempt_at === null ? '' : formatTime(d.next_attempt_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function WebhookSettings() {
  const api = useApi();
  const [open, setOpen] = useState(false);
  const hook = useQuery({
    queryKey: queryKeys.webhook,
    // No webhook yet is no error here.
    queryFn: () => api.webhook().catch((e: unknown) => (e instanceof ApiError && e.code === 'no_webhook' ? null : Promise.reject(e))),
    enabled: open,
  });
  return (
    <details className="card webhook-settings" onToggle={(e) => setOpen((e.target as HTMLDetailsElement).open)}>
      <summary>Alert webhook</summary>
      {hook.isError && <p className="error-reason">{hook.error.message}</p>}
      {hook.isSuccess && (
        <>
          <Form current={hook.data} />
          {hook.data && <Deliveries />}
        </>
      )}
    </details>
  );
}

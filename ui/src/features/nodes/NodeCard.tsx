import { useId, useState } from 'react';
import type { Node } from '../../api/types';
import { CopyButton } from '../../components/CopyButton';
import { useToast } from '../../components/Toasts';
import { formatBlock, formatDuration, formatGlm, formatTime, isZeroGlm, lagText, limitsText, STATE_LABEL, syncView } from './format';
import { SNIPPET_KINDS, snippet, type SnippetKind } from './snippets';
import { useDeleteNode } from './useDeleteNode';
import { useStopNode } from './useStopNode';
import { NodeInsights } from './NodeInsights';
import { ActiveAlerts, AlertSettings } from './NodeAlerts';
import { allowlistText, endpointLimitsText } from './allowlists';

const MASK = '••••••••••••';

function Field({ label, value, secret = false }: { label: string; value: string; secret?: boolean }) {
  const [revealed, setRevealed] = useState(false);
  return (
    <div className="field">
      <dt>{label}</dt>
      <dd>
        <code className="value" data-testid={`field-${label.toLowerCase().replace(/\s+/g, '-')}`}>
          {secret && !revealed ? MASK : value}
        </code>
        {secret && (
          <button type="button" className="link-button" onClick={() => setRevealed((r) => !r)} aria-pressed={revealed}>
            {revealed ? 'Hide' : 'Reveal'}
          </button>
        )}
        <CopyButton value={value} label={label.toLowerCase()} />
      </dd>
    </div>
  );
}

function SyncBar({ node }: { node: Node }) {
  const view = syncView(node);
  if (node.state !== 'running' && node.state !== 'starting') return null;
  const percent = view.fraction === null ? null : Math.round(view.fraction * 1000) / 10;
  const text = view.synced
    ? `Synced · block ${formatBlock(view.current ?? 0)}`
    : view.current !== null && view.highest !== null
      ? `Block ${formatBlock(view.current)} of ${formatBlock(view.highest)}${view.stage ? ` · stage ${view.stage}` : ''}`
      : 'Waiting for the first block…';
  return (
    <div className="sync">
      <div
        className="progress"
        role="progressbar"
        aria-label="Sync progress"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent ?? undefined}
        aria-valuetext={text}
      >
        <div className={`progress-fill${percent === null ? ' indeterminate' : ''}`} style={{ width: `${percent ?? 30}%` }} />
      </div>
      <p className="sync-text">{text}</p>
    </div>
  );
}

function Snippets({ node }: { node: Node }) {
  const [kind, setKind] = useState<SnippetKind>('curl');
  const id = useId();
  if (!node.url || !node.auth) return null;
  const text = snippet(kind, node.url, node.auth);
  return (
    <div className="snippets">
      <div role="tablist" aria-label="Code snippets">
        {SNIPPET_KINDS.map((k) => (
          <button
            key={k}
            type="button"
            role="tab"
            id={`${id}-${k}`}
            aria-selected={k === kind}
            aria-controls={`${id}-panel`}
            className={k === kind ? 'tab active' : 'tab'}
            onClick={() => setKind(k)}
          >
            {k}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`${id}-panel`} aria-labelledby={`${id}-${kind}`} className="snippet">
        <CopyButton value={text} label={`${kind} snippet`} />
        <pre data-testid={`snippet-${kind}`}>{text}</pre>
      </div>
    </div>
  );
}

export function NodeCard({ node }: { node: Node }) {
  const [confirming, setConfirming] = useState(false);
  const stop = useStopNode();
  const remove = useDeleteNode();
  const toast = useToast();
  const live = node.state === 'running' || node.state === 'starting';
  // A failed node may still hold an agreement (or a runtime): Stop ends it.
  const canStop = node.state !== 'stopped' && node.state !== 'stopping' && (node.state !== 'failed' || node.held === true);
  const canDelete = node.state === 'stopped' || node.state === 'failed';
  const titleId = useId();

  return (
    <article className="card node-card" aria-labelledby={titleId} data-node-id={node.id} data-state={node.state}>
      <header className="card-header">
        <div>
          <h3 id={titleId}>{node.name}</h3>
          <p className="muted">
            {node.network}
            {node.engine ? ` · ${node.engine}` : ''}
            {node.engine_version ? ` ${node.engine_version}` : ''} · {node.mode}
            {node.engine === 'erigon' ? ` · ${node.prune}` : ''}
          </p>
        </div>
        <div className="badges">
          {(node.alerts ?? []).length > 0 && (
            <span className="badge alerting" data-testid="node-alerting">
              {(node.alerts ?? []).length === 1 ? '1 alert' : `${(node.alerts ?? []).length} alerts`}
            </span>
          )}
          {node.state === 'running' && node.lagging && (
            <span className="badge lagging" data-testid="node-lagging">
              Lagging
            </span>
          )}
          <span className={`badge state-${node.state}`} data-testid="node-state">
            {STATE_LABEL[node.state]}
          </span>
        </div>
      </header>

      <SyncBar node={node} />

      <ActiveAlerts alerts={node.alerts ?? []} />

      {node.state === 'running' && node.lagging && (
        <p className="warning" role="status" data-testid="node-lag">
          <strong>Lagging:</strong> {lagText(node) ?? 'behind the chain'}. Its answers may be out of date.
        </p>
      )}

      {node.state === 'running' &&
        (node.warnings ?? []).map((w) => (
          <p className="warning" key={w} data-testid="node-warning">
            {w}
          </p>
        ))}

      {node.health && node.state === 'running' && (
        <p className="warning" role="status" data-testid="node-health">
          <strong>Unhealthy:</strong> {node.health}
        </p>
      )}

      {node.state === 'failed' && node.reason && (
        <p className="error-reason" role="note">
          <strong>Why it failed:</strong> {node.reason}
        </p>
      )}

      {node.billing?.refused && (
        <p className="error-reason" data-testid="node-refused">
          <strong>Refused to pay:</strong> {node.billing.refused}
        </p>
      )}

      <dl className="fields">
        {node.block !== null && (
          <div className="field">
            <dt>Block</dt>
            <dd>
              <span className="value" data-testid="node-block">
                {formatBlock(node.block)}
              </span>
            </dd>
          </div>
        )}
        {node.state === 'running' && !node.lagging && lagText(node) && (
          <div className="field">
            <dt>Head</dt>
            <dd>
              <span className="value" data-testid="node-behind">
                {lagText(node)}
                {node.peers != null ? ` · ${node.peers} peer${node.peers === 1 ? '' : 's'}` : ''}
              </span>
            </dd>
          </div>
        )}
        {live && node.limits && (
          <div className="field">
            <dt>RPC limits</dt>
            <dd>
              <span className="value" data-testid="node-limits">
                {limitsText(node.limits)}
              </span>
            </dd>
          </div>
        )}
        {live && node.endpoint_limits && (
          <div className="field">
            <dt>Endpoint limits</dt>
            <dd>
              <span className="value" data-testid="node-endpoint-limits">
                {endpointLimitsText(node.endpoint_limits)}
              </span>
            </dd>
          </div>
        )}
        <div className="field">
          <dt>Methods</dt>
          <dd>
            <span className="value" data-testid="node-methods">
              {allowlistText(node.methods, 'any the provider allows')}
            </span>
          </dd>
        </div>
        {node.allow_origins && (
          <div className="field">
            <dt>Origins</dt>
            <dd>
              <span className="value" data-testid="node-allow-origins">
                {allowlistText(node.allow_origins, 'any')}
              </span>
            </dd>
          </div>
        )}
        {node.allow_ips && (
          <div className="field">
            <dt>Client IPs</dt>
            <dd>
              <span className="value" data-testid="node-allow-ips">
                {allowlistText(node.allow_ips, 'any')}
              </span>
            </dd>
          </div>
        )}
        {node.billing && (
          <div className="field">
            <dt>Price</dt>
            <dd>
              <span className="value" data-testid="node-price">
                {formatGlm(node.billing.price_per_hour)} GLM/h
                {!isZeroGlm(node.billing.start_fee) ? ` + ${formatGlm(node.billing.start_fee)} GLM start` : ''}
                {node.billing.price_per_request ? ` + ${formatGlm(node.billing.price_per_request)} GLM per request` : ''}
              </span>
            </dd>
          </div>
        )}
        {node.billing && (
          <div className="field">
            <dt>Spent</dt>
            <dd>
              <span className="value" data-testid="node-spent">
                {formatGlm(node.billing.budget_spent)} of {formatGlm(node.billing.budget)} GLM
                {node.billing.budget_spent !== node.billing.spent ? ` (this node ${formatGlm(node.billing.spent)}, the rest its predecessors)` : ''}
                {node.billing.runway_secs !== null ? ` · budget lasts ${formatDuration(node.billing.runway_secs)}` : ''}
                {node.billing.settled ? ' · paid' : ''}
              </span>
            </dd>
          </div>
        )}
        {node.billing && (
          <div className="field">
            <dt>Provider</dt>
            <dd>
              <code className="value" title={node.billing.provider_id}>
                {node.billing.provider_name ?? node.billing.provider_id}
              </code>
            </dd>
          </div>
        )}
        {node.replaces && (
          <div className="field">
            <dt>Replaces</dt>
            <dd>
              <code className="value" data-testid="node-replaces">
                {node.replaces}
              </code>
            </dd>
          </div>
        )}
        {node.replaced_by && (
          <div className="field">
            <dt>Replaced by</dt>
            <dd>
              <code className="value" data-testid="node-replaced-by">
                {node.replaced_by}
              </code>
            </dd>
          </div>
        )}
        {live && node.url && <Field label="URL" value={node.url} />}
        {live && node.ws_url && <Field label="WebSocket URL" value={node.ws_url} />}
        {live && node.auth && <Field label="Username" value={node.auth.user} />}
        {live && node.auth && <Field label="Password" value={node.auth.password} secret />}
        <div className="field">
          <dt>Created</dt>
          <dd>
            <time dateTime={new Date(node.created_at).toISOString()}>{formatTime(node.created_at)}</time>
          </dd>
        </div>
        {node.stopped_at !== null && (
          <div className="field">
            <dt>Stopped</dt>
            <dd>
              <time dateTime={new Date(node.stopped_at).toISOString()}>{formatTime(node.stopped_at)}</time>
            </dd>
          </div>
        )}
      </dl>

      {live && <Snippets node={node} />}

      {node.state === 'running' && <NodeInsights id={node.id} />}
      {node.state !== 'stopped' && <AlertSettings id={node.id} />}
      <footer className="card-actions">
        {canStop && !confirming && (
          <button type="button" className="button danger-outline" onClick={() => setConfirming(true)}>
            Stop
          </button>
        )}
        {canStop && confirming && (
          <div className="confirm" role="group" aria-label="Confirm stop">
            <span>
              {node.state === 'failed'
                ? `End what is left of ${node.name} (its agreement with the provider)?`
                : `Stop ${node.name}? Its URL stops working at once.`}
            </span>
            <button
              type="button"
              className="button danger"
              disabled={stop.isPending}
              onClick={() =>
                stop.mutate(node.id, {
                  onError: (e) => toast('error', `Could not stop ${node.name}: ${e.message}`),
                  onSettled: () => setConfirming(false),
                })
              }
            >
              Stop node
            </button>
            <button type="button" className="button" onClick={() => setConfirming(false)}>
              Cancel
            </button>
          </div>
        )}
        {canDelete && (
          <button
            type="button"
            className="button"
            disabled={remove.isPending}
            onClick={() => remove.mutate(node.id, { onError: (e) => toast('error', `Could not delete ${node.name}: ${e.message}`) })}
          >
            Delete
          </button>
        )}
      </footer>
    </article>
  );
}

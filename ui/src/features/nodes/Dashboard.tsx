import { useState } from 'react';
import { ACTIVE_STATES, type Node } from '../../api/types';
import { SkeletonCard } from '../../components/Skeleton';
import { NodeCard } from './NodeCard';
import { StartNodeForm } from './StartNodeForm';
import { useNodeEvents } from './useNodeEvents';
import { useNodes } from './useNodes';
import { WebhookSettings } from './WebhookSettings';

type Tab = 'active' | 'stopped';

export function isActive(node: Node): boolean {
  return ACTIVE_STATES.includes(node.state);
}

export function Dashboard() {
  const nodes = useNodes();
  const stream = useNodeEvents(true);
  const [tab, setTab] = useState<Tab>('active');
  const all = nodes.data ?? [];
  const active = all.filter(isActive);
  const stopped = all.filter((n) => !isActive(n));
  const shown = tab === 'active' ? active : stopped;

  return (
    <main className="dashboard">
      <StartNodeForm onStarted={() => setTab('active')} />
      <WebhookSettings />
      <div className="tabs-row">
        <div role="tablist" aria-label="Nodes">
          <button type="button" role="tab" aria-selected={tab === 'active'} className={tab === 'active' ? 'tab active' : 'tab'} onClick={() => setTab('active')}>
            Active <span className="count">{active.length}</span>
          </button>
          <button type="button" role="tab" aria-selected={tab === 'stopped'} className={tab === 'stopped' ? 'tab active' : 'tab'} onClick={() => setTab('stopped')}>
            Stopped <span className="count">{stopped.length}</span>
          </button>
        </div>
        <span className={`stream stream-${stream}`} role="status">
          {stream === 'live' ? 'Live' : stream === 'connecting' ? 'Connecting…' : 'Reconnecting…'}
        </span>
      </div>
      <section role="tabpanel" aria-label={tab === 'active' ? 'Active nodes' : 'Stopped nodes'} className="node-list">
        {nodes.isLoading && (
          <>
            <SkeletonCard />
            <SkeletonCard />
          </>
        )}
        {nodes.isError && <p className="error-reason">Could not load your nodes: {nodes.error.message}</p>}
        {nodes.isSuccess && shown.length === 0 && (
          <div className="empty">
            {tab === 'active' ? (
              <>
                <h3>No active nodes</h3>
                <p>Start one above: you get an HTTP and WebSocket JSON-RPC URL with its own credentials in seconds.</p>
              </>
            ) : (
              <>
                <h3>No stopped nodes</h3>
                <p>Nodes you stop are kept here until you delete them.</p>
              </>
            )}
          </div>
        )}
        {shown.map((node) => (
          <NodeCard key={node.id} node={node} />
        ))}
      </section>
    </main>
  );
}

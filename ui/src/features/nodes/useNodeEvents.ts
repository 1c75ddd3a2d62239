import { useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { useApi } from '../../api/ApiContext';
import { queryKeys } from '../../api/queryKeys';
import type { Node, ProgressEvent, TransitionEvent } from '../../api/types';

export type StreamStatus = 'connecting' | 'live' | 'reconnecting';

/** Longest wait between reconnection attempts after the stream was closed for good. */
const MAX_BACKOFF_MS = 15_000;
const FIRST_BACKOFF_MS = 500;

/** Applies a progress event to the cached node list. */
export function applyProgress(nodes: Node[] | undefined, event: ProgressEvent): Node[] | undefined {
  return nodes?.map((n) =>
    n.id === event.node_id
      ? {
          ...n,
          block: event.block,
          sync: event.sync,
          health: event.health ?? null,
          behind_seconds: event.behind_seconds ?? n.behind_seconds ?? null,
          behind_blocks: event.behind_blocks ?? null,
          peers: event.peers ?? n.peers ?? null,
          lagging: event.lagging ?? false,
          alerts: event.alerts ?? n.alerts,
        }
      : n,
  );
}

/** Applies a transition to the cached node list (the refetch that follows fills in URL and credentials). */
export function applyTransition(nodes: Node[] | undefined, event: TransitionEvent): Node[] | undefined {
  return nodes?.map((n) => (n.id === event.node_id ? { ...n, state: event.state, reason: event.reason ?? n.reason } : n));
}

/**
 * Follows /api/v1/events: transitions update a node's state at once (and refetch the list for URLs,
 * credentials and times), progress events move the sync bar. The browser's EventSource reconnects by
 * itself with Last-Event-ID; if the server closes the stream for good (e.g. a restart), reconnect with backoff.
 */
export function useNodeEvents(enabled: boolean): StreamStatus {
  const api = useApi();
  const queryClient = useQueryClient();
  const [status, setStatus] = useState<StreamStatus>('connecting');

  useEffect(() => {
    if (!enabled) return;
    let source: EventSource | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let backoff = FIRST_BACKOFF_MS;
    let closed = false;

    const connect = () => {
      source = new EventSource(api.eventsUrl());
      source.onopen = () => {
        backoff = FIRST_BACKOFF_MS;
        setStatus('live');
        // Whatever happened while disconnected: one fetch brings the list up to date.
        void queryClient.invalidateQueries({ queryKey: queryKeys.nodes });
      };
      source.addEventListener('transition', (e) => {
        const event = JSON.parse((e as MessageEvent<string>).data) as TransitionEvent;
        queryClient.setQueryData<Node[]>(queryKeys.nodes, (nodes) => applyTransition(nodes, event));
        void queryClient.invalidateQueries({ queryKey: queryKeys.nodes });
      });
      source.addEventListener('progress', (e) => {
        const event = JSON.parse((e as MessageEvent<string>).data) as ProgressEvent;
        queryClient.setQueryData<Node[]>(queryKeys.nodes, (nodes) => applyProgress(nodes, event));
      });
      source.onerror = () => {
        if (closed || !source) return;
        setStatus('reconnecting');
        if (source.readyState === EventSource.CLOSED) {
          // The browser gave up (an HTTP error such as 401 after the session expired): check the
          // session, then try again later.
          void queryClient.invalidateQueries({ queryKey: queryKeys.me });
          retry = setTimeout(connect, backoff);
          backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        }
      };
    };
    connect();
    return () => {
      closed = true;
      if (retry) clearTimeout(retry);
      source?.close();
    };
  }, [api, queryClient, enabled]);

  return status;
}

import { useEffect, useState, type FormEvent } from 'react';
import { GLM_PATTERN, PRUNE_MODES, type CreateNodeRequest, type Mode, type Network, type Prune } from '../../api/types';
import { useToast } from '../../components/Toasts';
import { defaultNodeName, formatBytes, formatGlm } from './format';
import { useCreateNode } from './useCreateNode';
import { useNetworks } from './useNetworks';

export function StartNodeForm({ onStarted }: { onStarted?: () => void }) {
  const networks = useNetworks();
  const create = useCreateNode();
  const toast = useToast();
  const offers = networks.data ?? [];
  const [network, setNetwork] = useState<Network | ''>('');
  const [name, setName] = useState('');
  const [mode, setMode] = useState<Mode | ''>('');
  const [prune, setPrune] = useState<Prune>(PRUNE_MODES[0] ?? 'full');
  const [budget, setBudget] = useState('');
  const [maxPrice, setMaxPrice] = useState('');
  const [maxStartFee, setMaxStartFee] = useState('');
  const [autoReplace, setAutoReplace] = useState(false);

  const offer = offers.find((o) => o.network === network) ?? offers[0];
  // The prune modes this network offers (older servers do not say: every mode).
  const prunes: readonly Prune[] = offer?.prunes?.length ? offer.prunes : PRUNE_MODES;
  const disk = offer?.disk?.find((d) => d.prune === prune);
  useEffect(() => {
    if (!network && offers[0]) setNetwork(offers[0].network);
  }, [network, offers]);
  useEffect(() => {
    if (offer) {
      setName(defaultNodeName(offer.network));
      setMode(offer.modes[0] ?? '');
      const first = offer.prunes?.[0];
      if (first && !offer.prunes?.includes(prune)) setPrune(first);
    }
  }, [offer?.network]); // eslint-disable-line react-hooks/exhaustive-deps

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!offer) return;
    const request: CreateNodeRequest = { network: offer.network, name: name.trim() || undefined, mode: mode || undefined };
    if (offer.engine === 'erigon') request.prune = prune;
    if (offer.price) {
      // Amounts go as typed (decimal strings): the server parses them exactly.
      if (budget) request.budget = budget.trim();
      if (maxPrice) request.max_price_per_hour = maxPrice.trim();
      if (maxStartFee) request.max_start_fee = maxStartFee.trim();
      if (autoReplace) request.auto_replace = true;
    }
    create.mutate(request, {
      onSuccess: (node) => {
        toast('info', `Starting ${node.name}…`);
        setName(defaultNodeName(offer.network));
        onStarted?.();
      },
      onError: (err) => toast('error', `Could not start the node: ${err.message}`),
    });
  };

  if (networks.isError) {
    return <p className="error-reason">Could not load the networks: {networks.error.message}</p>;
  }
  if (networks.isLoading) {
    return <div className="card skeleton" aria-busy="true" aria-label="Loading networks" />;
  }
  if (offers.length === 0) {
    return <p className="muted">This server offers no networks right now.</p>;
  }

  return (
    <form className="card start-form" onSubmit={submit} aria-label="Start node">
      <h2>Start a node</h2>
      <div className="form-row">
        <label>
          Name
          <input value={name} onChange={(e) => setName(e.target.value)} maxLength={64} required />
        </label>
        <label>
          Network
          <select value={offer?.network ?? ''} onChange={(e) => setNetwork(offers.find((o) => o.network === e.target.value)?.network ?? '')}>
            {offers.map((o) => (
              <option key={o.network} value={o.network}>
                {o.network} ({o.engine})
              </option>
            ))}
          </select>
        </label>
        {offer && offer.modes.length > 1 && (
          <label>
            Mode
            <select value={mode} onChange={(e) => setMode(offer.modes.find((m) => m === e.target.value) ?? '')}>
              {offer.modes.map((m) => (
                <option key={m} value={m}>
                  {m}
                </option>
              ))}
            </select>
          </label>
        )}
        {offer?.engine === 'erigon' && (
          <label>
            Prune
            <select value={prune} onChange={(e) => setPrune(prunes.find((p) => p === e.target.value) ?? prune)}>
              {prunes.map((p) => {
                const d = offer?.disk?.find((x) => x.prune === p);
                return (
                  <option key={p} value={p}>
                    {p}
                    {d ? ` (${d.basis === 'at_most' ? '≤ ' : '~'}${formatBytes(d.bytes)})` : ''}
                  </option>
                );
              })}
            </select>
          </label>
        )}
        {offer?.engine === 'erigon' && disk && (
          <p className="price-info" data-testid="disk-estimate" title={disk.source}>
            Disk: {disk.basis === 'at_most' ? 'at most ' : 'about '}
            {formatBytes(disk.bytes)} for {offer.network} in {prune} mode (Erigon's published figure; it grows with the chain)
            {offer.engine_version ? ` · Erigon ${offer.engine_version}` : ''}
          </p>
        )}
        {offer?.price && (
          <label>
            Budget (GLM)
            <input inputMode="decimal" pattern={GLM_PATTERN} title="GLM, like 2 or 0.5" value={budget} placeholder="server default" onChange={(e) => setBudget(e.target.value)} />
          </label>
        )}
        {offer?.price && (
          <label>
            Max price per hour (GLM)
            <input inputMode="decimal" pattern={GLM_PATTERN} title="GLM, like 0.5" value={maxPrice} placeholder="server cap" onChange={(e) => setMaxPrice(e.target.value)} />
          </label>
        )}
        {offer?.price && (
          <label>
            Max start fee (GLM)
            <input inputMode="decimal" pattern={GLM_PATTERN} title="GLM, like 0.05" value={maxStartFee} placeholder="server cap" onChange={(e) => setMaxStartFee(e.target.value)} />
          </label>
        )}
        {offer?.price && (
          <label className="checkbox">
            <input type="checkbox" checked={autoReplace} onChange={(e) => setAutoReplace(e.target.checked)} />
            Replace it if its provider fails
          </label>
        )}
        {offer?.price && (
          <p className="price-info" data-testid="price-range">
            {offer.price.providers} provider{offer.price.providers === 1 ? '' : 's'} ·{' '}
            {formatGlm(offer.price.min_per_hour)}
            {offer.price.max_per_hour !== offer.price.min_per_hour ? `–${formatGlm(offer.price.max_per_hour)}` : ''} {offer.price.currency}/h
            (the cheapest for the time it runs is chosen, start fee included)
          </p>
        )}
      </div>
      <button type="submit" className="button primary" disabled={create.isPending}>
        {create.isPending ? 'Starting…' : 'Start node'}
      </button>
    </form>
  );
}

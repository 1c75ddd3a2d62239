import { useEffect, useId, useState, type FormEvent } from 'react';
import { GLM_PATTERN, PRUNE_MODES, type CreateNodeRequest, type Mode, type Network, type Prune } from '../../api/types';
import { useToast } from '../../components/Toasts';
import { parseAllowlist, type AllowlistKind } from './allowlists';
import { defaultNodeName, formatBytes, formatGlm } from './format';
import { useCreateNode } from './useCreateNode';
import { useNetworks } from './useNetworks';

const ALLOWLIST_FIELDS: { kind: AllowlistKind; label: string; placeholder: string; hint: string }[] = [
  { kind: 'methods', label: 'Only these methods', placeholder: 'eth_*, net_version', hint: 'Names or namespaces; empty: every method the provider allows.' },
  { kind: 'allow_origins', label: 'Only these origins', placeholder: 'https://app.example.org', hint: 'Browser origins (scheme://host[:port]); requests without one are refused too. Empty: any.' },
  { kind: 'allow_ips', label: 'Only these client IPs', placeholder: '203.0.113.7, 10.0.0.0/8', hint: 'Addresses or CIDR blocks. Empty: any.' },
];

function AllowlistInput({ label, placeholder, hint, value, error, onChange }: { label: string; placeholder: string; hint: string; value: string; error?: string; onChange: (v: string) => void }) {
  const id = useId();
  return (
    <label>
      {label}
      <input value={value} placeholder={placeholder} onChange={(e) => onChange(e.target.value)} aria-invalid={error ? true : undefined} aria-describedby={`${id}-hint${error ? ` ${id}-error` : ''}`} />
      <span id={`${id}-hint`} className="hint muted">
        {hint}
      </span>
      {error && (
        <span id={`${id}-error`} className="field-error" role="alert">
          {error}
        </span>
      )}
    </label>
  );
}

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
  const [allow, setAllow] = useState<Record<AllowlistKind, string>>({ methods: '', allow_origins: '', allow_ips: '' });
  const parsed = {
    methods: parseAllowlist('methods', allow.methods),
    allow_origins: parseAllowlist('allow_origins', allow.allow_origins),
    allow_ips: parseAllowlist('allow_ips', allow.allow_ips),
  };
  const allowInvalid = Object.values(parsed).some((p) => p.error);

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
    if (!offer || allowInvalid) return;
    const request: CreateNodeRequest = { network: offer.network, name: name.trim() || undefined, mode: mode || undefined };
    if (parsed.methods.list) request.methods = parsed.methods.list;
    if (parsed.allow_origins.list) request.allow_origins = parsed.allow_origins.list;
    if (parsed.allow_ips.list) request.allow_ips = parsed.allow_ips.list;
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
      <details className="allowlists">
        <summary>Restrict the endpoint (optional)</summary>
        <div className="form-row">
          {ALLOWLIST_FIELDS.map((f) => (
            <AllowlistInput key={f.kind} label={f.label} placeholder={f.placeholder} hint={f.hint} value={allow[f.kind]} error={parsed[f.kind].error} onChange={(v) => setAllow((a) => ({ ...a, [f.kind]: v }))} />
          ))}
        </div>
      </details>
      <button type="submit" className="button primary" disabled={create.isPending || allowInvalid}>
        {create.isPending ? 'Starting…' : 'Start node'}
      </button>
    </form>
  );
}

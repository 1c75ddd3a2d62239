import { useState } from 'react';
import { useToast } from './Toasts';

const COPIED_MS = 1500;

export function CopyButton({ value, label }: { value: string; label: string }) {
  const [copied, setCopied] = useState(false);
  const toast = useToast();
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      setCopied(true);
      setTimeout(() => setCopied(false), COPIED_MS);
    } catch {
      toast('error', 'Copying was blocked by the browser: select the text and copy it by hand.');
    }
  };
  return (
    <button type="button" className="copy-button" onClick={copy} aria-label={`Copy ${label}`}>
      {copied ? 'Copied' : 'Copy'}
    </button>
  );
}

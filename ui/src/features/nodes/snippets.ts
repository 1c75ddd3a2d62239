// Ready-to-paste code for a running node, with its credentials filled in.
import type { Credentials } from '../../api/types';

export const SNIPPET_KINDS = ['curl', 'ethers', 'viem', 'web3.py'] as const;
export type SnippetKind = (typeof SNIPPET_KINDS)[number];

const BLOCK_NUMBER_BODY = '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}';

/** Single-quotes a value for POSIX shells. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** A JavaScript/Python string literal (JSON's escaping is valid in both). */
function literal(value: string): string {
  return JSON.stringify(value);
}

export function snippet(kind: SnippetKind, url: string, auth: Credentials): string {
  switch (kind) {
    case 'curl':
      return [
        `curl -sS -u ${shellQuote(`${auth.user}:${auth.password}`)} \\`,
        `  -H 'Content-Type: application/json' \\`,
        `  -d ${shellQuote(BLOCK_NUMBER_BODY)} \\`,
        `  ${shellQuote(url)}`,
      ].join('\n');
    case 'ethers':
      return [
        `import { FetchRequest, JsonRpcProvider } from 'ethers';`,
        ``,
        `const request = new FetchRequest(${literal(url)});`,
        `request.setCredentials(${literal(auth.user)}, ${literal(auth.password)});`,
        `const provider = new JsonRpcProvider(request);`,
        `console.log(await provider.getBlockNumber());`,
      ].join('\n');
    case 'viem':
      return [
        `import { createPublicClient, http } from 'viem';`,
        ``,
        `const client = createPublicClient({`,
        `  transport: http(${literal(url)}, {`,
        `    fetchOptions: { headers: { Authorization: 'Basic ' + btoa(${literal(`${auth.user}:${auth.password}`)}) } },`,
        `  }),`,
        `});`,
        `console.log(await client.getBlockNumber());`,
      ].join('\n');
    case 'web3.py':
      return [
        `from web3 import Web3`,
        ``,
        `w3 = Web3(Web3.HTTPProvider(${literal(url)}, request_kwargs={"auth": (${literal(auth.user)}, ${literal(auth.password)})}))`,
        `print(w3.eth.block_number)`,
      ].join('\n');
  }
}

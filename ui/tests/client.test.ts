import { describe, expect, it } from 'vitest';
import { ApiClient, ApiError, CLIENT_ERROR } from '../src/api/client';

function fakeFetch(status: number, body: unknown, record: Request[] = []): typeof fetch {
  return async (input, init) => {
    record.push(new Request(new URL(String(input), 'http://test'), init));
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return new Response(status === 204 ? null : text, { status, headers: { 'Content-Type': 'application/json' } });
  };
}

describe('ApiClient', () => {
  it('sends JSON and returns the parsed body', async () => {
    const seen: Request[] = [];
    const node = { id: 'n1', name: 'dev-node', state: 'pending' };
    const client = new ApiClient('/api/v1', fakeFetch(201, node, seen));
    await expect(client.createNode({ network: 'dev', name: 'dev-node' })).resolves.toEqual(node);
    expect(seen[0]!.method).toBe('POST');
    expect(new URL(seen[0]!.url).pathname).toBe('/api/v1/nodes');
    expect(seen[0]!.headers.get('content-type')).toBe('application/json');
    expect(await seen[0]!.json()).toEqual({ network: 'dev', name: 'dev-node' });
  });

  it('turns the error envelope into an ApiError with the server code', async () => {
    const client = new ApiClient('/api/v1', fakeFetch(429, { error: { code: 'too_many_nodes', message: 'you have 3 active nodes' } }));
    const error = await client.createNode({ network: 'dev' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 429, code: 'too_many_nodes', message: 'you have 3 active nodes' });
  });

  it('marks 401 as unauthorized', async () => {
    const client = new ApiClient('/api/v1', fakeFetch(401, { error: { code: 'unauthorized', message: 'session expired or signed out' } }));
    const error = (await client.me().catch((e: unknown) => e)) as ApiError;
    expect(error.isUnauthorized).toBe(true);
  });

  it('reports an unreachable server as a network error', async () => {
    const client = new ApiClient('/api/v1', async () => {
      throw new TypeError('Failed to fetch');
    });
    await expect(client.nodes()).rejects.toMatchObject({ status: 0, code: CLIENT_ERROR.network });
  });

  it('reports a non-JSON answer clearly', async () => {
    const client = new ApiClient('/api/v1', fakeFetch(502, '<html>Bad Gateway</html>'));
    await expect(client.nodes()).rejects.toMatchObject({ status: 502, code: CLIENT_ERROR.badResponse });
  });

  it('accepts 204 without a body and escapes ids in paths', async () => {
    const seen: Request[] = [];
    const client = new ApiClient('/api/v1', fakeFetch(204, '', seen));
    await expect(client.deleteNode('a/b')).resolves.toBeUndefined();
    expect(new URL(seen[0]!.url).pathname).toBe('/api/v1/nodes/a%2Fb');
    expect(seen[0]!.method).toBe('DELETE');
  });
});

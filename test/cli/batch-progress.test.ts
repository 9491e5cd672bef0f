import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BatchView } from '../../src/queue/types.js';
import { runCli } from '../helpers/cli.js';

const ESC = '\x1b';

describe('petserve batch submit --wait', () => {
  // A stand-in for the server's batch API: each poll settles 4 more of 10 items.
  let server: Server;
  let url: string;
  let root: string;
  let polls = 0;
  const view = (): BatchView => {
    const settled = Math.min(10, polls * 4);
    const failed = settled >= 8 ? 1 : 0;
    const finished = settled === 10;
    return {
      id: 'b-test',
      object: 'batch',
      status: finished ? 'completed' : 'running',
      counts: { total: 10, done: settled - failed, failed, cancelled: 0, pending: 10 - settled },
      chunks: 1,
      created_at: '2026-01-01T00:00:00.000Z',
      started_at: '2026-01-01T00:00:00.000Z',
      finished_at: finished ? '2026-01-01T00:00:01.000Z' : null,
      cancelled_at: null,
      expires_at: null,
      idempotency_key: null,
    } as BatchView;
  };

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'petserve-progress-'));
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.method === 'POST' && req.url === '/v1/batches') polls = 0;
        else if (req.method === 'GET' && req.url === '/v1/batches/b-test') polls++;
        else {
          res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no' } }));
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(view()));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(root, { recursive: true, force: true });
  });

  it('with stdout not a terminal: plain progress lines on stderr, only the finished batch on stdout', async () => {
    const file = join(root, 'items.jsonl');
    await writeFile(file, '{"task":"t","input_ids":[101,102]}\n');
    const r = await runCli('batch', '--url', url, 'submit', file, '--wait', '--poll-ms', '100');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as BatchView;
    expect(out).toMatchObject({ id: 'b-test', status: 'completed', counts: { done: 9, failed: 1 } });
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const line of lines) expect(line).toMatch(/^petserve: batch b-test: \d+\/10 \(done \d+, failed \d+\), [-\d.]+ items\/s, /);
    expect(lines[0]).toBe('petserve: batch b-test: 4/10 (done 4, failed 0), - items/s, ETA ?, 0s elapsed, running');
    expect(lines.at(-1)).toMatch(/: 10\/10 \(done 9, failed 1\), .*finished in \d+s, completed$/);
    expect(r.stderr).not.toContain(ESC);
    expect(r.stdout).not.toContain('petserve: batch');
  });
});

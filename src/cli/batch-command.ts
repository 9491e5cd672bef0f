import { createWriteStream } from 'node:fs';
import { openAsBlob } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Command } from 'commander';
import type { BatchView } from '../queue/types.js';
import { isTerminal } from '../queue/types.js';
import { isErrorCode, PetServeError } from '../util/errors.js';
import { UsageError } from './exit-codes.js';
import { parseIntOption } from './options.js';
import { startProgress, type ProgressCounts } from './progress.js';

/**
 * The server answered with an error body; carries its code (exit code 2 for
 * input errors, else 1). A code this CLI does not know becomes SERVER_ERROR,
 * with the server's own in `serverCode`.
 */
export class BatchApiError extends PetServeError {
  constructor(
    readonly serverCode: string,
    message: string,
    readonly httpStatus: number,
  ) {
    super(isErrorCode(serverCode) ? serverCode : 'SERVER_ERROR', `${message} (HTTP ${httpStatus})`);
  }
}

/** Nothing answered at --url. */
export class ServerUnreachableError extends PetServeError {
  constructor(url: string, detail: string) {
    super('SERVER_UNREACHABLE', `no PetServe server answers at ${url} (${detail}); start one with \`petserve serve\` or pass --url`);
  }
}

const DEFAULT_URL = 'http://127.0.0.1:8080';

/** The server to talk to, and the API key its data plane may need (server.apiKeys). */
interface Server {
  url: string;
  apiKey: string | undefined;
}

async function call(server: Server, path: string, init: RequestInit = {}): Promise<Response> {
  let res: Response;
  const headers = new Headers(init.headers);
  if (server.apiKey !== undefined) headers.set('Authorization', `Bearer ${server.apiKey}`);
  try {
    res = await fetch(new URL(path, server.url), { ...init, headers });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new ServerUnreachableError(server.url, cause?.code ?? cause?.message ?? (err as Error).message);
  }
  if (res.ok) return res;
  let code = 'HTTP_ERROR';
  let message = res.statusText;
  try {
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // not a JSON error body: keep the status text
  }
  throw new BatchApiError(code, message, res.status);
}

async function getBatch(base: Server, id: string): Promise<BatchView> {
  return (await (await call(base, `/v1/batches/${encodeURIComponent(id)}`)).json()) as BatchView;
}

/** Polls until the batch finished, with progress on stderr (a live line on a terminal). */
async function waitFinished(base: Server, id: string, everyMs: number): Promise<BatchView> {
  let b = await getBatch(base, id);
  const progress = startProgress({ label: `petserve: batch ${id}`, total: b.counts.total, initial: batchCounts(b) });
  try {
    while (b.finished_at === null) {
      await new Promise((r) => setTimeout(r, everyMs));
      b = await getBatch(base, id);
      progress.update(batchCounts(b));
    }
    return b;
  } finally {
    progress.stop();
  }
}

function batchCounts(b: BatchView): ProgressCounts {
  const note = b.counts.cancelled > 0 ? `${b.status}, ${b.counts.cancelled} cancelled` : b.status;
  return { done: b.counts.done, failed: b.counts.failed, total: b.counts.total, note };
}

const print = (v: unknown): void => {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
};

export function registerBatch(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const batch = program
    .command('batch')
    .description('offline batches through a running server\'s HTTP API (POST/GET /v1/batches)')
    .option('--url <url>', 'server base URL', DEFAULT_URL)
    .option('--api-key <key>', 'API key when the server has server.apiKeys (default: $PETSERVE_API_KEY)');
  const base = (): Server => {
    const o = batch.opts<{ url: string; apiKey?: string }>();
    const fromEnv = process.env['PETSERVE_API_KEY'];
    return { url: o.url, apiKey: o.apiKey ?? (fromEnv === '' ? undefined : fromEnv) };
  };
  const pollMs = (o: Record<string, string | undefined>): number => parseIntOption('--poll-ms', o['pollMs'], 100);

  batch
    .command('submit <file>')
    .description('queue a JSONL file: one {"task", "inputs" | "input_ids", "custom_id"?} per line, or OpenAI Batch input lines {"custom_id", "method", "url", "body"}; prints the batch')
    .option('--idempotency-key <key>', 'submitting again with the same key returns the same batch instead of a second one')
    .option('--wait', 'wait until the batch finished')
    .option('--poll-ms <ms>', 'status poll interval with --wait', '2000')
    .action((file: string, o: Record<string, string | undefined>) =>
      run(async () => {
        let body: Blob;
        try {
          if (!(await stat(file)).isFile()) throw new Error('not a file');
          // Streamed from disk: a batch file may be larger than we want in memory.
          body = await openAsBlob(file);
        } catch (err) {
          throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
        }
        const headers: Record<string, string> = { 'Content-Type': 'application/x-ndjson' };
        if (o['idempotencyKey'] !== undefined) headers['Idempotency-Key'] = o['idempotencyKey'];
        const res = await call(base(), '/v1/batches', { method: 'POST', headers, body });
        let view = (await res.json()) as BatchView;
        if (o['wait'] !== undefined) view = await waitFinished(base(), view.id, pollMs(o));
        print(view);
      }),
    );

  batch
    .command('status <id>')
    .description('print a batch: status, counts (total, done, failed, cancelled, pending), timestamps')
    .option('--wait', 'wait until the batch finished')
    .option('--poll-ms <ms>', 'status poll interval with --wait', '2000')
    .action((id: string, o: Record<string, string | undefined>) =>
      run(async () => {
        print(o['wait'] !== undefined ? await waitFinished(base(), id, pollMs(o)) : await getBatch(base(), id));
      }),
    );

  batch
    .command('results <id>')
    .description('write the results as JSONL in item order (to stdout, or --out FILE)')
    .option('--out <file>', 'write here instead of stdout')
    .option('--wait', 'wait until the batch finished first')
    .option('--poll-ms <ms>', 'status poll interval with --wait', '2000')
    .action((id: string, o: Record<string, string | undefined>) =>
      run(async () => {
        if (o['wait'] !== undefined) await waitFinished(base(), id, pollMs(o));
        const res = await call(base(), `/v1/batches/${encodeURIComponent(id)}/results`);
        const status = res.headers.get('X-Batch-Status') ?? 'unknown';
        if (!isTerminal(status as BatchView['status'])) {
          process.stderr.write(`petserve: batch ${id} is ${status}: results are partial (items still pending are missing)\n`);
        }
        const sink: Writable = o['out'] !== undefined ? createWriteStream(o['out']) : stdoutSink();
        await pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), sink);
      }),
    );

  batch
    .command('cancel <id>')
    .description('cancel what has not run yet; prints the batch')
    .action((id: string) =>
      run(async () => {
        print(await (await call(base(), `/v1/batches/${encodeURIComponent(id)}`, { method: 'DELETE' })).json());
      }),
    );

  batch
    .command('list')
    .description('list batches, newest first')
    .option('--limit <n>', 'how many', '20')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const limit = parseIntOption('--limit', o['limit'], 1);
        print(await (await call(base(), `/v1/batches?limit=${limit}`)).json());
      }),
    );
}

/** stdout as a pipeline sink that is not closed at the end (the CLI still writes after it). */
function stdoutSink(): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      if (process.stdout.write(chunk)) done();
      else process.stdout.once('drain', () => done());
    },
  });
}

// Hostile and unlucky input against the real app (bert-tiny on lavapipe, batch
// routes on Redis): malformed and aborted bodies on every route that takes a
// body, errors that echo nothing of the request, browser requests from foreign
// origins, slow clients, and a compression bomb while other clients are served.

import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PetServeConfig } from '../../src/config/config.js';
import { BatchService } from '../../src/queue/producer.js';
import { deletePrefix } from '../../src/queue/redis.js';
import { createApp } from '../../src/server/app.js';
import { listen, ServerLifecycle, type HttpServerHandle } from '../../src/server/lifecycle.js';
import { batchOpenApiPaths, createBatchRouter } from '../../src/server/routes/batches.js';
import { testPrefix, testSettings } from '../queue/helpers.js';
import { admin, call, listenOn, startTestStack, type Listening, type TestStack } from './helpers.js';
import { writeZeroBomb } from './tar-fixture.js';

interface LogLine {
  level: number;
  msg: string;
}

let stack: TestStack;
let batches: BatchService;
let api: Listening;
const prefix = testPrefix('hardening');
const logs: LogLine[] = [];
const closers: (() => Promise<unknown>)[] = [];

/** A logger that keeps every line, to check what was logged at which level. */
const capturingLogger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });

function appFor(config: PetServeConfig) {
  return createApp({
    runtime: stack.runtime,
    config,
    logger: capturingLogger,
    metricsRegistry: new Registry(),
    routers: [createBatchRouter({ batches, maxUploadBytes: config.server.maxUploadBytes })],
    openApiPaths: batchOpenApiPaths(),
  });
}

const withServer = (config: PetServeConfig, server: Partial<PetServeConfig['server']>): PetServeConfig => ({ ...config, server: { ...config.server, ...server } });

beforeAll(async () => {
  stack = await startTestStack([{ id: 'cls', kind: 'lora' }], { 'server.maxUploadBytes': 256 * 1024 * 1024 });
  batches = BatchService.open(testSettings(prefix), capturingLogger);
  await batches.waitReady(10_000);
  api = await listenOn(appFor(stack.config));
});

afterAll(async () => {
  for (const c of closers.reverse()) await c();
  await api?.close();
  await batches?.close();
  const redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
  await deletePrefix(redis, prefix);
  await redis.quit();
  await stack?.close();
});

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** Send exactly these bytes as the body (Content-Length as given), and read the answer. */
function rawPost(url: string, path: string, headers: Record<string, string>, body: Buffer | string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, { method: 'POST', headers: { 'Content-Length': String(Buffer.byteLength(body)), ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const MARK = 'QZXMARK7';
const boundary = '----petserve-test-boundary';
function multipartBody(fields: Record<string, string>, file?: { field: string; name: string; data: Buffer | string }): Buffer {
  const parts: (Buffer | string)[] = [];
  for (const [k, v] of Object.entries(fields)) parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`);
  if (file) {
    parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="${file.field}"; filename="${file.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`);
    parts.push(file.data, '\r\n');
  }
  parts.push(`--${boundary}--\r\n`);
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
}

/** Every route that takes a body, with the headers it needs besides the body's. */
const BODY_ROUTES = [
  { path: '/v1/tasks/cls/predict', headers: {} },
  { path: '/v2/models/cls/infer', headers: {} },
  { path: '/v1/tasks?id=up', headers: admin },
  { path: '/v1/batches', headers: {} },
];

const whole = multipartBody({ id: 'up', idempotency_key: `k-${MARK}` }, { field: 'file', name: `${MARK}.jsonl`, data: `{"task": "cls", "inputs": "${MARK}"}\n` });
/** Malformed bodies: what each client mistake looks like on the wire. */
const MALFORMED: { name: string; type: string; body: Buffer | string }[] = [
  { name: 'truncated JSON', type: 'application/json', body: `{"inputs": ["${MARK} is cut` },
  { name: 'garbled JSON', type: 'application/json', body: `{"inputs": ${MARK}}` },
  { name: 'JSON that is not an object', type: 'application/json', body: `"${MARK}"` },
  { name: 'truncated multipart', type: `multipart/form-data; boundary=${boundary}`, body: whole.subarray(0, whole.length - 40) },
  { name: 'garbled multipart', type: `multipart/form-data; boundary=${boundary}`, body: `${MARK} this is no multipart body at all` },
  { name: 'multipart with a wrong boundary', type: 'multipart/form-data; boundary=not-the-one-used', body: whole },
  { name: 'multipart without a boundary', type: 'multipart/form-data', body: whole },
  { name: 'multipart with a broken part header', type: `multipart/form-data; boundary=${boundary}`, body: `--${boundary}\r\n${MARK}\r\n\r\nx\r\n--${boundary}--\r\n` },
  { name: 'text/plain', type: 'text/plain', body: `{"inputs": "${MARK}"}` },
];

function errorText(a: RawAnswer): string {
  const body = JSON.parse(a.text) as { error: string | { code: string; message: string } };
  return typeof body.error === 'string' ? body.error : `${body.error.code}: ${body.error.message}`;
}

describe('malformed bodies are 4xx JSON errors on every route that takes a body', () => {
  for (const route of BODY_ROUTES) {
    for (const bad of MALFORMED) {
      it(`${route.path}: ${bad.name}`, async () => {
        const errorsBefore = logs.filter((l) => l.level >= 50).length;
        const a = await rawPost(api.url, route.path, { ...route.headers, 'Content-Type': bad.type }, bad.body);
        expect(a.status, a.text).toBeGreaterThanOrEqual(400);
        expect(a.status, a.text).toBeLessThan(500);
        expect(a.headers['content-type']).toMatch(/application\/json/);
        // The message names the problem, never the bytes that were sent.
        expect(errorText(a)).not.toContain(MARK);
        expect(logs.filter((l) => l.level >= 50).length, 'nothing logged as an error').toBe(errorsBefore);
      });
    }
  }

  it('a client that aborts its upload midway is logged at info, never as an error, and the server goes on', async () => {
    for (const route of BODY_ROUTES) {
      for (const type of ['application/json', `multipart/form-data; boundary=${boundary}`, 'application/gzip']) {
        const before = logs.length;
        const { port } = new URL(api.url);
        const socket = connect(Number(port), '127.0.0.1');
        await once(socket, 'connect');
        const auth = 'Authorization' in route.headers ? `Authorization: ${route.headers.Authorization}\r\n` : '';
        socket.write(`POST ${route.path} HTTP/1.1\r\nHost: x\r\nContent-Type: ${type}\r\nContent-Length: 100000\r\n${auth}\r\n`);
        socket.write(type.startsWith('multipart') ? whole.subarray(0, 100) : '{"inputs": ["abc');
        await new Promise((r) => setTimeout(r, 100));
        socket.destroy();
        // The request's log line comes when the server has noticed.
        const deadline = Date.now() + 10_000;
        while (!logs.slice(before).some((l) => l.msg === 'request') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        const mine = logs.slice(before);
        expect(mine.some((l) => l.msg === 'request'), `${route.path} ${type}: ${JSON.stringify(mine)}`).toBe(true);
        expect(mine.filter((l) => l.level >= 50), `${route.path} ${type}`).toEqual([]);
      }
    }
    expect((await call(`${api.url}/v2/health/live`)).status).toBe(200);
  });
});

describe('error messages echo no request bytes', () => {
  it('no error body of the bad-input suite contains a fragment of its input', async () => {
    // Path registration enabled, so its refusals are exercised too.
    const rooted = await listenOn(appFor(withServer(stack.config, { registerRoot: stack.root })));
    closers.push(() => rooted.close());
    const j = (path: string, body: unknown, headers: Record<string, string> = {}, url = api.url) =>
      rawPost(url, path, { 'Content-Type': 'application/json', ...headers }, JSON.stringify(body));
    const answers = await Promise.all([
      j('/v1/tasks/cls/predict', { inputs: 42, [MARK]: MARK }),
      j('/v1/tasks/cls/predict', { inputs: [MARK], options: { truncate: MARK } }),
      j('/v1/tasks/cls/predict', { input_ids: [[101, MARK, 102]] }),
      j('/v1/tasks/cls/predict', { input_ids: [[101, 99_999_999, 102]], token_type_ids: [[0, MARK, 0]] }),
      j('/v1/tasks/cls/predict', { inputs: 'x', options: { deadline_ms: MARK } }),
      j('/v2/models/cls/infer', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [MARK] }], parameters: { truncate: MARK } }),
      j('/v2/models/cls/infer', { inputs: [{ name: MARK, datatype: 'INT64', shape: [1, 1], data: [1] }] }),
      j('/v2/models/cls/infer', { inputs: [{ name: 'input_ids', datatype: MARK, shape: [1, 1], data: [1] }] }),
      j('/v1/tasks', { id: MARK, path: `/${MARK}` }, admin, rooted.url),
      j('/v1/tasks', { id: 'ok-id', path: `../../${MARK}` }, admin, rooted.url),
      j('/v1/tasks', { id: 'ok-id', path: MARK }, admin, rooted.url),
      j('/v1/tasks', { id: 'ok-id', path: 'model' }, admin, rooted.url),
      j('/v1/tasks', { id: `${MARK}/../x`, path: 'model' }, admin, rooted.url),
      j('/v1/batches', { items: MARK }),
      j('/v1/batches', { items: [{ task: 'cls', inputs: 'x' }], idempotency_key: 7 }),
      rawPost(api.url, '/v1/batches', { 'Content-Type': 'application/x-ndjson' }, ''),
      rawPost(api.url, '/v1/tasks/cls/predict', { 'Content-Type': 'application/json' }, `{"inputs": "${MARK}`),
      rawPost(api.url, '/v2/models/cls/infer', { 'Content-Type': 'application/json' }, `[${MARK}]`),
      rawPost(api.url, '/v1/tasks?id=up', { ...admin, 'Content-Type': 'application/gzip' }, `${MARK} is not a gzip archive`),
    ]);
    for (const a of answers) {
      expect(a.status, a.text).toBeGreaterThanOrEqual(400);
      expect(a.status, a.text).toBeLessThan(500);
      expect(a.text).not.toContain(MARK);
      // Nor a path of this server.
      expect(a.text).not.toContain(stack.root);
    }
  });

  it('a JSONL item that is not JSON is reported by position, not quoted', async () => {
    const r = await rawPost(api.url, '/v1/batches', { 'Content-Type': 'application/x-ndjson' }, `{"task": "cls", "inputs": "ok"}\n{"task": ${MARK}}\n`);
    expect(r.status).toBe(202);
    const id = (JSON.parse(r.text) as { id: string }).id;
    const results = await (await fetch(`${api.url}/v1/batches/${id}/results`)).text();
    expect(results).toMatch(/line 2: not valid JSON \(syntax error( at character \d+)?\)/);
    expect(results).not.toContain(MARK);
  });
});

describe('browser requests', () => {
  it('a foreign Origin is refused (403) on routes with side effects; reads and non-browser clients are not affected', async () => {
    const evil = { Origin: 'https://evil.example' };
    const post = await call(`${api.url}/v1/batches`, { json: { items: [{ task: 'cls', inputs: 'x' }] }, headers: evil });
    expect(post.status).toBe(403);
    expect(post.body.error.code).toBe('ORIGIN_FORBIDDEN');
    expect((await call(`${api.url}/v1/tasks/cls/predict`, { json: { inputs: 'x' }, headers: evil })).status).toBe(403);
    expect((await call(`${api.url}/v1/batches/batch_x`, { method: 'DELETE', headers: evil })).status).toBe(403);
    expect((await call(`${api.url}/v2/health/live`, { headers: evil })).status).toBe(200);
    expect((await call(`${api.url}/v1/tasks/cls/predict`, { json: { inputs: 'x' } })).status).toBe(200);

    const allowed = await listenOn(appFor(withServer(stack.config, { corsOrigins: ['https://app.example'] })));
    closers.push(() => allowed.close());
    const ok = await call(`${allowed.url}/v1/tasks/cls/predict`, { json: { inputs: 'x' }, headers: { Origin: 'https://app.example' } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect((await call(`${allowed.url}/v1/tasks/cls/predict`, { json: { inputs: 'x' }, headers: evil })).status).toBe(403);
  });

  it('a text/plain body (sent cross-origin without a preflight) is 415 on the JSON routes, the batch route included', async () => {
    for (const path of ['/v1/tasks/cls/predict', '/v2/models/cls/infer', '/v1/batches']) {
      const r = await rawPost(api.url, path, { 'Content-Type': 'text/plain' }, '{"task": "cls", "inputs": "x"}');
      expect(r.status, path).toBe(415);
    }
  });
});

describe('slow clients', () => {
  let slow: HttpServerHandle;
  beforeAll(async () => {
    const config = withServer(stack.config, { requestTimeoutMs: 1500, headersTimeoutMs: 800 });
    slow = await listen(appFor(config), {
      host: '127.0.0.1',
      port: 0,
      lifecycle: new ServerLifecycle(),
      logger: capturingLogger,
      timeouts: { requestTimeoutMs: config.server.requestTimeoutMs, headersTimeoutMs: config.server.headersTimeoutMs },
    });
    closers.push(() => slow.close(100));
  });

  /** Open a socket, send `first`, then trickle a byte every 200 ms; resolves with everything the server sent and whether it closed. */
  async function trickle(first: string): Promise<{ answer: string; closed: boolean }> {
    const socket = connect(slow.port, '127.0.0.1');
    await once(socket, 'connect');
    let answer = '';
    socket.on('data', (c: Buffer) => (answer += c.toString('utf8')));
    socket.write(first);
    const timer = setInterval(() => socket.writable && socket.write('a'), 200);
    const closed = await Promise.race([once(socket, 'close').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20_000))]);
    clearInterval(timer);
    socket.destroy();
    return { answer, closed };
  }

  it('a body trickled past server.requestTimeoutMs gets a JSON 408 and the connection is closed', async () => {
    const { answer, closed } = await trickle('POST /v1/tasks/cls/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"inputs": "');
    expect(closed).toBe(true);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(answer).toMatch(/"code":"REQUEST_TIMEOUT"/);
    expect(answer).toMatch(/server\.requestTimeoutMs/);
  });

  it('headers trickled past server.headersTimeoutMs get a JSON 408 and the connection is closed', async () => {
    const { answer, closed } = await trickle('GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    expect(closed).toBe(true);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(answer).toMatch(/REQUEST_TIMEOUT/);
  });

  it('a request line that is not HTTP gets a JSON 400, not a bare one', async () => {
    const socket = connect(slow.port, '127.0.0.1');
    await once(socket, 'connect');
    let answer = '';
    socket.on('data', (c: Buffer) => (answer += c.toString('utf8')));
    socket.write('NOT HTTP AT ALL\r\n\r\n');
    await once(socket, 'close');
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(answer).toMatch(/"code":"MALFORMED_HTTP"/);
  });
});


describe('a compression bomb', () => {
  it('is refused (422) while liveness and a predict on other connections keep answering', async () => {
    const file = join(stack.root, 'bomb.tar.gz');
    // Within server.maxUploadBytes when unpacked, so only the stream's ratio check stops it.
    await writeZeroBomb(file, 200 * 1024 * 1024, [{ path: 'pet.json', data: '{}' }]);
    const bomb = await readFile(file);
    let uploading = true;
    const probes: { ms: number; status: number }[] = [];
    const probing = (async () => {
      while (uploading) {
        const t0 = performance.now();
        const r = await call(`${api.url}/v2/health/live`);
        probes.push({ ms: performance.now() - t0, status: r.status });
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const predicting = call(`${api.url}/v1/tasks/cls/predict`, { json: { inputs: 'served meanwhile' } });
    const upload = await rawPost(api.url, '/v1/tasks?id=bomb', { ...admin, 'Content-Type': 'application/gzip' }, bomb);
    // One more probe after the refusal, so at least one ran while the upload was in flight or right after it.
    const after = await call(`${api.url}/v2/health/live`);
    uploading = false;
    await probing;
    expect(upload.status, upload.text).toBe(422);
    expect(errorText(upload)).toMatch(/ARCHIVE_INVALID: refused archive: expands more than 200:1/);
    expect((await predicting).status).toBe(200);
    expect(after.status).toBe(200);
    expect(probes.length).toBeGreaterThan(0);
    expect(probes.every((p) => p.status === 200)).toBe(true);
    expect(stack.runtime.registry.has('bomb')).toBe(false);
  });
});

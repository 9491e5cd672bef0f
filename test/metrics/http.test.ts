import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { Registry } from 'prom-client';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { httpMetricsMiddleware, tagRequest, type HttpMetricsOptions } from '../../src/metrics/http.js';
import { createMetrics, type PetServeMetrics } from '../../src/metrics/metrics.js';
import { promtool } from './promtool.js';
import { has, labelSets, value } from './values.js';

const KINDS: Record<string, 'lora' | 'mask'> = { sentiment: 'lora', topic: 'mask' };

/** What the middleware may look task ids up in (a TaskRegistry in the server). */
const registry = { get: (id: string) => (KINDS[id] ? { kind: KINDS[id] } : undefined) };

/** A small app shaped like the server's: nested routers, a mount path with a parameter, an error handler, /metrics. */
function app(metrics: PetServeMetrics, opts: HttpMetricsOptions = {}): express.Express {
  const a = express();
  a.use(httpMetricsMiddleware(metrics, opts));
  const tasks = express.Router();
  tasks.post('/:task/predict', (req: Request, res: Response) => {
    const task = String(req.params['task']);
    const kind = KINDS[task];
    if (!kind) {
      res.status(404).json({ error: 'unknown task' });
      return;
    }
    tagRequest(res, { task, kind });
    res.json({ ok: true });
  });
  tasks.post('/:task/boom', () => {
    throw new Error('engine failure');
  });
  tasks.get('/:task/slow', (_req: Request, res: Response) => {
    setTimeout(() => res.json({ late: true }), 300);
  });
  a.use('/v1/tasks', tasks);
  const models = express.Router();
  models.get('/ready', (_req: Request, res: Response) => {
    tagRequest(res, { task: null, kind: 'base' });
    res.json({ ready: true });
  });
  a.use('/v2/models/:model', models);
  // Like the server's /v2 routes: no tagRequest, the task comes from :task.
  a.post('/v2/tasks/:task/infer', (req: Request, res: Response) => {
    if (!KINDS[String(req.params['task'])]) throw new Error('unknown task');
    res.json({ ok: true });
  });
  a.get('/metrics', async (_req: Request, res: Response) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  a.use((err: Error, _req: Request, res: Response, _next: NextFunction) => {
    res.status(500).json({ error: err.message });
  });
  return a;
}

/** The middleware counts on 'close', which can come a tick after the client has its response. */
async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 20));
}

describe('HTTP metrics middleware', () => {
  it('counts a burst by route pattern, status code and PET kind, with durations, and stays valid exposition', async () => {
    const reg = new Registry();
    const metrics = createMetrics(reg);
    const server = app(metrics);
    for (let i = 0; i < 12; i++) await request(server).post(`/v1/tasks/${i % 3 === 0 ? 'topic' : 'sentiment'}/predict`).send({}).expect(200);
    await request(server).post('/v1/tasks/nope/predict').send({}).expect(404);
    await request(server).post('/v1/tasks/sentiment/boom').send({}).expect(500);
    await request(server).post('/v1/tasks/topic/boom').send({}).expect(500);
    for (const model of ['bert', 'other-model', 'x']) await request(server).get(`/v2/models/${model}/ready`).expect(200);
    await request(server).get('/no/such/path').expect(404);
    await request(server).get('/v1/tasks/sentiment').expect(404);
    await settle();

    const c = 'petserve_http_requests_total';
    expect(await value(reg, c, { route: '/v1/tasks/:task/predict', status_code: 200, method: 'POST' })).toBe(12);
    expect(await value(reg, c, { route: '/v1/tasks/:task/predict', status_code: 200, kind: 'lora' })).toBe(8);
    expect(await value(reg, c, { route: '/v1/tasks/:task/predict', status_code: 200, kind: 'mask' })).toBe(4);
    // Not tagged (unknown task): kind 'none'.
    expect(await value(reg, c, { route: '/v1/tasks/:task/predict', status_code: 404, kind: 'none' })).toBe(1);
    // The error handler answers after the router restored req.baseUrl; the label is still the full pattern.
    expect(await value(reg, c, { route: '/v1/tasks/:task/boom', status_code: 500 })).toBe(2);
    // A parameter in the mount path is labelled as the parameter, one series for all models.
    expect(await value(reg, c, { route: '/v2/models/:model/ready', status_code: 200, kind: 'base' })).toBe(3);
    expect(await value(reg, c, { route: 'unmatched', status_code: 404 })).toBe(2);
    expect(await value(reg, c)).toBe(20);
    // No raw URL or task id ever becomes a label value.
    const routes = new Set((await labelSets(reg, c)).map((l) => String(l['route'])));
    expect([...routes].sort()).toEqual(['/v1/tasks/:task/boom', '/v1/tasks/:task/predict', '/v2/models/:model/ready', 'unmatched']);

    const d = 'petserve_http_request_duration_seconds';
    expect(await value(reg, `${d}_count`, { route: '/v1/tasks/:task/predict' })).toBe(13);
    expect(await value(reg, `${d}_count`)).toBe(20);
    expect(await value(reg, `${d}_sum`)).toBeGreaterThan(0);

    // Tagged requests feed the per-task counts (status page, opt-in per-task metric).
    expect(metrics.taskRequests.get('sentiment')).toBe(8);
    expect(metrics.taskRequests.get('topic')).toBe(4);
    expect(metrics.taskRequests.get('nope')).toBe(0);

    const scrape = await request(server).get('/metrics').expect(200);
    expect(scrape.headers['content-type']).toContain('text/plain');
    const check = promtool(['check', 'metrics'], scrape.text);
    expect(check.output).toBe('');
    expect(check.status).toBe(0);
    // The scrape itself is counted (on the next scrape).
    await settle();
    expect(await value(reg, c, { route: '/metrics', status_code: 200 })).toBe(1);
  });

  it('counts a response the client abandoned as status 499', async () => {
    const reg = new Registry();
    const metrics = createMetrics(reg, { defaultMetrics: false });
    const server = app(metrics).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const port = (server.address() as AddressInfo).port;
      await new Promise<void>((resolve) => {
        const r = httpRequest({ host: '127.0.0.1', port, path: '/v1/tasks/sentiment/slow' });
        r.on('error', () => resolve());
        r.end();
        setTimeout(() => {
          r.destroy();
          resolve();
        }, 50);
      });
      await new Promise((r) => setTimeout(r, 100));
      expect(await value(reg, 'petserve_http_requests_total', { route: '/v1/tasks/:task/slow', status_code: 499 })).toBe(1);
      expect(await has(reg, 'petserve_http_requests_total', { status_code: 200 })).toBe(false);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('takes task and kind from a registered :task route parameter when the route does not tag, also on the error path', async () => {
    const reg = new Registry();
    const metrics = createMetrics(reg, { defaultMetrics: false });
    const server = app(metrics, { tasks: registry });
    await request(server).post('/v2/tasks/topic/infer').send({}).expect(200);
    await request(server).post('/v2/tasks/topic/infer').send({}).expect(200);
    await request(server).post('/v2/tasks/ghost/infer').send({}).expect(500);
    await request(server).post('/v1/tasks/sentiment/boom').send({}).expect(500);
    await settle();
    const c = 'petserve_http_requests_total';
    expect(await value(reg, c, { route: '/v2/tasks/:task/infer', status_code: 200, kind: 'mask' })).toBe(2);
    // Unregistered ids are neither a kind nor a per-task count.
    expect(await value(reg, c, { route: '/v2/tasks/:task/infer', status_code: 500, kind: 'none' })).toBe(1);
    expect(metrics.taskRequests.get('ghost')).toBe(0);
    expect(metrics.taskRequests.get('topic')).toBe(2);
    // The error handler runs after the router restored the parent's params; the task was captured before.
    expect(await value(reg, c, { route: '/v1/tasks/:task/boom', status_code: 500, kind: 'lora' })).toBe(1);
    expect(metrics.taskRequests.get('sentiment')).toBe(1);
  });

  it('folds route labels beyond maxRoutes into "other"', async () => {
    const reg = new Registry();
    const metrics = createMetrics(reg, { defaultMetrics: false });
    const server = app(metrics, { maxRoutes: 2 });
    await request(server).post('/v1/tasks/sentiment/predict').send({}).expect(200);
    await request(server).get('/v2/models/m/ready').expect(200);
    await request(server).get('/nowhere').expect(404);
    await request(server).post('/v1/tasks/topic/predict').send({}).expect(200);
    await settle();
    const routes = (await labelSets(reg, 'petserve_http_requests_total')).map((l) => l['route']);
    expect(new Set(routes)).toEqual(new Set(['/v1/tasks/:task/predict', '/v2/models/:model/ready', 'other']));
    expect(await value(reg, 'petserve_http_requests_total', { route: '/v1/tasks/:task/predict' })).toBe(2);
  });
});

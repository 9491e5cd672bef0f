import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Router, type NextFunction, type Request, type Response } from 'express';
import { buildStatus, type StatusOptions, type StatusSources } from '../../metrics/status.js';
import { API_KEY } from '../openapi.js';

// src/server/routes/ and dist/server/routes/ both sit three levels below the
// package root, so one relative URL finds static/ from the sources (tsx,
// vitest) and from the build (tsc does not copy non-TS files into dist/).
const PAGE_DIR = fileURLToPath(new URL('../../../static/status-page/', import.meta.url));
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'));

/** The only files the page may load; anything else under the assets path is a 404. */
const ASSETS: Record<string, { path: string; type: string }> = {
  'status.js': { path: join(PAGE_DIR, 'status.js'), type: 'text/javascript; charset=utf-8' },
  'status.css': { path: join(PAGE_DIR, 'status.css'), type: 'text/css; charset=utf-8' },
  'uPlot.iife.min.js': { path: join(UPLOT_DIR, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'uPlot.min.css': { path: join(UPLOT_DIR, 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

export type { StatusSources } from '../../metrics/status.js';

/**
 * `GET /` (the status page), its assets under `GET /status/assets/:file`, and
 * `GET /v1/status` (the JSON the page polls). Mount at the application root.
 * It reads only the interfaces in `sources`, so it works with whatever the
 * process runs (an API server with scheduler and queue, or less).
 */
export function createStatusRouter(sources: StatusSources, opts: StatusOptions = {}): Router {
  const index = join(PAGE_DIR, 'index.html');
  for (const file of [index, ...Object.values(ASSETS).map((a) => a.path)]) {
    // Fail at start-up, not on the first page view, if an image was built without static/.
    if (!existsSync(file)) throw new Error(`status page asset missing: ${file}`);
  }
  const router = Router();

  router.get('/', (_req: Request, res: Response, next: NextFunction) => {
    res.type('html').set('cache-control', 'no-cache').sendFile(index, (err) => err && next(err));
  });

  router.get('/status/assets/:file', (req: Request, res: Response, next: NextFunction) => {
    const name = String(req.params['file']);
    // Own keys only: a name like '__proto__' must not reach the prototype.
    const asset = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
    if (!asset) {
      next();
      return;
    }
    // Short cache: assets change only with a new build, but there is no content hash in their names.
    res.type(asset.type).set('cache-control', 'public, max-age=300').sendFile(asset.path, (err) => err && next(err));
  });

  router.get('/v1/status', async (_req: Request, res: Response) => {
    const snapshot = await buildStatus(sources, opts);
    // createApp decides who sees per-task rows (ids, kinds, sizes, counts); a router used alone shows them.
    const detail = res.locals['statusDetail'] !== false;
    const gen = snapshot.generation;
    const body = detail
      ? snapshot
      : {
          ...snapshot,
          tasks: { ...snapshot.tasks, list: [], listHidden: true },
          generation: gen ? { ...gen, tasks: [], tasksHidden: true } : null,
        };
    res.set('cache-control', 'no-store').json(body);
  });

  return router;
}

/** The status routes for /openapi.json: createApp({ openApiPaths: { ...statusOpenApiPaths() } }). */
export function statusOpenApiPaths(): Record<string, unknown> {
  const text = (type: string): Record<string, unknown> => ({ [type]: { schema: { type: 'string' } } });
  return {
    '/': { get: { summary: 'The status page (HTML; its data comes from GET /v1/status)', responses: { '200': { description: 'page', content: text('text/html') } } } },
    '/status/assets/{file}': {
      get: {
        summary: 'A script or stylesheet of the status page',
        parameters: [{ name: 'file', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { '200': { description: 'asset' }, '404': { description: 'no such asset' } },
      },
    },
    '/v1/status': {
      get: {
        summary: 'Status snapshot: traffic, scheduler, memory, queue; per-task rows only with an API key or the admin token, or with server.publicStatus',
        description: 'With server.apiKeys set, a key or the admin token is required (401 otherwise) unless server.publicStatus is true. Without the rows, tasks.list is empty and tasks.listHidden is true (and, with a decoder, generation.tasks is empty and generation.tasksHidden is true).',
        security: [...API_KEY, { adminToken: [] }, {}],
        responses: { '200': { description: 'snapshot', content: { 'application/json': { schema: { type: 'object' } } } }, '401': { description: 'no key' } },
      },
    },
  };
}

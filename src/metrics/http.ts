import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { PET_KINDS, type PetKind } from '../pet/types.js';
import type { PetServeMetrics } from './metrics.js';

/** Where `tagRequest` leaves the task of a request for the middleware (res.locals keys). */
const TASK_LOCAL = 'petserveTask';
const KIND_LOCAL = 'petserveKind';

const KNOWN_KINDS: ReadonlySet<string> = new Set<string>([...PET_KINDS, 'base']);
const KNOWN_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * Tell the HTTP metrics which task a request targeted, once the route handler
 * has resolved it: the request is then counted under the task's PET kind
 * (`kind` label) and in the per-task counts. `task: null` = the base model.
 */
export function tagRequest(res: Response, tag: { task: string | null; kind: PetKind | 'base' }): void {
  res.locals[TASK_LOCAL] = tag.task;
  res.locals[KIND_LOCAL] = tag.kind;
}

export interface HttpMetricsOptions {
  /**
   * Distinct route labels kept before new ones are folded into 'other': a
   * last guard against a route whose label would carry request data.
   */
  maxRoutes?: number;
  /**
   * The task registry (a `TaskRegistry` fits): requests whose matched route
   * has a `:task` parameter naming a registered task are counted for that task
   * and its PET kind without the route calling `tagRequest`. Ids that are not
   * registered are ignored, so clients cannot grow the per-task counts.
   */
  tasks?: { get(id: string): { kind: PetKind } | undefined } | null;
  /** Route parameter holding the task id (default 'task': /v1/tasks/:task/..., /v2/models/:task/...). */
  taskParam?: string;
}

/**
 * Replace path segments of a router's mount path that are values of the
 * request's params by the param name: a router mounted at `/v1/models/:model`
 * has `req.baseUrl = /v1/models/bert`, which must be labelled as the pattern.
 */
function baseUrlPattern(baseUrl: string, params: Record<string, unknown>): string {
  if (!baseUrl) return '';
  const byValue = new Map<string, string>();
  for (const [name, value] of Object.entries(params)) {
    if (typeof value === 'string' && value !== '') byValue.set(encodeURIComponent(value), name);
  }
  return baseUrl
    .split('/')
    .map((seg) => (byValue.has(seg) ? `:${byValue.get(seg)!}` : seg))
    .join('/');
}

function routePath(route: unknown): string | null {
  const path = (route as { path?: unknown } | undefined)?.path;
  if (typeof path === 'string') return path;
  if (path instanceof RegExp) return path.source;
  if (Array.isArray(path)) return path.map(String).join('|');
  return null;
}

/**
 * Express middleware counting every response by method, matched route
 * pattern, status code and PET kind, with its duration. Install it first
 * (before routers), so it also times what they do.
 *
 * The route label is the matched pattern (`/v1/tasks/:task/predict`), never the
 * raw URL, to keep series bounded. Express sets `req.route` when a route
 * matches, but a router's `req.baseUrl` is already restored to its parent's by
 * the time an error handler answers; so the label is captured at the moment
 * `req.route` is assigned, through an accessor on the request. Responses that
 * matched no route are labelled 'unmatched'; a client that disconnects first
 * is counted with status code 499 (nginx's convention for "client closed").
 */
export function httpMetricsMiddleware(metrics: PetServeMetrics, opts: HttpMetricsOptions = {}): RequestHandler {
  const maxRoutes = opts.maxRoutes ?? 64;
  const taskParam = opts.taskParam ?? 'task';
  const tasks = opts.tasks ?? null;
  const seenRoutes = new Set<string>();
  const boundRoute = (label: string): string => {
    if (seenRoutes.has(label)) return label;
    if (seenRoutes.size >= maxRoutes) return 'other';
    seenRoutes.add(label);
    return label;
  };

  return (req: Request, res: Response, next: NextFunction): void => {
    const start = performance.now();
    let routeLabel: string | null = null;
    let routeTask: string | null = null;
    let route: unknown = undefined;
    Object.defineProperty(req, 'route', {
      configurable: true,
      enumerable: true,
      get: () => route,
      set: (value: unknown) => {
        // The router assigns a matched route twice: first while req.params
        // still holds the mount path's params (what baseUrlPattern needs),
        // then again from Route#dispatch with the route's own params. Only
        // the first assignment of a route object sets the label.
        // The second one is where the route's own params (the task id) are
        // readable; an error handler later sees the parent's params again.
        if (value === route) {
          const id: unknown = req.params?.[taskParam];
          if (typeof id === 'string') routeTask = id;
          return;
        }
        route = value;
        routeTask = null;
        const path = routePath(value);
        if (path !== null) routeLabel = baseUrlPattern(req.baseUrl, req.params ?? {}) + path;
      },
    });
    res.once('close', () => {
      const seconds = (performance.now() - start) / 1000;
      const method = KNOWN_METHODS.has(req.method) ? req.method : 'OTHER';
      const routeName = boundRoute(routeLabel ?? 'unmatched');
      const statusCode = res.writableFinished ? String(res.statusCode) : '499';
      // An explicit tag wins; else the registered task named by the route's :task.
      let task: unknown = res.locals[TASK_LOCAL];
      let kindLocal: unknown = res.locals[KIND_LOCAL];
      if (kindLocal === undefined && routeTask !== null && tasks) {
        const info = tasks.get(routeTask);
        if (info) {
          task = routeTask;
          kindLocal = info.kind;
        }
      }
      const kind = typeof kindLocal === 'string' && KNOWN_KINDS.has(kindLocal) ? kindLocal : 'none';
      metrics.httpRequests.inc({ method, route: routeName, status_code: statusCode, kind });
      metrics.httpDuration.observe({ method, route: routeName, status_code: statusCode }, seconds);
      if (typeof task === 'string') metrics.countTaskRequest(task);
    });
    next();
  };
}

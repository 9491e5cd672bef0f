import type { NextFunction, Request, Response } from 'express';
import { OriginForbiddenError } from '../errors.js';

const ALLOWED_METHODS = 'GET, POST, DELETE, OPTIONS';
const ALLOWED_HEADERS = 'Content-Type, Authorization, X-Request-Id';
const EXPOSED_HEADERS = 'X-Request-Id, Retry-After';

/**
 * CORS for the configured origins only ('*' allows any). With no origins
 * configured nothing is added, so browsers keep the same-origin policy.
 * (The `cors` package is not a dependency; this is the whole of what we need.)
 */
export function corsFor(origins: readonly string[]) {
  const any = origins.includes('*');
  const allowed = new Set(origins);
  return (req: Request, res: Response, next: NextFunction): void => {
    const origin = req.get('Origin');
    if (origins.length === 0 || origin === undefined) return next();
    res.vary('Origin');
    if (!any && !allowed.has(origin)) return next();
    res.setHeader('Access-Control-Allow-Origin', any ? '*' : origin);
    res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
    if (req.method === 'OPTIONS' && req.get('Access-Control-Request-Method') !== undefined) {
      res.setHeader('Access-Control-Allow-Methods', ALLOWED_METHODS);
      res.setHeader('Access-Control-Allow-Headers', ALLOWED_HEADERS);
      res.setHeader('Access-Control-Max-Age', '600');
      res.status(204).end();
      return;
    }
    next();
  };
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Refuse browser requests with side effects from origins not allowed by
 * server.corsOrigins (403). Browsers send `Origin` on every cross-origin
 * POST, including the "simple" ones (text/plain, multipart) that skip the
 * CORS preflight, so without this any open web page could submit work to a
 * server on the same machine. Clients that are not browsers send no Origin
 * and are not affected.
 */
export function refuseForeignOrigins(origins: readonly string[]) {
  const any = origins.includes('*');
  const allowed = new Set(origins);
  return (req: Request, _res: Response, next: NextFunction): void => {
    const origin = req.get('Origin');
    if (origin === undefined || SAFE_METHODS.has(req.method) || any || allowed.has(origin)) return next();
    throw new OriginForbiddenError();
  };
}

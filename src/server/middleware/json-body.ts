import express, { type NextFunction, type Request, type Response } from 'express';
import { UnsupportedMediaTypeError } from '../errors.js';

/**
 * JSON bodies up to `limit` bytes. A body with another content type is
 * refused (415) rather than silently read as empty, so a forgotten
 * `Content-Type: application/json` gets a clear answer.
 */
export function jsonBody(limit: number) {
  const parse = express.json({ limit, type: ['application/json', 'application/*+json'] });
  return [
    parse,
    (req: Request, _res: Response, next: NextFunction): void => {
      if (req.body === undefined && hasBody(req)) {
        throw new UnsupportedMediaTypeError(`send the body as application/json (got ${req.get('Content-Type') ?? 'no Content-Type'})`);
      }
      next();
    },
  ];
}

function hasBody(req: Request): boolean {
  return req.get('Transfer-Encoding') !== undefined || Number(req.get('Content-Length') ?? '0') > 0;
}

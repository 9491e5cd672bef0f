import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { FeatureDisabledError, UnauthorizedError } from '../errors.js';

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * Bearer-token guard of the admin routes. Without a configured token the
 * routes are disabled (403), never open. Tokens are compared as SHA-256
 * digests in constant time, so neither content nor length leaks through timing.
 */
export function requireAdmin(token: string | null) {
  const expected = token === null ? null : digest(token);
  return (req: Request, _res: Response, next: NextFunction): void => {
    if (expected === null) {
      throw new FeatureDisabledError('task management is disabled: set server.adminToken (PETSERVE_ADMIN_TOKEN) to enable it');
    }
    const header = req.get('Authorization');
    const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) throw new UnauthorizedError('admin route: send Authorization: Bearer <server.adminToken>');
    if (!timingSafeEqual(digest(match[1]!), expected)) throw new UnauthorizedError('admin route: wrong bearer token');
    next();
  };
}

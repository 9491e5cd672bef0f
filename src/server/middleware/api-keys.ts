import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { UnauthorizedError } from '../errors.js';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /**
       * Who owns what this request creates (batches): a digest of its API key;
       * undefined when the server runs without keys (everything is shared).
       */
      keyOwner?: string;
    }
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** The bearer token of a request, or null. */
export function bearerToken(req: Request): string | null {
  const header = req.get('Authorization');
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match ? match[1]! : null;
}

/**
 * The data-plane API keys (server.apiKeys). Keys are compared as SHA-256
 * digests in constant time, and every configured key is compared on every
 * request (no early exit), so neither which key nor how much of it matched
 * leaks through timing. A key's owner id is a digest prefix: it names the key
 * in Redis without storing the key.
 */
export class ApiKeys {
  private readonly digests: Buffer[];
  private readonly admin: Buffer | null;

  constructor(keys: readonly string[], adminToken: string | null) {
    this.digests = keys.map(digest);
    this.admin = adminToken === null ? null : digest(adminToken);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  /** The owner id of a valid key, or null. */
  ownerOf(token: string | null): string | null {
    if (token === null) return null;
    const given = digest(token);
    let found: Buffer | null = null;
    for (const d of this.digests) if (timingSafeEqual(given, d)) found = d;
    return found === null ? null : `key_${found.subarray(0, 8).toString('hex')}`;
  }

  isAdmin(token: string | null): boolean {
    return token !== null && this.admin !== null && timingSafeEqual(digest(token), this.admin);
  }

  /**
   * Guard of a data-plane route: with keys configured, a valid key is required
   * and its owner id is set on the request; without keys, it lets all through.
   */
  require() {
    return (req: Request, _res: Response, next: NextFunction): void => {
      if (!this.enabled) return next();
      const token = bearerToken(req);
      if (token === null) throw new UnauthorizedError('this route needs an API key: send Authorization: Bearer <one of server.apiKeys>', 'petserve');
      const owner = this.ownerOf(token);
      if (owner === null) throw new UnauthorizedError('wrong API key', 'petserve');
      req.keyOwner = owner;
      next();
    };
  }
}

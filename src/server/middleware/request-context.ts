import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from '../../util/logger.js';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** X-Request-Id of this request (the client's, or generated). */
      id: string;
      /** Logger bound to the request id. */
      log: Logger;
    }
  }
}

export const REQUEST_ID_HEADER = 'X-Request-Id';
// A client's id is echoed into headers and logs: keep it short and printable.
const CLIENT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Request id (the client's X-Request-Id when it is sane, else a UUID), echoed
 * in the response, and one JSON log line per request with its outcome.
 */
export function requestContext(logger: Logger) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const given = req.get(REQUEST_ID_HEADER);
    req.id = given !== undefined && CLIENT_ID.test(given) ? given : randomUUID();
    req.log = logger.child({ reqId: req.id });
    res.setHeader(REQUEST_ID_HEADER, req.id);
    const started = process.hrtime.bigint();
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const fields = { method: req.method, url: req.originalUrl, status: res.statusCode, ms: Math.round(ms * 10) / 10, aborted: !res.writableFinished };
      if (res.statusCode >= 500) req.log.error(fields, 'request failed');
      else req.log.info(fields, 'request');
    });
    next();
  };
}

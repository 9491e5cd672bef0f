import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { MulterError } from 'multer';
import { PetServeError } from '../../util/errors.js';
import { ClientAbortedError, isClientAbort, MalformedMultipartError } from '../errors.js';

/**
 * Why a multipart body failed, as one of ours. Multer passes busboy's plain
 * errors through ("Unexpected end of form", "Malformed part header",
 * "Multipart: Boundary not found"); they all mean the body cannot be read,
 * and none of their text is worth showing. A client that went away is not a
 * malformed body.
 */
export function multipartFailure(err: unknown, req: Request): unknown {
  if (err instanceof MulterError || err instanceof PetServeError) return err;
  if (isClientAbort(err) || (req.destroyed && !req.complete)) return new ClientAbortedError();
  return new MalformedMultipartError();
}

/** A multer handler as middleware whose failures are ours (4xx), never a 500. */
export function multipart(handler: RequestHandler): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    void handler(req, res, (err?: unknown) => next(err === undefined ? undefined : multipartFailure(err, req)));
  };
}

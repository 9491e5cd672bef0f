import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Request } from 'express';
import { PayloadTooLargeError } from './errors.js';

const tooLarge = (max: number): PayloadTooLargeError => new PayloadTooLargeError(`uploaded archive is larger than server.maxUploadBytes (${max} bytes)`);

/**
 * Stream a raw request body (an archive sent as application/gzip etc.) into
 * `file`, never holding it in memory; stops with 413 as soon as it passes
 * `maxBytes` (or at once when Content-Length says so). The file is removed on failure.
 */
export async function receiveRawUpload(req: Request, file: string, maxBytes: number): Promise<number> {
  const declared = Number(req.get('Content-Length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(maxBytes);
  let received = 0;
  const limiter = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      received += chunk.length;
      if (received > maxBytes) done(tooLarge(maxBytes));
      else done(null, chunk);
    },
  });
  try {
    await pipeline(req, limiter, createWriteStream(file, { flags: 'wx' }));
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
  return received;
}

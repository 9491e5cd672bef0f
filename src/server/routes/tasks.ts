// Task management (admin): register from an uploaded archive or a server path,
// list, inspect, unregister.

import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import express, { Router, type Request, type Response } from 'express';
import multer from 'multer';
import { z } from 'zod';
import type { TaskMemory } from '../../engine/model-runner.js';
import type { TaskInfo, TaskRegistry } from '../../pet/registry.js';
import { UnknownTaskError } from '../../pet/registry.js';
import { RequestValidationError, UnsupportedMediaTypeError } from '../errors.js';
import { requireAdmin } from '../middleware/admin-auth.js';
import { multipart } from '../middleware/multipart.js';
import { registerPathSchema, taskIdSchema, type TaskSummary } from '../protocol/v1.js';
import { receiveRawUpload } from '../raw-upload.js';
import type { TaskAdmin } from '../task-admin.js';
import type { TaskRequestCounters } from '../task-counters.js';
import { parseOrThrow } from '../validate.js';

export interface TaskRouteDeps {
  admin: TaskAdmin;
  registry: TaskRegistry;
  counters: TaskRequestCounters;
  taskMemory: () => TaskMemory[];
  adminToken: string | null;
  maxBodyBytes: number;
  maxUploadBytes: number;
}

/** Content types accepted as a raw archive body (the task id then comes from ?id=). */
export const ARCHIVE_MEDIA_TYPES = ['application/gzip', 'application/x-gzip', 'application/x-tar', 'application/x-compressed-tar', 'application/octet-stream'];

export function taskRouter(deps: TaskRouteDeps): Router {
  const router = Router();
  const guard = requireAdmin(deps.adminToken);
  const json = express.json({ limit: deps.maxBodyBytes });

  const summary = (info: TaskInfo, memory: Map<string, TaskMemory>): TaskSummary => {
    const m = memory.get(info.id);
    return {
      id: info.id,
      kind: info.kind,
      format: info.format,
      type: info.numLabels === 0 ? 'embedding' : 'classification',
      labels: info.id2label,
      sizeBytes: info.hostBytes,
      gpuBytes: m?.gpuBytes ?? 0,
      resident: m?.resident ?? false,
      registeredAt: info.registeredAt,
      requests: deps.counters.get(info.id),
    };
  };
  const memoryById = (): Map<string, TaskMemory> => new Map(deps.taskMemory().map((m) => [m.id, m]));

  router.get('/v1/tasks', guard, (_req, res) => {
    const memory = memoryById();
    res.json({ tasks: deps.registry.list().map((t) => summary(t, memory)) });
  });

  router.get('/v1/tasks/:task', guard, (req, res) => {
    const id = String(req.params['task']);
    const info = deps.registry.get(id);
    if (!info) throw new UnknownTaskError(id);
    res.json(summary(info, memoryById()));
  });

  router.delete('/v1/tasks/:task', guard, async (req, res) => {
    const info = await deps.admin.unregister(String(req.params['task']));
    deps.counters.forget(info.id);
    res.json({ id: info.id, deleted: true });
  });

  const upload = multipart(multer({
    storage: multer.diskStorage({
      destination: (_req, _file, cb) => void deps.admin.incomingDir().then((d) => cb(null, d), (e: Error) => cb(e, '')),
      filename: (_req, _file, cb) => cb(null, `${randomUUID()}.upload`),
    }),
    limits: { fileSize: deps.maxUploadBytes, files: 1, fields: 8, fieldSize: 4096, parts: 16 },
  }).single('bundle'));

  router.post('/v1/tasks', guard, async (req: Request, res: Response) => {
    let info: TaskInfo;
    if (req.is('application/json')) {
      await new Promise<void>((resolve, reject) => json(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
      const body = parseOrThrow(registerPathSchema, req.body);
      info = await deps.admin.registerPath(body.id, body.path);
    } else if (req.is('multipart/form-data')) {
      await new Promise<void>((resolve, reject) => upload(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
      const file = req.file?.path;
      try {
        if (!file) throw new RequestValidationError("multipart upload: the archive goes in a file field named 'bundle'");
        const fields = (req.body ?? {}) as Record<string, unknown>;
        info = await deps.admin.registerArchive(taskIdFrom(req, fields['id']), file);
      } finally {
        if (file) await rm(file, { force: true });
      }
    } else if (req.is(ARCHIVE_MEDIA_TYPES)) {
      // Validate the id before spending time on the body.
      const id = taskIdFrom(req, undefined);
      const file = join(await deps.admin.incomingDir(), `${randomUUID()}.upload`);
      try {
        await receiveRawUpload(req, file, deps.maxUploadBytes);
        info = await deps.admin.registerArchive(id, file);
      } finally {
        await rm(file, { force: true });
      }
    } else {
      throw new UnsupportedMediaTypeError(
        `register a task with application/json {"id", "path"}, multipart/form-data (fields id + bundle), or a raw archive (${ARCHIVE_MEDIA_TYPES.join(', ')}) with ?id=`,
      );
    }
    res.status(201).location(`/v1/tasks/${encodeURIComponent(info.id)}`).json(summary(info, memoryById()));
  });
  return router;
}

/** The task id from the multipart field or the ?id= query, checked before it is used in a path. */
function taskIdFrom(req: Request, field: unknown): string {
  const query = req.query['id'];
  const raw = field ?? query;
  if (raw === undefined) throw new RequestValidationError('invalid request: id: the task id is required (form field "id" or query ?id=)');
  return parseOrThrow(z.object({ id: taskIdSchema }), { id: raw }).id;
}

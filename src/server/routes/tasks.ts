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
import { registerModelSchema, registerPathSchema, taskIdSchema, type TaskSummary } from '../protocol/v1.js';
import { receiveRawUpload } from '../raw-upload.js';
import type { DecoderTaskListing, RegisteredTask, TaskAdmin } from '../task-admin.js';
import type { TaskRequestCounters } from '../task-counters.js';
import { parseOrThrow } from '../validate.js';

export interface TaskRouteDeps {
  admin: TaskAdmin;
  registry: TaskRegistry;
  counters: TaskRequestCounters;
  taskMemory: () => TaskMemory[];
  /** The decoder's adapters, when a decoder is served: listed, shown and deleted beside encoder tasks. */
  decoder?: { baseModelId: string; list(): DecoderTaskListing[] } | null;
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
      model: deps.registry.baseModelId,
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
  // Decoder adapters: HTTP counters are the encoder routes' (generation has its own metrics), so none here.
  const decoderSummary = (a: DecoderTaskListing): TaskSummary => ({
    id: a.taskId,
    model: deps.decoder!.baseModelId,
    kind: a.kind,
    format: 'peft',
    type: 'generation',
    labels: [],
    sizeBytes: a.bytes,
    gpuBytes: a.gpuBytes,
    resident: a.resident,
    registeredAt: a.registeredAt,
    requests: { requests: 0, inputs: 0, errors: 0, lastRequestAt: null },
  });
  const summaryOf = (task: RegisteredTask): TaskSummary => {
    if (task.model === 'encoder') return summary(task.info, memoryById());
    const listed = deps.decoder?.list().find((a) => a.taskId === task.info.taskId);
    return decoderSummary(listed ?? { ...task.info, gpuBytes: 0, resident: false });
  };

  router.get('/v1/tasks', guard, (_req, res) => {
    const memory = memoryById();
    const encoder = deps.registry.list().map((t) => summary(t, memory));
    res.json({ tasks: [...encoder, ...(deps.decoder?.list().map(decoderSummary) ?? [])] });
  });

  router.get('/v1/tasks/:task', guard, (req, res) => {
    const id = String(req.params['task']);
    const info = deps.registry.get(id);
    if (info) {
      res.json(summary(info, memoryById()));
      return;
    }
    const adapter = deps.decoder?.list().find((a) => a.taskId === id);
    if (!adapter) throw new UnknownTaskError(id);
    res.json(decoderSummary(adapter));
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
    let task: RegisteredTask;
    if (req.is('application/json')) {
      await new Promise<void>((resolve, reject) => json(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
      const body = parseOrThrow(registerPathSchema, req.body);
      task = await deps.admin.registerPath(body.id, body.path, body.model);
    } else if (req.is('multipart/form-data')) {
      await new Promise<void>((resolve, reject) => upload(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
      const file = req.file?.path;
      try {
        if (!file) throw new RequestValidationError("multipart upload: the archive goes in a file field named 'bundle'");
        const fields = (req.body ?? {}) as Record<string, unknown>;
        task = await deps.admin.registerArchive(taskIdFrom(req, fields['id']), file, modelFrom(req, fields['model']));
      } finally {
        if (file) await rm(file, { force: true });
      }
    } else if (req.is(ARCHIVE_MEDIA_TYPES)) {
      // Validate the id before spending time on the body.
      const id = taskIdFrom(req, undefined);
      const model = modelFrom(req, undefined);
      const file = join(await deps.admin.incomingDir(), `${randomUUID()}.upload`);
      try {
        await receiveRawUpload(req, file, deps.maxUploadBytes);
        task = await deps.admin.registerArchive(id, file, model);
      } finally {
        await rm(file, { force: true });
      }
    } else {
      throw new UnsupportedMediaTypeError(
        `register a task with application/json {"id", "path"}, multipart/form-data (fields id + bundle), or a raw archive (${ARCHIVE_MEDIA_TYPES.join(', ')}) with ?id=`,
      );
    }
    const body = summaryOf(task);
    res.status(201).location(`/v1/tasks/${encodeURIComponent(body.id)}`).json(body);
  });
  return router;
}

/** The task id from the multipart field or the ?id= query, checked before it is used in a path. */
/** The base model named by the multipart field or the ?model= query; undefined = the encoder base. */
function modelFrom(req: Request, field: unknown): string | undefined {
  const raw = field ?? req.query['model'];
  if (raw === undefined) return undefined;
  return parseOrThrow(z.object({ model: registerModelSchema }), { model: raw }).model;
}

function taskIdFrom(req: Request, field: unknown): string {
  const query = req.query['id'];
  const raw = field ?? query;
  if (raw === undefined) throw new RequestValidationError('invalid request: id: the task id is required (form field "id" or query ?id=)');
  return parseOrThrow(z.object({ id: taskIdSchema }), { id: raw }).id;
}

// The decoder `serve` runs beside its encoder when generation.modelDir is set:
// the generation runtime on the same GPU device, its adapters from
// generation.tasksDir, the chat template, and the gateway the OpenAI routes use.

import { basename, join, resolve } from 'node:path';
import type { PetServeConfig } from '../config/config.js';
import { CompletionsGateway, type GenerationObserver } from '../gateway/completions.js';
import type { GpuContext } from '../gpu/context.js';
import type { DevicePetPool } from '../pet/device-pool.js';
import type { StepReport } from '../scheduler/generation/step-scheduler.js';
import type { DecoderTasks } from '../server/task-admin.js';
import { ChatTemplate } from '../tokenizer/chat-template.js';
import { ConfigError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { startGenerationRuntime, type GenerationRuntime } from './generation-runtime.js';
import { registerTaskDirectories, taskDirectoryNames } from './task-dirs.js';

export interface ServedGeneration {
  runtime: GenerationRuntime;
  completions: CompletionsGateway;
  /** Its adapters as the admin API manages them (/v1/tasks with `model` = modelId). */
  tasks: DecoderTasks;
  /** The id the decoder base answers under. */
  modelId: string;
  /** Stop admitting sequences (new ones: 503 SHUTTING_DOWN); running ones finish. */
  stopAdmitting(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Where adapters uploaded for the decoder (POST /v1/tasks with its `model`) are
 * kept: beside the encoder's uploads, in a hidden directory the encoder's scan
 * skips, and registered again at the next start.
 */
export function decoderUploadDir(config: PetServeConfig): string {
  return join(config.server.uploadDir, '.generation');
}

export interface ServedGenerationOptions {
  logger: Logger;
  /** Ids the encoder already answers under: the decoder's ids may not repeat them. */
  isEncoderModel(id: string): boolean;
  observer?: GenerationObserver;
  onStep?: (s: StepReport) => void;
}

/** The device an encoder is served on, as the decoder beside it shares it (a Runtime is one). */
export interface SharedDevice {
  ctx: GpuContext;
  /** The device's one PET pool: the decoder's adapters page through it beside the encoder's tasks. */
  pool: DevicePetPool;
}

/** Null when no decoder is configured (generation.modelDir unset). */
export async function startServedGeneration(device: SharedDevice, config: PetServeConfig, opts: ServedGenerationOptions): Promise<ServedGeneration | null> {
  const g = config.generation;
  if (g.modelDir === null) return null;
  const modelId = g.modelId ?? basename(resolve(g.modelDir));
  const tasks = new Map<string, string>();
  if (g.tasksDir !== null) for (const id of await taskDirectoryNames(g.tasksDir)) tasks.set(id, join(g.tasksDir, id));
  for (const id of [modelId, ...tasks.keys()]) {
    if (opts.isEncoderModel(id) || (id === modelId && tasks.has(id))) {
      throw new ConfigError(`generation: model id '${id}' is already taken (encoder model or task, or a decoder task named like the base); set generation.modelId or rename the task directory`);
    }
  }
  const chatTemplate = await ChatTemplate.load(g.modelDir);
  if (chatTemplate.problem) opts.logger.warn({ modelDir: g.modelDir, problem: chatTemplate.problem }, 'the chat template does not parse: chat completions will answer 400');
  const runtime = await startGenerationRuntime(device.ctx, config, {
    pool: device.pool,
    modelDir: g.modelDir,
    baseModelId: modelId,
    idTakenElsewhere: opts.isEncoderModel,
    tasks,
    kernelTuning: { logger: opts.logger },
    ...(opts.onStep ? { onStep: opts.onStep } : {}),
    // Per dispatch, so the metrics can tell adapter kernels from the base model's.
    ...(g.profileEverySteps > 0 ? { profile: 'dispatches' as const, profileEverySteps: g.profileEverySteps } : {}),
  });
  // Adapters uploaded through the admin API before this start ('skip': one that no longer loads is logged, not fatal).
  const uploaded = await registerTaskDirectories({ register: (id, dir) => runtime.registerTask(id, dir) }, decoderUploadDir(config), {
    logger: opts.logger,
    onInvalid: 'skip',
    missingOk: true,
  }).catch(async (err: unknown) => {
    await runtime.close();
    throw err;
  });
  const decoder = runtime.checkpoint.config;
  const completions = new CompletionsGateway({
    generation: runtime.gateway,
    tokenizer: runtime.tokenizer,
    chatTemplate,
    baseModelId: modelId,
    vocabSize: decoder.vocabSize,
    maxContext: decoder.maxPositionEmbeddings,
    defaultMaxTokens: g.defaultMaxTokens,
    hasTask: (id) => runtime.registry.has(id),
    tasks: () => runtime.registry.list().map((t) => ({ id: t.taskId, kind: t.kind })),
    isOtherModel: opts.isEncoderModel,
    ...(opts.observer ? { observer: opts.observer } : {}),
  });
  opts.logger.info(
    { modelDir: g.modelDir, modelId, tasks: [...tasks.keys(), ...uploaded.registered], chatTemplate: chatTemplate.source, kvBlocks: runtime.blocks.numBlocks },
    'generation ready',
  );
  const pool = runtime.runner.pool;
  const tasksAdmin: DecoderTasks = {
    baseModelId: modelId,
    uploadDir: decoderUploadDir(config),
    get: (id) => runtime.registry.get(id),
    checkNewId: (id) => runtime.registry.checkNewId(id),
    register: (id, dir) => runtime.registerTask(id, dir),
    unregister: (id) => runtime.unregisterTask(id),
    list: () =>
      runtime.registry.list().map((info) => {
        const { key, adapter } = runtime.registry.resolve(info.taskId);
        return { ...info, gpuBytes: pool.footprint(adapter), resident: pool.isResident(key) };
      }),
  };
  return {
    runtime,
    completions,
    tasks: tasksAdmin,
    modelId,
    stopAdmitting: () => runtime.scheduler.close(),
    close: () => runtime.close(),
  };
}

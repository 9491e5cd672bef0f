import { createHash } from 'node:crypto';
import type { CompletionsGateway } from '../gateway/completions.js';
import type { InferenceGateway } from '../gateway/gateway.js';
import { embed, embeddingsModel, embeddingsSequences } from '../gateway/openai-embeddings.js';
import { chatCompletionJob, completionJob, runGenerationJob } from '../gateway/openai-generation.js';
import { chatCompletionRequestSchema, completionRequestSchema, embeddingsRequestSchema } from '../gateway/openai-protocol.js';
import { predictOutput } from '../gateway/predict-output.js';
import type { ClassificationOutput, EmbeddingOutput } from '../gateway/outputs.js';
import { GenerationUnavailableError } from './errors.js';
import type { StoredItem } from './types.js';

/**
 * How a worker answers one item: the same checks (task, tokenization,
 * truncation, token ids), the same engine and the same output formatting as
 * the online route — only the priority differs. Offline items never
 * expire: they wait for capacity that online requests leave idle.
 */
export interface ItemEngine {
  /** Input checks, tokenization and submission shared with the online routes. */
  gateway: InferenceGateway;
  /** Worker processes: bring the task registry up to date for this task first (see WorkerTaskSync). */
  syncTask?: (taskId: string) => Promise<void>;
  /** The decoder (generation.modelDir) for chat and completions lines; null when this worker runs none. */
  completions?: CompletionsGateway | null;
}

/**
 * The seed of a sampled line that gives none: derived from (batch, custom_id),
 * so a line regenerated after its worker died answers exactly what the first
 * run would have. 48 bits: seed + choice index stays a safe integer.
 */
export function batchLineSeed(batchId: string, customId: string): number {
  return parseInt(createHash('sha256').update(`${batchId}\n${customId}`).digest('hex').slice(0, 12), 16);
}

export async function answerItem(engine: ItemEngine, item: StoredItem, batchId = ''): Promise<unknown> {
  if (item.u !== undefined) return answerOpenAiLine(engine, item, batchId);
  return answerPredictItem(engine, item);
}

async function answerPredictItem(engine: ItemEngine, item: StoredItem): Promise<ClassificationOutput | EmbeddingOutput> {
  await syncModel(engine, item.t);
  const model = engine.gateway.model(item.t);
  const truncate = item.tr === true;
  const sequences =
    item.x !== undefined
      ? engine.gateway.encodeTexts('inputs', [item.x], truncate)
      : engine.gateway.checkIds('input_ids', [item.ids ?? []], item.tt ? [item.tt] : undefined, truncate);
  const [result] = await engine.gateway.run(model, sequences, { priority: 'offline' });
  return predictOutput(model, result!, item.lg === true);
}

/** Bring a task up to date before it is looked up; the base model is no task and needs no sync. */
async function syncModel(engine: ItemEngine, id: string): Promise<void> {
  if (id !== engine.gateway.baseModelId) await engine.syncTask?.(id);
}

/** An OpenAI batch line: the body the route would answer, run at offline priority. */
async function answerOpenAiLine(engine: ItemEngine, item: StoredItem, batchId: string): Promise<unknown> {
  const completions = engine.completions ?? null;
  if (item.u === 'embeddings') {
    const body = embeddingsRequestSchema.parse(item.b);
    await syncModel(engine, body.model);
    const model = await embeddingsModel(engine.gateway, body, { isDecoderModel: (id) => completions?.serves(id) === true });
    return embed(engine.gateway, model, body, embeddingsSequences(engine.gateway, body), 'offline');
  }
  if (!completions) throw new GenerationUnavailableError();
  const seed = (b: { seed?: number | null | undefined }): number => b.seed ?? batchLineSeed(batchId, item.c ?? String(item.i));
  if (item.u === 'chat') {
    const body = chatCompletionRequestSchema.parse(item.b);
    await syncModel(engine, body.model);
    const job = chatCompletionJob(completions, completions.taskFor(body.model), { ...body, seed: seed(body) });
    return runGenerationJob(completions, job, { priority: 'offline' });
  }
  const body = completionRequestSchema.parse(item.b);
  await syncModel(engine, body.model);
  const job = completionJob(completions, completions.taskFor(body.model), { ...body, seed: seed(body) });
  return runGenerationJob(completions, job, { priority: 'offline' });
}

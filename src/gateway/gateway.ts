// The one front door below the HTTP server and the queue worker: every route
// (/v1 predict, V2 infer, OpenAI embeddings) and every batch item turns texts or
// token ids into sequences checked against the model HERE, once, then submits
// them (one sequence per submit; the scheduler batches). The scheduler and the
// engine trust what the gateway passes them.

import type { BertConfig } from '../model/bert-config.js';
import { UnknownTaskError, type TaskInfo, type TaskRegistry } from '../pet/registry.js';
import type { PetKind } from '../pet/types.js';
import type { InferenceResult, InferenceService } from '../scheduler/types.js';
import type { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { InvalidInputError } from '../util/errors.js';
import { SequenceTooLongError, TextInputUnsupportedError, TooManyInputsError } from './errors.js';

export interface Sequence {
  inputIds: number[];
  tokenTypeIds?: number[] | undefined;
}

export interface InferenceDeps {
  service: InferenceService;
  registry: TaskRegistry;
  tokenizer: TextTokenizer | null;
  modelConfig: BertConfig;
  maxInputsPerRequest: number;
  /**
   * Bring task `id` up to date with the shared catalog before it is looked up
   * (several replicas: src/catalog's CatalogSync.ensure); absent for one replica.
   */
  syncTask?: ((id: string) => Promise<void>) | undefined;
}

/**
 * What a route or a batch item names: a registered task, or the base model
 * itself (config model.id), which answers with the checkpoint's own classifier
 * head — a fine-tuned classifier served as --model is callable over REST
 * without wrapping it as a PET.
 */
export interface ServedModel {
  id: string;
  /** The task's PET kind; 'base' for the base model, which runs with no PET (`task: null` at the scheduler). */
  kind: PetKind | 'base';
  /** 0 = answers with the pooled output (an embedding task, or a checkpoint without a classifier). */
  numLabels: number;
  id2label: string[];
}

/** What a gateway needs from a started engine stack (`startRuntime`'s result fits). */
export interface GatewayRuntime {
  scheduler: InferenceService;
  registry: TaskRegistry;
  tokenizer: TextTokenizer | null;
  checkpoint: { config: BertConfig };
}

/** A length limit and where it comes from, for the message that refuses a longer input. */
export interface LengthLimit {
  tokens: number;
  source: string;
}

export class InferenceGateway {
  /**
   * Token ids: the model's position table (config.json max_position_embeddings).
   * Text: the tokenizer's model_max_length when it is smaller, as transformers
   * truncates. A tokenizer's limit never refuses ids the model can take.
   */
  readonly idsLimit: LengthLimit;
  readonly textLimit: LengthLimit;
  private readonly baseModel: ServedModel;

  /** The gateway over a started runtime: HTTP routes, queue workers and benchmarks all build it so. */
  static forRuntime(runtime: GatewayRuntime, maxInputsPerRequest: number, syncTask?: (id: string) => Promise<void>): InferenceGateway {
    return new InferenceGateway({
      service: runtime.scheduler,
      registry: runtime.registry,
      tokenizer: runtime.tokenizer,
      modelConfig: runtime.checkpoint.config,
      maxInputsPerRequest,
      syncTask,
    });
  }

  constructor(private readonly deps: InferenceDeps) {
    this.idsLimit = { tokens: deps.modelConfig.maxPositionEmbeddings, source: 'max_position_embeddings of config.json' };
    const declared = deps.tokenizer?.modelMaxLength ?? null;
    this.textLimit =
      declared !== null && declared < this.idsLimit.tokens ? { tokens: declared, source: 'model_max_length of tokenizer_config.json' } : this.idsLimit;
    const checkpoint = deps.registry.base;
    this.baseModel = { id: deps.registry.baseModelId, kind: 'base', numLabels: checkpoint.numLabels, id2label: checkpoint.config.id2label ?? [] };
  }

  /** The id the base model answers under (config model.id). */
  get baseModelId(): string {
    return this.baseModel.id;
  }

  get modelConfig(): BertConfig {
    return this.deps.modelConfig;
  }

  get hasTokenizer(): boolean {
    return this.deps.tokenizer !== null;
  }

  /** The task's info after syncing it with the shared catalog (if any); UnknownTaskError (404) before any work is done. */
  async taskFor(id: string): Promise<TaskInfo> {
    await this.deps.syncTask?.(id);
    return this.task(id);
  }

  /** The task's info as this process holds it now, or UnknownTaskError (404). */
  task(id: string): TaskInfo {
    const info = this.deps.registry.get(id);
    if (!info) throw new UnknownTaskError(id);
    return info;
  }

  /** What `id` names — the base model or a task (synced as taskFor does); UnknownTaskError (404) for neither. */
  async modelFor(id: string): Promise<ServedModel> {
    return id === this.baseModel.id ? this.baseModel : this.taskFor(id);
  }

  /** What `id` names as this process holds it now (see modelFor). */
  model(id: string): ServedModel {
    return id === this.baseModel.id ? this.baseModel : this.task(id);
  }

  checkCount(field: string, count: number): void {
    if (count > this.deps.maxInputsPerRequest) throw new TooManyInputsError(field, count, this.deps.maxInputsPerRequest);
  }

  /** Tokenize texts; too long → 413 unless `truncate`. */
  encodeTexts(field: string, texts: readonly string[], truncate: boolean): Sequence[] {
    this.checkCount(field, texts.length);
    const tokenizer = this.deps.tokenizer;
    if (!tokenizer) throw new TextInputUnsupportedError();
    const limit = this.textLimit;
    return texts.map((text, i) => {
      const enc = tokenizer.encode(text, truncate ? { maxLength: limit.tokens } : {});
      if (enc.inputIds.length > limit.tokens) throw new SequenceTooLongError(`${field}[${i}]`, enc.inputIds.length, limit.tokens, limit.source);
      // A tokenizer.json that does not match config.json (larger vocabulary, no special tokens) fails here, not in a batch.
      this.checkRow(field, i, enc.inputIds, enc.tokenTypeIds, 'token_type_ids');
      return { inputIds: enc.inputIds, tokenTypeIds: enc.tokenTypeIds };
    });
  }

  /**
   * Check token ids against the model (vocabulary, segment vocabulary, length).
   * Raw ids are cut at the end when `truncate` (no special tokens are known to re-add).
   */
  checkIds(field: string, rows: readonly number[][], types: readonly number[][] | undefined, truncate: boolean, typesField = 'token_type_ids'): Sequence[] {
    this.checkCount(field, rows.length);
    if (types !== undefined && types.length !== rows.length) {
      throw new InvalidInputError(`${typesField}: ${types.length} rows for ${rows.length} ${field} rows`);
    }
    const max = this.idsLimit.tokens;
    return rows.map((row, i) => {
      if (row.length > max && !truncate) throw new SequenceTooLongError(`${field}[${i}]`, row.length, max, this.idsLimit.source);
      const ids = row.length > max ? row.slice(0, max) : row;
      const typeRow = types?.[i];
      const t = typeRow !== undefined && typeRow.length > max ? typeRow.slice(0, max) : typeRow;
      this.checkRow(field, i, ids, t, typesField);
      return t === undefined ? { inputIds: ids } : { inputIds: ids, tokenTypeIds: t };
    });
  }

  /**
   * Everything the engine needs of one sequence: non-empty, ids in the vocabulary,
   * segment ids (if any) of the same length and in range. The length limit is
   * checked by the caller, which knows which limit applied. The scheduler and the
   * runner do not check again (rowsChecked), so this is the serving path's only check.
   */
  private checkRow(field: string, i: number, ids: readonly number[], types: readonly number[] | undefined, typesField: string): void {
    const { vocabSize, typeVocabSize } = this.deps.modelConfig;
    if (ids.length === 0) throw new InvalidInputError(`${field}[${i}] is empty: a sequence needs at least one token`);
    ids.forEach((id, j) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
        // The value itself is not quoted: error bodies echo no request data.
        throw new InvalidInputError(`${field}[${i}][${j}] is not a token id of this model (0..${vocabSize - 1})`);
      }
    });
    if (types === undefined) return;
    if (types.length !== ids.length) throw new InvalidInputError(`${typesField}[${i}] has ${types.length} ids for ${ids.length} tokens of ${field}[${i}]`);
    types.forEach((v, j) => {
      if (!Number.isInteger(v) || v < 0 || v >= typeVocabSize) {
        throw new InvalidInputError(`${typesField}[${i}][${j}] is not a segment id of this model (0..${typeVocabSize - 1})`);
      }
    });
  }

  /** Submit every sequence of one request for `model` (the base model or a task); answers in input order. */
  async run(
    model: ServedModel,
    sequences: readonly Sequence[],
    opts: {
      deadlineMs?: number | undefined;
      /** Also return the pooled vector (embeddings of any task). */
      pooled?: boolean;
      /** 'offline' (batch queue): no deadline, never dropped as expired, runs in capacity online requests leave idle. */
      priority?: 'online' | 'offline';
    },
  ): Promise<InferenceResult[]> {
    const pooled = opts.pooled === true || model.numLabels === 0;
    const task = model.kind === 'base' ? null : model.id;
    return Promise.all(
      sequences.map(async (s) =>
        // async wrapper: submit may throw synchronously on a bad request.
        this.deps.service.submit({
          task,
          inputIds: s.inputIds,
          tokenTypeIds: s.tokenTypeIds,
          sloMs: opts.priority === 'offline' ? undefined : opts.deadlineMs,
          pooled,
          priority: opts.priority ?? 'online',
          dropExpired: opts.priority !== 'offline',
        }),
      ),
    );
  }
}

/** Probabilities from logits, computed in f64 with the max subtracted (no overflow for large logits). */
export function softmax(logits: ArrayLike<number>): number[] {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const exps = Array.from({ length: logits.length }, (_, i) => Math.exp(logits[i]! - max));
  const sum = exps.reduce((s, v) => s + v, 0);
  return exps.map((v) => v / sum);
}

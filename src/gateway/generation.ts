// The front door for generation: text or token ids in, text and token ids out.
// Prompts are tokenized exactly as the model's tokenizer.json says; stop
// strings are matched on the decoded text (the step scheduler knows only ids);
// tokens stream to the caller as text that is final.

import { validateSamplingParams, type SampledToken, type SamplingParams } from '../engine/generation/sampling.js';
import { StopStringMatcher, validateStops } from '../engine/generation/stop-strings.js';
import type { DecoderConfig } from '../model/families/decoder/types.js';
import { UnknownTaskError } from '../pet/registry.js';
import type { FinishReason, StepScheduler } from '../scheduler/generation/step-scheduler.js';
import { IncrementalDecoder } from '../tokenizer/incremental-decoder.js';
import type { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { InvalidInputError } from '../util/errors.js';

export interface GenerateInput {
  /** Task id, or null/undefined for the base model. */
  task?: string | null;
  prompt?: string;
  promptIds?: readonly number[];
  maxTokens?: number;
  sampling?: Partial<SamplingParams>;
  stop?: string | readonly string[] | null;
  /** Extra token ids that end generation, beside the model's EOS. */
  stopTokenIds?: readonly number[];
  /** Keep generating past EOS (benchmarks with fixed output lengths). */
  ignoreEos?: boolean;
  signal?: AbortSignal;
  /** 'offline': batch queue work, admitted when no online sequence waits (see StepScheduler). */
  priority?: 'online' | 'offline';
  /** Objectives of this request (ms); absent: the task's (GenerationDeps.taskSlo). */
  ttftSloMs?: number;
  tpotSloMs?: number;
  /** Final text as it becomes known (stop strings held back until settled). */
  onText?: (delta: string, token: SampledToken) => void;
  /** Every sampled token, in order, before its text (if any) reaches onText. */
  onToken?: (token: SampledToken) => void;
}

export interface GenerateOutput {
  /** The objectives the sequence ran under (the request's, else its task's). */
  slo: { ttftSloMs?: number; tpotSloMs?: number };
  text: string;
  tokenIds: number[];
  tokens: SampledToken[];
  finishReason: FinishReason;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  cachedPromptTokens: number;
  ttftMs: number;
  tpotMs: number;
  preemptions: number;
  seed: number;
}

export interface GenerationDeps {
  scheduler: StepScheduler;
  tokenizer: TextTokenizer | null;
  config: DecoderConfig;
  hasTask(id: string): boolean;
  defaultMaxTokens: number;
  /** Configured objectives of a task (null = the base model). */
  taskSlo?: (task: string | null) => { ttftMs?: number | undefined; tpotMs?: number | undefined };
}

export class GenerationGateway {
  constructor(private readonly deps: GenerationDeps) {}

  /** Prompt ids of `input` (text tokenized with the model's own special tokens). */
  promptIds(input: Pick<GenerateInput, 'prompt' | 'promptIds'>): number[] {
    const { prompt, promptIds } = input;
    if ((prompt === undefined) === (promptIds === undefined)) throw new InvalidInputError('give exactly one of prompt or prompt_ids');
    if (promptIds !== undefined) {
      const V = this.deps.config.vocabSize;
      promptIds.forEach((id, i) => {
        if (!Number.isInteger(id) || id < 0 || id >= V) throw new InvalidInputError(`prompt_ids[${i}] must be a token id in [0, ${V})`);
      });
      return [...promptIds];
    }
    if (!this.deps.tokenizer) throw new InvalidInputError('prompt: this model ships no tokenizer.json; send prompt_ids');
    return this.deps.tokenizer.encodeIds(prompt!);
  }

  /** The request's objectives, else the task's configured ones. */
  private slo(input: GenerateInput, task: string | null): { ttftSloMs?: number; tpotSloMs?: number } {
    const configured = this.deps.taskSlo?.(task) ?? {};
    const ttft = input.ttftSloMs ?? configured.ttftMs;
    const tpot = input.tpotSloMs ?? configured.tpotMs;
    return { ...(ttft !== undefined ? { ttftSloMs: ttft } : {}), ...(tpot !== undefined ? { tpotSloMs: tpot } : {}) };
  }

  async generate(input: GenerateInput): Promise<GenerateOutput> {
    const task = input.task ?? null;
    if (task !== null && !this.deps.hasTask(task)) throw new UnknownTaskError(task);
    const promptIds = this.promptIds(input);
    const sampling = validateSamplingParams(input.sampling ?? {});
    const stops = validateStops(input.stop);
    const maxTokens = input.maxTokens ?? this.deps.defaultMaxTokens;
    const stopTokenIds = [...(input.ignoreEos ? [] : this.deps.config.eosTokenIds), ...(input.stopTokenIds ?? [])];
    const tok = this.deps.tokenizer;
    const decoder = tok ? new IncrementalDecoder(tok) : null;
    const matcher = stops.length > 0 ? new StopStringMatcher(stops) : null;
    let text = '';
    let stoppedByString = false;
    const emit = (delta: string, token: SampledToken): void => {
      text += delta;
      if (delta) input.onText?.(delta, token);
    };
    let lastToken: SampledToken | null = null;
    const slo = this.slo(input, task);
    const result = await this.deps.scheduler.submit({
      taskId: task,
      promptIds,
      maxTokens,
      sampling,
      stopTokenIds,
      ...(input.signal ? { signal: input.signal } : {}),
      ...(input.priority ? { priority: input.priority } : {}),
      ...slo,
      onToken: (t) => {
        lastToken = t;
        input.onToken?.(t);
        if (!decoder) return false;
        // EOS is not part of the text (decode skips special tokens anyway).
        const piece = decoder.push(t.token);
        if (!matcher) {
          emit(piece, t);
          return false;
        }
        const { emit: safe, stopped } = matcher.push(piece);
        emit(safe, t);
        stoppedByString = stopped;
        return stopped;
      },
    });
    if (decoder && !stoppedByString && lastToken) {
      const rest = decoder.flush();
      if (!matcher) emit(rest, lastToken);
      else {
        const tail = matcher.push(rest);
        emit(tail.stopped ? tail.emit : tail.emit + matcher.flush(), lastToken);
      }
    }
    const n = result.tokenIds.length;
    return {
      text,
      tokenIds: result.tokenIds,
      tokens: result.tokens,
      finishReason: result.finishReason,
      usage: { prompt_tokens: promptIds.length, completion_tokens: n, total_tokens: promptIds.length + n },
      cachedPromptTokens: result.cachedPromptTokens,
      ttftMs: result.ttftMs,
      tpotMs: result.tpotMs,
      preemptions: result.preemptions,
      seed: result.seed,
      slo,
    };
  }
}

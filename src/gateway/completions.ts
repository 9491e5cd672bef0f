// The model-dependent half of the OpenAI generation routes: which decoder
// (base or task) a `model` names, how messages and prompts become token ids,
// whether they fit the context. The HTTP half (fields, SSE, response shapes)
// lives in src/server; this half is what an offline worker would share.

import type { ChatMessage, ChatTemplate } from '../tokenizer/chat-template.js';
import type { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { ContextLengthError, ModelKindError, TextInputUnsupportedError, TokenIdError, UnknownModelError } from './errors.js';
import type { GenerateInput, GenerateOutput, GenerationGateway } from './generation.js';

/** One finished generation, as metrics take it. */
export interface GenerationReport {
  /** The task the sequence ran with; null = the decoder base. */
  task: string | null;
  ttftMs: number;
  tpotMs: number;
  /** Submit to the last token. */
  e2eMs: number;
  promptTokens: number;
  completionTokens: number;
  /** Objectives it ran under, if any (for attainment counts). */
  ttftSloMs?: number;
  tpotSloMs?: number;
}

/** Hooks for metrics; they must not throw. */
export interface GenerationObserver {
  generated(report: GenerationReport): void;
}

export interface CompletionsDeps {
  generation: GenerationGateway;
  tokenizer: TextTokenizer | null;
  chatTemplate: ChatTemplate;
  /** The id the decoder base answers under. */
  baseModelId: string;
  vocabSize: number;
  /** Context length served (max positions). */
  maxContext: number;
  defaultMaxTokens: number;
  /** Decoder tasks (adapters) by id. */
  hasTask(id: string): boolean;
  /** Decoder tasks with their adapter kind (lora, ia3), for the model list. */
  tasks(): { id: string; kind: string }[];
  /** Whether `id` is a model of another kind on this server (the encoder base or a task), for a clearer refusal than 404. */
  isOtherModel?(id: string): boolean;
  observer?: GenerationObserver;
}

export class CompletionsGateway {
  constructor(private readonly deps: CompletionsDeps) {}

  get baseModelId(): string {
    return this.deps.baseModelId;
  }

  tasks(): { id: string; kind: string }[] {
    return this.deps.tasks();
  }

  /** Whether `id` names the decoder base or one of its tasks. */
  serves(id: string): boolean {
    return id === this.deps.baseModelId || this.deps.hasTask(id);
  }

  /** The task a `model` names: null for the decoder base. */
  taskFor(model: string): string | null {
    if (model === this.deps.baseModelId) return null;
    if (this.deps.hasTask(model)) return model;
    if (this.deps.isOtherModel?.(model)) {
      throw new ModelKindError(`model '${model}' is an encoder model: it answers /v1/embeddings and predict, not generation (GET /v1/models lists the decoder and its tasks)`);
    }
    throw new UnknownModelError(model);
  }

  /**
   * Messages rendered with the model's chat template (generation prompt added)
   * and encoded WITHOUT the tokenizer's special tokens: the template writes the
   * ones it wants (a BOS included), as transformers' apply_chat_template(tokenize=True).
   */
  chatPromptIds(messages: readonly ChatMessage[]): number[] {
    const text = this.deps.chatTemplate.render(messages, { addGenerationPrompt: true });
    return this.tokenizer().encodeIds(text, { addSpecialTokens: false });
  }

  /** A completion prompt's text, encoded with the tokenizer's special tokens (as vLLM's /v1/completions). */
  textPromptIds(text: string): number[] {
    return this.tokenizer().encodeIds(text);
  }

  /** Token ids sent as the prompt, checked against the vocabulary. */
  checkPromptIds(param: string, ids: readonly number[]): number[] {
    const V = this.deps.vocabSize;
    for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= V) throw new TokenIdError(param, V);
    return [...ids];
  }

  /** max_tokens, defaulted; refuses prompt + max_tokens beyond the context with the prompt's param named. */
  maxTokensFor(param: string, promptTokens: number, maxTokens: number | undefined): number {
    const context = this.deps.maxContext;
    const max = maxTokens ?? Math.min(this.deps.defaultMaxTokens, Math.max(1, context - promptTokens));
    if (promptTokens + max > context) throw new ContextLengthError(param, promptTokens, max, context);
    return max;
  }

  /** The text of one token as logprobs report it (special tokens spelled out). */
  tokenText(id: number): string {
    return this.deps.tokenizer ? this.deps.tokenizer.decode([id], { skipSpecialTokens: false }) : String(id);
  }

  async generate(input: GenerateInput): Promise<GenerateOutput> {
    const started = performance.now();
    const out = await this.deps.generation.generate(input);
    this.deps.observer?.generated({
      task: input.task ?? null,
      ttftMs: out.ttftMs,
      tpotMs: out.tpotMs,
      e2eMs: performance.now() - started,
      promptTokens: out.usage.prompt_tokens,
      completionTokens: out.usage.completion_tokens,
      ...out.slo,
    });
    return out;
  }

  private tokenizer(): TextTokenizer {
    if (!this.deps.tokenizer) throw new TextInputUnsupportedError();
    return this.deps.tokenizer;
  }
}
